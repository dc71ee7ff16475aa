"""Forced rotating shallow water on the sphere (the LD-EnSF ``"atmosphere"`` case).

The model is the global shallow-water system in vorticity-divergence form, solved with the
spectral transform method on a Legendre-Gauss grid (spherical harmonic transforms from
torch-harmonics) and classical fourth-order Runge-Kutta time stepping::

    d zeta/dt = -div((zeta + f) V)
    d delta/dt = curl((zeta + f) V) - lap(g (h + h_s) + |V|^2 / 2)
    d h/dt     = -div(h V) + h_f(t) / tau_f + (h_eq - h) / tau_r   (global mean removed)

with relative vorticity ``zeta``, divergence ``delta``, fluid layer thickness ``h``,
orography ``h_s``, Coriolis parameter ``f = 2 Omega sin(phi)`` and wind ``V = (u, v)``.
Each step ends with a fourth-order hyperdiffusion (``del^4``) on all three fields, applied
exactly in spectral space as the factor ``exp(-dt / tau_d * (l (l + 1) / (N (N + 1)))^2)``
(``N`` the truncation degree, ``tau_d`` the e-folding time there); degree 0 is left alone,
so the global mean of ``h`` (the mass) is conserved to rounding.

The forcing is the moving height source of the LD-EnSF paper,
``h_f = hf0 cos(lambda - lambda_c(t)) exp(-(phi - phi_c(t))^2 / sigma^2)`` with a diurnal
``lambda_c(t) = -2 pi t / day`` (westward, like the sun) and a seasonal
``phi_c(t) = 0.4 sin(2 pi t / year)`` (radians). It enters the continuity equation as the
source ``h_f / tau_f``; with the default ``tau_f = day / (2 pi)`` the height response to the
diurnally moving source has an amplitude of about ``hf0``. A Newtonian relaxation towards the
balanced base state ``h_eq`` with time scale ``tau_r`` (5 days) keeps the forced flow
bounded. The global mean of both terms is removed, so the forcing redistributes mass without
creating any.

Grid: ``nlat`` Gauss latitudes ordered from north to south (descending, as in
torch-harmonics) and ``nlon`` equally spaced longitudes from 0 degrees east. Time in
seconds. Earth constants follow Williamson et al. (1992, JCP 102).

Examples
--------
>>> import xldensf as xl
>>> model = xl.simulator("atmosphere", preset="small", n_outputs=2, output_every=1,
...                      spinup_time=0.0)
>>> frames = model.trajectory(model.default_parameters(1))   # one 20-minute step
>>> tuple(frames.shape)            # (batch, time, (h, u, v), lat, lon)
(1, 2, 3, 32, 64)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch_harmonics as th
from torch_harmonics.quadrature import legendre_gauss_weights

from ..conventions import coordinate_attrs
from ..errors import ConfigurationError, expected_found
from .base import CoordinateSpec, ParameterSpec, Simulator
from .registry import register

__all__ = [
    "EARTH_RADIUS",
    "EARTH_ROTATION",
    "GRAVITY",
    "DAY",
    "WEAK_FORCING_SMALL",
    "AtmosphereConfig",
    "AtmosphereSimulator",
    "williamson2_state",
    "rossby_haurwitz_state",
    "galewsky_state",
]

#: Earth radius a [m] (Williamson et al. 1992).
EARTH_RADIUS = 6.37122e6
#: Earth rotation rate Omega [s-1] (Williamson et al. 1992).
EARTH_ROTATION = 7.292e-5
#: Gravitational acceleration g [m s-2] (Williamson et al. 1992).
GRAVITY = 9.80616
#: One day [s].
DAY = 86400.0
#: Keyword arguments turning the ``small`` preset into the former weak-forcing small setting
#: (``tau_f = day / (2 pi)``, 7 frames over 2 days after a 12-h spin-up at each run's own
#: parameters): its runs differ little (free-run relative error of the ``h`` anomaly 0.0066
#: at the final frame, mean over the 5 quick truths, ``benchmarks/atmosphere_free_run.py``).
#: ``xl.simulator("atmosphere", preset="small", **WEAK_FORCING_SMALL)``.
WEAK_FORCING_SMALL: dict[str, object] = {
    "forcing_time": DAY / (2 * math.pi), "n_outputs": 7, "spinup_time": 0.5 * DAY,
    "spinup_parameters": None}
#: RK4 is stable for oscillations with |omega dt| <= 2 sqrt(2); the CFL check keeps a margin.
_RK4_OSCILLATION_LIMIT = 2.0


@dataclass(frozen=True)
class AtmosphereConfig:
    """Configuration of :class:`AtmosphereSimulator` (SI units, angles in radians).

    Parameters
    ----------
    nlon, nlat
        Grid size (Gauss latitudes); ``nlon >= 2 nlat`` keeps the triangular truncation
        resolvable in longitude.
    truncation
        Largest spherical-harmonic degree ``N`` kept (triangular truncation); ``None`` means
        ``nlat - 1``. ``N <= (nlon - 1) / 3`` removes quadratic aliasing.
    dt
        RK4 time step [s]; checked against the gravity-wave CFL limit.
    output_every
        Time steps between stored frames.
    n_outputs
        Stored frames including the initial one.
    spinup_time
        Time integrated before the first stored frame [s] (a multiple of ``dt``).
    base_height
        ``h0`` of the balanced base state: free-surface height at the equator [m]
        (``g h0 = 2.94e4 m2 s-2`` in Williamson case 2).
    jet_speed
        ``u0`` of the balanced solid-body zonal base flow [m s-1].
    max_wind
        Wind speed bound used only by the CFL check [m s-1].
    orography_height
        Peak of a smooth Gaussian mountain ``hs0 exp(-(d / R)^2)`` [m]; 0 for none.
    orography_radius
        Its e-folding great-circle distance ``R`` [rad].
    orography_center
        Its centre (longitude, latitude) [rad] (Williamson case 5: ``(3 pi/2, pi/6)``).
    hyperdiffusion_time
        E-folding time of the ``del^4`` diffusion at degree ``N`` [s]; ``None`` turns it off.
    forcing_time
        Time scale ``tau_f`` of the height source ``h_f / tau_f`` [s]; ``None`` turns the
        forcing off.
    relaxation_time
        Time scale ``tau_r`` of the relaxation of ``h`` towards the base state [s];
        ``None`` turns it off.
    diurnal_period, seasonal_period
        Periods of ``lambda_c(t)`` and ``phi_c(t)`` [s].
    seasonal_amplitude
        Amplitude of ``phi_c(t)`` [rad].
    initial_perturbation
        RMS [m] of a random smooth height perturbation (degrees 1 to 10) added to the base
        state before spin-up; 0 for none.
    hf0_prior, sigma_prior
        Uniform priors of the forcing amplitude [m] and width [rad].
    spinup_parameters
        ``(hf0, sigma)`` at which every run is spun up, so that frame 0 is the same for all
        runs (bit for bit when ``initial_perturbation`` is 0) and the runs differ only by the
        forcing after time 0 (as ``spinup_reynolds`` of the Kolmogorov flow); ``None`` spins
        each run up at its own parameters.
    """

    nlon: int = 512
    nlat: int = 256
    truncation: int | None = 170
    dt: float = 225.0
    output_every: int = 128
    n_outputs: int = 63
    spinup_time: float = 10 * DAY
    base_height: float = 5960.0
    jet_speed: float = 20.0
    max_wind: float = 80.0
    orography_height: float = 2000.0
    orography_radius: float = math.pi / 9
    orography_center: tuple[float, float] = (1.5 * math.pi, math.pi / 6)
    hyperdiffusion_time: float | None = 3 * 3600.0
    forcing_time: float | None = DAY / (2 * math.pi)
    relaxation_time: float | None = 5 * DAY
    diurnal_period: float = DAY
    seasonal_period: float = 365.25 * DAY
    seasonal_amplitude: float = 0.4
    initial_perturbation: float = 0.0
    hf0_prior: tuple[float, float] = (0.1, 30.0)
    sigma_prior: tuple[float, float] = (1.0, 4.0)
    spinup_parameters: tuple[float, float] | None = None

    @classmethod
    def paper(cls) -> AtmosphereConfig:
        """LD-EnSF setting: 512 x 256 (T170), output every 8 h, 63 frames after 10 days."""
        return cls()

    @classmethod
    def small(cls) -> AtmosphereConfig:
        """64 x 32 (T31), dt = 20 min, 10 frames every 8 h (3 days) after a 1-day spin-up
        shared by every run (at the prior midpoints ``hf0 = 15.05 m``, ``sigma = 2.5 rad``),
        with the strong forcing ``tau_f = day / (80 pi)`` so that runs differ.

        The former weak-forcing small setting is ``small`` with the keyword arguments
        :data:`WEAK_FORCING_SMALL`.

        Examples
        --------
        >>> config = AtmosphereConfig.small()
        >>> config.n_outputs, config.spinup_parameters
        (10, (15.05, 2.5))
        >>> AtmosphereConfig(**{**vars(config), **WEAK_FORCING_SMALL}).n_outputs
        7
        """
        low, high = cls.hf0_prior, cls.sigma_prior
        return cls(nlon=64, nlat=32, truncation=None, dt=1200.0, output_every=24,
                   n_outputs=10, spinup_time=DAY, hyperdiffusion_time=12 * 3600.0,
                   forcing_time=DAY / (80 * math.pi),
                   spinup_parameters=((low[0] + low[1]) / 2, (high[0] + high[1]) / 2))

    @property
    def max_degree(self) -> int:
        """The truncation degree ``N``."""
        return self.nlat - 1 if self.truncation is None else self.truncation


def _gauss_latitudes(nlat: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss latitudes [rad], north to south, and quadrature weights summing to 1."""
    cos_colatitude, weights = legendre_gauss_weights(nlat, -1, 1)
    latitudes = np.arcsin(cos_colatitude.numpy())[::-1].copy()  # torch-harmonics order
    return latitudes, weights.numpy()[::-1].copy() / 2.0


