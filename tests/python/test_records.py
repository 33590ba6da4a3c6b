"""Time is the record (UNLIMITED) dimension of the classic files, as in CDS's files, so the
tools built around records work on them: NCO's `ncrcat` joins consecutive files, `ncra`
averages over their records, `cdo mergetime` merges them (docs/FILES.md). Files are built
with `sodeda-era5 get` and the tools' outputs checked against the inputs with xarray."""

import json
import subprocess

import numpy as np
import pytest
import xarray as xr

BOX = {"latitude": {"start": 48, "end": 46}, "longitude": {"start": 7, "end": 10}}
VARIABLES = ["temperature", "2m_temperature"]
LEVELS = [500, 850]


def deskriptor(time):
    return json.dumps({"time": time, **BOX, "level": LEVELS, "variable": VARIABLES})


@pytest.fixture(scope="module")
def files(replica, tmp_path_factory):
    """Two consecutive one-hour files (11:00, 12:00) and a three-hour one (13:00 to 15:00)."""
    from conftest import Runner
    base = tmp_path_factory.mktemp("records")
    run = Runner(replica, base / "cache", base)
    out = {}
    for name, time in [("a", "2023-01-01T11:00"), ("b", "2023-01-01T12:00"),
                       ("c", {"start": "2023-01-01T13:00", "end": "2023-01-01T15:00"})]:
        out[name] = base / f"{name}.nc"
        run("get", "--deskriptor", deskriptor(time), "-o", out[name])
    out["dir"] = base
    return out


def tool(*argv):
    p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"{argv}\nexit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout


def test_ncdump_shows_time_unlimited_with_its_records(files):
    for name, n in [("a", 1), ("b", 1), ("c", 3)]:
        header = tool("ncdump", "-h", files[name])
        assert f"time = UNLIMITED ; // ({n} currently)" in header, header
        assert "level = 2 ;" in header and "latitude = 9 ;" in header, header


def joined(*names, files):
    """The inputs concatenated along time with xarray."""
    parts = [xr.open_dataset(files[n]).load() for n in names]
    return xr.concat(parts, dim="time", data_vars="minimal", coords="minimal",
                     compat="override")


@pytest.mark.parametrize("inputs", [("a", "b"), ("a", "b", "c")])
def test_ncrcat_joins_consecutive_files(files, inputs):
    out = files["dir"] / f"ncrcat_{''.join(inputs)}.nc"
    tool("ncrcat", "-O", *[files[n] for n in inputs], out)
    want = joined(*inputs, files=files)
    with xr.open_dataset(out) as got:
        assert got.sizes["time"] == want.sizes["time"] == 2 + 3 * (len(inputs) == 3)
        np.testing.assert_array_equal(got["time"].values, want["time"].values)
        for v in VARIABLES:
            assert got[v].dims == want[v].dims, v
            np.testing.assert_array_equal(got[v].values, want[v].values, err_msg=v)
        for c in ("level", "latitude", "longitude"):
            np.testing.assert_array_equal(got[c].values, want[c].values, err_msg=c)
    assert "time = UNLIMITED ; // (" in tool("ncdump", "-h", out)


def test_ncra_averages_over_the_records(files):
    out = files["dir"] / "ncra.nc"
    tool("ncra", "-O", files["a"], files["b"], files["c"], out)
    want = joined("a", "b", "c", files=files)
    with xr.open_dataset(out) as got:
        assert got.sizes["time"] == 1
        for v in VARIABLES:
            mean = want[v].values.astype(np.float64).mean(axis=0)
            np.testing.assert_allclose(got[v].values[0], mean, rtol=1e-6, err_msg=v)


def test_cdo_mergetime_merges_consecutive_files(files):
    out = files["dir"] / "mergetime.nc"
    tool("cdo", "-s", "mergetime", files["a"], files["b"], out)
    want = joined("a", "b", files=files)
    with xr.open_dataset(out) as got:
        np.testing.assert_array_equal(got["time"].values, want["time"].values)
        for v in VARIABLES:
            np.testing.assert_array_equal(
                got[v].transpose(*want[v].dims).values, want[v].values, err_msg=v)
