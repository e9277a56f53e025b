#!/usr/bin/env python3
"""Eddy's own fault suite (issue 16, item 5): events published throughout while hosts, Redis and
the network between them fail, then an exact count of what became of every event.

What runs (all on loopback, in a temporary directory, started here and killed on exit):

- one ``redis-server`` with ``--appendonly yes --appendfsync always --save ""``;
- a TCP proxy in front of it (asyncio, on a thread of this process) that can cut every open
  connection, both sides, while it goes on accepting new ones; the hosts reach Redis only
  through it;
- N ``eddy up`` hosts (``--hosts``, default 3) sharing that Redis, each loading the same six
  functions, all the ``record`` fixture (functions/fixtures/record). Two streams,
  ``chaos-plain`` and ``chaos-once``, are each read by three functions, one per event type
  (the trigger's ``types`` filter): ``Ok`` succeeds on its first attempt, ``Flaky`` fails its
  first (a 503 on the plain stream, a trap on the once stream) and succeeds on its second,
  ``Doomed`` always fails and is dead-lettered after 3 attempts. The functions of
  ``chaos-once`` claim the event id with ``once`` first. Every attempt publishes an
  ``Attempt`` record (event id, attempt number) to the function's own records stream; a
  duplicate that ``once`` skips publishes ``Skipped`` instead;
- a publisher adding events to both streams at ``--rate`` (70% Ok, 25% Flaky, 5% Doomed),
  straight to Redis with ``XADD`` and an explicit, increasing entry id. Each event carries a
  unique id (``ev-000123``) in its ``id`` field and its data. A failed ``XADD`` is retried with
  the same entry id until Redis accepts it or says the id is already there (then ``XRANGE``
  confirms it is this event), so every event counts exactly once, and only once accepted;
- faults, one at a time, on a schedule drawn from ``--seed``: the first round has one of each
  kind in a random order, later ones a random kind each, with a random pause between them:
    * ``host-kill``: SIGKILL a host, then start a new one in its place;
    * ``host-stop``: SIGSTOP a host for longer than the functions' timeout plus the claim
      margin (its pending entries look abandoned to the others), then SIGCONT;
    * ``redis-kill``: SIGKILL Redis, then restart it on the same port from the same AOF;
    * ``redis-oom``: ``CONFIG SET maxmemory`` just above the memory in use (``noeviction``) for
      a few seconds, then lift it;
    * ``proxy-cut``: close every open host connection to Redis, both sides.

How it counts. When the run time is over, faults stop (the one under way finishes and is
undone) and so does publishing. The suite then waits, up to a deadline, until every group has
read its whole stream, has nothing pending, and its retry schedule
(``eddy:{<stream>}:<group>:retry:due``) is empty, and this holds for a second: the time
until then is the time to settle. Then, per function, from the records streams and the
dead-letter streams (``<stream>.dlq``, whose letters carry ``eddy.group``, ``eddy.entry_id``
and the original fields, so the event id):

- *done*: the event has an ``Attempt`` record of an attempt the fixture answers 200 to (any
  attempt for Ok, the second or later for Flaky), or a ``Skipped`` record (``once`` found an
  earlier success);
- *dead-lettered*: the event has a dead letter from this function's group;
- *lost*: published, neither done nor dead-lettered. **Must be 0.** An event still in flight
  when the settle deadline passes counts as lost too;
- *duplicate dead letters*: events dead-lettered more than once. **Must be 0;**
- *duplicate effects*: events whose succeeding attempt was recorded more than once (the effect
  that should happen once happened again), with and without ``once``; reported;
- *extra attempts*: ``Attempt`` records beyond those the event needed (1 for Ok, 2 for Flaky,
  3 for Doomed): redone work, from redeliveries after crashes, stalls and lost replies;
- *late attempts*: ``Attempt`` records written after a record of a later attempt of the same
  event: an invocation that went on after another host had taken its event over (a stalled
  host resuming); reported;
- *unexpected dead letters*: Ok or Flaky events dead-lettered (every attempt failed while
  Redis was away or full, say); counted as dead-lettered, not done, reported with the reasons
  and with how many of them had a succeeding attempt recorded (two hosts settling one entry
  differently would show there).

A done event was recorded as succeeding and then acknowledged: the settled group has nothing
pending and the fixture answers 200 to that attempt. An attempt killed between its record and
its answer is redelivered, so it leaves another record. One gap remains: an Ok event whose
first attempt was recorded but then failed from outside the function (its record's XADD landed
but the reply was cut, so the publish failed) looks done; had Eddy then dropped it instead of
retrying, only Flaky and Doomed events, whose failed attempts must be followed by another
record or a dead letter, would show such a loss.

Exit status: 1 if any event was lost or dead-lettered twice, 2 if the suite itself could not
run (a host or Redis that would not start), 0 otherwise. Progress goes to stdout: one line per
fault and a count every 10 s; ``--json`` ends it with a JSON summary line; ``--report FILE``
writes the figures, the seed and the command into a marked section of FILE (e.g.
RELIABILITY.md), keeping the rest of the file. On failure the temporary directory (host and
Redis logs) is kept and its path printed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

# The functions' wall-time limit and the hosts' claim margin: a host stalled longer than their
# sum has its pending entries claimed by the others.
FUNCTION_TIMEOUT_S = 2
CLAIM_MARGIN_S = 1
# Run time of --short when --duration is not given; with start-up and settling about 60 s.
SHORT_DURATION_S = 50
# Publishing before the first fault, so every function is warm.
WARMUP_S = 3
# Longest wait for everything to settle once faults and publishing stop.
SETTLE_TIMEOUT_S = 120
# How often a progress line is printed.
PROGRESS_EVERY_S = 10
# Longest wait for a host to log that it is ready, or for Redis to answer after a restart.
START_TIMEOUT_S = 60
# Share of each event type among published events.
TYPE_WEIGHTS = {"Ok": 0.70, "Flaky": 0.25, "Doomed": 0.05}
FAULT_KINDS = ("host-kill", "host-stop", "redis-kill", "redis-oom", "proxy-cut")
# Markers of the section --report owns in its file.
REPORT_BEGIN = "<!-- chaos:begin (written by tests/chaos/chaos.py; edits inside are replaced) -->"
REPORT_END = "<!-- chaos:end -->"


class SuiteError(Exception):
    """The suite itself could not go on (exit status 2)."""


# --------------------------------------------------------------------------------------------
# The functions under test


@dataclass(frozen=True)
class Function:
    """One function of the suite: the ``record`` fixture reading one event type of a stream.

    ``succeed_on`` is the first attempt the fixture answers 200 to (None: it never does);
    ``status`` is what it answers before that, or a trap when ``panic``.
    """

    name: str
    stream: str
    event_type: str
    once: bool
    succeed_on: int | None
    max_attempts: int
    status: int = 200
    panic: bool = False

    @property
    def records(self) -> str:
        """The stream the function's attempts are recorded in."""
        return f"chaos-records-{self.name}"

    @property
    def dead_letters(self) -> str:
        """The trigger's dead-letter stream (Eddy's default, ``<stream>.dlq``)."""
        return f"{self.stream}.dlq"

    @property
    def attempts_needed(self) -> int:
        """Attempts an event of this function takes when nothing goes wrong."""
        return self.succeed_on or self.max_attempts

    def succeeds_on(self, attempt: int) -> bool:
        """Whether the fixture answers 200 to this attempt."""
        return self.succeed_on is not None and attempt >= self.succeed_on

    def manifest(self, component: Path) -> str:
        """The function's eddy.toml."""
        config = [f"record_stream = {json.dumps(self.records)}", 'work_ms = "5"']
        if self.once:
            config.append('once = "true"')
        if self.succeed_on != 1:
            config.append(f'status = "{self.status}"')
        if self.succeed_on is not None and self.succeed_on > 1:
            config.append(f'succeed_on = "{self.succeed_on}"')
        if self.panic:
            config.append('fail_with = "panic"')
        # Doomed events retry quickly; the others ride out a few seconds of Redis away or full.
        initial, cap = ("100ms", "1s") if self.succeed_on is None else ("200ms", "2s")
        return "\n".join(
            [
                f"name = {json.dumps(self.name)}",
                f"component = {json.dumps(str(component))}",
                f"publish = [{json.dumps(self.records)}]",
                "",
                "[limits]",
                f'timeout = "{FUNCTION_TIMEOUT_S}s"',
                "",
                "[config]",
                *config,
                "",
                "[[triggers.stream]]",
                f"stream = {json.dumps(self.stream)}",
                f"types = [{json.dumps(self.event_type)}]",
                'start = "earliest"',
                "",
                "[triggers.stream.retry]",
                f"max_attempts = {self.max_attempts}",
                f'initial = "{initial}"',
                "factor = 2.0",
                f'max = "{cap}"',
                "jitter = 0.2",
                "",
            ]
        )


