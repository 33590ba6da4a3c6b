"""The flow end to end: deskriptors -> NetCDF files, checked with real readers.

Every deskriptor of tests/data/test-set.jsonl (the two prototype lines plus the cases of the
flow issue) is built with `sodeda-era5 get`, then:
- its size equals the size `list` predicted before any data was read;
- xarray (netCDF4 and scipy engines for CDF-2, h5netcdf for NetCDF-4) gives exactly the values,
  coordinates and attributes that xarray gives on the replica itself;
- ncdump and cdo read it;
- building it again gives identical bytes.
"""

import hashlib
import json
import shutil
import subprocess

import numpy as np
import pytest
import xarray as xr

from conftest import clean_env, DATA, ROOT, read_lines
from reference import open_source, reference

TEST_SET = DATA / "test-set.jsonl"
CF_AXES = {
    "time": {"standard_name": "time", "axis": "T"},
    "latitude": {"standard_name": "latitude", "units": "degrees_north", "axis": "Y"},
    "longitude": {"standard_name": "longitude", "units": "degrees_east", "axis": "X"},
    "level": {"standard_name": "air_pressure", "units": "hPa", "positive": "down", "axis": "Z"},
}
# The store's units that UDUNITS cannot parse, as the files write them.
UDUNITS = {"Hectopascal(hPa)": "hPa"}
LINES = read_lines(TEST_SET)


@pytest.fixture(scope="module")
def source_ds(replica):
    return open_source(replica)


@pytest.fixture(scope="module")
def built(replica, tmp_path_factory):
    """Builds every test deskriptor once in both formats; returns {format: (listing, dir)}."""
    from conftest import Runner
    out = {}
    for fmt in ("cdf2", "netcdf4"):
        base = tmp_path_factory.mktemp(fmt)
        run = Runner(replica, base / "cache", base)
        listing = run.list(TEST_SET, "--format", fmt)
        assert len(listing) == len(LINES), listing
        for entry in listing:
            run("get", "--deskriptors", TEST_SET, "--line", entry["line"], "--format", fmt,
                "-o", base / entry["name"])
        out[fmt] = (listing, base)
    return out


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("fmt", ["cdf2", "netcdf4"])
def test_predicted_size_equals_bytes_written(built, fmt):
    listing, base = built[fmt]
    for entry in listing:
        assert (base / entry["name"]).stat().st_size == entry["size"], entry["name"]


def compare(ours, ref, name):
    for var, expected in ref.items():
        got = ours[var]
        assert got.dims == expected.dims, (name, var)
        assert got.dtype == np.float32, (name, var)
        np.testing.assert_array_equal(got.values, expected.values, err_msg=f"{name}:{var}")
        assert dict(got.attrs) == dict(expected.attrs), (name, var)
        for dim in expected.dims:
            np.testing.assert_array_equal(got[dim].values, expected[dim].values,
                                          err_msg=f"{name}:{var}:{dim}")
            # The source's attributes, plus the CF axis attributes the file adds where the
            # source does not say them (docs/FILES.md).
            want = {**CF_AXES.get(dim, {}), **dict(expected[dim].attrs)}
            # Units in their UDUNITS spelling (src/layout.rs, UNIT_SPELLINGS).
            want["units"] = UDUNITS.get(want.get("units"), want.get("units"))
            if want["units"] is None:
                del want["units"]
            if dim == "time":
                want.pop("units", None)  # decoded by xarray, in .encoding
            assert dict(got[dim].attrs) == want, (name, var, dim, dict(got[dim].attrs))


@pytest.mark.parametrize("fmt,engine", [("cdf2", "netcdf4"), ("cdf2", "scipy"),
                                        ("netcdf4", "netcdf4"), ("netcdf4", "h5netcdf")])
def test_values_coordinates_attributes_match_xarray_on_the_source(built, source_ds, fmt, engine):
    listing, base = built[fmt]
    for entry, line in zip(listing, LINES):
        deskriptor = json.loads(line)
        with xr.open_dataset(base / entry["name"], engine=engine) as ours:
            compare(ours, reference(source_ds, deskriptor), entry["name"])
            assert ours.attrs["deskriptor"] == entry["deskriptor"]


