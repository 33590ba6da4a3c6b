"""Shared fixtures: the replica, the binary, and a helper to run it.

Environment (set by scripts/test; defaults let `pytest` run alone after a build):
- SODEDA_BIN: the sodeda-era5 binary (default target/debug/sodeda-era5)
- SODEDA_TEST_REPLICA: a replica written by scripts/make-replica --profile test
  (default: written once into .pytest-replica/ next to the repository)
"""

import functools
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"


def binary():
    return Path(os.environ.get("SODEDA_BIN", ROOT / "target" / "debug" / "sodeda-era5"))


@pytest.fixture(scope="session")
def replica():
    path = os.environ.get("SODEDA_TEST_REPLICA")
    if path:
        return Path(path)
    path = ROOT / "tmp" / "replica-test"
    if not (path / ".sodeda-replica.json").exists():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_replica.py"), str(path),
                        "--profile", "test"], check=True)
    return path


class Runner:
    """Runs sodeda-era5 with a fixed source and cache; returns CompletedProcess."""

    def __init__(self, source, cache, cwd):
        self.source = str(source)
        self.cache = str(cache)
        self.cwd = str(cwd)

    def __call__(self, *args, check=True, env=None, timeout=300):
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith("SODEDA_") and k != "LOCAL_CACHE"}
        full_env.update({"SODEDA_SOURCE": self.source, "LOCAL_CACHE": self.cache})
        full_env.update(env or {})
        p = subprocess.run([str(binary()), *map(str, args)], capture_output=True, text=True,
                           env=full_env, cwd=self.cwd, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(
                f"sodeda-era5 {' '.join(map(str, args))} exited {p.returncode}\n"
                f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
        return p

    def list(self, deskriptors, *extra):
        p = self("list", "--json", "--deskriptors", deskriptors, *extra)
        return json.loads(p.stdout)


@pytest.fixture
def run(replica, tmp_path):
    return Runner(replica, tmp_path / "cache", tmp_path)


def read_lines(path):
    return [line for line in Path(path).read_text().splitlines() if line.strip()]


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory like an object store's HTTP endpoint: GET with `Range: bytes=a-b`
    (206), HEAD, 404 for absent keys. Records every request path in `server.requests`."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _file(self):
        path = self.translate_path(self.path)
        return path if os.path.isfile(path) else None

    def do_HEAD(self):
        self.server.requests.append(("HEAD", self.path))
        path = self._file()
        if not path:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(os.path.getsize(path)))
        self.end_headers()

    def do_GET(self):
        self.server.requests.append(("GET", self.path))
        path = self._file()
        if not path:
            self.send_error(404)
            return
        with open(path, "rb") as f:
            data = f.read()
        size = len(data)
        header = self.headers.get("Range")
        if header and header.startswith("bytes="):
            first, _, last = header[len("bytes="):].partition("-")
            if first == "":
                start, end = size - int(last), size - 1
            else:
                start = int(first)
                end = int(last) if last else size - 1
            end = min(end, size - 1)
            body = data[start:end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def http_source(replica):
    """The replica over http://127.0.0.1:<port>; yields the server (`.url`, `.requests`)."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(RangeHandler, directory=str(replica)))
    server.requests = []
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