FUNCTIONS = (
    Function("plain-ok", "chaos-plain", "Ok", once=False, succeed_on=1, max_attempts=10),
    Function("plain-flaky", "chaos-plain", "Flaky", once=False, succeed_on=2, max_attempts=10,
             status=503),
    Function("plain-doomed", "chaos-plain", "Doomed", once=False, succeed_on=None,
             max_attempts=3, status=500),
    Function("once-ok", "chaos-once", "Ok", once=True, succeed_on=1, max_attempts=10),
    Function("once-flaky", "chaos-once", "Flaky", once=True, succeed_on=2, max_attempts=10,
             status=500, panic=True),
    Function("once-doomed", "chaos-once", "Doomed", once=True, succeed_on=None, max_attempts=3,
             status=500),
)
STREAMS = tuple(dict.fromkeys(f.stream for f in FUNCTIONS))
DEAD_LETTER_STREAMS = tuple(dict.fromkeys(f.dead_letters for f in FUNCTIONS))


def retry_due_key(function: Function) -> str:
    """The sorted set of the function's retry schedule (runtime/src/delivery/retry_queue.rs)."""
    return f"eddy:{{{function.stream}}}:{function.name}:retry:due"


# --------------------------------------------------------------------------------------------
# A minimal Redis client


class RedisError(Exception):
    """An error reply from Redis (the connection stays usable)."""


class Redis:
    """A RESP client on one connection, one command at a time, for the publisher and checks.

    A failed connection raises ``OSError`` and is dropped; the next call reconnects.
    """

    def __init__(self, port: int, timeout: float = 5.0):
        self.port = port
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.reader = None

    def close(self) -> None:
        """Drops the connection, if any."""
        if self.sock is not None:
            self.sock.close()
        self.sock = self.reader = None

    def call(self, *args):
        """Sends one command; returns the reply (bulk strings as bytes) or raises RedisError."""
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
            self.reader = self.sock.makefile("rb")
        try:
            self.sock.sendall(encode_command(args))
            reply = self._reply()
        except (OSError, ValueError):
            self.close()
            raise
        if isinstance(reply, RedisError):
            raise reply
        return reply

    def _reply(self):
        """Reads one reply; an error nested in an array is returned, not raised."""
        line = self.reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("Redis closed the connection")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body.decode()
        if kind == b"-":
            return RedisError(body.decode())
        if kind == b":":
            return int(body)
        if kind == b"$":
            size = int(body)
            if size < 0:
                return None
            data = self.reader.read(size + 2)
            if len(data) != size + 2:
                raise ConnectionError("Redis closed the connection mid-reply")
            return data[:-2]
        if kind == b"*":
            count = int(body)
            return None if count < 0 else [self._reply() for _ in range(count)]
        raise ConnectionError(f"unexpected reply from Redis: {line!r}")


def encode_command(args) -> bytes:
    """A command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def text(value) -> str:
    """A bulk string reply as text."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def pairs(flat: list) -> dict[str, object]:
    """A flat [name, value, ...] reply as a dict with text keys."""
    return {text(flat[i]): flat[i + 1] for i in range(0, len(flat) - 1, 2)}


