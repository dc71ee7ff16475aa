"""Put a truth on an analysis' labels before scoring it (the xarray layer of the metrics).

:func:`align_truth` pairs a truth with an analysis by coordinate labels, never by position:

- the truth must have every spatial dim of the analysis (a station-observation truth, or any
  truth on other dims, is refused with a :class:`~xldensf.errors.DataError`);
- along each spatial dim that has labels in both, the truth is reordered and subset to the
  analysis' labels; labels that agree to within ``tolerance`` times the analysis' grid
  spacing count as equal (numeric labels; datetimes and other labels must agree exactly);
- a truth on a different grid is refused unless ``interpolate=True``, which interpolates it
  linearly (:meth:`xarray.Dataset.interp`) onto the analysis' labels;
- times: the truth is selected at the analysis' times (the same label rules); a truth that
  lacks some analysis times is refused;
- units: each scored variable of the truth is converted to the analysis' units with pint
  (values, so an affine ``degC`` -> ``K`` conversion adds the offset).

:func:`member_dim` finds the ensemble dim (``standard_name: realization``), and
:func:`score_weights` turns the ``weights=`` option of the metrics into a DataArray.

Examples
--------
>>> import numpy as np, xarray as xr
>>> x = ("x", np.arange(3.0), {"axis": "X"})
>>> analysis = xr.Dataset({"u": ("x", np.array([1.0, 2.0, 3.0]), {"units": "m s-1"})},
...                       coords={"x": x})
>>> truth = xr.Dataset({"u": ("x", np.array([10.8, 7.2, 3.6]), {"units": "km h-1"})},
...                    coords={"x": ("x", np.array([2.0, 1.0, 0.0]), {"axis": "X"})})
>>> align_truth(analysis, truth, ["u"])["u"].values.round(12).tolist()
[1.0, 2.0, 3.0]
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import cf_xarray  # noqa: F401  (registers ds.cf)
import numpy as np
import pandas as pd
import xarray as xr

from .conventions import MEMBER_DIM, TIME_DIM, convert_values, find_time_name, station_dim
from .errors import DataError, expected_found

__all__ = [
    "DEFAULT_TOLERANCE",
    "spatial_dims",
    "time_dim",
    "member_dim",
    "area_weights",
    "score_weights",
    "align_truth",
]

#: Default label tolerance, as a fraction of the analysis' grid spacing: loose enough for
#: coordinates that went through float32 files or unit conversions (relative round-off
#: ~1e-7 of the value), tight enough that a grid shifted by a fraction of a cell is never
#: taken for the same grid.
DEFAULT_TOLERANCE = 1e-3


def spatial_dims(obj: xr.Dataset | xr.DataArray) -> list[Hashable]:
    """Dimensions of the spatial axes (CF X/Y or latitude/longitude), or the station dim.

    The station dim is the dim of a ``cf_role: timeseries_id`` variable, or ``station``.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset(coords={"lat": ("lat", [0.0, 1.0], {"standard_name": "latitude"})})
    >>> spatial_dims(ds)
    ['lat']
    """
    found: list[Hashable] = []
    for key in ("latitude", "longitude", "X", "Y"):
        try:
            coordinate = obj.cf[key]
        except KeyError:
            continue
        for dim in coordinate.dims:
            if dim not in found and dim in obj.dims:
                found.append(dim)
    if not found:
        station = station_dim(obj)
        if station is not None and station in obj.dims:
            found = [station]
    if not found:
        raise DataError(expected_found("spatial axes", "CF X/Y or latitude/longitude "
                                       "coordinates (or a station dim)",
                                       sorted(map(str, obj.dims))))
    return found


def time_dim(obj: xr.Dataset | xr.DataArray) -> Hashable | None:
    """The time dim: that of the time coordinate found by
    :func:`xldensf.conventions.find_time_name`, else a dim named ``time``; or ``None``.

    Examples
    --------
    >>> import xarray as xr
    >>> time_dim(xr.Dataset(coords={"time": [0.0, 1.0]}))
    'time'
    """
    name = find_time_name(obj)
    if name is not None:
        coordinate = obj.coords[name]
        if coordinate.ndim == 1 and coordinate.dims[0] in obj.dims:
            return coordinate.dims[0]
    return TIME_DIM if TIME_DIM in obj.dims else None


def member_dim(obj: xr.Dataset | xr.DataArray, name: Hashable | None = None) -> Hashable | None:
    """The ensemble member dim of ``obj``: ``name`` if given (it must be a dim), else the dim
    of a coordinate with ``standard_name: realization``, else ``member`` if present, else
    ``None`` (a deterministic analysis).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"u": ("ens", np.zeros(3))},
    ...                 coords={"ens": ("ens", np.arange(3), {"standard_name": "realization"})})
    >>> member_dim(ds)
    'ens'
    """
    if name is not None:
        if name not in obj.dims:
            raise DataError(expected_found("member_dim", f"a dim of the analysis "
                                           f"{sorted(map(str, obj.dims))}", name))
        return name
    for coordinate in obj.coords.values():
        if coordinate.attrs.get("standard_name") == "realization" and coordinate.ndim == 1 \
                and coordinate.dims[0] in obj.dims:
            return coordinate.dims[0]
    return MEMBER_DIM if MEMBER_DIM in obj.dims else None


def area_weights(obj: xr.Dataset | xr.DataArray) -> xr.DataArray | None:
    """cos(latitude) weights on lat/lon grids, ``None`` elsewhere (equal weights).

    Examples
    --------
    >>> import xarray as xr
    >>> ds = xr.Dataset(coords={"lat": ("lat", [0.0, 60.0], {"standard_name": "latitude"})})
    >>> area_weights(ds).values.round(6).tolist()
    [1.0, 0.5]
    """
    try:
        latitude = obj.cf["latitude"]
    except KeyError:
        return None
    return np.cos(np.deg2rad(latitude)).clip(min=0.0)


def score_weights(weights: xr.DataArray | str | None,
                  obj: xr.Dataset | xr.DataArray) -> xr.DataArray | None:
    """The weights of a score's mean: ``"area"`` (cos-latitude on lat/lon grids, equal
    elsewhere), ``None`` (equal weights) or a DataArray of weights (NaN counts as 0).

    Examples
    --------
    >>> import xarray as xr
    >>> score_weights(None, xr.Dataset()) is None
    True
    """
    if isinstance(weights, str):
        if weights != "area":
            raise DataError(expected_found("weights", "'area', None or a DataArray", weights))
        weights = area_weights(obj)
    elif weights is not None and not isinstance(weights, xr.DataArray):
        raise DataError(expected_found("weights", "'area', None or a DataArray",
                                       type(weights).__name__))
    return None if weights is None else weights.fillna(0.0)


def _label_indexer(source: xr.DataArray, target: xr.DataArray,
                   tolerance: float) -> np.ndarray | None:
    """Positions in ``source`` of the labels of ``target`` (within ``tolerance`` times the
    target's spacing for numeric labels), or ``None`` if some target label is not there."""
    src, tgt = source.to_index(), target.to_index()
    if not src.is_unique:
        raise DataError(expected_found(f"truth labels along {source.name!r}", "unique labels",
                                       "duplicates"))
    exact = src.get_indexer(tgt)
    if (exact >= 0).all():
        return exact
    values = np.asarray(target.values)
    if not (np.issubdtype(values.dtype, np.number) and tolerance and tolerance > 0):
        return None
    steps = np.abs(np.diff(np.sort(values.astype(np.float64))))
    steps = steps[steps > 0]
    if steps.size == 0:
        return None
    order = np.argsort(np.asarray(src, dtype=np.float64), kind="stable")
    ordered = pd.Index(np.asarray(src, dtype=np.float64)[order])
    found = ordered.get_indexer(values.astype(np.float64), method="nearest",
                                tolerance=float(tolerance * steps.min()))
    if (found < 0).any():
        return None
    return order[found]


def _on_labels(truth: xr.Dataset, ensemble: xr.Dataset, dim: Hashable,
               tolerance: float) -> xr.Dataset | None:
    """``truth`` reordered/subset to ``ensemble``'s labels along ``dim``; ``None`` if some
    are missing."""
    if dim not in ensemble.indexes or dim not in truth.indexes:
        if truth.sizes[dim] != ensemble.sizes[dim]:
            raise DataError(expected_found(f"truth size along {dim!r} (no labels to align)",
                                           ensemble.sizes[dim], truth.sizes[dim]))
        return truth
    indexer = _label_indexer(truth[dim], ensemble[dim], tolerance)
    if indexer is None:
        return None
    return truth.isel({dim: indexer}).assign_coords({dim: ensemble[dim].variable})


def _converted(truth: xr.Dataset, ensemble: xr.Dataset,
               variables: Sequence[Hashable]) -> xr.Dataset:
    """The truth's ``variables`` in the analysis' units (values: affine where it applies)."""
    out = truth.copy()
    for name in variables:
        target, source = ensemble[name].attrs.get("units"), truth[name].attrs.get("units")
        if target is None or source is None or target == source:
            continue
        values = convert_values(truth[name].values, source, target,
                                f"units of the truth's {name!r}")
        out[name] = truth[name].copy(data=np.asarray(values, dtype=np.float64))
        out[name].attrs["units"] = target
    return out


def _at_scalar_time(ensemble: xr.Dataset, truth: xr.Dataset, tolerance: float) -> xr.Dataset:
    """The truth at the analysis' one time when the analysis holds a scalar time coordinate
    (``analysis.isel(time=-1)``); the truth unchanged otherwise."""
    time = time_dim(truth)
    if time is None or time not in ensemble.coords or ensemble[time].ndim != 0:
        return truth
    one = ensemble[time].expand_dims(time)
    selected = _on_labels(truth, one.to_dataset(name="_time"), time, tolerance)
    if selected is None:
        raise DataError(expected_found("truth times", f"the analysis time {one.values[0]!s}",
                                       "no such time in the truth"))
    return selected.isel({time: 0})


def align_truth(ensemble: xr.Dataset, truth: xr.Dataset,
                variables: Sequence[Hashable] | None = None, *,
                tolerance: float = DEFAULT_TOLERANCE, interpolate: bool = False) -> xr.Dataset:
    """The truth on the analysis' spatial and time labels, in the analysis' units.

    Parameters
    ----------
    ensemble
        The analysis (its spatial dims, times and units are the reference).
    truth
        The truth: any label order, a larger grid or more times than the analysis.
    variables
        Variables whose units are converted (default: all the two share).
    tolerance
        Labels within ``tolerance`` times the analysis' smallest label spacing count as the
        same (numeric labels only; default :data:`DEFAULT_TOLERANCE`).
    interpolate
        Interpolate a truth on a different grid linearly onto the analysis' labels (values
        outside the truth's grid become NaN) instead of refusing it.

    Returns
    -------
    xarray.Dataset
        The truth, with the analysis' labels along its spatial dims and time.

    Raises
    ------
    DataError
        A truth without the analysis' spatial dims (e.g. station observations), without
        some analysis times, or on a different grid (without ``interpolate=True``).
    UnitsError
        Units that do not convert to the analysis'.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> lat = {"standard_name": "latitude", "units": "degrees_north"}
    >>> analysis = xr.Dataset({"u": ("lat", np.zeros(3))},
    ...                       coords={"lat": ("lat", [-30.0, 0.0, 30.0], lat)})
    >>> truth = xr.Dataset({"u": ("lat", np.arange(5.0))},
    ...                    coords={"lat": ("lat", [60.0, 30.0, 0.0, -30.0, -60.0], lat)})
    >>> align_truth(analysis, truth)["u"].values.tolist()
    [3.0, 2.0, 1.0]
    """
    if not isinstance(truth, xr.Dataset):
        raise DataError(expected_found("truth", "an xarray.Dataset", type(truth).__name__))
    space = spatial_dims(ensemble)
    missing = [d for d in space if d not in truth.dims]
    if missing:
        station = station_dim(truth)
        note = f" (station observations along {station!r})" if station is not None else ""
        raise DataError(expected_found(
            "truth dims", f"the analysis' spatial dims {list(map(str, space))} (score "
            "station observations in observation space)",
            f"{sorted(map(str, truth.dims))}{note}"))
    truth = _at_scalar_time(ensemble, truth, tolerance)
    time = time_dim(ensemble)
    if time is not None and time in truth.dims:
        selected = _on_labels(truth, ensemble, time, tolerance)
        if selected is None:
            wanted = ensemble[time].to_index()
            lacking = wanted[~wanted.isin(truth[time].to_index())]
            raise DataError(expected_found("truth times", "every analysis time",
                                           f"{len(lacking)} missing, first {lacking[0]!s}"))
        truth = selected
    off_grid = []
    for dim in space:
        on_grid = _on_labels(truth, ensemble, dim, tolerance)
        if on_grid is None:
            off_grid.append(dim)
        else:
            truth = on_grid
    if off_grid and not interpolate:
        raise DataError(expected_found(
            "truth grid", f"the analysis' labels along {list(map(str, off_grid))} (within "
            f"{tolerance:g} of the grid spacing)", "a different grid; pass interpolate=True "
            "to interpolate the truth linearly onto the analysis grid"))
    if off_grid:
        truth = truth.interp({dim: ensemble[dim].values for dim in off_grid}).assign_coords(
            {dim: ensemble[dim].variable for dim in off_grid})
    if variables is None:
        variables = [name for name in ensemble.data_vars if name in truth.data_vars]
    return _converted(truth, ensemble, [n for n in variables
                                        if n in truth.data_vars and n in ensemble.data_vars])
