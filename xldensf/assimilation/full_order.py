"""Filtering with a full-order simulator: the augmented state ``[fields, parameters]``.

Every member is advanced by the simulator between observation times with its own
parameters; the parameters are estimated jointly with the state (they persist between
cycles, clamped to their physical range). The LETKF analyses the fields locally and the
global parameters with the ETKF; the EnSF runs on the standardised state (one mean and
spread per variable and per parameter).

Examples
--------
>>> import xldensf as xl
>>> truth = xl.simulate("lorenz96", runs=1, seed=1, preset="small", n_outputs=21).isel(run=0)
>>> obs = truth.ldensf.observe(stations=20, noise=0.1, seed=0)
>>> analysis = assimilate_full_order(obs, xl.simulator("lorenz96", preset="small"),
...                                  method="etkf", members=10, seed=0)
>>> analysis["x"].dims
('time', 'member', 'k')
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch
import xarray as xr

from .._version import __version__
from ..conventions import (
    MEMBER_DIM,
    convert_values,
    is_quantity,
    quantity_magnitude,
    variable_attrs,
)
from ..errors import ConfigurationError, DataError, UnknownNameError, expected_found
from ..filters import FILTERS, cycle, get_filter
from ..filters.wrappers import SplitGlobalAnalysis, StandardizedAnalysis
from ..geometry import GridGeometry, InterpolationOperator
from ..options import resolve_seed
from ..simulators.base import Simulator
from .output import EnsembleFields, analysis_dataset
from .setup import ObservationProblem, check_members, observation_problem, prior_fields
from .user_model import ForecastModel, ForecastModelAdapter
from .variational import VARIATIONAL_METHODS, assimilate_4dvar

__all__ = ["assimilate_full_order", "FULL_ORDER_METHODS", "field_attrs"]

#: Methods available with a full-order simulator as the forecast model.
FULL_ORDER_METHODS = tuple(sorted((*FILTERS, *VARIATIONAL_METHODS)))


#: A model of either kind that the full-order filters advance.
FullOrderModel = Simulator | ForecastModelAdapter


def field_attrs(model: FullOrderModel) -> dict[str, dict[str, Any]]:
    """CF attributes of each variable of ``model`` (the case's table, or the template's).

    Examples
    --------
    >>> import xldensf as xl
    >>> field_attrs(xl.simulator("lorenz96", preset="small"))["x"]["units"]
    '1'
    """
    if isinstance(model, ForecastModelAdapter):
        return model.field_attrs
    return {name: variable_attrs(model.case, name) for name in model.variables}


def _prior_ensemble(model: FullOrderModel, prior: xr.Dataset | None, members: int,
                    generator: torch.Generator, prior_spread: float) -> tuple[torch.Tensor,
                                                                             torch.Tensor]:
    """Initial fields ``(members, n_vars, *grid)`` and parameters ``(members, n_params)``."""
    if prior is None and isinstance(model, ForecastModelAdapter):
        drawn = model.draw_prior(members, generator)
        if isinstance(drawn, torch.Tensor):
            return drawn, model.draw_parameters(members, generator)
        prior = drawn
    if prior is None:
        parameters = model.draw_parameters(members, generator)
        return model.initial_state(parameters, generator), parameters
    units = {name: attrs["units"] for name, attrs in field_attrs(model).items()}
    stacked = prior_fields(model, prior, variable_units=units)
    _check_prior_grid(model, prior, tuple(stacked.shape[-len(model.grid_dims):]))
    if MEMBER_DIM in prior.dims:
        if prior.sizes[MEMBER_DIM] != members:
            raise DataError(expected_found("prior members", members, prior.sizes[MEMBER_DIM]))
        state = stacked
    else:
        spread = stacked.flatten(1).std(dim=1).reshape(-1, *([1] * len(model.grid_dims)))
        noise = torch.randn((members, *stacked.shape), generator=generator,
                            dtype=torch.float64).to(stacked)
        state = stacked[None] + prior_spread * spread * noise
    names = model.parameter_names
    if names and all(name in prior.coords or name in prior.data_vars for name in names):
        columns = [np.broadcast_to(np.asarray(prior[name].values, dtype=np.float64), (members,))
                   for name in names]
        parameters = model.check_parameters(torch.as_tensor(np.stack(columns, axis=-1)))
    else:
        parameters = model.draw_parameters(members, generator)
    return state, parameters


def _check_prior_grid(model: FullOrderModel, prior: xr.Dataset, shape: tuple[int, ...]) -> None:
    """Raise :class:`DataError` if the prior's grid is not the model's (sizes, and the
    coordinate values where the prior has them)."""
    if shape != tuple(model.grid_shape):
        raise DataError(expected_found(f"prior grid shape {tuple(model.grid_dims)}",
                                       tuple(model.grid_shape), shape))
    for coord in model.grid_coordinates:
        if coord.name in prior.coords and prior[coord.name].ndim == 1 and not np.allclose(
                np.asarray(prior[coord.name].values, dtype=np.float64),
                np.asarray(coord.values, dtype=np.float64), rtol=1e-9, atol=0.0):
            raise DataError(expected_found(f"prior coordinate {coord.name!r}", "the model's "
                                           "grid values (interpolate the prior first)",
                                           np.asarray(prior[coord.name].values)[:4].tolist()))


def _localization_points(geometry: GridGeometry, positions: np.ndarray) -> torch.Tensor:
    """Positions ``(n, n_axes)`` in the grid's units -> the LETKF's frame: (lat, lon) in
    radians on the sphere, metres on bounded planar grids, grid units when periodic."""
    points = torch.as_tensor(np.asarray(positions, dtype=np.float64))
    if geometry.sphere:
        lat_index = [axis.role for axis in geometry.axes].index("latitude")
        return torch.deg2rad(points[:, [lat_index, 1 - lat_index]])
    if all(axis.period is None for axis in geometry.axes) and geometry.distance_units == "m":
        scale = [float(convert_values(np.array(1.0), axis.units or "1", "m"))
                 for axis in geometry.axes]
        return points * torch.tensor(scale, dtype=torch.float64)
    return points


def _localization_settings(geometry: GridGeometry, settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with the distance kind (and period or radius) matching the grid; a
    Quantity ``localization`` converted to the LETKF's distance units (metres on the sphere
    and on planar grids with length units, else the grid's units)."""
    radius = settings.get("localization")
    if is_quantity(radius):
        bounded = all(axis.period is None for axis in geometry.axes)
        target = "m" if geometry.sphere or (bounded and geometry.distance_units == "m") \
            else (geometry.axes[0].units or "1")
        settings = {**settings, "localization": float(quantity_magnitude(
            radius, target, "localization", difference=True))}
    if geometry.sphere:
        extra: dict[str, Any] = {"distance": "sphere", "sphere_radius": geometry.radius}
    elif any(axis.period is not None for axis in geometry.axes):
        periods = [axis.period if axis.period is not None else math.inf
                   for axis in geometry.axes]
        extra = {"distance": "periodic",
                 "period": periods[0] if len(periods) == 1
                 else torch.tensor(periods, dtype=torch.float64)}
    else:
        extra = {"distance": "planar"}
    return {**extra, **settings}


