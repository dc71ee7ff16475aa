"""A tempered particle start for cycling filters with a cheap forecast.

The first analyses of a filter that starts from a broad prior are where it is most easily
lost: with few stations the likelihood of the source or parameters is multimodal (wave
arrival times, phases), and a Gaussian analysis (an ensemble Kalman filter, or the
default EnSF with its Gaussian prior score) of a broad prior locks onto the wrong mode
and never recovers. Where a forecast costs microseconds (a latent model), the early,
broad posterior can instead be represented exactly by importance weights on many
candidates drawn from the prior:

1. ``candidates`` prior draws are advanced to each observation time and weighted by the
   Gaussian likelihood of its observations (a bootstrap particle filter without
   resampling: exact for a deterministic forecast);
2. at each cycle the largest fraction ``beta`` of the new log-likelihood is added such that
   the weights keep an effective sample size of at least ``members`` (likelihood
   tempering); while ``beta = 1`` the cycle's analysis is ``members`` draws from the
   weighted candidates;
3. at the first cycle with ``beta < 1`` the weighted candidates are resampled to
   ``members`` members, and the cycling filter analyses the remaining fraction ``1 -
   beta`` of that cycle's likelihood (its observation error divided by ``sqrt(1 -
   beta)``), then cycles as usual: the tempered likelihoods multiply to the full one, so
   no observation is used twice.

:func:`particle_start_cycle` runs this in front of :func:`~xldensf.filters.cycle` and
returns its :class:`~xldensf.filters.CyclingResult` with the cycle of the handover and
the fraction ``beta`` there (docs/ldensf.md, "First cycles").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import ConfigurationError, expected_found
from .base import EnsembleFilter, OperatorLike, prepare_problem
from .cycling import Advance, CyclingResult, cycle, per_cycle

__all__ = ["particle_start_cycle", "ParticleStartResult", "effective_sample_size",
           "tempering_fraction", "systematic_resample"]

#: Bisection steps of :func:`tempering_fraction` (``beta`` to 2**-30).
_BISECTIONS = 30


@dataclass
class ParticleStartResult(CyclingResult):
    """A :class:`~xldensf.filters.CyclingResult` with the particle start's diagnostics.

    Attributes
    ----------
    handover
        Index of the first cycle analysed by the cycling filter (``n_cycles`` if the
        weighted candidates carried every cycle).
    beta
        Fraction of that cycle's log-likelihood taken by the weighted candidates
        (``1.0`` when ``handover == n_cycles``).
    effective_sizes
        Effective sample size of the candidates' weights after each weighted cycle.
    """

    handover: int = 0
    beta: float = 1.0
    effective_sizes: tuple[float, ...] = ()


def effective_sample_size(log_weights: torch.Tensor) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` of unnormalised log-weights.

    Examples
    --------
    >>> import torch
    >>> effective_sample_size(torch.zeros(8))
    8.0
    >>> round(effective_sample_size(torch.tensor([0.0, -1e9, -1e9])), 6)
    1.0
    """
    weights = torch.softmax(log_weights.double(), dim=0)
    return float(1.0 / (weights ** 2).sum())


def tempering_fraction(log_weights: torch.Tensor, log_likelihood: torch.Tensor,
                       target: float) -> float:
    """Largest ``beta`` in ``[0, 1]`` with ``ESS(log_weights + beta * log_likelihood) >=
    target`` (bisection; ``1.0`` if the whole likelihood keeps the target).

    Examples
    --------
    >>> import torch
    >>> log_likelihood = -0.5 * torch.linspace(-3, 3, 1001) ** 2 * 100
    >>> beta = tempering_fraction(torch.zeros(1001), log_likelihood, target=200)
    >>> 0 < beta < 1, round(effective_sample_size(beta * log_likelihood))
    (True, 200)
    """
    if effective_sample_size(log_weights + log_likelihood) >= target:
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(_BISECTIONS):
        middle = 0.5 * (low + high)
        if effective_sample_size(log_weights + middle * log_likelihood) >= target:
            low = middle
        else:
            high = middle
    return low


