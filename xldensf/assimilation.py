"""Assimilation of station observations into a model: the xarray layer.

:func:`assimilate` (``obs.ldensf.assimilate(model, ...)``) reads a CF timeSeries observation
Dataset (as made by :func:`xldensf.observations.observe`), turns it into tensors in the
model's units (:func:`observation_problem`), runs forecast/analysis cycles with one of the
filter kernels of :mod:`xldensf.filters`, and returns the analysis ensemble as a Dataset in
the observations' units.

With a full-order simulator (``xl.simulator(case)``) the filters work on the augmented
state ``[fields, parameters]``: every member is advanced by the simulator between
observation times with its own parameters, and the parameters are estimated jointly with
the state (they persist between cycles).

Examples
--------
>>> import xldensf as xl
>>> truth = xl.simulate("lorenz96", runs=1, seed=1, preset="small", n_outputs=21).isel(run=0)
>>> obs = truth.ldensf.observe(stations=20, noise=0.1, seed=0)
>>> analysis = obs.ldensf.assimilate(xl.simulator("lorenz96", preset="small"),
...                                  method="etkf", members=10, seed=0)
>>> analysis["x"].dims
('time', 'member', 'k')
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cf_xarray  # noqa: F401  (registers ds.cf)
import numpy as np
import torch
import xarray as xr

from ._version import __version__
from .conventions import (
    MEMBER_DIM,
    STATION_DIM,
    convert_values,
    coordinate_attrs,
    variable_attrs,
)
from .errors import ConfigurationError, DataError, UnknownNameError, expected_found
from .filters import FILTERS, cycle, get_filter
from .geometry import GridGeometry, InterpolationOperator, StationPositions
from .options import resolve_seed
from .simulators.base import Simulator

__all__ = ["ObservationProblem", "observation_problem", "assimilate", "FULL_ORDER_METHODS"]

#: Methods available with a full-order simulator as the forecast model.
FULL_ORDER_METHODS = tuple(sorted(FILTERS))


@dataclass
class ObservationProblem:
    """Observations as tensors in the model's units.

    Attributes
    ----------
    variables
        Observed variable names, in the order of the observation vector blocks.
    times
        Observation times in the model's time units, ``(n_cycles,)``.
    values
        ``(n_cycles, n_variables * n_stations)``, variable-major; NaN = missing.
    obs_std
        Error standard deviations of the same shape as ``values``.
    positions
        Station positions in the grid's units (fixed or moving).
    observation_units
        Units of each variable in the observation Dataset (the output units).
    time_coordinate
        The observation Dataset's time coordinate (returned unchanged in the output).
    """

    variables: tuple[str, ...]
    times: np.ndarray
    values: torch.Tensor
    obs_std: torch.Tensor
    positions: StationPositions
    observation_units: dict[str, str]
    time_coordinate: xr.DataArray

    @property
    def n_stations(self) -> int:
        return self.positions.n_stations


def _observed_variables(observations: xr.Dataset, time_name: str) -> list[str]:
    ancillary = set()
    for variable in observations.data_vars.values():
        ancillary.update(str(variable.attrs.get("ancillary_variables", "")).split())
    return [name for name, variable in observations.data_vars.items()
            if STATION_DIM in variable.dims and time_name in variable.dims
            and name not in ancillary]


def _error_std(observations: xr.Dataset, name: str, obs_error: Any, units: str) -> float:
    """Observation error standard deviation of ``name`` in ``units``."""
    choice = obs_error.get(name) if isinstance(obs_error, Mapping) else obs_error
    if choice is None:
        ancillary = str(observations[name].attrs.get("ancillary_variables", "")).split()
        if not ancillary or ancillary[0] not in observations:
            raise DataError(expected_found(
                f"error standard deviation of {name!r}",
                "an ancillary variable (as written by observe) or obs_error=", "neither"))
        std = observations[ancillary[0]]
        if std.size != 1:
            raise DataError(expected_found(f"{ancillary[0]} size", 1, std.size))
        return float(convert_values(float(std), std.attrs.get("units", units), units,
                                    f"units of {ancillary[0]}"))
    if hasattr(choice, "units") and hasattr(choice, "magnitude"):
        return float(np.asarray(choice.to(units).magnitude))
    value = float(choice)
    if not value > 0:
        raise DataError(expected_found(f"obs_error for {name!r}", "a positive value", value))
    return value


def observation_problem(observations: xr.Dataset, model: Any, *, obs_error: Any = None,
                        variables: tuple[str, ...] | None = None,
                        variable_units: Mapping[str, str] | None = None,
                        geometry: GridGeometry | None = None,
                        time_units: str | None = None) -> ObservationProblem:
    """Read an observation Dataset into tensors in the model's units.

    Parameters
    ----------
    observations
        CF timeSeries Dataset with dims ``(time, station)``.
    model
        The forecast model (its ``variables``, ``case``, ``time_units`` and grid are used
        unless given explicitly).
    obs_error
        Override of the error standard deviation: a number (in each variable's observation
        units), a pint Quantity, or a mapping variable -> either.
    variables, variable_units, geometry, time_units
        The model's variables, their units, its grid geometry and time units (defaults:
        read from a full-order simulator).

    Raises
    ------
    DataError
        No ``station`` dim, no time axis, times before the prior, all values missing.
    UnknownNameError
        An observed variable that the model does not have.
    UnitsError
        Units that do not convert to the model's.
    """
    if not isinstance(observations, xr.Dataset) or STATION_DIM not in observations.dims:
        found = sorted(observations.dims) if isinstance(observations, xr.Dataset) else type(
            observations).__name__
        raise DataError(expected_found("observation dims", "(time, station)", found))
    if "T" not in observations.cf.axes:
        raise DataError(expected_found("observation time axis", "a coordinate with CF axis T",
                                       sorted(observations.coords)))
    time_coordinate = observations.cf["T"]
    time_name = time_coordinate.name
    model_variables = tuple(variables if variables is not None else model.variables)
    case = getattr(model, "case", None)
    if variable_units is None:
        variable_units = {name: variable_attrs(case, name)["units"] for name in model_variables}
    geometry = geometry if geometry is not None else GridGeometry.from_simulator(model)
    time_units = time_units if time_units is not None else model.time_units

    observed = _observed_variables(observations, time_name)
    if not observed:
        raise DataError(expected_found("observed variables", "variables with dims (time, "
                                       "station)", sorted(observations.data_vars)))
    unknown = [name for name in observed if name not in model_variables]
    if unknown:
        raise UnknownNameError(expected_found("observed variables", list(model_variables),
                                              unknown))
    times = np.asarray(time_coordinate.values)
    if np.issubdtype(times.dtype, np.timedelta64):
        times = times / np.timedelta64(1, "s")
        source_time_units = "s"
    else:
        source_time_units = time_coordinate.attrs.get("units", time_units)
    if not np.issubdtype(np.asarray(times).dtype, np.number):
        raise DataError(expected_found("observation times", "numbers or timedeltas since the "
                                       "prior (datetimes are not supported)", times.dtype))
    times = np.asarray(convert_values(np.asarray(times, dtype=np.float64), source_time_units,
                                      time_units, "units of the observation times"))
    if (times < 0).any():
        raise DataError(expected_found("observation times", "times >= 0 (the prior is at 0)",
                                       float(times.min())))
    if (np.diff(times) < 0).any():
        raise DataError(expected_found("observation times", "increasing", times.tolist()))

    blocks, stds, units_out = [], [], {}
    for name in observed:
        variable = observations[name].transpose(time_name, STATION_DIM)
        source_units = variable.attrs.get("units")
        if source_units is None:
            raise DataError(expected_found(f"units of observed {name!r}", "a units attribute",
                                           None))
        units_out[name] = source_units
        target = variable_units[name]
        blocks.append(convert_values(variable.values.astype(np.float64), source_units, target,
                                     f"units of observed {name!r}"))
        std = _error_std(observations, name, obs_error, source_units)
        stds.append(np.full(variable.shape, float(convert_values(np.array(std), source_units,
                                                                   target, "error units"))))
    values = np.concatenate(blocks, axis=1)
    if np.isnan(values).all():
        raise DataError(expected_found("observation values", "at least one finite value",
                                       "all missing (NaN)"))
    positions = geometry.station_positions(observations, times=time_coordinate)
    return ObservationProblem(
        variables=tuple(observed), times=times, values=torch.as_tensor(values),
        obs_std=torch.as_tensor(np.concatenate(stds, axis=1)), positions=positions,
        observation_units=units_out, time_coordinate=time_coordinate)


def _selection_matrix(interpolation: InterpolationOperator, variable_indices: list[int],
                      n_state: int) -> torch.Tensor:
    """Sparse ``(len(variable_indices) * n_stations, n_state)`` operator observing the
    listed variables of a variable-major flattened state."""
    n_grid = interpolation.matrix.shape[1]
    indices, values = interpolation.matrix.indices(), interpolation.matrix.values()
    n_stations = interpolation.n_stations
    blocks = []
    for block, variable in enumerate(variable_indices):
        shift = torch.tensor([[block * n_stations], [variable * n_grid]])
        blocks.append(indices + shift)
    return torch.sparse_coo_tensor(
        torch.cat(blocks, dim=1), values.repeat(len(variable_indices)),
        (len(variable_indices) * n_stations, n_state), check_invariants=True).coalesce()


def _check_members(members: Any) -> int:
    if isinstance(members, bool) or not isinstance(members, (int, np.integer)) or members < 2:
        raise ConfigurationError(expected_found("members", "an integer >= 2", members))
    return int(members)


def _prior_ensemble(model: Simulator, prior: xr.Dataset | None, members: int,
                    generator: torch.Generator, prior_spread: float) -> tuple[torch.Tensor,
                                                                             torch.Tensor]:
    """Initial fields ``(members, n_vars, *grid)`` and parameters ``(members, n_params)``."""
    if prior is None:
        parameters = model.draw_parameters(members, generator)
        return model.initial_state(parameters, generator), parameters
    if not isinstance(prior, xr.Dataset):
        raise DataError(expected_found("prior", "an xarray Dataset", type(prior).__name__))
    missing = [name for name in model.variables if name not in prior.data_vars]
    if missing:
        raise DataError(expected_found("prior variables", list(model.variables),
                                       sorted(prior.data_vars)))
    fields = []
    for name in model.variables:
        variable = prior[name]
        units = variable.attrs.get("units", variable_attrs(model.case, name)["units"])
        dims = ((MEMBER_DIM,) if MEMBER_DIM in variable.dims else ()) + model.grid_dims
        values = convert_values(variable.transpose(*dims).values.astype(np.float64), units,
                                variable_attrs(model.case, name)["units"], f"units of {name}")
        fields.append(values)
    stacked = model.tensor(np.stack(fields, axis=-1 - len(model.grid_dims)))
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
    if all(name in prior.coords or name in prior.data_vars for name in names):
        columns = [np.broadcast_to(np.asarray(prior[name].values, dtype=np.float64), (members,))
                   for name in names]
        parameters = model.check_parameters(torch.as_tensor(np.stack(columns, axis=-1)))
    else:
        parameters = model.draw_parameters(members, generator)
    return state, parameters


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
    """``settings`` with the distance kind (and period or radius) matching the grid."""
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


def assimilate(
    observations: xr.Dataset,
    model: Any,
    *,
    method: str | None = None,
    members: int = 20,
    prior: xr.Dataset | None = None,
    prior_spread: float = 0.1,
    obs_error: Any = None,
    seed: int | None = None,
    return_forecasts: bool = False,
    progress: bool | None = None,
    **settings: Any,
) -> xr.Dataset:
    """Assimilate station observations into ``model`` and return the analysis ensemble.

    Parameters
    ----------
    observations
        CF timeSeries Dataset, dims ``(time, station)`` (see
        :func:`xldensf.observations.observe`); NaN values are skipped.
    model
        A full-order simulator (``xl.simulator(case, ...)``), or a trained
        :class:`~xldensf.surrogate.LatentModel` for LD-EnSF (then see
        :func:`xldensf.latent_assimilation.assimilate_latent` for the settings).
    method
        Filter name: ``"enkf"``, ``"etkf"``, ``"letkf"`` or ``"ensf"`` (default
        ``"letkf"`` for full-order models).
    members
        Ensemble size (>= 2).
    prior
        Initial ensemble: a Dataset with a ``member`` dim, or one state (members are drawn
        around it with ``prior_spread``). Parameters are read from coordinates of the
        same names if present, else drawn from the case's prior. Default: states and
        parameters drawn from the case's prior.
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
    """
    from .surrogate import LatentModel

    if isinstance(model, LatentModel):  # LD-EnSF in the surrogate's latent space
        from .latent_assimilation import assimilate_latent

        if prior is not None:
            raise ConfigurationError(expected_found("prior with a LatentModel", "None (the "
                                                    "training range)", type(prior).__name__))
        return assimilate_latent(observations, model, method=method or "ld-ensf",
                                 members=members, obs_error=obs_error, seed=seed,
                                 return_forecasts=return_forecasts, progress=progress,
                                 **settings)
    if not isinstance(model, Simulator):
        raise ConfigurationError(expected_found(
            "model", "a full-order simulator (xl.simulator(...)) or a LatentModel",
            type(model).__name__))
    members = _check_members(members)
    method = "letkf" if method is None else method
    if method not in FILTERS:
        raise UnknownNameError(expected_found("method", FULL_ORDER_METHODS, method))
    seed = resolve_seed(seed)
    generator = torch.Generator().manual_seed(int(seed))
    geometry = GridGeometry.from_simulator(model)
    problem = observation_problem(observations, model, obs_error=obs_error, geometry=geometry)
    recorded_settings = dict(settings)
    fields, parameters = _prior_ensemble(model, prior, members, generator, prior_spread)

    n_vars, n_grid = len(model.variables), int(np.prod(model.grid_shape))
    n_fields, n_params = n_vars * n_grid, parameters.shape[1]
    variable_indices = [model.variables.index(name) for name in problem.variables]
    n_state = n_fields + n_params

    def operator_for(positions: np.ndarray) -> torch.Tensor:
        interpolation = InterpolationOperator.from_grid(geometry, positions)
        return _selection_matrix(interpolation, variable_indices, n_state).to(model.dtype)

    moving = problem.positions.moving
    operators = ([operator_for(p) for p in problem.positions.values] if moving
                 else operator_for(problem.positions.values))
    state_positions = observation_positions = None
    if method == "letkf":
        settings = _localization_settings(geometry, settings)
        grid_points = _localization_points(geometry, geometry.grid_points())
        # Parameters are global: they sit at a point whose distance to every station is
        # zero, i.e. at each station itself, which the LETKF cannot express; the augmented
        # rows are therefore analysed by the global ETKF below instead.
        # The parameter rows need a position too; any will do since they are replaced.
        state_positions = torch.cat([grid_points.repeat(n_vars, 1),
                                     grid_points[:1].repeat(n_params, 1)])
        station_frames = (problem.positions.values if moving
                          else [problem.positions.values])
        converted = [_localization_points(geometry, frame) for frame in station_frames]
        observation_positions = [c.repeat(len(variable_indices), 1) for c in converted]
        if not moving:
            observation_positions = observation_positions[0]
    if method == "ensf":
        # Clip scores (REFERENCES: +-1000) so precise observations cannot make the
        # explicit reverse-time steps unstable; users may override.
        settings.setdefault("score_clip", 1e3)
    kernel = get_filter(method, **settings)

    low = model.tensor([spec.valid_low for spec in model.parameter_specs])
    high = model.tensor([spec.valid_high for spec in model.parameter_specs])

    def advance(ensemble: torch.Tensor, t0: float, duration: float) -> torch.Tensor:
        state = ensemble[:, :n_fields].reshape(-1, *model.state_shape)
        # The analysis may push a parameter outside its physical range; clamp it there.
        params = torch.minimum(torch.maximum(ensemble[:, n_fields:], low), high)
        advanced = model.advance(state.contiguous(), params, t0, duration)
        return torch.cat([advanced.reshape(len(ensemble), -1), params], dim=1)

    initial = torch.cat([fields.reshape(members, -1), parameters], dim=1)
    values = problem.values.to(dtype=model.dtype, device=model.device)
    obs_std = problem.obs_std.to(dtype=model.dtype, device=model.device)
    initial = initial.to(model.dtype)
    if method == "letkf":
        kernel = _LETKFWithGlobalParameters(kernel, n_fields)
    if method == "ensf":
        kernel = _StandardizedEnSF(kernel, n_vars, n_grid, problem.n_stations,
                                   variable_indices)
    result = cycle(kernel, advance, initial, problem.times.copy(), values,
                   operators, obs_std, generator=generator, state_positions=state_positions,
                   observation_positions=observation_positions,
                   return_forecasts=return_forecasts, progress=progress)
    attrs = {
        "title": f"xldensf {method} analysis",
        "xldensf_method": method,
        "xldensf_settings": json.dumps(recorded_settings, sort_keys=True, default=str),
        "xldensf_members": members,
        "xldensf_seed": int(seed),
        "xldensf_version": __version__,
        "xldensf_case": model.case,
        "xldensf_forecast_model": type(model).__name__,
        "xldensf_observed": " ".join(problem.variables),
    }
    ensembles = {"": result.analysis}
    if return_forecasts:
        ensembles["_forecast"] = result.forecast
    return ensemble_dataset(model, problem, ensembles, n_fields, attrs)


def _block_standardization(ensemble: torch.Tensor, n_vars: int, n_grid: int
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift and scale ``(n_state,)``: one mean/std per variable block and per parameter."""
    members = ensemble.shape[0]
    fields = ensemble[:, : n_vars * n_grid].reshape(members, n_vars, n_grid)
    field_mean = fields.mean(dim=(0, 2))
    field_std = fields.std(dim=(0, 2))
    params = ensemble[:, n_vars * n_grid:]
    shift = torch.cat([field_mean.repeat_interleave(n_grid), params.mean(dim=0)])
    scale = torch.cat([field_std.repeat_interleave(n_grid), params.std(dim=0)])
    # A block without spread (e.g. velocities that all start at rest) cannot be updated by
    # the ensemble; a tiny scale keeps the sampler's unit noise from entering it.
    return shift, torch.where(scale > 0, scale, torch.full_like(scale, 1e-8))


