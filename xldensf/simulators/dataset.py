"""Turn simulator tensors into CF-compliant xarray Datasets (units at the edge)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import xarray as xr

from .._version import __version__
from ..conventions import RUN_DIM, TIME_DIM, convert_values, coordinate_attrs, variable_attrs
from ..errors import ParameterError, UnitsError, expected_found
from .base import Simulator

__all__ = ["trajectory_to_dataset", "parameters_from_mapping"]


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
    coords: dict[str, Any] = {
        RUN_DIM: (RUN_DIM, np.arange(runs), coordinate_attrs(RUN_DIM)),
        TIME_DIM: (TIME_DIM, model.output_times, coordinate_attrs("time", units=model.time_units)),
    }
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
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)
