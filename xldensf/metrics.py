"""Verification metrics of analyses against a truth (the scores of the LD-EnSF paper).

Two layers, as in xskillscore: numpy kernels that know axes only, and xarray wrappers that
find the spatial axes by CF meaning, weight by cos(latitude) on the sphere, and keep every
other dimension (time, run).

- :func:`relative_rmse` — ``sqrt(sum_x w (mean - truth)^2 / sum_x w truth^2)`` per variable
  and time;
- :func:`rmse`, :func:`spread`, :func:`spread_skill_ratio` — of the ensemble mean and of the
  member deviations, area-weighted;
- :func:`crps` — the ensemble CRPS, ``E|X - y| - E|X - X'| / 2`` (fair form optional);
- :func:`rank_histogram` — counts of the truth's rank among the members;
- :func:`parameter_error` — relative error of posterior-mean parameters.

Examples
--------
>>> import numpy as np, xarray as xr
>>> truth = xr.Dataset({"u": (("time", "x"), np.ones((2, 4)))},
...                    coords={"x": ("x", np.arange(4.0), {"axis": "X"})})
>>> members = truth.expand_dims(member=3) * xr.DataArray([0.9, 1.0, 1.1], dims="member")
>>> relative_rmse(members, truth)["u"].values.round(6).tolist()
[0.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import cf_xarray  # noqa: F401  (registers ds.cf)
import numpy as np
import xarray as xr

from .conventions import MEMBER_DIM
from .errors import DataError, expected_found

__all__ = [
    "spatial_dims",
    "area_weights",
    "relative_rmse",
    "rmse",
    "spread",
    "spread_skill_ratio",
    "crps",
    "rank_histogram",
    "parameter_error",
    "spatial_anomaly",
]


def spatial_dims(obj: xr.Dataset | xr.DataArray) -> list[Hashable]:
    """Dimensions of the spatial axes (CF X/Y or latitude/longitude), or ``station``."""
    found: list[Hashable] = []
    for key in ("latitude", "longitude", "X", "Y"):
        try:
            coordinate = obj.cf[key]
        except KeyError:
            continue
        for dim in coordinate.dims:
            if dim not in found and dim in obj.dims:
                found.append(dim)
    if not found and "station" in obj.dims:
        found = ["station"]
    if not found:
        raise DataError(expected_found("spatial axes", "CF X/Y or latitude/longitude "
                                       "coordinates (or a station dim)", sorted(obj.dims)))
    return found


def area_weights(obj: xr.Dataset | xr.DataArray) -> xr.DataArray | None:
    """cos(latitude) weights on lat/lon grids, ``None`` elsewhere (equal weights)."""
    try:
        latitude = obj.cf["latitude"]
    except KeyError:
        return None
    return np.cos(np.deg2rad(latitude)).clip(min=0.0)


def _weighted_mean(values: xr.DataArray, dims: Sequence[Hashable],
                   weights: xr.DataArray | None) -> xr.DataArray:
    if weights is None:
        return values.mean(dims, skipna=True)
    return values.weighted(weights.fillna(0.0)).mean(dims, skipna=True)


def _scored_variables(ensemble: xr.Dataset, truth: xr.Dataset,
                      variables: Sequence[str] | None) -> list[str]:
    gridded = [str(name) for name, v in ensemble.data_vars.items()
               if set(spatial_dims(ensemble)) <= set(v.dims)]
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


def _align(ensemble: xr.Dataset, truth: xr.Dataset) -> tuple[xr.Dataset, xr.Dataset]:
    """Select the truth at the analysis times (by value) and check the grids agree."""
    if "time" in ensemble.dims and "time" in truth.dims:
        try:
            truth = truth.sel(time=ensemble["time"])
        except KeyError as err:
            raise DataError(expected_found("truth times", "every analysis time",
                                           "missing ones")) from err
    return xr.align(ensemble, truth, join="override", exclude={MEMBER_DIM, "time"})


def _mean(ensemble: xr.Dataset) -> xr.Dataset:
    return ensemble.mean(MEMBER_DIM) if MEMBER_DIM in ensemble.dims else ensemble


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


def relative_rmse(ensemble: xr.Dataset, truth: xr.Dataset,
                  variables: Sequence[str] | None = None) -> xr.Dataset:
    """Relative RMSE of the ensemble mean per variable and time (area-weighted on the sphere).

    Parameters
    ----------
    ensemble
        Analysis (with or without a ``member`` dim).
    truth
        The true fields on the same grid (times are selected by value).
    variables
        Variables to score (default: all in both with the spatial axes).

    Returns
    -------
    xarray.Dataset
        One variable per scored variable, dims of the input less space and member.
    """
    ensemble, truth = _align(ensemble, truth)
    variables = _scored_variables(ensemble, truth, variables)
    dims = spatial_dims(truth)
    weights = area_weights(truth)
    mean = _mean(ensemble)
    out = {}
    for name in variables:
        error = _weighted_mean((mean[name] - truth[name]) ** 2, dims, weights)
        scale = _weighted_mean(truth[name] ** 2, dims, weights)
        out[name] = np.sqrt(error / scale).assign_attrs(
            long_name=f"relative RMSE of {name}", units="1")
    return xr.Dataset(out)


def rmse(ensemble: xr.Dataset, truth: xr.Dataset,
         variables: Sequence[str] | None = None) -> xr.Dataset:
    """RMSE of the ensemble mean per variable and time, in the variables' units."""
    ensemble, truth = _align(ensemble, truth)
    variables = _scored_variables(ensemble, truth, variables)
    dims, weights, mean = spatial_dims(truth), area_weights(truth), _mean(ensemble)
    return xr.Dataset({
        name: np.sqrt(_weighted_mean((mean[name] - truth[name]) ** 2, dims, weights))
        .assign_attrs(long_name=f"RMSE of {name}", units=truth[name].attrs.get("units", ""))
        for name in variables})


