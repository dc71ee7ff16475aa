"""What a run needs in tensors: the observations read into the model's units.

:func:`observation_problem` reads a CF timeSeries observation Dataset (as made by
:func:`xldensf.observations.observe`) into an :class:`ObservationProblem`: values and error
standard deviations in the model's units, times in the model's time units, station positions
in the grid's units. Every assimilation adapter starts from it.

Examples
--------
>>> import xldensf as xl
>>> truth = xl.simulate("lorenz96", runs=1, seed=1, preset="small", n_outputs=6).isel(run=0)
>>> obs = truth.ldensf.observe(stations=4, noise=0.1, seed=0)
>>> problem = observation_problem(obs, xl.simulator("lorenz96", preset="small"))
>>> problem.variables, tuple(problem.values.shape)
(('x',), (6, 4))
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import cf_xarray  # noqa: F401  (registers ds.cf)
import numpy as np
import torch
import xarray as xr

from ..conventions import (
    MEMBER_DIM,
    convert_differences,
    convert_values,
    dequantify,
    elapsed_seconds,
    is_datetime_like,
    is_quantity,
    parse_datetime,
    parse_units,
    quantity_magnitude,
    station_dim,
    units,
    variable_attrs,
)
from ..conventions import (
    time_coordinate as lookup_time_coordinate,
)
from ..errors import ConfigurationError, DataError, check_names, expected_found
from ..geometry import GridGeometry, StationPositions
from ..simulators.dataset import NONDIMENSIONAL_TIME_UNITS

__all__ = ["ObservationProblem", "observation_problem", "observation_times", "check_members"]


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


def _observed_variables(observations: xr.Dataset, time_name: Hashable,
                        station: Hashable) -> list[str]:
    ancillary = set()
    for variable in observations.data_vars.values():
        ancillary.update(str(variable.attrs.get("ancillary_variables", "")).split())
    return [name for name, variable in observations.data_vars.items()
            if station in variable.dims and time_name in variable.dims
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
        return float(convert_differences(float(std), std.attrs.get("units", units), units,
                                         f"units of {ancillary[0]}"))
    if is_quantity(choice):
        value = float(quantity_magnitude(choice, units, f"obs_error for {name!r}",
                                         difference=True))
    else:
        value = float(choice)
    if not value > 0:
        raise DataError(expected_found(f"obs_error for {name!r}", "a positive value", value))
    return value


def _time_reference(model: Any, origin: Any, first: Any) -> tuple[Any, float]:
    """The datetime that the model's time ``value`` stands for, and that value."""
    metadata = getattr(model, "metadata", None)
    base = float(metadata.times[0]) if getattr(metadata, "times", None) else 0.0
    if origin is not None:
        return parse_datetime(origin, "time_origin"), base
    if getattr(model, "start", None) is not None:
        return model.start, 0.0
    stored = getattr(metadata, "time_attrs", {}).get("xldensf_time_origin")
    if stored is not None:
        return parse_datetime(stored, "stored time origin of the model"), base
    return first, base


def _seconds_per_unit(model: Any, time_units: str) -> float:
    if parse_units(time_units).dimensionality == units.s.dimensionality:
        return float(convert_values(1.0, time_units, "s"))
    seconds = getattr(model, "time_unit_seconds", None)
    if seconds is None:
        metadata = getattr(model, "metadata", None)
        seconds = getattr(metadata, "time_attrs", {}).get("xldensf_time_unit_seconds")
    if seconds is None and getattr(model, "case", None) in NONDIMENSIONAL_TIME_UNITS:
        seconds = float(units.Quantity(NONDIMENSIONAL_TIME_UNITS[model.case]).to("s").magnitude)
    if seconds is None:
        raise DataError(expected_found(
            "observation times", f"numbers in the model's time units {time_units!r} "
            "(datetimes need the duration of one model time unit: xl.simulator(..., "
            "time_unit=...))", "datetimes"))
    return float(seconds)


def observation_times(time_coordinate: xr.DataArray, model: Any, time_units: str,
                      origin: Any = None) -> np.ndarray:
    """Observation times as numbers in the model's ``time_units``.

    Numbers (in the coordinate's ``units``) and timedeltas are converted; datetimes
    (datetime64, cftime, or numbers with units ``"... since ..."``) count from a reference:
    ``origin`` if given, else the simulator's ``start``, else the latent model's stored
    origin, else the first observation time; the reference stands for time 0 of a
    simulator and for the first training frame of a latent model.

    Examples
    --------
    >>> import numpy as np, xarray as xr, xldensf as xl
    >>> time = xr.DataArray(np.array(["2011-03-11T00:00", "2011-03-11T12:00"],
    ...                              dtype="datetime64[ns]"), dims="time")
    >>> observation_times(time, xl.simulator("lorenz96", preset="small"), "1").tolist()
    [0.0, 0.1]
    """
    if not is_datetime_like(time_coordinate) and " since " in str(
            time_coordinate.attrs.get("units", "")):
        time_coordinate = xr.decode_cf(time_coordinate.to_dataset(name="time"))["time"]
    times = np.asarray(time_coordinate.values)
    if is_datetime_like(times):
        reference, base = _time_reference(model, origin, times[0])
        seconds = elapsed_seconds(times, reference)
        return base + seconds / _seconds_per_unit(model, time_units)
    if np.issubdtype(times.dtype, np.timedelta64):
        times = times / np.timedelta64(1, "s")
        source_time_units = "s"
    else:
        source_time_units = time_coordinate.attrs.get("units", time_units)
    if not np.issubdtype(np.asarray(times).dtype, np.number):
        raise DataError(expected_found("observation times", "numbers, timedeltas or "
                                       "datetimes", times.dtype))
    return np.asarray(convert_values(np.asarray(times, dtype=np.float64), source_time_units,
                                     time_units, "units of the observation times"))


