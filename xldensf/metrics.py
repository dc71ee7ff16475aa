"""Verification metrics of analyses against a truth (the scores of the LD-EnSF paper).

Two layers, as in xskillscore: numpy kernels that know axes only
(:func:`crps_ensemble_kernel`), and xarray wrappers that put the truth on the analysis'
labels and units (:func:`xldensf.alignment.align_truth`), weight by cos(latitude) on the
sphere, and reduce over the spatial dims, keeping every other one (time, run).

- :func:`relative_rmse` — ``sqrt(sum_x w (mean - truth)^2 / sum_x w truth^2)`` (units "1");
- :func:`rmse` — ``sqrt(sum_x w (mean - truth)^2 / sum_x w)``, in the field's units;
- :func:`spread`, :func:`spread_skill_ratio` — of the member deviations, and spread over
  the RMSE of the mean (dimensionless);
- :func:`crps` — the ensemble CRPS, ``E|X - y| - E|X - X'| / 2`` (fair form optional);
- :func:`rank_histogram` — counts of the truth's rank among the members;
- :func:`parameter_error` — relative error of posterior-mean parameters.

Every score takes the options of xskillscore: ``dim=`` (the dims to reduce; default the
spatial dims), ``member_dim=`` (default: the dim with ``standard_name: realization``, else
``member``), ``weights=`` (``"area"``: cos-latitude on lat/lon grids, equal elsewhere;
``None``: equal; or a DataArray) and ``keep_attrs=``; and the alignment options
``tolerance=`` and ``interpolate=`` of :func:`~xldensf.alignment.align_truth`.

Examples
--------
>>> import numpy as np, xarray as xr
>>> truth = xr.Dataset({"u": (("time", "x"), np.ones((2, 4)), {"units": "m s-1"})},
...                    coords={"x": ("x", np.arange(4.0), {"axis": "X"})})
>>> members = truth.expand_dims(member=3) * xr.DataArray([0.9, 1.0, 1.1], dims="member")
>>> relative_rmse(members, truth)["u"].values.round(6).tolist()
[0.0, 0.0]
>>> float(rmse(truth + 0.5, truth)["u"][0])
0.5
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import xarray as xr

from .alignment import (
    DEFAULT_TOLERANCE,
    align_truth,
    area_weights,
    score_weights,
    spatial_dims,
)
from .alignment import member_dim as find_member_dim
from .errors import DataError, check_name, expected_found

__all__ = [
    "spatial_dims",
    "area_weights",
    "relative_rmse",
    "rmse",
    "spread",
    "spread_skill_ratio",
    "crps",
    "crps_ensemble_kernel",
    "rank_histogram",
    "parameter_error",
    "spatial_anomaly",
]

Dims = Hashable | Sequence[Hashable] | None
Weights = xr.DataArray | str | None

#: Attributes of a field that do not describe a score of it.
_FIELD_ONLY_ATTRS = ("standard_name", "units", "long_name", "ancillary_variables",
                     "valid_min", "valid_max", "valid_range", "actual_range", "cell_methods")
ENGINES = ("numpy", "xskillscore")


def _weighted_mean(values: xr.DataArray, dims: Sequence[Hashable],
                   weights: xr.DataArray | None) -> xr.DataArray:
    if weights is None:
        return values.mean(dims, skipna=True)
    return values.weighted(weights.fillna(0.0)).mean(dims, skipna=True)


def _reduced_dims(dim: Dims, ensemble: xr.Dataset, member: Hashable | None
                  ) -> list[Hashable]:
    """The dims to reduce: ``dim`` (checked) or the analysis' spatial dims."""
    if dim is None:
        return list(spatial_dims(ensemble))
    dims = [dim] if isinstance(dim, str) or not isinstance(dim, Sequence) else list(dim)
    for name in dims:
        if name not in ensemble.dims or name == member:
            raise DataError(expected_found("dim", "dims of the analysis other than the member "
                                           f"dim {member!r}", name))
    return dims


