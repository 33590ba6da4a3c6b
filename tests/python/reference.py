"""The reference: what xarray gives for a deskriptor, written independently of the Rust code.

It applies the documented semantics (docs/DESKRIPTORS.md) with plain xarray operations on
`xarray.open_zarr(replica)`: `.sel` with slices for ranges, `.isel` for steps, lists for exact
labels, a relabel + sortby for longitudes in -180..180, and a swapped slice for latitude ranges
given in either order.
"""

import numpy as np
import xarray as xr


def open_source(replica):
    return xr.open_zarr(replica, consolidated=True, chunks=None)


def _range(da, dim, spec, descending):
    start, end, step = spec.get("start"), spec.get("end"), spec.get("step", 1)
    if dim == "time":
        da = da.sel(time=slice(start, end))
    elif start is not None and end is not None:
        lo, hi = min(start, end), max(start, end)
        da = da.sel({dim: slice(hi, lo) if descending else slice(lo, hi)})
    else:
        da = da.sel({dim: slice(start, end)})
    return da.isel({dim: slice(None, None, step)})


def _time_labels(values):
    return [np.datetime64(v) for v in values]


def select(da, dim, spec):
    if dim == "longitude":
        values = [spec] if not isinstance(spec, (dict, list)) else (
            spec if isinstance(spec, list) else [v for v in (spec.get("start"), spec.get("end"))
                                                 if v is not None])
        if any(v < 0 for v in values):
            lon = da.longitude.values
            relabelled = np.where(lon >= 180, lon - 360, lon).astype(lon.dtype)
            da = da.assign_coords(longitude=da.longitude.copy(data=relabelled))
            da = da.sortby("longitude")
    descending = bool(da[dim].values[0] > da[dim].values[-1]) if da[dim].size > 1 else False
    if isinstance(spec, dict):
        return _range(da, dim, spec, descending)
    if isinstance(spec, list):
        labels = _time_labels(spec) if dim == "time" else spec
        return da.sel({dim: labels})
    if dim == "time":
        if len(spec) <= 10:  # a day, a month or a year: the whole period
            return da.sel(time=slice(spec, spec))
        return da.sel(time=_time_labels([spec]))
    return da.sel({dim: [spec]})


def reference(ds, deskriptor):
    """Returns {variable: DataArray} for a deskriptor (dict)."""
    variables = deskriptor["variable"]
    if isinstance(variables, str):
        variables = [variables]
    out = {}
    for name in variables:
        da = ds[name]
        for key, spec in deskriptor.items():
            if key in ("variable", "name") or key not in da.dims:
                continue
            da = select(da, key, spec)
        out[name] = da.load()
    return out
