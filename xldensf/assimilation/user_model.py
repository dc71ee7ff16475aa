"""Your own forecast model: the :class:`ForecastModel` protocol and :func:`forecast_model`.

A forecast model that is not one of the built-in simulators can be assimilated with the
full-order filters (``obs.ldensf.assimilate(my_model, method="letkf")``) if it declares

- ``template``: an xarray Dataset of one state, i.e. the variables (each with a ``units``
  attribute, all on the same grid dims) and the grid coordinates with CF attributes
  (``standard_name``/``units`` such as ``degrees_north``, or ``axis: X``), from which the
  grid geometry is recognised as for any Dataset
  (:meth:`~xldensf.geometry.GridGeometry.from_coordinates`);
- ``advance(state, t0, dt, parameters)``: advance a batch of states ``(members, n_vars,
  *grid)`` (a float tensor in the template's units, variables in the template's order)
  from time ``t0`` by ``dt`` (model time units) and return the new batch of the same
  shape and dtype; ``parameters`` is ``(members, n_parameters)`` or ``None`` when the
  model has none.

Optional attributes:

- ``parameters``: the parameters to estimate jointly with the state, as
  :class:`~xldensf.simulators.base.ParameterSpec` objects or a mapping ``name -> (units,
  prior_low, prior_high)`` (uniform prior; ``valid_low``/``valid_high`` of a spec clamp the
  analysis);
- ``prior(members, seed)``: an initial ensemble ``(members, n_vars, *grid)`` (a tensor, or
  a Dataset with a ``member`` dim), used when ``assimilate`` gets no ``prior=``;
- ``time_units`` (default: the units of a ``time`` coordinate of the template, else
  ``"1"``), ``periodic`` (periodic grid dims; default: the template's
  ``xldensf_periodic`` attribute, else the full-period rule), ``dtype`` (default
  float64), ``device``, ``start`` (datetime of time 0 for datetime observations),
  ``time_unit_seconds``.

:func:`forecast_model` wraps a plain step function into such a model, and
:func:`run_model` runs one into a truth Dataset.

Examples
--------
>>> import numpy as np, torch, xarray as xr, xldensf as xl
>>> x = xr.DataArray(np.arange(8.0), dims="x", attrs={"axis": "X", "units": "1"})
>>> template = xr.Dataset({"u": ("x", np.zeros(8), {"units": "1"})}, coords={"x": x},
...                       attrs={"xldensf_periodic": "x"})
>>> model = xl.forecast_model(lambda u, t0, dt, p: torch.roll(u, 1, dims=-1),
...                           template=template, step_size=1.0)
>>> isinstance(model, xl.ForecastModel)
True
>>> model.advance(torch.eye(8)[None, None, 0], 0.0, 2.0, None)[0, 0].tolist()
[0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import xarray as xr

from ..conventions import coordinate_attrs
from ..errors import ConfigurationError, DataError, expected_found
from ..geometry import GridGeometry
from ..options import resolve_device, resolve_dtype
from ..simulators.base import CoordinateSpec, ParameterSpec

__all__ = ["ForecastModel", "FunctionModel", "ForecastModelAdapter", "forecast_model",
           "parameter_specs", "run_model"]


@runtime_checkable
class ForecastModel(Protocol):
    """What ``assimilate`` needs of a user's forecast model (see the module docstring).

    Attributes
    ----------
    template
        One state as a Dataset: variables with ``units`` on the grid dims, grid
        coordinates with CF attributes.

    Examples
    --------
    >>> import torch, xldensf as xl
    >>> class Persistence:
    ...     template = xl.simulate("lorenz96", runs=1, preset="small").isel(run=0, time=0)
    ...     def advance(self, state, t0, dt, parameters):
    ...         return state.clone()
    >>> isinstance(Persistence(), ForecastModel)
    True
    """

    template: xr.Dataset

    def advance(self, state: torch.Tensor, t0: float, dt: float,
                parameters: torch.Tensor | None) -> torch.Tensor:
        """States ``(members, n_vars, *grid)`` advanced from ``t0`` by ``dt``."""
        ...


@dataclass
class FunctionModel:
    """A :class:`ForecastModel` made of a step function (see :func:`forecast_model`)."""

    step: Callable[..., torch.Tensor]
    template: xr.Dataset
    step_size: float | None = None
    parameters: tuple[ParameterSpec, ...] = ()
    prior: Callable[[int, int], Any] | None = None
    time_units: str | None = None
    periodic: Sequence[str] | str | None = None
    dtype: torch.dtype = torch.float64
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    start: Any = None

    def advance(self, state: torch.Tensor, t0: float, dt: float,
                parameters: torch.Tensor | None) -> torch.Tensor:
        """``step`` once over ``dt``, or ``dt / step_size`` times with ``step_size``."""
        if self.step_size is None:
            return self.step(state, t0, dt, parameters)
        n = dt / self.step_size
        steps = round(n)
        if steps < 0 or abs(n - steps) > 1e-6 * max(1.0, abs(n)):
            raise ConfigurationError(expected_found(
                "forecast interval", f"a non-negative multiple of step_size = "
                f"{self.step_size:g}", dt))
        for i in range(steps):
            state = self.step(state, t0 + i * self.step_size, self.step_size, parameters)
        return state


def parameter_specs(parameters: Any) -> tuple[ParameterSpec, ...]:
    """Parameter declarations as :class:`~xldensf.simulators.base.ParameterSpec` objects.

    ``parameters``: ``None``, a sequence of specs, or a mapping ``name -> spec`` or ``name
    -> (units, prior_low, prior_high)``.

    Examples
    --------
    >>> parameter_specs({"c": ("m s-1", 0.5, 1.5)})[0].prior_high
    1.5
    """
    if parameters is None:
        return ()
    if isinstance(parameters, Mapping):
        specs = []
        for name, value in parameters.items():
            if isinstance(value, ParameterSpec):
                specs.append(value)
            elif isinstance(value, Sequence) and len(value) == 3:
                units, low, high = value
                specs.append(ParameterSpec(str(name), str(units), str(name), float(low),
                                           float(high)))
            else:
                raise ConfigurationError(expected_found(
                    f"parameter {name!r}", "a ParameterSpec or (units, prior_low, prior_high)",
                    value))
        return tuple(specs)
    if isinstance(parameters, Sequence) and all(isinstance(p, ParameterSpec)
                                                for p in parameters):
        return tuple(parameters)
    raise ConfigurationError(expected_found("parameters", "ParameterSpecs or a mapping name "
                                            "-> (units, prior_low, prior_high)", parameters))


def forecast_model(step: Callable[..., torch.Tensor], template: xr.Dataset, *,
                   step_size: float | None = None, parameters: Any = None,
                   prior: Callable[[int, int], Any] | None = None,
                   time_units: str | None = None, periodic: Sequence[str] | str | None = None,
                   dtype: torch.dtype | str = torch.float64,
                   device: torch.device | str | None = None,
                   start: Any = None) -> FunctionModel:
    """Wrap a step function into a :class:`ForecastModel`.

    Parameters
    ----------
    step
        ``step(state, t0, dt, parameters) -> state``: states ``(members, n_vars, *grid)``
        advanced from ``t0`` by ``dt``; ``parameters`` ``(members, n_parameters)`` or
        ``None``.
    template
        One state as a Dataset (variables with units, CF grid coordinates).
    step_size
        Time step of ``step``: intervals between observations are split into steps of
        this length (they must be multiples of it). ``None``: ``step`` is called once per
        interval with its full length.
    parameters
        Parameters estimated with the state (see :func:`parameter_specs`).
    prior
        ``prior(members, seed)`` -> initial ensemble (tensor or Dataset with ``member``).
    time_units, periodic, dtype, device, start
        See the module docstring.

    Returns
    -------
    FunctionModel

    Examples
    --------
    >>> import numpy as np, torch, xarray as xr
    >>> x = xr.DataArray(np.arange(4.0), dims="x", attrs={"axis": "X", "units": "m"})
    >>> template = xr.Dataset({"h": ("x", np.zeros(4), {"units": "m"})}, coords={"x": x})
    >>> damped = forecast_model(lambda h, t0, dt, p: h * (1 - p[:, :, None] * dt),
    ...                         template, step_size=0.1, parameters={"k": ("s-1", 0, 1)},
    ...                         time_units="s")
    >>> damped.advance(torch.ones(1, 1, 4, dtype=torch.float64), 0.0, 0.2,
    ...                torch.tensor([[0.5]], dtype=torch.float64))[0, 0, 0].item()
    0.9025
    """
    if not callable(step):
        raise ConfigurationError(expected_found("step", "a callable", type(step).__name__))
    return FunctionModel(step=step, template=template, step_size=step_size,
                         parameters=parameter_specs(parameters), prior=prior,
                         time_units=time_units, periodic=periodic,
                         dtype=resolve_dtype(dtype), device=resolve_device(device), start=start)


def _grid_dims(template: Any) -> tuple[str, ...]:
    if not isinstance(template, xr.Dataset) or not template.data_vars:
        raise DataError(expected_found("forecast model template", "a Dataset of one state "
                                       "with at least one variable", type(template).__name__))
    dims = {name: tuple(map(str, variable.dims)) for name, variable in template.data_vars.items()}
    first = next(iter(dims.values()))
    if any(found != first for found in dims.values()) or not first:
        raise DataError(expected_found("template variable dims", "the same grid dims for "
                                       "every variable", dims))
    missing = [dim for dim in first if dim not in template.coords]
    if missing:
        raise DataError(expected_found("template grid coordinates", f"one per dim {first}",
                                       f"none for {missing}"))
    no_units = [name for name, variable in template.data_vars.items()
                if "units" not in variable.attrs]
    if no_units:
        raise DataError(expected_found("template variable units", "a units attribute on "
                                       "every variable", f"none on {no_units}"))
    return first


class ForecastModelAdapter:
    """A :class:`ForecastModel` seen through the full-order filters' simulator interface
    (variables, grid, parameters, prior, checked ``advance``).

    Examples
    --------
    >>> import torch, xldensf as xl
    >>> class Persistence:
    ...     template = xl.simulate("lorenz96", runs=1, preset="small").isel(run=0, time=0)
    ...     def advance(self, state, t0, dt, parameters):
    ...         return state.clone()
    >>> view = ForecastModelAdapter(Persistence())
    >>> view.variables, view.state_shape, view.geometry.axes[0].period
    (('x',), (1, 40), 40.0)
    """

    case = "user"

    def __init__(self, model: ForecastModel) -> None:
        self.model = model
        template = model.template
        self.grid_dims = _grid_dims(template)
        self.variables = tuple(str(name) for name in template.data_vars)
        self.field_attrs = {name: dict(template[name].attrs) for name in self.variables}
        self.variable_units = {name: str(attrs["units"])
                               for name, attrs in self.field_attrs.items()}
        self.grid_coordinates = tuple(
            CoordinateSpec(dim, np.asarray(template[dim].values), dict(template[dim].attrs))
            for dim in self.grid_dims)
        periodic = getattr(model, "periodic", None)
        if periodic is None:
            periodic = template.attrs.get("xldensf_periodic")
        self.geometry = GridGeometry.from_coordinates(
            {c.name: c.values for c in self.grid_coordinates},
            {c.name: c.attrs for c in self.grid_coordinates}, periodic=periodic)
        time_units = getattr(model, "time_units", None)
        if time_units is None:
            time_units = template["time"].attrs.get("units", "1") \
                if "time" in template.coords else "1"
        self.time_units = str(time_units)
        self.parameter_specs = parameter_specs(getattr(model, "parameters", None))
        self.parameter_names = tuple(spec.name for spec in self.parameter_specs)
        self.dtype = resolve_dtype(getattr(model, "dtype", torch.float64))
        self.device = resolve_device(getattr(model, "device", None))
        self.start = getattr(model, "start", None)
        self.time_unit_seconds = getattr(model, "time_unit_seconds", None)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(len(c.values) for c in self.grid_coordinates)

    @property
    def state_shape(self) -> tuple[int, ...]:
        return (len(self.variables), *self.grid_shape)

    def tensor(self, values: Any) -> torch.Tensor:
        """``values`` as a tensor of the model's dtype and device."""
        return torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=self.dtype,
                               device=self.device)

    def draw_parameters(self, batch: int, generator: torch.Generator | None = None
                        ) -> torch.Tensor:
        """``(batch, n_parameters)`` drawn from the declared uniform priors."""
        low = torch.tensor([s.prior_low for s in self.parameter_specs], dtype=torch.float64)
        high = torch.tensor([s.prior_high for s in self.parameter_specs], dtype=torch.float64)
        uniform = torch.rand(batch, len(low), generator=generator, dtype=torch.float64)
        return (low + (high - low) * uniform).to(dtype=self.dtype, device=self.device)

    def check_parameters(self, parameters: torch.Tensor) -> torch.Tensor:
        """Parameters ``(batch, n_parameters)`` on the model's dtype and device."""
        parameters = torch.as_tensor(parameters)
        n = len(self.parameter_specs)
        if parameters.ndim != 2 or parameters.shape[1] != n or \
                not torch.isfinite(parameters).all():
            raise DataError(expected_found("parameters", f"finite (batch, {n}) values for "
                                           f"{self.parameter_names}", tuple(parameters.shape)))
        return parameters.to(dtype=self.dtype, device=self.device)

    def draw_prior(self, members: int, generator: torch.Generator | None = None
                   ) -> torch.Tensor | xr.Dataset:
        """The model's ``prior(members, seed)``: a checked tensor ``(members, n_vars,
        *grid)``, or a Dataset with a ``member`` dim (read like ``prior=``)."""
        prior = getattr(self.model, "prior", None)
        if not callable(prior):
            raise DataError(expected_found(
                "prior of the user model", "prior= (a Dataset of members or of one state) "
                "or a model with a prior(members, seed) method", "neither"))
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        drawn = prior(members, seed)
        if isinstance(drawn, xr.Dataset):
            return drawn
        return self.check_output(drawn, (members, *self.state_shape), "prior(members, seed)")

    def check_output(self, state: Any, shape: tuple[int, ...], what: str) -> torch.Tensor:
        """``state`` as a tensor if it has ``shape`` and the model's dtype and is finite."""
        if not isinstance(state, torch.Tensor):
            raise DataError(expected_found(what, "a torch.Tensor", type(state).__name__))
        if tuple(state.shape) != shape:
            raise DataError(expected_found(f"{what} shape", shape, tuple(state.shape)))
        if state.dtype != self.dtype:
            raise DataError(expected_found(f"{what} dtype", self.dtype, state.dtype))
        if not torch.isfinite(state).all():
            bad = int((~torch.isfinite(state)).flatten(1).any(dim=1).sum())
            raise DataError(expected_found(f"{what} values", "finite values",
                                           f"NaN or Inf in {bad} of {shape[0]} members"))
        return state.to(self.device)

    def advance(self, state: torch.Tensor, parameters: torch.Tensor, t0: float,
                duration: float) -> torch.Tensor:
        """The user's ``advance`` (simulator argument order), with its result checked."""
        given = parameters if self.parameter_specs else None
        result = self.model.advance(state, float(t0), float(duration), given)
        return self.check_output(result, tuple(state.shape),
                                 f"advance(state, t0={t0:g}, dt={duration:g}) result")


