"""xarray layer of the surrogate: :func:`fit` (Dataset -> LatentModel) and :func:`forecast`
(LatentModel -> Dataset).

:func:`fit` turns a ``simulate()``-style Dataset (dims ``(run, time, *grid)``, parameters as
coordinates along ``run`` with units) into tensors and calls
:func:`~xldensf.surrogate.fit_tensors`; the names, units and CF attributes of variables,
coordinates, times and parameters are stored in the model so that :func:`forecast` returns
a Dataset like the training data.

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

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

from .._version import __version__
from ..conventions import RUN_DIM, TIME_DIM, convert_values
from ..errors import (
    ConfigurationError,
    DataError,
    ExtrapolationWarning,
    ParameterError,
    UnitsError,
    check_name,
    expected_found,
)
from ..geometry.stations import regular_indices
from ..io import json_safe
from ..options import resolve_seed
from .config import PAPER_SIZES, EncoderConfig, LDNetConfig
from .latent_model import LatentModel, SurrogateMetadata
from .training import fit_tensors

__all__ = ["fit", "forecast", "ExtrapolationWarning", "PRESETS"]

PRESETS = ("small", "paper")
#: A parameter more than this fraction of the training range outside it is refused.
FAR_OUTSIDE_FRACTION = 0.5
#: Runs decoded at once by :func:`forecast` (bounds memory on large grids).
_FORECAST_CHUNK = 8


# ---------------------------------------------------------------------- helpers
def _json_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {str(key): json_safe(value) for key, value in attrs.items()}


def _time_dim(dataset: xr.Dataset) -> str:
    if TIME_DIM in dataset.dims:
        return TIME_DIM
    for name in dataset.dims:
        attrs = dataset[name].attrs if name in dataset.coords else {}
        if attrs.get("axis") == "T" or attrs.get("standard_name") == "time":
            return str(name)
    raise DataError(expected_found("time dimension", "'time' or a coordinate with axis 'T'",
                                   sorted(map(str, dataset.dims))))


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
    parameters: Sequence[str] | str,
    variables: Sequence[str] | str | None = None,
    stations: Any = None,
    preset: str = "small",
    seed: int | None = None,
    device: torch.device | str | None = None,
    checkpoint_dir: Any = None,
    *,
    encoder: EncoderConfig | Mapping[str, Any] | None = None,
    progress: bool | None = None,
    callback: Any = None,
    **overrides: Any,
) -> LatentModel:
    """Train a latent surrogate (improved LDNet [+ LSTM encoder]) on a training Dataset.

    Parameters
    ----------
    dataset
        Dims ``(run, time, *grid)`` (1 to 3 grid dims); the learned parameters are numeric
        coordinates along ``run`` with a ``units`` attribute; the variables have ``units``.
    parameters
        Names of the parameters to learn (and later estimate).
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
    if not isinstance(dataset, xr.Dataset):
        raise DataError(expected_found("dataset", "an xarray.Dataset", type(dataset).__name__))
    if RUN_DIM not in dataset.dims:
        raise DataError(expected_found("dimensions", f"one named {RUN_DIM!r}",
                                       sorted(map(str, dataset.dims))))
    check_name("preset", preset, PRESETS)
    time_dim = _time_dim(dataset)
    parameter_names = [parameters] if isinstance(parameters, str) else list(parameters)
    run_coordinates = sorted(str(name) for name, coord in dataset.coords.items()
                             if coord.dims == (RUN_DIM,) and name != RUN_DIM)
    if not parameter_names:
        raise ParameterError(expected_found("parameters", f"names among {run_coordinates}",
                                            parameter_names))
    for name in parameter_names:
        if name not in run_coordinates:
            raise DataError(expected_found(f"parameter {name!r}",
                                           f"a coordinate along {RUN_DIM!r}, one of "
                                           f"{run_coordinates}", name))
    variable_names = _training_variables(dataset, variables, time_dim)
    first = dataset[variable_names[0]]
    grid_dims = [str(dim) for dim in first.dims if dim not in (RUN_DIM, time_dim)]
    if not 1 <= len(grid_dims) <= 3:
        raise DataError(expected_found(f"grid dims of {variable_names[0]!r}", "1 to 3",
                                       grid_dims))
    order = (RUN_DIM, time_dim, *grid_dims)
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
    fields = np.stack(arrays, axis=2)
    grid_values = [_numeric(dataset[dim].values, f"coordinate {dim!r}")
                   if dim in dataset.coords else np.arange(dataset.sizes[dim], dtype=np.float64)
                   for dim in grid_dims]
    coordinate_attrs = {dim: _json_attrs(dataset[dim].attrs) if dim in dataset.coords else {}
                        for dim in grid_dims}
    mesh = np.meshgrid(*grid_values, indexing="ij")
    coords = np.stack([axis.ravel() for axis in mesh], axis=-1)
    times = _numeric(dataset[time_dim].values, f"coordinate {time_dim!r}")
    parameter_values = np.stack(
        [_numeric(dataset[name].values, f"parameter {name!r}") for name in parameter_names],
        axis=-1)
    parameter_attrs = {}
    for name in parameter_names:
        _units_of(dataset[name], f"parameter {name!r}")
        parameter_attrs[name] = _json_attrs(dataset[name].attrs)
    station_indices = _station_indices(
        stations, grid_dims, grid_values,
        [coordinate_attrs[dim].get("units") for dim in grid_dims])

    seed = resolve_seed(seed)
    if preset == "paper":
        case = dataset.attrs.get("xldensf_case")
        config = LDNetConfig.paper(case if case in PAPER_SIZES else "tsunami")
    else:
        config = LDNetConfig.small()
    config = config.replace(**overrides)
    encoder_config = None
    if station_indices is not None:
        encoder_config = (encoder if isinstance(encoder, EncoderConfig)
                          else getattr(EncoderConfig, preset)().replace(**dict(encoder or {})))
    attrs = {key: value for key, value in _json_attrs(dataset.attrs).items()
             if key.startswith("xldensf_") or key in ("title", "source", "Conventions")}
    metadata = SurrogateMetadata(
        variables=tuple(variable_names),
        variable_attrs={name: _json_attrs(dataset[name].attrs) for name in variable_names},
        coordinate_names=tuple(grid_dims),
        coordinate_attrs=coordinate_attrs,
        grid_shape=tuple(len(values) for values in grid_values),
        grid_values={dim: values.tolist() for dim, values in zip(grid_dims, grid_values)},
        time_attrs={"name": time_dim, **_json_attrs(dataset[time_dim].attrs)},
        parameters=tuple(parameter_names),
        parameter_attrs=parameter_attrs,
        attrs={**attrs, "xldensf_fit_seed": int(seed), "xldensf_fit_preset": preset},
    )
    return fit_tensors(fields, coords, times, parameter_values, config=config,
                       encoder_config=encoder_config, stations=station_indices,
                       metadata=metadata, seed=int(seed), device=device,
                       checkpoint_dir=checkpoint_dir, progress=progress, callback=callback)


