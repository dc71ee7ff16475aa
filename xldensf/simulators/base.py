"""The full-order simulator interface shared by every case.

A simulator is a batched torch model of one physical system. Its *state* is a plain tensor
of gridded fields in SI (or the case's nondimensional) units with shape
``(batch, n_variables, *grid_shape)``; the batch axis runs over simulation runs or ensemble
members. Parameters are a tensor of shape ``(batch, n_parameters)`` in the units of
:attr:`Simulator.parameter_specs`. Units and CF metadata are added only when a trajectory is
turned into a Dataset (:mod:`xldensf.simulators.dataset`).

Subclasses implement the equations in an internal representation of their choice (grid
fields, spectral coefficients) through four hooks: :meth:`Simulator.initial_internal`,
:meth:`Simulator.step`, :meth:`Simulator.to_fields` and :meth:`Simulator.from_fields`.
Time stepping (:meth:`Simulator.advance`, :meth:`Simulator.trajectory`) lives here once.

The filters use :meth:`Simulator.advance` as the forecast model:

>>> import torch, xldensf as xl
>>> model = xl.simulator("lorenz96", preset="small")
>>> params = model.default_parameters(4)          # (4, 1): F = 8 for every member
>>> state = model.initial_state(params)           # (4, 1, 40)
>>> model.advance(state, params, t0=0.0, duration=0.25).shape
torch.Size([4, 1, 40])
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import ConfigurationError, ParameterError, expected_found
from ..options import progress_enabled, resolve_device, resolve_dtype

__all__ = ["ParameterSpec", "CoordinateSpec", "Simulator", "cell_centres"]


def cell_centres(n_cells: int, length: float) -> np.ndarray:
    """Cell-centre coordinates [m] of ``n_cells`` equal cells spanning ``[-L/2, L/2]``.

    Examples
    --------
    >>> cell_centres(4, 4.0)
    array([-1.5, -0.5,  0.5,  1.5])
    """
    spacing = length / n_cells
    return (np.arange(n_cells) + 0.5) * spacing - 0.5 * length


@dataclass(frozen=True)
class ParameterSpec:
    """A physical parameter of a case.

    Parameters
    ----------
    name
        Name of the parameter (coordinate name along ``run``).
    units
        CF unit string of the values.
    long_name
        Human-readable description.
    prior_low, prior_high
        Bounds of the uniform prior used when parameters are drawn.
    valid_low, valid_high
        Bounds of the physically meaningful domain (values outside raise
        :class:`~xldensf.errors.ParameterError`).
    default
        Value used by :meth:`Simulator.default_parameters`.
    """

    name: str
    units: str
    long_name: str
    prior_low: float
    prior_high: float
    valid_low: float = -math.inf
    valid_high: float = math.inf
    default: float | None = None

    def attrs(self) -> dict[str, Any]:
        """CF attributes of the parameter coordinate."""
        return {
            "units": self.units,
            "long_name": self.long_name,
            "prior": f"uniform({self.prior_low:g}, {self.prior_high:g})",
            "valid_range": [self.valid_low, self.valid_high],
        }


@dataclass(frozen=True)
class CoordinateSpec:
    """A grid coordinate: its name, values and CF attributes."""

    name: str
    values: np.ndarray
    attrs: dict[str, Any]


class Simulator(ABC):
    """Batched torch full-order model (base class).

    Parameters
    ----------
    config
        The case's frozen configuration dataclass.
    dtype
        ``torch.float32`` or ``torch.float64`` (or their names).
    device
        Torch device (``"cpu"``, ``"cuda"``); ``None`` means CPU.
    progress
        Show a progress bar over time steps in :meth:`trajectory`; ``None`` follows
        :func:`xldensf.set_options`.
    """

    #: Case name used by the registry and the variable table.
    case: ClassVar[str]
    #: Output variable names, in the order of the state's variable axis.
    variables: ClassVar[tuple[str, ...]]
    #: Names of the grid dimensions, in the order of the state's grid axes.
    grid_dims: ClassVar[tuple[str, ...]]
    #: Unit of the time coordinate ("s" or "1" for nondimensional models).
    time_units: ClassVar[str] = "s"
    #: Grid dimensions that are periodic (wrap around), e.g. ``("k",)`` for the Lorenz-96
    #: ring; empty for a bounded domain. Written to the ``xldensf_periodic`` attribute of
    #: simulated Datasets and read by :class:`xldensf.geometry.GridGeometry`.
    periodic_dims: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        config: Any,
        *,
        dtype: torch.dtype | str = torch.float64,
        device: torch.device | str | None = None,
        progress: bool | None = None,
    ) -> None:
        self.config = config
        self.dtype = resolve_dtype(dtype)
        self.device = resolve_device(device)
        self.progress = progress
        self.validate_config()

    # ------------------------------------------------------------------ description
    @property
    @abstractmethod
    def parameter_specs(self) -> tuple[ParameterSpec, ...]:
        """The case's parameters, in the order of the parameter tensor's last axis."""

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Names of the parameters, in tensor order."""
        return tuple(spec.name for spec in self.parameter_specs)

    @property
    @abstractmethod
    def grid_coordinates(self) -> tuple[CoordinateSpec, ...]:
        """Coordinates of the grid dimensions, in the order of :attr:`grid_dims`."""

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Shape of one variable's field."""
        return tuple(len(coord.values) for coord in self.grid_coordinates)

    @property
    def state_shape(self) -> tuple[int, ...]:
        """Shape of one state: ``(n_variables, *grid_shape)``."""
        return (len(self.variables), *self.grid_shape)

    @property
    def dt(self) -> float:
        """Time step, in :attr:`time_units` (default: ``config.dt``)."""
        return self.config.dt

    @property
    def steps_per_output(self) -> int:
        """Number of time steps between stored frames (default: ``config.output_every``)."""
        return self.config.output_every

    @property
    def n_outputs(self) -> int:
        """Number of stored frames, including the initial one (default: ``config.n_outputs``)."""
        return self.config.n_outputs

    @property
    def output_times(self) -> np.ndarray:
        """Times of the stored frames, in :attr:`time_units`, starting at 0."""
        return np.arange(self.n_outputs) * self.steps_per_output * self.dt

    def static_fields(self) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
        """Time-independent fields to store with a trajectory (e.g. depth), by name."""
        return {}

    def validate_config(self) -> None:
        """Raise :class:`~xldensf.errors.ConfigurationError` for unusable settings."""
        return None

    # ------------------------------------------------------------------ parameters
    def default_parameters(self, batch: int = 1) -> torch.Tensor:
        """Each parameter's default (prior midpoint if none), repeated ``batch`` times."""
        values = [
            spec.default if spec.default is not None else 0.5 * (spec.prior_low + spec.prior_high)
            for spec in self.parameter_specs
        ]
        return self.tensor(values).expand(batch, -1).clone()

    def draw_parameters(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``batch`` parameter vectors from the case's uniform prior.

        Returns
        -------
        torch.Tensor
            Shape ``(batch, n_parameters)``.
        """
        low = torch.tensor([s.prior_low for s in self.parameter_specs], dtype=torch.float64)
        high = torch.tensor([s.prior_high for s in self.parameter_specs], dtype=torch.float64)
        uniform = torch.rand(batch, len(low), generator=generator, dtype=torch.float64)
        return (low + (high - low) * uniform).to(dtype=self.dtype, device=self.device)

    def check_parameters(self, parameters: torch.Tensor) -> torch.Tensor:
        """Check shape and physical validity; return the tensor on this model's dtype/device."""
        if not isinstance(parameters, torch.Tensor):
            parameters = torch.as_tensor(np.asarray(parameters, dtype=np.float64))
        n = len(self.parameter_specs)
        if parameters.ndim != 2 or parameters.shape[1] != n:
            raise ParameterError(
                expected_found("parameters shape", f"(batch, {n}) for {self.parameter_names}",
                               tuple(parameters.shape))
            )
        if not torch.isfinite(parameters).all():
            raise ParameterError(expected_found("parameters", "finite values", "NaN or Inf"))
        for i, spec in enumerate(self.parameter_specs):
            column = parameters[:, i]
            bad = (column < spec.valid_low) | (column > spec.valid_high)
            if bad.any():
                raise ParameterError(
                    expected_found(
                        f"parameter {spec.name!r} [{spec.units}]",
                        f"values in [{spec.valid_low:g}, {spec.valid_high:g}]",
                        float(column[bad][0]),
                    )
                )
        return parameters.to(dtype=self.dtype, device=self.device)

    def check_state(self, state: torch.Tensor) -> None:
        """Raise :class:`~xldensf.errors.ConfigurationError` if ``state`` has the wrong
        shape, dtype or device."""
        if not isinstance(state, torch.Tensor) or tuple(state.shape[1:]) != self.state_shape:
            found = tuple(state.shape) if isinstance(state, torch.Tensor) else type(state).__name__
            raise ConfigurationError(
                expected_found("state shape", f"(batch, *{self.state_shape})", found)
            )
        if state.dtype != self.dtype or state.device != self.device:
            raise ConfigurationError(
                expected_found(
                    "state dtype/device",
                    f"{self.dtype} on {self.device}",
                    f"{state.dtype} on {state.device}",
                )
            )

    # ------------------------------------------------------------------ equations (hooks)
    @abstractmethod
    def initial_internal(
        self, parameters: torch.Tensor, generator: torch.Generator | None = None
    ) -> Any:
        """Initial internal state for each parameter vector (including any random
        initial-state perturbation drawn from ``generator`` and any spin-up)."""

    @abstractmethod
    def step(self, internal: Any, parameters: torch.Tensor, time: float) -> Any:
        """Advance the internal state by one time step :attr:`dt` from ``time``."""

    def to_fields(self, internal: Any) -> torch.Tensor:
        """Internal state -> gridded fields ``(batch, n_variables, *grid_shape)``."""
        return internal

    def from_fields(self, fields: torch.Tensor) -> Any:
        """Gridded fields -> internal state (inverse of :meth:`to_fields`)."""
        return fields

    # ------------------------------------------------------------------ time stepping
    def initial_state(
        self, parameters: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Initial gridded state ``(batch, n_variables, *grid_shape)`` for ``parameters``."""
        parameters = self.check_parameters(parameters)
        return self.to_fields(self.initial_internal(parameters, generator))

    def steps_for(self, duration: float) -> int:
        """Number of time steps in ``duration``; it must be a whole multiple of :attr:`dt`."""
        n = duration / self.dt
        steps = round(n)
        if steps < 0 or abs(n - steps) > 1e-6 * max(1.0, abs(n)):
            raise ConfigurationError(
                expected_found("duration", f"a non-negative multiple of dt = {self.dt:g}", duration)
            )
        return steps

    def advance(
        self, state: torch.Tensor, parameters: torch.Tensor, t0: float, duration: float
    ) -> torch.Tensor:
        """Advance gridded states from time ``t0`` by ``duration`` (a multiple of :attr:`dt`).

        This is the forecast model of the ensemble filters.

        Parameters
        ----------
        state
            ``(batch, n_variables, *grid_shape)``.
        parameters
            ``(batch, n_parameters)``.
        t0, duration
            Start time and length of the interval, in :attr:`time_units`.
        """
        self.check_state(state)
        parameters = self.check_parameters(parameters)
        internal = self.from_fields(state)
        for i in range(self.steps_for(duration)):
            internal = self.step(internal, parameters, t0 + i * self.dt)
        return self.to_fields(internal)

    @torch.no_grad()
    def trajectory(
        self,
        parameters: torch.Tensor,
        generator: torch.Generator | None = None,
        initial_state: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run from the initial state and return the stored frames.

        Returns
        -------
        torch.Tensor
            ``(batch, n_outputs, n_variables, *grid_shape)``.
        """
        parameters = self.check_parameters(parameters)
        if initial_state is None:
            internal = self.initial_internal(parameters, generator)
        else:
            self.check_state(initial_state)
            internal = self.from_fields(initial_state)
        frames = [self.to_fields(internal)]
        total = (self.n_outputs - 1) * self.steps_per_output
        bar = tqdm(total=total, desc=f"{self.case}", disable=not progress_enabled(self.progress),
                   leave=False, unit="step")
        for step_index in range(total):
            internal = self.step(internal, parameters, step_index * self.dt)
            if (step_index + 1) % self.steps_per_output == 0:
                frames.append(self.to_fields(internal))
            bar.update()
        bar.close()
        return torch.stack(frames, dim=1)

    # ------------------------------------------------------------------ helpers
    def tensor(self, values: Sequence[float] | np.ndarray | float) -> torch.Tensor:
        """A tensor of ``values`` on this simulator's dtype and device."""
        return torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=self.dtype,
                               device=self.device)

    def config_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-serialisable dictionary."""
        return {
            key: (value.tolist() if isinstance(value, np.ndarray) else value)
            for key, value in dataclasses.asdict(self.config).items()
            if _json_scalar_or_list(value)
        }

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(grid={self.grid_shape}, dt={self.dt:g} {self.time_units}, "
                f"dtype={self.dtype}, device={self.device})")


def _json_scalar_or_list(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool, list, tuple, type(None)))