def stream_entries(redis: Redis, stream: str, chunk: int = 1000):
    """Yields every entry of ``stream`` as (id, [(field, value), ...]), oldest first."""
    start = "-"
    while True:
        batch = redis.call("XRANGE", stream, start, "+", "COUNT", chunk)
        for entry_id, flat in batch:
            yield text(entry_id), [(text(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2)]
        if len(batch) < chunk:
            return
        start = "(" + text(batch[-1][0])


# --------------------------------------------------------------------------------------------
# Processes, Redis, the proxy and the hosts


class Processes:
    """Every child process the suite starts, so that all of them die with it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.children: list[subprocess.Popen] = []
        self.closed = False

    def spawn(self, args: list[str], log: Path, env: dict[str, str] | None = None):
        """Starts ``args`` with stdout and stderr appended to ``log``; refused once closed."""
        with self.lock:
            if self.closed:
                raise RuntimeError("the suite is stopping")
            with open(log, "ab") as out:
                child = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, env=env)
            self.children.append(child)
            return child

    def kill_all(self) -> None:
        """SIGKILLs every child still running (stopped ones too) and reaps them."""
        with self.lock:
            self.closed = True
            for child in self.children:
                if child.poll() is None:
                    child.kill()
            for child in self.children:
                child.wait()


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """The Redis every host shares; killed and restarted on the same port from the same AOF."""

    def __init__(self, processes: Processes, directory: Path):
        self.processes = processes
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        directory.mkdir()

    def start(self) -> None:
        """Starts redis-server and waits until it answers (its AOF loaded)."""
        self.process = self.processes.spawn(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--appendonly", "yes", "--appendfsync", "always",
             "--save", "", "--daemonize", "no"],
            self.directory / "redis.log",
        )
        client = Redis(self.port, timeout=2)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while True:
                if self.process.poll() is not None:
                    raise SuiteError(f"redis-server exited ({self.process.returncode}); "
                                     f"see {self.directory / 'redis.log'}")
                try:
                    if client.call("PING") == "PONG":
                        return
                except (OSError, RedisError):  # not listening yet, or LOADING
                    pass
                if time.monotonic() > deadline:
                    raise SuiteError("redis-server did not answer within "
                                     f"{START_TIMEOUT_S} s of starting")
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL, as in a crash."""
        self.process.kill()
        self.process.wait()


class Proxy:
    """A TCP proxy in front of Redis that can cut every connection it carries.

    An asyncio loop on its own thread accepts connections and opens one to Redis for each
    (closing the client at once while Redis is down). ``cut`` aborts both sides of every open
    pair; the listener goes on accepting.
    """

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="proxy", daemon=True).start()
        self.server = self._on_loop(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]

    def _on_loop(self, coroutine):
        """Runs ``coroutine`` on the proxy's loop and returns its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    async def _serve(self, client_reader, client_writer) -> None:
        """Carries one client connection to Redis and back until either side closes."""
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.upstream_port)
        except OSError:
            client_writer.transport.abort()
            return
        pair = (client_writer, upstream_writer)
        self.pairs.add(pair)
        try:
            await asyncio.gather(self._pump(client_reader, upstream_writer),
                                 self._pump(upstream_reader, client_writer))
        finally:
            self.pairs.discard(pair)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copies bytes one way until the reading side ends, then closes the writing side."""
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    def cut(self) -> int:
        """Aborts both sides of every open connection; returns how many were open."""

        async def cut_all() -> int:
            open_pairs = list(self.pairs)
            for client, upstream in open_pairs:
                client.transport.abort()
                upstream.transport.abort()
            return len(open_pairs)

        return self._on_loop(cut_all())

    def close(self) -> None:
        """Stops accepting, cuts what is open and stops the loop."""
        self.server.close()
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)


class Host:
    """One host slot: an ``eddy up`` process, replaced by a new one (incarnation) after a kill.

    The consumer name is ``host<slot>-<incarnation>``, so host logs and dead letters say which
    process handled what.
    """

    def __init__(self, suite: "Suite", slot: int):
        self.suite = suite
        self.slot = slot
        self.incarnation = 0
        self.process: subprocess.Popen | None = None
        self.log: Path | None = None

    @property
    def name(self) -> str:
        """The current process's consumer name."""
        return f"host{self.slot}-{self.incarnation}"

    def start(self) -> None:
        """Starts a new incarnation (without waiting for it to be ready)."""
        self.incarnation += 1
        self.log = self.suite.dir / "logs" / f"{self.name}.log"
        env = {k: v for k, v in os.environ.items()
               if not (k.startswith("EDDY_") or k == "RUST_LOG")}
        env.update(XDG_CACHE_HOME=str(self.suite.dir / "cache"), EDDY_LOG="info")
        self.process = self.suite.processes.spawn(
            [str(self.suite.eddy), "up",
             "--redis", f"redis://127.0.0.1:{self.suite.proxy.port}",
             "--functions", str(self.suite.dir / "functions"),
             "--consumer", self.name,
             "--claim-margin", f"{CLAIM_MARGIN_S}s",
             "--grace", "5s",
             "--listen", "127.0.0.1:0"],
            self.log, env)

    def wait_ready(self) -> float:
        """Waits until the host logs that it is ready; returns how long that took."""
        started = time.monotonic()
        while "eddy host ready" not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None:
                raise SuiteError(f"{self.name} exited ({self.process.returncode}) before it "
                                 f"was ready:\n{tail(self.log, 20)}")
            if time.monotonic() - started > START_TIMEOUT_S:
                raise SuiteError(f"{self.name} was not ready within {START_TIMEOUT_S} s:\n"
                                 f"{tail(self.log, 20)}")
            time.sleep(0.05)
        return time.monotonic() - started

    def signal(self, number: int) -> None:
        """Sends a signal to the current process."""
        self.process.send_signal(number)

    def kill(self) -> None:
        """SIGKILL, as in a crash; reaps the process."""
        self.process.kill()
        self.process.wait()


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a log file."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"({path}: {error})"


# --------------------------------------------------------------------------------------------
# The suite: set-up, publishing, faults


@dataclass
class Published:
    """One event Redis accepted."""

    event_id: str
    function: Function
    entry_id: str
    wall_ms: int


@dataclass
class FaultRecord:
    """One fault that happened, for the log and to place lost events in time."""

    number: int
    kind: str
    start_s: float
    start_ms: int
    detail: str = ""