# ---------------------------------------------------------------------- forecast
def _parameter_matrix(model: LatentModel, parameters: Any) -> np.ndarray:
    names = list(model.metadata.parameters)
    if not isinstance(parameters, (Mapping, xr.Dataset)) or sorted(parameters) != sorted(names):
        found = sorted(parameters) if isinstance(parameters, (Mapping, xr.Dataset)) \
            else type(parameters).__name__
        raise ParameterError(expected_found("parameters", f"a mapping with keys {names}",
                                            found))
    columns = []
    for name in names:
        value = parameters[name]
        target = model.metadata.parameter_attrs.get(name, {}).get("units")
        if hasattr(value, "units") and hasattr(value, "magnitude") and target is not None:
            value = convert_values(value.magnitude, str(value.units), target,
                                   f"units of parameter {name!r}")
        elif isinstance(value, xr.DataArray) and "units" in value.attrs and target is not None:
            value = convert_values(value.values, value.attrs["units"], target,
                                   f"units of parameter {name!r}")
        columns.append(np.atleast_1d(np.asarray(value, dtype=np.float64)))
    try:
        matrix = np.stack(np.broadcast_arrays(*columns), axis=-1)
    except ValueError as err:
        raise ParameterError(expected_found("parameter value lengths", "equal or scalars",
                                            [len(column) for column in columns])) from err
    if matrix.ndim != 2 or not np.isfinite(matrix).all():
        raise ParameterError(expected_found("parameter values", "finite scalars or 1-D arrays",
                                            matrix.shape))
    return matrix


