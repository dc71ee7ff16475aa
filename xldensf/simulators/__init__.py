"""Full-order simulators: the registry, :func:`simulator` and :func:`simulate`.

Cases
-----
``"tsunami"``
    Planar shallow water with beta-plane Coriolis (LD-EnSF benchmark).
``"atmosphere"``
    Forced rotating shallow water on the sphere (torch-harmonics).
``"kolmogorov"``
    2-D incompressible Navier-Stokes with Kolmogorov forcing.
``"lorenz96"``
    The Lorenz-96 model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import xarray as xr

from ..errors import ConfigurationError, ParameterError, check_name, expected_found
from ..options import resolve_seed
from .base import CoordinateSpec, ParameterSpec, Simulator
from .dataset import parameters_from_mapping, set_time_axis, trajectory_to_dataset
from .registry import CASES, PRESETS, register

__all__ = [
    "CASES",
    "PRESETS",
    "Simulator",
    "ParameterSpec",
    "CoordinateSpec",
    "simulator",
    "simulate",
    "register",
    "set_time_axis",
]

def _config_for(cls: type[Simulator], preset: str, overrides: Mapping[str, Any]) -> Any:
    config_class = cls.config_class  # type: ignore[attr-defined]
    check_name("preset", preset, PRESETS)
    base = getattr(config_class, preset)()
    fields = {field.name for field in dataclasses.fields(config_class)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigurationError(
            expected_found(f"{cls.case} configuration keys", sorted(fields), unknown)
        )
    return dataclasses.replace(base, **overrides)


def simulator(
    case: str,
    preset: str = "paper",
    *,
    dtype: torch.dtype | str = torch.float64,
    device: torch.device | str | None = None,
    progress: bool | None = None,
    start: Any = None,
    time_unit: Any = None,
    **config: Any,
) -> Simulator:
    """Build the full-order model of ``case`` (the filters' forecast model).

    Parameters
    ----------
    case
        One of :data:`CASES`.
    preset
        ``"paper"`` (the LD-EnSF setting) or ``"small"`` (seconds on one CPU core).
    dtype, device
        Torch dtype (float32/float64) and device of the computation.
    progress
        Progress bars; ``None`` follows :func:`xldensf.set_options`.
    start
        Datetime of the initial state (ISO string, ``datetime``, ``numpy.datetime64`` or
        cftime): runs are put on a datetime axis and observation datetimes are read
        relative to it (see :func:`~xldensf.simulators.set_time_axis`).
    time_unit
        Duration of one model time unit for a nondimensional case (e.g. ``"5 days"``;
        default for Lorenz-96: 5 days, the usual 0.05 units ~ 6 hours).
    **config
        Overrides of the preset's configuration fields.

    Examples
    --------
    >>> import xldensf as xl
    >>> model = xl.simulator("lorenz96", preset="small", forcing_default=10.0)
    >>> model.parameter_names
    ('F',)
    >>> str(xl.simulator("lorenz96", preset="small", start="2011-03-11").start)
    '2011-03-11T00:00:00.000000000'
    """
    cls = CASES[check_name("case", case, CASES)]
    model = cls(_config_for(cls, preset, config), dtype=dtype, device=device,
                progress=progress)
    return set_time_axis(model, start, time_unit)


def simulate(
    case: str,
    runs: int = 1,
    seed: int | None = None,
    parameters: Mapping[str, Any] | None = None,
    preset: str = "paper",
    *,
    dtype: torch.dtype | str = torch.float64,
    device: torch.device | str | None = None,
    batch_size: int | None = None,
    progress: bool | None = None,
    start: Any = None,
    time_unit: Any = None,
    **config: Any,
) -> xr.Dataset:
    """Simulate ``runs`` trajectories of ``case`` and return them as a CF Dataset.

    Parameters
    ----------
    case
        ``"tsunami"``, ``"atmosphere"``, ``"kolmogorov"`` or ``"lorenz96"``.
    runs
        Number of runs; ignored when ``parameters`` is given (its length decides).
    seed
        Seed of the parameter draw and of any initial-state perturbation. ``None`` draws
        a fresh seed, which is recorded in ``attrs["xldensf_seed"]``.
    parameters
        Explicit parameter values by name (numbers, sequences or pint Quantities).
    preset
        ``"paper"`` or ``"small"``.
    dtype, device
        Precision and device of the computation (the Dataset stores the same precision).
    batch_size
        Runs simulated at once (default: all).
    progress
        Progress bars; ``None`` follows :func:`xldensf.set_options`.
    start, time_unit
        Datetime of the initial state and duration of one nondimensional time unit (see
        :func:`simulator`): with ``start`` the time coordinate holds datetime64 values
        (written to netCDF as ``seconds since <start>``).
    **config
        Overrides of the preset's configuration.

    Returns
    -------
    xarray.Dataset
        Dims ``(run, time, *grid)``; parameters are coordinates along ``run``.

    Examples
    --------
    >>> import xldensf as xl
    >>> ds = xl.simulate("lorenz96", runs=2, seed=0, preset="small", progress=False)
    >>> ds["x"].dims
    ('run', 'time', 'k')
    >>> ds = xl.simulate("lorenz96", seed=0, preset="small", n_outputs=3, start="2011-03-11")
    >>> ds.time.values[1]
    np.datetime64('2011-03-11T06:00:00.000000000')
    """
    model = simulator(case, preset, dtype=dtype, device=device, progress=progress,
                      start=start, time_unit=time_unit, **config)
    seed = resolve_seed(seed)
    generator = torch.Generator().manual_seed(int(seed))
    if parameters is not None:
        values = parameters_from_mapping(model, parameters)
    else:
        if not isinstance(runs, (int, np.integer)) or isinstance(runs, bool) or runs <= 0:
            raise ParameterError(expected_found("runs", "a positive integer", runs))
        values = model.draw_parameters(int(runs), generator)
    batch = len(values) if batch_size is None else int(batch_size)
    if batch <= 0:
        raise ConfigurationError(expected_found("batch_size", "a positive integer", batch_size))
    chunks = [
        model.trajectory(values[start : start + batch], generator).cpu()
        for start in range(0, len(values), batch)
    ]
    return trajectory_to_dataset(model, torch.cat(chunks), values, preset=preset, seed=seed)


# Registration: importing the case modules fills CASES.
from . import kolmogorov, lorenz96, sphere, tsunami  # noqa: E402,F401
