"""Files served by their parts, through a real mount (docs/FILES.md, "Files served by their
parts"): opening a big file reads no data; a read builds only the slabs under it; what is read
equals `sodeda-era5 get`'s file and xarray over the store, for every reader; a file read whole
becomes an ordinary complete entry; a mount killed with `kill -9` in the middle of a read
leaves its slabs, which the next mount reuses and finishes.

The files are 12 hours of the whole globe (50 MB) and 4 hours of two levels and a surface
variable (50 MB): above the 32 MiB from which files are served by their parts."""

import json
import os
import signal
import subprocess
import time

import netCDF4
import numpy as np
import pytest
import xarray as xr

BIG = {"name": "globe12", "time": {"start": "2023-01-01T00:00", "end": "2023-01-01T11:00"},
       "variable": "2m_temperature"}
MIXED = {"name": "mixed4", "time": {"start": "2023-01-01T10:00", "end": "2023-01-01T13:00"},
         "level": [500, 850], "variable": ["temperature", "2m_temperature"]}
STEP = 5  # one step any reader asks for


def slab_builds(m):
    return m.stats()["slab_builds"]


@pytest.fixture
def dataset(tmp_path, replica, run):
    d = tmp_path / "d.jsonl"
    d.write_text(json.dumps(BIG) + "\n" + json.dumps(MIXED) + "\n")
    return d


def got(run, tmp_path, line):
    out = tmp_path / f"get{line}.nc"
    run("get", "--deskriptors", tmp_path / "d.jsonl", "--line", line, "-o", out)
    return out.read_bytes()


def test_opening_a_big_file_reads_no_data(dataset, replica, mount_factory):
    m = mount_factory(dataset, replica)
    f = m.mountpoint / "globe12.nc"
    size = f.stat().st_size
    assert size > 32 << 20
    before = m.stats()
    header = subprocess.run(["ncdump", "-h", str(f)], capture_output=True, text=True,
                            check=True, timeout=120).stdout
    assert "time = 12 ;" in header and "longitude = 1440 ;" in header, header
    after = m.stats()
    assert after["slab_builds"] == 0, "ncdump -h built no slab"
    assert after["source_bytes"] == before["source_bytes"], "and read nothing from the source"
    # xarray (netCDF4) loads the coordinates at open: from the layout. libnetcdf probes the
    # file at powers of two for an HDF5 signature: 8, 16 and 32 MiB lie in slabs.
    store = xr.open_zarr(replica, consolidated=True)
    with xr.open_dataset(f, engine="netcdf4") as ds:
        np.testing.assert_array_equal(
            ds["time"].values, store["time"].sel(time=slice("2023-01-01T00", "2023-01-01T11")).values)
        np.testing.assert_array_equal(ds["latitude"].values, store["latitude"].values)
        np.testing.assert_array_equal(ds["longitude"].values, store["longitude"].values)
    assert slab_builds(m) <= 3, m.stats()
    assert m.stats()["flow_runs"] == 0, "the file was not built whole"


def test_reads_build_only_their_slabs_and_equal_get_and_xarray_for_every_reader(
        dataset, replica, mount_factory, run, tmp_path):
    m = mount_factory(dataset, replica)
    store = xr.open_zarr(replica, consolidated=True)
    f = m.mountpoint / "mixed4.nc"
    with netCDF4.Dataset(f) as ds:
        builds = slab_builds(m)
        one = ds["temperature"][1, 1]
        want = store["temperature"].sel(time="2023-01-01T11:00", level=850).values
        np.testing.assert_array_equal(np.asarray(one), want)
    # The step and the edges of its neighbours: at most 3 of the file's 12 slabs.
    assert slab_builds(m) - builds <= 3, m.stats()
    # The whole file, read in order, equals get's, byte for byte.
    assert f.read_bytes() == got(run, tmp_path, 2)
    # Readers that read it otherwise: scipy maps it (mmap of a direct-I/O file), cdo, ncdump.
    g = m.mountpoint / "globe12.nc"
    with xr.open_dataset(g, engine="scipy") as ds:
        np.testing.assert_array_equal(
            ds["2m_temperature"].isel(time=STEP).values,
            store["2m_temperature"].sel(time="2023-01-01T05:00").values)
    sinfo = subprocess.run(["cdo", "-s", "sinfo", str(g)], capture_output=True, text=True,
                           timeout=300)
    assert sinfo.returncode == 0 and "12 steps" in sinfo.stdout.replace("  ", " "), sinfo
    times = subprocess.run(["ncdump", "-v", "time", str(g)], capture_output=True, text=True,
                           check=True, timeout=120).stdout
    assert "time = 1078200, 1078201," in times, times[-400:]