class Suite:
    """Everything one run needs: the temporary directory, the processes and what happened."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.eddy = Path(args.eddy).resolve()
        self.component = Path(args.functions).resolve() / "record.wasm"
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.print_lock = threading.Lock()
        self.processes = Processes()
        self.dir = Path(tempfile.mkdtemp(prefix="eddy-chaos-"))
        (self.dir / "logs").mkdir()
        (self.dir / "cache").mkdir()
        self.redis = RedisServer(self.processes, self.dir / "redis")
        self.proxy: Proxy | None = None
        self.hosts: list[Host] = []
        self.published: list[Published] = []
        self.faults: list[FaultRecord] = []
        self.unexpected_exits: list[str] = []

    def say(self, message: str) -> None:
        """Prints one progress line, stamped with the time since the start."""
        with self.print_lock:
            print(f"[{time.monotonic() - self.started:6.1f}s] {message}", flush=True)

    def start(self) -> None:
        """Starts Redis, the proxy and the hosts, and writes the manifests."""
        functions = self.dir / "functions"
        functions.mkdir()
        for function in FUNCTIONS:
            (functions / f"{function.name}.toml").write_text(function.manifest(self.component))
        self.redis.start()
        self.proxy = Proxy(self.redis.port)
        self.say(f"redis on port {self.redis.port} (AOF, fsync always), proxy on port "
                 f"{self.proxy.port}; files in {self.dir}")
        self.hosts = [Host(self, slot) for slot in range(1, self.args.hosts + 1)]
        # The first host compiles the component into the shared cache; the others reuse it.
        self.hosts[0].start()
        self.hosts[0].wait_ready()
        for host in self.hosts[1:]:
            host.start()
        for host in self.hosts[1:]:
            host.wait_ready()
        self.say(f"{len(self.hosts)} hosts ready: {', '.join(h.name for h in self.hosts)}")

    def restart_exited_hosts(self) -> None:
        """Restarts any host that exited though no fault killed it, noting it as an Eddy bug."""
        for host in self.hosts:
            if host.process.poll() is not None:
                note = (f"{host.name} exited on its own ({host.process.returncode}); last "
                        f"lines:\n{tail(host.log, 15)}")
                self.unexpected_exits.append(note)
                self.say(f"UNEXPECTED: {note}")
                host.start()
                host.wait_ready()

    def close(self) -> None:
        """Kills every process and stops the proxy."""
        self.processes.kill_all()
        if self.proxy is not None:
            self.proxy.close()


class Publisher(threading.Thread):
    """Publishes events at a steady rate until stopped, counting each once Redis accepted it."""

    def __init__(self, suite: Suite, rate: float, rng: random.Random):
        super().__init__(name="publisher", daemon=True)
        self.suite = suite
        self.interval = 1.0 / rate
        self.rng = rng
        self.redis = Redis(suite.redis.port)
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.last_id: dict[str, tuple[int, int]] = {}
        self.retries = 0

    def run(self) -> None:
        """Publishes until stopped; an unexpected error is kept for the main thread."""
        try:
            by_kind = {(f.stream, f.event_type): f for f in FUNCTIONS}
            kinds, weights = zip(*TYPE_WEIGHTS.items())
            next_at = time.monotonic()
            number = 0
            while not self.stopping.is_set():
                number += 1
                stream = self.rng.choice(STREAMS)
                kind = self.rng.choices(kinds, weights)[0]
                self.publish(by_kind[(stream, kind)], f"ev-{number:06d}")
                next_at += self.interval
                # After a stall (Redis away or full) go on at the rate, without a burst.
                next_at = max(next_at, time.monotonic() - 1.0)
                self.stopping.wait(max(0.0, next_at - time.monotonic()))
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            self.error = error
        finally:
            self.redis.close()

    def next_entry_id(self, stream: str) -> tuple[int, int]:
        """An entry id above the stream's last one: now in ms, or the last ms with seq + 1."""
        now_ms = int(time.time() * 1000)
        last_ms, last_seq = self.last_id.get(stream, (0, -1))
        return (now_ms, 0) if now_ms > last_ms else (last_ms, last_seq + 1)

    def publish(self, function: Function, event_id: str) -> None:
        """Adds one event, retrying until Redis has it exactly once, then counts it."""
        ms, seq = self.next_entry_id(function.stream)
        entry_id = f"{ms}-{seq}"
        while True:
            try:
                self.add(function, entry_id, event_id)
                break
            except OSError:  # Redis away, or the reply lost: try again with the same id
                pass
            except RedisError as error:
                if not str(error).startswith(("OOM", "LOADING")):
                    raise
            self.retries += 1
            time.sleep(0.1)
        self.last_id[function.stream] = (ms, seq)
        self.suite.published.append(Published(event_id, function, entry_id, ms))

    def add(self, function: Function, entry_id: str, event_id: str) -> None:
        """XADDs the event as ``entry_id``; returns once Redis holds it, added by this try or
        by an earlier one whose reply was lost."""
        data = json.dumps({"event": event_id, "seed": self.suite.args.seed})
        try:
            self.redis.call("XADD", function.stream, entry_id, "type", function.event_type,
                            "id", event_id, "data", data)
            return
        except RedisError as error:
            if "equal or smaller" not in str(error):
                raise
        found = self.redis.call("XRANGE", function.stream, entry_id, entry_id)
        if not found or pairs(found[0][1]).get("id") != event_id.encode():
            raise SuiteError(f"entry {entry_id} of {function.stream} is not event {event_id}")