def systematic_resample(log_weights: torch.Tensor, count: int,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of ``count`` systematic-resampling draws from unnormalised log-weights.

    Each candidate is drawn ``floor(count w_i)`` or ``ceil(count w_i)`` times (the least
    variance of the resampling schemes), in random order.

    Examples
    --------
    >>> import torch
    >>> weights = torch.tensor([0.5, 0.25, 0.25]).log()
    >>> sorted(systematic_resample(weights, 4, torch.Generator().manual_seed(0)).tolist())
    [0, 0, 1, 2]
    """
    weights = torch.softmax(log_weights.double(), dim=0)
    offset = torch.rand((), generator=generator, dtype=torch.float64)
    points = (offset + torch.arange(count, dtype=torch.float64)) / count
    cumulative = torch.cumsum(weights, dim=0)
    cumulative[-1] = 1.0  # rounding: every point falls below the last edge
    indices = torch.searchsorted(cumulative, points, right=True).clamp(max=len(weights) - 1)
    return indices[torch.randperm(count, generator=generator)]


def _log_likelihood(ensemble: torch.Tensor, observations: torch.Tensor,
                    operator: OperatorLike, obs_std: torch.Tensor | float) -> torch.Tensor:
    """Gaussian log-likelihood ``(members,)`` of each member (missing values skipped)."""
    problem = prepare_problem(ensemble, observations, operator, obs_std)
    predicted = problem.operator.apply(problem.ensemble)[0]
    residual = (predicted - problem.observations) * problem.inverse_std
    return -0.5 * (residual ** 2).sum(dim=-1)


def particle_start_cycle(
    filter: EnsembleFilter,  # noqa: A002 - the natural name, as in cycle
    advance: Advance,
    candidates: torch.Tensor,
    observation_times: Sequence[float] | torch.Tensor,
    observations: torch.Tensor,
    operator: OperatorLike | Sequence[OperatorLike],
    obs_std: torch.Tensor | float,
    *,
    members: int,
    t0: float = 0.0,
    generator: torch.Generator | None = None,
    return_forecasts: bool = False,
    progress: bool | None = None,
) -> ParticleStartResult:
    """Cycle ``filter`` after a tempered particle start on ``candidates`` prior draws.

    Parameters
    ----------
    filter, advance, observation_times, observations, operator, obs_std
        As in :func:`~xldensf.filters.cycle` (one unbatched ensemble).
    candidates
        ``(n_candidates, n_state)`` draws from the prior at ``t0``, with
        ``n_candidates >= 2 * members``.
    members
        Ensemble size of the analyses (and of the filter after the handover).
    t0, generator, return_forecasts, progress
        As in :func:`~xldensf.filters.cycle`.

    Returns
    -------
    ParticleStartResult
        The analyses ``(n_cycles, members, n_state)`` (and forecasts), the handover cycle,
        ``beta`` there and the candidates' effective sample sizes.

    Raises
    ------
    ConfigurationError
        Fewer than ``2 * members`` candidates, or a batched ensemble.

    Examples
    --------
    A scalar random constant observed with noise: the weighted candidates carry the
    cycles while their effective size stays above ``members``.

    >>> import torch
    >>> from xldensf.filters import get_filter
    >>> generator = torch.Generator().manual_seed(0)
    >>> prior = torch.randn(4000, 1, generator=generator, dtype=torch.float64)
    >>> keep = lambda ensemble, start, duration: ensemble
    >>> result = particle_start_cycle(get_filter("etkf"), keep, prior, [1.0, 2.0, 3.0],
    ...     torch.full((3, 1), 0.5, dtype=torch.float64), torch.eye(1, dtype=torch.float64),
    ...     0.5, members=100, generator=generator)
    >>> result.analysis.shape, result.handover
    (torch.Size([3, 100, 1]), 3)
    """
    if candidates.ndim != 2:
        raise ConfigurationError(expected_found("candidates shape", "(n_candidates, n_state)",
                                                tuple(candidates.shape)))
    if candidates.shape[0] < 2 * members:
        raise ConfigurationError(expected_found(
            "particle start candidates", f">= 2 * members = {2 * members}",
            candidates.shape[0]))
    times = torch.as_tensor(observation_times, dtype=torch.float64)
    n_cycles = times.shape[0]
    # one row per cycle, a copy: the handover's row is rescaled below
    std = torch.broadcast_to(torch.as_tensor(obs_std, dtype=candidates.dtype),
                             observations.shape).clone()
    ensemble, time = candidates, float(t0)
    log_weights = torch.zeros(candidates.shape[0], dtype=torch.float64)
    analyses, forecasts, sizes = [], [], []
    handover, beta = n_cycles, 1.0
    for index, target in enumerate(times.tolist()):
        ensemble = advance(ensemble, time, target - time)
        time = target
        if return_forecasts:
            forecasts.append(ensemble[systematic_resample(log_weights, members, generator)])
        log_likelihood = _log_likelihood(ensemble, observations[index],
                                         per_cycle(operator, index, n_cycles),
                                         std[index]).double()
        if not torch.isfinite(log_likelihood).all():  # a candidate off the observations
            log_likelihood = torch.nan_to_num(log_likelihood, nan=-math.inf)
        beta = tempering_fraction(log_weights, log_likelihood, members)
        log_weights = log_weights + beta * log_likelihood
        sizes.append(effective_sample_size(log_weights))
        drawn = ensemble[systematic_resample(log_weights, members, generator)]
        if beta < 1.0:
            handover = index
            ensemble = drawn
            break
        analyses.append(drawn)
    if handover < n_cycles:
        std[handover] = std[handover] / math.sqrt(max(1.0 - beta, 1e-12))
        rest = cycle(filter, advance, ensemble, times[handover:], observations[handover:],
                     _slice_operators(operator, handover, n_cycles), std[handover:],
                     t0=float(times[handover]), generator=generator,
                     return_forecasts=return_forecasts, progress=progress)
        analyses.extend(rest.analysis)
        if return_forecasts:  # the handover's forecast is the candidates' before weighting
            forecasts.extend(rest.forecast[1:])
    return ParticleStartResult(times, torch.stack(analyses),
                               torch.stack(forecasts) if return_forecasts else None,
                               handover=handover, beta=beta, effective_sizes=tuple(sizes))


def _slice_operators(operator: OperatorLike | Sequence[OperatorLike], start: int,
                     count: int) -> OperatorLike | Sequence[OperatorLike]:
    """The operators of cycles ``start..`` (one operator for all cycles stays one)."""
    if isinstance(operator, (list, tuple)) and len(operator) == count:
        return list(operator[start:])
    return operator
