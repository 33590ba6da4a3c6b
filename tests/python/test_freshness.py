"""Freshness and provenance through a real mount (docs/FILES.md, "Freshness and provenance"):
files over hours after the store's valid_time_stop are provisional and rebuilt once the store's
last_updated changes, final ones are not; every file says what it is made of; file times come
from the data, so a remount changes nothing and `rsync -a` copies nothing the second time;
`--pin` freezes a dataset.

Each test serves a private view of the test replica: the replica's arrays through symlinks and
its own `.zmetadata`, whose root attributes the test rewrites as ARCO-ERA5 does on an update."""

import json
import os
import subprocess
import time

import xarray as xr

from conftest import Runner

OLD = "2023-01-05 02:00:00.000000+00:00"
NEW = "2023-02-01 03:00:00.000000+00:00"

FINAL = {"name": "final", "time": {"start": "2023-01-01T03", "end": "2023-01-01T05"},
         "latitude": {"start": 47.5, "end": 46.5}, "longitude": {"start": 8, "end": 9},
         "variable": "2m_temperature"}
LATE = {"name": "late", "time": {"start": "2023-01-01T22", "end": "2023-01-02T01"},
        "latitude": {"start": 47.5, "end": 46.5}, "longitude": {"start": 8, "end": 9},
        "variable": "2m_temperature"}
LATER = {**LATE, "name": "later", "time": "2023-01-02T05:00"}


def store_view(replica, root, last_updated):
    """A store over the replica's arrays with valid_time_stop 2023-01-01 and `last_updated`."""
    root.mkdir(exist_ok=True)
    for entry in replica.iterdir():
        if entry.name != ".zmetadata" and not (root / entry.name).exists():
            (root / entry.name).symlink_to(entry)
    set_version(replica, root, last_updated)
    return root


def set_version(replica, root, last_updated):
    meta = json.loads((replica / ".zmetadata").read_text())
    meta["metadata"][".zattrs"].update({"last_updated": last_updated,
                                        "valid_time_stop": "2023-01-01",
                                        "valid_time_stop_era5t": "2023-01-02"})
    tmp = root / ".zmetadata.tmp"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, root / ".zmetadata")  # atomic, as an object store's PUT


def xattr(path, name):
    return os.getxattr(path, name).decode()


def write_deskriptors(path, *deskriptors):
    path.write_text("".join(json.dumps(d) + "\n" for d in deskriptors))
    return path


