"""Benchmarks of sodeda-era5 side by side with the Python/xarray path (the prototype's).

Run by scripts/bench, which builds the release binaries and installs the Python baseline.
Everything runs on one generated replica (profile `bench`: 30 days of 2m_temperature) on this
machine, in one run. Prints one table: our figure, the baseline's, the ratio, the target.
Results also go to tmp/bench/results.json.

Profiles (`--remote`, or SODEDA_BENCH_PROFILE=local|remote; local is the default):
- local: the replica read from local disk (the table of docs/PERFORMANCE.md, "A recorded run");
- remote: the replica behind scripts/delay_server.py on 127.0.0.1, a simulated distant store,
  at two settings (delay per request / bandwidth per connection / link), 72 hourly Zürich
  files (docs/PERFORMANCE.md, "Over a distant store"); `--quick` for 12 files. Results go to
  tmp/bench-remote/results.json.
"""

import argparse
import json
import multiprocessing
import os
import random
import shutil
import statistics
import struct
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
    def __init__(self, deskriptors, cache, point, source=REPLICA, log=None):
        self.point = Path(point)
        self.point.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.args = [str(MOUNT), "--foreground", "--deskriptors", str(deskriptors), "--cache",
                     str(cache), "--source", str(source), str(self.point)]

    def __enter__(self):
        t0 = time.perf_counter()
        self.logfile = open(self.log, "ab") if self.log else None
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=self.logfile or subprocess.DEVNULL, env=env())
        try:
            while not (mounted(self.point) and self._lists()):
                if self.proc.poll() is not None:
                    raise RuntimeError("mount failed")
                if time.perf_counter() - t0 > 120:
                    raise RuntimeError("mount not live after 120 s")
                time.sleep(0.005)
        except BaseException:
            self.__exit__()
            raise
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
        if self.logfile:
            self.logfile.close()


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


def python_baseline(deskriptor_lines, out_dir, limit=None, store=REPLICA, opened=None):
    """The prototype's path: the store opened once, then per sample `.sel` and `to_netcdf`.
    Returns seconds per sample. `opened(seconds)` is told how long the open took."""
    import xarray as xr
    t0 = time.perf_counter()
    ds = xr.open_zarr(store, consolidated=True)
    if opened:
        opened(time.perf_counter() - t0)
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


def local_profile():
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
    big_files_profile()
    series_profile()
    levels_profile()


# --- The remote profile: the bench replica behind a delaying HTTP server --------------------

WORK_REMOTE = ROOT / "tmp" / "bench-remote"
# (label, delay per request in ms, Mbit/s per connection, Mbit/s of the whole link)
SETTINGS = [("30 ms / 400 Mbit/s / 1 Gbit/s", 30, 400, 1000),
            ("100 ms / 100 Mbit/s / 1 Gbit/s", 100, 100, 1000)]
# The URL path of the real store, so that the source URL looks like the real one.
GCS_PREFIX = "/gcp-public-data-arco-era5/ar/full_37-1h-0p25deg-chunk-1.zarr-v3"
XARRAY_PROCESSES = 8
PRELOAD_JOBS = 32


