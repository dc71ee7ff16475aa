"""The Lorenz-96 model (Lorenz 1996), batched RK4.

dx_k/dt = (x_{k+1} - x_{k-2}) x_{k-1} - x_k + F, k periodic, with the forcing ``F`` as
the parameter. The ``paper`` preset is the Sakov & Oke (2008) setting used by DAPPER
(N = 40, dt = 0.05); ``small`` is a short run of the same system.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..conventions import coordinate_attrs
from ..errors import ConfigurationError, expected_found
from .base import CoordinateSpec, ParameterSpec, Simulator
from .registry import register

__all__ = ["Lorenz96Config", "Lorenz96Simulator", "lorenz96_tendency"]


@dataclass(frozen=True)
class Lorenz96Config:
    """Configuration of :class:`Lorenz96Simulator`.

    Parameters
    ----------
    n_sites
        Number of variables N (periodic).
    dt
        RK4 time step (model time units).
    n_outputs
        Stored frames including the initial one.
    output_every
        Time steps between stored frames.
    spinup_steps
        Steps run before the first stored frame, so that it lies on the attractor.
    initial_perturbation
        Standard deviation of the random perturbation added to x = F before spin-up.
    forcing_prior
        Bounds of the uniform prior of F.
    forcing_default
        Default F.
    """

    n_sites: int = 40
    dt: float = 0.05
    n_outputs: int = 1001
    output_every: int = 1
    spinup_steps: int = 1000
    initial_perturbation: float = 1.0
    forcing_prior: tuple[float, float] = (6.0, 10.0)
    forcing_default: float = 8.0

    @classmethod
    def paper(cls) -> Lorenz96Config:
        """Sakov & Oke (2008): N = 40, F = 8, dt = 0.05, 1000 stored steps."""
        return cls()

    @classmethod
    def small(cls) -> Lorenz96Config:
        """A short run (200 steps after 200 spin-up steps)."""
        return cls(n_outputs=201, spinup_steps=200)


def lorenz96_tendency(x: torch.Tensor, forcing: torch.Tensor) -> torch.Tensor:
    """Lorenz-96 tendency of ``x`` (..., N) with forcing broadcast over the last axis.

    Examples
    --------
    >>> x = torch.full((1, 40), 8.0)
    >>> float(lorenz96_tendency(x, torch.tensor([[8.0]])).abs().max())  # x = F is steady
    0.0
    """
    return (torch.roll(x, -1, -1) - torch.roll(x, 2, -1)) * torch.roll(x, 1, -1) - x + forcing


@register
class Lorenz96Simulator(Simulator):
    """Batched Lorenz-96 with RK4; state ``(batch, 1, N)``, parameter ``F``."""

    case = "lorenz96"
    config_class = Lorenz96Config
    variables = ("x",)
    grid_dims = ("k",)
    periodic_dims = ("k",)
    time_units = "1"

    def validate_config(self) -> None:
        config = self.config
        if config.n_sites < 4:
            raise ConfigurationError(expected_found("n_sites", ">= 4", config.n_sites))
        # RK4 on L96 is stable for dt up to about 0.1 at F = 8; larger steps blow up.
        if not 0 < config.dt <= 0.1:
            raise ConfigurationError(expected_found("dt", "0 < dt <= 0.1 (RK4 stability)",
                                                    config.dt))
        if config.n_outputs < 1 or config.output_every < 1 or config.spinup_steps < 0:
            raise ConfigurationError(
                expected_found("n_outputs/output_every/spinup_steps", ">= 1, >= 1, >= 0",
                               (config.n_outputs, config.output_every, config.spinup_steps))
            )

    @property
    def parameter_specs(self) -> tuple[ParameterSpec, ...]:
        low, high = self.config.forcing_prior
        return (ParameterSpec("F", "1", "Lorenz-96 forcing", low, high, valid_low=-50.0,
                              valid_high=50.0, default=self.config.forcing_default),)

    @property
    def grid_coordinates(self) -> tuple[CoordinateSpec, ...]:
        return (CoordinateSpec("k", np.arange(self.config.n_sites), coordinate_attrs("k")),)

    def initial_internal(self, parameters, generator=None):
        forcing = parameters[:, :1]
        x = forcing.expand(-1, self.config.n_sites).clone()
        x[:, 0] += 0.01  # Lorenz's classical kick, so that F alone still leaves equilibrium
        if self.config.initial_perturbation > 0:
            noise = torch.randn(x.shape, generator=generator, dtype=torch.float64)
            x = x + self.config.initial_perturbation * noise.to(x)
        state = x[:, None, :]
        for _ in range(self.config.spinup_steps):
            state = self.step(state, parameters, 0.0)
        return state

    def step(self, internal, parameters, time):
        forcing = parameters[:, :1, None]
        dt = self.config.dt
        k1 = lorenz96_tendency(internal, forcing)
        k2 = lorenz96_tendency(internal + 0.5 * dt * k1, forcing)
        k3 = lorenz96_tendency(internal + 0.5 * dt * k2, forcing)
        k4 = lorenz96_tendency(internal + dt * k3, forcing)
        return internal + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
