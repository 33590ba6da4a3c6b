"""Benchmarks of sodeda-era5 side by side with the Python/xarray path (the prototype's).

Run by scripts/bench, which builds the release binaries and installs the Python baseline.
Everything runs on one generated replica (profile `bench`: 30 days of 2m_temperature) on this
machine, in one run. Prints one table: our figure, the baseline's, the ratio, the target.
Results also go to tmp/bench/results.json.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REL = ROOT / "target" / "release"
ERA5 = REL / "sodeda-era5"
MOUNT = REL / "sodeda-mount"
WORK = ROOT / "tmp" / "bench"
REPLICA = ROOT / "tmp" / "replica-bench"
T0 = datetime(2023, 1, 1)
HOURS = 720

ZURICH = {"latitude": {"start": 47.5, "end": 46.5}, "longitude": {"start": 8, "end": 9}}


def line(hour, region=ZURICH, name=None, var="2m_temperature"):
    t = (T0 + timedelta(hours=hour)).strftime("%Y-%m-%dT%H:%M")
    d = {"time": {"start": t, "end": t}, **region, "variable": [var]}
    if name:
        d["name"] = name
    return json.dumps(d)


def env():
    e = {k: v for k, v in os.environ.items() if not k.startswith(("SODEDA_", "S3_"))}
    e.pop("LOCAL_CACHE", None)
    e["SODEDA_SOURCE"] = str(REPLICA)
    return e


def run(*args, **kw):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True,
                          env=kw.pop("env", env()), **kw)


def mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(l.split(" ")[4] == str(path) for l in f)


class Mount:
    def __init__(self, deskriptors, cache, point):
        self.point = Path(point)
        self.point.mkdir(parents=True, exist_ok=True)
        self.args = [str(MOUNT), "--foreground", "--deskriptors", str(deskriptors), "--cache",
                     str(cache), "--source", str(REPLICA), str(self.point)]

    def __enter__(self):
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=env())
        while not (mounted(self.point) and self._lists()):
            if self.proc.poll() is not None:
                raise RuntimeError("mount failed")
            if time.perf_counter() - t0 > 120:
                raise RuntimeError("mount not live after 120 s")
            time.sleep(0.005)
        self.mount_seconds = time.perf_counter() - t0
        return self

    def _lists(self):
        try:
            with os.scandir(self.point) as it:
                next(it, None)
            return True
        except OSError:
            return False

    def rss_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for l in f:
                if l.startswith("VmRSS:"):
                    return int(l.split()[1]) / 1024
        return float("nan")

    def __exit__(self, *exc):
        subprocess.run(["umount", str(self.point)], capture_output=True)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if mounted(self.point):
            subprocess.run(["umount", "-l", str(self.point)], capture_output=True)


def drop_caches():
    """Drops the kernel page cache when allowed (root, not in every container)."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def read_file(path, bufsize=1 << 20):
    n = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(bufsize)
            if not b:
                return n
            n += len(b)


def python_baseline(deskriptor_lines, out_dir, limit=None):
    """The prototype's path: the store opened once, then per sample `.sel` and `to_netcdf`.
    Returns seconds per sample."""
    import xarray as xr
    ds = xr.open_zarr(REPLICA, consolidated=True)
    times = []
    for i, l in enumerate(deskriptor_lines[:limit]):
        d = json.loads(l)
        t0 = time.perf_counter()
        sel = ds[d["variable"]].sel(
            time=slice(d["time"]["start"], d["time"]["end"]),
            latitude=slice(d["latitude"]["start"], d["latitude"]["end"]),
            longitude=slice(d["longitude"]["start"], d["longitude"]["end"]))
        sel.to_netcdf(out_dir / f"py{i}.nc")
        times.append(time.perf_counter() - t0)
    return times


def decode_limit(hours):
    """Chunks per second this machine decodes (read + Blosc decode, 2 threads), the files of
    `hours` of 2m_temperature."""
    import numcodecs
    codec = numcodecs.Blosc()
    paths = [REPLICA / "2m_temperature" / f"{1_078_200 + h}.0.0" for h in hours]

    def one(p):
        with open(p, "rb") as f:
            return len(codec.decode(f.read()))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        list(pool.map(one, paths))
    return len(paths) / (time.perf_counter() - t0)


