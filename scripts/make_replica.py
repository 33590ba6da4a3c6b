"""Writes a local replica of the ARCO-ERA5 store with the real layout.

The real store is `gs://gcp-public-data-arco-era5/ar/full_37-1h-0p25deg-chunk-1.zarr-v3`
(see docs/REPLICA.md and ../shared/arco-era5-layout.md). This replica has:

- Zarr format 2 (written with zarr-python 3 in format-2 mode; the `dimension_separator`
  field that zarr-python 3 adds is removed, as zarr-python 2, the real store's writer, does
  not write it), consolidated metadata in `.zmetadata`, root attributes with the four keys
  the real store has;
- the real coordinates: time int64 hours since 1900-01-01 (1,323,648 steps, 1900 -> 2050,
  chunked well below its length), latitude float32 90 -> -90 (721), longitude float32
  0 -> 359.75 (1440), level int64 37 pressure levels;
- data variables float32, Blosc lz4 clevel 5 byte-shuffle, fill value NaN, one chunk per hour
  of the whole globe (`[1, 721, 1440]`, or `[1, 37, 721, 1440]` with levels), the real
  attributes (units, long_name, short_name, standard_name where the store has one);
- chunks only for a few hours (per profile); every other chunk is absent and reads as NaN,
  exactly as outside the real store's valid window.

Values are a smooth field plus seeded noise, so every cell differs from its neighbours and
an off-by-one in any dimension shows.
"""

import argparse
import json
import os
import shutil
import sys
from datetime import datetime

import numpy as np
import zarr
from numcodecs import Blosc

N_TIME = 1_323_648
TIME_CHUNK = 67_388  # the auto-chunk zarr 2 would pick for the store's original length
EPOCH = datetime(1900, 1, 1)
LEVELS = [1, 2, 3, 5, 7, 10, 20, 30, 50, 70, 100, 125, 150, 175, 200, 225, 250, 300, 350,
          400, 450, 500, 550, 600, 650, 700, 750, 775, 800, 825, 850, 875, 900, 925, 950,
          975, 1000]

SURFACE = {
    "2m_temperature": {"units": "K", "long_name": "2 metre temperature", "short_name": "t2m"},
    "surface_pressure": {"units": "Pa", "long_name": "Surface pressure", "short_name": "sp",
                         "standard_name": "surface_air_pressure"},
    "10m_u_component_of_wind": {"units": "m s**-1", "long_name": "10 metre U wind component",
                                "short_name": "u10"},
    "total_precipitation": {"units": "m", "long_name": "Total precipitation",
                            "short_name": "tp"},
}
PRESSURE = {
    "temperature": {"units": "K", "long_name": "Temperature", "short_name": "t",
                    "standard_name": "air_temperature"},
    "geopotential": {"units": "m**2 s**-2", "long_name": "Geopotential", "short_name": "z",
                     "standard_name": "geopotential"},
}


def hour(s):
    return int((datetime.fromisoformat(s) - EPOCH).total_seconds() // 3600)


def hours(start, end):
    return list(range(hour(start), hour(end) + 1))


# Which hours hold chunks, per profile. Variables not named have metadata only (all NaN).
PROFILES = {
    # For scripts/test: two days of surface fields, a few hours of a pressure-level field.
    "test": {
        "2m_temperature": hours("2023-01-01T00", "2023-01-02T23"),
        "surface_pressure": hours("2023-01-01T00", "2023-01-02T23"),
        "10m_u_component_of_wind": hours("2023-01-01T00", "2023-01-01T23"),
        "temperature": hours("2023-01-01T10", "2023-01-01T13"),
    },
    # For scripts/bench: 30 days of one surface variable (720 chunks, about 3 GB).
    "bench": {
        "2m_temperature": hours("2023-01-01T00", "2023-01-30T23"),
    },
    # For scripts/demo: small and quick to write.
    "demo": {
        "2m_temperature": hours("2023-01-01T00", "2023-01-01T23"),
        "surface_pressure": hours("2023-01-01T10", "2023-01-01T13"),
        "temperature": hours("2023-01-01T11", "2023-01-01T12"),
    },
}

COMPRESSOR = Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE, blocksize=0)


