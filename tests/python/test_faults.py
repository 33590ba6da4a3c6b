"""Faults from a real HTTP source on 127.0.0.1 (errors, 5xx, slow answers) and crashes
(kill -9 at random moments): bounded retries, EIO with the cause, a responsive mount, and
never a partial or wrong cache entry."""

import errno
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import xarray as xr

from conftest import clean_env, DATA, FORMAT_DIR, Runner, binary, chunk_gets, mounted_at, read_lines

TEST_SET = DATA / "test-set.jsonl"
LINES = read_lines(TEST_SET)
# scripts/torture sets this: longer loads, more kills.
TORTURE = os.environ.get("SODEDA_TORTURE") == "1"


def entries(cache):
    return {p.stem: p.stat().st_size for p in Path(cache).rglob("*.nc")
            if p.parent.name != "tmp"}


def test_transient_5xx_are_retried(http_source, tmp_path):
    http_source.fail_times = {"/2m_temperature/1078202": [503, 2]}
    run = Runner(http_source.url, tmp_path / "cache", tmp_path)
    p = run("get", "--deskriptors", TEST_SET, "--line", 3, "--read-path", "full",
            "-o", tmp_path / "x.nc")
    assert "built from the source" in p.stderr
    tries = [r for r in chunk_gets(http_source.requests) if "1078202" in r]
    assert len(tries) == 3, tries  # two 503s, then the answer


def read_fails_with_eio(path):
    """Reads `path`, expecting EIO; returns how long the failure took (seconds)."""
    t0 = time.monotonic()
    with pytest.raises(OSError) as info:
        path.read_bytes()
    assert info.value.errno == errno.EIO
    return time.monotonic() - t0


def test_persistent_5xx_give_eio_with_the_cause_and_the_mount_stays_responsive(
        http_source, mount_factory):
    m = mount_factory(TEST_SET, http_source.url, extra=["--source-retries", "2"])
    http_source.fail = {"/2m_temperature/1078218": 503}
    p = m.mountpoint / "exact_lists.nc"
    assert read_fails_with_eio(p) < 10, "retries are bounded"
    cause = os.getxattr(p, "user.sodeda.error").decode()
    assert "503" in cause, cause
    tries = [r for r in chunk_gets(http_source.requests) if "1078218" in r]
    assert len(tries) == 3, tries  # the first try and two retries (block reads: header)
    t0 = time.monotonic()
    assert len(os.listdir(m.mountpoint)) == len(LINES)
    assert time.monotonic() - t0 < 0.5
    http_source.fail = {}
    assert len(p.read_bytes()) == os.stat(p).st_size


def test_a_slow_source_times_out_into_eio_then_recovers(http_source, mount_factory):
    m = mount_factory(TEST_SET, http_source.url,
                      extra=["--source-timeout", "0.5", "--source-retries", "0"])
    http_source.delay = {"/surface_pressure/": 3.0}
    p = m.mountpoint / "steps.nc"
    assert read_fails_with_eio(p) < 3.0
    assert "surface_pressure" in os.getxattr(p, "user.sodeda.error").decode()
    http_source.delay = {}
    time.sleep(3.2)  # let the slow handlers finish
    assert len(p.read_bytes()) == os.stat(p).st_size


