"""preload: warm every file, each chunk once, resumable after kill -9, sharded."""

import json
import re
import signal
import subprocess
import time
from pathlib import Path

from conftest import clean_env, chunk_gets, DATA, Runner, binary, read_lines

TEST_SET = DATA / "test-set.jsonl"
LINES = read_lines(TEST_SET)


def entries(cache):
    """Cache entries: identity -> size (temporary files excluded)."""
    return {p.stem: p.stat().st_size for p in Path(cache).rglob("*.nc")
            if p.parent.name != "tmp"}


def summary(stdout):
    m = re.search(r"(\d+) files in .*: (\d+) built, (\d+) copied from S3, (\d+) already cached, "
                  r"(\d+) failed", stdout)
    assert m, stdout
    return dict(zip(["files", "built", "copied", "cached", "failed"], map(int, m.groups())))


def test_preload_then_mount_serves_every_file_without_the_source(
        http_source, mount_factory, tmp_path):
    cache = tmp_path / "cache"
    run = Runner(http_source.url, cache, tmp_path)
    p = run("preload", "--deskriptors", TEST_SET, "--jobs", 3)
    assert summary(p.stdout) == {"files": len(LINES), "built": len(LINES), "copied": 0,
                                 "cached": 0, "failed": 0}
    listing = run.list(TEST_SET)
    assert entries(cache) == {e["identity"]: e["size"] for e in listing}
    n = len(http_source.requests)
    m = mount_factory(TEST_SET, http_source.url, cache=cache)
    for e in listing:
        assert len((m.mountpoint / e["name"]).read_bytes()) == e["size"]
    assert chunk_gets(http_source.requests[n:]) == []
    assert m.stats()["flow_runs"] == 0


