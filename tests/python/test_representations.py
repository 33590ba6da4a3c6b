"""Representations: `resample` (time statistics) and `points` (series at stations), checked
against xarray on the replica — `resample(time=...).mean()/.max()/...` and
`.sel(method="nearest")` per station — through `get`, the mount, preload and the S3 tier,
with the netCDF4 and h5netcdf engines, ncdump and cdo reading the files (docs/DESKRIPTORS.md,
"Representations")."""

import json
import os
import subprocess

import numpy as np
import pytest
import xarray as xr

from conftest import Runner, chunk_gets

BOX = {"latitude": {"start": 48, "end": 45}, "longitude": {"start": 6, "end": 10}}
TWO_DAYS = {"start": "2023-01-01T05", "end": "2023-01-02T20"}
STATIONS = [
    {"name": "zurich", "latitude": 47.37, "longitude": 8.54},
    {"name": "new york", "latitude": 40.71, "longitude": -74.01},
    {"name": "tie", "latitude": 47.125, "longitude": 8.125},
    {"name": "Zürich-Kloten", "latitude": 47.46, "longitude": 8.55},
    {"name": "seam", "latitude": -33.9, "longitude": 359.9},
]
# xarray's resample spelling of each period (`1M` is calendar months labelled at their start).
XR_PERIOD = {"1D": "1D", "6h": "6h", "7D": "7D", "1M": "MS", "3h": "3h"}

CASES = {
    "daily_mean": {"time": TWO_DAYS, **BOX, "variable": "2m_temperature",
                   "resample": {"time": "1D", "how": "mean"}},
    "daily_max": {"time": TWO_DAYS, **BOX, "variable": "2m_temperature",
                  "resample": {"time": "1D", "how": "max"}},
    "six_hour_sum": {"time": TWO_DAYS, **BOX, "variable": "2m_temperature",
                     "resample": {"time": "6h", "how": "sum"}},
    "monthly_min": {"time": TWO_DAYS, **BOX, "variable": "2m_temperature",
                    "resample": {"time": "1M", "how": "min"}},
    "weekly_mean": {"time": TWO_DAYS, **BOX, "variable": "2m_temperature",
                    "resample": {"time": "7D"}},
    # Every 7th hour: periods with one hour, and 3-hour periods with none (NaN, as xarray).
    "gaps": {"time": {"start": "2023-01-01", "end": "2023-01-02", "step": 7}, **BOX,
             "variable": "2m_temperature", "resample": {"time": "3h", "how": "sum"}},
    "levels": {"time": {"start": "2023-01-01T10", "end": "2023-01-01T13"}, **BOX,
               "level": [500, 850], "variable": ["temperature", "2m_temperature"],
               "resample": {"time": "6h", "how": "mean"}},
    # The globe: 4.15 MB an hour, so a day spans three batches of 32 MiB of hours
    # (reduce::BATCH_BYTES); each period's running statistic carries across them.
    "global_daily_mean": {"time": TWO_DAYS, "variable": "2m_temperature",
                          "resample": {"time": "1D", "how": "mean"}},
    "stations": {"time": TWO_DAYS, "points": STATIONS, "variable": "2m_temperature"},
    "station_levels_daily_max": {"time": {"start": "2023-01-01T10", "end": "2023-01-01T13"},
                                 "points": STATIONS, "level": [850, 500],
                                 "variable": ["temperature", "2m_temperature"],
                                 "resample": {"time": "1D", "how": "max"}},
}


def lines(names):
    return "".join(json.dumps({"name": n, **CASES[n]}) + "\n" for n in names)


@pytest.fixture(scope="module")
def source(replica):
    return xr.open_zarr(replica, chunks=None)