def _check_range(model: LatentModel, matrix: np.ndarray, stacklevel: int) -> None:
    for index, name in enumerate(model.metadata.parameters):
        low, high = model.metadata.parameter_ranges[index]
        width = high - low if high > low else max(abs(low), 1.0)
        column = matrix[:, index]
        far = (column < low - FAR_OUTSIDE_FRACTION * width) | \
              (column > high + FAR_OUTSIDE_FRACTION * width)
        if far.any():
            raise ParameterError(expected_found(
                f"parameter {name!r}", f"values within {FAR_OUTSIDE_FRACTION:g} x the "
                f"training range [{low:g}, {high:g}] of it", float(column[far][0])))
        tolerance = 1e-9 * width
        outside = (column < low - tolerance) | (column > high + tolerance)
        if outside.any():
            warnings.warn(
                f"parameter {name!r} = {float(column[outside][0]):g} lies outside the training "
                f"range [{low:g}, {high:g}]; the surrogate extrapolates",
                ExtrapolationWarning, stacklevel=stacklevel + 1)


def _frame_indices(model: LatentModel, times: Any, stacklevel: int) -> np.ndarray:
    training = np.asarray(model.metadata.times, dtype=np.float64)
    if times is None:
        return np.arange(len(training))
    values = times
    target = model.metadata.time_attrs.get("units")
    if isinstance(times, xr.DataArray) and "units" in times.attrs and target is not None:
        values = convert_values(times.values, times.attrs["units"], target, "units of times")
    values = np.atleast_1d(np.asarray(values, dtype=np.float64))
    steps = (values - training[0]) / model.dt
    indices = np.round(steps).astype(int)
    if (indices < 0).any() or (np.abs(steps - indices) > 1e-6).any():
        raise ConfigurationError(expected_found(
            "times", f"t0 + k dt with t0 = {training[0]:g}, dt = {model.dt:g}, k >= 0",
            values[:5].tolist()))
    if indices.max() >= len(training):
        warnings.warn(f"times up to {values.max():g} go beyond the training span "
                      f"{training[-1]:g}; the surrogate extrapolates", ExtrapolationWarning,
                      stacklevel=stacklevel + 1)
    return indices


def _forecast_points(model: LatentModel, coords: Any) -> tuple[np.ndarray, str]:
    names = list(model.metadata.coordinate_names)
    if not isinstance(coords, (Mapping, xr.Dataset)) or any(n not in coords for n in names):
        found = sorted(coords) if isinstance(coords, (Mapping, xr.Dataset)) \
            else type(coords).__name__
        raise DataError(expected_found("coords", f"a mapping with keys {names}", found))
    columns, dim = [], "point"
    for name in names:
        value = coords[name]
        target = model.metadata.coordinate_attrs.get(name, {}).get("units")
        if isinstance(value, xr.DataArray):
            dim = str(value.dims[0]) if value.ndim == 1 else dim
            if "units" in value.attrs and target is not None:
                value = convert_values(value.values, value.attrs["units"], target,
                                       f"units of coordinate {name!r}")
        columns.append(np.atleast_1d(np.asarray(value, dtype=np.float64)))
    try:
        return np.stack(np.broadcast_arrays(*columns), axis=-1), dim
    except ValueError as err:
        raise DataError(expected_found("coords lengths", "equal",
                                       [len(column) for column in columns])) from err