def test_deskriptors_sharing_hours_read_each_chunk_once(http_source, tmp_path):
    lines = []
    for i in range(24):
        lat = 60 - 5 * (i // 6)
        lon = 30 * (i % 6)
        lines.append(json.dumps({
            "name": f"region_{i:02d}",
            "time": {"start": "2023-01-01T10:00", "end": "2023-01-01T12:00"},
            "latitude": {"start": lat, "end": lat - 4}, "longitude": {"start": lon, "end": lon + 8},
            "variable": ["2m_temperature", "surface_pressure"]}))
    desk = tmp_path / "shared.jsonl"
    desk.write_text("\n".join(lines) + "\n")
    run = Runner(http_source.url, tmp_path / "cache", tmp_path)
    p = run("preload", "--deskriptors", desk, "--jobs", 6)
    assert summary(p.stdout)["built"] == 24
    chunks = chunk_gets(http_source.requests)
    assert len(chunks) == 6, chunks  # 3 hours x 2 variables
    assert len(set(chunks)) == 6
    assert "chunks decoded 6" in p.stdout


def test_a_killed_preload_leaves_no_partial_entry_and_a_rerun_finishes(http_source, tmp_path):
    cache = tmp_path / "cache"
    run = Runner(http_source.url, cache, tmp_path)
    sizes = {e["identity"]: e["size"] for e in run.list(TEST_SET)}
    http_source.delay = {"/2m_temperature/": 0.1, "/surface_pressure/": 0.1}
    env = clean_env()
    env.update({"SODEDA_SOURCE": http_source.url, "LOCAL_CACHE": str(cache)})
    proc = subprocess.Popen([str(binary()), "preload", "--deskriptors", str(TEST_SET),
                             "--jobs", "1"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while len(entries(cache)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.15)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    before = entries(cache)
    assert 3 <= len(before) < len(sizes), "killed midway"
    for identity, size in before.items():
        assert sizes[identity] == size, "an entry is complete or absent"
    http_source.delay = {}
    p = run("preload", "--deskriptors", TEST_SET)
    s = summary(p.stdout)
    assert s["cached"] == len(before) and s["built"] == len(sizes) - len(before)
    assert entries(cache) == sizes


def test_shards_cover_the_set_exactly_once(replica, tmp_path):
    identities = {e["identity"] for e in Runner(replica, tmp_path / "x", tmp_path).list(TEST_SET)}
    parts = []
    for k in range(3):
        run = Runner(replica, tmp_path / f"cache{k}", tmp_path)
        p = run("preload", "--deskriptors", TEST_SET, "--shard", f"{k}/3")
        assert f"(shard {k}/3)" in p.stdout
        parts.append(set(entries(tmp_path / f"cache{k}")))
    assert set().union(*parts) == identities
    assert sum(len(p) for p in parts) == len(identities)
    assert all(parts), "every shard got some files"
    p = Runner(replica, tmp_path / "c", tmp_path)("preload", "--deskriptors", TEST_SET,
                                                   "--shard", "3/3", check=False)
    assert p.returncode == 2 and "0 <= K < N" in p.stderr


def test_failures_are_reported_with_their_line_and_the_rest_is_built(http_source, tmp_path):
    desk = tmp_path / "mixed.jsonl"
    desk.write_text("\n".join([
        LINES[2],  # multi_hour: fine
        '{"name": "typo", "variable": "2m_temprature", "time": "2023-01-01T11:00"}',
        '{"name": "broken_source", "variable": "surface_pressure", "time": "2023-01-01T07:00"}',
        LINES[12],  # exact_lists: fine
    ]) + "\n")
    http_source.fail = {"/surface_pressure/1078207": 403}
    run = Runner(http_source.url, tmp_path / "cache", tmp_path)
    p = run("preload", "--deskriptors", desk, check=False)
    assert p.returncode == 1
    s = summary(p.stdout)
    assert s["built"] == 2 and s["failed"] == 2, p.stdout
    assert re.search(r"failed: line 2, field `variable`.*did you mean", p.stdout), p.stdout
    assert re.search(r"failed: line 3 \(broken_source.nc\): .*surface_pressure.*403", p.stdout), \
        p.stdout


def test_preload_moves_only_the_blocks_a_lone_file_needs_and_whole_chunks_many_share(
        replica, http_source, tmp_path):
    """A chunk that one small file needs is read block by block (about an eighth of it); a
    chunk that many files need together is read once, whole, and shared."""
    lone = [json.dumps({"name": f"zurich{h}", "time": f"2023-01-01T{h:02d}:00",
                        "latitude": {"start": 47.5, "end": 46.5},
                        "longitude": {"start": 8, "end": 9}, "variable": "2m_temperature"})
            for h in range(4)]
    shared = [json.dumps({"name": f"band{k}", "time": "2023-01-01T10:00",
                          "latitude": {"start": 80 - 20 * k, "end": 61 - 20 * k},
                          "variable": "2m_temperature"}) for k in range(8)]
    deskriptors = tmp_path / "d.jsonl"
    deskriptors.write_text("\n".join(lone + shared) + "\n")
    run = Runner(http_source.url, tmp_path / "cache", tmp_path)
    out = run("preload", "--deskriptors", deskriptors, "--jobs", 4).stdout
    assert summary(out)["built"] == 12, out
    served = {}
    for method, path in http_source.requests:
        if method == "GET" and path.startswith("/2m_temperature/") and "/." not in path:
            served.setdefault(path, 0)
            served[path] += 1
    for h in range(4):
        key = f"/2m_temperature/{1078200 + h}.0.0"
        assert served.get(key) == 2, (key, served)  # the block table, then the blocks
    assert served.get("/2m_temperature/1078210.0.0") == 1, served  # once, whole
    fetched = int(out.split("source: ")[1].split(" requests, ")[1].split(" bytes")[0])
    chunk = (replica / "2m_temperature" / "1078211.0.0").stat().st_size
    # Four eighths-or-less of a chunk plus one whole chunk, plus the metadata.
    assert fetched < chunk * (1 + 4 / 8) + 200_000, (fetched, chunk)
