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
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
# The cache's directory of this format version (FORMAT_VERSION, src/encode.rs).
FORMAT_DIR = "v5"


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
        full_env = clean_env()
        full_env.update({"SODEDA_SOURCE": self.source, "LOCAL_CACHE": self.cache})
        full_env.update(env or {})
        p = subprocess.run([str(binary()), *map(str, args)], capture_output=True, text=True,
                           env=full_env, cwd=self.cwd, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(
                f"sodeda-era5 {' '.join(map(str, args))} exited {p.returncode}\n"
                f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
        return p

    def list(self, deskriptors, *extra, env=None):
        p = self("list", "--json", "--deskriptors", deskriptors, *extra, env=env)
        return json.loads(p.stdout)


@pytest.fixture
def run(replica, tmp_path):
    return Runner(replica, tmp_path / "cache", tmp_path)


def clean_env():
    """This process's environment without sodeda settings (nor RUST_LOG, which would override
    --log-level), for the binaries under test."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("SODEDA_") and k not in ("LOCAL_CACHE", "RUST_LOG")}


def chunk_gets(requests):
    """Data-chunk GETs among a loopback server's requests (no metadata, no coordinates)."""
    coords = ("/time/", "/latitude/", "/longitude/", "/level/")
    return [p for m, p in requests if m == "GET" and "/." not in p and not p.startswith(coords)]


def read_lines(path):
    return [line for line in Path(path).read_text().splitlines() if line.strip()]


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory like an object store's HTTP endpoint: GET with `Range: bytes=a-b`
    (206), HEAD, 404 for absent keys. Records every request path in `server.requests`; GETs
    whose path contains a key of `server.delay` wait that many seconds, those containing a key
    of `server.fail` get that HTTP status, and those containing a key of `server.fail_times`
    (value `[status, n]`) get that status n times, then succeed."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _file(self):
        path = self.translate_path(self.path)
        return path if os.path.isfile(path) else None

    def do_HEAD(self):
        self.server.requests.append(("HEAD", self.path))
        for part, status in self.server.fail.items():
            if part in self.path:
                self.send_error(status)
                return
        path = self._file()
        if not path:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(os.path.getsize(path)))
        self.end_headers()

    def do_GET(self):
        self.server.requests.append(("GET", self.path))
        for part, seconds in self.server.delay.items():
            if part in self.path:
                time.sleep(seconds)
        for part, status in self.server.fail.items():
            if part in self.path:
                self.send_error(status)
                return
        for part, budget in self.server.fail_times.items():
            if part in self.path and budget[1] > 0:
                budget[1] -= 1
                self.send_error(budget[0])
                return
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
    server.delay = {}
    server.fail = {}
    server.fail_times = {}
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def mount_binary():
    return Path(os.environ.get("SODEDA_MOUNT_BIN", ROOT / "target" / "debug" / "sodeda-mount"))


def mounted_at(path):
    """The (fstype, source) of the mount at `path`, or None."""
    path, found = str(path), None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            point = left.split(" ")[4].replace("\\040", " ")
            if point == path:
                fstype, source = right.split(" ")[:2]
                found = (fstype, source)
    return found


class Mount:
    """A sodeda-mount process in the foreground, started and stopped by PID."""

    def __init__(self, mountpoint, deskriptors, source, cache, extra=(), log=None, env=None):
        self.env = env or {}
        self.mountpoint = Path(mountpoint)
        try:
            self.mountpoint.mkdir(parents=True)
        except FileExistsError:
            pass  # also a stale mount point, which stat() cannot see as a directory
        self.args = [str(mount_binary()), "--foreground", "--deskriptors", str(deskriptors),
                     "--source", str(source), "--cache", str(cache), *map(str, extra),
                     str(self.mountpoint)]
        self.log = Path(log or (self.mountpoint.parent / (self.mountpoint.name + ".log")))
        self.proc = None

    def start(self, timeout=60):
        env = clean_env()
        env.setdefault("RUST_LOG", "info,fuser=error")
        env.update(self.env)
        self.logfile = open(self.log, "ab")
        self.proc = subprocess.Popen(self.args, stdout=self.logfile, stderr=subprocess.STDOUT,
                                     env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"sodeda-mount exited {self.proc.returncode}:\n"
                                     + self.log.read_text())
            if mounted_at(self.mountpoint) and self._answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise AssertionError("mount not live in time:\n" + self.log.read_text())

    def _answers(self):
        # listdir, not stat: the kernel may answer stat of a dead mount from its attribute
        # cache, while listing needs the file system process.
        try:
            os.listdir(self.mountpoint)
            return True
        except OSError:
            return False  # e.g. a stale mount still in the way

    def stats(self):
        return json.loads(os.getxattr(self.mountpoint, "user.sodeda.stats"))

    def stop(self):
        """Unmounts, waits for the process (killing it after 15 s), and detaches whatever is
        still mounted at the point. Safe to call more than once."""
        if self.proc is not None:
            if mounted_at(self.mountpoint):
                subprocess.run(["umount", str(self.mountpoint)], capture_output=True)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
            self.logfile.close()
            self.proc = None
        for _ in range(3):
            if not mounted_at(self.mountpoint):
                break
            subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True)