def reference(source, d):
    """What xarray gives for deskriptor `d`."""
    variables = [d["variable"]] if isinstance(d["variable"], str) else d["variable"]
    ds = source[variables]
    t = d["time"]
    ds = ds.sel(time=slice(t["start"], t["end"]))
    if "step" in t:
        ds = ds.isel(time=slice(None, None, t["step"]))
    if "level" in d:
        ds = ds.sel(level=d["level"])
    if "latitude" in d:
        ds = ds.sel(latitude=slice(d["latitude"]["start"], d["latitude"]["end"]),
                    longitude=slice(d["longitude"]["start"], d["longitude"]["end"]))
    if "points" in d:
        # One station at a time, as a user would; the seam station is taken round the circle
        # (xarray's nearest does not wrap: 359.9 would give 359.75, 0 is nearer).
        per = []
        for p in d["points"]:
            lon = p["longitude"] % 360
            if p["name"] == "seam":
                lon = 0.0
            per.append(ds.sel(latitude=p["latitude"], longitude=lon, method="nearest"))
        ds = xr.concat(per, dim="station")
    if "resample" in d:
        r = d["resample"]
        grouped = ds.resample(time=XR_PERIOD[r["time"]])
        ds = getattr(grouped, r.get("how", "mean"))()
    return ds


def check(got, want):
    for v in want.data_vars:
        g = got[v].transpose(*[d for d in got[v].dims]).values
        w = want[v].transpose(*[d if d != "station" else "station" for d in want[v].dims])
        # The file's order: time, [level,] station or latitude, longitude.
        order = [d for d in ("time", "level", "station", "latitude", "longitude") if d in w.dims]
        w = w.transpose(*order).values
        assert g.shape == w.shape, (v, g.shape, w.shape)
        # Bit for bit, NaN where xarray has NaN: sums and means are float32 sums over the
        # hours in order, as xarray over numpy takes them.
        np.testing.assert_array_equal(g, w, err_msg=v)
    np.testing.assert_array_equal(got.time.values, want.time.values)


@pytest.fixture(scope="module")
def built(replica, tmp_path_factory):
    """Every case through `get`, in CDF-2 and NetCDF-4."""
    base = tmp_path_factory.mktemp("representations")
    run = Runner(replica, base / "cache", base)
    out = {}
    for name, d in CASES.items():
        for fmt in ("cdf2", "netcdf4"):
            path = base / f"{name}.{fmt}.nc"
            run("get", "--format", fmt, "--deskriptor", json.dumps(d), "-o", path)
            out[name, fmt] = path
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_files_equal_xarray(name, built, source):
    """CDF-2 read with netCDF4, NetCDF-4 with h5netcdf: both equal xarray's resample or
    nearest selection on the store."""
    d = CASES[name]
    want = reference(source, d)
    for fmt, engine in [("cdf2", "netcdf4"), ("netcdf4", "h5netcdf")]:
        with xr.open_dataset(built[name, fmt], engine=engine) as got:
            check(got.load(), want)


def test_resampled_files_carry_cf_bounds_and_cell_methods(built, source):
    with xr.open_dataset(built["daily_mean", "cdf2"], decode_times=False) as ds:
        assert ds["2m_temperature"].attrs["cell_methods"] == "time: mean"
        assert ds.time.attrs["bounds"] == "time_bnds"
        bounds = ds.time_bnds.values
        assert bounds.shape == (2, 2)
        # Days: [label, label + 24 h) in hours since 1900.
        np.testing.assert_array_equal(bounds[:, 0], ds.time.values)
        np.testing.assert_array_equal(bounds[:, 1] - bounds[:, 0], [24, 24])
        note = ds.attrs["sodeda_resample"]
        assert "2 of 2 periods hold only the selected hours" in note, note
        assert "2023-01-01T00:00 (19 of 24 hours)" in note, note
    with xr.open_dataset(built["daily_max", "cdf2"]) as ds:
        assert ds["2m_temperature"].attrs["cell_methods"] == "time: maximum"
    with xr.open_dataset(built["gaps", "cdf2"]) as ds:
        # Periods without a selected hour are there, as NaN (as xarray's).
        values = ds["2m_temperature"].values[:, 0, 0]
        assert np.isnan(values).any() and not np.isnan(values).all()


