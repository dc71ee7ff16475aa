"""Training from Datasets: :func:`fit` (a ``simulate()``-style Dataset -> LatentModel).

:func:`fit` turns a ``simulate()``-style Dataset (dims ``(run, time, *grid)``, parameters as
coordinates along ``run`` with units) into tensors and calls
:func:`~xldensf.surrogate.fit_tensors`; the names, units and CF attributes of variables,
coordinates, times and parameters are stored in the model so that
:func:`~xldensf.surrogate.forecast` returns a Dataset like the training data.

Examples
--------
>>> import xldensf as xl
>>> from xldensf.surrogate import fit
>>> train = xl.simulate("lorenz96", runs=4, seed=0, preset="small", n_outputs=11)
>>> model = fit(train, parameters=["F"], seed=0, steps=10, finetune_steps=0,
...             reconstruction_width=16)
>>> forecast = model.forecast({"F": train["F"].values[:2]})
>>> forecast["x"].dims, forecast["x"].attrs["long_name"]
(('run', 'time', 'k'), 'Lorenz-96 state variable')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

from ..conventions import (
    MEMBER_DIM,
    RUN_DIM,
    TIME_DIM,
    convert_values,
    elapsed_seconds,
    find_time_name,
    is_datetime_like,
)
from ..errors import (
    ConfigurationError,
    DataError,
    UnitsError,
    check_name,
    check_positive_int,
    expected_found,
)
from ..geometry.stations import regular_indices
from ..io import json_safe
from ..options import resolve_seed
from .config import PAPER_SIZES, EncoderConfig, LDNetConfig
from .metadata import SurrogateMetadata
from .model import LatentModel
from .training import fit_tensors

__all__ = ["fit", "training_times", "initial_state_coordinates", "PRESETS",
           "INITIAL_STATE_PREFIX", "DEFAULT_INITIAL_COMPONENTS"]

PRESETS = ("small", "paper")

#: Name prefix of the initial-state coordinates learned when ``fit(parameters=[])``.
INITIAL_STATE_PREFIX = "initial_state_pc"

#: Default number of initial-state coordinates (``fit(initial_components=...)``).
DEFAULT_INITIAL_COMPONENTS = 4


# ---------------------------------------------------------------------- helpers
def _json_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """CF attributes as JSON values (stored in the model file)."""
    return json_safe(dict(attrs))


def _time_dim(dataset: xr.Dataset) -> str:
    if TIME_DIM in dataset.dims:
        return TIME_DIM
    name = find_time_name(dataset)
    if name is not None and dataset[name].dims[0] in dataset.dims:
        return str(dataset[name].dims[0])
    raise DataError(expected_found("time dimension", "'time' or a time coordinate (CF axis "
                                   "T, datetimes, or named 'time'/'t')",
                                   sorted(map(str, dataset.dims))))


def training_times(time: xr.DataArray) -> tuple[np.ndarray, dict[str, Any]]:
    """Frame times as float64 numbers and the time attributes to store in the model.

    Numbers keep their ``units``; timedeltas become seconds; datetimes (datetime64 or
    cftime) become seconds since the first frame, which is stored as
    ``xldensf_time_origin`` (with ``xldensf_time_calendar`` for cftime) so that
    forecasts and assimilations return datetimes again.

    Examples
    --------
    >>> import numpy as np
    >>> time = xr.DataArray(np.array(["2011-03-11T05:46", "2011-03-11T06:46"],
    ...                              dtype="datetime64[ns]"), dims="time", name="time")
    >>> values, attrs = training_times(time)
    >>> values.tolist(), attrs["units"], attrs["xldensf_time_origin"]
    ([0.0, 3600.0], 's', '2011-03-11T05:46:00')
    """
    attrs = _json_attrs(time.attrs)
    values = np.asarray(time.values)
    if is_datetime_like(values):
        origin = values[0]
        if np.issubdtype(values.dtype, np.datetime64):
            text = str(np.datetime_as_string(np.datetime64(origin, "s")))
        else:
            text, attrs["xldensf_time_calendar"] = origin.isoformat(), origin.calendar
        attrs.update({"units": "s", "xldensf_time_origin": text})
        return elapsed_seconds(values, origin), attrs
    if np.issubdtype(values.dtype, np.timedelta64):
        attrs["units"] = "s"
        return values / np.timedelta64(1, "s"), attrs
    return _numeric(values, f"coordinate {time.name!r}"), attrs


def _numeric(values: np.ndarray, what: str) -> np.ndarray:
    if not np.issubdtype(values.dtype, np.number):
        raise DataError(expected_found(what, "numeric values", str(values.dtype)))
    return values.astype(np.float64)


def _units_of(array: xr.DataArray, what: str) -> str:
    text = array.attrs.get("units")
    if not isinstance(text, str) or not text:
        raise UnitsError(expected_found(f"units attribute of {what}", "a CF unit string",
                                        text))
    return text


def _training_variables(dataset: xr.Dataset, variables: Sequence[str] | str | None,
                        time_dim: str) -> list[str]:
    candidates = [str(name) for name, array in dataset.data_vars.items()
                  if RUN_DIM in array.dims and time_dim in array.dims]
    if variables is None:
        if not candidates:
            raise DataError(expected_found("data variables", f"some with dims ({RUN_DIM}, "
                                           f"{time_dim}, ...)", sorted(dataset.data_vars)))
        return candidates
    names = [variables] if isinstance(variables, str) else list(variables)
    for name in names:
        check_name("variable", name, candidates)
    return names


def _station_indices(stations: Any, grid_dims: list[str], grid_values: list[np.ndarray],
                     coordinate_units: list[str | None],
                     periodic: Sequence[bool] | None = None) -> np.ndarray | None:
    """Flat grid indices of the stations (nearest grid point of each station).

    A count ``n**d`` is the regular ``n x ... x n`` layout of
    :func:`xldensf.geometry.stations.regular_indices`, the one that
    ``observe(stations="nxn")`` uses; ``periodic`` says which grid dims wrap (default:
    none, the bounded rule on every axis).
    """
    if stations is None:
        return None
    shape = tuple(len(values) for values in grid_values)
    if isinstance(stations, (int, np.integer)) and not isinstance(stations, bool):
        per_dim = round(float(stations) ** (1.0 / len(shape)))
        if stations <= 0 or per_dim ** len(shape) != stations or per_dim > min(shape):
            raise ConfigurationError(
                expected_found("stations", f"a count n**{len(shape)} with n <= {min(shape)} "
                               "(a regular layout) or station coordinates", stations))
        indices = regular_indices(shape, [per_dim] * len(shape), periodic)
        return np.ravel_multi_index(tuple(indices.T), shape)
    if not isinstance(stations, (Mapping, xr.Dataset)):
        raise ConfigurationError(expected_found("stations", "None, a count, or a mapping of "
                                                "grid coordinate name -> values",
                                                type(stations).__name__))
    missing = [dim for dim in grid_dims if dim not in stations]
    if missing:
        raise DataError(expected_found("station coordinates", grid_dims, sorted(stations)))
    indices = []
    for dim, values, target_units in zip(grid_dims, grid_values, coordinate_units):
        station_values = stations[dim]
        raw = np.atleast_1d(np.asarray(station_values, dtype=np.float64))
        if isinstance(station_values, xr.DataArray) and "units" in station_values.attrs \
                and target_units is not None:
            raw = convert_values(raw, station_values.attrs["units"], target_units,
                                 f"units of station coordinate {dim!r}")
        indices.append(np.abs(raw[:, None] - values[None, :]).argmin(axis=1))
    try:
        return np.unique(np.ravel_multi_index(np.broadcast_arrays(*indices), shape))
    except ValueError as err:
        raise DataError(expected_found("station coordinates", "equal lengths per grid dim",
                                       [len(index) for index in indices])) from err


# ---------------------------------------------------------------------- fit
def fit(
    dataset: xr.Dataset,
    parameters: Sequence[str] | str | None,
    variables: Sequence[str] | str | None = None,
    stations: Any = None,
    preset: str = "small",
    seed: int | None = None,
    device: torch.device | str | None = None,
    checkpoint_dir: Any = None,
    *,
    encoder: EncoderConfig | Mapping[str, Any] | None = None,
    initial_components: int = DEFAULT_INITIAL_COMPONENTS,
    progress: bool | None = None,
    callback: Any = None,
    **overrides: Any,
) -> LatentModel:
    """Train a latent surrogate (improved LDNet [+ LSTM encoder]) on a training Dataset.

    Parameters
    ----------
    dataset
        Dims ``(run, time, *grid)`` (1 to 3 grid dims; an ensemble's ``member`` dim is taken
        as ``run`` when there is none); the learned parameters are numeric coordinates
        along ``run`` with a ``units`` attribute; the variables have ``units``.
    parameters
        Names of the parameters to learn (and later estimate). ``[]`` or ``None``: the runs
        differ only in their initial state; the model then learns the trajectory as a
        function of ``initial_components`` coordinates of the initial state (see
        :func:`initial_state_coordinates`), named ``initial_state_pc1`` ..., which
        ``assimilate`` estimates with the latent state as it would parameters.
    variables
        Variables to learn (default: every data variable with ``run`` and ``time`` dims).
    stations
        Observation stations for the encoder: ``None`` (no encoder), a count ``n**d`` (a
        regular ``n x ... x n`` layout inside the grid) or a mapping/Dataset of grid
        coordinate name -> station coordinate values (snapped to the nearest grid point).
    preset
        ``"small"`` or ``"paper"`` (:class:`~xldensf.surrogate.LDNetConfig` and
        :class:`~xldensf.surrogate.EncoderConfig` presets). ``"paper"`` takes the network
        sizes of the case named by the dataset's ``xldensf_case`` attribute (set by
        :func:`xldensf.simulate`; tsunami, atmosphere or kolmogorov), and the tsunami's for
        other data.
    seed
        Seed of initialisation, split and mini-batches; ``None`` draws one (recorded in
        ``model.metadata.attrs["xldensf_fit_seed"]``).
    device
        Torch device for training (default CPU).
    checkpoint_dir
        Directory for resumable training checkpoints.
    encoder
        Encoder settings: an :class:`EncoderConfig` or a mapping of overrides of the preset.
    initial_components
        Number of initial-state coordinates when there are no parameters (at most
        ``runs - 1``).
    progress
        Progress bars; ``None`` follows :func:`xldensf.set_options`.
    callback
        ``callback(phase, step, loss)`` after every optimiser step.
    **overrides
        Fields of :class:`~xldensf.surrogate.LDNetConfig` (e.g. ``steps=5000``).

    Returns
    -------
    LatentModel

    Raises
    ------
    DataError
        Missing run/time dims, parameters that are not numeric coordinates along ``run``,
        NaN in the training data, too few runs to hold out validation runs.
    UnitsError
        Variables or parameters without units.
    """
    if isinstance(dataset, xr.Dataset) and RUN_DIM not in dataset.dims \
            and MEMBER_DIM in dataset.dims:
        dataset = dataset.rename({MEMBER_DIM: RUN_DIM})
    time_dim, parameter_names = _check_dataset(dataset, parameters, preset)
    variable_names = _training_variables(dataset, variables, time_dim)
    grid_dims = _grid_dims(dataset, variable_names, time_dim)
    fields = _field_values(dataset, variable_names, (RUN_DIM, time_dim, *grid_dims))
    grid_values = [_numeric(dataset[dim].values, f"coordinate {dim!r}")
                   if dim in dataset.coords else np.arange(dataset.sizes[dim], dtype=np.float64)
                   for dim in grid_dims]
    coordinate_attrs = {dim: _json_attrs(dataset[dim].attrs) if dim in dataset.coords else {}
                        for dim in grid_dims}
    mesh = np.meshgrid(*grid_values, indexing="ij")
    coords = np.stack([axis.ravel() for axis in mesh], axis=-1)
    times, time_attrs = training_times(dataset[time_dim])
    if parameter_names:
        parameter_values, parameter_attrs = _parameter_table(dataset, parameter_names)
    else:
        parameter_values, parameter_attrs = initial_state_coordinates(fields,
                                                                      initial_components)
        parameter_names = list(parameter_attrs)
    station_indices = _station_indices(
        stations, grid_dims, grid_values,
        [coordinate_attrs[dim].get("units") for dim in grid_dims])

    seed = resolve_seed(seed)
    config, encoder_config = _configs(dataset, preset, overrides, encoder,
                                      with_encoder=station_indices is not None)
    attrs = {key: value for key, value in _json_attrs(dataset.attrs).items()
             if key.startswith("xldensf_") or key in ("title", "source", "Conventions")}
    if parameter_names[0].startswith(INITIAL_STATE_PREFIX) and not parameters:
        attrs["xldensf_initial_state_coordinates"] = len(parameter_names)
    metadata = SurrogateMetadata(
        variables=tuple(variable_names),
        variable_attrs={name: _json_attrs(dataset[name].attrs) for name in variable_names},
        coordinate_names=tuple(grid_dims),
        coordinate_attrs=coordinate_attrs,
        grid_shape=tuple(len(values) for values in grid_values),
        grid_values={dim: values.tolist() for dim, values in zip(grid_dims, grid_values)},
        time_attrs={"name": time_dim, **time_attrs},
        parameters=tuple(parameter_names),
        parameter_attrs=parameter_attrs,
        attrs={**attrs, "xldensf_fit_seed": int(seed), "xldensf_fit_preset": preset},
    )
    return fit_tensors(fields, coords, times, parameter_values, config=config,
                       encoder_config=encoder_config, stations=station_indices,
                       metadata=metadata, seed=int(seed), device=device,
                       checkpoint_dir=checkpoint_dir, progress=progress, callback=callback)


# ---------------------------------------------------------------------- fit steps
def _check_dataset(dataset: Any, parameters: Sequence[str] | str | None,
                   preset: str) -> tuple[str, list[str]]:
    """The time dim and the parameter names, after checking the dataset's structure."""
    if not isinstance(dataset, xr.Dataset):
        raise DataError(expected_found("dataset", "an xarray.Dataset", type(dataset).__name__))
    if RUN_DIM not in dataset.dims:
        raise DataError(expected_found("dimensions", f"one named {RUN_DIM!r} or {MEMBER_DIM!r}",
                                       sorted(map(str, dataset.dims))))
    check_name("preset", preset, PRESETS)
    time_dim = _time_dim(dataset)
    parameter_names = [parameters] if isinstance(parameters, str) \
        else list(parameters or [])
    run_coordinates = sorted(str(name) for name, coord in dataset.coords.items()
                             if coord.dims == (RUN_DIM,) and name != RUN_DIM)
    for name in parameter_names:
        if name not in run_coordinates:
            raise DataError(expected_found(f"parameter {name!r}",
                                           f"a coordinate along {RUN_DIM!r}, one of "
                                           f"{run_coordinates}", name))
    return time_dim, parameter_names


