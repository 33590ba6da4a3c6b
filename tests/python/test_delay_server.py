"""The delaying object server of the remote bench profile (scripts/delay_server.py): HTTP
semantics against the file bytes, keep-alive, the delay, the bandwidth limits (bounds on the
server itself, measured over >= 0.5 s), a clean SIGTERM, and sodeda-era5 reading through it.
The servers are child processes, started and stopped by PID (a fixture stops them all, also
when a test fails)."""

import http.client
import random
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from conftest import DATA, ROOT, Runner

sys.path.insert(0, str(ROOT / "scripts"))
from delay_server import Running, parse_range  # noqa: E402

TEST_SET = DATA / "test-set.jsonl"
PREFIX = "/bucket/store.zarr"


@pytest.fixture
def servers():
    """Starts delay servers (`servers(root, **options)`); all stopped at teardown."""
    started = []

    def start(root, **options):
        s = Running(root, **options)
        started.append(s)
        return s

    try:
        yield start
    finally:
        for s in started:
            s.stop()


@pytest.fixture
def objects(tmp_path):
    """A served directory: `small` (1,000 bytes), `a/blob` (3 MB), a directory `a`."""
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    rng = random.Random(12)
    small = rng.randbytes(1000)
    blob = rng.randbytes(3_000_000)
    (root / "small").write_bytes(small)
    (root / "a" / "blob").write_bytes(blob)
    return root, small, blob


def request(conn, method, path, headers=None):
    conn.request(method, path, headers=headers or {})
    r = conn.getresponse()
    return r.status, dict(r.getheaders()), r.read()


def test_parse_range():
    assert parse_range("bytes=0-9", 100) == (0, 9)
    assert parse_range("bytes=90-", 100) == (90, 99)
    assert parse_range("bytes=-10", 100) == (90, 99)
    assert parse_range("bytes=-1000", 100) == (0, 99)
    assert parse_range("bytes=50-1000", 100) == (50, 99)
    assert parse_range("bytes=100-", 100) == "unsatisfiable"
    assert parse_range("bytes=-0", 100) == "unsatisfiable"
    for ignored in (None, "", "bytes=9-1", "bytes=0-1,5-6", "items=0-1", "bytes=a-b", "bytes=-"):
        assert parse_range(ignored, 100) is None, ignored


def test_ranges_head_and_404_against_the_file_bytes_on_one_connection(objects, servers):
    root, small, blob = objects
    s = servers(root, prefix=PREFIX)
    assert s.url == f"{s.base}{PREFIX}"
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    key = f"{PREFIX}/small"
    cases = [  # Range header → status, body, Content-Range
        (None, 200, small, None),
        ("bytes=10-99", 206, small[10:100], "bytes 10-99/1000"),
        ("bytes=990-", 206, small[990:], "bytes 990-999/1000"),
        ("bytes=-50", 206, small[-50:], "bytes 950-999/1000"),
        ("bytes=-5000", 206, small, "bytes 0-999/1000"),
        ("bytes=500-100000", 206, small[500:], "bytes 500-999/1000"),
        ("bytes=0-0", 206, small[:1], "bytes 0-0/1000"),
        ("bytes=1000-", 416, b"", "bytes */1000"),
        ("bytes=-0", 416, b"", "bytes */1000"),
        ("bytes=0-1,5-6", 200, small, None),
    ]
    body_bytes = 0
    for rng, status, body, content_range in cases:
        st, headers, got = request(conn, "GET", key, {"Range": rng} if rng else None)
        assert (st, got) == (status, body), rng
        assert headers.get("Content-Range") == content_range, rng
        assert int(headers["Content-Length"]) == len(body), rng
        body_bytes += len(got)
    st, headers, got = request(conn, "GET", f"{PREFIX}/a/blob", {"Range": "bytes=1234567-2345678"})
    assert (st, got) == (206, blob[1234567:2345679])
    body_bytes += len(got)

    st, headers, got = request(conn, "HEAD", key)
    assert (st, got, headers["Content-Length"]) == (200, b"", "1000")
    assert headers["Accept-Ranges"] == "bytes" and headers["ETag"] and headers["Last-Modified"]
    st, headers, _ = request(conn, "HEAD", f"{PREFIX}/a/blob")
    assert headers["Content-Length"] == "3000000"

    for method in ("GET", "HEAD"):
        for path in (f"{PREFIX}/absent", f"{PREFIX}/a", "/small", f"{PREFIX}/../small",
                     f"{PREFIX}/a/blob/x"):
            st, _, _ = request(conn, method, path)
            assert st == 404, (method, path)

    st, _, got = request(conn, "GET", "/_stats")  # on the same connection too
    import json
    stats = json.loads(got)
    assert stats["connections"] == 1, "the connection was not kept alive"
    assert stats["bytes"] == body_bytes
    assert stats["by_key"]["small"]["bytes"] == body_bytes - (2345678 - 1234567 + 1)
    assert stats["by_key"]["a"]["bytes"] == 2345678 - 1234567 + 1
    assert stats["status"] == {"200": 4, "206": 7, "416": 2, "404": 10}
    assert stats["requests"] == len(cases) + 1 + 2 + 10
    conn.close()