def assimilate_full_order(
    observations: xr.Dataset,
    model: Simulator | ForecastModel,
    *,
    method: str | None = None,
    members: int | None = None,
    prior: xr.Dataset | None = None,
    prior_spread: float = 0.1,
    obs_error: Any = None,
    seed: int | None = None,
    return_forecasts: bool = False,
    progress: bool | None = None,
    kernel: Any = None,
    **settings: Any,
) -> xr.Dataset:
    """Assimilate station observations into ``model`` and return the analysis ensemble.

    Parameters
    ----------
    observations
        CF timeSeries Dataset, dims ``(time, station)`` (see
        :func:`xldensf.observations.observe`); NaN values are skipped.
    model
        A full-order simulator (``xl.simulator(case, ...)``) or a user's
        :class:`~xldensf.assimilation.user_model.ForecastModel` (filters only, no 4dvar).
    method
        Filter name: ``"enkf"``, ``"etkf"``, ``"letkf"`` or ``"ensf"`` (default
        ``"letkf"`` for full-order models), or ``"4dvar"``
        (:func:`~xldensf.assimilation.variational.assimilate_4dvar` and its settings).
    members
        Ensemble size (>= 2, default 20); with ``"4dvar"`` the size of its ensemble of
        perturbed minimisations (default 1).
    prior
        Initial ensemble: a Dataset with a ``member`` dim, or one state (members are drawn
        around it with ``prior_spread``). Parameters are read from coordinates of the
        same names if present, else drawn from the case's prior. Default: states and
        parameters drawn from the case's prior (a user model's ``prior(members, seed)``).
    prior_spread
        Relative spread (fraction of each variable's spatial standard deviation) used when
        ``prior`` is a single state.
    obs_error
        Override of the observation error standard deviation (number in the
        observations' units, pint Quantity, or a mapping by variable).
    seed
        Seed of the prior draw and of stochastic filters; recorded in the attrs.
    return_forecasts
        Also return the forecast ensembles (variables ``<name>_forecast``).
    progress
        Progress bar over cycles; ``None`` follows :func:`xldensf.set_options`.
    kernel
        An analysis of the augmented state to use instead of ``method``'s filter (any
        object with the filters' ``name`` and ``analysis`` method, e.g. the Latent-EnSF
        analysis of :mod:`~xldensf.assimilation.latent_ensf`); ``method`` then only names it.
    **settings
        Settings of the filter (e.g. ``inflation``, ``localization`` as a radius in the
        grid's distance units: metres on planar and spherical grids, index units on
        Lorenz-96).

    Returns
    -------
    xarray.Dataset
        Analysis members ``(time, member, *grid)`` in the observations' units (model units
        for unobserved variables), parameter members ``(time, member)``, attrs recording
        method, settings, seed and version.

    Raises
    ------
    UnknownNameError
        An unknown method or observed variable.
    ConfigurationError, DataError
        Fewer than 2 members; a bad prior or observation Dataset.
    """
    # Long by its docstring (every public option documented); the body is 59 lines of
    # sequential steps (check, read, build the kernel, cycle, write) kept in one place.
    method = "letkf" if method is None else method
    user = not isinstance(model, Simulator)
    if user:
        if method in VARIATIONAL_METHODS:
            raise ConfigurationError(expected_found("method with a user forecast model",
                                                    sorted(FILTERS), method))
        model = ForecastModelAdapter(model)
    if method in VARIATIONAL_METHODS:
        if return_forecasts:
            raise ConfigurationError(expected_found("return_forecasts with 4dvar", False, True))
        return assimilate_4dvar(observations, model, method=method, members=members,
                                prior=prior, obs_error=obs_error, seed=seed, progress=progress,
                                **settings)
    if method not in FILTERS and kernel is None:
        raise UnknownNameError(expected_found("method", FULL_ORDER_METHODS, method))
    members = check_members(20 if members is None else members)
    seed = resolve_seed(seed)
    generator = torch.Generator().manual_seed(int(seed))
    geometry = model.geometry if user else GridGeometry.from_simulator(model)
    attrs_by_name = field_attrs(model)
    problem = observation_problem(
        observations, model, obs_error=obs_error, geometry=geometry,
        variable_units={name: attrs["units"] for name, attrs in attrs_by_name.items()})
    recorded_settings = dict(settings)
    fields, parameters = _prior_ensemble(model, prior, members, generator, prior_spread)

    n_vars, n_grid = len(model.variables), int(np.prod(model.grid_shape))
    n_fields, n_params = n_vars * n_grid, parameters.shape[1]
    variable_indices = [model.variables.index(name) for name in problem.variables]
    operators = _station_operators(model, geometry, problem, variable_indices,
                                   n_fields + n_params)
    positions: dict[str, Any] = {}
    if method == "letkf":
        settings = _localization_settings(geometry, settings)
        positions = _letkf_positions(geometry, problem, n_vars, n_params, len(variable_indices))
    kernel = _kernel(method, settings, n_vars, n_grid, n_params) if kernel is None else kernel

    low = model.tensor([spec.valid_low for spec in model.parameter_specs])
    high = model.tensor([spec.valid_high for spec in model.parameter_specs])

    def advance(ensemble: torch.Tensor, t0: float, duration: float) -> torch.Tensor:
        state = ensemble[:, :n_fields].reshape(-1, *model.state_shape)
        # The analysis may push a parameter outside its physical range; clamp it there.
        params = torch.minimum(torch.maximum(ensemble[:, n_fields:], low), high)
        advanced = model.advance(state.contiguous(), params, t0, duration)
        return torch.cat([advanced.reshape(len(ensemble), -1), params], dim=1)

    initial = torch.cat([fields.reshape(members, -1), parameters], dim=1).to(model.dtype)
    values = problem.values.to(dtype=model.dtype, device=model.device)
    obs_std = problem.obs_std.to(dtype=model.dtype, device=model.device)
    result = cycle(kernel, advance, initial, problem.times.copy(), values,
                   operators, obs_std, generator=generator, return_forecasts=return_forecasts,
                   progress=progress, **positions)
    attrs = {
        "title": f"xldensf {method} analysis",
        "xldensf_method": method,
        "xldensf_settings": json.dumps(recorded_settings, sort_keys=True, default=str),
        "xldensf_members": members,
        "xldensf_seed": int(seed),
        "xldensf_version": __version__,
        "xldensf_case": model.case,
        "xldensf_forecast_model": type(model.model if user else model).__name__,
        "xldensf_observed": " ".join(problem.variables),
    }
    ensembles = {"": result.analysis}
    if return_forecasts:
        ensembles["_forecast"] = result.forecast
    return _write(model, problem, ensembles, n_fields, attrs)


