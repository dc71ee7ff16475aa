"""The coupled VAE of Latent-EnSF (Si & Chen, ICLR 2025) as torch modules (no xarray).

Three networks share one latent space of size ``latent_dim``:

- a state encoder: a full field ``(n_variables, *grid)`` -> latent mean and log-variance;
- an observation encoder for one station layout: the station values ``(n_obs,)`` ->
  latent mean and log-variance;
- one decoder: latent -> full field.

Fields are normalised (each variable by its mean and spread over the training data) and
represented by their coordinates in a fixed orthonormal basis of ``n_modes`` principal
components of the training fields (proper orthogonal decomposition, set once from the
data by :meth:`CoupledVAE.set_normalization`): the state encoder's first layer and the
decoder's last layer are this fixed linear map, so the trained MLPs act on ``n_modes``
values instead of every grid value (a grid of 3 x 64 x 64 values trains in minutes on a
CPU). Each station value is normalised by its mean and spread too.

The loss of a batch of fields ``x`` (mode coordinates ``c``) with station values ``y`` is::

    |D(z_x) - x|^2 + |D(z_y) - x|^2 + beta [KL(q(z|x) | N(0, I)) + KL(q(z|y) | N(0, I))]
        + matching |mu_x - mu_y|^2,

with ``z_x ~ q(z|x)``, ``z_y ~ q(z|y)`` drawn by the reparameterisation trick; the squared
field errors are averaged over grid values (computed exactly in the orthonormal mode
coordinates, leaving out the fixed truncation error), the KL and matching terms over
latent components. :func:`train_vae` minimises it with Adam, adding Gaussian noise of
standard deviation ``noise`` (normalised units) to the station values, so that the
observation encoder sees observations like those it will encode in a filter.

Examples
--------
>>> import torch
>>> network = CoupledVAE(n_variables=1, grid_shape=(6,), n_obs=2, latent_dim=2, width=8)
>>> mean, log_var = network.encode_state(torch.zeros(3, 1, 6))
>>> tuple(mean.shape), tuple(network.decode(mean).shape)
((3, 2), (3, 1, 6))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigurationError, DataError, check_positive_int, expected_found

__all__ = ["CoupledVAE", "VAELosses", "vae_losses", "train_vae"]

#: Floor of a normalisation scale (a variable without spread, e.g. velocities at rest).
_SCALE_FLOOR = 1e-12
#: Log-variances are clamped to this range (keeps exp() finite in early training).
_LOG_VAR_RANGE = (-12.0, 6.0)
#: Initial log-variance of the encoders' outputs.
_INITIAL_LOG_VAR = -6.0


def _mlp(n_in: int, width: int, depth: int, n_out: int) -> nn.Sequential:
    """``depth`` hidden layers of ``width`` SiLU units, then a linear layer."""
    layers: list[nn.Module] = []
    size = n_in
    for _ in range(depth):
        layers += [nn.Linear(size, width), nn.SiLU()]
        size = width
    layers.append(nn.Linear(size, n_out))
    return nn.Sequential(*layers)


class CoupledVAE(nn.Module):
    """State encoder, observation encoder and shared decoder of Latent-EnSF.

    Parameters
    ----------
    n_variables
        Number of field variables (channels).
    grid_shape
        Grid shape of one variable.
    n_obs
        Length of the observation vector (observed variables x stations, variable-major).
    latent_dim
        Size of the latent space.
    width, depth
        Width and number of hidden layers of each MLP.
    n_modes
        Number of principal components representing a field (at most the number of
        field values; the basis is the identity until :meth:`set_normalization`).

    Examples
    --------
    >>> import torch
    >>> network = CoupledVAE(n_variables=2, grid_shape=(4, 4), n_obs=3, latent_dim=2, width=8)
    >>> tuple(network.encode_observations(torch.zeros(5, 3))[0].shape)
    (5, 2)
    """

    def __init__(self, n_variables: int, grid_shape: tuple[int, ...], n_obs: int,
                 latent_dim: int, width: int = 128, depth: int = 2,
                 n_modes: int = 256) -> None:
        super().__init__()
        self.n_variables = check_positive_int("n_variables", n_variables)
        self.grid_shape = tuple(int(size) for size in grid_shape)
        self.n_obs = check_positive_int("n_obs", n_obs)
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        self.width = check_positive_int("width", width)
        self.depth = check_positive_int("depth", depth)
        n_field = self.n_variables * math.prod(self.grid_shape)
        self.n_modes = min(check_positive_int("n_modes", n_modes), n_field)
        self.state_encoder = _mlp(self.n_modes, width, depth, 2 * latent_dim)
        self.observation_encoder = _mlp(self.n_obs, width, depth, 2 * latent_dim)
        self.decoder = _mlp(latent_dim, width, depth, self.n_modes)
        # Start with a small posterior variance (log-variance biases at the lower end): a
        # decoder fed latents with unit noise from the start only learns the mean field.
        for encoder in (self.state_encoder, self.observation_encoder):
            with torch.no_grad():
                encoder[-1].bias[latent_dim:].fill_(_INITIAL_LOG_VAR)
        self.register_buffer("field_center", torch.zeros(self.n_variables))
        self.register_buffer("field_scale", torch.ones(self.n_variables))
        self.register_buffer("mode_mean", torch.zeros(n_field))
        self.register_buffer("basis", torch.eye(self.n_modes, n_field))
        self.register_buffer("mode_scale", torch.ones(self.n_modes))
        self.register_buffer("obs_center", torch.zeros(self.n_obs))
        self.register_buffer("obs_scale", torch.ones(self.n_obs))

    @property
    def field_shape(self) -> tuple[int, ...]:
        """``(n_variables, *grid_shape)``."""
        return (self.n_variables, *self.grid_shape)

    def set_normalization(self, fields: torch.Tensor, observations: torch.Tensor) -> None:
        """Centre and scale of each variable and each observation from training data
        ``fields`` ``(samples, n_variables, *grid)`` and ``observations`` ``(samples, n_obs)``."""
        flat = fields.transpose(0, 1).reshape(self.n_variables, -1).to(self.field_center)
        self.field_center.copy_(flat.mean(dim=1))
        self.field_scale.copy_(flat.std(dim=1).clamp(min=_SCALE_FLOOR))
        self._set_basis(self._normalize_fields(fields.to(self.field_center)).flatten(1))
        # One scale per observed variable block would also do; per entry keeps each
        # station's value of order one whatever its location.
        obs = observations.to(self.obs_center)
        self.obs_center.copy_(torch.nanmean(obs, dim=0))
        spread = torch.sqrt(torch.nanmean((obs - self.obs_center).square(), dim=0))
        self.obs_scale.copy_(torch.nan_to_num(spread, nan=1.0).clamp(min=_SCALE_FLOOR))

    def _set_basis(self, normalized: torch.Tensor) -> None:
        """The leading principal components of normalised flat fields ``(samples, n_field)``:
        exact (eigenvectors of the smaller Gram matrix, float64) when ``n_modes`` is more
        than a quarter of the rank, else by randomised SVD (:func:`torch.svd_lowrank`, four
        power iterations, seeded by torch's global generator)."""
        data = normalized.double()
        mean = data.mean(dim=0)
        centred = data - mean
        samples, n_field = centred.shape
        if 4 * self.n_modes < min(samples, n_field):
            _, singular, vectors = torch.svd_lowrank(centred.float(), q=self.n_modes + 16,
                                                     niter=4)
            singular, basis = singular[: self.n_modes].double(), vectors[:, : self.n_modes].T
        elif samples < n_field:
            values, vectors = torch.linalg.eigh(centred @ centred.T)
            values, vectors = values.flip(0)[: self.n_modes], vectors.flip(1)[:, : self.n_modes]
            singular = values.clamp(min=0.0).sqrt()
            basis = (vectors.T @ centred) / singular.clamp(min=_SCALE_FLOOR)[:, None]
        else:
            values, vectors = torch.linalg.eigh(centred.T @ centred)
            values, basis = values.flip(0)[: self.n_modes], vectors.flip(1)[:, : self.n_modes].T
            singular = values.clamp(min=0.0).sqrt()
        count = len(singular)
        scale = (singular / math.sqrt(max(samples - 1, 1))).clamp(min=_SCALE_FLOOR)
        self.mode_mean.copy_(mean)
        self.basis.zero_()
        self.basis[:count].copy_(basis)
        self.mode_scale.fill_(_SCALE_FLOOR)
        self.mode_scale[:count].copy_(scale)

    def coefficients(self, fields: torch.Tensor) -> torch.Tensor:
        """Normalised mode coordinates ``(batch, n_modes)`` of fields
        ``(batch, n_variables, *grid)`` in physical units."""
        flat = self._normalize_fields(fields).flatten(1) - self.mode_mean
        return (flat @ self.basis.T) / self.mode_scale

    def _normalize_fields(self, fields: torch.Tensor) -> torch.Tensor:
        shape = (-1, self.n_variables) + (1,) * len(self.grid_shape)
        if tuple(fields.shape[1:]) != self.field_shape:
            raise DataError(expected_found("field shape", f"(batch, *{self.field_shape})",
                                           tuple(fields.shape)))
        return (fields - self.field_center.reshape(shape)) / self.field_scale.reshape(shape)

    @staticmethod
    def _split(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = output.chunk(2, dim=-1)
        return mean, log_var.clamp(*_LOG_VAR_RANGE)

    def encode_state(self, fields: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent mean and log-variance ``(batch, latent_dim)`` of fields
        ``(batch, n_variables, *grid)`` in physical units."""
        return self.encode_coefficients(self.coefficients(fields))

    def encode_coefficients(self, coefficients: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent mean and log-variance of normalised mode coordinates ``(batch, n_modes)``."""
        return self._split(self.state_encoder(coefficients))

    def normalize_observations(self, observations: torch.Tensor) -> torch.Tensor:
        """Observations ``(batch, n_obs)`` in normalised units, missing (NaN) values set to
        the training mean (0)."""
        if observations.shape[-1] != self.n_obs:
            raise DataError(expected_found("observation vector length", self.n_obs,
                                           observations.shape[-1]))
        return torch.nan_to_num((observations - self.obs_center) / self.obs_scale, nan=0.0)

    def encode_observations(self, observations: torch.Tensor,
                            normalized: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent mean and log-variance ``(batch, latent_dim)`` of station values
        ``(batch, n_obs)`` (physical units unless ``normalized``; NaN = missing)."""
        values = observations if normalized else self.normalize_observations(observations)
        return self._split(self.observation_encoder(values))

    def decode_normalized(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalised fields ``(batch, n_variables, *grid)`` of latents ``(batch, latent_dim)``."""
        flat = self.mode_mean + (self.decoder(latent) * self.mode_scale) @ self.basis
        return flat.reshape(-1, *self.field_shape)

    def reconstruction_error(self, predicted: torch.Tensor,
                             target: torch.Tensor) -> torch.Tensor:
        """Mean squared normalised field error of mode coordinates ``predicted`` against
        ``target`` ``(batch, n_modes)`` (exact: the basis is orthonormal)."""
        weighted = (predicted - target).square() * self.mode_scale.square()
        return weighted.sum(dim=-1).mean() / self.basis.shape[1]

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Fields ``(batch, n_variables, *grid)`` in physical units of latents
        ``(batch, latent_dim)``."""
        shape = (1, self.n_variables) + (1,) * len(self.grid_shape)
        return (self.decode_normalized(latent) * self.field_scale.reshape(shape)
                + self.field_center.reshape(shape))


@dataclass
class VAELosses:
    """The terms of the coupled VAE loss (batch means)."""

    total: torch.Tensor
    state_reconstruction: torch.Tensor
    observation_reconstruction: torch.Tensor
    kl: torch.Tensor
    matching: torch.Tensor


def _kl(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean, exp(log_var)) | N(0, I))`` averaged over latent components and batch."""
    return 0.5 * (mean.square() + log_var.exp() - 1.0 - log_var).mean()


def vae_losses(network: CoupledVAE, coefficients: torch.Tensor, observations: torch.Tensor,
               *, beta: float, matching: float,
               generator: torch.Generator | None = None) -> VAELosses:
    """The coupled loss of a batch (see the module docstring) of normalised mode
    coordinates ``(batch, n_modes)`` (:meth:`CoupledVAE.coefficients`) and normalised
    station values ``(batch, n_obs)`` (:meth:`CoupledVAE.normalize_observations`).

    Examples
    --------
    >>> import torch
    >>> network = CoupledVAE(n_variables=1, grid_shape=(6,), n_obs=2, latent_dim=2, width=8)
    >>> losses = vae_losses(network, torch.zeros(4, 6), torch.zeros(4, 2), beta=1e-3,
    ...                     matching=1.0, generator=torch.Generator().manual_seed(0))
    >>> bool(losses.total >= 0)
    True
    """
    target = coefficients
    state_mean, state_log_var = network.encode_coefficients(coefficients)
    obs_mean, obs_log_var = network.encode_observations(observations, normalized=True)

    def sample(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(mean.shape, generator=generator,
                            dtype=mean.dtype).to(mean.device)
        return mean + (0.5 * log_var).exp() * noise

    from_state = network.decoder(sample(state_mean, state_log_var))
    from_obs = network.decoder(sample(obs_mean, obs_log_var))
    state_error = network.reconstruction_error(from_state, target)
    obs_error = network.reconstruction_error(from_obs, target)
    kl = _kl(state_mean, state_log_var) + _kl(obs_mean, obs_log_var)
    match = (state_mean - obs_mean).square().mean()
    total = state_error + obs_error + beta * kl + matching * match
    return VAELosses(total, state_error, obs_error, kl, match)


def train_vae(network: CoupledVAE, fields: torch.Tensor, observations: torch.Tensor, *,
              steps: int, batch_size: int = 64, learning_rate: float = 1e-3,
              beta: float = 1e-3, matching: float = 1.0, noise: float = 0.1,
              generator: torch.Generator | None = None,
              callback: Callable[[int, VAELosses], None] | None = None) -> VAELosses:
    """Minimise :func:`vae_losses` with Adam over random mini-batches (cosine-decayed rate).

    Parameters
    ----------
    network
        The VAE; its normalisation is set from the data here.
    fields
        Training fields ``(samples, n_variables, *grid)``.
    observations
        Their station values ``(samples, n_obs)``, noise-free.
    steps, batch_size, learning_rate
        Optimiser steps, samples per step and Adam's initial rate.
    beta, matching
        Weights of the KL and latent-matching terms.
    noise
        Standard deviation of the Gaussian noise added to the normalised station values
        at every step (0: none).
    generator
        Random generator of the batches, noise and reparameterisation.
    callback
        ``callback(step, losses)`` after every step.

    Returns
    -------
    VAELosses
        The losses of the last step.

    Examples
    --------
    >>> import torch
    >>> generator = torch.Generator().manual_seed(0)
    >>> fields = torch.randn(32, 1, 6, generator=generator)
    >>> network = CoupledVAE(n_variables=1, grid_shape=(6,), n_obs=2, latent_dim=2, width=8)
    >>> losses = train_vae(network, fields, fields[:, 0, :2], steps=5, generator=generator)
    >>> bool(torch.isfinite(losses.total))
    True
    """
    steps = check_positive_int("steps", steps)
    batch_size = check_positive_int("batch_size", batch_size)
    if fields.shape[0] != observations.shape[0] or fields.shape[0] < 1:
        raise ConfigurationError(expected_found("training samples (fields, observations)",
                                                "the same positive count",
                                                (fields.shape[0], observations.shape[0])))
    network.set_normalization(fields, observations)
    dtype = network.field_center.dtype
    with torch.no_grad():
        coefficients = network.coefficients(fields.to(dtype))
        normalized_obs = network.normalize_observations(observations.to(dtype))
    optimizer = torch.optim.Adam(network.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    network.train()
    losses = None
    for step in range(steps):
        index = torch.randint(fields.shape[0], (min(batch_size, fields.shape[0]),),
                              generator=generator).to(coefficients.device)
        obs = normalized_obs[index]
        if noise > 0:
            obs = obs + noise * torch.randn(obs.shape, generator=generator,
                                            dtype=obs.dtype).to(obs.device)
        losses = vae_losses(network, coefficients[index], obs, beta=beta, matching=matching,
                            generator=generator)
        optimizer.zero_grad(set_to_none=True)
        losses.total.backward()
        optimizer.step()
        schedule.step()
        if callback is not None:
            callback(step, losses)
    network.eval()
    return VAELosses(**{name: value.detach() for name, value in vars(losses).items()})