def _score_attrs(field: xr.DataArray, keep_attrs: bool, **attrs: str) -> dict[str, Any]:
    """Attributes of a score of ``field``: its own (with ``keep_attrs``, less those that
    describe the field only, such as its standard_name) and ``attrs``."""
    out = {key: value for key, value in field.attrs.items()
           if key not in _FIELD_ONLY_ATTRS} if keep_attrs else {}
    out.update({key: value for key, value in attrs.items() if value is not None})
    return out


def _scored(result: xr.DataArray, attrs: dict[str, Any]) -> xr.DataArray:
    result = result.copy()
    result.attrs = attrs
    return result


def _dataset(scores: dict[str, xr.DataArray], ensemble: xr.Dataset,
             keep_attrs: bool) -> xr.Dataset:
    return xr.Dataset(scores, attrs=dict(ensemble.attrs) if keep_attrs else {})


def _scored_variables(ensemble: xr.Dataset, truth: xr.Dataset,
                      variables: Sequence[str] | None) -> list[str]:
    space = set(spatial_dims(ensemble))
    gridded = [str(name) for name, v in ensemble.data_vars.items() if space <= set(v.dims)]
    if variables is None:
        variables = [name for name in gridded if name in truth.data_vars]
        if not variables:
            raise DataError(expected_found(
                "gridded analysis variables that the truth also has",
                f"some of the analysis' {gridded} in the truth",
                f"truth variables {sorted(map(str, truth.data_vars))}"))
    for name, dataset, role in ((n, d, r) for n in variables
                                for d, r in ((ensemble, "analysis"), (truth, "truth"))):
        if name not in dataset.data_vars:
            raise DataError(expected_found(f"variable {name!r} in the {role}",
                                           sorted(map(str, dataset.data_vars)),
                                           f"no {name!r}"))
    return list(variables)


def _prepared(ensemble: xr.Dataset, truth: xr.Dataset, variables: Sequence[str] | None,
              member_name: Hashable | None, tolerance: float, interpolate: bool
              ) -> tuple[xr.Dataset, list[str], Hashable | None]:
    """The truth aligned to the analysis, the scored variables and the member dim."""
    member = find_member_dim(ensemble, member_name)
    names = _scored_variables(ensemble, truth, variables)
    truth = align_truth(ensemble, truth, names, tolerance=tolerance, interpolate=interpolate)
    return truth, names, member


def _mean(field: xr.DataArray, member: Hashable | None) -> xr.DataArray:
    return field.mean(member) if member is not None and member in field.dims else field


def _require_members(ensemble: xr.Dataset, member: Hashable | None) -> int:
    if member is None or ensemble.sizes[member] < 2:
        raise DataError(expected_found("ensemble", "a member dim with >= 2 members",
                                       dict(ensemble.sizes)))
    return int(ensemble.sizes[member])


def relative_rmse(ensemble: xr.Dataset, truth: xr.Dataset,
                  variables: Sequence[str] | None = None, *, dim: Dims = None,
                  member_dim: Hashable | None = None, weights: Weights = "area",
                  keep_attrs: bool = False, tolerance: float = DEFAULT_TOLERANCE,
                  interpolate: bool = False) -> xr.Dataset:
    """Relative RMSE of the ensemble mean: ``sqrt(sum w (mean - truth)^2 / sum w truth^2)``.

    Parameters
    ----------
    ensemble
        Analysis (with or without a member dim).
    truth
        The true fields: aligned to the analysis by labels (any order, a larger grid, more
        times) and converted to its units.
    variables
        Variables to score (default: all in both with the spatial axes).
    dim
        Dims to reduce (default: the analysis' spatial dims); others are kept.
    member_dim
        The member dim (default: found by ``standard_name: realization``, else ``member``).
    weights
        ``"area"`` (cos-latitude on lat/lon grids, equal weights elsewhere), ``None``
        (equal weights) or a DataArray of weights.
    keep_attrs
        Keep the field's attributes that still apply (not its ``standard_name``) and the
        analysis' global attributes.
    tolerance, interpolate
        Label alignment of the truth, see :func:`xldensf.alignment.align_truth`.

    Returns
    -------
    xarray.Dataset
        One variable per scored variable, units ``"1"``, dims of the input less ``dim`` and
        the member dim.

    Raises
    ------
    DataError
        A truth without the analysis' spatial dims or times, or on another grid.
    UnitsError
        Truth units that do not convert to the analysis'.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> truth = xr.Dataset({"u": ("x", np.full(4, 2.0), {"units": "m s-1"})},
    ...                    coords={"x": ("x", np.arange(4.0), {"axis": "X"})})
    >>> score = relative_rmse(truth * 1.1, truth)
    >>> round(float(score["u"]), 6), score["u"].attrs["units"]
    (0.1, '1')
    """
    truth, names, member = _prepared(ensemble, truth, variables, member_dim, tolerance,
                                     interpolate)
    dims, weights = _reduced_dims(dim, ensemble, member), score_weights(weights, truth)
    out = {}
    for name in names:
        mean = _mean(ensemble[name], member)
        error = _weighted_mean((mean - truth[name]) ** 2, dims, weights)
        scale = _weighted_mean(truth[name] ** 2, dims, weights)
        out[name] = _scored(np.sqrt(error / scale), _score_attrs(
            ensemble[name], keep_attrs, long_name=f"relative RMSE of {name}", units="1"))
    return _dataset(out, ensemble, keep_attrs)


