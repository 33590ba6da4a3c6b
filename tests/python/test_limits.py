"""Resource bounds that any reader of a mount relies on: the memory of concurrent builds."""

import json
import threading
from pathlib import Path


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
    """Four readers each start the build of a ~100 MB file: with --build-memory 120M the
    builds take turns, and the mount's peak RSS stays near one build, not four (measured:
    247 MB; 630 MB with --build-memory 8G, which lets all four run at once)."""
    deskriptors = four_global_files(tmp_path)
    m = mount_factory(deskriptors, replica,
                      extra=["--build-memory", "120M", "--memory-limit", "16M"])
    files = sorted(m.mountpoint.iterdir())
    assert len(files) == 4 and all(f.stat().st_size > 99e6 for f in files)
    read_concurrently(files)
    stats = m.stats()
    assert stats["flow_runs"] == 4 and stats["flow_failures"] == 0
    assert stats["build_memory"] == 120 << 20 and stats["build_memory_in_use"] == 0
    peak = peak_rss(m.proc.pid)
    # One build holds ~100 MB of arrays and up to 133 MB of chunk reads in flight.
    assert peak < 400e6, f"peak RSS {peak / 1e6:.0f} MB"
