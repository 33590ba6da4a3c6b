#!/usr/bin/env python3
"""A distant object store, simulated: serves a directory over HTTP/1.1 with a delay per
request and bandwidth limits, for the remote profile of scripts/bench and the tests.

    scripts/delay_server.py --root tmp/replica-bench --delay-ms 30 --conn-mbit 400 \
        --link-mbit 1000 --prefix /bucket/store.zarr

The first line on standard output is the base URL (with the prefix), e.g.
`http://127.0.0.1:41234/bucket/store.zarr`; point `--source` at it.

What it does, per request:
- GET and HEAD of a key (a file under --root; `/` separates directories), with keep-alive,
  TCP_NODELAY, `Range: bytes=a-b`, `bytes=a-`, `bytes=-n` (206 with Content-Range; 416 with
  `Content-Range: bytes */SIZE` when the range starts past the end), Content-Length,
  Last-Modified, ETag, Accept-Ranges; 404 for absent keys and directories; a Range with
  several parts or a bad syntax is ignored (200, the whole object), as RFC 9110 allows.
- --delay-ms: every request (404s and HEADs too) waits this long before its first byte is
  sent: the round trip plus the server's time to first byte of a distant store.
- --conn-mbit: each connection sends at most this rate; --link-mbit: all connections
  together share this rate (one token bucket, a virtual clock without burst credit).
  The body goes out in slices (64 KiB), each sent when both limits say its last byte would
  have arrived, so a response of B bytes ends delay + B/rate after the request.
- GET /_stats (at the root, outside the prefix, never delayed nor counted) returns JSON:
  requests, bytes of bodies sent, connections, per status, and per first path component
  under the prefix (e.g. {"2m_temperature": {"requests": 3, "bytes": 1234}}), and the
  server's own CPU seconds (to see that it is not the bottleneck).

Bounded: one thread per connection, at most --max-connections at once (others wait in the
listen backlog); idle connections close after --idle-timeout s; bodies are sent with
sendfile from the file, a slice at a time, never held in memory. SIGTERM or SIGINT stops it
(exit 0). Standard library only (Python 3.11).
"""

import argparse
import email.utils
import http.server
import json
import os
import posixpath
import signal
import socket
import socketserver
import sys
import threading
import time
import urllib.parse

SLICE = 64 * 1024


class Link:
    """The bandwidth shared by all connections: a virtual clock of when the link is next
    free. `reserve(n, now)` books n bytes and returns when their last byte has crossed."""

    def __init__(self, bytes_per_second):
        self.rate = bytes_per_second
        self.lock = threading.Lock()
        self.free_at = 0.0

    def reserve(self, n, now):
        if not self.rate:
            return now
        with self.lock:
            self.free_at = max(self.free_at, now) + n / self.rate
            return self.free_at


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.started = time.time()
        self.requests = 0
        self.bytes = 0
        self.connections = 0
        self.open_connections = 0
        self.status = {}
        self.by_key = {}

    def connection(self, delta):
        with self.lock:
            self.open_connections += delta
            if delta > 0:
                self.connections += 1

    def request(self, status, top):
        with self.lock:
            self.requests += 1
            self.status[str(status)] = self.status.get(str(status), 0) + 1
            entry = self.by_key.setdefault(top, {"requests": 0, "bytes": 0})
            entry["requests"] += 1

    def sent(self, n, top):
        with self.lock:
            self.bytes += n
            self.by_key.setdefault(top, {"requests": 0, "bytes": 0})["bytes"] += n

    def snapshot(self):
        with self.lock:
            return {"requests": self.requests, "bytes": self.bytes,
                    "connections": self.connections,
                    "open_connections": self.open_connections,
                    "status": dict(self.status),
                    "by_key": {k: dict(v) for k, v in self.by_key.items()},
                    "uptime_s": round(time.time() - self.started, 3),
                    "cpu_s": round(time.process_time(), 3)}