def field(name, t, lat, lon, level=None):
    """A smooth field for `name` at hour `t`, plus noise seeded by (name, t, level)."""
    phase = 2 * np.pi * (lon / 360.0 + (t % 24) / 24.0)
    coslat = np.cos(np.deg2rad(lat))
    if name == "2m_temperature":
        base = 230.0 + 60.0 * coslat + 6.0 * np.sin(phase)
        amp = 1.0
    elif name == "surface_pressure":
        base = 98000.0 + 3000.0 * np.sin(np.deg2rad(2 * lat)) * np.cos(phase)
        amp = 50.0
    elif name == "10m_u_component_of_wind":
        base = 12.0 * np.sin(np.deg2rad(3 * lat)) + 3.0 * np.cos(phase)
        amp = 0.5
    elif name == "temperature":
        base = 200.0 + 0.08 * level + 30.0 * coslat + 4.0 * np.sin(phase)
        amp = 1.0
    else:
        base = np.zeros_like(lat + lon)
        amp = 1.0
    seed = (sum(map(ord, name)) * 1_000_003 + t * 101 + (level or 0)) % (2**32)
    rng = np.random.default_rng(seed)
    noise = rng.random(base.shape, dtype=np.float64) * amp
    return (base + noise).astype("<f4")


def _create(root, name, shape, chunks, dtype, fill_value, attrs):
    return root.create_array(name, shape=shape, chunks=chunks, dtype=dtype,
                             compressors=COMPRESSOR, fill_value=fill_value, attributes=attrs,
                             config={"write_empty_chunks": False})


def _strip_dimension_separator(out):
    """Removes `dimension_separator` from every .zarray and from .zmetadata."""
    for dirpath, _, files in os.walk(out):
        if ".zarray" in files:
            p = os.path.join(dirpath, ".zarray")
            with open(p) as f:
                meta = json.load(f)
            meta.pop("dimension_separator", None)
            with open(p, "w") as f:
                json.dump(meta, f, indent=4, sort_keys=True)
    p = os.path.join(out, ".zmetadata")
    with open(p) as f:
        consolidated = json.load(f)
    for key, meta in consolidated["metadata"].items():
        if key.endswith(".zarray"):
            meta.pop("dimension_separator", None)
    with open(p, "w") as f:
        json.dump(consolidated, f, indent=4, sort_keys=True)


def write(out, profile):
    spec = PROFILES[profile]
    if os.path.exists(out):
        shutil.rmtree(out)
    root = zarr.open_group(out, mode="w", zarr_format=2)
    root.attrs.update({
        "valid_time_start": "1940-01-01",
        "last_updated": "2026-09-05 02:45:44.987382+00:00",
        "valid_time_stop": "2026-05-31",
        "valid_time_stop_era5t": "2026-09-04",
    })

    time = _create(root, "time", (N_TIME,), (TIME_CHUNK,), "<i8", None,
                   {"_ARRAY_DIMENSIONS": ["time"], "calendar": "proleptic_gregorian",
                    "units": "hours since 1900-01-01 00:00:00"})
    time[:] = np.arange(N_TIME, dtype="<i8")

    lat_values = np.linspace(90.0, -90.0, 721).astype("<f4")
    lat = _create(root, "latitude", (721,), (721,), "<f4", np.nan,
                  {"_ARRAY_DIMENSIONS": ["latitude"], "long_name": "latitude",
                   "units": "degrees_north"})
    lat[:] = lat_values

    lon_values = (np.arange(1440) / 4.0).astype("<f4")
    lon = _create(root, "longitude", (1440,), (1440,), "<f4", np.nan,
                  {"_ARRAY_DIMENSIONS": ["longitude"], "long_name": "longitude",
                   "units": "degrees_east"})
    lon[:] = lon_values

    level = _create(root, "level", (37,), (37,), "<i8", None,
                    {"_ARRAY_DIMENSIONS": ["level"], "units": "Hectopascal(hPa)"})
    level[:] = np.array(LEVELS, dtype="<i8")

    lat2 = lat_values.astype(np.float64)[:, None]
    lon2 = lon_values.astype(np.float64)[None, :]
    for name, attrs in SURFACE.items():
        arr = _create(root, name, (N_TIME, 721, 1440), (1, 721, 1440), "<f4", np.nan,
                      {"_ARRAY_DIMENSIONS": ["time", "latitude", "longitude"], **attrs})
        for t in spec.get(name, []):
            arr[t] = field(name, t, lat2, lon2)
    for name, attrs in PRESSURE.items():
        arr = _create(root, name, (N_TIME, 37, 721, 1440), (1, 37, 721, 1440), "<f4", np.nan,
                      {"_ARRAY_DIMENSIONS": ["time", "level", "latitude", "longitude"],
                       **attrs})
        for t in spec.get(name, []):
            arr[t] = np.stack([field(name, t, lat2, lon2, lv) for lv in LEVELS])
    zarr.consolidate_metadata(out)
    _strip_dimension_separator(out)