def test_station_files_are_cf_time_series(built):
    with xr.open_dataset(built["stations", "cdf2"]) as ds:
        assert ds.attrs["featureType"] == "timeSeries"
        assert ds["2m_temperature"].dims == ("time", "station")
        names = [n.decode() if isinstance(n, bytes) else n for n in ds.station_name.values]
        assert names == [p["name"] for p in STATIONS]
        assert ds.station_name.attrs["cf_role"] == "timeseries_id"
        np.testing.assert_array_equal(ds.station_latitude.values,
                                      [p["latitude"] for p in STATIONS])
        np.testing.assert_array_equal(ds.station_longitude.values,
                                      [p["longitude"] for p in STATIONS])
        # The grid points used: nearest, ties to the larger value (xarray's), longitudes in
        # -180..180 as a station gave one negative; the seam station round the circle.
        np.testing.assert_array_equal(ds.latitude.values, [47.25, 40.75, 47.25, 47.5, -34.0])
        np.testing.assert_array_equal(ds.longitude.values, [8.5, -74.0, 8.25, 8.5, 0.0])
    header = subprocess.run(["ncdump", "-h", built["stations", "cdf2"]], capture_output=True,
                            text=True, check=True).stdout
    assert "char station_name(station, name_strlen)" in header, header
    assert "float \\2m_temperature(time, station)" in header, header