def main():
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    rows = []

    def row(name, ours, base, unit, target, better="higher"):
        ratio = (ours / base if better == "higher" else base / ours) if base else float("nan")
        rows.append({"metric": name, "sodeda": ours, "baseline": base, "unit": unit,
                     "ratio": ratio, "target": target})
        print(f"  {name}: {ours:.4g} vs {base:.4g} {unit} ({ratio:.2f}x)", flush=True)

    # 1. Cold sample through the mount vs the Python path per sample.
    print("1. cold samples", flush=True)
    n = 40
    cold = WORK / "cold.jsonl"
    cold.write_text("\n".join(line(h * 17 % HOURS, name=f"s{h:03d}") for h in range(n)) + "\n")
    with Mount(cold, WORK / "cache-cold", WORK / "mnt") as m:
        ours = []
        for h in range(n):
            t0 = time.perf_counter()
            read_file(m.point / f"s{h:03d}.nc")
            ours.append(time.perf_counter() - t0)
    py_dir = WORK / "py"
    py_dir.mkdir()
    base = python_baseline(cold.read_text().splitlines(), py_dir)
    row("cold sample, median (s)", statistics.median(ours), statistics.median(base), "s",
        ">= 10x faster", better="lower")

    # 2. Preload throughput: 720 hourly Zurich deskriptors from an empty cache.
    print("2. preload", flush=True)
    zurich = WORK / "zurich720.jsonl"
    zurich.write_text("\n".join(line(h) for h in range(HOURS)) + "\n")
    rates = []
    for rep in range(3):  # median of three runs, each from an empty cache
        t0 = time.perf_counter()
        out = run(ERA5, "preload", "--deskriptors", zurich, "--cache",
                  WORK / f"cache-preload{rep}", "--jobs", "4").stdout
        rates.append(HOURS / (time.perf_counter() - t0))
        assert f"{HOURS} built" in out, out
    ours_rate = statistics.median(rates)
    base = python_baseline(zurich.read_text().splitlines(), py_dir, limit=240)
    row("preload throughput (files/s)", ours_rate, 1 / statistics.mean(base), "files/s",
        ">= 20x Python")
    limit = decode_limit(range(HOURS))
    row("preload vs decode limit (files/s)", ours_rate, limit, "files/s", ">= 0.5 of limit")

    # 3. Warm reads.
    print("3. warm reads", flush=True)
    globe = WORK / "globe.jsonl"
    globe.write_text(json.dumps({"name": "globe", "time": {"start": "2023-01-01T00:00",
                                 "end": "2023-01-01T23:00"}, "variable": "2m_temperature"})
                     + "\n")
    small = WORK / "small1000.jsonl"
    geneva = {"latitude": {"start": 46.5, "end": 46}, "longitude": {"start": 6, "end": 6.5}}
    small.write_text("\n".join([line(h) for h in range(HOURS)] +
                               [line(h, geneva) for h in range(1000 - HOURS)]) + "\n")
    cache = WORK / "cache-warm"
    run(ERA5, "preload", "--deskriptors", globe, "--cache", cache)
    run(ERA5, "preload", "--deskriptors", small, "--cache", cache, "--jobs", "4")
    listing = json.loads(run(ERA5, "list", "--json", "--deskriptors", small, "--cache",
                             cache).stdout)
    gl = json.loads(run(ERA5, "list", "--json", "--deskriptors", globe, "--cache",
                        cache).stdout)[0]
    direct_globe = next(cache.rglob(f"{gl['identity']}.nc"))
    through_runs, direct_runs = [], []
    with Mount(globe, cache, WORK / "mnt") as m:
        for _ in range(3):  # alternate, each from a dropped page cache; medians
            dropped = drop_caches()
            t0 = time.perf_counter()
            size = read_file(m.point / "globe.nc")
            through_runs.append(size / (time.perf_counter() - t0) / 1e6)
            drop_caches()
            t0 = time.perf_counter()
            read_file(direct_globe)
            direct_runs.append(size / (time.perf_counter() - t0) / 1e6)
    through, direct = statistics.median(through_runs), statistics.median(direct_runs)
    row(f"sequential read {size / 1e6:.0f} MB ({'cold' if dropped else 'warm'} page cache, MB/s)",
        through, direct, "MB/s", ">= 0.8x direct")
    direct_paths = {p.stem: p for p in cache.rglob("*.nc") if p.parent.name != "tmp"}
    with Mount(small, cache, WORK / "mnt") as m:
        names = [e["name"] for e in listing]
        t0 = time.perf_counter()
        for name in names:
            read_file(m.point / name)
        through = (time.perf_counter() - t0) / len(names)
    t0 = time.perf_counter()
    for e in listing:
        read_file(direct_paths[e["identity"]])
    direct = (time.perf_counter() - t0) / len(listing)
    row("1,000 small cached files, open+read+close (ms/file)", through * 1e3, direct * 1e3,
        "ms", "<= 2x direct", better="lower")

    # 4. Metadata at scale: 100,000 deskriptors.
    print("4. 100,000 deskriptors", flush=True)
    big = WORK / "big100k.jsonl"
    with open(big, "w") as f:
        for i in range(100_000):
            h, r = i % HOURS, i // HOURS
            lat = 70 - (r % 28) * 5
            lon = (r // 28) * 60 + 2
            f.write(line(h, {"latitude": {"start": lat, "end": lat - 1},
                             "longitude": {"start": lon, "end": lon + 1}}) + "\n")
    with Mount(big, WORK / "cache-big", WORK / "mnt") as m:
        mount_s = m.mount_seconds
        t0 = time.perf_counter()
        p = subprocess.run(["ls", "-l", str(m.point)], capture_output=True, text=True)
        ls_s = time.perf_counter() - t0
        assert p.stdout.count("\n") == 100_001, p.stdout[:200]
        rss = m.rss_mb()
    rows.append({"metric": "mount of 100,000 deskriptors (s)", "sodeda": mount_s,
                 "baseline": None, "unit": "s", "ratio": None, "target": "<= 3 s"})
    rows.append({"metric": "ls -l of 100,000 files (s)", "sodeda": ls_s, "baseline": None,
                 "unit": "s", "ratio": None, "target": "<= 2 s"})
    rows.append({"metric": "RSS of the mount after ls -l (MB)", "sodeda": rss,
                 "baseline": None, "unit": "MB", "ratio": None, "target": "<= 300 MB"})
    print(f"  mount {mount_s:.2f} s, ls -l {ls_s:.2f} s, RSS {rss:.0f} MB", flush=True)

    # 5. Bytes fetched from the source per prototype-sized sample.
    print("5. bytes per sample", flush=True)
    proto = line(11, {"latitude": {"start": 48, "end": 47}, "longitude": {"start": 8, "end": 9}})
    err = run(ERA5, "get", "--deskriptor", proto, "-o", WORK / "proto.nc", "--cache",
              WORK / "cache-proto", "--stats").stderr
    fetched = int(err.split("requests, ")[1].split(" bytes for data")[0])
    chunk = (REPLICA / "2m_temperature" / f"{1_078_200 + 11}.0.0").stat().st_size
    rows.append({"metric": "bytes fetched per prototype sample (fraction of the chunk)",
                 "sodeda": fetched / chunk, "baseline": 1.0, "unit": "", "ratio": chunk / fetched,
                 "target": "<= 0.125"})
    print(f"  {fetched} of {chunk} bytes", flush=True)

    (WORK / "results.json").write_text(json.dumps(rows, indent=2))
    print()
    print(f"{'metric':<66} {'sodeda-era5':>12} {'baseline':>12} {'ratio':>8}  target")
    for r in rows:
        b = "-" if r["baseline"] is None else f"{r['baseline']:.4g}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.1f}x"
        print(f"{r['metric']:<66} {r['sodeda']:>12.4g} {b:>12} {ratio:>8}  {r['target']}")


if __name__ == "__main__":
    sys.exit(main())