# WeatherBench2's ERA5 layout (`gs://weatherbench2/datasets/era5/...-6h-...zarr`), at the
# resolution of its regridded 240x121 stores: 6-hourly time from 1959-01-01 in one int64 chunk
# of "hours since 1959-01-01", 13 pressure levels, latitude ascending -90 -> 90, dimension order
# (time, level, longitude, latitude), data chunked 4 time steps (one day) at a time, Blosc zstd.
WB2_EPOCH = datetime(1959, 1, 1)
WB2_STEPS = int((datetime(2023, 1, 10, 18) - WB2_EPOCH).total_seconds() // (6 * 3600)) + 1
WB2_LEVELS = [50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000]
WB2_TIME_CHUNK = 4
WB2_COMPRESSOR = Blosc(cname="zstd", clevel=3, shuffle=Blosc.BITSHUFFLE, blocksize=0)


def wb2_step(s):
    return int((datetime.fromisoformat(s) - WB2_EPOCH).total_seconds() // (6 * 3600))


def write_weatherbench2(out, first="2020-01-01T00", last="2020-01-02T18"):
    """A replica of WeatherBench2's ERA5 store layout with data for `first`..`last`."""
    if os.path.exists(out):
        shutil.rmtree(out)
    root = zarr.open_group(out, mode="w", zarr_format=2)

    def create(name, shape, chunks, dtype, fill, attrs, compressor=WB2_COMPRESSOR):
        return root.create_array(name, shape=shape, chunks=chunks, dtype=dtype,
                                 compressors=compressor, fill_value=fill, attributes=attrs,
                                 config={"write_empty_chunks": False})

    time = create("time", (WB2_STEPS,), (WB2_STEPS,), "<i8", None,
                  {"_ARRAY_DIMENSIONS": ["time"], "calendar": "proleptic_gregorian",
                   "units": "hours since 1959-01-01"})
    time[:] = np.arange(WB2_STEPS, dtype="<i8") * 6
    lat_values = np.linspace(-90.0, 90.0, 121)
    create("latitude", (121,), (121,), "<f8", np.nan,
           {"_ARRAY_DIMENSIONS": ["latitude"], "long_name": "latitude",
            "units": "degrees_north"})[:] = lat_values
    lon_values = np.arange(240) * 1.5
    create("longitude", (240,), (240,), "<f8", np.nan,
           {"_ARRAY_DIMENSIONS": ["longitude"], "long_name": "longitude",
            "units": "degrees_east"})[:] = lon_values
    create("level", (13,), (13,), "<i8", None,
           {"_ARRAY_DIMENSIONS": ["level"], "units": "millibar"})[:] = np.array(WB2_LEVELS)

    lon2 = lon_values[:, None]
    lat2 = lat_values[None, :]
    steps = range(wb2_step(first), wb2_step(last) + 1)
    t2m = create("2m_temperature", (WB2_STEPS, 240, 121), (WB2_TIME_CHUNK, 240, 121), "<f4",
                 np.nan, {"_ARRAY_DIMENSIONS": ["time", "longitude", "latitude"],
                          **SURFACE["2m_temperature"]})
    for t in steps:
        t2m[t] = field("2m_temperature", t * 6, lat2, lon2)
    temp = create("temperature", (WB2_STEPS, 13, 240, 121), (WB2_TIME_CHUNK, 13, 240, 121),
                  "<f4", np.nan, {"_ARRAY_DIMENSIONS": ["time", "level", "longitude", "latitude"],
                                  **PRESSURE["temperature"]})
    for t in steps:
        temp[t] = np.stack([field("temperature", t * 6, lat2, lon2, lv) for lv in WB2_LEVELS])
    zarr.consolidate_metadata(out)
    _strip_dimension_separator(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="directory to write (replaced if it holds a replica)")
    p.add_argument("--profile", choices=sorted(PROFILES) + ["weatherbench2"], default="test",
                   help="which hours hold data; weatherbench2: WeatherBench2's ERA5 layout "
                        "(6-hourly, 13 levels, 240x121, two days of 2020)")
    a = p.parse_args()
    if os.path.exists(a.out) and os.listdir(a.out) and \
            not os.path.exists(os.path.join(a.out, ".zgroup")):
        sys.exit(f"{a.out} exists and is not a Zarr store; refusing to overwrite it")
    if a.profile == "weatherbench2":
        write_weatherbench2(a.out)
    else:
        write(a.out, a.profile)
    stamp = {"profile": a.profile, "script": "make_replica.py", "version": 1}
    with open(os.path.join(a.out, ".sodeda-replica.json"), "w") as f:
        json.dump(stamp, f)


if __name__ == "__main__":
    main()
