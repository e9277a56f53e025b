# Benchmark peer for tests/benches/streams.rs: the same stream drain Eddy does, done by a plain
# redis-py consumer-group loop (XREADGROUP COUNT BATCH BLOCK 1000, json.loads each entry's data,
# XACK the batch), so the bench can print Eddy's throughput as a ratio to an ordinary consumer.
#
# Usage: python redis_py_consumer.py REDIS_URL STREAM GROUP EVENTS BATCH
#
# The caller has already filled STREAM with EVENTS entries (fields type, id, data) and created
# GROUP at 0. The clock starts just before the first read and stops when EVENTS entries have been
# acknowledged. On success one JSON line goes to stdout:
#   {"events": N, "seconds": wall, "events_per_s": x, "cpu_us_per_event": y}
# where y is this process's user+system CPU over the drain (time.process_time) per event.
# On any error: a message on stderr and a non-zero exit.
import json
import sys
import time

import redis

# Consecutive empty 1 s reads before giving up: the stream was filled before we started, so a
# read that comes back empty means it holds fewer entries than EVENTS.
MAX_EMPTY_READS = 5


def fail(message):
    print(f"redis_py_consumer: {message}", file=sys.stderr)
    sys.exit(1)


def entries_of(reply):
    """The (id, fields) pairs of an XREADGROUP reply, for one stream, RESP2 or RESP3 shaped."""
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3: {stream: [[id, fields], ...]}
        (messages,) = reply.values()
        return messages
    ((_stream, messages),) = reply  # RESP2: [[stream, [(id, fields), ...]]]
    return messages


def main(argv):
    if len(argv) != 6:
        print(
            "usage: python redis_py_consumer.py REDIS_URL STREAM GROUP EVENTS BATCH",
            file=sys.stderr,
        )
        sys.exit(2)
    url, stream, group = argv[1], argv[2], argv[3]
    try:
        events, batch = int(argv[4]), int(argv[5])
    except ValueError:
        fail("EVENTS and BATCH must be integers")
    if events <= 0 or batch <= 0:
        fail("EVENTS and BATCH must be positive")

    try:
        conn = redis.Redis.from_url(url)
        conn.ping()  # connect before the clock starts
        consumer = "redis-py"
        acked = 0
        empty = 0
        cpu_start = time.process_time()
        started = time.perf_counter()
        while acked < events:
            reply = conn.xreadgroup(group, consumer, {stream: ">"}, count=batch, block=1000)
            messages = entries_of(reply)
            if not messages:
                empty += 1
                if empty >= MAX_EMPTY_READS:
                    fail(f"stream {stream!r} ran dry after {acked} of {events} events")
                continue
            empty = 0
            ids = []
            for entry_id, fields in messages:
                json.loads(fields[b"data"])
                ids.append(entry_id)
            acked += conn.xack(stream, group, *ids)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_start
        conn.close()
    except redis.RedisError as err:
        fail(f"redis: {err}")
    except (KeyError, ValueError) as err:
        fail(f"malformed entry: {err!r}")

    print(
        json.dumps(
            {
                "events": acked,
                "seconds": seconds,
                "events_per_s": acked / seconds,
                "cpu_us_per_event": cpu * 1e6 / acked,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv)