class Faults(threading.Thread):
    """Injects faults one at a time on a schedule drawn from the seed, undoing each in turn.

    The first round has one fault of each kind in a random order; ``round_done`` is set when it
    ends. Later faults are of random kinds. ``stopping`` ends the schedule after the fault
    under way is undone.
    """

    def __init__(self, suite: Suite, rng: random.Random, pause: tuple[float, float]):
        super().__init__(name="faults", daemon=True)
        self.suite = suite
        self.rng = rng
        self.pause = pause
        self.stopping = threading.Event()
        self.round_done = threading.Event()
        self.error: BaseException | None = None
        self.actions = {
            "host-kill": self.host_kill,
            "host-stop": self.host_stop,
            "redis-kill": self.redis_kill,
            "redis-oom": self.redis_oom,
            "proxy-cut": self.proxy_cut,
        }

    def schedule(self):
        """Yields fault kinds: a shuffled round of every kind, then random kinds."""
        first = list(FAULT_KINDS)
        self.rng.shuffle(first)
        yield from first
        while True:
            yield self.rng.choice(FAULT_KINDS)

    def run(self) -> None:
        """Runs the schedule until stopped; an unexpected error is kept for the main thread."""
        try:
            for number, kind in enumerate(self.schedule(), start=1):
                if self.stopping.wait(self.rng.uniform(*self.pause)):
                    return
                self.suite.restart_exited_hosts()
                record = FaultRecord(number, kind, time.monotonic() - self.suite.started,
                                     int(time.time() * 1000))
                self.suite.faults.append(record)
                record.detail = self.actions[kind]()
                self.suite.say(f"fault {number}: {kind}: {record.detail}")
                if number == len(FAULT_KINDS):
                    self.round_done.set()
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            self.error = error

    def host_kill(self) -> str:
        """SIGKILLs a random host, waits a moment, starts a new one in its place."""
        host = self.rng.choice(self.suite.hosts)
        down = self.rng.uniform(0.2, 2.0)
        killed = host.name
        host.kill()
        time.sleep(down)
        host.start()
        ready = host.wait_ready()
        return f"SIGKILL {killed}; {host.name} started {down:.1f} s later, ready in {ready:.1f} s"

    def host_stop(self) -> str:
        """SIGSTOPs a random host past the functions' timeout plus the claim margin."""
        host = self.rng.choice(self.suite.hosts)
        stall = FUNCTION_TIMEOUT_S + CLAIM_MARGIN_S + self.rng.uniform(1.5, 3.0)
        host.signal(signal.SIGSTOP)
        time.sleep(stall)
        host.signal(signal.SIGCONT)
        return (f"SIGSTOP {host.name} for {stall:.1f} s (timeout {FUNCTION_TIMEOUT_S} s + "
                f"claim margin {CLAIM_MARGIN_S} s), then SIGCONT")

    def redis_kill(self) -> str:
        """SIGKILLs Redis, waits a moment, restarts it on the same port from its AOF."""
        down = self.rng.uniform(0.5, 3.0)
        self.suite.redis.kill()
        time.sleep(down)
        started = time.monotonic()
        self.suite.redis.start()
        return (f"SIGKILL redis; restarted {down:.1f} s later, answering after "
                f"{time.monotonic() - started:.1f} s")

    def redis_oom(self) -> str:
        """Sets maxmemory just above the memory in use (noeviction) for a few seconds."""
        hold = self.rng.uniform(3.0, 5.0)
        admin = Redis(self.suite.redis.port)
        try:
            used = int(info_field(admin, "memory", "used_memory"))
            refused_before = oom_refusals(admin)
            admin.call("CONFIG", "SET", "maxmemory-policy", "noeviction")
            admin.call("CONFIG", "SET", "maxmemory", used + 32 * 1024)
            time.sleep(hold)
            admin.call("CONFIG", "SET", "maxmemory", 0)
            refused = oom_refusals(admin) - refused_before
        finally:
            admin.close()
        return (f"maxmemory {used // 1024 + 32} KiB (in use {used // 1024} KiB) for "
                f"{hold:.1f} s; Redis refused {refused} commands with OOM")

    def proxy_cut(self) -> str:
        """Cuts every open host connection to Redis."""
        return f"cut {self.suite.proxy.cut()} connections between the hosts and Redis"


def info_field(redis: Redis, section: str, name: str) -> str:
    """One field of ``INFO section``."""
    for line in text(redis.call("INFO", section)).splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1]
    raise SuiteError(f"INFO {section} has no {name}")


def oom_refusals(redis: Redis) -> int:
    """Commands Redis has refused with OOM since it started (``INFO errorstats``)."""
    for line in text(redis.call("INFO", "errorstats")).splitlines():
        if line.startswith("errorstat_OOM:"):
            return int(re.search(r"count=(\d+)", line).group(1))
    return 0


# --------------------------------------------------------------------------------------------
# Settling and counting


def outstanding(redis: Redis) -> dict[str, dict[str, int]]:
    """Per function, work not finished: entries unread, pending, and scheduled for retry."""
    last_ids = {s: text(pairs(redis.call("XINFO", "STREAM", s))["last-generated-id"])
                for s in STREAMS}
    groups = {}
    for stream in STREAMS:
        for flat in redis.call("XINFO", "GROUPS", stream):
            info = pairs(flat)
            groups[text(info["name"])] = info
    result = {}
    for function in FUNCTIONS:
        info = groups.get(function.name)
        result[function.name] = {
            "unread": 1 if info is None or text(info["last-delivered-id"])
            != last_ids[function.stream] else 0,
            "pending": int(info["pending"]) if info else 0,
            "retries": redis.call("ZCARD", retry_due_key(function)),
        }
    return result


def wait_settled(suite: Suite) -> tuple[bool, float, dict]:
    """Waits until no function has work left, twice in a row; returns (settled, seconds, last)."""
    redis = Redis(suite.redis.port)
    started = time.monotonic()
    last_print = started
    calm_since = None
    left: dict = {}
    try:
        while time.monotonic() - started < SETTLE_TIMEOUT_S:
            try:
                left = outstanding(redis)
            except (OSError, RedisError) as error:
                left = {"error": str(error)}
            busy = "error" in left or any(any(v.values()) for v in left.values())
            if busy:
                calm_since = None
            elif calm_since is None:
                calm_since = time.monotonic()
            elif time.monotonic() - calm_since >= 1.0:
                return True, calm_since - started, left
            if time.monotonic() - last_print >= PROGRESS_EVERY_S:
                last_print = time.monotonic()
                suite.say(f"settling: {describe_outstanding(left)}")
            time.sleep(0.25)
        return False, time.monotonic() - started, left
    finally:
        redis.close()


def describe_outstanding(left: dict) -> str:
    """One line saying what is not finished yet."""
    if "error" in left:
        return f"redis unavailable ({left['error']})"
    busy = [f"{name} " + ", ".join(f"{k} {v}" for k, v in counts.items() if v)
            for name, counts in left.items() if any(counts.values())]
    return "; ".join(busy) or "nothing outstanding"


