"""A training loop's data side over a sodeda-era5 mount: a PyTorch-style `Dataset` of the
mount's files read with netCDF4, shuffled once up front, its order handed to
`sodeda-era5 prefetch` so the next files are built a window ahead of the workers.

docs/DEPLOYMENT.md ("Training jobs") shows it with PyTorch's DataLoader; this module runs the
same Dataset with torch's DataLoader when torch is installed and with a process pool of the
same shape (workers, batches in order) when it is not, so the bench (`scripts/bench
--training`) and the tests (`test_training.py`) run it on any machine.

    python scripts/training_loop.py MOUNT [--workers 4] [--batch 8] [--epochs 2]
"""

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


class Era5Files:
    """One sample per file of the mount: the variable's values as float32 (netCDF4 reads the
    file through the mount; no xarray at `__getitem__`, whose per-file open costs more than
    the read of a small file)."""

    def __init__(self, mount, names, variable="2m_temperature"):
        self.mount = Path(mount)
        self.names = list(names)
        self.variable = variable

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        import netCDF4
        with netCDF4.Dataset(self.mount / self.names[i]) as ds:
            v = ds[self.variable]
            v.set_auto_mask(False)
            return np.asarray(v[:], dtype=np.float32)


class ZarrSamples:
    """The same samples read from the store with xarray (`open_zarr` once per worker process,
    then `.sel` per sample): the loop the mount is measured against."""

    _opened = {}

    def __init__(self, url, times, region, variable="2m_temperature"):
        self.url, self.times, self.region, self.variable = str(url), list(times), region, variable

    def __len__(self):
        return len(self.times)

    def __getitem__(self, i):
        import xarray as xr
        ds = ZarrSamples._opened.get(self.url)
        if ds is None:
            ds = ZarrSamples._opened[self.url] = xr.open_zarr(self.url, consolidated=True)
        lat, lon = self.region["latitude"], self.region["longitude"]
        sel = ds[self.variable].sel(time=self.times[i], latitude=slice(lat["start"], lat["end"]),
                                    longitude=slice(lon["start"], lon["end"]))
        return np.asarray(sel.values, dtype=np.float32)


def shuffled_names(mount, seed=0):
    """The mount's file names in the sampler's order, fixed up front."""
    names = sorted(p.name for p in Path(mount).glob("*.nc"))
    random.Random(seed).shuffle(names)
    return names


def start_prefetch(binary, mount, names, order_file, window=16, extra=()):
    """`sodeda-era5 prefetch` over `names` (written to `order_file`); returns the process."""
    Path(order_file).write_text("\n".join(names) + "\n")
    return subprocess.Popen([str(binary), "prefetch", str(mount), "--order", str(order_file),
                             "--window", str(window), *map(str, extra)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _load(args):
    dataset, indices = args
    return np.stack([dataset[i] for i in indices])


def batches(dataset, batch_size=8, workers=4):
    """The dataset's samples in order, `batch_size` at a time, read by `workers` processes:
    torch's DataLoader when torch is installed, else a process pool that keeps the batches
    in order as the DataLoader does."""
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                             num_workers=workers)
        for b in loader:
            yield b.numpy()
        return
    import multiprocessing
    chunks = [(dataset, list(range(i, min(i + batch_size, len(dataset)))))
              for i in range(0, len(dataset), batch_size)]
    if workers <= 0:
        yield from map(_load, chunks)
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_load, chunks)


def epoch(dataset, batch_size=8, workers=4):
    """Reads one epoch; returns (samples, seconds, a checksum of the values)."""
    t0 = time.perf_counter()
    n, total = 0, 0.0
    for b in batches(dataset, batch_size, workers):
        n += len(b)
        total += float(np.nansum(b, dtype=np.float64))
    return n, time.perf_counter() - t0, total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mount")
    ap.add_argument("--binary", default="sodeda-era5")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--window", type=int, default=16)
    a = ap.parse_args(argv)
    names = shuffled_names(a.mount)
    prefetch = start_prefetch(a.binary, a.mount, names, Path(a.mount).name + ".order",
                              a.window)
    try:
        data = Era5Files(a.mount, names)
        for e in range(a.epochs):
            n, seconds, _ = epoch(data, a.batch, a.workers)
            print(json.dumps({"epoch": e, "samples": n, "seconds": round(seconds, 3),
                              "samples_per_s": round(n / seconds, 1)}))
    finally:
        prefetch.terminate()
        prefetch.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
