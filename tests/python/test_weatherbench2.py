"""The prototype's second subset: WeatherBench2's ERA5 layout (6-hourly time in chunks of four
steps, 13 levels, latitude ascending, dimension order (time, level, longitude, latitude), Blosc
zstd with bit-shuffle), on a replica written by `scripts/make_replica.py --profile
weatherbench2`. Files through `get` and through the mount equal xarray's `.sel` on the same
store; `--source weatherbench2` and `--source arco-era5` name the public stores."""

import json
import subprocess
import sys

import pytest
import xarray as xr

from conftest import ROOT, Runner
from reference import open_source, reference
from test_flow import compare

DESKRIPTORS = [
    # Crosses a time chunk (four steps a day); latitude given low to high, as stored.
    {"name": "alps", "time": {"start": "2020-01-01T12", "end": "2020-01-02T06"},
     "latitude": {"start": 45, "end": 48}, "longitude": {"start": 6, "end": 12},
     "variable": "2m_temperature"},
    # Two levels in reverse order and a surface variable; latitude given high to low.
    {"name": "levels", "time": "2020-01-02T06:00", "level": [850, 500],
     "latitude": {"start": 48, "end": 45}, "longitude": {"start": 6, "end": 12},
     "variable": ["temperature", "2m_temperature"]},
    # The whole globe at one step (whole chunks rather than blocks).
    {"name": "globe", "time": "2020-01-01T18:00", "variable": "2m_temperature"},
    # Across 0° longitude, in -180..180.
    {"name": "seam", "time": {"start": "2020-01-01T00", "end": "2020-01-01T06"},
     "latitude": {"start": 40, "end": 60}, "longitude": {"start": -10, "end": 10},
     "variable": "temperature", "level": 500},
    # A day, by its date: its four steps.
    {"name": "day", "time": "2020-01-02", "latitude": 0, "longitude": 90,
     "variable": "2m_temperature"},
]


@pytest.fixture(scope="module")
def wb2(tmp_path_factory):
    out = tmp_path_factory.mktemp("wb2") / "store"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_replica.py"), str(out),
                    "--profile", "weatherbench2"], check=True, timeout=120)
    return out


@pytest.fixture(scope="module")
def wb2_ds(wb2):
    return open_source(wb2)


def write(path):
    path.write_text("".join(json.dumps(d) + "\n" for d in DESKRIPTORS))
    return path


def test_files_through_get_equal_xarray_on_the_store(wb2, wb2_ds, tmp_path):
    desk = write(tmp_path / "d.jsonl")
    run = Runner(wb2, tmp_path / "cache", tmp_path)
    listing = run.list(desk)
    assert [e["name"] for e in listing] == [d["name"] + ".nc" for d in DESKRIPTORS]
    for i, d in enumerate(DESKRIPTORS, start=1):
        out = tmp_path / f"{d['name']}.nc"
        run("get", "--deskriptors", desk, "--line", i, "-o", out)
        assert out.stat().st_size == listing[i - 1]["size"]
        with xr.open_dataset(out, engine="netcdf4") as ours:
            compare(ours, reference(wb2_ds, d), d["name"])
            assert ours.attrs["sodeda_data_status"].startswith("unknown")


def test_files_through_the_mount_equal_xarray_on_the_store(wb2, wb2_ds, mount_factory,
                                                          tmp_path):
    desk = write(tmp_path / "d.jsonl")
    m = mount_factory(desk, wb2)
    for d in DESKRIPTORS:
        with xr.open_dataset(m.mountpoint / f"{d['name']}.nc", engine="netcdf4") as ours:
            compare(ours, reference(wb2_ds, d), d["name"])


def test_the_public_stores_have_names(tmp_path):
    """`--source weatherbench2` and `--source arco-era5` open the public stores (here, with no
    network, the error names the store's URL)."""
    run = Runner("weatherbench2", tmp_path / "cache", tmp_path)
    for name, url in [
            ("weatherbench2", "gs://weatherbench2/datasets/era5/"
                              "1959-2023_01_10-wb13-6h-1440x721_with_derived_variables.zarr"),
            ("arco-era5", "gs://gcp-public-data-arco-era5/ar/"
                          "full_37-1h-0p25deg-chunk-1.zarr-v3")]:
        p = run("scope", "--source", name, "--source-retries", "0", "--source-timeout", "5",
                check=False, timeout=60)
        assert p.returncode != 0
        assert url in p.stderr, p.stderr