def rmse(ensemble: xr.Dataset, truth: xr.Dataset, variables: Sequence[str] | None = None,
         *, dim: Dims = None, member_dim: Hashable | None = None, weights: Weights = "area",
         keep_attrs: bool = False, tolerance: float = DEFAULT_TOLERANCE,
         interpolate: bool = False) -> xr.Dataset:
    """RMSE of the ensemble mean, ``sqrt(sum w (mean - truth)^2 / sum w)``, in the field's
    units (the analysis').

    ``ds.ldensf.rmse`` is this absolute RMSE; the relative RMSE (which ``ds.ldensf.rmse``
    returned up to version 0.1) is :func:`relative_rmse` / ``ds.ldensf.relative_rmse``.

    Parameters
    ----------
    ensemble, truth, variables, dim, member_dim, weights, keep_attrs, tolerance, interpolate
        As for :func:`relative_rmse`.

    Returns
    -------
    xarray.Dataset
        One variable per scored variable, in the analysis' units.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> truth = xr.Dataset({"u": ("x", np.zeros(4), {"units": "m s-1"})},
    ...                    coords={"x": ("x", np.arange(4.0), {"axis": "X"})})
    >>> analysis = truth + xr.DataArray([1.0, -1.0, 1.0, -1.0], dims="x")
    >>> score = rmse(analysis, truth)
    >>> float(score["u"]), score["u"].attrs["units"]
    (1.0, 'm s-1')
    """
    truth, names, member = _prepared(ensemble, truth, variables, member_dim, tolerance,
                                     interpolate)
    dims, weights = _reduced_dims(dim, ensemble, member), score_weights(weights, truth)
    out = {}
    for name in names:
        error = _weighted_mean((_mean(ensemble[name], member) - truth[name]) ** 2, dims,
                               weights)
        out[name] = _scored(np.sqrt(error), _score_attrs(
            ensemble[name], keep_attrs, long_name=f"RMSE of {name}",
            units=ensemble[name].attrs.get("units", truth[name].attrs.get("units"))))
    return _dataset(out, ensemble, keep_attrs)


def spread(ensemble: xr.Dataset, variables: Sequence[str] | None = None, *, dim: Dims = None,
           member_dim: Hashable | None = None, weights: Weights = "area",
           keep_attrs: bool = False) -> xr.Dataset:
    """Ensemble spread: weighted RMS of the member standard deviation (ddof = 1), in the
    field's units.

    Parameters
    ----------
    ensemble, variables, dim, member_dim, weights, keep_attrs
        As for :func:`relative_rmse`; the ensemble needs >= 2 members.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"u": (("member", "x"), [[0.0, 0.0], [2.0, 2.0]])},
    ...                 coords={"x": ("x", [0.0, 1.0], {"axis": "X"})})
    >>> round(float(spread(ds)["u"]), 6)
    1.414214
    """
    member = find_member_dim(ensemble, member_dim)
    _require_members(ensemble, member)
    dims, weights = _reduced_dims(dim, ensemble, member), score_weights(weights, ensemble)
    space = set(spatial_dims(ensemble))
    names = variables if variables is not None else [
        name for name, v in ensemble.data_vars.items() if space <= set(v.dims)]
    out = {}
    for name in names:
        field = ensemble[name]
        value = np.sqrt(_weighted_mean(field.var(member, ddof=1), dims, weights))
        out[name] = _scored(value, _score_attrs(field, keep_attrs,
                                                long_name=f"ensemble spread of {name}",
                                                units=field.attrs.get("units")))
    return _dataset(out, ensemble, keep_attrs)


