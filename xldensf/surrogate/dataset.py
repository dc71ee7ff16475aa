"""The surrogate's Datasets out: :func:`forecast` (LatentModel -> Dataset like the training
data) and the conversions it shares with the latent assimilation: :func:`frame_indices`
(times -> training-frame indices) and :func:`forecast_points` (coordinates -> points).

Only the model's tensor methods and metadata are used here (no training, no files), so
:mod:`.model` imports this module and :meth:`LatentModel.forecast
<xldensf.surrogate.LatentModel.forecast>` delegates to :func:`forecast`.

Examples
--------
>>> from importlib import resources
>>> from xldensf.surrogate import forecast, load_model
>>> model = load_model(str(resources.files("xldensf") / "data" / "models"
...                        / "tsunami_small.ldensf"))
>>> result = forecast(model, {"x0": [-3e5, -1e5], "y0": -2e5}, times=[0.0])
>>> result["eta"].dims, result.sizes["run"]
(('run', 'time', 'y', 'x'), 2)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import xarray as xr

from .._version import __version__
from ..conventions import (
    RUN_DIM,
    TIME_DIM,
    convert_values,
    datetimes_after,
    elapsed_seconds,
    is_datetime_like,
    parse_datetime,
    time_encoding,
)
from ..errors import (
    ConfigurationError,
    DataError,
    ExtrapolationWarning,
    ParameterError,
    XLDEnSFError,
    expected_found,
)

if TYPE_CHECKING:
    from .model import LatentModel

__all__ = ["forecast", "frame_indices", "forecast_points", "time_origin", "set_time_origin",
           "FAR_OUTSIDE_FRACTION"]

#: A parameter more than this fraction of the training range outside it is refused.
FAR_OUTSIDE_FRACTION = 0.5
#: Runs decoded at once by :func:`forecast` (bounds memory on large grids).
_FORECAST_CHUNK = 8


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


def time_origin(model: LatentModel) -> Any:
    """The datetime of the model's first training frame, or ``None`` (numeric times).

    Stored by :func:`~xldensf.surrogate.fit` for datetime training data, or set with
    :func:`set_time_origin`.

    Examples
    --------
    >>> from importlib import resources
    >>> from xldensf.surrogate import load_model
    >>> model = load_model(str(resources.files("xldensf") / "data" / "models"
    ...                        / "tsunami_small.ldensf"))
    >>> time_origin(model) is None
    True
    """
    attrs = model.metadata.time_attrs
    text = attrs.get("xldensf_time_origin")
    if text is None:
        return None
    return parse_datetime(text, "stored time origin", attrs.get("xldensf_time_calendar"))


def set_time_origin(model: LatentModel, origin: Any) -> LatentModel:
    """Set the datetime of the model's first training frame (``None``: remove it).

    Datetime observations and forecast times are then counted from ``origin``, and
    forecasts return datetimes. Saved with the model. Returns ``model``.

    Examples
    --------
    >>> from importlib import resources
    >>> from xldensf.surrogate import load_model
    >>> model = load_model(str(resources.files("xldensf") / "data" / "models"
    ...                        / "tsunami_small.ldensf"))
    >>> str(time_origin(set_time_origin(model, "2011-03-11T05:46")))
    '2011-03-11T05:46:00.000000000'
    """
    attrs = model.metadata.time_attrs
    attrs.pop("xldensf_time_origin", None)
    attrs.pop("xldensf_time_calendar", None)
    if origin is None:
        return model
    parsed = parse_datetime(origin, "time origin")
    if isinstance(parsed, np.datetime64):
        attrs["xldensf_time_origin"] = str(np.datetime_as_string(parsed))
    else:
        attrs["xldensf_time_origin"] = parsed.isoformat()
        attrs["xldensf_time_calendar"] = parsed.calendar
    return model


def _numeric_times(model: LatentModel, values: Any, origin: Any) -> np.ndarray:
    """Datetimes as training-unit numbers: ``origin`` (or the stored origin, or the first
    time) stands for the first training frame."""
    reference = origin if origin is not None else time_origin(model)
    array = np.atleast_1d(np.asarray(getattr(values, "values", values)))
    reference = array[0] if reference is None else parse_datetime(reference, "origin")
    target = model.metadata.time_attrs.get("units", "s")
    seconds = elapsed_seconds(array, reference)
    try:
        converted = convert_values(seconds, "s", target, "units of the training times")
    except XLDEnSFError as err:
        raise ConfigurationError(expected_found(
            "times", f"numbers in the training time units {target!r} (datetimes need "
            "training times in time units)", "datetimes")) from err
    return float(model.metadata.times[0]) + np.asarray(converted)


def frame_indices(model: LatentModel, times: Any, stacklevel: int = 2,
                  origin: Any = None) -> np.ndarray:
    """Indices ``k`` of the latent steps of times ``t0 + k dt`` (the training frames' grid).

    Parameters
    ----------
    model
        A :class:`~xldensf.surrogate.LatentModel` with training times.
    times
        Times in the training time units (or a DataArray with ``units``, converted), or
        datetimes (counted from ``origin``, else the model's :func:`time_origin`, else the
        first of them, which then stands for the first training frame); ``None``: every
        training frame.
    origin
        Datetime of the first training frame, for datetime ``times``.
    stacklevel
        Stack level of the :class:`~xldensf.errors.ExtrapolationWarning`, counted from the
        caller of this function (2: its caller's caller).

    Returns
    -------
    numpy.ndarray
        Integer frame indices (those beyond the training span extrapolate).

    Warns
    -----
    ExtrapolationWarning
        Times beyond the training span.

    Raises
    ------
    ConfigurationError
        Times that are not ``t0 + k dt`` with ``k >= 0``.

    Examples
    --------
    >>> from importlib import resources
    >>> from xldensf.surrogate import load_model
    >>> model = load_model(str(resources.files("xldensf") / "data" / "models"
    ...                        / "tsunami_small.ldensf"))
    >>> frame_indices(model, [model.metadata.times[0], model.metadata.times[3]]).tolist()
    [0, 3]
    """
    training = np.asarray(model.metadata.times, dtype=np.float64)
    if times is None:
        return np.arange(len(training))
    values = times
    target = model.metadata.time_attrs.get("units")
    if is_datetime_like(times):
        values = _numeric_times(model, times, origin)
    elif isinstance(times, xr.DataArray) and "units" in times.attrs and target is not None:
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


def forecast_points(model: LatentModel, coords: Any) -> tuple[np.ndarray, str]:
    """Points ``(n_points, dim)`` in the training coordinate units, and their dim name.

    Parameters
    ----------
    model
        A :class:`~xldensf.surrogate.LatentModel`.
    coords
        Mapping of every grid coordinate name to 1-D point coordinates (equal lengths, or
        scalars); DataArrays with ``units`` are converted.

    Returns
    -------
    (points, dim)
        float64 points and the dim of the given DataArrays (else ``"point"``).

    Raises
    ------
    DataError
        A missing coordinate name, or unequal lengths.

    Examples
    --------
    >>> import torch
    >>> from xldensf.surrogate import LatentModel, LDNetConfig
    >>> model = LatentModel.untrained(LDNetConfig.small(), torch.rand(10, 2), n_variables=1,
    ...                               parameter_ranges=[(0.0, 1.0)])
    >>> points, dim = forecast_points(model, {"x0": [0.1, 0.2], "x1": 0.5})
    >>> points.tolist(), dim
    ([[0.1, 0.5], [0.2, 0.5]], 'point')
    """
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
             *, origin: Any = None, _stacklevel: int = 2) -> xr.Dataset:
    """Decode surrogate forecasts for given parameters as a Dataset like the training data.

    Parameters
    ----------
    model
        A trained :class:`LatentModel`.
    parameters
        Mapping of every parameter name to a scalar or 1-D values (one run each), in the
        training units, or as pint Quantities / DataArrays with ``units`` (converted).
    times
        Times ``t0 + k dt`` (k >= 0) to return, numbers or datetimes (see
        :func:`frame_indices`); default the training times.
    coords
        Mapping of every grid coordinate name to 1-D point coordinates (equal lengths);
        default the training grid. The points' dim is that of the given DataArrays, else
        ``"point"``.
    origin
        Datetime of the first training frame (default: the model's :func:`time_origin`);
        with one, the returned times are datetimes.

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

    Examples
    --------
    >>> from importlib import resources
    >>> from xldensf.surrogate import load_model
    >>> model = load_model(str(resources.files("xldensf") / "data" / "models"
    ...                        / "tsunami_small.ldensf"))
    >>> at_points = forecast(model, {"x0": -2e5, "y0": -2e5}, times=[0.0],
    ...                      coords={"x": [-1e5, -5e4], "y": [-1e5, -1e5]})
    >>> at_points["eta"].dims
    ('run', 'time', 'point')
    """
    matrix = _parameter_matrix(model, parameters)
    _check_range(model, matrix, _stacklevel)
    frames = frame_indices(model, times, _stacklevel, origin)
    meta = model.metadata
    points, point_dim = (None, None) if coords is None else forecast_points(model, coords)
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
    reference = origin if origin is not None else time_origin(model)
    if reference is None and is_datetime_like(times):
        reference = np.atleast_1d(np.asarray(getattr(times, "values", times)))[0]
    if reference is not None:
        reference = parse_datetime(reference, "origin")
        seconds = convert_values(time_values - training_times[0], time_attrs.get("units", "s"),
                                 "s", "units of the training times")
        time_values = datetimes_after(reference, seconds)
        time_attrs = {key: value for key, value in time_attrs.items()
                      if key != "units" and not key.startswith("xldensf_time_")}
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
    dataset = xr.Dataset(data_vars, coords=coordinates, attrs=attrs)
    if reference is not None:
        dataset[time_name].encoding.update(
            time_encoding(reference, dataset[time_name].values))
    return dataset
