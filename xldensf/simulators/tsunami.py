"""Planar shallow water with beta-plane Coriolis: the LD-EnSF "tsunami" benchmark.

Equations (linear momentum, nonlinear continuity; Xiao, Si & Chen 2025, arXiv 2411.19305)::

    du/dt   - f v = -g deta/dx
    dv/dt   + f u = -g deta/dy
    deta/dt + d[(eta + H) u]/dx + d[(eta + H) v]/dy = 0,      f = f0 + beta y

on a closed rectangular basin (u = 0 on the east/west walls, v = 0 on the north/south
walls). The initial state is a Gaussian bump of ``eta`` centred on the parameters
``(x0, y0)``, at rest.

Discretisation
--------------
* Arakawa C grid: ``eta`` and the depth ``H`` at cell centres, ``u`` on east/west faces,
  ``v`` on north/south faces. The wall faces are stored too, at zero, and never updated,
  so the wall conditions hold by construction; ``eta`` carries a one-cell halo of zeros
  that is only ever multiplied by those zero wall velocities. Every stencil is then a
  plain slice (no padding in the time step), which lets ``torch.compile`` fuse a step into
  a few vectorised loops.
* Flux-form continuity: the volume flux through each face is ``u (H + eta)`` with depth and
  elevation averaged from the two cells that share the face. Each flux leaves one cell and
  enters its neighbour, and no flux crosses a wall, so the total volume is conserved to
  rounding error.
* Coriolis on the C grid with the four-point average of the other velocity component.
* Time scheme: forward-backward (Mesinger 1977; Beckers & Deleersnijder 1993). ``eta`` is
  advanced with the old velocities, ``u`` with the new ``eta`` and the old ``v``, and ``v``
  with the new ``eta`` and the new ``u``. One tendency evaluation per step; neutral for
  gravity waves when ``c dt sqrt(1/dx^2 + 1/dy^2) <= 1`` with ``c = sqrt(g max H)`` and for
  inertial oscillations when ``f dt < 2``. The LD-EnSF step ``dt = 0.1 dx / c`` is far inside
  that limit.

Output fields ``u, v, eta`` are at cell centres (face velocities averaged, walls counting
zero), so all three share the coordinates ``x`` and ``y``.

Examples
--------
>>> import xldensf as xl
>>> ds = xl.simulate("tsunami", runs=2, seed=0, preset="small", n_outputs=3)
>>> ds["eta"].dims, ds.sizes["x"]
(('run', 'time', 'y', 'x'), 64)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..conventions import coordinate_attrs
from ..errors import ConfigurationError, DataError, expected_found, warn
from . import tsunami_kernel
from .base import CoordinateSpec, ParameterSpec, Simulator, cell_centres
from .registry import register
from .relief import depth_on_grid, is_labelled_array

__all__ = [
    "TsunamiConfig",
    "TsunamiSimulator",
    "cell_centres",
    "gaussian_bump",
    "forward_backward_step",
    "KERNELS",
]

#: Values of :attr:`TsunamiConfig.kernel`.
KERNELS = ("auto", "fused", "eager", "compiled")

#: (u faces (batch, ny, nx + 1), v faces (batch, ny + 1, nx), eta with halo (batch, ny + 2, nx + 2))
CGridState = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class TsunamiConfig:
    """Configuration of :class:`TsunamiSimulator` (SI units throughout).

    Parameters
    ----------
    nx, ny
        Number of cells along x and y.
    length_x, length_y
        Size of the basin [m]; it is centred on ``x = y = 0``.
    depth
        Still-water depth [m]: a number, or a DataArray on (or interpolated onto) the
        model's ``(y, x)`` grid, e.g. from :func:`xldensf.simulators.relief.regional_depth`
        (read by :func:`xldensf.simulators.relief.depth_on_grid`). Every
        value must be positive.
    gravity
        Gravitational acceleration g [m s-2].
    f0, beta
        Beta-plane Coriolis parameter ``f = f0 + beta y`` [s-1] and [m-1 s-1].
    cfl
        Time step as a fraction of ``dx / sqrt(g max H)`` (used when ``dt`` is ``None``).
    dt
        Explicit time step [s], overriding ``cfl``; it must satisfy the CFL limit.
    output_every
        Time steps between stored frames.
    n_outputs
        Stored frames, including the initial one.
    bump_amplitude, bump_sigma
        Height [m] and standard deviation [m] of the initial Gaussian bump.
    centre_prior
        Bounds [m] of the uniform prior of both ``x0`` and ``y0``.
    initial_perturbation
        Root-mean-square [m] of a random smooth ``eta`` perturbation added to the bump
        (0: deterministic, as in the paper). Drawn from the generator of the run.
    perturbation_length
        Length scale [m] of the perturbation's Gaussian spectrum of basin modes.
    kernel
        Implementation of the time step, all giving the same answer (see
        ``docs/simulators/tsunami.md``, "Speed"):

        * ``"auto"`` (default): the fused C++ step of
          :mod:`xldensf.simulators.tsunami_kernel` when its library is cached on disk (built
          once per machine by ``kernel="fused"`` or ``tsunami_kernel.build()``) and the
          step applies (CPU, no gradient); otherwise the torch kernel. Never compiles.
        * ``"fused"``: the fused C++ step, built now if it is not cached (blocking, about
          a minute once per machine); the torch kernel with a warning if it cannot be
          built (no C++ compiler or ``ninja``) or does not apply.
        * ``"eager"``: the torch kernel :func:`forward_backward_step` (any device,
          differentiable).
        * ``"compiled"``: that kernel under ``torch.compile`` (one-off 5-40 s per shape,
          dtype and thread count; needs a C++ compiler on CPU).
    compile_step
        ``True`` is the former spelling of ``kernel="compiled"`` (kept, it overrides
        ``kernel``).
    """

    nx: int = 150
    ny: int = 150
    length_x: float = 1.0e6
    length_y: float = 1.0e6
    depth: Any = 100.0
    gravity: float = 9.81
    f0: float = 1.0e-4
    beta: float = 2.0e-11
    cfl: float = 0.1
    dt: float | None = None
    output_every: int = 40
    n_outputs: int = 51
    bump_amplitude: float = 1.0
    bump_sigma: float = 5.0e4
    centre_prior: tuple[float, float] = (-5.0e5, 0.0)
    initial_perturbation: float = 0.0
    perturbation_length: float = 1.0e5
    kernel: str = "auto"
    compile_step: bool = False

    @classmethod
    def paper(cls) -> TsunamiConfig:
        """The LD-EnSF benchmark: 150 x 150 cells, dt = 0.1 dx / sqrt(gH) (about 21 s),
        2000 steps (about 11.8 h) stored every 40 steps (51 frames)."""
        return cls()

    @classmethod
    def small(cls) -> TsunamiConfig:
        """64 x 64 cells over the same basin and the same frame times as :meth:`paper`
        (8 steps of 106 s between frames, 51 frames); seconds on one CPU core."""
        steps_ratio = 40 / 8  # the paper's 40 steps per frame become 8
        return cls(nx=64, ny=64, cfl=0.1 * steps_ratio * 64 / 150, output_every=8)


def gaussian_bump(
    x: torch.Tensor, y: torch.Tensor, centres: torch.Tensor, amplitude: float, sigma: float
) -> torch.Tensor:
    """Gaussian bumps ``A exp(-((x - x0)^2 + (y - y0)^2) / (2 sigma^2))``.

    Parameters
    ----------
    x, y
        Cell-centre coordinates, shapes ``(nx,)`` and ``(ny,)`` [m].
    centres
        ``(batch, 2)``: ``x0, y0`` of each bump [m].

    Returns
    -------
    torch.Tensor
        ``(batch, ny, nx)``.

    Examples
    --------
    >>> grid = torch.tensor([-1.0, 0.0, 1.0])
    >>> float(gaussian_bump(grid, grid, torch.zeros(1, 2), 2.0, 1.0)[0, 1, 1])
    2.0
    """
    dx2 = (x[None, None, :] - centres[:, 0, None, None]) ** 2
    dy2 = (y[None, :, None] - centres[:, 1, None, None]) ** 2
    return amplitude * torch.exp(-(dx2 + dy2) / (2.0 * sigma**2))


def forward_backward_step(
    state: CGridState,
    *,
    dt: float,
    dx: float,
    dy: float,
    gravity: float,
    depth_u: torch.Tensor,
    depth_v: torch.Tensor,
    coriolis_u: torch.Tensor,
    coriolis_v: torch.Tensor,
) -> CGridState:
    """One forward-backward step of the C-grid shallow-water equations (tensor kernel).

    The input is not modified; new tensors are returned. Wall faces and the ``eta`` halo
    come out as zeros.

    Parameters
    ----------
    state
        ``(u, v, eta)`` with shapes ``(batch, ny, nx + 1)``, ``(batch, ny + 1, nx)`` and
        ``(batch, ny + 2, nx + 2)`` [m s-1, m s-1, m]: face velocities, wall faces included
        (zero), and cell elevations with a one-cell halo (zero).
    dt, dx, dy
        Time step [s] and cell sizes [m].
    gravity
        g [m s-2].
    depth_u, depth_v
        Still-water depth on the u and v faces [m], ``(ny, nx + 1)``, ``(ny + 1, nx)``
        (the values on wall faces are not used: they multiply zero velocities).
    coriolis_u, coriolis_v
        f on the u rows ``(ny, 1)`` and interior v rows ``(ny - 1, 1)`` [s-1].

    Returns
    -------
    tuple of torch.Tensor
        The new ``(u, v, eta)``, same shapes.

    Examples
    --------
    A state at rest stays at rest:

    >>> u, v, eta = torch.zeros(1, 3, 4), torch.zeros(1, 4, 3), torch.zeros(1, 5, 5)
    >>> new = forward_backward_step((u, v, eta), dt=1.0, dx=1.0, dy=1.0, gravity=9.81,
    ...     depth_u=torch.ones(3, 4), depth_v=torch.ones(4, 3),
    ...     coriolis_u=torch.zeros(3, 1), coriolis_v=torch.zeros(2, 1))
    >>> [float(field.abs().max()) for field in new]
    [0.0, 0.0, 0.0]
    """
    u, v, eta = state
    # continuity (flux form): eta^{n+1} = eta^n - dt div[(H + eta^n) u^n]; the wall fluxes
    # are zero because the wall velocities are (the halo value does not matter)
    flux_x = u * (depth_u + 0.5 * (eta[..., 1:-1, 1:] + eta[..., 1:-1, :-1]))
    flux_y = v * (depth_v + 0.5 * (eta[..., 1:, 1:-1] + eta[..., :-1, 1:-1]))
    divergence = flux_x.diff(dim=-1) / dx + flux_y.diff(dim=-2) / dy
    new_eta = torch.zeros_like(eta)
    new_eta[..., 1:-1, 1:-1] = eta[..., 1:-1, 1:-1] - dt * divergence
    eta_cells = new_eta[..., 1:-1, 1:-1]
    # momentum, with the new eta (backward) and Coriolis alternating u then v
    v_pairs = v[..., 1:, :] + v[..., :-1, :]
    v_at_u = 0.25 * (v_pairs[..., 1:] + v_pairs[..., :-1])
    new_u = torch.zeros_like(u)
    new_u[..., 1:-1] = u[..., 1:-1] + dt * (coriolis_u * v_at_u
                                            - gravity / dx * eta_cells.diff(dim=-1))
    u_pairs = new_u[..., 1:] + new_u[..., :-1]
    u_at_v = 0.25 * (u_pairs[..., 1:, :] + u_pairs[..., :-1, :])
    new_v = torch.zeros_like(v)
    new_v[..., 1:-1, :] = v[..., 1:-1, :] - dt * (coriolis_v * u_at_v
                                                  + gravity / dy * eta_cells.diff(dim=-2))
    return new_u, new_v, new_eta


@register
class TsunamiSimulator(Simulator):
    """Batched planar shallow water on an Arakawa C grid (the LD-EnSF tsunami case).

    State ``(batch, 3, ny, nx)`` with variables ``u, v, eta`` at cell centres; parameters
    ``x0, y0`` [m], the centre of the initial Gaussian bump. See the module docstring for
    the equations and the scheme.

    Examples
    --------
    >>> import torch, xldensf as xl
    >>> model = xl.simulator("tsunami", preset="small")
    >>> state = model.initial_state(torch.tensor([[-2.0e5, -1.0e5]]))
    >>> later = model.advance(state, torch.tensor([[-2.0e5, -1.0e5]]), 0.0, 10 * model.dt)
    >>> later.shape
    torch.Size([1, 3, 64, 64])
    """

    case = "tsunami"
    config_class = TsunamiConfig
    variables = ("u", "v", "eta")
    grid_dims = ("y", "x")
    periodic_dims = ()
    time_units = "s"

    def __init__(self, config: TsunamiConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        depth = self._depth_field()
        self._depth = depth
        self._dt = self._time_step(float(depth.max()))
        self._x = self.tensor(self._x_values)
        self._y = self.tensor(self._y_values)
        depth_t = self.tensor(depth)
        coriolis = self.config.f0 + self.config.beta * self._y
        # face depths: the mean of the two cells sharing the face (a wall face takes its
        # cell's depth; it is never used, the wall velocity being zero)
        depth_x = torch.cat((depth_t[:, :1], depth_t, depth_t[:, -1:]), dim=1)
        depth_y = torch.cat((depth_t[:1], depth_t, depth_t[-1:]), dim=0)
        self._kernel_constants = {
            "dt": self._dt,
            "dx": self.config.length_x / self.config.nx,
            "dy": self.config.length_y / self.config.ny,
            "gravity": self.config.gravity,
            "depth_u": 0.5 * (depth_x[:, 1:] + depth_x[:, :-1]),
            "depth_v": 0.5 * (depth_y[1:, :] + depth_y[:-1, :]),
            "coriolis_u": coriolis[:, None],
            "coriolis_v": (0.5 * (coriolis[1:] + coriolis[:-1]))[:, None],
        }
        constants = self._kernel_constants
        self._fused_constants = (
            *(constants[name].contiguous()
              for name in ("depth_u", "depth_v", "coriolis_u", "coriolis_v")),
            constants["dt"], constants["dx"], constants["dy"],
            constants["gravity"] / constants["dx"], constants["gravity"] / constants["dy"])
        self._fused: Any = None  # the fused step function, once available
        self._warned = False

    # ------------------------------------------------------------------ configuration
    def validate_config(self) -> None:
        config = self.config
        if config.nx < 2 or config.ny < 2:
            raise ConfigurationError(expected_found("nx, ny", ">= 2 cells each",
                                                    (config.nx, config.ny)))
        if config.length_x <= 0 or config.length_y <= 0:
            raise ConfigurationError(expected_found("length_x, length_y", "> 0 m",
                                                    (config.length_x, config.length_y)))
        if config.kernel not in KERNELS:
            raise ConfigurationError(expected_found("kernel", " or ".join(map(repr, KERNELS)),
                                                    repr(config.kernel)))
        if config.output_every < 1 or config.n_outputs < 1:
            raise ConfigurationError(expected_found("output_every, n_outputs", ">= 1 each",
                                                    (config.output_every, config.n_outputs)))
        if config.bump_sigma <= 0 or config.gravity <= 0:
            raise ConfigurationError(expected_found("bump_sigma, gravity", "> 0",
                                                    (config.bump_sigma, config.gravity)))
        if config.initial_perturbation < 0 or config.perturbation_length <= 0:
            raise ConfigurationError(
                expected_found("initial_perturbation, perturbation_length", ">= 0, > 0",
                               (config.initial_perturbation, config.perturbation_length)))
        low, high = config.centre_prior
        if not -0.5 * min(config.length_x, config.length_y) <= low < high <= 0.5 * min(
            config.length_x, config.length_y
        ):
            raise ConfigurationError(expected_found("centre_prior", "low < high inside the basin",
                                                    config.centre_prior))

    @property
    def _x_values(self) -> np.ndarray:
        return cell_centres(self.config.nx, self.config.length_x)

    @property
    def _y_values(self) -> np.ndarray:
        return cell_centres(self.config.ny, self.config.length_y)

    def _depth_field(self) -> np.ndarray:
        """The still-water depth on the model grid ``(ny, nx)`` [m], checked positive."""
        depth = self.config.depth
        shape = (self.config.ny, self.config.nx)
        if is_labelled_array(depth):
            values = depth_on_grid(depth, self._x_values, self._y_values)
        elif isinstance(depth, (int, float, np.floating, np.integer)) and not isinstance(
            depth, bool
        ):
            if not depth > 0:
                raise ConfigurationError(expected_found("depth", "> 0 m", depth))
            return np.full(shape, float(depth))
        else:
            raise ConfigurationError(
                expected_found("depth", "a number or an xarray.DataArray on (y, x)",
                               type(depth).__name__))
        dry = ~(values > 0)
        if dry.any():
            j, i = np.argwhere(dry)[0]
            raise DataError(
                expected_found(
                    "depth", "> 0 m in every cell (clip land with regional_depth(min_depth=...))",
                    f"{int(dry.sum())} cells <= 0 or NaN, first {values[j, i]:g} m at "
                    f"x = {self._x_values[i]:g} m, y = {self._y_values[j]:g} m"))
        return values

    def _time_step(self, max_depth: float) -> float:
        """The configured time step, checked against the forward-backward CFL limit."""
        config = self.config
        dx, dy = config.length_x / config.nx, config.length_y / config.ny
        wave_speed = math.sqrt(config.gravity * max_depth)
        limit = 1.0 / (wave_speed * math.sqrt(dx**-2 + dy**-2))
        dt = config.cfl * min(dx, dy) / wave_speed if config.dt is None else float(config.dt)
        if not 0 < dt <= limit:
            raise ConfigurationError(
                expected_found(
                    "time step dt [s]",
                    f"0 < dt <= {limit:.6g} (CFL: sqrt(g max H) dt sqrt(1/dx^2 + 1/dy^2) <= 1, "
                    f"max H = {max_depth:g} m)",
                    dt))
        return dt

    @property
    def parameter_specs(self) -> tuple[ParameterSpec, ...]:
        low, high = self.config.centre_prior
        half_x, half_y = 0.5 * self.config.length_x, 0.5 * self.config.length_y
        return (
            ParameterSpec("x0", "m", "x of the initial bump centre", low, high,
                          valid_low=-half_x, valid_high=half_x),
            ParameterSpec("y0", "m", "y of the initial bump centre", low, high,
                          valid_low=-half_y, valid_high=half_y),
        )

    @property
    def grid_coordinates(self) -> tuple[CoordinateSpec, ...]:
        return (
            CoordinateSpec("y", self._y_values, coordinate_attrs("y")),
            CoordinateSpec("x", self._x_values, coordinate_attrs("x")),
        )

    @property
    def dt(self) -> float:
        return self._dt

    def static_fields(self) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
        return {"depth": (self.grid_dims, self._depth)}

    def total_volume(self, fields: torch.Tensor) -> torch.Tensor:
        """Total water volume ``sum (H + eta) dx dy`` [m3] of gridded states.

        Parameters
        ----------
        fields
            ``(..., 3, ny, nx)``: states or trajectories.

        Returns
        -------
        torch.Tensor
            ``fields.shape[:-3]``; constant in time up to rounding error.
        """
        cell_area = self.config.length_x * self.config.length_y / (self.config.nx * self.config.ny)
        depth = self.tensor(self._depth)
        return (fields[..., 2, :, :] + depth).sum(dim=(-2, -1)) * cell_area

    # ------------------------------------------------------------------ equations
    def initial_internal(
        self, parameters: torch.Tensor, generator: torch.Generator | None = None
    ) -> CGridState:
        config = self.config
        eta = gaussian_bump(self._x, self._y, parameters, config.bump_amplitude,
                            config.bump_sigma)
        if config.initial_perturbation > 0:
            eta = eta + self._random_perturbation(len(parameters), generator)
        batch = len(parameters)
        u = eta.new_zeros(batch, config.ny, config.nx + 1)
        v = eta.new_zeros(batch, config.ny + 1, config.nx)
        return u, v, F.pad(eta, (1, 1, 1, 1))

    def _random_perturbation(self, batch: int, generator: torch.Generator | None) -> torch.Tensor:
        """Random smooth ``eta`` perturbations ``(batch, ny, nx)`` with zero mean (volume
        unchanged): closed-basin modes ``cos(k pi (x + Lx/2) / Lx) cos(l pi (y + Ly/2) / Ly)``
        with Gaussian random amplitudes of variance ``exp(-(kx^2 + ky^2) ell^2 / 2)``, scaled
        to the configured RMS."""
        config = self.config
        modes_x = min(config.nx, 32)
        modes_y = min(config.ny, 32)
        kx = np.arange(modes_x) * np.pi / config.length_x
        ky = np.arange(modes_y) * np.pi / config.length_y
        spectrum = np.exp(-0.25 * (kx[None, :] ** 2 + ky[:, None] ** 2)
                          * config.perturbation_length**2)
        spectrum[0, 0] = 0.0  # no mean: the volume stays that of the bump
        amplitudes = torch.randn(batch, modes_y, modes_x, generator=generator,
                                 dtype=torch.float64) * torch.from_numpy(spectrum)
        basis_x = torch.from_numpy(np.cos(kx[:, None] * (self._x_values + 0.5 * config.length_x)))
        basis_y = torch.from_numpy(np.cos(ky[:, None] * (self._y_values + 0.5 * config.length_y)))
        field = torch.einsum("bkl,kj,li->bji", amplitudes, basis_y, basis_x)
        rms = field.square().mean(dim=(-2, -1), keepdim=True).sqrt()
        field = config.initial_perturbation * field / rms
        return field.to(dtype=self.dtype, device=self.device)

    @property
    def kernel(self) -> str:
        """The configured time-step implementation (``compile_step=True`` -> ``"compiled"``)."""
        return "compiled" if self.config.compile_step else self.config.kernel

    def step(self, internal: CGridState, parameters: torch.Tensor, time: float) -> CGridState:
        fused = self._fused_step(internal)
        if fused is not None:
            u, v, eta = fused(*internal, *self._fused_constants)
            return u, v, eta
        kernel = _compiled_step() if self.kernel == "compiled" else forward_backward_step
        return kernel(internal, **self._kernel_constants)

    def _fused_step(self, internal: CGridState) -> Any:
        """The fused C++ step if it is configured, available and applies to ``internal``
        (CPU, contiguous, this model's dtype, no gradient), else ``None``."""
        if self.kernel not in ("auto", "fused"):
            return None
        applies = self.device.type == "cpu" and all(
            field.dtype == self.dtype and field.is_contiguous()
            and not (field.requires_grad and torch.is_grad_enabled()) for field in internal)
        if self._fused is None and applies:
            self._fused = tsunami_kernel.fused_step(wait=self.kernel == "fused")
        if self.kernel == "fused" and not (applies and self._fused is not None):
            if not self._warned:
                self._warned = True
                reason = ("could not be built: " + str(tsunami_kernel.build_error())
                          if applies else "does not apply (device, dtype, layout or gradient)")
                warn(f"tsunami kernel='fused' {reason}; using the torch kernel")
            return None
        return self._fused if applies else None

    def to_fields(self, internal: CGridState) -> torch.Tensor:
        """C-grid state -> ``(batch, 3, ny, nx)`` with face velocities averaged to centres."""
        u, v, eta = internal
        u_centre = 0.5 * (u[..., 1:] + u[..., :-1])
        v_centre = 0.5 * (v[..., 1:, :] + v[..., :-1, :])
        return torch.stack((u_centre, v_centre, eta[..., 1:-1, 1:-1]), dim=1)

    def from_fields(self, fields: torch.Tensor) -> CGridState:
        """``(batch, 3, ny, nx)`` -> C-grid state, velocities averaged to interior faces.

        This inverts :meth:`to_fields` up to ``O(dx^2)`` on smooth fields (averaging to
        centres and back smooths at the grid scale); ``eta`` is exact.
        """
        u_centre, v_centre, eta = fields[:, 0], fields[:, 1], fields[:, 2]
        u = F.pad(0.5 * (u_centre[..., 1:] + u_centre[..., :-1]), (1, 1))
        v = F.pad(0.5 * (v_centre[..., 1:, :] + v_centre[..., :-1, :]), (0, 0, 1, 1))
        return u, v, F.pad(eta, (1, 1, 1, 1))


@functools.cache
def _compiled_step():
    """``forward_backward_step`` compiled once per process (shapes and dtypes specialise)."""
    return torch.compile(forward_backward_step, dynamic=False)
