"""The training loop of docs/DEPLOYMENT.md (scripts/training_loop.py): a Dataset of the
mount's files read with netCDF4 by worker processes, in a shuffled order handed to
`sodeda-era5 prefetch`, gives every sample equal to xarray's selection on the store, and the
prefetcher builds the files ahead of the workers."""

import json
import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr

from conftest import ROOT, binary

sys.path.insert(0, str(ROOT / "scripts"))
import training_loop  # noqa: E402

BOX = {"latitude": {"start": 48, "end": 47}, "longitude": {"start": 8, "end": 9}}


def test_the_training_loop_reads_every_sample_exactly_with_prefetch(replica, mount_factory,
                                                                    tmp_path):
    hours = [f"2023-01-01T{h:02d}:00" for h in range(24)]
    lines = [json.dumps({"name": f"s{h:02d}", "time": t, **BOX, "variable": "2m_temperature"})
             for h, t in enumerate(hours)]
    deskriptors = tmp_path / "samples.jsonl"
    deskriptors.write_text("\n".join(lines) + "\n")
    m = mount_factory(deskriptors, replica, extra=["--readahead", "0"])
    names = training_loop.shuffled_names(m.mountpoint, seed=3)
    assert sorted(names) == [f"s{h:02d}.nc" for h in range(24)] and names != sorted(names)
    prefetch = training_loop.start_prefetch(binary(), m.mountpoint, names,
                                            tmp_path / "order.txt", window=6,
                                            extra=["--idle", "60"])
    try:
        # The prefetcher builds the first window before the reader starts.
        deadline = time.monotonic() + 30
        while m.stats()["flow_runs"] < 6:
            assert time.monotonic() < deadline, m.stats()
            time.sleep(0.05)
        data = training_loop.Era5Files(m.mountpoint, names)
        got = [s for b in training_loop.batches(data, batch_size=4, workers=2) for s in b]
    finally:
        prefetch.terminate()
        prefetch.wait(timeout=30)
    assert len(got) == 24
    ds = xr.open_zarr(replica, consolidated=True)
    for name, sample in zip(names, got):
        h = int(name[1:3])
        want = ds["2m_temperature"].sel(time=hours[h], latitude=slice(48, 47),
                                        longitude=slice(8, 9)).values
        assert sample.shape == (1, 5, 5) and want.shape == (5, 5)  # (time, latitude, longitude)
        np.testing.assert_array_equal(sample[0], want.astype(np.float32), err_msg=name)
    stats = m.stats()
    assert stats["flow_runs"] == 24 and stats["flow_failures"] == 0, stats
    # The same samples through the store with xarray, the loop it is measured against.
    zs = training_loop.ZarrSamples(replica, [hours[int(n[1:3])] for n in names[:4]], BOX)
    for i in range(4):
        np.testing.assert_array_equal(zs[i], got[i][0])