def test_time_decodes_to_the_selected_instants(built):
    listing, base = built["cdf2"]
    by_name = {e["name"]: e for e in listing}
    with xr.open_dataset(base / "multi_hour.nc") as ds:
        assert list(ds.time.values) == list(
            np.arange("2023-01-01T00", "2023-01-01T06", dtype="datetime64[h]").astype(
                "datetime64[ns]"))
    with xr.open_dataset(base / "crossing_zero.nc") as ds:
        lon = ds.longitude.values
        assert lon[0] == -3 and lon[-1] == 3 and np.all(np.diff(lon) > 0)
    with xr.open_dataset(base / "absent_chunks.nc") as ds:
        assert np.isnan(ds["2m_temperature"].values).all()
    assert "whole_globe.nc" in by_name


def test_values_differ_cell_by_cell_so_off_by_one_shows(built):
    _, base = built["cdf2"]
    with xr.open_dataset(base / "multi_hour.nc") as ds:
        v = ds["2m_temperature"].values
        assert np.all(np.diff(v, axis=1) != 0) and np.all(np.diff(v, axis=2) != 0)
        assert np.all(np.diff(v, axis=0) != 0)


def test_default_names_are_readable_and_deterministic(built):
    listing, base = built["cdf2"]
    unnamed = [e["name"] for e in listing if not json.loads(LINES[e["line"] - 1]).get("name")]
    assert unnamed[0].startswith("2m_temperature_20230101T11_") and unnamed[0].endswith(".nc")
    assert unnamed[1].startswith("2m_temperature_20230101T12_")
    assert unnamed[2].startswith("surface_pressure_20230102T00_20230102T23_")
    # 64 bits of the identity of the selection (32 gave collisions in a million files): the
    # file's identity without the store's attributes and version, so that a file keeps its
    # name when the store changes them (docs/DESKRIPTORS.md).
    for e in listing:
        if not json.loads(LINES[e["line"] - 1]).get("name"):
            with xr.open_dataset(base / e["name"]) as ds:
                version, url = ds.attrs["sodeda_era5_format_version"], ds.attrs["source_url"]
            text = (f"sodeda-era5\nversion {version}\nformat cdf2\nsource {url}\n"
                    f"selection {e['deskriptor']}\n")
            selection = hashlib.sha256(text.encode()).hexdigest()
            assert e["name"].rsplit("_", 1)[1] == selection[:16] + ".nc", e


@pytest.mark.parametrize("fmt", ["cdf2", "netcdf4"])
def test_ncdump_and_cdo_read_every_file(built, fmt):
    listing, base = built[fmt]
    for entry in listing:
        path = base / entry["name"]
        head = subprocess.run(["ncdump", "-h", path], capture_output=True, text=True)
        assert head.returncode == 0, head.stderr
        assert "deskriptor" in head.stdout
        kind = subprocess.run(["ncdump", "-k", path], capture_output=True, text=True).stdout
        assert kind.strip() == ("64-bit offset" if fmt == "cdf2" else "netCDF-4"), kind
        info = subprocess.run(["cdo", "-s", "sinfon", path], capture_output=True, text=True)
        assert info.returncode == 0, (entry["name"], info.stderr)
        assert "Grid coordinates" in info.stdout or "points=" in info.stdout, info.stdout


def test_same_deskriptor_gives_identical_bytes(replica, tmp_path):
    from conftest import Runner
    digests = set()
    for i in range(2):
        run = Runner(replica, tmp_path / f"cache{i}", tmp_path)
        run("get", "--deskriptors", TEST_SET, "--line", 4, "-o", tmp_path / f"f{i}.nc")
        digests.add(sha(tmp_path / f"f{i}.nc"))
    assert len(digests) == 1