@dataclass
class Tally:
    """What became of one function's events."""

    function: Function
    published: int = 0
    done: int = 0
    dead_lettered: int = 0
    lost: list[Published] = field(default_factory=list)
    duplicate_dead_letters: list[str] = field(default_factory=list)
    duplicate_effects: int = 0
    extra_attempts: int = 0
    late_attempts: int = 0
    skipped: int = 0
    unexpected_dead_letters: dict[str, int] = field(default_factory=dict)
    dead_after_success: int = 0

    def summary(self) -> dict:
        """The figures as JSON-ready values."""
        return {
            "stream": self.function.stream,
            "type": self.function.event_type,
            "once": self.function.once,
            "published": self.published,
            "done": self.done,
            "dead_lettered": self.dead_lettered,
            "lost": len(self.lost),
            "duplicate_dead_letters": len(self.duplicate_dead_letters),
            "duplicate_effects": self.duplicate_effects,
            "extra_attempts": self.extra_attempts,
            "late_attempts": self.late_attempts,
            "skipped": self.skipped,
            "unexpected_dead_letters": self.unexpected_dead_letters,
            "dead_after_success": self.dead_after_success,
        }


def tally(suite: Suite) -> tuple[dict[str, Tally], int]:
    """Counts per function; also returns records of events never counted as published."""
    redis = Redis(suite.redis.port, timeout=30)
    try:
        attempts: dict[tuple[str, str], list[int]] = {}
        skipped: dict[tuple[str, str], int] = {}
        for function in FUNCTIONS:
            for _, fields in stream_entries(redis, function.records):
                values = dict(fields)
                record = json.loads(values["data"])
                key = (function.name, record["id"])
                if text(values["type"]) == "Skipped":
                    skipped[key] = skipped.get(key, 0) + 1
                else:
                    attempts.setdefault(key, []).append(int(record["attempt"]))
        letters: dict[tuple[str, str], list[str]] = {}
        for stream in DEAD_LETTER_STREAMS:
            for _, fields in stream_entries(redis, stream):
                names = [name for name, _ in fields]
                eddy = dict(fields[:names.index("eddy.original")])
                original = dict(fields[names.index("eddy.original") + 1:])
                key = (text(eddy["eddy.group"]), text(original["id"]))
                letters.setdefault(key, []).append(text(eddy["eddy.reason"]))
    finally:
        redis.close()

    tallies = {f.name: Tally(f) for f in FUNCTIONS}
    known = set()
    for event in suite.published:
        function = event.function
        counts = tallies[function.name]
        key = (function.name, event.event_id)
        known.add(key)
        counts.published += 1
        tried = attempts.get(key, [])
        succeeded = [a for a in tried if function.succeeds_on(a)]
        counts.skipped += skipped.get(key, 0)
        reasons = letters.get(key, [])
        if len(reasons) > 1:
            counts.duplicate_dead_letters.append(event.event_id)
        if len(succeeded) > 1:
            counts.duplicate_effects += 1
        if reasons:
            counts.dead_lettered += 1
            if function.succeed_on is not None:
                unexpected = counts.unexpected_dead_letters
                unexpected[reasons[0]] = unexpected.get(reasons[0], 0) + 1
                counts.dead_after_success += bool(succeeded)
        elif succeeded or key in skipped:
            counts.done += 1
        else:
            counts.lost.append(event)
        if function.succeed_on is None or not reasons:
            counts.extra_attempts += max(0, len(tried) - function.attempts_needed)
        counts.late_attempts += sum(a < max(tried[:i]) for i, a in enumerate(tried) if i)
    unaccounted = len((set(attempts) | set(skipped) | set(letters)) - known)
    return tallies, unaccounted


# --------------------------------------------------------------------------------------------
# Reporting


def faults_near(suite: Suite, event: Published) -> str:
    """The faults from 2 s before an event was published to 15 s after."""
    near = [f for f in suite.faults if event.wall_ms - 2000 <= f.start_ms <= event.wall_ms + 15000]
    return "; ".join(f"#{f.number} {f.kind} at {f.start_s:.1f}s "
                     f"({(f.start_ms - event.wall_ms) / 1000:+.1f} s)" for f in near) or "none"