def test_a_file_read_whole_by_parts_becomes_a_complete_entry(dataset, replica, mount_factory,
                                                              run, tmp_path):
    m = mount_factory(dataset, replica)
    f = m.mountpoint / "globe12.nc"
    copy = tmp_path / "copy.nc"
    subprocess.run(["cp", str(f), str(copy)], check=True, timeout=300)
    assert copy.read_bytes() == got(run, tmp_path, 1)
    deadline = time.monotonic() + 60
    while os.getxattr(f, "user.sodeda.cached") != b"yes":
        assert time.monotonic() < deadline, "never complete"
        time.sleep(0.1)
    entries = list((tmp_path / "cache").rglob("*"))
    assert not [p for p in entries if p.suffix in (".partial", ".slabs")], entries
    builds, runs = slab_builds(m), m.stats()["flow_runs"]
    assert f.read_bytes() == copy.read_bytes()
    assert (slab_builds(m), m.stats()["flow_runs"]) == (builds, runs), "read from the entry"


def test_a_mount_killed_mid_read_leaves_its_slabs_to_the_next_one(dataset, replica,
                                                                  mount_factory, run, tmp_path):
    cache = tmp_path / "cache"
    m = mount_factory(dataset, replica, cache=cache, name="first")
    f = m.mountpoint / "globe12.nc"
    with open(f, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        fh.seek(size // 2)
        fh.read(8 << 20)  # two hours' slabs, give or take
    assert slab_builds(m) >= 2
    # A cp in flight when the mount is killed.
    cp = subprocess.Popen(["cp", str(f), str(tmp_path / "partial-copy.nc")],
                          stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while slab_builds(m) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(m.proc.pid, signal.SIGKILL)
    m.proc.wait(timeout=15)
    cp.wait(timeout=60)
    subprocess.run(["umount", "-l", str(m.mountpoint)], capture_output=True)
    assert list(cache.rglob("*.slabs")), "the partial entry stays"
    again = mount_factory(dataset, replica, cache=cache, name="second")
    g = again.mountpoint / "globe12.nc"
    with open(g, "rb") as fh:
        fh.seek(size // 2)
        fh.read(4 << 20)
    assert slab_builds(again) == 0, "slabs the killed mount wrote were reused"
    assert g.read_bytes() == got(run, tmp_path, 1)


ABSENT = {"name": "absent12", "time": {"start": "2023-01-02T20:00", "end": "2023-01-03T07:00"},
          "variable": "2m_temperature"}


def test_hours_the_store_lacks_read_as_missing_and_the_entry_says_so(tmp_path, replica,
                                                                     mount_factory, run):
    d = tmp_path / "d.jsonl"
    d.write_text(json.dumps(ABSENT) + "\n")
    m = mount_factory(d, replica)
    f = m.mountpoint / "absent12.nc"
    copy = tmp_path / "copy.nc"
    subprocess.run(["cp", str(f), str(copy)], check=True, timeout=300)
    out = tmp_path / "get.nc"
    run("get", "--deskriptors", d, "--line", 1, "-o", out)
    assert copy.read_bytes() == out.read_bytes()
    with xr.open_dataset(copy) as ds:
        t2m = ds["2m_temperature"].values
        assert np.isfinite(t2m[:4]).all(), "the store has 2023-01-02T20 to 23"
        assert np.isnan(t2m[4:]).all(), "and not 2023-01-03"
    deadline = time.monotonic() + 60
    while os.getxattr(f, "user.sodeda.cached") != b"yes":
        assert time.monotonic() < deadline, "never complete"
        time.sleep(0.1)
    provenance = json.loads(os.getxattr(f, "user.sodeda.provenance"))
    assert provenance["absent_chunks"] == 8, provenance
