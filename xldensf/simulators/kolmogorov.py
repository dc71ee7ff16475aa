"""Two-dimensional Kolmogorov flow: forced incompressible Navier-Stokes on a periodic square.

The vorticity equation on ``[0, 2 pi)^2`` (nondimensional),

    d(omega)/dt + u . grad(omega) = nu lap(omega) - drag omega - n A cos(n y),

is the curl of the momentum equation with the body force ``f = (A sin(n y), 0)``
(``A = 1``, ``n = 4``), linear drag ``drag = 0.1`` and viscosity ``nu = 1 / Re``; ``Re`` is
the parameter (LD-EnSF: ``Re ~ U(500, 1500)``). The velocity follows from the stream
function, ``u = d(psi)/dy``, ``v = -d(psi)/dx``, ``lap(psi) = -omega``, so it is
divergence-free by construction; the mean velocity is zero (the drag removes any mean flow).

Discretisation
--------------
Pseudo-spectral (``torch.fft.rfft2``) on an ``N x N`` grid; the internal state is the
spectral vorticity ``(batch, N, N // 2 + 1)`` (complex). The advection term is formed on
the grid in flux form ``div(u omega)`` and truncated with the 2/3 rule (wavenumbers with
``|k_x|`` or ``|k_y| >= N / 3`` are zero), which makes the truncated system an exact
Galerkin system: advection then conserves energy and enstrophy exactly, so
``dE/dt = <u . f> - nu <omega^2> - drag <|u|^2>`` holds to rounding at every instant.

Time stepping is the three-stage low-storage IMEX scheme of Spalart, Moser & Rogers
(1991, J. Comput. Phys. 96): Runge-Kutta (third order) for advection and forcing,
Crank-Nicolson for viscosity and drag (second order overall). The implicit part removes the
viscous step limit; steady states of the equations are steady states of the scheme exactly
(the laminar flow below is kept to rounding). The explicit part needs the advective CFL
condition ``dt * U * (1/dx + 1/dy) <= cfl_max`` with the velocity bound ``U``
(:attr:`KolmogorovConfig.velocity_bound`); the time step is chosen from it, and a
``dt`` override that breaks it raises :class:`~xldensf.errors.ConfigurationError`.

Initial condition: a random large-scale vorticity field, by default one field shared by
every run (``initial_field="shared"``, drawn from ``initial_seed``) so that runs differ
only through ``Re``, or one field per run from the run's seed (``"per_run"``); then a
spin-up at each run's ``Re`` or at ``spinup_reynolds`` (:class:`KolmogorovConfig`).

The laminar Kolmogorov flow ``u = A sin(n y) / (nu n^2 + drag)``, ``v = 0`` is an exact
steady solution (stable at low ``Re``; :meth:`KolmogorovSimulator.laminar_state`).

Examples
--------
>>> import xldensf as xl
>>> ds = xl.simulate("kolmogorov", runs=1, seed=0, preset="small", n_outputs=2,
...                  spinup_time=0.0, progress=False)
>>> ds["vorticity"].dims, ds["u"].shape
(('run', 'time', 'y', 'x'), (1, 2, 32, 32))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..conventions import coordinate_attrs
from ..errors import ConfigurationError, expected_found
from .base import CoordinateSpec, ParameterSpec, Simulator
from .registry import register

__all__ = ["INITIAL_FIELDS", "KolmogorovConfig", "KolmogorovSimulator"]

#: Values of :attr:`KolmogorovConfig.initial_field`.
INITIAL_FIELDS = ("shared", "per_run")

# Spalart, Moser & Rogers (1991) low-storage IMEX RK3/CN: explicit weights of the current
# (gamma) and previous (zeta) stage tendencies; the implicit weights are (gamma + zeta) / 2.
_GAMMA = (8.0 / 15.0, 5.0 / 12.0, 3.0 / 4.0)
_ZETA = (0.0, -17.0 / 60.0, -5.0 / 12.0)


@dataclass(frozen=True)
class KolmogorovConfig:
    """Configuration of :class:`KolmogorovSimulator` (all quantities nondimensional).

    Parameters
    ----------
    n_grid
        Grid points per side ``N`` (the grid is ``N x N`` on ``[0, 2 pi)^2``).
    dt_out
        Time between stored frames.
    n_outputs
        Stored frames, including the initial one (at the end of the spin-up).
    spinup_time
        Time integrated from the random initial vorticity before the first stored frame
        (LD-EnSF: 4). From the default initial field the domain energy reaches its
        statistically steady range (about 0.8-1.4) within ~5 time units and an initial
        overshoot has decayed by ~15 (measured at 64 x 64 and 150 x 150).
    initial_perturbation
        Root-mean-square of the random initial vorticity (``0`` starts from rest).
    initial_wavenumber
        Wavenumber ``k0`` of the initial random field, whose energy spectrum is
        proportional to ``k^4 exp(-(k / k0)^2)`` (smooth, large scales).
    initial_field
        ``"shared"`` (LD-EnSF): every run starts from the same random vorticity, drawn from
        ``initial_seed``, so that runs differ only through ``Re`` (the seed of
        :func:`xldensf.simulate` then draws only the parameters). ``"per_run"``: each run
        draws its own field from the generator passed to
        :meth:`KolmogorovSimulator.initial_internal` (genuine initial-state uncertainty;
        the state is then not a function of ``Re``).
    initial_seed
        Seed of the shared initial field.
    spinup_reynolds
        ``Re`` of the spin-up; ``None`` (LD-EnSF) spins each run up at its own ``Re``. A
        value makes the first frame of a shared-field configuration the same for every run,
        so that the runs differ only by what ``Re`` does after it: the trajectory is then a
        much smoother function of ``Re`` (``docs/simulators/kolmogorov.md``).
    dt
        Time step; ``None`` chooses the largest step that divides ``dt_out`` and satisfies
        the CFL condition.
    cfl_max
        Largest allowed ``dt * U * (1/dx + 1/dy)``.
    velocity_bound
        Velocity bound ``U`` of the CFL condition. The default 7 exceeds the largest
        speeds measured in turbulent runs (4.3 at ``Re = 1500`` on 150 x 150, 4.6 on
        32 x 32); the laminar amplitude ``A / (nu n^2 + drag)`` (up to 9.0 at
        ``Re = 1500``) is unstable and not approached by the turbulent flow. With the
        spectral wavenumbers ``|k| < N / 3`` the RK3 stability limit ``sqrt(3)``
        corresponds to ``dt * |u| * (1/dx + 1/dy) < 0.83``.
    forcing_amplitude, forcing_wavenumber
        Body force ``f = (A sin(n y), 0)``.
    drag
        Linear (Rayleigh) drag coefficient.
    reynolds_prior
        Bounds of the uniform prior of ``Re``.
    reynolds_default
        Default ``Re``.
    """

    n_grid: int = 150
    dt_out: float = 0.2
    n_outputs: int = 40
    spinup_time: float = 4.0
    initial_perturbation: float = 5.0
    initial_wavenumber: float = 4.0
    initial_field: str = "shared"
    initial_seed: int = 0
    spinup_reynolds: float | None = None
    dt: float | None = None
    cfl_max: float = 0.5
    velocity_bound: float = 7.0
    forcing_amplitude: float = 1.0
    forcing_wavenumber: int = 4
    drag: float = 0.1
    reynolds_prior: tuple[float, float] = (500.0, 1500.0)
    reynolds_default: float = 1000.0

    @classmethod
    def paper(cls) -> KolmogorovConfig:
        """LD-EnSF: 150 x 150, one shared initial field spun up for 4 time units at each
        run's ``Re``, 40 frames every 0.2, ``Re ~ U(500, 1500)``."""
        return cls()

    @classmethod
    def small(cls) -> KolmogorovConfig:
        """32 x 32, 21 frames, one shared initial field spun up for 4 time units at
        ``Re = 1000`` (the same first frame for every run): seconds on one CPU core, and a
        trajectory smooth enough in ``Re`` for a small surrogate."""
        return cls(n_grid=32, n_outputs=21, spinup_reynolds=1000.0)