def _grid_dims(dataset: xr.Dataset, variable_names: list[str], time_dim: str) -> list[str]:
    """The grid dims (1 to 3) of the first training variable."""
    first = dataset[variable_names[0]]
    grid_dims = [str(dim) for dim in first.dims if dim not in (RUN_DIM, time_dim)]
    if not 1 <= len(grid_dims) <= 3:
        raise DataError(expected_found(f"grid dims of {variable_names[0]!r}", "1 to 3",
                                       grid_dims))
    return grid_dims


def _field_values(dataset: xr.Dataset, variable_names: list[str],
                  order: tuple[str, ...]) -> np.ndarray:
    """Training fields ``(run, time, variable, point)`` (float64, finite, with units)."""
    arrays = []
    for name in variable_names:
        array = dataset[name]
        if set(array.dims) != set(order):
            raise DataError(expected_found(f"dims of variable {name!r}", order, array.dims))
        _units_of(array, f"variable {name!r}")
        values = _numeric(array.transpose(*order).values, f"variable {name!r}")
        if not np.isfinite(values).all():
            raise DataError(expected_found(f"training data {name!r}", "finite values",
                                           f"{int((~np.isfinite(values)).sum())} NaN/Inf"))
        arrays.append(values.reshape(values.shape[0], values.shape[1], -1))
    return np.stack(arrays, axis=2)