def test_cdo_reads_the_time_statistics(built):
    p = subprocess.run(["cdo", "-s", "showtimestamp", built["daily_mean", "cdf2"]],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["2023-01-01T00:00:00", "2023-01-02T00:00:00"], p.stdout


def test_list_sizes_are_exact_and_the_mount_serves_the_files_of_get(
        replica, built, mount_factory, tmp_path):
    """`ls -l` shows the true sizes before any data; each file through the mount is the file
    of `get`, byte for byte, and xarray reads it."""
    deskriptors = tmp_path / "representations.jsonl"
    deskriptors.write_text(lines(CASES))
    run = Runner(replica, tmp_path / "cache-list", tmp_path)
    listing = {e["name"]: e for e in run.list(deskriptors)}
    assert len(listing) == len(CASES)
    m = mount_factory(deskriptors, replica)
    for name in CASES:
        path = m.mountpoint / f"{name}.nc"
        assert os.stat(path).st_size == listing[f"{name}.nc"]["size"]
    assert m.stats()["flow_runs"] == 0, "sizes come from the plan"
    for name in CASES:
        data = (m.mountpoint / f"{name}.nc").read_bytes()
        assert data == built[name, "cdf2"].read_bytes(), name
        assert len(data) == listing[f"{name}.nc"]["size"]
    with xr.open_dataset(m.mountpoint / "station_levels_daily_max.nc") as ds:
        assert ds.temperature.dims == ("time", "level", "station")


def test_validate_names_the_field_the_value_and_what_is_allowed(run, tmp_path):
    bad = tmp_path / "bad.jsonl"
    good = {"time": TWO_DAYS, **BOX, "variable": "2m_temperature"}
    bad.write_text("\n".join(json.dumps(d) for d in [
        {**good, "resample": {"time": "2W"}},
        {**good, "resample": {"time": "1D", "how": "median"}},
        {"time": TWO_DAYS, "variable": "2m_temperature",
         "points": [{"name": "a", "latitude": 95, "longitude": 1}]},
        {**good, "points": STATIONS[:1]},
        {"time": ["2023-01-01T06", "2023-01-01T05"], **BOX, "variable": "2m_temperature",
         "resample": {"time": "1D"}},
    ]) + "\n")
    p = run("validate", "--deskriptors", bad, check=False)
    assert p.returncode == 1
    out = p.stdout + p.stderr
    for needle in [
        'line 1, field `resample.time`, value "2W": not a period; allowed: a whole number of '
        "hours or days (`6h`, `1D`, `7D`) or `1M` (calendar months)",
        'line 2, field `resample.how`, value "median": unknown statistic; allowed: mean, min, '
        "max, sum",
        "line 3, field `points[0].latitude`, value 95: out of range; allowed: -90..90",
        "line 4, field `points`: stations are given in place of latitude and longitude",
        "line 5, field `time`",
        "`resample` needs the hours in increasing order",
    ]:
        assert needle in out, f"{needle!r} not in\n{out}"


def test_preload_and_the_s3_tier_serve_them_like_any_file(http_source, s3, tmp_path):
    """preload builds them; another cache gets them from S3 without a chunk request."""
    deskriptors = tmp_path / "r.jsonl"
    deskriptors.write_text(lines(["daily_mean", "station_levels_daily_max"]))
    env = {"S3_BUCKET_NAME": s3.bucket, "S3_ENDPOINT_URL": s3.url,
           "AWS_ACCESS_KEY_ID": s3.key_id, "AWS_SECRET_ACCESS_KEY": s3.secret,
           "AWS_REGION": "us-east-1"}
    a = Runner(http_source.url, tmp_path / "cache-a", tmp_path)
    p = a("preload", "--deskriptors", deskriptors, env=env)
    assert "2 built" in p.stdout, p.stdout
    assert len(s3.objects()) == 2
    n = len(http_source.requests)
    b = Runner(http_source.url, tmp_path / "cache-b", tmp_path)
    for name in ["daily_mean", "station_levels_daily_max"]:
        b("get", "--deskriptors", deskriptors, "--line",
          1 if name == "daily_mean" else 2, "-o", tmp_path / f"{name}.nc", env=env)
        a("get", "--deskriptors", deskriptors, "--line",
          1 if name == "daily_mean" else 2, "-o", tmp_path / f"{name}.a.nc")
        assert (tmp_path / f"{name}.nc").read_bytes() == (tmp_path / f"{name}.a.nc").read_bytes()
    assert chunk_gets(http_source.requests[n:]) == []


def test_the_representation_reads_the_chunks_of_the_plain_selection(http_source, tmp_path):
    """A daily mean reads the chunks of the same hours without `resample`, and stations
    those of their hours; each chunk once per request path (bytes: `scripts/bench --series`)."""
    def chunks(d, cache):
        run = Runner(http_source.url, tmp_path / cache, tmp_path)
        n = len(http_source.requests)
        run("get", "--deskriptor", json.dumps(d), "-o", tmp_path / "x.nc")
        return set(chunk_gets(http_source.requests[n:]))

    plain = {k: v for k, v in CASES["daily_mean"].items() if k != "resample"}
    got = chunks(CASES["daily_mean"], "a")
    assert got == chunks(plain, "b")
    assert len(got) == 40, "the 40 selected hours of one variable"
    stations = chunks(CASES["stations"], "c")
    assert stations == got


def test_the_dashboard_maps_a_statistic_and_tabulates_stations(replica, tmp_path):
    """A resampled file previews as a map per period; a station file as a table of the
    step's values at each station, equal to the file's."""
    import html
    import re

    from conftest import Dashboard
    deskriptors = tmp_path / "r.jsonl"
    deskriptors.write_text(lines(["daily_max", "stations"]))
    d = Dashboard(replica, tmp_path / "cache", deskriptors, tmp_path / "dashboard.log")
    try:
        status, body, _ = d.get("/?file=daily_max.nc")
        page = body.decode()
        assert status == 200 and 'id="map"' in page, page
        assert "2 time steps" in page and "2023-01-01T00:00 UTC" in page, page
        status, png, _ = d.get("/map.png?file=daily_max.nc&t=1")
        assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
        status, body, _ = d.get("/?file=stations.nc&t=3")
        page = html.unescape(body.decode())
        assert status == 200 and 'id="stations"' in page and 'id="map"' not in page, page
        rows = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)"
                          r"</td></tr>", page)
        assert [r[0] for r in rows] == [p["name"] for p in STATIONS], rows
        with xr.open_dataset(d_file(replica, tmp_path, "stations")) as ds:
            want = ds["2m_temperature"].values[3]
        assert [float(r[3]) for r in rows] == pytest.approx(want.tolist(), abs=5e-4)
        assert rows[1][2] == "-74", rows[1]
    finally:
        d.stop()


def d_file(replica, tmp_path, name):
    path = tmp_path / f"{name}.get.nc"
    Runner(replica, tmp_path / "cache-get", tmp_path)(
        "get", "--deskriptor", json.dumps(CASES[name]), "-o", path)
    return path
