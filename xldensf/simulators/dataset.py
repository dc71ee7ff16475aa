"""Turn simulator tensors into CF-compliant xarray Datasets (units at the edge)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import xarray as xr

from .._version import __version__
from ..conventions import (
    RUN_DIM,
    TIME_DIM,
    convert_values,
    coordinate_attrs,
    datetimes_after,
    duration_seconds,
    parse_datetime,
    parse_units,
    time_encoding,
    units,
    variable_attrs,
)
from ..errors import ParameterError, UnitsError, expected_found
from .base import Simulator

__all__ = ["trajectory_to_dataset", "parameters_from_mapping", "set_time_axis",
           "NONDIMENSIONAL_TIME_UNITS"]

#: Duration of one model time unit of the nondimensional cases on a datetime axis
#: (Lorenz-96: 0.05 units ~ 6 hours, Lorenz 1996).
NONDIMENSIONAL_TIME_UNITS: dict[str, str] = {"lorenz96": "5 days"}


def set_time_axis(model: Simulator, start: Any = None, time_unit: Any = None) -> Simulator:
    """Give ``model`` a datetime origin ``start`` and the duration of its time unit.

    Sets ``model.start`` (``None``, ``numpy.datetime64[ns]`` or a cftime datetime) and
    ``model.time_unit_seconds`` (seconds per model time unit; ``None`` for a
    nondimensional case without a known duration). Returns ``model``.

    Examples
    --------
    >>> import xldensf as xl
    >>> model = xl.simulator("lorenz96", preset="small")
    >>> set_time_axis(model, "2011-03-11", "6 hours").time_unit_seconds
    21600.0
    """
    if time_unit is not None:
        seconds = duration_seconds(time_unit, "time_unit")
    elif parse_units(model.time_units).dimensionality == units.s.dimensionality:
        seconds = float(convert_values(1.0, model.time_units, "s"))
    else:
        default = NONDIMENSIONAL_TIME_UNITS.get(model.case)
        seconds = None if default is None else duration_seconds(default)
    if seconds is not None and not seconds > 0:
        raise ParameterError(expected_found("time_unit", "a positive duration", time_unit))
    if start is not None and seconds is None:
        raise ParameterError(expected_found(
            f"time_unit of the nondimensional {model.case} model",
            "a duration such as '1 hour' (needed with start=)", None))
    model.start = None if start is None else parse_datetime(start, "start")
    model.time_unit_seconds = seconds
    return model


def parameters_from_mapping(model: Simulator, parameters: Mapping[str, Any]) -> torch.Tensor:
    """Build the ``(runs, n_parameters)`` tensor from a mapping of name -> values.

    Values may be numbers, sequences, numpy arrays or pint Quantities (converted to the
    parameter's units). Scalars broadcast against the longest sequence.

    Examples
    --------
    >>> import xldensf as xl
    >>> model = xl.simulator("lorenz96", preset="small")
    >>> parameters_from_mapping(model, {"F": [8.0, 10.0]}).shape
    torch.Size([2, 1])
    """
    names = model.parameter_names
    unknown = sorted(set(parameters) - set(names))
    missing = [name for name in names if name not in parameters]
    if unknown or missing:
        raise ParameterError(
            expected_found("parameter names", list(names), sorted(parameters))
            + (f"; unknown: {unknown}" if unknown else "")
            + (f"; missing: {missing}" if missing else "")
        )
    columns = []
    for spec in model.parameter_specs:
        value = parameters[spec.name]
        if hasattr(value, "units") and hasattr(value, "magnitude"):  # pint Quantity
            try:
                value = value.to(spec.units).magnitude
            except Exception as err:
                raise UnitsError(
                    expected_found(f"units of parameter {spec.name!r}",
                                   f"convertible to {spec.units!r}", str(value.units))
                ) from err
        elif isinstance(value, xr.DataArray) and "units" in value.attrs:
            value = convert_values(value.values, value.attrs["units"], spec.units,
                                   f"units of parameter {spec.name!r}")
        columns.append(np.atleast_1d(np.asarray(value, dtype=np.float64)))
    try:
        stacked = np.stack(np.broadcast_arrays(*columns), axis=-1)
    except ValueError as err:
        raise ParameterError(
            expected_found("parameter value lengths", "equal lengths or scalars",
                           {s.name: len(c) for s, c in zip(model.parameter_specs, columns)})
        ) from err
    if stacked.ndim != 2:
        raise ParameterError(expected_found("parameter values", "scalars or 1-D sequences",
                                            f"{stacked.ndim - 1}-D arrays"))
    return model.check_parameters(torch.as_tensor(stacked))


def trajectory_to_dataset(
    model: Simulator,
    frames: torch.Tensor,
    parameters: torch.Tensor,
    *,
    preset: str | None,
    seed: int | None,
) -> xr.Dataset:
    """Wrap frames ``(runs, time, n_variables, *grid)`` as a CF Dataset.

    Dims are ``(run, time, *grid_dims)``; parameters become coordinates along ``run``
    with units; attrs record case, periodic dims (``xldensf_periodic``, the simulator's
    :attr:`~xldensf.simulators.base.Simulator.periodic_dims`), preset, config, seed and the
    package version.
    """
    frames_np = frames.detach().cpu().numpy()
    params_np = parameters.detach().cpu().numpy().astype(np.float64)
    runs = frames_np.shape[0]
    start = getattr(model, "start", None)
    if start is None:
        time = (TIME_DIM, model.output_times, coordinate_attrs("time", units=model.time_units))
    else:
        time_attrs = {key: value for key, value in coordinate_attrs("time").items()
                      if key != "units"}
        time_attrs["long_name"] = "time"
        time = (TIME_DIM, datetimes_after(start, np.asarray(model.output_times, np.float64)
                                          * model.time_unit_seconds), time_attrs)
    coords: dict[str, Any] = {RUN_DIM: (RUN_DIM, np.arange(runs), coordinate_attrs(RUN_DIM)),
                              TIME_DIM: time}
    for coord in model.grid_coordinates:
        coords[coord.name] = (coord.name, coord.values, coord.attrs)
    for i, spec in enumerate(model.parameter_specs):
        coords[spec.name] = (RUN_DIM, params_np[:, i], spec.attrs())
    dims = (RUN_DIM, TIME_DIM, *model.grid_dims)
    data_vars: dict[str, Any] = {
        name: (dims, frames_np[:, :, i], variable_attrs(model.case, name))
        for i, name in enumerate(model.variables)
    }
    for name, (field_dims, values) in model.static_fields().items():
        data_vars[name] = (field_dims, values, variable_attrs(model.case, name))
    attrs = {
        "Conventions": "CF-1.10",
        "title": f"xldensf {model.case} simulation",
        "source": f"xldensf {__version__} full-order simulator {type(model).__name__}",
        "xldensf_case": model.case,
        "xldensf_periodic": " ".join(model.periodic_dims) or "none",
        "xldensf_preset": preset if preset is not None else "custom",
        "xldensf_config": json.dumps(model.config_dict(), sort_keys=True),
        "xldensf_seed": -1 if seed is None else int(seed),
        "xldensf_version": __version__,
        "xldensf_dtype": str(model.dtype).replace("torch.", ""),
    }
    dataset = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    if start is not None:
        dataset[TIME_DIM].encoding.update(time_encoding(start, dataset[TIME_DIM].values))
    return dataset