def _float64_vector_sht(nlat: int, nlon: int, **options) -> th.RealVectorSHT:
    """``torch_harmonics.RealVectorSHT`` with its ``1 / (l (l + 1))`` factors in float64.

    torch-harmonics 0.8.0 computes that factor in the default (float32) precision, which
    limits the float64 vector round trip to a relative error of ~3e-8; rescaling the weights
    brings it to ~1e-15.
    """
    transform = th.RealVectorSHT(nlat, nlon, **options)
    if th.__version__ != "0.8.0":  # the pinned version; others are not known to need it
        return transform
    degree = torch.arange(transform.lmax)
    in_float32 = 1.0 / degree / (degree + 1)  # what torch-harmonics 0.8.0 used
    exact = 1.0 / degree.double() / (degree.double() + 1)
    correction = torch.where(degree > 0, exact / in_float32.double(), 1.0)
    transform.weights.mul_(correction[None, None, :, None])
    return transform


@register
class AtmosphereSimulator(Simulator):
    """Batched spectral shallow-water model on the sphere; state ``(batch, 3, nlat, nlon)``.

    Variables ``h`` [m] (fluid layer thickness), ``u``, ``v`` [m s-1]; parameters ``hf0``
    [m] and ``sigma`` [rad] of the moving height forcing. The internal state holds the
    spectral coefficients of vorticity, divergence and thickness,
    ``(batch, 3, N + 1, N + 1)`` complex.
    """

    case = "atmosphere"
    config_class = AtmosphereConfig
    variables = ("h", "u", "v")
    grid_dims = ("lat", "lon")
    periodic_dims = ("lon",)
    time_units = "s"

    def __init__(self, config: AtmosphereConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        nlat, nlon, degrees = config.nlat, config.nlon, config.max_degree + 1
        options = {"lmax": degrees, "mmax": degrees, "grid": "legendre-gauss"}
        self._sht = th.RealSHT(nlat, nlon, **options)
        self._isht = th.InverseRealSHT(nlat, nlon, **options)
        self._vsht = _float64_vector_sht(nlat, nlon, **options)
        self._ivsht = th.InverseRealVectorSHT(nlat, nlon, **options)
        for transform in (self._sht, self._isht, self._vsht, self._ivsht):
            transform.to(device=self.device, dtype=self.dtype)
        latitudes, weights = _gauss_latitudes(nlat)
        self.latitudes = latitudes
        self.longitudes = 2 * np.pi * np.arange(nlon) / nlon
        #: Area weights of the grid points (sum 1), ``(nlat, nlon)``.
        self.area_weights = np.repeat(weights[:, None] / nlon, nlon, axis=1)
        degree = torch.arange(degrees, dtype=torch.float64)[:, None]
        laplacian_eigen = degree * (degree + 1)  # -lap Y_l = l (l + 1) / a^2 Y_l
        self._ll_over_a = self.tensor(laplacian_eigen / EARTH_RADIUS)
        self._a_over_ll = self.tensor(
            torch.where(degree > 0, EARTH_RADIUS / laplacian_eigen.clamp(min=1), 0.0))
        self._not_mean = self.tensor((degree > 0).double())
        if config.hyperdiffusion_time is None:
            self._diffusion = None
        else:
            scaled = laplacian_eigen / (config.max_degree * (config.max_degree + 1))
            self._diffusion = self.tensor(torch.exp(-config.dt / config.hyperdiffusion_time
                                                    * scaled**2))
        lat = self.tensor(latitudes)[:, None]
        self._lat = lat
        self._lon = self.tensor(self.longitudes)[None, :]
        self._coriolis = 2 * EARTH_ROTATION * torch.sin(lat)
        self._orography = self.tensor(self.orography())
        self._base_fields = self._balanced_zonal_flow()
        self._base_height_spec = self._sht(self._base_fields[0])

    # ------------------------------------------------------------------ description
    def validate_config(self) -> None:
        config = self.config
        if config.nlat < 4 or config.nlon < 2 * config.nlat:
            raise ConfigurationError(expected_found(
                "grid (nlat, nlon)", "nlat >= 4 and nlon >= 2 nlat", (config.nlat, config.nlon)))
        if not 1 <= config.max_degree <= config.nlat - 1:
            raise ConfigurationError(expected_found(
                "truncation", f"1 <= truncation <= nlat - 1 = {config.nlat - 1}",
                config.truncation))
        if config.n_outputs < 1 or config.output_every < 1:
            raise ConfigurationError(expected_found(
                "n_outputs/output_every", ">= 1 each", (config.n_outputs, config.output_every)))
        if not config.dt > 0:
            raise ConfigurationError(expected_found("dt", "a positive time step [s]", config.dt))
        limit = self.max_stable_dt()
        if config.dt > limit:
            raise ConfigurationError(expected_found(
                "dt [s]", f"<= {limit:.4g} s (RK4 CFL for gravity waves of speed "
                f"sqrt(g base_height) + max_wind at degree {config.max_degree})", config.dt))
        spinup_steps = config.spinup_time / config.dt
        if config.spinup_time < 0 or abs(spinup_steps - round(spinup_steps)) > 1e-6:
            raise ConfigurationError(expected_found(
                "spinup_time", f"a non-negative multiple of dt = {config.dt:g} s",
                config.spinup_time))
        for name in ("hyperdiffusion_time", "forcing_time", "relaxation_time"):
            value = getattr(config, name)
            if value is not None and not value > 0:
                raise ConfigurationError(expected_found(name, "a positive time [s] or None",
                                                        value))
        if config.spinup_parameters is not None:
            hf0, sigma = config.spinup_parameters
            if not (0.0 <= hf0 <= 200.0 and 0.05 <= sigma <= 10.0):
                raise ConfigurationError(expected_found(
                    "spinup_parameters (hf0, sigma)", "None or 0 <= hf0 <= 200 m and "
                    "0.05 <= sigma <= 10 rad", config.spinup_parameters))
        if config.base_height <= config.orography_height or config.base_height <= 0:
            raise ConfigurationError(expected_found(
                "base_height [m]", f"> max(0, orography_height = {config.orography_height:g})",
                config.base_height))

    def max_stable_dt(self) -> float:
        """Largest RK4 step [s] for the fastest resolved gravity wave plus advection.

        ``dt (sqrt(g h0) + max_wind) sqrt(N (N + 1)) / a <= 2`` (RK4 tolerates 2.83).

        Examples
        --------
        >>> import xldensf as xl
        >>> round(xl.simulator("atmosphere", preset="small").max_stable_dt())
        1257
        """
        config = self.config
        speed = math.sqrt(GRAVITY * config.base_height) + config.max_wind
        wavenumber = math.sqrt(config.max_degree * (config.max_degree + 1)) / EARTH_RADIUS
        return _RK4_OSCILLATION_LIMIT / (speed * wavenumber)

    @property
    def parameter_specs(self) -> tuple[ParameterSpec, ...]:
        config = self.config
        return (
            ParameterSpec("hf0", "m", "amplitude of the moving height forcing",
                          *config.hf0_prior, valid_low=0.0, valid_high=200.0),
            ParameterSpec("sigma", "rad", "latitudinal e-folding width of the height forcing",
                          *config.sigma_prior, valid_low=0.05, valid_high=10.0),
        )

    @property
    def grid_coordinates(self) -> tuple[CoordinateSpec, ...]:
        return (
            CoordinateSpec("lat", np.degrees(self.latitudes), coordinate_attrs("lat")),
            CoordinateSpec("lon", np.degrees(self.longitudes), coordinate_attrs("lon")),
        )

    def orography(self) -> np.ndarray:
        """Surface height ``h_s`` [m] on the grid, ``(nlat, nlon)``."""
        config = self.config
        lon0, lat0 = config.orography_center
        lat = self.latitudes[:, None]
        cos_distance = (np.sin(lat0) * np.sin(lat)
                        + np.cos(lat0) * np.cos(lat) * np.cos(self.longitudes[None, :] - lon0))
        distance = np.arccos(np.clip(cos_distance, -1.0, 1.0))
        return config.orography_height * np.exp(-((distance / config.orography_radius) ** 2))

    def static_fields(self) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
        return {"orography": (self.grid_dims, self.orography())}

    def global_mean(self, field: torch.Tensor) -> torch.Tensor:
        """Area-weighted global mean over the last two (lat, lon) axes.

        Examples
        --------
        >>> import xldensf as xl
        >>> model = xl.simulator("atmosphere", preset="small")
        >>> float(model.global_mean(torch.ones(32, 64, dtype=torch.float64)))
        1.0
        """
        return (field * self.tensor(self.area_weights)).sum(dim=(-2, -1))

    # ------------------------------------------------------------------ transforms
    def _winds(self, vorticity: torch.Tensor, divergence: torch.Tensor) -> torch.Tensor:
        """Spectral vorticity and divergence -> grid ``(..., 2, nlat, nlon)`` as (u, v)."""
        potentials = torch.stack((-divergence, vorticity), dim=-3) * self._a_over_ll
        colatitude_east = self._ivsht(potentials)  # components (-v, u)
        return torch.stack((colatitude_east[..., 1, :, :], -colatitude_east[..., 0, :, :]),
                           dim=-3)

    def _divergence_curl(self, east: torch.Tensor, north: torch.Tensor) -> torch.Tensor:
        """Spectral divergence and curl of the grid vector field (east, north) components:
        ``(..., 2, N + 1, N + 1)``."""
        potentials = self._vsht(torch.stack((-north, east), dim=-3))
        return torch.stack((-potentials[..., 0, :, :], potentials[..., 1, :, :]), dim=-3) * (
            self._ll_over_a)

    def to_fields(self, internal: torch.Tensor) -> torch.Tensor:
        height = self._isht(internal[:, 2])
        winds = self._winds(internal[:, 0], internal[:, 1])
        return torch.cat((height[:, None], winds), dim=1)

    def from_fields(self, fields: torch.Tensor) -> torch.Tensor:
        divergence_curl = self._divergence_curl(fields[:, 1], fields[:, 2])
        return torch.stack((divergence_curl[:, 1], divergence_curl[:, 0],
                            self._sht(fields[:, 0])), dim=1)

    # ------------------------------------------------------------------ equations
    def _balanced_zonal_flow(self) -> torch.Tensor:
        """Solid-body zonal flow ``u0 cos(phi)`` in geostrophic balance, ``(3, nlat, nlon)``
        (Williamson case 2 with ``alpha = 0``; thickness below the free surface)."""
        config = self.config
        u0 = config.jet_speed
        sin2 = torch.sin(self._lat) ** 2
        free_surface = config.base_height - (
            EARTH_RADIUS * EARTH_ROTATION * u0 + 0.5 * u0**2) * sin2 / GRAVITY
        height = (free_surface - self._orography).expand(-1, self.config.nlon)
        east = (u0 * torch.cos(self._lat)).expand_as(height)
        return torch.stack((height, east, torch.zeros_like(height)))

    def forcing_height(self, parameters: torch.Tensor, time: float) -> torch.Tensor:
        """The moving height forcing ``h_f`` [m] at ``time`` [s], ``(batch, nlat, nlon)``."""
        config = self.config
        center_lon = -2 * math.pi * time / config.diurnal_period
        center_lat = config.seasonal_amplitude * math.sin(2 * math.pi * time
                                                          / config.seasonal_period)
        amplitude, width = parameters[:, 0, None, None], parameters[:, 1, None, None]
        return amplitude * torch.cos(self._lon - center_lon) * torch.exp(
            -((self._lat - center_lat) / width) ** 2)

    def _tendency(self, spectral: torch.Tensor, parameters: torch.Tensor,
                  time: float) -> torch.Tensor:
        vorticity, height = self._isht(spectral[:, 0::2]).unbind(1)
        east, north = self._winds(spectral[:, 0], spectral[:, 1]).unbind(1)
        absolute_vorticity = vorticity + self._coriolis
        fluxes = self._divergence_curl(torch.stack((absolute_vorticity * east, height * east), 1),
                                       torch.stack((absolute_vorticity * north, height * north), 1))
        bernoulli = GRAVITY * (height + self._orography) + 0.5 * (east**2 + north**2)
        config = self.config
        forced = config.forcing_time is not None
        if forced:
            scalars = self._sht(torch.stack((bernoulli, self.forcing_height(parameters, time)), 1))
        else:
            scalars = self._sht(bernoulli[:, None])
        d_vorticity = -fluxes[:, 0, 0]
        d_divergence = fluxes[:, 0, 1] + self._ll_over_a / EARTH_RADIUS * scalars[:, 0]
        d_height = -fluxes[:, 1, 0]
        source = 0.0
        if forced:
            source = scalars[:, 1] / config.forcing_time
        if config.relaxation_time is not None:
            source = source + (self._base_height_spec - spectral[:, 2]) / config.relaxation_time
        if forced or config.relaxation_time is not None:
            d_height = d_height + source * self._not_mean
        return torch.stack((d_vorticity, d_divergence, d_height), dim=1)

    def step(self, internal: torch.Tensor, parameters: torch.Tensor,
             time: float) -> torch.Tensor:
        dt = self.config.dt
        k1 = self._tendency(internal, parameters, time)
        k2 = self._tendency(internal + 0.5 * dt * k1, parameters, time + 0.5 * dt)
        k3 = self._tendency(internal + 0.5 * dt * k2, parameters, time + 0.5 * dt)
        k4 = self._tendency(internal + dt * k3, parameters, time + dt)
        updated = internal + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        return updated if self._diffusion is None else updated * self._diffusion

    def initial_internal(self, parameters: torch.Tensor,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """Balanced zonal flow (plus an optional random smooth height perturbation drawn
        from ``generator``), integrated for ``spinup_time`` so that it ends at time 0."""
        batch = parameters.shape[0]
        config = self.config
        if config.spinup_parameters is not None:
            parameters = self.tensor(config.spinup_parameters).expand(batch, 2)
            if config.initial_perturbation == 0:
                # Every run has the same spin-up: integrate it once and copy it, so that
                # the runs are identical at the first frame (bit for bit).
                one = self._spin_up(self.from_fields(self._base_fields[None]), parameters[:1])
                return one.expand(batch, *one.shape[1:]).clone()
        internal = self.from_fields(self._base_fields.expand(batch, -1, -1, -1))
        if config.initial_perturbation > 0:
            internal = internal.clone()
            internal[:, 2] += self._random_height(batch, generator)
        return self._spin_up(internal, parameters)

    def _spin_up(self, internal: torch.Tensor, parameters: torch.Tensor) -> torch.Tensor:
        """Integrate ``spinup_time`` with ``parameters`` so that the state ends at time 0."""
        steps = round(self.config.spinup_time / self.config.dt)
        for index in range(steps):
            internal = self.step(internal, parameters, (index - steps) * self.config.dt)
        return internal

    def _random_height(self, batch: int, generator: torch.Generator | None) -> torch.Tensor:
        """Spectral coefficients of random fields over degrees 1-10 with RMS
        ``initial_perturbation`` [m], ``(batch, N + 1, N + 1)``."""
        shape = (batch, self.config.max_degree + 1, self.config.max_degree + 1, 2)
        noise = torch.randn(shape, generator=generator, dtype=torch.float64)
        coefficients = torch.view_as_complex(noise).to(device=self.device)
        coefficients = coefficients.to(torch.complex128 if self.dtype == torch.float64
                                       else torch.complex64)
        degree = torch.arange(shape[1], device=self.device)[:, None]
        order = torch.arange(shape[2], device=self.device)[None, :]
        coefficients = coefficients * ((degree >= 1) & (degree <= 10) & (order <= degree))
        coefficients[..., 0] = coefficients[..., 0].real  # m = 0 of a real field
        field = self._isht(coefficients)
        rms = torch.sqrt(self.global_mean(field**2))[:, None, None]
        return self._sht(field * (self.config.initial_perturbation / rms))


def _zonal_flow_fields(model: AtmosphereSimulator, east: np.ndarray, north: np.ndarray,
                       height: np.ndarray) -> torch.Tensor:
    """Stack numpy (nlat, nlon) fields as a model state ``(1, 3, nlat, nlon)``."""
    return model.tensor(np.stack(np.broadcast_arrays(height, east, north)))[None]


def williamson2_state(model: AtmosphereSimulator) -> torch.Tensor:
    """Williamson et al. (1992) case 2 (steady geostrophic flow, ``alpha = 0``) with the
    model's ``jet_speed`` and ``base_height``: ``u0 = 2 pi a / 12 days`` and
    ``g h0 = 2.94e4 m2 s-2`` in the paper. Returns ``(1, 3, nlat, nlon)``.

    Examples
    --------
    >>> import xldensf as xl
    >>> model = xl.simulator("atmosphere", preset="small", orography_height=0.0)
    >>> williamson2_state(model).shape
    torch.Size([1, 3, 32, 64])
    """
    return model._base_fields[None].clone()


def rossby_haurwitz_state(model: AtmosphereSimulator, wavenumber: int = 4,
                          omega: float = 7.848e-6, height: float = 8000.0) -> torch.Tensor:
    """Williamson et al. (1992) case 6, the Rossby-Haurwitz wave (``R = 4``,
    ``omega = K = 7.848e-6 s-1``, ``h0 = 8000 m``). Returns ``(1, 3, nlat, nlon)``.

    Examples
    --------
    >>> import xldensf as xl
    >>> model = xl.simulator("atmosphere", preset="small", orography_height=0.0)
    >>> float(rossby_haurwitz_state(model)[0, 1].max()) > 50.0   # m s-1
    True
    """
    R, K, a, Omega = wavenumber, omega, EARTH_RADIUS, EARTH_ROTATION
    lat, lon = model.latitudes[:, None], model.longitudes[None, :]
    cos, sin = np.cos(lat), np.sin(lat)
    east = a * omega * cos + a * K * cos ** (R - 1) * (R * sin**2 - cos**2) * np.cos(R * lon)
    north = -a * K * R * cos ** (R - 1) * sin * np.sin(R * lon)
    A = (0.5 * omega * (2 * Omega + omega) * cos**2
         + 0.25 * K**2 * cos ** (2 * R) * ((R + 1) * cos**2 + (2 * R**2 - R - 2)
                                          - 2 * R**2 / cos**2))
    B = (2 * (Omega + omega) * K / ((R + 1) * (R + 2)) * cos**R
         * ((R**2 + 2 * R + 2) - (R + 1) ** 2 * cos**2))
    C = 0.25 * K**2 * cos ** (2 * R) * ((R + 1) * cos**2 - (R + 2))
    geopotential = GRAVITY * height + a**2 * (A + B * np.cos(R * lon) + C * np.cos(2 * R * lon))
    return _zonal_flow_fields(model, east, north, geopotential / GRAVITY - model.orography())


def galewsky_state(model: AtmosphereSimulator, perturbation: float = 120.0,
                   max_wind: float = 80.0, mean_height: float = 10000.0) -> torch.Tensor:
    """Galewsky, Scott & Polvani (2004) barotropically unstable jet: ``u_max = 80 m s-1``
    between ``phi0 = pi/7`` and ``pi/2 - phi0``, ``h`` in gradient-wind balance with mean
    ``10 km``, plus a ``perturbation`` [m] bump at 45 N, 180 E (0 for the balanced jet).
    Returns ``(1, 3, nlat, nlon)``.

    Examples
    --------
    >>> import xldensf as xl
    >>> model = xl.simulator("atmosphere", preset="small", orography_height=0.0)
    >>> jet = galewsky_state(model, perturbation=0.0)
    >>> round(float(model.global_mean(jet[0, 0])))   # mean thickness [m]
    10000
    """
    lat0, lat1 = math.pi / 7, math.pi / 2 - math.pi / 7
    normalisation = math.exp(-4.0 / (lat1 - lat0) ** 2)

    def jet(lat: np.ndarray) -> np.ndarray:
        inside = (lat > lat0) & (lat < lat1)
        safe = np.where(inside, lat, 0.5 * (lat0 + lat1))
        return np.where(inside, max_wind / normalisation
                        * np.exp(1.0 / ((safe - lat0) * (safe - lat1))), 0.0)

    # Gradient-wind balance g dh/dphi = -a u (f + u tan(phi) / a), integrated from the
    # south pole on a fine grid (trapezoid rule, relative error ~1e-9).
    fine = np.linspace(-math.pi / 2, math.pi / 2, 40001)
    u_fine = jet(fine)
    slope = -EARTH_RADIUS * u_fine * (2 * EARTH_ROTATION * np.sin(fine)
                                      + u_fine * np.tan(fine) / EARTH_RADIUS) / GRAVITY
    profile = np.concatenate(([0.0], np.cumsum(0.5 * (slope[1:] + slope[:-1]) * np.diff(fine))))
    lat, lon = model.latitudes[:, None], model.longitudes[None, :]
    height = np.interp(lat, fine, profile) * np.ones_like(lon)
    height += mean_height - float((height * model.area_weights).sum())
    lon_from_center = np.angle(np.exp(1j * (lon - math.pi)))
    height = height + perturbation * np.cos(lat) * np.exp(
        -((lon_from_center / (1 / 3)) ** 2) - (((math.pi / 4) - lat) / (1 / 15)) ** 2)
    return _zonal_flow_fields(model, jet(lat), np.zeros_like(lat),
                              height - model.orography())