def needed_bytes(hour, region=ZURICH, var="2m_temperature"):
    """Bytes a reader that knows nothing in advance must fetch for one file of `hour` over
    `region`: the chunk's Blosc header with its block table, and the compressed blocks that
    hold the region's rows (read from the replica's chunk file)."""
    path = REPLICA / var / f"{1_078_200 + hour}.0.0"
    with open(path, "rb") as f:
        head = f.read(16)
        _, _, flags, _, nbytes, blocksize, cbytes = struct.unpack("<BBBBIII", head)
        if flags & 0x02:  # stored without compression (memcpyed): no block table
            raise RuntimeError(f"{path}: memcpyed Blosc chunk")
        nblocks = -(-nbytes // blocksize)
        starts = list(struct.unpack(f"<{nblocks}i", f.read(4 * nblocks))) + [cbytes]
    row = 1440 * 4  # one latitude row of float32
    lat = region["latitude"]
    first = round((90 - lat["start"]) / 0.25)
    last = round((90 - lat["end"]) / 0.25)
    blocks = range(first * row // blocksize, ((last + 1) * row - 1) // blocksize + 1)
    return 16 + 4 * nblocks + sum(starts[b + 1] - starts[b] for b in blocks)


def _xarray_worker(url, lines, out_dir, barrier, results):
    """One of the processes of the 'xarray on N processes' row: opens the store, waits for
    the others, then runs the prototype's loop over its share of the deskriptors."""
    import xarray as xr
    ds = xr.open_zarr(url, consolidated=True)
    barrier.wait(timeout=300)
    cpu = time.process_time()
    for i, l in lines:
        d = json.loads(l)
        sel = ds[d["variable"]].sel(
            time=slice(d["time"]["start"], d["time"]["end"]),
            latitude=slice(d["latitude"]["start"], d["latitude"]["end"]),
            longitude=slice(d["longitude"]["start"], d["longitude"]["end"]))
        sel.to_netcdf(Path(out_dir) / f"x{i}.nc")
    results.put((len(lines), time.process_time() - cpu))


def xarray_processes(url, lines, out_dir, processes=XARRAY_PROCESSES, stats=None):
    """The prototype's loop on `processes` processes (each opens the store once, then takes
    every processes-th deskriptor), timed from when all have opened the store until the last
    file is written. Returns (seconds, server counters before, after, CPU seconds of the
    processes' loops). Every process is stopped by its PID, also on failure."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=_xarray_worker, daemon=True,
                         args=(url, list(enumerate(lines))[k::processes], str(out_dir),
                               barrier, results)) for k in range(processes)]
    try:
        for p in procs:
            p.start()
        barrier.wait(timeout=300)
        before = stats() if stats else None
        t0 = time.perf_counter()
        done = [results.get(timeout=600) for _ in procs]
        seconds = time.perf_counter() - t0
        after = stats() if stats else None
        assert sum(d[0] for d in done) == len(lines), (done, len(lines))
        return seconds, before, after, sum(d[1] for d in done)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join(timeout=10)


def cpu_seconds():
    """CPU time of this process and of its waited-for children (user + system)."""
    import resource
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def remote_profile(quick=False, files=None):
    sys.path.insert(0, str(ROOT / "scripts"))
    from delay_server import Running

    n = files or (12 if quick else 72)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--short", "--", "src"],
                           capture_output=True, text=True).stdout.split("\n")
    fresh_dir(WORK_REMOTE)
    hours = list(range(n))
    names = [f"z{h:03d}" for h in hours]
    desk = WORK_REMOTE / "zurich.jsonl"
    desk.write_text("\n".join(line(h, name=names[h]) for h in hours) + "\n")
    lines = desk.read_text().splitlines()
    needed = [needed_bytes(h) for h in hours]
    chunk = statistics.mean((REPLICA / "2m_temperature" / f"{1_078_200 + h}.0.0").stat().st_size
                            for h in hours)
    print(f"remote profile: {n} consecutive hourly Zürich files (5x5 points, 1 h, "
          f"2m_temperature), the bench replica behind scripts/delay_server.py on 127.0.0.1",
          flush=True)
    print(f"  needed per file: {statistics.mean(needed) / 1e6:.3f} MB (Blosc header + the one "
          f"block holding the rows) of a {chunk / 1e6:.2f} MB chunk", flush=True)

    results = []

    def record(setting, key, label, seconds, before=None, after=None, extra=None, cpu=None):
        r = {"setting": setting, "row": key, "label": label, "files": n,
             "ms_per_file": seconds / n * 1e3}
        if cpu is not None:
            r["client_cpu_ms_per_file"] = cpu / n * 1e3
        if before is not None:
            r["bytes_per_file"] = (after["bytes"] - before["bytes"]) / n
            r["requests_per_file"] = (after["requests"] - before["requests"]) / n
            r["connections"] = after["connections"] - before["connections"]
            r["server_cpu_s"] = after["cpu_s"] - before["cpu_s"]
            var = lambda c: c["by_key"].get("2m_temperature", {}).get("bytes", 0)  # noqa: E731
            r["data_bytes_per_file"] = (var(after) - var(before)) / n
        r.update(extra or {})
        results.append(r)
        b = f", {r['bytes_per_file'] / 1e6:.3f} MB/file" if "bytes_per_file" in r else ""
        if "requests_per_file" in r:
            b += f", {r['requests_per_file']:.1f} requests/file"
        for k in ("client_cpu_ms_per_file", "mount_seconds", "start_seconds", "open_seconds",
                  "server_cpu_s"):
            if k in r:
                b += f", {k} {r[k]:.2f}"
        print(f"  ({key}) {label}: {r['ms_per_file']:.1f} ms/file{b}", flush=True)

    for si, (setting, delay_ms, conn_mbit, link_mbit) in enumerate(SETTINGS):
        print(f"setting {setting}", flush=True)
        with Running(REPLICA, delay_ms=delay_ms, conn_mbit=conn_mbit, link_mbit=link_mbit,
                     prefix=GCS_PREFIX, log=WORK_REMOTE / f"server{si}.log") as srv:
            url = srv.url

            # (a), (b) cold reads through the mount, one file after another.
            for key, label, order in [
                    ("a", "cold reads through the mount, file order", names),
                    ("b", "cold reads through the mount, random order",
                     random.Random(12).sample(names, len(names)))]:
                cpu0 = cpu_seconds()
                with Mount(desk, WORK_REMOTE / f"cache-{si}{key}", WORK_REMOTE / f"mnt{si}{key}",
                           source=url, log=WORK_REMOTE / f"mount{si}{key}.log") as m:
                    before = srv.stats()
                    t0 = time.perf_counter()
                    for name in order:
                        assert read_file(m.point / f"{name}.nc") > 0, name
                    seconds = time.perf_counter() - t0
                    after = srv.stats()
                record(setting, key, label, seconds, before, after,
                       {"mount_seconds": m.mount_seconds}, cpu=cpu_seconds() - cpu0)

            # (c) preload, wall time of the whole command (process start and the store's
            # metadata included: `start_seconds` is `validate` over the same lines, for that).
            before = srv.stats()
            cpu0 = cpu_seconds()
            t0 = time.perf_counter()
            out = run(ERA5, "preload", "--deskriptors", desk, "--cache",
                      WORK_REMOTE / f"cache-{si}c", "--source", url, "--jobs",
                      PRELOAD_JOBS, timeout=600).stdout
            seconds = time.perf_counter() - t0
            cpu = cpu_seconds() - cpu0
            after = srv.stats()
            assert f"{n} built" in out, out
            t1 = time.perf_counter()
            run(ERA5, "validate", "--deskriptors", desk, "--source", url, timeout=300)
            start_seconds = time.perf_counter() - t1
            record(setting, "c", f"preload --jobs {PRELOAD_JOBS} (wall)", seconds, before, after,
                   {"start_seconds": start_seconds}, cpu=cpu)
            record(setting, "c'", "preload, less its start (validate's time)",
                   seconds - start_seconds)

            # (d) the prototype's loop over the same HTTP store (fsspec), in this process.
            py_dir = WORK_REMOTE / f"py{si}"
            py_dir.mkdir()
            opened = []
            counters = {}

            def measure_open(s):
                opened.append(s)
                counters["before"] = srv.stats()
                counters["cpu"] = cpu_seconds()

            times = python_baseline(lines, py_dir, store=url, opened=measure_open)
            record(setting, "d", "prototype's xarray loop, one process", sum(times),
                   counters["before"], srv.stats(), {"open_seconds": opened[0]},
                   cpu=cpu_seconds() - counters["cpu"])

            # (e) the same loop on 8 processes.
            xr_dir = WORK_REMOTE / f"xr{si}"
            xr_dir.mkdir()
            seconds, before, after, cpu = xarray_processes(url, lines, xr_dir, stats=srv.stats)
            record(setting, "e", f"xarray on {XARRAY_PROCESSES} processes", seconds, before,
                   after, cpu=cpu)

        # (f) the link's limit for the bytes needed: all of them in one round trip.
        link_bps = link_mbit * 1e6 / 8
        record(setting, "f", "link limit: needed bytes / link + 1 round trip",
               sum(needed) / link_bps + delay_ms / 1e3, extra={"bytes_per_file": sum(needed) / n})
        # (g) the floor of a reader going file by file with one request per file and no
        # readahead: a round trip plus the needed bytes at the connection's rate, per file.
        conn_bps = conn_mbit * 1e6 / 8
        record(setting, "g", "file by file: 1 round trip + needed bytes / connection",
               n * delay_ms / 1e3 + sum(needed) / conn_bps,
               extra={"bytes_per_file": sum(needed) / n})

    about = {"commit": commit, "uncommitted_src": [d.strip() for d in dirty if d.strip()],
             "binary_built": datetime.fromtimestamp(ERA5.stat().st_mtime).isoformat(" ", "seconds"),
             "machine": f"{os.cpu_count()} cores", "settings": SETTINGS,
             "preload_jobs": PRELOAD_JOBS, "xarray_processes": XARRAY_PROCESSES}
    (WORK_REMOTE / "results.json").write_text(json.dumps({"about": about, "rows": results},
                                                         indent=2))
    print_remote_table(results, n)
    print_targets(results)
    setting, delay_ms, conn_mbit, link_mbit = SETTINGS[0]
    with Running(REPLICA, delay_ms=delay_ms, conn_mbit=conn_mbit, link_mbit=link_mbit,
                 prefix=GCS_PREFIX, log=WORK_REMOTE / "server-big.log") as srv:
        big_files_profile(srv.url, delay_ms, link_mbit, stats=srv.stats)
        series_profile(srv.url, delay_ms, link_mbit, stats=srv.stats)
    if (TEST_REPLICA / "temperature").is_dir():
        with Running(TEST_REPLICA, delay_ms=delay_ms, conn_mbit=conn_mbit, link_mbit=link_mbit,
                     prefix=GCS_PREFIX, log=WORK_REMOTE / "server-levels.log") as srv:
            levels_profile(srv.url, delay_ms, link_mbit, stats=srv.stats)
    print(f"commit {commit}{' with uncommitted changes in src/' if about['uncommitted_src'] else ''}"
          f", binaries built {about['binary_built']}")
    return 0


def print_remote_table(results, n):
    settings = [s[0] for s in SETTINGS]
    rows = []
    for r in results:
        if r["row"] not in rows:
            rows.append(r["row"])
    by = {(r["setting"], r["row"]): r for r in results}
    print()
    print(f"{n} hourly Zürich files; ms/file, MB fetched per file, and the xarray loop's ms/file "
          f"over ours (x)")
    width = 64
    head = f"{'':<{width}}"
    for s in settings:
        head += f" | {s:^32}"
    print(head)
    for key in rows:
        label = next(r["label"] for r in results if r["row"] == key)
        text = f"({key}) {label}"[:width]
        cells = f"{text:<{width}}"
        for s in settings:
            r = by.get((s, key))
            if r is None:
                cells += f" | {'':32}"
                continue
            loop = by.get((s, "d"))
            ratio = f"{loop['ms_per_file'] / r['ms_per_file']:.2f}x" if loop else ""
            mb = f"{r['bytes_per_file'] / 1e6:.3f} MB" if "bytes_per_file" in r else ""
            cells += f" | {r['ms_per_file']:>8.1f} ms {mb:>11} {ratio:>8}"
        print(cells)


def print_targets(results):
    """Issue 12's targets at the first setting (benchmark figures, not timed tests)."""
    by = {(r["setting"], r["row"]): r for r in results}
    chunk = statistics.mean((REPLICA / "2m_temperature" / f"{1_078_200 + h}.0.0").stat().st_size
                            for h in range(results[0]["files"]))
    for s in [s[0] for s in SETTINGS]:
        ms = {k: by[(s, k)]["ms_per_file"] for k in ("a", "b", "c", "d", "e", "f")}
        print(f"{s}:\n"
              f"  cold reads in file order: {ms['d'] / ms['a']:.1f}x the xarray loop "
              f"(target >= 5x)\n"
              f"  preload: {ms['e'] / ms['c']:.1f}x xarray on {XARRAY_PROCESSES} processes "
              f"(target >= 10x), {ms['c'] / ms['f']:.1f}x the link limit (target <= 1.5x)\n"
              f"  data bytes per file: preload {by[(s, 'c')]['data_bytes_per_file'] / chunk:.3f}, "
              f"cold read {by[(s, 'a')]['data_bytes_per_file'] / chunk:.3f} of a chunk "
              f"(target <= 0.125)")


def fresh_dir(path):
    """Empties `path` (refusing while a mount of an earlier run is still on it) and returns it."""
    if path.exists():
        for point in path.glob("mnt*"):
            if mounted(point):
                raise RuntimeError(f"{point} is still mounted; unmount it first")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def million_deskriptors(path, lines):
    """`lines` distinct deskriptors: 72 hours x one-degree boxes of 2m_temperature (the
    shape of issue 14's measurement), unnamed, compact JSON."""
    boxes = -(-lines // 72)
    with open(path, "w") as f:
        n = 0
        for h in range(72):
            t = f"2023-01-{1 + h // 24:02d}T{h % 24:02d}:00"
            for i in range(boxes):
                if n == lines:
                    return
                lat0, lon0 = 80 - (i // 360), i % 360
                f.write(json.dumps({"time": t, "latitude": {"start": lat0, "end": lat0 - 1},
                                    "longitude": {"start": lon0, "end": lon0 + 1},
                                    "variable": "2m_temperature"}, separators=(",", ":")) + "\n")
                n += 1


def timed_child(args):
    """Runs `args`; returns (seconds, peak RSS in MB, exit status)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(a) for a in args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env())
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t0, usage.ru_maxrss / 1024, proc.returncode


def shell_seconds(command):
    t0 = time.perf_counter()
    out = subprocess.run(command, shell=True, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - t0, out.strip()


def million_profile(lines):
    """A catalog of `lines` deskriptors (default a million): validate, mount, listings."""
    work = fresh_dir(WORK / "million")
    desk = work / "d.jsonl"
    million_deskriptors(desk, lines)
    print(f"million profile: {lines:,} deskriptors ({desk.stat().st_size / 1e6:.0f} MB), "
          f"release build, {os.cpu_count()} cores", flush=True)
    rows = []
    seconds, rss, status = timed_child([ERA5, "validate", "--deskriptors", desk, "--source",
                                        REPLICA])
    rows.append(("validate", f"{seconds:.1f} s, peak RSS {rss:.0f} MB (exit {status})",
                 "<= 10 s within 600 MB"))
    with Mount(desk, work / "cache", work / "mnt", log=work / "mount.log") as m:
        rows.append(("mount live (sodeda-mount returns)", f"{m.mount_seconds:.1f} s", "<= 5 s"))
        rows.append(("mount RSS after start", f"{m.rss_mb():.0f} MB", ""))
        seconds, count = shell_seconds(f"ls -f {m.point} | wc -l")
        rows.append(("ls -f | wc -l (first)", f"{seconds:.1f} s ({int(count) - 2:,} files)",
                     "<= 5 s"))
        seconds, _ = shell_seconds(f"ls -f {m.point} | wc -l")
        rows.append(("ls -f | wc -l (again)", f"{seconds:.1f} s", "<= 5 s"))
        seconds, _ = shell_seconds(f"ls -l {m.point} > /dev/null")
        rows.append(("ls -l > /dev/null", f"{seconds:.1f} s", "<= 60 s"))
        rows.append(("mount RSS after the listings", f"{m.rss_mb():.0f} MB", "<= 600 MB"))
    # The same file and cache again: the catalog is read back from its index, not planned.
    with Mount(desk, work / "cache", work / "mnt", log=work / "mount2.log") as m:
        rows.append(("mount live again (catalog index)", f"{m.mount_seconds:.1f} s", "<= 5 s"))
        rows.append(("mount RSS after start (again)", f"{m.rss_mb():.0f} MB", ""))
    width = max(len(r[0]) for r in rows)
    for name, value, target in rows:
        print(f"  {name:<{width}}  {value:<40}  {target}", flush=True)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    print(f"commit {commit}")
    return 0


EUROPE = {"latitude": {"start": 72, "end": 35}, "longitude": {"start": -10, "end": 40}}
BIG_LINES = {
    "europe30": {"name": "europe30", "time": {"start": "2023-01-01T00:00", "end": "2023-01-30T23:00"},
                 **EUROPE, "variable": ["2m_temperature"]},
    "europe-year": {"name": "europe-year", "time": {"start": "2023-01-01", "end": "2023-12-31"},
                    **EUROPE, "variable": ["2m_temperature", "10m_u_component_of_wind",
                                           "surface_pressure"]},
}
STEP = 100  # the time step a one-step reader asks for


def big_files_profile(url=None, delay_ms=0.0, link_mbit=0.0, stats=None):
    """Files served by their parts (issue 26): a 30-day Europe file (91 MB) and a year of Europe
    at three variables (3.1 GB), through the mount: ncdump -h, xarray.open_dataset, one time
    step with netCDF4, the whole file with cp; beside the whole-file build (`get`, what the
    first byte of any file cost before). `stats`: the delaying server's counters, if any."""
    work = fresh_dir(WORK / ("big-remote" if url else "big-local"))
    source = url or REPLICA
    desk = work / "big.jsonl"
    desk.write_text("".join(json.dumps(v) + "\n" for v in BIG_LINES.values()))
    py = Path(os.environ.get("SODEDA_VENV", ROOT / ".venv")) / "bin" / "python"
    where = f"over {url.split('/gcp')[0]} ({delay_ms:g} ms, {link_mbit:g} Mbit/s link)" if url \
        else "on local disk"
    print(f"\nfiles served by their parts, {where}", flush=True)
    hour_needs = needed_bytes(STEP, region=EUROPE)
    month_needs = sum(needed_bytes(h, region=EUROPE) for h in range(HOURS))
    counters = stats or (lambda: {"bytes": 0, "requests": 0})
    rows = []

    def row(label, seconds, before, after, note=""):
        mb = (after["bytes"] - before["bytes"]) / 1e6
        req = after["requests"] - before["requests"]
        fetched = f"{mb:9.1f} MB {req:5d} requests" if stats else ""
        rows.append((label, seconds, fetched, note))
        print(f"  {label:<58} {seconds:8.2f} s {fetched} {note}", flush=True)

    def timed(argv, **kw):
        t0 = time.perf_counter()
        subprocess.run([str(a) for a in argv], check=True, capture_output=True, timeout=1800, **kw)
        return time.perf_counter() - t0

    b = counters()
    out = work / "get.nc"
    seconds = timed([ERA5, "get", "--deskriptors", desk, "--line", 1, "--cache", work / "get-cache",
                     "--source", source, "-o", out], env=env())
    row("europe30 (91 MB): whole-file build (get; the first byte before)", seconds, b, counters())
    f = None
    with Mount(desk, work / "cache", work / "mnt", source=source, log=work / "mount.log") as m:
        f = m.point / "europe30.nc"
        for label, argv in [
                ("europe30: ncdump -h", ["ncdump", "-h", f]),
                ("europe30: xarray.open_dataset (netCDF4)",
                 [py, "-c", f"import xarray as xr; xr.open_dataset('{f}').sizes"]),
                (f"europe30: one time step with netCDF4 (open + [{STEP}])",
                 [py, "-c", f"import netCDF4; netCDF4.Dataset('{f}')['2m_temperature'][{STEP}]"])]:
            b = counters()
            seconds = timed(argv)
            note = f"(the hour needs {hour_needs / 1e6:.2f} MB)" if "step" in label else ""
            row(label, seconds, b, counters(), note)
        b = counters()
        copy = work / "copy.nc"
        seconds = timed(["cp", f, copy])
        size = copy.stat().st_size
        floor = month_needs / (link_mbit * 1e6 / 8) + delay_ms / 1e3 if link_mbit else None
        note = f"{size / seconds / 1e6:.0f} MB/s of file" + (
            f"; link limit for its {month_needs / 1e6:.0f} MB needed: {floor:.2f} s" if floor else "")
        row("europe30: cp of the whole file", seconds, b, counters(), note)
        assert copy.read_bytes() == out.read_bytes(), "cp through the mount differs from get"
        y = m.point / "europe-year.nc"
        b = counters()
        t0 = time.perf_counter()
        year_size = y.stat().st_size
        subprocess.run(["ncdump", "-h", str(y)], check=True, capture_output=True, timeout=600)
        row(f"europe-year ({year_size / 1e9:.2f} GB): stat + ncdump -h", time.perf_counter() - t0,
            b, counters())
        b = counters()
        seconds = timed([py, "-c", f"import netCDF4; netCDF4.Dataset('{y}')['2m_temperature'][{STEP}]"])
        row(f"europe-year: one time step with netCDF4 (open + [{STEP}])", seconds, b, counters(),
            f"(the hour needs {hour_needs / 1e6:.2f} MB)")
    return rows


def timed_get(argv, stats=None):
    """Runs `sodeda-era5 get` (`argv` after the program): (seconds, MB, requests) fetched,
    from the delaying server's counters `stats` when given, else from the run's `--stats`."""
    before = stats() if stats else None
    t0 = time.perf_counter()
    p = subprocess.run([str(ERA5), "get", *map(str, argv), *([] if stats else ["--stats"])],
                       check=True, capture_output=True, text=True, env=env(), timeout=1800)
    seconds = time.perf_counter() - t0
    if stats:
        after = stats()
        return seconds, (after["bytes"] - before["bytes"]) / 1e6, after["requests"] - before["requests"]
    line = p.stderr.split("source: ")[1].splitlines()[0]
    nums = [int(w) for w in line.replace("(", " ").replace(",", " ").split() if w.isdigit()]
    return seconds, (nums[1] + nums[3]) / 1e6, nums[0] + nums[2]


def timed_xarray(code, stats=None):
    """Runs Python `code` (which prints its own seconds last): (seconds, MB, requests), the
    bytes and requests from `stats` when given (else None)."""
    py = Path(os.environ.get("SODEDA_VENV", ROOT / ".venv")) / "bin" / "python"
    before = stats() if stats else None
    out = subprocess.run([str(py), "-c", code], check=True, capture_output=True, text=True,
                         timeout=1800)
    seconds = float(out.stdout.split()[-1])
    if not stats:
        return seconds, None, None
    after = stats()
    return seconds, (after["bytes"] - before["bytes"]) / 1e6, after["requests"] - before["requests"]


SERIES_BOX = {"latitude": {"start": 47.5, "end": 47.25}, "longitude": {"start": 8.5, "end": 8.75}}
SERIES_LINE = {"name": "series", "time": {"start": "2023-01-01T00:00", "end": "2023-01-30T23:00"},
               **SERIES_BOX, "variable": ["2m_temperature"]}


def series_profile(url=None, delay_ms=0.0, link_mbit=0.0, stats=None):
    """A 30-day series of a 2x2 box (720 chunks, one per hour), over the delaying server
    (`url`, `stats`) or on local disk: `get` against the needed blocks (bytes) and, remote,
    the link limit for them (time), and the xarray path (`open_zarr(...).sel(...).load()`)
    on the same selection beside it."""
    work = fresh_dir(WORK / ("series-remote" if url else "series-local"))
    source = url or REPLICA
    desk = work / "series.jsonl"
    desk.write_text(json.dumps(SERIES_LINE) + "\n")
    needed = sum(needed_bytes(h, region=SERIES_BOX) for h in range(HOURS))
    floor = needed / (link_mbit * 1e6 / 8) + delay_ms / 1e3 if url else None
    where = (f"over {url.split('/gcp')[0]} ({delay_ms:g} ms, {link_mbit:g} Mbit/s link)" if url
             else "on local disk")
    print(f"\n30-day series of a 2x2 box (720 hourly chunks) {where}: the needed blocks "
          f"{needed / 1e6:.1f} MB" + (f", the link limit for them {floor:.2f} s" if floor else ""),
          flush=True)

    def show(label, seconds, mb, requests):
        vs = f"({seconds / floor:4.2f}x the link limit)" if floor else ""
        fetched = (f"{mb:8.1f} MB ({mb * 1e6 / needed:4.2f}x needed) {requests:5d} requests"
                   if mb is not None else "")
        print(f"  {label:<56} {seconds:7.2f} s {vs} {fetched}", flush=True)
        rows.append((label, seconds, mb, requests))

    rows = []
    show("get (cold cache, no block tables)",
         *timed_get(["--deskriptors", desk, "--line", 1, "--cache", work / "c1", "--source",
                     source, "-o", work / "a.nc"], stats))
    # The block tables live under the cache: carry the first cache's over.
    for tables in (work / "c1").glob("v*/blocktables"):
        shutil.copytree(tables, work / "c2" / tables.parent.name / "blocktables")
    show("get again, new cache (block tables of the first kept)",
         *timed_get(["--deskriptors", desk, "--line", 1, "--cache", work / "c2", "--source",
                     source, "-o", work / "b.nc"], stats))
    code = (f"import xarray as xr, time; ds = xr.open_zarr('{source}', consolidated=True); "
            f"t0 = time.perf_counter(); ds['2m_temperature'].sel(time=slice('2023-01-01T00', "
            f"'2023-01-30T23'), latitude=slice(47.5, 47.25), longitude=slice(8.5, 8.75)).load(); "
            f"print(time.perf_counter() - t0)")
    show("xarray: open_zarr + sel + load (after open)", *timed_xarray(code, stats))
    return rows


TEST_REPLICA = ROOT / "tmp" / "replica-test"
LEVELS_BOX = {"latitude": {"start": 48, "end": 47}, "longitude": {"start": 8, "end": 9}}  # 5x5


def needed_level_bytes(hour, levels, region, replica=TEST_REPLICA, var="temperature"):
    """The Blosc header with its block table and the compressed blocks holding `region`'s
    rows at the level indices `levels` of the pressure-level chunk of `hour` (of the day the
    test replica holds, 2023-01-01), read from the replica's chunk file."""
    path = replica / var / f"{1_078_200 + hour}.0.0.0"
    with open(path, "rb") as f:
        head = f.read(16)
        _, _, flags, _, nbytes, blocksize, cbytes = struct.unpack("<BBBBIII", head)
        if flags & 0x02:
            raise RuntimeError(f"{path}: memcpyed Blosc chunk")
        nblocks = -(-nbytes // blocksize)
        starts = list(struct.unpack(f"<{nblocks}i", f.read(4 * nblocks))) + [cbytes]
    row = 1440 * 4
    lat = region["latitude"]
    first, last = round((90 - lat["start"]) / 0.25), round((90 - lat["end"]) / 0.25)
    blocks = set()
    for k in levels:
        lo, hi = (k * 721 + first) * row, (k * 721 + last + 1) * row - 1
        blocks.update(range(lo // blocksize, hi // blocksize + 1))
    return 16 + 4 * nblocks + sum(starts[b + 1] - starts[b] for b in blocks)


def levels_profile(url=None, delay_ms=0.0, link_mbit=0.0, stats=None):
    """Pressure levels of the test replica (37 levels at 4 hours of 2023-01-01), over the
    delaying server (`url`, `stats`) or on local disk: two levels and all 37 levels of a 5x5
    box over 3 hours, by `get` against the blocks holding its rows (bytes) and, remote, the
    link limit for them (time), and xarray's `open_zarr(...).sel(...).load()` beside it."""
    import xarray as xr
    if not (TEST_REPLICA / "temperature").is_dir():
        print(f"(no pressure-level rows: {TEST_REPLICA} is written by scripts/test)")
        return []
    work = fresh_dir(WORK / ("levels-remote" if url else "levels-local"))
    source = url or TEST_REPLICA
    levels = [int(v) for v in xr.open_zarr(TEST_REPLICA, consolidated=True)["level"].values]
    where = (f"over {url.split('/gcp')[0]} ({delay_ms:g} ms, {link_mbit:g} Mbit/s link)" if url
             else "on local disk")
    print(f"\npressure levels {where}: temperature, a 5x5 box, 3 hours (chunks of 37 levels, "
          f"154 MB raw)", flush=True)
    rows = []
    for label, picked in [("levels 500 and 850 hPa", [500, 850]), ("all 37 levels", levels)]:
        idx = [levels.index(v) for v in picked]
        needed = sum(needed_level_bytes(h, idx, LEVELS_BOX) for h in (10, 11, 12))
        floor = needed / (link_mbit * 1e6 / 8) + delay_ms / 1e3 if url else None
        line = {"time": {"start": "2023-01-01T10:00", "end": "2023-01-01T12:00"}, **LEVELS_BOX,
                "level": picked, "variable": ["temperature"]}
        desk = work / "levels.jsonl"
        desk.write_text(json.dumps(line) + "\n")
        code = (f"import xarray as xr, time; ds = xr.open_zarr('{source}', consolidated=True); "
                f"t0 = time.perf_counter(); ds['temperature'].sel(time=slice('2023-01-01T10', "
                f"'2023-01-01T12'), level={picked}, latitude=slice(48, 47), "
                f"longitude=slice(8, 9)).load(); print(time.perf_counter() - t0)")
        for what, (seconds, mb, requests) in [
                ("get", timed_get(["--deskriptors", desk, "--line", 1, "--cache",
                                   work / f"c{len(idx)}", "--source", source, "-o",
                                   work / "l.nc"], stats)),
                ("xarray (after open)", timed_xarray(code, stats))]:
            vs = f"({seconds / floor:5.2f}x the link limit {floor:.2f} s)" if floor else ""
            fetched = (f"{mb:8.1f} MB ({mb * 1e6 / needed:5.2f}x the {needed / 1e6:.1f} MB of "
                       f"needed blocks) {requests:4d} requests" if mb is not None else "")
            print(f"  {label + ': ' + what:<44} {seconds:7.2f} s {vs} {fetched}", flush=True)
            rows.append((label, what, seconds, mb, needed))
    return rows


TRAINING_SAMPLES = 288


def training_profile(url=None, delay_ms=0.0, link_mbit=0.0, stats=None, workers=4, batch=8):
    """The training loop of docs/DEPLOYMENT.md (scripts/training_loop.py): 288 hourly Europe
    samples in a shuffled order, netCDF4 reads by `workers` processes in batches of `batch`,
    `sodeda-era5 prefetch` fed with the order; samples/s cold (a fresh cache) and warm (the
    second epoch), against the same loop over `xr.open_zarr` of the store (no cache: every
    epoch is cold), over the delaying server (`url`) or on local disk."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import training_loop as tl
    work = fresh_dir(WORK / ("training-remote" if url else "training-local"))
    source = url or REPLICA
    times = [f"2023-01-{1 + h // 24:02d}T{h % 24:02d}:00" for h in range(TRAINING_SAMPLES)]
    desk = work / "samples.jsonl"
    desk.write_text("".join(json.dumps({"name": f"e{h:03d}", "time": t, **EUROPE,
                                        "variable": "2m_temperature"}) + "\n"
                            for h, t in enumerate(times)))
    where = f"over {url.split('/gcp')[0]} ({delay_ms:g} ms)" if url else "on local disk"
    print(f"\ntraining loop {where}: {TRAINING_SAMPLES} hourly Europe samples (141x201), "
          f"shuffled, {workers} workers, batches of {batch}", flush=True)
    rows = []

    def show(label, n, seconds, before=None, after=None):
        mb = f"{(after['bytes'] - before['bytes']) / 1e6:8.1f} MB" if after else ""
        print(f"  {label:<52} {n / seconds:8.1f} samples/s ({seconds:6.2f} s) {mb}", flush=True)
        rows.append((label, n / seconds))

    with Mount(desk, work / "cache", work / "mnt", source=source, log=work / "mount.log") as m:
        names = tl.shuffled_names(m.point)
        prefetch = tl.start_prefetch(ERA5, m.point, names, work / "order.txt", window=32)
        try:
            data = tl.Era5Files(m.point, names)
            for label in ("mount, netCDF4, cold (prefetch --order)", "mount, netCDF4, warm"):
                b = stats() if stats else None
                n, seconds, _ = tl.epoch(data, batch, workers)
                show(label, n, seconds, b, stats() if stats else None)
        finally:
            prefetch.terminate()
            prefetch.wait(timeout=30)
    order = [times[int(n[1:4])] for n in names]
    zs = tl.ZarrSamples(source, order, EUROPE)
    b = stats() if stats else None
    n, seconds, _ = tl.epoch(zs, batch, workers)
    show("xr.open_zarr of the store, same loop (each epoch)", n, seconds, b,
         stats() if stats else None)
    return rows


MONTH = {"start": "2023-01-01T00:00", "end": "2023-01-30T23:00"}
# 100 stations on a 10x10 lattice over Europe, off the grid's half-points (no ties).
STATIONS = [{"name": f"s{i}{j}", "latitude": round(36.1 + 3.7 * i, 2),
             "longitude": round(-9.3 + 5.1 * j, 2)} for i in range(10) for j in range(10)]


def nearest_grid(value, step=0.25):
    """The grid label nearest to `value` on a `step` grid (the stations are off the ties)."""
    return round(value / step) * step


def representations_profile(url=None, delay_ms=0.0, link_mbit=0.0, stats=None):
    """Representations (issue 30): a 30-day daily mean over Europe and a 30-day series at 100
    stations, by `get`, each beside the same selection without the representation (the bytes
    fetched must be equal) and beside xarray doing the same on `open_zarr` (`resample(time=
    "1D").mean()`, `.sel(method="nearest")` at the stations); over the delaying server (`url`,
    `stats`) or on local disk."""
    work = fresh_dir(WORK / ("representations-remote" if url else "representations-local"))
    source = url or REPLICA
    where = (f"over {url.split('/gcp')[0]} ({delay_ms:g} ms, {link_mbit:g} Mbit/s link)" if url
             else "on local disk")
    print(f"\nrepresentations {where}: 30 days (720 hourly chunks) of 2m_temperature",
          flush=True)
    lats = sorted({nearest_grid(p["latitude"]) for p in STATIONS}, reverse=True)
    lons = sorted({nearest_grid(p["longitude"]) for p in STATIONS})
    var = ["2m_temperature"]
    cases = {
        "europe daily mean": {"time": MONTH, **EUROPE, "variable": var,
                              "resample": {"time": "1D", "how": "mean"}},
        "europe, hourly (same selection)": {"time": MONTH, **EUROPE, "variable": var},
        "100 stations": {"time": MONTH, "points": STATIONS, "variable": var},
        "their grid rows x columns (same chunks)": {"time": MONTH, "latitude": lats,
                                                    "longitude": lons, "variable": var},
    }
    st_lat = [p["latitude"] for p in STATIONS]
    st_lon = [p["longitude"] for p in STATIONS]
    xarray_code = {
        # -10..40 as one index list, so that each chunk is read once (a concat of two
        # slices reads it twice).
        "europe daily mean": "a = v.sel(latitude=slice(72, 35)).isel(longitude=[*range(1400, "
                             "1440), *range(0, 161)]).resample(time='1D').mean().load()",
        "100 stations": f"a = v.sel(latitude=xr.DataArray({st_lat}, dims='station'), "
                        f"longitude=xr.DataArray({[x % 360 for x in st_lon]}, dims='station'), "
                        f"method='nearest').load()",
    }
    rows = []
    for i, (label, d) in enumerate(cases.items()):
        desk = work / f"d{i}.jsonl"
        desk.write_text(json.dumps(d) + "\n")
        # On local disk a run is a second and the machine's noise is as large: the median
        # of three runs, each with a fresh cache.
        runs = []
        for r in range(1 if url else 3):
            runs.append(timed_get(["--deskriptors", desk, "--line", 1, "--cache",
                                   work / f"c{i}-{r}", "--source", source, "-o",
                                   work / f"d{i}.nc"], stats))
        seconds, mb, requests = sorted(runs)[len(runs) // 2]
        size = (work / f"d{i}.nc").stat().st_size
        print(f"  {'get: ' + label:<50} {seconds:7.2f} s {mb:8.1f} MB {requests:6d} requests"
              f"  file {size / 1e6:7.2f} MB", flush=True)
        rows.append((label, "get", seconds, mb, requests))
        if label in xarray_code:
            code = (f"import xarray as xr, time; ds = xr.open_zarr('{source}', consolidated=True); "
                    f"t0 = time.perf_counter(); v = ds['2m_temperature'].sel(time=slice("
                    f"'2023-01-01T00', '2023-01-30T23')); {xarray_code[label]}; "
                    f"print(time.perf_counter() - t0)")
            runs = [timed_xarray(code, stats) for _ in range(1 if url else 3)]
            seconds, mb, requests = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
            fetched = f"{mb:8.1f} MB {requests:6d} requests" if mb is not None else ""
            print(f"  {'xarray: ' + label:<50} {seconds:7.2f} s {fetched}", flush=True)
            rows.append((label, "xarray", seconds, mb, requests))
    return rows


def local_and_remote(profiles):
    """Runs each of `profiles` on local disk, then over the delaying server at the first
    setting (30 ms); the pressure-level profile serves the test replica."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from delay_server import Running
    for profile in profiles:
        profile()
    setting, delay_ms, conn_mbit, link_mbit = SETTINGS[0]
    for profile in profiles:
        replica = TEST_REPLICA if profile is levels_profile else REPLICA
        if not replica.is_dir():
            continue
        with Running(replica, delay_ms=delay_ms, conn_mbit=conn_mbit, link_mbit=link_mbit,
                     prefix=GCS_PREFIX, log=WORK / f"server-{profile.__name__}.log") as srv:
            profile(srv.url, delay_ms, link_mbit, stats=srv.stats)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description="sodeda-era5 benchmarks (docs/PERFORMANCE.md)")
    ap.add_argument("--remote", action="store_true",
                    help="the remote profile: the replica behind a delaying HTTP server")
    ap.add_argument("--quick", action="store_true", help="remote profile with 12 files")
    ap.add_argument("--files", type=int, help="remote profile with this many files (<= 720)")
    ap.add_argument("--big", action="store_true",
                    help="only the files served by their parts (local, and over the delaying "
                         "server at 30 ms)")
    ap.add_argument("--series", action="store_true",
                    help="only the 30-day series of a 2x2 box, and pressure levels of a 5x5 box "
                         "(the test replica), over the delaying server at 30 ms")
    ap.add_argument("--training", action="store_true",
                    help="only the training loop (docs/DEPLOYMENT.md), local and over the "
                         "delaying server at 30 ms")
    ap.add_argument("--representations", action="store_true",
                    help="only the representations (a 30-day daily mean over Europe, 100 "
                         "stations), local and over the delaying server at 30 ms")
    ap.add_argument("--million", nargs="?", const=1_000_000, type=int, metavar="LINES",
                    help="the million profile: a catalog of LINES deskriptors (default "
                         "1,000,000): validate, mount, ls -f, ls -l, memory")
    args = ap.parse_args(argv)
    if args.million:
        return million_profile(args.million)
    for flag, profiles in [(args.training, [training_profile]),
                           (args.representations, [representations_profile]),
                           (args.series, [series_profile, levels_profile]),
                           (args.big, [big_files_profile])]:
        if flag:
            return local_and_remote(profiles)
    profile = "remote" if args.remote else os.environ.get("SODEDA_BENCH_PROFILE", "local")
    if args.files is not None and not 1 <= args.files <= HOURS:
        ap.error(f"--files {args.files}: expected 1 to {HOURS}")
    if profile == "remote":
        return remote_profile(quick=args.quick, files=args.files)
    if profile != "local":
        ap.error(f"SODEDA_BENCH_PROFILE={profile}: expected local or remote")
    if args.quick or args.files:
        ap.error("--quick and --files are options of the remote profile (--remote)")
    return local_profile()


if __name__ == "__main__":
    sys.exit(main())
