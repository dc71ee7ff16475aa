"""The prior of the latent filters: parameter draws, their latent start, the trained box.

:func:`candidate_prior` is the prior of :func:`~xldensf.assimilation.latent.assimilate_latent`
for the moving particle start (normalised parameters ``u ~ U(-1, 1)`` and the LDNet's
latent start for each), and :func:`training_latent_box` the box of the latent trajectories
over the trained parameter range that analysis members are kept in (docs/ldensf.md).
"""

from __future__ import annotations

import torch

from ..filters import CandidatePrior
from ..surrogate import LatentModel

__all__ = ["candidate_prior", "training_latent_box", "training_latent_spread"]

#: Parameter sets (a Sobol sequence over ``[-1, 1]``) whose latent trajectories span the
#: box of the training latents.
_BOX_SAMPLES = 512


def _trained_latents(model: LatentModel) -> torch.Tensor:
    """The latent trajectories ``(samples, frames, latent_dim)`` of a fixed Sobol sequence
    of parameters over ``[-1, 1]`` (the training runs' range)."""
    sobol = torch.quasirandom.SobolEngine(model.n_parameters, scramble=True, seed=0)
    parameters = (2 * sobol.draw(_BOX_SAMPLES, dtype=torch.float64) - 1).to(model.dtype)
    with torch.no_grad():
        return model.unroll(parameters.to(model.device)).cpu()


def training_latent_spread(model: LatentModel) -> torch.Tensor:
    """Standard deviation ``(latent_dim,)`` of the latent state across the trained parameter
    range: the root of the variance across parameters, averaged over the training frames.

    The shape of the additive model error of the latent filters (``model_error=``,
    :class:`~xldensf.filters.AdaptiveModelError`): the variability the parameters cause.

    Examples
    --------
    >>> import torch
    >>> from xldensf.surrogate import LatentModel, LDNetConfig, SurrogateMetadata
    >>> meta = SurrogateMetadata(variables=("h",), coordinate_names=("x",),
    ...     times=(0.0, 1.0, 2.0), parameters=("c",), parameter_ranges=((0.0, 1.0),))
    >>> model = LatentModel(LDNetConfig.small().replace(latent_dim=3), meta,
    ...                     torch.rand(6, 1))
    >>> spread = training_latent_spread(model)
    >>> spread.shape, bool((spread >= 0).all())
    (torch.Size([3]), True)
    """
    return _trained_latents(model).to(torch.float64).var(dim=0).mean(dim=0).sqrt()


def training_latent_box(model: LatentModel, margin: float = 0.0) -> tuple[torch.Tensor,
                                                                         torch.Tensor]:
    """Lower and upper bounds ``(latent_dim,)`` of the latent trajectories over the trained
    parameter range, widened by ``margin`` times the width on each side.

    The trajectories ``model.unroll(u)`` at every training frame for a fixed Sobol sequence
    of ``u`` over ``[-1, 1]`` (the training runs' range): the region of latent space the
    dynamics and decoder were trained on, outside which their networks extrapolate.

    Examples
    --------
    >>> import torch
    >>> from xldensf.surrogate import LatentModel, LDNetConfig, SurrogateMetadata
    >>> meta = SurrogateMetadata(variables=("h",), coordinate_names=("x",),
    ...     times=(0.0, 1.0, 2.0), parameters=("c",), parameter_ranges=((0.0, 1.0),))
    >>> model = LatentModel(LDNetConfig.small().replace(latent_dim=3), meta,
    ...                     torch.rand(6, 1))
    >>> lower, upper = training_latent_box(model, margin=0.5)
    >>> lower.shape, bool((lower < upper).all())
    (torch.Size([3]), True)
    """
    latents = _trained_latents(model).flatten(0, -2)
    lower, upper = latents.amin(dim=0), latents.amax(dim=0)
    width = upper - lower
    return lower - margin * width, upper + margin * width


def candidate_prior(model: LatentModel, parameters: torch.Tensor) -> CandidatePrior:
    """The prior of :func:`assimilate_latent` for the moving particle start.

    Base variables: the normalised parameters ``u ~ U(-1, 1)`` (``parameters``, the
    draws); state at the first time: ``(model.unroll(u, 1)[:, 0], u)``.

    Examples
    --------
    >>> import torch
    >>> from xldensf.surrogate import LatentModel, LDNetConfig, SurrogateMetadata
    >>> meta = SurrogateMetadata(variables=("h",), coordinate_names=("x",),
    ...     times=(0.0, 1.0, 2.0), parameters=("c",), parameter_ranges=((0.0, 1.0),))
    >>> model = LatentModel(LDNetConfig.small().replace(latent_dim=3), meta,
    ...                     torch.rand(6, 1))
    >>> prior = candidate_prior(model, 2 * torch.rand(8, 1) - 1)
    >>> prior.initial_state(prior.draws).shape, prior.sample(5, None).shape
    (torch.Size([8, 4]), torch.Size([5, 1]))
    """
    dtype, bound = parameters.dtype, torch.ones(model.n_parameters, dtype=parameters.dtype)

    def initial_state(base: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            latent = model.unroll(base.to(model.device, model.dtype), 1)[:, 0].cpu()
        return torch.cat([latent.to(dtype), base], dim=1)

    def sample(count: int, generator: torch.Generator | None) -> torch.Tensor:
        return (2 * torch.rand(count, model.n_parameters, generator=generator,
                               dtype=torch.float64) - 1).to(dtype)

    return CandidatePrior(parameters, initial_state, -bound, bound, sample=sample)