def _scale_columns(matrix: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``matrix @ diag(scale)`` for a sparse COO matrix."""
    matrix = matrix.coalesce()
    indices = matrix.indices()
    return torch.sparse_coo_tensor(indices, matrix.values() * scale[indices[1]],
                                   matrix.shape, check_invariants=False).coalesce()


class _StandardizedEnSF:
    """EnSF on standardised states.

    The score filter is not invariant to the state's scaling: its reverse diffusion adds
    unit noise, and its explicit Euler-Maruyama steps become unstable when the likelihood
    is stiff (``dt sigma^2(t) h(t) H^T R^-1 H`` above 2). Each analysis therefore runs on
    ``z = (x - shift) / scale``, one shift and scale per variable and per parameter: the
    forecast ensemble's mean and spread, with the scale of an observed variable capped at
    :data:`_SCALE_PER_OBS_STD` times its observation error so that the likelihood stays
    resolvable with the default 100 steps. The operator and observations are transformed
    to match, so the analysis is that of the same problem.
    """

    def __init__(self, ensf: Any, n_vars: int, n_grid: int, n_stations: int,
                 observed_indices: list[int]) -> None:
        self.ensf, self.n_vars, self.n_grid = ensf, n_vars, n_grid
        self.n_stations, self.observed_indices = n_stations, observed_indices
        self.name = ensf.name

    def analysis(self, ensemble, observations, operator, obs_std, generator=None, **positions):
        shift, scale = _block_standardization(ensemble, self.n_vars, self.n_grid)
        obs_std = torch.as_tensor(obs_std).to(ensemble).expand(observations.shape)
        for block, variable in enumerate(self.observed_indices):
            rows = slice(block * self.n_stations, (block + 1) * self.n_stations)
            columns = slice(variable * self.n_grid, (variable + 1) * self.n_grid)
            cap = _SCALE_PER_OBS_STD * float(obs_std[rows].median())
            scale[columns] = scale[columns].clamp(max=cap)
        shifted = observations - torch.sparse.mm(operator, shift[:, None].to(ensemble))[:, 0]
        z = self.ensf.analysis((ensemble - shift) / scale, shifted,
                               _scale_columns(operator, scale), obs_std, generator)
        return z * scale + shift


#: Cap of an observed variable's standardisation scale, in observation error units:
#: with it ``H^T R^-1 H`` is at most 9 in the standardised space, which the default 100
#: Euler-Maruyama steps integrate stably (``dt max sigma^2 h`` is about 0.04 there).
_SCALE_PER_OBS_STD = 3.0


class _LETKFWithGlobalParameters:
    """LETKF on the fields; the global ETKF on the appended parameters."""

    def __init__(self, letkf: Any, n_fields: int) -> None:
        self.letkf = letkf
        self.etkf = get_filter("etkf", inflation=letkf.inflation)
        self.n_fields = n_fields
        self.name = letkf.name

    def analysis(self, ensemble, observations, operator, obs_std, generator=None, *,
                 state_positions=None, observation_positions=None):
        fields = self.letkf.analysis(ensemble, observations, operator, obs_std, generator,
                                     state_positions=state_positions,
                                     observation_positions=observation_positions)
        if ensemble.shape[-1] == self.n_fields:
            return fields
        parameters = self.etkf.analysis(ensemble, observations, operator, obs_std, generator)
        return torch.cat([fields[..., : self.n_fields], parameters[..., self.n_fields:]], dim=-1)


def ensemble_dataset(model: Simulator, problem: ObservationProblem,
                     ensembles: Mapping[str, torch.Tensor], n_fields: int,
                     attrs: Mapping[str, Any]) -> xr.Dataset:
    """Wrap ensembles ``(n_cycles, members, n_fields + n_params)`` as a Dataset.

    Keys of ``ensembles`` are suffixes of the variable names (``""`` for the analysis).
    """
    time_name = problem.time_coordinate.name
    members = next(iter(ensembles.values())).shape[1]
    coords: dict[str, Any] = {
        time_name: problem.time_coordinate.variable,
        MEMBER_DIM: (MEMBER_DIM, np.arange(members), coordinate_attrs(MEMBER_DIM)),
    }
    for coord in model.grid_coordinates:
        coords[coord.name] = (coord.name, coord.values, coord.attrs)
    dims = (time_name, MEMBER_DIM, *model.grid_dims)
    data_vars: dict[str, Any] = {}
    for suffix, ensemble in ensembles.items():
        array = ensemble.detach().cpu().numpy()
        fields = array[..., :n_fields].reshape(*array.shape[:2], *model.state_shape)
        for i, name in enumerate(model.variables):
            attrs_i = variable_attrs(model.case, name)
            values = fields[:, :, i]
            if name in problem.observation_units:
                target = problem.observation_units[name]
                values = convert_values(values, attrs_i["units"], target)
                attrs_i["units"] = target
            if suffix:
                attrs_i["long_name"] += f" ({suffix.strip('_')})"
            data_vars[name + suffix] = (dims, values, attrs_i)
        for j, spec in enumerate(model.parameter_specs):
            spec_attrs = {"units": spec.units, "long_name": spec.long_name}
            if suffix:
                spec_attrs["long_name"] += f" ({suffix.strip('_')})"
            data_vars[spec.name + suffix] = ((time_name, MEMBER_DIM), array[..., n_fields + j],
                                             spec_attrs)
    return xr.Dataset(data_vars, coords=coords, attrs=dict(attrs))