def log_excerpt(suite: Suite, needles: list[str], limit: int = 12) -> str:
    """Host log lines mentioning any of ``needles``, prefixed with the host's name."""
    found = []
    for log in sorted((suite.dir / "logs").glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if any(needle in line for needle in needles):
                found.append(f"    {log.stem}: {line}")
    return "\n".join(found[:limit]) or "    (no host log line mentions it)"


def explain_problems(suite: Suite, tallies: dict[str, Tally]) -> None:
    """Prints, for the first few lost or twice dead-lettered events, when and what happened."""
    by_id = {e.event_id: e for e in suite.published}
    problems = [(t.function.name, "lost", e) for t in tallies.values() for e in t.lost]
    problems += [(t.function.name, "dead-lettered twice", by_id[i])
                 for t in tallies.values() for i in t.duplicate_dead_letters]
    for name, what, event in problems[:5]:
        published_s = event.wall_ms / 1000 - suite.started_wall
        suite.say(f"{what}: {event.event_id} ({name}, entry {event.entry_id}, published at "
                  f"{published_s:.1f}s); faults around it: {faults_near(suite, event)}\n"
                  f"{log_excerpt(suite, [event.entry_id, event.event_id])}")
    if len(problems) > 5:
        suite.say(f"... and {len(problems) - 5} more")


def print_table(tallies: dict[str, Tally]) -> None:
    """Prints the per-function figures as a plain table."""
    columns = ("published", "done", "dead_lettered", "lost", "duplicate_dead_letters",
               "duplicate_effects", "extra_attempts", "late_attempts", "skipped")
    headers = ("published", "done", "dead", "lost", "dup dead", "dup effects", "extra att",
               "late att", "skipped")
    print(f"{'function':<14}" + "".join(f"{h:>12}" for h in headers))
    for counts in tallies.values():
        figures = counts.summary()
        print(f"{counts.function.name:<14}" + "".join(f"{figures[c]:>12}" for c in columns))
        if counts.unexpected_dead_letters:
            print(f"{'':<14}unexpected dead letters by reason: {counts.unexpected_dead_letters}, "
                  f"{counts.dead_after_success} after a recorded success")


def reproduce_command(args: argparse.Namespace) -> str:
    """The scripts/chaos command that repeats this run, every setting explicit."""
    command = ["scripts/chaos", "--hosts", str(args.hosts), "--duration", f"{args.duration:g}",
               "--rate", f"{args.rate:g}", "--seed", str(args.seed)]
    if args.short:
        command.append("--short")
    return shlex.join(command)


def markdown_section(summary: dict) -> str:
    """The --report section: the figures, the seed and the command that reproduces them."""
    totals = summary["totals"]
    faults = ", ".join(f"{kind} {n}" for kind, n in summary["faults"].items())
    verdict = ("**pass**: nothing lost, nothing dead-lettered twice" if summary["passed"]
               else "**FAIL**: events lost or dead-lettered twice (see the table)")
    rows = []
    for name, f in summary["functions"].items():
        unexpected = ", ".join(f"{r} {n}" for r, n in f["unexpected_dead_letters"].items())
        if f["dead_after_success"]:
            unexpected += f"; {f['dead_after_success']} after a recorded success"
        rows.append(f"| `{name}` | {'yes' if f['once'] else 'no'} | {f['type']} | "
                    f"{f['published']} | {f['done']} | {f['dead_lettered']}"
                    f"{f' ({unexpected})' if unexpected else ''} | {f['lost']} | "
                    f"{f['duplicate_dead_letters']} | {f['duplicate_effects']} | "
                    f"{f['extra_attempts']} | {f['late_attempts']} | {f['skipped']} |")
    settle = (f"{summary['settle_seconds']:.1f} s" if summary["settled"]
              else f"did not settle within {SETTLE_TIMEOUT_S} s")
    lines = [
        REPORT_BEGIN,
        "## Fault suite",
        "",
        f"Run {summary['finished']} with eddy {summary['eddy_version']}"
        f"{' at commit ' + summary['commit'] if summary['commit'] else ''}, "
        f"on {summary['machine']}: {summary['hosts']} hosts, {summary['duration']:g} s of "
        f"faults at {summary['rate']:g} events/s, seed {summary['seed']}"
        f"{' (short run)' if summary['short'] else ''}.",
        "",
        "Reproduce with:",
        "",
        "```sh",
        summary["reproduce"],
        "```",
        "",
        f"(ran as `{summary['command']}`)",
        "",
        f"Faults: {faults}. Time to settle after faults stopped: {settle}.",
        "",
        "| function | once | type | published | done | dead-lettered | lost "
        "| duplicate dead letters | duplicate effects | extra attempts | late attempts "
        "| skipped by once |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        *rows,
        f"| **all** | | | {totals['published']} | {totals['done']} | "
        f"{totals['dead_lettered']} | {totals['lost']} | {totals['duplicate_dead_letters']} | "
        f"{totals['duplicate_effects']} | {totals['extra_attempts']} | "
        f"{totals['late_attempts']} | {totals['skipped']} |",
        "",
        f"Result: {verdict}."
        + (f" Hosts that exited on their own: {summary['unexpected_exits']}."
           if summary["unexpected_exits"] else ""),
        "",
        "*Done*: an attempt the function answers 200 to was recorded (or `once` skipped a "
        "duplicate of a success). *Lost*: published, neither done nor dead-lettered (must be "
        "0). *Duplicate effects*: events whose succeeding attempt ran more than once. *Extra "
        "attempts*: attempts beyond the 1 (Ok), 2 (Flaky) or 3 (Doomed) an event needs. *Late "
        "attempts*: attempts recorded after a later attempt of the same event (an invocation "
        "that went on after another host took its event over). An Ok or Flaky event "
        "dead-lettered shows the reasons beside its count. How the suite runs and counts: the "
        "docstring of `tests/chaos/chaos.py`.",
        REPORT_END,
    ]
    return "\n".join(lines) + "\n"


def write_report(path: Path, section: str) -> None:
    """Writes ``section`` into ``path``, replacing an earlier one and keeping all else."""
    old = path.read_text() if path.exists() else "# Reliability\n"
    begin, end = old.find(REPORT_BEGIN), old.find(REPORT_END)
    if begin != -1 and end > begin:
        new = old[:begin] + section + old[end + len(REPORT_END):].removeprefix("\n")
    else:
        new = old.rstrip("\n") + "\n\n" + section
    path.write_text(new)


def eddy_version(eddy: Path) -> str:
    """What ``eddy --version`` says, without the program name."""
    result = subprocess.run([str(eddy), "--version"], capture_output=True, text=True, check=False)
    return result.stdout.strip().removeprefix("eddy ") or "unknown"


def git_commit() -> str:
    """The commit of the clone this script is in, marked dirty if the work tree has changes."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        result = subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True,
                                check=False)
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    return commit + (" (dirty)" if commit and git("status", "--porcelain") else "")


# --------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="Eddy's fault suite: hosts and Redis killed, stalled, starved and cut off "
                    "while events flow; counts lost events, duplicate dead letters and "
                    "duplicate effects.")
    parser.add_argument("--hosts", type=int, default=3, help="eddy hosts (default 3)")
    parser.add_argument("--duration", type=float,
                        help=f"seconds of publishing and faults (default 300; {SHORT_DURATION_S} "
                             "with --short)")
    parser.add_argument("--rate", type=float, default=20.0,
                        help="events published per second, both streams together (default 20)")
    parser.add_argument("--seed", type=int, help="seed of the fault schedule and the event mix "
                        "(default: random, printed)")
    parser.add_argument("--short", action="store_true",
                        help="about 60 s in all: fewer faults, at least one of each kind")
    parser.add_argument("--eddy", default=os.environ.get("EDDY_BIN"),
                        help="the eddy binary (default $EDDY_BIN)")
    parser.add_argument("--functions", default=os.environ.get("EDDY_FUNCTIONS_DIR"),
                        help="the folder holding record.wasm (default $EDDY_FUNCTIONS_DIR)")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON summary as the last line of stdout")
    parser.add_argument("--report", type=Path,
                        help="write the figures into a marked section of this file")
    args = parser.parse_args(argv)
    if not args.eddy or not Path(args.eddy).is_file():
        parser.error("give the eddy binary with --eddy or EDDY_BIN")
    if not args.functions or not (Path(args.functions) / "record.wasm").is_file():
        parser.error("give the folder holding record.wasm with --functions or EDDY_FUNCTIONS_DIR")
    if args.hosts < 1 or args.rate <= 0:
        parser.error("--hosts must be at least 1 and --rate above 0")
    if shutil.which("redis-server") is None:
        parser.error("redis-server is not installed")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1_000_000)
    if args.duration is None:
        args.duration = SHORT_DURATION_S if args.short else 300.0
    return args


def progress_line(suite: Suite, publisher: Publisher) -> str:
    """Published so far, and what Redis holds: records, dead letters, pending, retries."""
    line = f"published {len(suite.published)} (publisher retries {publisher.retries})"
    redis = Redis(suite.redis.port, timeout=2)
    try:
        records = sum(redis.call("XLEN", f.records) for f in FUNCTIONS)
        letters = sum(redis.call("XLEN", s) for s in DEAD_LETTER_STREAMS)
        left = outstanding(redis)
        pending = sum(v["pending"] for v in left.values())
        retries = sum(v["retries"] for v in left.values())
        return (f"{line}; records {records}, dead letters {letters}, pending {pending}, "
                f"scheduled retries {retries}")
    except (OSError, RedisError) as error:
        return f"{line}; redis unavailable ({error})"
    finally:
        redis.close()


def run(suite: Suite) -> dict:
    """Starts everything, publishes under faults, settles and counts; returns the summary."""
    args = suite.args
    suite.say(f"seed {args.seed}: {args.hosts} hosts, {args.duration:g} s at {args.rate:g} "
              f"events/s{' (short)' if args.short else ''}")
    suite.start()
    publisher = Publisher(suite, args.rate, random.Random(f"{args.seed}-events"))
    pause = (1.0, 2.5) if args.short else (2.0, 8.0)
    faults = Faults(suite, random.Random(f"{args.seed}-faults"), pause)
    publisher.start()
    time.sleep(WARMUP_S)
    faults.start()
    started = time.monotonic()
    next_progress = started + PROGRESS_EVERY_S
    while time.monotonic() - started < args.duration or not faults.round_done.is_set():
        for thread in (publisher, faults):
            if thread.error is not None:
                raise SuiteError(f"the {thread.name} thread failed: {thread.error!r}")
        if time.monotonic() >= next_progress:
            next_progress += PROGRESS_EVERY_S
            suite.say(progress_line(suite, publisher))
        time.sleep(0.2)
    faulted_for = time.monotonic() - started
    faults.stopping.set()
    faults.join()
    publisher.stopping.set()
    publisher.join()
    for thread in (publisher, faults):
        if thread.error is not None:
            raise SuiteError(f"the {thread.name} thread failed: {thread.error!r}")
    suite.restart_exited_hosts()
    suite.say(f"faults and publishing stopped after {faulted_for:.1f} s: {len(suite.faults)} "
              f"faults, {len(suite.published)} events; waiting for everything to settle")
    settled, settle_seconds, left = wait_settled(suite)
    if settled:
        suite.say(f"settled {settle_seconds:.1f} s after faults stopped")
    else:
        suite.say(f"NOT settled after {SETTLE_TIMEOUT_S} s: {describe_outstanding(left)}")
    tallies, unaccounted = tally(suite)
    print_table(tallies)
    if unaccounted:
        suite.say(f"WARNING: records or dead letters of {unaccounted} events the publisher "
                  "never counted: the suite's accounting is wrong")
    explain_problems(suite, tallies)
    fault_counts = {kind: sum(f.kind == kind for f in suite.faults) for kind in FAULT_KINDS}
    functions = {name: t.summary() for name, t in tallies.items()}
    totals = {key: sum(f[key] for f in functions.values())
              for key in ("published", "done", "dead_lettered", "lost", "duplicate_dead_letters",
                          "duplicate_effects", "extra_attempts", "late_attempts", "skipped")}
    return {
        "seed": args.seed,
        "hosts": args.hosts,
        "duration": round(faulted_for, 1),
        "rate": args.rate,
        "short": args.short,
        "faults": fault_counts,
        "fault_log": [{"number": f.number, "kind": f.kind, "at_s": round(f.start_s, 1),
                       "detail": f.detail} for f in suite.faults],
        "publisher_retries": publisher.retries,
        "settled": settled,
        "settle_seconds": round(settle_seconds, 1),
        "functions": functions,
        "totals": totals,
        "unaccounted": unaccounted,
        "unexpected_exits": len(suite.unexpected_exits),
        "passed": totals["lost"] == 0 and totals["duplicate_dead_letters"] == 0,
        "eddy_version": eddy_version(suite.eddy),
        "commit": git_commit(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
        "finished": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "reproduce": reproduce_command(args),
        "command": shlex.join(["python3", *sys.argv]),
    }


def main(argv: list[str]) -> int:
    """Runs the suite; the exit status says whether anything was lost or dead-lettered twice."""
    args = parse_args(argv)
    # Each of these stops the run and cleans up, even where the caller ignored SIGINT.
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.default_int_handler)
    suite = Suite(args)
    keep = True
    try:
        summary = run(suite)
        keep = not summary["passed"]
    except SuiteError as error:
        suite.say(f"the suite could not run: {error}")
        return 2
    except KeyboardInterrupt:
        suite.say("interrupted")
        return 130
    except Exception:  # noqa: BLE001 - a fault of the suite, not a finding: exit status 2
        traceback.print_exc()
        suite.say("the suite failed")
        return 2
    finally:
        suite.close()
        if keep:
            print(f"host and Redis logs kept in {suite.dir}", flush=True)
        else:
            shutil.rmtree(suite.dir, ignore_errors=True)
    if args.report:
        write_report(args.report, markdown_section(summary))
        suite.say(f"figures written to {args.report}")
    suite.say("PASS: nothing lost, nothing dead-lettered twice" if summary["passed"]
              else "FAIL: events lost or dead-lettered twice")
    if args.json:
        print(json.dumps(summary), flush=True)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