def test_spacing_and_key_order_share_one_identity(run, tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_text(LINES[0] + "\n")
    b = tmp_path / "b.jsonl"
    b.write_text(json.dumps(dict(reversed(list(json.loads(LINES[0]).items())))) + "\n")
    assert run.list(a)[0]["identity"] == run.list(b)[0]["identity"]


def test_a_cache_hit_reads_no_chunk(run, tmp_path):
    first = run("get", "--deskriptors", TEST_SET, "--line", 3, "-o", tmp_path / "x.nc",
                "--stats")
    assert "built from the source" in first.stderr
    assert "source: 0 requests" not in first.stderr
    second = run("get", "--deskriptors", TEST_SET, "--line", 3, "-o", tmp_path / "y.nc",
                 "--stats")
    assert "from cache" in second.stderr
    assert "source: 0 requests, 0 bytes for data" in second.stderr
    assert (tmp_path / "x.nc").read_bytes() == (tmp_path / "y.nc").read_bytes()
    assert run.list(TEST_SET)[2]["cached"] is True
    assert run.list(TEST_SET)[3]["cached"] is False


def test_a_truncated_cache_entry_is_rebuilt_not_served(run, tmp_path):
    run("get", "--deskriptors", TEST_SET, "--line", 1, "-o", tmp_path / "a.nc")
    entries = list((tmp_path / "cache").rglob("*.nc"))
    entries = [e for e in entries if e.parent.name != "tmp"]
    assert len(entries) == 1
    good = entries[0].read_bytes()
    entries[0].write_bytes(good[:-8])
    p = run("get", "--deskriptors", TEST_SET, "--line", 1, "-o", tmp_path / "b.nc")
    assert "built from the source" in p.stderr
    assert (tmp_path / "b.nc").read_bytes() == good


def test_get_accepts_a_deskriptor_on_the_command_line(run, tmp_path):
    p = run("get", "--deskriptor", LINES[0], "-o", tmp_path / "a.nc")
    q = run("get", "--deskriptors", TEST_SET, "--line", 1, "-o", tmp_path / "b.nc")
    assert (tmp_path / "a.nc").read_bytes() == (tmp_path / "b.nc").read_bytes()
    assert "from cache" in q.stderr and p.returncode == 0


def test_env_file_configures_source_and_cache(replica, tmp_path):
    """A .env in the working directory sets options (here the prototype's LOCAL_CACHE)."""
    import os
    from conftest import binary
    (tmp_path / ".env").write_text(f"LOCAL_CACHE={tmp_path / 'from-dotenv'}\n"
                                   f"SODEDA_SOURCE={replica}\n")
    shutil.copy(TEST_SET, tmp_path / "deskriptors.jsonl")
    env = clean_env()
    p = subprocess.run([str(binary()), "get", "--line", "1", "-o", "out.nc"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert list((tmp_path / "from-dotenv").rglob("*.nc")), "the .env cache was not used"


def test_http_source_gives_the_same_data_and_fetches_each_chunk_once(
        replica, http_source, tmp_path):
    """The same flow over http:// (object_store's HTTP store) against a loopback server."""
    from conftest import Runner
    url = http_source.url
    http_run = Runner(url, tmp_path / "cache-http", tmp_path)
    file_run = Runner(replica, tmp_path / "cache-file", tmp_path)
    http_run("get", "--deskriptors", TEST_SET, "--line", 4, "-o", tmp_path / "h.nc",
             "--read-path", "full")
    file_run("get", "--deskriptors", TEST_SET, "--line", 4, "-o", tmp_path / "f.nc")
    # The files name their source URL, so only the data must agree.
    with xr.open_dataset(tmp_path / "h.nc") as a, xr.open_dataset(tmp_path / "f.nc") as b:
        assert a.attrs["source_url"] == url
        for v in b.data_vars:
            np.testing.assert_array_equal(a[v].values, b[v].values)

    def data_requests(requests):
        coords = ("/time/", "/latitude/", "/longitude/", "/level/")
        return [p for m, p in requests if m == "GET" and "/." not in p
                and not p.startswith(coords)]

    # 3 variables x 5 hours: each chunk is asked for exactly once.
    chunks = data_requests(http_source.requests)
    assert len(chunks) == 15 and len(set(chunks)) == 15, "\n".join(map(str, http_source.requests))
    before = len(http_source.requests)
    http_run("get", "--deskriptors", TEST_SET, "--line", 4, "-o", tmp_path / "h2.nc")
    assert data_requests(http_source.requests[before:]) == [], "a cache hit fetched data"


def test_block_reads_are_bit_identical_to_full_decodes(replica, tmp_path):
    """The faster read path (only the Blosc blocks holding the needed rows) gives exactly
    the bytes of the full decode, for every test deskriptor."""
    from conftest import Runner
    runs = {rp: Runner(replica, tmp_path / f"cache-{rp}", tmp_path) for rp in ("auto", "full")}
    for e in runs["full"].list(TEST_SET):
        out = {}
        for rp, run in runs.items():
            out[rp] = tmp_path / f"{rp}.nc"
            run("get", "--deskriptors", TEST_SET, "--line", e["line"], "--read-path", rp,
                "-o", out[rp])
        assert out["auto"].read_bytes() == out["full"].read_bytes(), e["name"]


def test_a_prototype_sample_fetches_at_most_an_eighth_of_the_chunk(replica, http_source,
                                                                  tmp_path):
    from conftest import Runner
    run = Runner(http_source.url, tmp_path / "cache", tmp_path)
    p = run("get", "--deskriptors", TEST_SET, "--line", 1, "-o", tmp_path / "a.nc", "--stats")
    fetched = int(p.stderr.split("requests, ")[1].split(" bytes for data")[0])
    chunk = (replica / "2m_temperature" / "1078211.0.0").stat().st_size
    assert fetched <= chunk / 8 + 1024, (fetched, chunk)
    ranged = [p for m, p in http_source.requests if "/2m_temperature/" in p]
    assert ranged == ["/2m_temperature/1078211.0.0"] * 2, ranged


def test_scope_lists_coordinates_and_variables(run):
    p = run("scope", "--json")
    doc = json.loads(p.stdout)
    assert doc["coordinates"]["time"]["size"] == 1_323_648
    assert doc["coordinates"]["time"]["first"] == "1900-01-01T00:00"
    assert doc["coordinates"]["latitude"]["first"] == 90.0
    assert doc["variables"]["temperature"]["dims"] == ["time", "level", "latitude", "longitude"]
    text = run("scope").stdout
    assert "2m_temperature (time, latitude, longitude) [K] 2 metre temperature" in text


def test_a_later_process_reads_a_known_chunk_in_one_request(replica, tmp_path):
    """Block tables are kept beside the cache: a second process reading another point of the
    same chunk needs one request, not two; a chunk replaced in the store (a new object) is
    read afresh, with the same data."""
    from conftest import Runner
    store = tmp_path / "store"
    subprocess.run(["cp", "-al", str(replica), str(store)], check=True)
    run = Runner(store, tmp_path / "cache", tmp_path)

    def get(lat, lon, name):
        d = json.dumps({"time": "2023-01-01T11:00", "latitude": lat, "longitude": lon,
                        "variable": "2m_temperature"})
        p = run("get", "--deskriptor", d, "-o", tmp_path / name, "--stats")
        return int(p.stderr.split("source: ")[1].split(" requests")[0])

    assert get(47, 8, "a.nc") == 2, "the block table, then the block"
    assert get(47.5, 8.5, "b.nc") == 1, "a known table: the block only"
    chunk = store / "2m_temperature" / "1078211.0.0"
    data = chunk.read_bytes()
    chunk.unlink()
    chunk.write_bytes(data)  # a new object (new inode and time), same bytes
    # The stale answer is refused, then the chunk is read afresh: its header, and the blocks
    # the table known before places the point in, asked for at once (one request, or two
    # concurrent ones where the link rule keeps them apart).
    assert get(46.5, 7.5, "c.nc") in (2, 3), "a stale table is noticed and the chunk read afresh"
    fresh = Runner(store, tmp_path / "cache-fresh", tmp_path)
    d = json.dumps({"time": "2023-01-01T11:00", "latitude": 46.5, "longitude": 7.5,
                    "variable": "2m_temperature"})
    fresh("get", "--deskriptor", d, "-o", tmp_path / "c-fresh.nc")
    assert (tmp_path / "c.nc").read_bytes() == (tmp_path / "c-fresh.nc").read_bytes()