@register
class KolmogorovSimulator(Simulator):
    """Batched pseudo-spectral Kolmogorov flow; state ``(batch, 3, N, N)`` = (u, v, vorticity).

    The internal state is the spectral vorticity ``(batch, N, N // 2 + 1)``.
    :meth:`from_fields` rebuilds it from the vorticity channel alone (u and v are
    diagnosed from it), truncated with the 2/3 rule.

    Examples
    --------
    >>> import xldensf as xl
    >>> model = xl.simulator("kolmogorov", preset="small", spinup_time=0.0)
    >>> params = model.default_parameters(2)               # Re = 1000
    >>> state = model.laminar_state(params)                # (2, 3, 32, 32)
    >>> later = model.advance(state, params, t0=0.0, duration=4 * model.dt)
    >>> bool((later - state).abs().max() < 1e-12)          # the laminar flow is steady
    True
    """

    case = "kolmogorov"
    config_class = KolmogorovConfig
    variables = ("u", "v", "vorticity")
    grid_dims = ("y", "x")
    periodic_dims = ("x", "y")
    time_units = "1"

    def __init__(self, config: KolmogorovConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        n = config.n_grid
        integer_wavenumbers = torch.fft.fftfreq(n, 1.0 / n, dtype=torch.float64)
        self._ky = integer_wavenumbers[:, None].to(self.device, self.dtype)
        self._kx = torch.fft.rfftfreq(n, 1.0 / n, dtype=torch.float64)[None, :].to(
            self.device, self.dtype)
        self._k_squared = self._kx**2 + self._ky**2
        # 1 / |k|^2 with the mean mode mapped to 0 (the stream function has zero mean).
        self._inverse_k_squared = torch.where(
            self._k_squared > 0, 1.0 / self._k_squared.clamp(min=1.0), 0.0)
        self._dealias = ((self._kx.abs() < n / 3) & (self._ky.abs() < n / 3)).to(self.dtype)
        grid = self.tensor(self._axis())
        n_f, amplitude = config.forcing_wavenumber, config.forcing_amplitude
        forcing_vorticity = -n_f * amplitude * torch.cos(n_f * grid)[:, None].expand(n, n)
        self._forcing_hat = torch.fft.rfft2(forcing_vorticity) * self._dealias
        self._forcing_u = amplitude * torch.sin(n_f * grid)[:, None].expand(n, n)

    # ------------------------------------------------------------------ configuration
    def validate_config(self) -> None:
        config = self.config
        if config.n_grid < 3 * (config.forcing_wavenumber + 1):
            raise ConfigurationError(expected_found(
                "n_grid", f">= {3 * (config.forcing_wavenumber + 1)} (the forcing wavenumber "
                "must survive the 2/3-rule truncation)", config.n_grid))
        if config.n_outputs < 1 or config.dt_out <= 0 or config.spinup_time < 0:
            raise ConfigurationError(expected_found(
                "n_outputs/dt_out/spinup_time", ">= 1, > 0, >= 0",
                (config.n_outputs, config.dt_out, config.spinup_time)))
        if config.drag < 0 or config.velocity_bound <= 0 or config.cfl_max <= 0:
            raise ConfigurationError(expected_found(
                "drag/velocity_bound/cfl_max", ">= 0, > 0, > 0",
                (config.drag, config.velocity_bound, config.cfl_max)))
        if config.initial_perturbation < 0 or config.initial_wavenumber <= 0:
            raise ConfigurationError(expected_found(
                "initial_perturbation/initial_wavenumber", ">= 0, > 0",
                (config.initial_perturbation, config.initial_wavenumber)))
        if config.initial_field not in INITIAL_FIELDS:
            raise ConfigurationError(expected_found(
                "initial_field", " or ".join(map(repr, INITIAL_FIELDS)), config.initial_field))
        if not isinstance(config.initial_seed, int) or isinstance(config.initial_seed, bool):
            raise ConfigurationError(expected_found(
                "initial_seed", "an integer", config.initial_seed))
        if config.spinup_reynolds is not None and not 1.0 <= config.spinup_reynolds <= 1.0e5:
            raise ConfigurationError(expected_found(
                "spinup_reynolds", "None or a Reynolds number in [1, 1e5]",
                config.spinup_reynolds))
        largest = config.cfl_max / (config.velocity_bound * 2.0 / self.grid_spacing)
        if config.dt is not None:
            if not 0 < config.dt <= largest:
                raise ConfigurationError(expected_found(
                    "dt", f"0 < dt <= {largest:.4g} (CFL: dt * {config.velocity_bound:g} * "
                    f"(1/dx + 1/dy) <= {config.cfl_max:g})", config.dt))
            ratio = config.dt_out / config.dt
            if abs(ratio - round(ratio)) > 1e-9 * ratio:
                raise ConfigurationError(expected_found(
                    "dt", f"a divisor of dt_out = {config.dt_out:g}", config.dt))
        self._steps_per_output = (
            round(config.dt_out / config.dt) if config.dt is not None
            else math.ceil(config.dt_out / largest - 1e-9))

    @property
    def grid_spacing(self) -> float:
        """Grid spacing ``dx = dy = 2 pi / N``."""
        return 2.0 * math.pi / self.config.n_grid

    def _axis(self) -> np.ndarray:
        return np.arange(self.config.n_grid) * self.grid_spacing

    @property
    def parameter_specs(self) -> tuple[ParameterSpec, ...]:
        low, high = self.config.reynolds_prior
        return (ParameterSpec("Re", "1", "Reynolds number (1 / viscosity)", low, high,
                              valid_low=1.0, valid_high=1.0e5,
                              default=self.config.reynolds_default),)

    @property
    def grid_coordinates(self) -> tuple[CoordinateSpec, ...]:
        # Nondimensional, so no standard_name (projection_*_coordinate implies a length);
        # the axis attribute still identifies X and Y.
        coords = []
        for name in ("y", "x"):
            attrs = coordinate_attrs(name, units="1",
                                     long_name=f"{name} (nondimensional, periodic on [0, 2 pi))")
            attrs.pop("standard_name")
            coords.append(CoordinateSpec(name, self._axis(), attrs))
        return tuple(coords)

    @property
    def dt(self) -> float:
        return self.config.dt_out / self._steps_per_output

    @property
    def steps_per_output(self) -> int:
        return self._steps_per_output

    @property
    def cfl_number(self) -> float:
        """``dt * U * (1/dx + 1/dy)`` with the configured velocity bound ``U``."""
        return self.dt * self.config.velocity_bound * 2.0 / self.grid_spacing

    # ------------------------------------------------------------------ equations
    def viscosity(self, parameters: torch.Tensor) -> torch.Tensor:
        """``nu = 1 / Re``, shaped ``(batch, 1, 1)`` to broadcast over spectral fields."""
        return (1.0 / parameters[:, 0])[:, None, None]

    def initial_internal(self, parameters, generator=None):
        config = self.config
        batch = parameters.shape[0]
        if config.initial_field == "shared" and (
                config.spinup_reynolds is not None or config.spinup_time == 0):
            # Every run starts from the same spun-up state: integrate it once and copy it,
            # so that the runs are identical at the first frame (bit for bit).
            one = self._random_vorticity(1, None)
            one = self._spin_up(one, parameters[:1])
            return one.expand(batch, *one.shape[1:]).clone()
        return self._spin_up(self._random_vorticity(batch, generator), parameters)

    def _random_vorticity(self, batch: int, generator: torch.Generator | None) -> torch.Tensor:
        """Spectral initial vorticity ``(batch, N, N // 2 + 1)``: the shared field (from
        ``initial_seed``) or one draw per run from ``generator``, per ``initial_field``."""
        n = self.config.n_grid
        if self.config.initial_perturbation == 0:
            return torch.zeros((batch, n, n // 2 + 1), dtype=self._forcing_hat.dtype,
                               device=self.device)
        if self.config.initial_field == "shared":
            # One field for every run, from initial_seed (the run's generator is unused).
            shared = torch.Generator().manual_seed(self.config.initial_seed)
            noise = torch.randn((n, n), generator=shared, dtype=torch.float64)
            noise = noise.expand(batch, n, n)
        else:
            # One draw per run (float64, CPU), so that a run does not depend on its batch.
            noise = torch.stack([torch.randn((n, n), generator=generator, dtype=torch.float64)
                                 for _ in range(batch)])
        noise_hat = torch.fft.rfft2(noise.to(self.device)).to(self._forcing_hat.dtype)
        k = self._k_squared.sqrt()
        k0 = self.config.initial_wavenumber
        # vorticity spectrum k^2 E(k) with E ~ k^4 exp(-(k/k0)^2); amplitude ~ sqrt(E / k)
        shape = k**2.5 * torch.exp(-0.5 * (k / k0) ** 2) * self._dealias
        vorticity_hat = noise_hat * shape
        rms = torch.fft.irfft2(vorticity_hat, s=(n, n)).square().mean((-2, -1)).sqrt()
        return vorticity_hat * (self.config.initial_perturbation / rms)[:, None, None]

    def _spin_up(self, vorticity_hat: torch.Tensor, parameters: torch.Tensor) -> torch.Tensor:
        """Integrate ``spinup_time`` at each run's ``Re``, or at ``spinup_reynolds``."""
        if self.config.spinup_reynolds is not None:
            parameters = torch.full_like(parameters, self.config.spinup_reynolds)
        for _ in range(round(self.config.spinup_time / self.dt)):
            vorticity_hat = self.step(vorticity_hat, parameters, 0.0)
        return vorticity_hat

    def _explicit_tendency(self, vorticity_hat: torch.Tensor) -> torch.Tensor:
        """Advection ``-div(u omega)`` (2/3-rule truncated) plus the vorticity forcing."""
        n = self.config.n_grid
        u, v = self._velocity(vorticity_hat)
        vorticity = torch.fft.irfft2(vorticity_hat, s=(n, n))
        flux_x = torch.fft.rfft2(u * vorticity)
        flux_y = torch.fft.rfft2(v * vorticity)
        advection = 1j * (self._kx * flux_x + self._ky * flux_y)
        return (self._forcing_hat - advection) * self._dealias

    def _velocity(self, vorticity_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.config.n_grid
        stream_hat = vorticity_hat * self._inverse_k_squared
        u = torch.fft.irfft2(1j * self._ky * stream_hat, s=(n, n))
        v = torch.fft.irfft2(-1j * self._kx * stream_hat, s=(n, n))
        return u, v

    def step(self, internal, parameters, time):
        dt = self.dt
        linear = -self.viscosity(parameters) * self._k_squared - self.config.drag
        vorticity_hat = internal
        previous = torch.zeros_like(internal)
        for gamma, zeta in zip(_GAMMA, _ZETA):
            tendency = self._explicit_tendency(vorticity_hat)
            implicit = 0.5 * (gamma + zeta) * dt * linear
            vorticity_hat = (vorticity_hat * (1.0 + implicit) + dt * (gamma * tendency
                             + zeta * previous)) / (1.0 - implicit)
            previous = tendency
        return vorticity_hat

    def to_fields(self, internal):
        n = self.config.n_grid
        u, v = self._velocity(internal)
        return torch.stack([u, v, torch.fft.irfft2(internal, s=(n, n))], dim=1)

    def from_fields(self, fields):
        return torch.fft.rfft2(fields[:, 2]) * self._dealias

    # ------------------------------------------------------------------ diagnostics
    def laminar_state(self, parameters: torch.Tensor) -> torch.Tensor:
        """The exact steady laminar flow ``u = A sin(n y) / (nu n^2 + drag)``, ``v = 0``.

        Returns
        -------
        torch.Tensor
            ``(batch, 3, N, N)`` gridded (u, v, vorticity).
        """
        parameters = self.check_parameters(parameters)
        n_f = self.config.forcing_wavenumber
        amplitude = self.config.forcing_amplitude / (
            self.viscosity(parameters) * n_f**2 + self.config.drag)
        u = amplitude * self._forcing_u / self.config.forcing_amplitude
        y = self.tensor(self._axis())[:, None]
        vorticity = -n_f * amplitude * torch.cos(n_f * y).expand_as(self._forcing_u)
        return torch.stack([u, torch.zeros_like(u), vorticity], dim=1)

    def energy_budget(self, state: torch.Tensor, parameters: torch.Tensor) -> dict:
        """Domain-averaged kinetic-energy budget of gridded states.

        ``dE/dt = input - viscous_dissipation - drag_dissipation`` with
        ``E = <|u|^2> / 2``, ``input = <u . f>``, ``viscous_dissipation = nu <omega^2>``
        (``= nu <|grad u|^2>`` on the periodic domain) and
        ``drag_dissipation = drag <|u|^2>``. Grid means equal the spectral (Parseval) values
        exactly for 2/3-rule truncated fields.

        Parameters
        ----------
        state
            ``(..., 3, N, N)`` gridded (u, v, vorticity); leading axes are kept.
        parameters
            ``(batch, 1)`` Reynolds numbers, broadcast against the leading axis of ``state``
            (a time axis after it is allowed: ``state`` of shape ``(batch, time, 3, N, N)``).

        Returns
        -------
        dict of torch.Tensor
            ``energy``, ``input``, ``viscous_dissipation``, ``drag_dissipation``, each of the
            leading shape of ``state``.
        """
        parameters = self.check_parameters(parameters)
        u, v, vorticity = state[..., 0, :, :], state[..., 1, :, :], state[..., 2, :, :]
        nu = (1.0 / parameters[:, 0]).reshape((-1,) + (1,) * (u.ndim - 3))
        speed_squared = (u.square() + v.square()).mean((-2, -1))
        return {
            "energy": 0.5 * speed_squared,
            "input": (u * self._forcing_u).mean((-2, -1)),
            "viscous_dissipation": nu * vorticity.square().mean((-2, -1)),
            "drag_dissipation": self.config.drag * speed_squared,
        }