def test_kill_9_of_preload_at_random_moments_never_leaves_a_bad_entry(http_source, tmp_path):
    cache = tmp_path / "cache"
    run = Runner(http_source.url, cache, tmp_path)
    sizes = {e["identity"]: e["size"] for e in run.list(TEST_SET)}
    http_source.delay = {"/2m_temperature/": 0.02, "/surface_pressure/": 0.02,
                         "/temperature/": 0.05}
    env = clean_env()
    env.update({"SODEDA_SOURCE": http_source.url, "LOCAL_CACHE": str(cache)})
    rng = random.Random(20261126)
    for _ in range(50 if TORTURE else 20):
        proc = subprocess.Popen([str(binary()), "preload", "--deskriptors", str(TEST_SET),
                                 "--jobs", "2"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        for identity, size in entries(cache).items():
            assert sizes[identity] == size, "an entry is complete or absent"
    http_source.delay = {}
    run("preload", "--deskriptors", TEST_SET)
    assert entries(cache) == sizes
    for p in Path(cache).rglob("*.nc"):
        if p.parent.name == "tmp":
            continue
        assert p.read_bytes()[:4] == b"CDF\x02"


def test_kill_9_of_the_mount_during_reads_then_a_clean_remount(replica, mount_factory,
                                                              tmp_path):
    cache = tmp_path / "cache"
    listing = Runner(replica, tmp_path / "x", tmp_path).list(TEST_SET)
    sizes = {e["identity"]: e["size"] for e in listing}
    rng = random.Random(7)
    for i in range(20 if TORTURE else 5):
        m = mount_factory(TEST_SET, replica, cache=cache, name="mnt")
        reader = subprocess.Popen(["cat", *[str(m.mountpoint / e["name"]) for e in listing]],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, 0.3))
        m.proc.kill()
        m.proc.wait(timeout=10)
        reader.wait(timeout=30)
        for identity, size in entries(cache).items():
            assert sizes[identity] == size
    m = mount_factory(TEST_SET, replica, cache=cache, name="mnt")
    for e in listing:
        assert len((m.mountpoint / e["name"]).read_bytes()) == e["size"]
    assert mounted_at(m.mountpoint)


def test_strict_refuses_a_file_with_bad_lines(replica, tmp_path):
    mnt = tmp_path / "m"
    mnt.mkdir()
    env = clean_env()
    from conftest import mount_binary
    p = subprocess.run([str(mount_binary()), "--foreground", "--strict", "--deskriptors",
                        str(DATA / "bad-deskriptors.jsonl"), "--source", str(replica),
                        "--cache", str(tmp_path / "c"), str(mnt)], capture_output=True,
                       text=True, env=env, timeout=60)
    assert p.returncode == 1
    assert "19 bad lines (--strict)" in p.stderr and "line 3, field `variable`" in p.stderr
    assert mounted_at(mnt) is None


def test_a_bounded_cache_holds_its_limit_under_a_larger_preload(replica, tmp_path):
    small = [l for l in LINES if '"whole_globe"' not in l and '"level_list_mixed"' not in l]
    desk = tmp_path / "small.jsonl"
    desk.write_text("\n".join(small) + "\n")
    run = Runner(replica, tmp_path / "cache", tmp_path)
    sizes = {e["identity"]: e["size"] for e in run.list(desk)}
    limit = 60_000
    assert sum(sizes.values()) > 2 * limit
    p = run("preload", "--deskriptors", desk, "--cache-max-size", str(limit))
    assert f"{len(small)} built" in p.stdout
    kept = entries(tmp_path / "cache")
    assert 0 < sum(kept.values()) <= limit, kept
    assert all(sizes[i] == s for i, s in kept.items())


def test_an_open_file_is_never_evicted(replica, mount_factory, tmp_path):
    cache = tmp_path / "cache"
    m = mount_factory(TEST_SET, replica, cache=cache, extra=["--cache-max-size", "30000"])
    with open(m.mountpoint / "multi_hour.nc", "rb") as f:
        head = f.read(64)
        identity = os.getxattr(m.mountpoint / "multi_hour.nc", "user.sodeda.identity").decode()
        for name in ["steps.nc", "exact_lists.nc", "crossing_zero.nc", "level_slice.nc",
                     "latitude_ascending.nc"]:
            assert len((m.mountpoint / name).read_bytes()) == os.stat(m.mountpoint / name).st_size
        assert identity in entries(cache), "the open file's entry was evicted"
        assert head + f.read() == (cache / FORMAT_DIR / identity[:2] / f"{identity}.nc").read_bytes()
    assert sum(entries(cache).values()) <= 30000 + os.stat(m.mountpoint / "multi_hour.nc").st_size


def test_a_corrupt_cache_entry_is_detected_and_rebuilt(replica, mount_factory, tmp_path):
    """A flipped byte in a cached file (same size) is caught by its checksum and rebuilt,
    by `get` and by the mount: never served."""
    cache = tmp_path / "cache"
    run = Runner(replica, cache, tmp_path)
    run("get", "--deskriptors", TEST_SET, "--line", 5, "-o", tmp_path / "good.nc")
    good = (tmp_path / "good.nc").read_bytes()
    (path,) = [p for p in cache.rglob("*.nc") if p.parent.name != "tmp"]
    assert os.getxattr(path, "user.sodeda.crc32c")

    def corrupt():
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        with open(path, "r+b") as f:  # in place: same inode, same checksum attribute
            f.write(data)

    corrupt()
    p = run("get", "--deskriptors", TEST_SET, "--line", 5, "-o", tmp_path / "again.nc")
    assert "is corrupt" in p.stderr and "built from the source" in p.stderr
    assert (tmp_path / "again.nc").read_bytes() == good
    (path,) = [p for p in cache.rglob("*.nc") if p.parent.name != "tmp"]
    corrupt()
    m = mount_factory(TEST_SET, replica, cache=cache)
    assert (m.mountpoint / "level_slice.nc").read_bytes() == good
    assert m.stats()["flow_runs"] == 1



def test_many_readers_over_many_files_mixed_cold_and_warm(replica, mount_factory, tmp_path):
    """Load: 64 concurrent readers over 1,000 files (scripts/torture: for 60 s; here 8 s),
    starting from an empty cache: no error, no wrong byte, the mount's RSS bounded."""
    import hashlib
    import threading
    lines = []
    for i in range(1000):
        hour = i % 48
        lat, lon = 70 - (i // 48) * 6, (i // 48) * 17
        t = f"2023-01-0{1 + hour // 24}T{hour % 24:02d}:00"
        var = "2m_temperature" if i % 2 else "surface_pressure"
        lines.append(json.dumps({"name": f"f{i:04d}", "time": t,
                                 "latitude": {"start": lat, "end": lat - 2},
                                 "longitude": {"start": lon, "end": lon + 3},
                                 "variable": var}))
    desk = tmp_path / "load.jsonl"
    desk.write_text("\n".join(lines) + "\n")
    ref = Runner(replica, tmp_path / "ref", tmp_path)
    ref("preload", "--deskriptors", desk, "--jobs", "4")
    expected = {}
    for e in ref.list(desk):
        path = tmp_path / "ref" / FORMAT_DIR / e["identity"][:2] / f"{e['identity']}.nc"
        expected[e["name"]] = hashlib.sha256(path.read_bytes()).hexdigest()
    m = mount_factory(desk, replica, cache=tmp_path / "cache")
    names = sorted(expected)
    seconds = 60 if TORTURE else 8
    deadline = time.monotonic() + seconds
    errors, reads, rss = [], [0], [0]

    def reader(seed):
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            name = rng.choice(names)
            try:
                data = (m.mountpoint / name).read_bytes()
                if hashlib.sha256(data).hexdigest() != expected[name]:
                    errors.append(f"wrong bytes in {name}")
                reads[0] += 1
            except OSError as e:
                errors.append(f"{name}: {e}")

    def sampler():
        while time.monotonic() < deadline:
            with open(f"/proc/{m.proc.pid}/status") as f:
                for l in f:
                    if l.startswith("VmRSS:"):
                        rss[0] = max(rss[0], int(l.split()[1]) // 1024)
            time.sleep(0.2)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(64)]
    threads.append(threading.Thread(target=sampler))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 120)
    assert not errors, errors[:5]
    assert reads[0] > 1000, reads[0]
    assert rss[0] < 600, f"RSS {rss[0]} MB"
    assert m.stats()["read_errors"] == 0
    print(f"load: {reads[0]} reads in {seconds} s, peak RSS {rss[0]} MB")


def test_a_server_without_range_support_gives_the_same_files(replica, tmp_path):
    """`python3 -m http.server` answers a range request with the whole object (200, as RFC
    9110 allows): the reads fetch whole objects then, say so once, and give the same bytes
    as the replica read directly (block reads included), but for the source URL they name
    (in `source_url` and `history`)."""
    import sys
    import urllib.request

    from conftest import free_port

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory",
         str(replica), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/.zgroup", timeout=5) as r:
                    r.read()
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise AssertionError("python3 -m http.server did not answer")
                time.sleep(0.1)
        with urllib.request.urlopen(urllib.request.Request(
                url + "/.zgroup", headers={"Range": "bytes=0-1"}), timeout=5) as r:
            assert r.status == 200, "the server was expected to ignore ranges"

        remote = Runner(url, tmp_path / "remote-cache", tmp_path)
        local = Runner(replica, tmp_path / "local-cache", tmp_path)
        for line in (1, 3, 4, 5):
            p = remote("get", "--deskriptors", TEST_SET, "--line", line,
                       "-o", tmp_path / f"remote{line}.nc")
            assert p.stderr.count("ignores range requests") == 1, p.stderr
            local("get", "--deskriptors", TEST_SET, "--line", line,
                  "-o", tmp_path / f"local{line}.nc")
            # The same file but for the source's URL, which it names (and so its length).
            with xr.open_dataset(tmp_path / f"remote{line}.nc") as a, \
                    xr.open_dataset(tmp_path / f"local{line}.nc") as b:
                assert a.attrs.pop("source_url") == url
                assert b.attrs.pop("source_url") == str(replica)
                # `history` names the source too.
                assert url in a.attrs.pop("history")
                assert str(replica) in b.attrs.pop("history")
                assert a.identical(b), line
                for name in a.variables:
                    assert a[name].values.tobytes() == b[name].values.tobytes(), (line, name)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