def _parameter_table(dataset: xr.Dataset,
                     parameter_names: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Parameter values ``(run, n_parameters)`` and their CF attributes (with units)."""
    parameter_values = np.stack(
        [_numeric(dataset[name].values, f"parameter {name!r}") for name in parameter_names],
        axis=-1)
    parameter_attrs = {}
    for name in parameter_names:
        _units_of(dataset[name], f"parameter {name!r}")
        parameter_attrs[name] = _json_attrs(dataset[name].attrs)
    return parameter_values, parameter_attrs


def initial_state_coordinates(fields: np.ndarray, n_components: int
                              ) -> tuple[np.ndarray, dict[str, Any]]:
    """Coordinates of each run's initial state: its scores on the leading principal
    components of the runs' first frames (each variable scaled by its spread over runs and
    points), ``(run, k)`` with ``k = min(n_components, runs - 1)``, and their attributes.

    They stand in for parameters when runs differ only in their initial state: the latent
    dynamics learn the trajectory as a function of them, and LD-EnSF estimates them with
    the latent state (their prior is their range over the training runs).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> fields = rng.normal(size=(6, 3, 1, 10))          # (run, time, variable, point)
    >>> values, attrs = initial_state_coordinates(fields, 4)
    >>> values.shape, attrs["initial_state_pc1"]["units"]
    ((6, 4), '1')
    """
    runs = fields.shape[0]
    k = check_positive_int("initial_components", n_components)
    k = min(k, runs - 1)
    if k < 1:
        raise DataError(expected_found("runs for initial-state coordinates", ">= 2", runs))
    first = fields[:, 0]                                   # (run, variable, point)
    anomalies = first - first.mean(axis=0)
    spread = anomalies.reshape(runs, first.shape[1], -1).std(axis=(0, 2))
    anomalies = anomalies / np.where(spread > 0, spread, 1.0)[None, :, None]
    u, singular, _ = np.linalg.svd(anomalies.reshape(runs, -1), full_matrices=False)
    scores = u[:, :k] * singular[:k] / np.sqrt(runs - 1)
    attrs = {f"{INITIAL_STATE_PREFIX}{i + 1}": {
        "units": "1", "long_name": f"coordinate {i + 1} of the initial state (principal "
        "component of the training runs' first frames, unit variance over runs)"}
        for i in range(k)}
    return scores, attrs


def _configs(dataset: xr.Dataset, preset: str, overrides: dict[str, Any],
             encoder: EncoderConfig | Mapping[str, Any] | None,
             with_encoder: bool) -> tuple[LDNetConfig, EncoderConfig | None]:
    """The LDNet and encoder settings of a preset with the user's overrides."""
    if preset == "paper":
        case = dataset.attrs.get("xldensf_case")
        config = LDNetConfig.paper(case if case in PAPER_SIZES else "tsunami")
    else:
        config = LDNetConfig.small(dataset.attrs.get("xldensf_case"))
    config = config.replace(**overrides)
    encoder_config = None
    if with_encoder:
        encoder_config = (encoder if isinstance(encoder, EncoderConfig)
                          else getattr(EncoderConfig, preset)().replace(**dict(encoder or {})))
    return config, encoder_config