def wait_for(predicate, what, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def test_a_provisional_file_is_rebuilt_after_a_store_update_and_a_final_one_is_not(
        replica, mount_factory, tmp_path):
    store = store_view(replica, tmp_path / "store", OLD)
    desk = write_deskriptors(tmp_path / "d.jsonl", FINAL, LATE)
    m = mount_factory(desk, store, extra=["--source-check-interval", "1"])
    final, late = m.mountpoint / "final.nc", m.mountpoint / "late.nc"

    with xr.open_dataset(final, engine="netcdf4") as ds:
        assert ds.attrs["sodeda_data_status"].startswith("final ERA5"), ds.attrs
        assert "sodeda_store_last_updated" not in ds.attrs
        assert ds.attrs["sodeda_absent_chunks"] == 0
        # CF axes on the coordinates.
        assert ds.latitude.attrs["axis"] == "Y" and ds.longitude.attrs["axis"] == "X"
        assert ds.time.attrs["standard_name"] == "time" and ds.time.attrs["axis"] == "T"
    with xr.open_dataset(late, engine="netcdf4") as ds:
        assert ds.attrs["sodeda_data_status"].startswith("preliminary ERA5T"), ds.attrs
        assert ds.attrs["sodeda_era5t_hours"] == \
            "2023-01-02T00:00 to 2023-01-02T01:00 (2 time steps)"
        assert ds.attrs["sodeda_store_last_updated"] == OLD
        assert ds.attrs["sodeda_store_valid_time_stop"] == "2023-01-01"
        old_late = ds["2m_temperature"].values.copy()
    provenance = json.loads(xattr(late, "user.sodeda.provenance"))
    assert provenance["status"] == "provisional" and provenance["era5t_hours"]["count"] == 2
    assert json.loads(xattr(final, "user.sodeda.provenance"))["status"] == "final"
    listing = Runner(store, tmp_path / "cache", tmp_path)("list", "--deskriptors", desk).stdout
    assert [line for line in listing.splitlines() if "provisional" in line] == \
        [line for line in listing.splitlines() if line.startswith("late.nc")], listing
    final_identity = xattr(final, "user.sodeda.identity")
    late_identity = xattr(late, "user.sodeda.identity")
    final_bytes = final.read_bytes()
    runs = m.stats()["flow_runs"]

    # The store is updated: the mount notices within its check interval.
    set_version(replica, store, NEW)
    wait_for(lambda: xattr(late, "user.sodeda.identity") != late_identity,
             "the provisional file became a new file")
    assert xattr(final, "user.sodeda.identity") == final_identity
    assert xattr(final, "user.sodeda.cached") == "yes"
    assert xattr(late, "user.sodeda.cached") == "no"
    assert final.read_bytes() == final_bytes
    assert m.stats()["flow_runs"] == runs, "the final file came from the cache"
    with xr.open_dataset(late, engine="netcdf4") as ds:
        assert ds.attrs["sodeda_store_last_updated"] == NEW
        assert (ds["2m_temperature"].values == old_late).all()  # same replica data
    assert m.stats()["flow_runs"] == runs + 1, "only the provisional file was built again"
    assert os.stat(late).st_mtime == 1675220400  # the store's new last_updated


def test_times_come_from_the_data_and_rsync_copies_nothing_after_a_remount(
        replica, mount_factory, tmp_path):
    store = store_view(replica, tmp_path / "store", OLD)
    desk = write_deskriptors(tmp_path / "d.jsonl", FINAL, LATE)
    out = tmp_path / "copy"
    m = mount_factory(desk, store, name="mnt")
    st = os.stat(m.mountpoint / "final.nc")
    assert st.st_mtime == 1672549200 and st.st_ctime == 1672549200  # 2023-01-01T05:00Z
    assert os.stat(m.mountpoint / "late.nc").st_mtime == 1672884000  # OLD, after the data
    first = subprocess.run(["rsync", "-a", "--stats", f"{m.mountpoint}/", f"{out}/"],
                           capture_output=True, text=True, check=True).stdout
    assert "Number of regular files transferred: 2" in first, first
    m.stop()
    m = mount_factory(desk, store, name="mnt2")
    again = subprocess.run(["rsync", "-a", "--stats", f"{m.mountpoint}/", f"{out}/"],
                           capture_output=True, text=True, check=True).stdout
    assert "Number of regular files transferred: 0" in again, again
    assert os.stat(out / "final.nc").st_mtime == 1672549200


def test_a_pinned_dataset_keeps_its_files_and_refuses_a_provisional_one_it_does_not_have(
        replica, mount_factory, tmp_path):
    store = store_view(replica, tmp_path / "store", OLD)
    desk = write_deskriptors(tmp_path / "d.jsonl", FINAL, LATE, LATER)
    m = mount_factory(desk, store, name="mnt")
    late_bytes = (m.mountpoint / "late.nc").read_bytes()
    late_identity = xattr(m.mountpoint / "late.nc", "user.sodeda.identity")
    m.stop()

    set_version(replica, store, NEW)
    m = mount_factory(desk, store, name="pinned", extra=["--pin", OLD])
    # Planned as of the pinned version: the same file, from the cache.
    assert xattr(m.mountpoint / "late.nc", "user.sodeda.identity") == late_identity
    assert (m.mountpoint / "late.nc").read_bytes() == late_bytes
    # A final file builds as always.
    assert (m.mountpoint / "final.nc").stat().st_size > 0
    (m.mountpoint / "final.nc").read_bytes()
    # A provisional file the pinned version never had cannot be made now.
    try:
        (m.mountpoint / "later.nc").read_bytes()
        raise AssertionError("read a provisional file the pinned version did not have")
    except OSError as e:
        assert e.errno == 5, e  # EIO
    error = xattr(m.mountpoint / "later.nc", "user.sodeda.error")
    assert "pinned" in error and NEW in error, error


def reword_long_name(root, variable, long_name, last_updated):
    """The store after an update that rewords `variable`'s long_name: its own .zattrs and the
    consolidated .zmetadata say it, and last_updated moves (the file stays final)."""
    real = root / variable
    if real.is_symlink():
        source = real.resolve()
        real.unlink()
        real.mkdir()
        for entry in source.iterdir():
            (real / entry.name).symlink_to(entry)
    zattrs = json.loads((real / ".zattrs").read_text())
    zattrs["long_name"] = long_name
    (real / ".zattrs").unlink()
    (real / ".zattrs").write_text(json.dumps(zattrs))
    meta = json.loads((root / ".zmetadata").read_text())
    meta["metadata"][f"{variable}/.zattrs"]["long_name"] = long_name
    meta["metadata"][".zattrs"]["last_updated"] = last_updated
    tmp = root / ".zmetadata.tmp"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, root / ".zmetadata")


def test_a_reworded_attribute_makes_a_new_file_not_the_cached_one(replica, tmp_path):
    """What a file copies from the store's attributes is part of its identity: after the store
    rewords a variable's long_name, the same deskriptor (final hours) is a new file, built with
    the new words, never the cached bytes of the old ones."""
    store = store_view(replica, tmp_path / "store", OLD)
    desk = write_deskriptors(tmp_path / "d.jsonl", FINAL)
    run = Runner(store, tmp_path / "cache", tmp_path)
    [before] = run.list(desk)
    run("get", "--deskriptors", desk, "--line", 1, "-o", tmp_path / "before.nc")
    with xr.open_dataset(tmp_path / "before.nc") as ds:
        assert ds["2m_temperature"].attrs["long_name"] == "2 metre temperature"

    reword_long_name(store, "2m_temperature", "2 metre Temperature", NEW)
    [after] = run.list(desk)
    assert after["identity"] != before["identity"], (before, after)
    assert after["name"] == before["name"]
    run("get", "--deskriptors", desk, "--line", 1, "-o", tmp_path / "after.nc")
    with xr.open_dataset(tmp_path / "after.nc") as ds:
        assert ds["2m_temperature"].attrs["long_name"] == "2 metre Temperature"
    # The same data, from the same cache: the old entry stays under its own identity.
    with xr.open_dataset(tmp_path / "before.nc") as a, xr.open_dataset(tmp_path / "after.nc") as b:
        assert (a["2m_temperature"].values == b["2m_temperature"].values).all()
    entries = {p.stem for p in (tmp_path / "cache").rglob("*.nc")}
    assert {before["identity"], after["identity"]} <= entries, entries
