#!/usr/bin/env python3
"""Soak: one host at a steady rate for a long time, with retention on, sampling memory.

Starts its own redis-server (no persistence: the disk is not what is measured) on a free
loopback port and one `eddy up` running the `noop` fixture on stream `soak`, whose manifest
keeps 2 minutes of entries (`[triggers.stream.retention] max_age`), trimmed every 5 s. A
publisher adds events at `--rate` per second (pipelined every 100 ms) for `--minutes`. Every
`--sample` seconds it records the host's resident memory (VmRSS), Redis's `used_memory`, the
stream's length, the group's lag and pending count, and events handled so far. At the end it
prints a markdown table and a verdict: memory is flat when the last third of the run grows by
less than `--tolerance` (default 10%) over the middle third, for both the host and Redis.
Exit status 1 when not flat or when events were left unhandled.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    """A minimal RESP client: enough for XADD pipelines and INFO."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buf = b""

    def _encode(self, args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b"-"):
            return rest.decode()
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.sock.recv(65536)
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data.decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise ValueError(f"unexpected reply {line!r}")

    def pipeline(self, commands):
        """Sends every command, then reads every reply."""
        self.sock.sendall(b"".join(self._encode(c) for c in commands))
        return [self._read() for _ in commands]

    def call(self, *args):
        """One command and its reply."""
        return self.pipeline([args])[0]


def rss_kib(pid):
    """Resident memory of `pid` in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def group_info(redis, stream, group):
    """(lag, pending) of `group` on `stream`."""
    for g in redis.call("XINFO", "GROUPS", stream) or []:
        info = dict(zip(g[::2], g[1::2]))
        if info.get("name") == group:
            return info.get("lag"), info.get("pending")
    return None, None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=int, default=500, help="events per second")
    parser.add_argument("--sample", type=float, default=30, help="seconds between samples")
    parser.add_argument("--tolerance", type=float, default=0.10)
    parser.add_argument("--eddy", default=os.environ.get("EDDY_BIN", "eddy"))
    parser.add_argument("--functions", default=os.environ.get("EDDY_FUNCTIONS_DIR", "."))
    parser.add_argument("--output", help="also write the table and verdict to this file")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="eddy-soak-")
    port = free_port()
    redis_proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", work],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    host = None
    try:
        for _ in range(100):
            try:
                redis = Redis(port)
                redis.call("PING")
                break
            except OSError:
                time.sleep(0.05)
        manifest = os.path.join(work, "soak.toml")
        with open(manifest, "w") as f:
            f.write(f'name = "soak"\ncomponent = "{os.path.join(args.functions, "noop.wasm")}"\n'
                    '[[triggers.stream]]\nstream = "soak"\n'
                    '[triggers.stream.retention]\nmax_age = "2m"\n')
        log = open(os.path.join(work, "host.log"), "w")
        host = subprocess.Popen(
            [args.eddy, "up", "--redis", f"redis://127.0.0.1:{port}/", "--functions", manifest,
             "--listen", "127.0.0.1:0", "--retention-interval", "5s"],
            stdout=log, stderr=log, env={**os.environ, "EDDY_LOG": "warn"})
        deadline = time.time() + 60
        while group_info(redis, "soak", "soak") == (None, None):
            if time.time() > deadline or host.poll() is not None:
                sys.exit(f"the host did not start; see {work}/host.log")
            time.sleep(0.2)

        publisher = Redis(port)
        start = time.time()
        end = start + args.minutes * 60
        next_sample = start
        sent = 0
        rows = []
        payload = '{"orderId":"o-1","userId":"u-1","items":[{"sku":"a","qty":1}],"total":12.5}'
        while time.time() < end:
            tick = time.time()
            due = int((tick - start) * args.rate) - sent
            if due > 0:
                publisher.pipeline([("XADD", "soak", "*", "type", "OrderPlaced", "data", payload)
                                    for _ in range(due)])
                sent += due
            if tick >= next_sample:
                lag, pending = group_info(redis, "soak", "soak")
                info = redis.call("INFO", "memory")
                used = next(int(l.split(":")[1]) for l in info.splitlines()
                            if l.startswith("used_memory:"))
                row = (round(tick - start), rss_kib(host.pid), used // 1024,
                       redis.call("XLEN", "soak"), lag, pending, sent)
                rows.append(row)
                print("t=%5ds host_rss=%7d KiB redis=%7d KiB length=%7d lag=%s pending=%s sent=%d"
                      % row, flush=True)
                next_sample += args.sample
            time.sleep(max(0.0, 0.1 - (time.time() - tick)))

        # Let the host finish what was sent.
        drained = False
        for _ in range(300):
            lag, pending = group_info(redis, "soak", "soak")
            if lag == 0 and pending == 0:
                drained = True
                break
            time.sleep(0.1)

        def flat(column):
            third = max(1, len(rows) // 3)
            middle = max(r[column] for r in rows[third:2 * third]) if len(rows) >= 3 else 0
            last = max(r[column] for r in rows[2 * third:]) if len(rows) >= 3 else 0
            return middle, last, len(rows) >= 3 and last <= middle * (1 + args.tolerance)

        host_mid, host_last, host_flat = flat(1)
        redis_mid, redis_last, redis_flat = flat(2)
        lines = [
            f"Soak: {args.minutes:g} min at {args.rate} events/s, retention max_age 2m "
            f"(command: `scripts/soak --minutes {args.minutes:g} --rate {args.rate}`)",
            "",
            "| t (s) | host RSS (KiB) | Redis used (KiB) | stream length | lag | pending | sent |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ] + ["| %d | %d | %d | %d | %s | %s | %d |" % r for r in rows] + [
            "",
            f"- host RSS: peak {host_mid} KiB in the middle third, {host_last} KiB in the last "
            f"third: {'flat' if host_flat else 'GROWING'}",
            f"- Redis used_memory: peak {redis_mid} KiB in the middle third, {redis_last} KiB in "
            f"the last third: {'flat' if redis_flat else 'GROWING'}",
            f"- every event handled at the end: {'yes' if drained else 'NO'} ({sent} sent)",
        ]
        text = "\n".join(lines)
        print(text)
        if args.output:
            with open(args.output, "w") as f:
                f.write(text + "\n")
        sys.exit(0 if host_flat and redis_flat and drained else 1)
    finally:
        if host is not None and host.poll() is None:
            host.send_signal(signal.SIGTERM)
            try:
                host.wait(timeout=30)
            except subprocess.TimeoutExpired:
                host.kill()
        redis_proc.kill()
        redis_proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