def run_model(model: ForecastModel, initial: Any, times: Sequence[float],
              parameters: Mapping[str, float] | None = None) -> xr.Dataset:
    """Run ``model`` from one initial state and return the trajectory as a Dataset
    ``(time, *grid)`` (a truth to observe, or a training run).

    Parameters
    ----------
    model
        A :class:`ForecastModel`.
    initial
        One state: a tensor ``(n_vars, *grid)`` in the template's units, or a Dataset like
        the template.
    times
        Increasing output times in the model's time units; the first is the initial time.
    parameters
        Value of each declared parameter (recorded as scalar coordinates).

    Examples
    --------
    >>> import numpy as np, torch, xarray as xr
    >>> x = xr.DataArray(np.arange(4.0), dims="x", attrs={"axis": "X", "units": "1"})
    >>> template = xr.Dataset({"u": ("x", np.zeros(4), {"units": "1"})}, coords={"x": x})
    >>> model = forecast_model(lambda u, t0, dt, p: u + dt, template)
    >>> run_model(model, torch.zeros(1, 4, dtype=torch.float64), [0.0, 1.0, 3.0])["u"][:, 0].values
    array([0., 1., 3.])
    """
    view = ForecastModelAdapter(model)
    if isinstance(initial, xr.Dataset):
        initial = np.stack([initial[name].transpose(*view.grid_dims).values
                            for name in view.variables])
    state = view.tensor(initial)[None]
    view.check_output(state, (1, *view.state_shape), "initial state")
    values = dict(parameters or {})
    if sorted(values) != sorted(view.parameter_names):
        raise ConfigurationError(expected_found("parameters", list(view.parameter_names),
                                                sorted(values)))
    params = view.tensor([[values[name] for name in view.parameter_names]]).reshape(1, -1)
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or len(times) < 1 or (np.diff(times) <= 0).any() or \
            not all(math.isfinite(t) for t in times):
        raise ConfigurationError(expected_found("times", "increasing finite numbers", times))
    frames = [state]
    with torch.no_grad():
        for t0, t1 in zip(times[:-1], times[1:]):
            state = view.advance(state, params, float(t0), float(t1 - t0))
            frames.append(state)
    array = torch.cat(frames).cpu().numpy()
    coords: dict[str, Any] = {c.name: (c.name, c.values, c.attrs) for c in view.grid_coordinates}
    coords["time"] = ("time", times, coordinate_attrs("time", units=view.time_units))
    for spec in view.parameter_specs:
        coords[spec.name] = ((), values[spec.name], spec.attrs())
    data = {name: (("time", *view.grid_dims), array[:, i], view.field_attrs[name])
            for i, name in enumerate(view.variables)}
    attrs = dict(model.template.attrs)
    attrs.setdefault("xldensf_periodic", " ".join(
        axis.name for axis in view.geometry.axes if axis.period is not None) or "none")
    return xr.Dataset(data, coords=coords, attrs=attrs)