def test_keep_alive_serves_two_requests_on_one_socket(objects, servers):
    root, small, _ = objects
    s = servers(root)
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    assert request(conn, "GET", "/small")[2] == small
    sock = conn.sock
    assert sock is not None, "the server closed the connection after one request"
    assert request(conn, "GET", "/small", {"Range": "bytes=0-9"})[2] == small[:10]
    assert conn.sock is sock
    conn.close()
    assert s.stats()["connections"] == 2  # ours and the one of stats()


def test_every_request_waits_the_delay_before_its_first_byte(objects, servers):
    root, small, _ = objects
    s = servers(root, delay_ms=200)
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    conn.connect()
    for method, path, headers, status in [("GET", "/small", None, 200),
                                          ("GET", "/small", {"Range": "bytes=-10"}, 206),
                                          ("HEAD", "/small", None, 200),
                                          ("GET", "/absent", None, 404)]:
        t0 = time.monotonic()
        st, _, _ = request(conn, method, path, headers)
        elapsed = time.monotonic() - t0
        assert st == status
        assert elapsed >= 0.2, (method, path, elapsed)
    conn.close()


def timed_get(port, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.connect()
        t0 = time.monotonic()
        st, _, body = request(conn, "GET", path, headers)
        return st, body, time.monotonic() - t0
    finally:
        conn.close()


def test_the_per_connection_limit_holds(objects, servers):
    root, _, blob = objects
    s = servers(root, conn_mbit=40)  # 5 MB/s: 3 MB in 0.6 s
    st, body, elapsed = timed_get(s.port, "/a/blob")
    assert st == 200 and body == blob
    rate = len(blob) / elapsed
    assert 0.75 * 5e6 <= rate <= 1.25 * 5e6, f"{rate / 1e6:.2f} MB/s for a 5 MB/s connection"


def test_the_link_limit_holds_for_all_connections_together(objects, servers):
    root, _, blob = objects
    # Each connection could do 10 MB/s; the link allows 5 MB/s for all four together, so
    # 4 x 1 MB take 0.8 s (0.1 s if only the connection limit held).
    s = servers(root, conn_mbit=80, link_mbit=40)
    results = [None] * 4

    def one(i):
        results[i] = timed_get(s.port, "/a/blob", {"Range": f"bytes={i * 500_000}-"
                                                           f"{i * 500_000 + 999_999}"})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    elapsed = time.monotonic() - t0
    for i, r in enumerate(results):
        assert r is not None, "a transfer did not finish in 30 s"
        assert r[0] == 206 and r[1] == blob[i * 500_000:i * 500_000 + 1_000_000]
    rate = 4_000_000 / elapsed
    assert 0.75 * 5e6 <= rate <= 1.25 * 5e6, f"{rate / 1e6:.2f} MB/s on a 5 MB/s link"
    # The server counts a slice once its send returns, which may be just after the client
    # has the bytes: wait for the count (bounded).
    deadline = time.monotonic() + 5
    while s.stats()["bytes"] < 4_000_000 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert s.stats()["bytes"] == 4_000_000


def test_sigterm_stops_it_with_a_connection_open(objects, servers):
    root, small, _ = objects
    s = servers(root)
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    assert request(conn, "GET", "/small")[2] == small  # left open (keep-alive)
    t0 = time.monotonic()
    assert s.stop() == 0
    assert time.monotonic() - t0 < 5
    conn.close()


def test_sodeda_get_over_the_delaying_server_gives_the_same_files(replica, servers, tmp_path):
    """The same bytes with and without delay and bandwidth limits (two servers on the same
    port in turn, so the files name the same source URL), and the same data as a get from
    the directory itself (whose file names another source)."""
    lines = (1, 4)  # the prototype's sample; three variables over five hours
    fast = servers(replica, prefix="/gcp-public-data-arco-era5/ar/x.zarr")
    port, url = fast.port, fast.url
    for line in lines:
        Runner(url, tmp_path / "cache-fast", tmp_path)(
            "get", "--deskriptors", TEST_SET, "--line", line, "-o", tmp_path / f"fast{line}.nc")
    assert fast.stats()["by_key"]["2m_temperature"]["bytes"] > 0
    assert fast.stop() == 0
    slow = servers(replica, prefix="/gcp-public-data-arco-era5/ar/x.zarr", port=port,
                   delay_ms=40, conn_mbit=400, link_mbit=1000)
    assert slow.url == url
    direct = Runner(replica, tmp_path / "cache-direct", tmp_path)
    for line in lines:
        Runner(url, tmp_path / "cache-slow", tmp_path)(
            "get", "--deskriptors", TEST_SET, "--line", line, "-o", tmp_path / f"slow{line}.nc")
        assert (tmp_path / f"slow{line}.nc").read_bytes() == \
            (tmp_path / f"fast{line}.nc").read_bytes(), line
        direct("get", "--deskriptors", TEST_SET, "--line", line, "-o", tmp_path / f"dir{line}.nc")
        with xr.open_dataset(tmp_path / f"slow{line}.nc") as a, \
                xr.open_dataset(tmp_path / f"dir{line}.nc") as b:
            assert a.attrs["source_url"] == url
            assert list(a.data_vars) == list(b.data_vars)
            for v in b.variables:
                np.testing.assert_array_equal(a[v].values, b[v].values)
    assert slow.stats()["status"].get("200", 0) + slow.stats()["status"].get("206", 0) > 0


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