def observation_problem(observations: xr.Dataset, model: Any, *, obs_error: Any = None,
                        variables: tuple[str, ...] | None = None,
                        variable_units: Mapping[str, str] | None = None,
                        geometry: GridGeometry | None = None,
                        time_units: str | None = None,
                        time_origin: Any = None) -> ObservationProblem:
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
    time_origin
        Datetime of the model's time 0 (simulator) or first training frame (latent
        model) for datetime observations (see :func:`observation_times`).

    Raises
    ------
    DataError
        No station dim (named ``station`` or marked by ``cf_role: timeseries_id``), no time
        axis, times before the prior, all values missing (nothing to assimilate).
    UnknownNameError
        An observed variable that the model does not have.
    UnitsError
        Units that do not convert to the model's.
    """
    station = station_dim(observations) if isinstance(observations, xr.Dataset) else None
    if station is None:
        found = sorted(map(str, observations.dims)) if isinstance(observations, xr.Dataset) \
            else type(observations).__name__
        raise DataError(expected_found("observation dims", "(time, station): a station dim "
                                       "named 'station' or marked by a variable with cf_role "
                                       "'timeseries_id'", found))
    observations = dequantify(observations)
    time_coordinate = lookup_time_coordinate(observations, "observation time axis")
    time_name = time_coordinate.name
    model_variables = tuple(variables if variables is not None else model.variables)
    case = getattr(model, "case", None)
    if variable_units is None:
        variable_units = {name: variable_attrs(case, name)["units"] for name in model_variables}
    geometry = geometry if geometry is not None else GridGeometry.from_simulator(model)
    time_units = time_units if time_units is not None else model.time_units

    observed = _observed_variables(observations, time_name, station)
    if not observed:
        raise DataError(expected_found("observed variables", "variables with dims (time, "
                                       "station)", sorted(observations.data_vars)))
    check_names("observed variable", observed, model_variables)
    times = observation_times(time_coordinate, model, time_units, time_origin)
    if (times < 0).any():
        raise DataError(expected_found("observation times", "times >= 0 (the prior is at 0)",
                                       float(times.min())))
    if (np.diff(times) < 0).any():
        raise DataError(expected_found("observation times", "increasing", times.tolist()))

    blocks, stds, units_out = [], [], {}
    for name in observed:
        variable = observations[name].transpose(time_name, station)
        source_units = variable.attrs.get("units")
        if source_units is None:
            raise DataError(expected_found(f"units of observed {name!r}", "a units attribute",
                                           None))
        units_out[name] = source_units
        target = variable_units[name]
        blocks.append(convert_values(variable.values.astype(np.float64), source_units, target,
                                     f"units of observed {name!r}"))
        std = _error_std(observations, name, obs_error, source_units)
        stds.append(np.full(variable.shape, float(convert_differences(
            np.array(std), source_units, target, "error units"))))
    values = np.concatenate(blocks, axis=1)
    if values.size == 0 or np.isnan(values).all():
        raise DataError(expected_found(
            "observation values", "at least one finite value",
            f"all {values.size} missing (NaN): nothing to assimilate"))
    positions = geometry.station_positions(observations, times=time_coordinate)
    return ObservationProblem(
        variables=tuple(observed), times=times, values=torch.as_tensor(values),
        obs_std=torch.as_tensor(np.concatenate(stds, axis=1)), positions=positions,
        observation_units=units_out, time_coordinate=time_coordinate)


def check_members(members: Any) -> int:
    """``members`` as an ``int`` if it is an integer >= 2 (an ensemble needs a spread).

    Examples
    --------
    >>> check_members(20)
    20
    """
    if isinstance(members, bool) or not isinstance(members, (int, np.integer)) or members < 2:
        raise ConfigurationError(expected_found("members", "an integer >= 2", members))
    return int(members)


def prior_fields(model: Any, prior: xr.Dataset,
                 variable_units: Mapping[str, str] | None = None) -> torch.Tensor:
    """The fields of a prior Dataset in the model's units (``variable_units``, default the
    case's): ``(members, n_vars, *grid)`` with a ``member`` dim, else ``(n_vars, *grid)``.

    Examples
    --------
    >>> import xldensf as xl
    >>> model = xl.simulator("lorenz96", preset="small")
    >>> state = xl.simulate("lorenz96", runs=1, seed=0, preset="small").isel(run=0, time=0)
    >>> tuple(prior_fields(model, state).shape)
    (1, 40)
    """
    if not isinstance(prior, xr.Dataset):
        raise DataError(expected_found("prior", "an xarray Dataset", type(prior).__name__))
    missing = [name for name in model.variables if name not in prior.data_vars]
    if missing:
        raise DataError(expected_found("prior variables", list(model.variables),
                                       sorted(prior.data_vars)))
    fields = []
    for name in model.variables:
        variable = prior[name]
        model_units = variable_units[name] if variable_units is not None \
            else variable_attrs(model.case, name)["units"]
        dims = ((MEMBER_DIM,) if MEMBER_DIM in variable.dims else ()) + model.grid_dims
        fields.append(convert_values(variable.transpose(*dims).values.astype(np.float64),
                                     variable.attrs.get("units", model_units), model_units,
                                     f"units of {name}"))
    return model.tensor(np.stack(fields, axis=-1 - len(model.grid_dims)))