@pytest.fixture
def mount_factory(tmp_path):
    """Creates started mounts; every one is unmounted and its process stopped at teardown."""
    mounts = []

    def make(deskriptors, source, cache=None, name="mnt", extra=(), env=None):
        m = Mount(tmp_path / name, deskriptors, source, cache or (tmp_path / "cache"), extra,
                  env=env)
        mounts.append(m)
        return m.start()

    yield make
    for m in mounts:
        m.stop()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """moto's S3 server, checking credentials, as a subprocess on 127.0.0.1 (stopped by PID):
    one IAM user whose access key may do everything, and one bucket."""

    bucket = "sodeda-test"

    def __init__(self, log):
        import boto3
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="4")
        self.log = open(log, "wb")
        self.proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable),
                                                   "moto_server"), "-H", "127.0.0.1", "-p",
                                      str(self.port)], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        try:
            boot = dict(endpoint_url=self.url, region_name="us-east-1",
                        aws_access_key_id="boot", aws_secret_access_key="boot")
            iam = boto3.client("iam", **boot)
            for _ in range(100):
                try:
                    iam.create_user(UserName="sodeda")
                    break
                except Exception:
                    time.sleep(0.1)
            key = iam.create_access_key(UserName="sodeda")["AccessKey"]
            self.key_id, self.secret = key["AccessKeyId"], key["SecretAccessKey"]
            iam.put_user_policy(UserName="sodeda", PolicyName="all", PolicyDocument=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
            self.client().create_bucket(Bucket=self.bucket)
        except BaseException:
            self.stop()
            raise

    def client(self):
        import boto3
        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=self.key_id, aws_secret_access_key=self.secret)

    def objects(self, prefix=""):
        out = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                out[o["Key"]] = o["Size"]
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def s3(tmp_path):
    server = S3Server(tmp_path / "moto.log")
    try:
        yield server
    finally:
        server.stop()


class Dashboard:
    """A `sodeda-era5 dashboard` process on a free port of 127.0.0.1 (standard error to
    `log`), answering once started; stopped by PID."""

    def __init__(self, replica, cache, deskriptors, log, extra=(), log_level="info"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = clean_env()
        env.update({"SODEDA_SOURCE": str(replica), "LOCAL_CACHE": str(cache),
                    "SODEDA_DESKRIPTORS": str(deskriptors)})
        self.stderr = open(log, "wb")
        self.proc = subprocess.Popen(
            [str(binary()), "dashboard", "--port", str(self.port), "--log-level", log_level,
             *extra],
            env=env, stdout=subprocess.DEVNULL, stderr=self.stderr)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"dashboard exited {self.proc.returncode}:\n"
                                     + Path(log).read_text())
            try:
                if self.get("/healthz")[1] == b"ok\n":
                    return
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("dashboard not answering after 60 s:\n"
                                     + Path(log).read_text())
            time.sleep(0.1)

    def get(self, path):
        """(status, body, content type) of a GET; HTTP errors are returned, not raised."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=120) as r:
                return r.status, r.read(), r.headers.get("Content-Type")
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers.get("Content-Type")

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.stderr.close()