def _station_operators(model: FullOrderModel, geometry: GridGeometry, problem: ObservationProblem,
                       variable_indices: list[int], n_state: int) -> Any:
    """The sparse observation matrix of the stations (one per cycle if they move)."""
    def operator_for(positions: np.ndarray) -> torch.Tensor:
        interpolation = InterpolationOperator.from_grid(geometry, positions)
        return interpolation.selection(variable_indices, n_state).to(model.dtype)

    if problem.positions.moving:
        return [operator_for(frame) for frame in problem.positions.values]
    return operator_for(problem.positions.values)


def _letkf_positions(geometry: GridGeometry, problem: ObservationProblem, n_vars: int,
                     n_params: int, n_observed: int) -> dict[str, Any]:
    """``state_positions`` and ``observation_positions`` of the LETKF in its distance frame.

    Parameters are global: they sit at a point whose distance to every station is zero,
    i.e. at each station itself, which the LETKF cannot express; their rows are analysed by
    the global ETKF instead (:class:`~xldensf.filters.wrappers.SplitGlobalAnalysis`), so any
    position will do for them.
    """
    grid_points = _localization_points(geometry, geometry.grid_points())
    state_positions = torch.cat([grid_points.repeat(n_vars, 1),
                                 grid_points[:1].repeat(n_params, 1)])
    moving = problem.positions.moving
    frames = problem.positions.values if moving else [problem.positions.values]
    observation_positions = [_localization_points(geometry, frame).repeat(n_observed, 1)
                             for frame in frames]
    return {"state_positions": state_positions,
            "observation_positions": observation_positions if moving
            else observation_positions[0]}


