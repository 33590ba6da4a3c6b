"""Resource bounds that any reader of a mount relies on: the memory of concurrent builds."""

import json
import os
import subprocess
import threading
import time
from pathlib import Path

from conftest import binary, clean_env


def peak_rss(pid):
    """VmHWM (peak resident set) of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def four_global_files(tmp_path, hours=24):
    """Four distinct whole-globe files of `hours` hours of 2m_temperature (about 100 MB each
    at 24 hours): most chunks are absent in the replica and read as missing values, which
    costs memory like any other chunk."""
    lines = []
    for k in range(4):
        start = 24 * 5 * k
        lines.append(json.dumps({
            "name": f"globe{k}",
            "time": {"start": f"2023-02-{1 + start // 24:02d}T00:00",
                     "end": f"2023-02-{1 + (start + hours - 1) // 24:02d}T{(hours - 1) % 24:02d}:00"},
            "variable": "2m_temperature"}))
    path = tmp_path / "globes.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def read_concurrently(paths):
    errors = []

    def read(p):
        try:
            with open(p, "rb") as f:
                while f.read(1 << 22):
                    pass
        except OSError as e:
            errors.append((p, e))

    threads = [threading.Thread(target=read, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads), "reads did not finish"
    assert not errors, errors


def test_concurrent_builds_stay_within_the_build_memory(replica, mount_factory, tmp_path):
    """Four readers each read a ~100 MB file, served by its parts (slab builds, read ahead
    up to 64 slabs): with --build-memory 120M the builds take turns, and the mount's peak RSS
    stays bounded, not four files' worth (measured for whole builds before files were served
    by parts: 247 MB; 630 MB with --build-memory 8G, which let all four run at once)."""
    deskriptors = four_global_files(tmp_path)
    m = mount_factory(deskriptors, replica,
                      extra=["--build-memory", "120M", "--memory-limit", "16M"])
    files = sorted(m.mountpoint.iterdir())
    assert len(files) == 4 and all(f.stat().st_size > 99e6 for f in files)
    read_concurrently(files)
    stats = m.stats()
    assert stats["flow_runs"] == 0 and stats["flow_failures"] == 0, stats
    assert stats["slab_builds"] >= 4 * 24 / 8, stats
    assert stats["build_memory"] == 120 << 20 and stats["build_memory_in_use"] == 0
    peak = peak_rss(m.proc.pid)
    # Measured in the debug build: 380-425 MB, and 490 MB with --build-memory 8G (whole
    # builds of these files, before they were served by parts: 247 MB). Not yet explained:
    # a run of slabs holds ~40 MB; the bound still does not grow with the readers.
    assert peak < 460e6, f"peak RSS {peak / 1e6:.0f} MB"


# A point with its time left out: the whole time axis (1900-2050, 1,323,648 hours), one
# source chunk per hour.
WHOLE_AXIS_POINT = {"variable": "2m_temperature", "latitude": 47.5, "longitude": 8.5}
WHOLE_AXIS_CHUNKS = 1_323_648


def test_a_long_thin_selection_is_refused_by_its_chunk_count_until_raised(
        run, replica, mount_factory, tmp_path):
    """A 10 MB file that reads 1.3 million chunks is refused at planning by validate, list,
    the mount's catalog and get, naming the line, the count, the limit and --max-chunks;
    raising the option lets a line through."""
    three_days = dict(WHOLE_AXIS_POINT, name="three_days",
                      time={"start": "2023-01-01T00", "end": "2023-01-03T23"})
    desk = tmp_path / "thin.jsonl"
    desk.write_text(json.dumps(three_days) + "\n" + json.dumps(WHOLE_AXIS_POINT) + "\n")
    refusal = (f"line 2: the selection reads {WHOLE_AXIS_CHUNKS} source chunks "
               f"(2m_temperature {WHOLE_AXIS_CHUNKS}), more than the limit of 100000 "
               "(--max-chunks); narrow its time range")
    p = run("validate", "--deskriptors", desk, check=False)
    assert p.returncode == 1 and refusal in p.stdout, p.stdout + p.stderr
    assert "1 bad lines, 1 valid deskriptors" in p.stdout
    p = run("list", "--json", "--deskriptors", desk)
    assert [r["name"] for r in json.loads(p.stdout)] == ["three_days.nc"]
    assert "warning: skipping line 2" in p.stderr and "--max-chunks" in p.stderr, p.stderr
    out = tmp_path / "x.nc"
    p = run("get", "--deskriptors", desk, "--line", 2, "-o", out, check=False, timeout=60)
    assert p.returncode == 1 and refusal in p.stderr, p.stderr
    assert not out.exists()
    # Raised, the whole axis passes validation (without reading a chunk).
    p = run("validate", "--deskriptors", desk, "--max-chunks", WHOLE_AXIS_CHUNKS)
    assert "2 deskriptors, all valid" in p.stdout, p.stdout
    # 72 hours are 72 chunks: refused under 72, built at 72.
    p = run("get", "--deskriptors", desk, "--line", 1, "--max-chunks", 71, "-o", out,
            check=False)
    assert p.returncode == 1 and "reads 72 source chunks" in p.stderr, p.stderr
    assert "limit of 71 (--max-chunks)" in p.stderr and not out.exists()
    run("get", "--deskriptors", desk, "--line", 1, "--max-chunks", 72, "-o", out)
    assert out.stat().st_size > 72 * 4
    p = run("validate", "--deskriptors", desk, "--max-chunks", 0, check=False)
    assert p.returncode == 2 and "--max-chunks" in p.stderr, p.stderr
    # The mount's catalog skips the line too (and names it in its log).
    m = mount_factory(desk, replica)
    assert sorted(f.name for f in m.mountpoint.iterdir()) == ["three_days.nc"]
    m.stop()
    assert "--max-chunks" in m.log.read_text()


def get_peak_rss(replica, tmp_path, deskriptor, timeout):
    """Peak RSS in bytes and seconds of `sodeda-era5 get` of one deskriptor, in a fresh
    cache; fails when the get fails or outlives `timeout` seconds."""
    cache = tmp_path / f"cache-{time.monotonic_ns()}"
    env = dict(clean_env(), SODEDA_SOURCE=str(replica), LOCAL_CACHE=str(cache))
    args = [str(binary()), "get", "--deskriptor", json.dumps(deskriptor),
            "--build-memory", "100M", "--memory-limit", "16M", "-o", str(tmp_path / "t.nc")]
    start = time.monotonic()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - start
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.returncode == 0, f"get exited {proc.returncode} after {seconds:.0f} s: {stderr}"
    return usage.ru_maxrss * 1024, seconds


def test_a_long_thin_get_holds_no_memory_per_chunk(replica, tmp_path):
    """A point over 11 years (96,432 chunk reads, under the default --max-chunks; all but a
    few hours absent in the replica) peaks within a few MB of a point over one hour: chunk
    tasks are made as reads finish, not listed up front, and an absent chunk gives only its
    selected point, not a whole 4 MB chunk of missing values. Measured (debug build): +12 MB
    and 6.5 s; before, +80 MB (about 860 bytes per chunk, 1.16 GB for the whole axis) and
    about four minutes, one 4 MB fill per absent chunk."""
    one_hour, _ = get_peak_rss(replica, tmp_path, dict(WHOLE_AXIS_POINT, time="2000-01-01T00"),
                               timeout=60)
    eleven_years, seconds = get_peak_rss(
        replica, tmp_path,
        dict(WHOLE_AXIS_POINT, time={"start": "2000-01-01T00", "end": "2010-12-31T23"}),
        timeout=120)
    growth = eleven_years - one_hour
    assert growth < 40e6, f"{growth / 1e6:.0f} MB more than one hour ({seconds:.0f} s)"