def spread_skill_ratio(ensemble: xr.Dataset, truth: xr.Dataset,
                       variables: Sequence[str] | None = None, *, dim: Dims = None,
                       member_dim: Hashable | None = None, weights: Weights = "area",
                       keep_attrs: bool = False, tolerance: float = DEFAULT_TOLERANCE,
                       interpolate: bool = False) -> xr.Dataset:
    """Spread over the RMSE of the mean, with the ``sqrt((M + 1) / M)`` finite-ensemble
    factor on the spread: about 1 for a calibrated ensemble (dimensionless).

    Parameters
    ----------
    ensemble, truth, variables, dim, member_dim, weights, keep_attrs, tolerance, interpolate
        As for :func:`relative_rmse`; the ensemble needs >= 2 members.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"u": (("member", "x"), [[0.0, 0.0], [2.0, 2.0]], {"units": "m"})},
    ...                 coords={"x": ("x", [0.0, 1.0], {"axis": "X"})})
    >>> truth = ds.isel(member=0, drop=True)
    >>> ratio = spread_skill_ratio(ds, truth)["u"]
    >>> round(float(ratio), 6), ratio.attrs["units"]
    (1.732051, '1')
    """
    options = dict(dim=dim, member_dim=member_dim, weights=weights, keep_attrs=keep_attrs)
    error = rmse(ensemble, truth, variables, tolerance=tolerance, interpolate=interpolate,
                 **options)
    member = find_member_dim(ensemble, member_dim)
    members = _require_members(ensemble, member)
    spreads = spread(ensemble, list(error.data_vars), **options)
    out = {}
    for name in error.data_vars:
        ratio = np.sqrt((members + 1) / members) * spreads[name] / error[name]
        out[str(name)] = _scored(ratio, _score_attrs(
            ensemble[name], keep_attrs, units="1",
            long_name=f"spread/skill ratio of {name} (dimensionless: ensemble spread over "
            "the RMSE of the ensemble mean)"))
    return _dataset(out, ensemble, keep_attrs)


def _engine(engine: str) -> Any:
    """``None`` for the numpy kernels, the xskillscore module for ``"xskillscore"``."""
    check_name("engine", engine, ENGINES)
    if engine == "numpy":
        return None
    try:
        import xskillscore
    except ImportError as err:
        raise DataError(expected_found("engine='xskillscore'", "xskillscore installed "
                                       "(pip install xldensf[verify])", "no xskillscore")
                        ) from err
    return xskillscore