def forecast(model: LatentModel, parameters: Any, times: Any = None, coords: Any = None,
             *, _stacklevel: int = 2) -> xr.Dataset:
    """Decode surrogate forecasts for given parameters as a Dataset like the training data.

    Parameters
    ----------
    model
        A trained :class:`LatentModel`.
    parameters
        Mapping of every parameter name to a scalar or 1-D values (one run each), in the
        training units, or as pint Quantities / DataArrays with ``units`` (converted).
    times
        Times ``t0 + k dt`` (k >= 0) to return; default the training times.
    coords
        Mapping of every grid coordinate name to 1-D point coordinates (equal lengths);
        default the training grid. The points' dim is that of the given DataArrays, else
        ``"point"``.

    Returns
    -------
    xarray.Dataset
        Dims ``(run, time, *grid)`` or ``(run, time, point)``, variables with the training
        units and CF attributes, parameters as coordinates along ``run``.

    Warns
    -----
    ExtrapolationWarning
        Parameters outside the training range, or times beyond the training span.

    Raises
    ------
    ParameterError
        A parameter more than half the training range outside it.
    """
    matrix = _parameter_matrix(model, parameters)
    _check_range(model, matrix, _stacklevel)
    frames = _frame_indices(model, times, _stacklevel)
    meta = model.metadata
    points, point_dim = (None, None) if coords is None else _forecast_points(model, coords)
    chunks = []
    with torch.no_grad():
        normalized = model.normalize_parameters(torch.as_tensor(matrix))
        for start in range(0, len(matrix), _FORECAST_CHUNK):
            latents = model.unroll(normalized[start:start + _FORECAST_CHUNK],
                                   int(frames.max()) + 1)[:, frames]
            chunks.append(model.decode(latents, None if points is None
                                       else torch.as_tensor(points)).cpu().numpy())
    values = np.concatenate(chunks).astype(np.float64)
    time_name = meta.time_attrs.get("name", TIME_DIM)
    time_attrs = {key: value for key, value in meta.time_attrs.items() if key != "name"}
    # the training frames keep their stored times (t0 + k dt may differ in the last bit)
    training_times = np.asarray(meta.times, dtype=np.float64)
    inside = frames < len(training_times)
    time_values = np.where(inside, training_times[np.minimum(frames, len(training_times) - 1)],
                           meta.times[0] + frames * model.dt)
    coordinates: dict[str, Any] = {RUN_DIM: (RUN_DIM, np.arange(len(matrix))),
                                   time_name: (time_name, time_values, time_attrs)}
    if points is None and meta.grid_shape is not None:
        space_dims = list(meta.coordinate_names)
        for name in space_dims:
            coordinates[name] = (name, np.asarray(meta.grid_values[name]),
                                 meta.coordinate_attrs.get(name, {}))
    else:
        space_dims = [point_dim or "point"]
        grid = model.grid_points() if points is None else points
        for index, name in enumerate(meta.coordinate_names):
            coordinates[name] = (space_dims[0], grid[:, index], meta.coordinate_attrs.get(name,
                                                                                       {}))
    for index, name in enumerate(meta.parameters):
        coordinates[name] = (RUN_DIM, matrix[:, index], meta.parameter_attrs.get(name, {}))
    dims = (RUN_DIM, time_name, *space_dims)
    data_vars = {name: (dims, values[:, :, index], meta.variable_attrs.get(name, {}))
                 for index, name in enumerate(meta.variables)}
    attrs = {key: value for key, value in meta.attrs.items()
             if key in ("Conventions", "xldensf_case", "xldensf_preset")}
    attrs.update({"title": "xldensf latent surrogate forecast",
                  "source": f"xldensf {__version__} LatentModel ("
                            f"{'original' if model.config.original else 'improved'} LDNet)",
                  "xldensf_version": __version__})
    return xr.Dataset(data_vars, coords=coordinates, attrs=attrs)