def parse_range(header, size):
    """(start, end) inclusive for a single `bytes=` range; None to ignore the header (serve
    the whole object); "unsatisfiable" for a range that starts past the end."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return None
    if first == "":
        if last == "":
            return None
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    start = int(first)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    end = size - 1 if last == "" else min(int(last), size - 1)
    return start, end


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sodeda-delay-server"

    def version_string(self):
        return self.server_version

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connection.settimeout(self.server.idle_timeout)
        self.conn_free_at = 0.0
        self.server.stats.connection(+1)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.stats.connection(-1)

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

    # --- the key behind a path -------------------------------------------------------

    def _key(self):
        """The relative key of this request's path under the prefix, or None."""
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        prefix = self.server.prefix
        if prefix:
            if path != prefix and not path.startswith(prefix + "/"):
                return None
            path = path[len(prefix):]
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") or "\x00" in p for p in parts):
            return None
        return "/".join(parts)

    def _file(self, key):
        if not key:
            return None
        path = os.path.join(self.server.root, *key.split("/"))
        try:
            f = open(path, "rb")
        except OSError:
            return None
        st = os.fstat(f.fileno())
        if not (st.st_mode & 0o170000 == 0o100000):  # regular files only
            f.close()
            return None
        return f, st

    # --- pacing ----------------------------------------------------------------------

    def _wait_delay(self):
        if self.server.delay > 0:
            time.sleep(self.server.delay)

    def _pace(self, n):
        """Sleeps until the last of n more bytes would have arrived under both limits."""
        now = time.monotonic()
        done = now
        if self.server.conn_rate:
            self.conn_free_at = max(self.conn_free_at, now) + n / self.server.conn_rate
            done = self.conn_free_at
        done = max(done, self.server.link.reserve(n, now))
        wait = done - time.monotonic()
        if wait > 0:
            time.sleep(wait)

    # --- responses -------------------------------------------------------------------

    def _simple(self, status, body=b"", headers=(), top=""):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        if body:
            self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _stats(self):
        body = json.dumps(self.server.stats.snapshot()).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self):
        if urllib.parse.urlsplit(self.path).path == "/_stats":
            return self._stats()
        key = self._key()
        top = key.split("/", 1)[0] if key else ""
        self._wait_delay()
        opened = self._file(key) if key is not None else None
        if opened is None:
            self.server.stats.request(404, top)
            return self._simple(404, b"not found\n", top=top)
        f, st = opened
        with f:
            size = st.st_size
            meta = [("Accept-Ranges", "bytes"),
                    ("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True)),
                    ("ETag", f'"{st.st_ino:x}-{size:x}-{st.st_mtime_ns:x}"')]
            rng = parse_range(self.headers.get("Range"), size) if self.command == "GET" else None
            if rng == "unsatisfiable":
                self.server.stats.request(416, top)
                return self._simple(416, b"", [("Content-Range", f"bytes */{size}")] + meta)
            if rng is None:
                status, start, length = 200, 0, size
            else:
                status, start, length = 206, rng[0], rng[1] - rng[0] + 1
            self.server.stats.request(status, top)
            self.send_response(status)
            for k, v in meta:
                self.send_header(k, v)
            if status == 206:
                self.send_header("Content-Range", f"bytes {rng[0]}-{rng[1]}/{size}")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.end_headers()
            if self.command == "HEAD":
                return
            offset, left = start, length
            while left > 0:
                n = min(SLICE, left)
                self._pace(n)
                sent = self.connection.sendfile(f, offset, n)
                if sent <= 0:
                    raise ConnectionError("short file")
                offset += sent
                left -= sent
                self.server.stats.sent(sent, top)

    def do_GET(self):
        self._serve()

    def do_HEAD(self):
        self._serve()

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError, socket.timeout):
            self.close_connection = True


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, args):
        self.root = os.path.abspath(args.root)
        self.prefix = "/" + args.prefix.strip("/") if args.prefix.strip("/") else ""
        self.delay = args.delay_ms / 1000
        self.conn_rate = args.conn_mbit * 1e6 / 8 if args.conn_mbit else 0
        self.link = Link(args.link_mbit * 1e6 / 8 if args.link_mbit else 0)
        self.idle_timeout = args.idle_timeout
        self.verbose = args.verbose
        self.stats = Stats()
        self.slots = threading.BoundedSemaphore(args.max_connections)
        self.stopping = threading.Event()
        super().__init__(address, Handler)

    def handle_error(self, request, client_address):
        if self.verbose:
            sys.stderr.write(f"{client_address}: {sys.exc_info()[1]!r}\n")

    def process_request(self, request, client_address):
        # Waits for a free slot: at most max_connections handler threads at once.
        while not self.slots.acquire(timeout=0.5):
            if self.stopping.is_set():
                self.shutdown_request(request)
                return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class Running:
    """This server in a child process, for the bench and the tests: started by PID, its URL
    read from the first line of its output (bounded wait), stopped by SIGTERM (then SIGKILL)
    by PID. Use as a context manager so it is stopped even on failure."""

    def __init__(self, root, delay_ms=0, conn_mbit=0, link_mbit=0, prefix="", port=0,
                 python=None, timeout=20, log=None):
        import select
        import subprocess
        args = [python or sys.executable, os.path.abspath(__file__), "--root", str(root),
                "--port", str(port), "--delay-ms", str(delay_ms), "--conn-mbit",
                str(conn_mbit), "--link-mbit", str(link_mbit)]
        if prefix:
            args += ["--prefix", prefix]
        self.log = open(log, "ab") if log else None
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE,
                                     stderr=self.log or subprocess.DEVNULL)
        try:
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
            line = self.proc.stdout.readline().decode().strip() if ready else ""
            if not line.startswith("http://"):
                if ready:  # end of output: it exited (give it a moment to say how)
                    try:
                        self.proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        pass
                raise RuntimeError(f"delay server exited {self.proc.returncode}: {line!r}"
                                   if self.proc.poll() is not None else
                                   f"delay server did not start in {timeout} s")
        except BaseException:
            self.stop()
            raise
        self.url = line
        split = urllib.parse.urlsplit(line)
        self.base = f"{split.scheme}://{split.netloc}"
        self.port = split.port

    def stats(self):
        import urllib.request
        with urllib.request.urlopen(self.base + "/_stats", timeout=10) as r:
            return json.loads(r.read())

    def stop(self):
        """Stops the process by PID; safe to call more than once. Returns its exit code."""
        import subprocess
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc.stdout.close()
        if self.log:
            self.log.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="directory served")
    p.add_argument("--prefix", default="", help="URL path prefix, e.g. /bucket/store.zarr")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: pick a free port")
    p.add_argument("--delay-ms", type=float, default=0.0, help="before each response's first byte")
    p.add_argument("--conn-mbit", type=float, default=0.0, help="per connection; 0: unlimited")
    p.add_argument("--link-mbit", type=float, default=0.0,
                   help="all connections together; 0: unlimited")
    p.add_argument("--max-connections", type=int, default=256)
    p.add_argument("--idle-timeout", type=float, default=120.0,
                   help="seconds before an idle connection is closed")
    p.add_argument("--verbose", action="store_true", help="log each request on stderr")
    args = p.parse_args(argv)
    if not os.path.isdir(args.root):
        p.error(f"--root {args.root}: not a directory")

    server = Server((args.host, args.port), args)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    print(f"http://{host}:{port}{server.prefix}", flush=True)
    while not stop.wait(1.0):
        if not thread.is_alive():
            return 1
    server.stopping.set()
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