def crps(ensemble: xr.Dataset, truth: xr.Dataset, variables: Sequence[str] | None = None,
         *, fair: bool = False, dim: Dims = None, member_dim: Hashable | None = None,
         weights: Weights = "area", keep_attrs: bool = False,
         tolerance: float = DEFAULT_TOLERANCE, interpolate: bool = False,
         engine: str = "numpy") -> xr.Dataset:
    """Ensemble CRPS, weighted mean over ``dim``, in the field's units.

    ``CRPS = mean_i |x_i - y| - sum_ij |x_i - x_j| / (2 M^2)`` (or ``/ (2 M (M - 1))``
    with ``fair=True``), computed in ``O(M log M)`` from the sorted members.

    Parameters
    ----------
    ensemble, truth, variables, dim, member_dim, weights, keep_attrs, tolerance, interpolate
        As for :func:`relative_rmse`; the ensemble needs >= 2 members.
    fair
        The fair (unbiased in ``M``) form.
    engine
        ``"numpy"`` (:func:`crps_ensemble_kernel`, no extra dependency) or
        ``"xskillscore"`` (``xskillscore.crps_ensemble``, the same numbers; not with
        ``fair=True``).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"u": (("member", "x"), [[0.0], [2.0]], {"units": "m"})},
    ...                 coords={"x": ("x", [0.0], {"axis": "X"})})
    >>> float(crps(ds, xr.Dataset({"u": ("x", [1.0])}, coords={"x": ds["x"]}))["u"])
    0.5
    """
    xskillscore = _engine(engine)
    if xskillscore is not None and fair:
        raise DataError(expected_found("engine for fair=True", "'numpy'", engine))
    truth, names, member = _prepared(ensemble, truth, variables, member_dim, tolerance,
                                     interpolate)
    members = _require_members(ensemble, member)
    dims, weights = _reduced_dims(dim, ensemble, member), score_weights(weights, truth)
    out = {}
    for name in names:
        if xskillscore is not None:
            field = xskillscore.crps_ensemble(truth[name], ensemble[name], member_dim=member,
                                              dim=[])
        else:
            field = xr.apply_ufunc(
                lambda values, observed: crps_ensemble_kernel(
                    np.moveaxis(values, -1, 0), observed, fair=fair),
                ensemble[name], truth[name], input_core_dims=[[member], []],
                dask="parallelized", output_dtypes=[np.float64])
        out[name] = _scored(_weighted_mean(field, dims, weights), _score_attrs(
            ensemble[name], keep_attrs, long_name=f"CRPS of {name} ({members} members)",
            units=ensemble[name].attrs.get("units", truth[name].attrs.get("units"))))
    return _dataset(out, ensemble, keep_attrs)


def crps_ensemble_kernel(members: np.ndarray, observed: np.ndarray, *,
                         fair: bool = False) -> np.ndarray:
    """CRPS of ensembles ``members`` (M, ...) against ``observed`` (...).

    Examples
    --------
    >>> float(crps_ensemble_kernel(np.array([0.0, 2.0]), np.array(1.0)))  # 1 - 2/(2*4)*2
    0.5
    """
    members = np.sort(np.asarray(members, dtype=np.float64), axis=0)
    count = members.shape[0]
    skill = np.mean(np.abs(members - observed[None]), axis=0)
    # sum_ij |x_i - x_j| = 2 sum_i (2 i - M + 1) x_(i) for sorted members (i from 0).
    ranks = (2 * np.arange(count) - count + 1).reshape(-1, *([1] * (members.ndim - 1)))
    pair_sum = 2 * np.sum(ranks * members, axis=0)
    denominator = 2 * count * (count - 1) if fair else 2 * count**2
    return skill - pair_sum / denominator


def _ranks(values: np.ndarray, observed: np.ndarray, seed: int) -> np.ndarray:
    """Rank of ``observed`` among ``values`` (members on the last axis), ties broken at
    random; -1 where a value is missing."""
    members = np.moveaxis(values, -1, 0)
    observed = np.broadcast_to(observed, members.shape[1:])
    rng = np.random.default_rng(seed)
    below = (members < observed[None]).sum(axis=0)
    ties = (members == observed[None]).sum(axis=0)
    ranks = below + np.floor(rng.random(below.shape) * (ties + 1)).astype(int)
    valid = np.isfinite(observed) & np.isfinite(members).all(axis=0)
    return np.where(valid, ranks, -1)