def spread(ensemble: xr.Dataset, variables: Sequence[str] | None = None) -> xr.Dataset:
    """Ensemble spread: area-weighted RMS of the member standard deviation (ddof = 1)."""
    if MEMBER_DIM not in ensemble.dims or ensemble.sizes[MEMBER_DIM] < 2:
        raise DataError(expected_found("ensemble", "a member dim with >= 2 members",
                                       dict(ensemble.sizes)))
    dims, weights = spatial_dims(ensemble), area_weights(ensemble)
    names = variables if variables is not None else [
        name for name, v in ensemble.data_vars.items() if set(dims) <= set(v.dims)]
    return xr.Dataset({
        name: np.sqrt(_weighted_mean(ensemble[name].var(MEMBER_DIM, ddof=1), dims, weights))
        for name in names})


def spread_skill_ratio(ensemble: xr.Dataset, truth: xr.Dataset,
                       variables: Sequence[str] | None = None) -> xr.Dataset:
    """Spread / RMSE of the mean; about 1 for a calibrated ensemble (with the
    ``sqrt((M + 1) / M)`` finite-ensemble factor applied to the spread)."""
    error = rmse(ensemble, truth, variables)
    members = ensemble.sizes[MEMBER_DIM]
    spreads = spread(_align(ensemble, truth)[0], list(error.data_vars))
    return np.sqrt((members + 1) / members) * spreads / error


def crps(ensemble: xr.Dataset, truth: xr.Dataset, variables: Sequence[str] | None = None,
         *, fair: bool = False) -> xr.Dataset:
    """Ensemble CRPS, area-weighted mean over space, per variable and time.

    ``CRPS = mean_i |x_i - y| - sum_ij |x_i - x_j| / (2 M^2)`` (or ``/ (2 M (M - 1))``
    with ``fair=True``), computed in ``O(M log M)`` from the sorted members.
    """
    ensemble, truth = _align(ensemble, truth)
    variables = _scored_variables(ensemble, truth, variables)
    dims, weights = spatial_dims(truth), area_weights(truth)
    members = ensemble.sizes[MEMBER_DIM]
    out = {}
    for name in variables:
        values = ensemble[name].transpose(MEMBER_DIM, ...)
        observed = truth[name].broadcast_like(values.isel({MEMBER_DIM: 0}, drop=True))
        kernel = crps_ensemble_kernel(values.values, observed.transpose(*values.dims[1:]).values,
                                      fair=fair)
        field = xr.DataArray(kernel, dims=values.dims[1:],
                             coords={d: values[d] for d in values.dims[1:] if d in values.coords})
        out[name] = _weighted_mean(field, dims, weights).assign_attrs(
            long_name=f"CRPS of {name} ({members} members)",
            units=truth[name].attrs.get("units", ""))
    return xr.Dataset(out)


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


def rank_histogram(ensemble: xr.Dataset, truth: xr.Dataset, variable: str,
                   *, seed: int = 0) -> xr.DataArray:
    """Counts of the truth's rank among the members, over all points and times.

    Ties are broken at random (``seed``). Returns a DataArray with dim ``rank``
    (``M + 1`` bins); a flat histogram means a calibrated ensemble.
    """
    ensemble, truth = _align(ensemble, truth)
    _scored_variables(ensemble, truth, [variable])
    values = ensemble[variable].transpose(MEMBER_DIM, ...)
    observed = truth[variable].broadcast_like(values.isel({MEMBER_DIM: 0}, drop=True))
    observed = observed.transpose(*values.dims[1:]).values
    members = values.values
    rng = np.random.default_rng(seed)
    below = (members < observed[None]).sum(axis=0)
    ties = (members == observed[None]).sum(axis=0)
    ranks = below + np.floor(rng.random(below.shape) * (ties + 1)).astype(int)
    valid = np.isfinite(observed) & np.isfinite(members).all(axis=0)
    count = members.shape[0]
    counts = np.bincount(ranks[valid].ravel(), minlength=count + 1)
    return xr.DataArray(counts, dims="rank", coords={"rank": np.arange(count + 1)},
                        attrs={"long_name": f"rank histogram of {variable}"})


def parameter_error(ensemble: xr.Dataset, truth: xr.Dataset | dict[str, float],
                    names: Sequence[str], *, ranges: dict[str, float] | None = None
                    ) -> xr.Dataset:
    """Error of the posterior-mean parameters: relative to the true value, or to the prior
    range width when ``ranges`` gives it."""
    out = {}
    for name in names:
        if name not in ensemble:
            raise DataError(expected_found("parameter", sorted(ensemble.data_vars), name))
        true = float(truth[name])
        estimate = ensemble[name].mean(MEMBER_DIM) if MEMBER_DIM in ensemble[name].dims \
            else ensemble[name]
        scale = ranges[name] if ranges else abs(true)
        out[name] = (abs(estimate - true) / scale).assign_attrs(
            long_name=f"relative error of {name}", units="1")
    return xr.Dataset(out)