def _kernel(method: str, settings: dict[str, Any], n_vars: int, n_grid: int,
            n_params: int) -> Any:
    """The filter for ``method``, wrapped for the augmented state where needed."""
    if method == "ensf":
        # Clip scores (+-1000, as in the EnSF paper) so precise observations cannot make
        # the explicit reverse-time steps unstable; users may override.
        settings.setdefault("score_clip", 1e3)
        blocks = torch.cat([torch.arange(n_vars).repeat_interleave(n_grid),
                            n_vars + torch.arange(n_params)])
        return StandardizedAnalysis(get_filter(method, **settings), blocks=blocks)
    kernel = get_filter(method, **settings)
    if method == "letkf":
        return SplitGlobalAnalysis(kernel, get_filter("etkf", inflation=kernel.inflation),
                                   n_vars * n_grid)
    return kernel


def _write(model: FullOrderModel, problem: ObservationProblem, ensembles: dict[str, torch.Tensor],
           n_fields: int, attrs: dict[str, Any]) -> xr.Dataset:
    """The analysis Dataset of ensembles ``(n_cycles, members, n_fields + n_params)``."""
    space_coords = {coord.name: (coord.name, coord.values, coord.attrs)
                    for coord in model.grid_coordinates}
    written = {}
    for suffix, ensemble in ensembles.items():
        array = ensemble.detach().cpu().numpy()
        fields = array[..., :n_fields].reshape(*array.shape[:2], *model.state_shape)
        written[suffix] = EnsembleFields(
            fields={name: (fields[:, :, i], field_attrs(model)[name])
                    for i, name in enumerate(model.variables)},
            parameters={spec.name: (array[..., n_fields + j],
                                    {"units": spec.units, "long_name": spec.long_name})
                        for j, spec in enumerate(model.parameter_specs)})
    return analysis_dataset(problem, space_coords, tuple(model.grid_dims), written, attrs)