def rank_histogram(ensemble: xr.Dataset, truth: xr.Dataset, variable: str, *,
                   seed: int = 0, dim: Dims = None, member_dim: Hashable | None = None,
                   keep_attrs: bool = False, tolerance: float = DEFAULT_TOLERANCE,
                   interpolate: bool = False, engine: str = "numpy") -> xr.DataArray:
    """Counts of the truth's rank among the members (a flat histogram: a calibrated
    ensemble).

    Parameters
    ----------
    ensemble, truth, member_dim, keep_attrs, tolerance, interpolate
        As for :func:`relative_rmse`; the ensemble needs >= 2 members.
    variable
        The variable to rank.
    seed
        Seed of the random tie-breaking (ties of the truth with members).
    dim
        Dims to count over (default: all dims but the member dim).
    engine
        ``"numpy"`` (seeded ties) or ``"xskillscore"`` (``xskillscore.rank_histogram``;
        the same counts without ties, its ties are broken with numpy's global random state).

    Returns
    -------
    xarray.DataArray
        Counts with dim ``rank`` (``0 .. M``) after the dims not counted over; points with
        a missing value are left out.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"u": (("member", "x"), [[0.0, 0.0], [2.0, 2.0]])},
    ...                 coords={"x": ("x", [0.0, 1.0], {"axis": "X"})})
    >>> truth = xr.Dataset({"u": ("x", [1.0, 3.0])}, coords={"x": ds["x"]})
    >>> rank_histogram(ds, truth, "u").values.tolist()
    [0, 1, 1]
    """
    xskillscore = _engine(engine)
    truth, _, member = _prepared(ensemble, truth, [variable], member_dim, tolerance,
                                 interpolate)
    count = _require_members(ensemble, member)
    values, observed = ensemble[variable], truth[variable]
    dims = ([d for d in values.dims if d != member] if dim is None
            else _reduced_dims(dim, ensemble, member))
    if xskillscore is not None:
        counts = xskillscore.rank_histogram(observed, values, dim=dims, member_dim=member,
                                            keep_attrs=False)
        counts = counts.assign_coords(rank=np.arange(count + 1)).astype(np.int64)
    else:
        ranks = xr.apply_ufunc(_ranks, values, observed, input_core_dims=[[member], []],
                               kwargs={"seed": seed}, output_dtypes=[np.int64])
        counts = xr.concat([(ranks == rank).sum(dims) for rank in range(count + 1)],
                           dim="rank").assign_coords(rank=np.arange(count + 1))
        counts = counts.transpose(..., "rank")
    return _scored(counts.rename(None), _score_attrs(
        values, keep_attrs, long_name=f"rank histogram of {variable}", units="1"))


def spatial_anomaly(dataset: xr.Dataset, variables: Sequence[str]) -> xr.Dataset:
    """``dataset`` with ``<name>_anomaly`` added for each of ``variables``: the field minus
    its area-weighted spatial mean (per time and member).

    The relative RMSE of a field with a large mean (the fluid depth ``h`` of the atmosphere,
    ~5 km with ~0.4 km of variation) is small for any estimate; that of its anomaly is the
    discriminating score.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"h": ("x", np.array([9.0, 10.0, 11.0]))},
    ...                 coords={"x": ("x", np.arange(3.0), {"axis": "X"})})
    >>> spatial_anomaly(ds, ["h"])["h_anomaly"].values.tolist()
    [-1.0, 0.0, 1.0]
    """
    out = dataset.copy()
    for name in variables:
        if name not in dataset.data_vars:
            raise DataError(expected_found(f"variable {name!r}", sorted(map(str,
                                                                          dataset.data_vars)),
                                           f"no {name!r}"))
        field = dataset[name]
        mean = _weighted_mean(field, spatial_dims(field), area_weights(field))
        out[f"{name}_anomaly"] = (field - mean).assign_attrs(
            field.attrs, long_name=f"{field.attrs.get('long_name', name)} minus its spatial "
            "mean")
    return out


def parameter_error(ensemble: xr.Dataset, truth: xr.Dataset | dict[str, float],
                    names: Sequence[str], *, ranges: dict[str, float] | None = None
                    ) -> xr.Dataset:
    """Error of the posterior-mean parameters: relative to the true value, or to the prior
    range width when ``ranges`` gives it.

    Examples
    --------
    >>> import xarray as xr
    >>> ensemble = xr.Dataset({"c": ("member", [1.0, 1.4])})
    >>> round(float(parameter_error(ensemble, {"c": 1.0}, ["c"])["c"]), 6)
    0.2
    """
    out = {}
    for name in names:
        if name not in ensemble:
            raise DataError(expected_found("parameter", sorted(ensemble.data_vars), name))
        true = float(truth[name])
        estimate = _mean(ensemble[name], find_member_dim(ensemble))
        scale = ranges[name] if ranges else abs(true)
        out[name] = (abs(estimate - true) / scale).assign_attrs(
            long_name=f"relative error of {name}", units="1")
    return xr.Dataset(out)
