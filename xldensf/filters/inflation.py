"""Adaptive multiplicative inflation estimated from the innovation statistics.

:class:`AdaptiveInflation` wraps any filter (anything with the ``analysis`` method of
:class:`~xldensf.filters.base.EnsembleFilter`, the wrappers of
:mod:`~xldensf.filters.wrappers` included) and, before each analysis, multiplies the
forecast anomalies by a factor estimated from that cycle's innovations. The estimate is
the one of Li, Kalnay & Miyoshi (QJRMS 2009) and Miyoshi (MWR 2011), after Desroziers et
al. (QJRMS 2005): with the observation-space quantities whitened by ``R^-1/2``,

    d = R^-1/2 (y - mean_j H(x_j)),      S = R^-1/2 (H(x_j) - mean_j H(x_j)) / sqrt(M - 1),

the innovation of a forecast whose covariance is right up to a variance factor
``lambda`` has ``E[d^T d] = lambda tr(S^T S) + p`` (``p`` valid observations), so

    lambda_obs = (d^T d - p) / tr(S^T S),
    var(lambda_obs) = 2 (lambda^2 tr((S^T S)^2) + 2 lambda tr(S^T S) + p) / tr(S^T S)^2

(the variance exact for Gaussian innovations; Miyoshi's equal-eigenvalue approximation of
it is too small when ``S`` has low rank, as with few latent components). One cycle's
estimate is noisy, so ``lambda`` is itself filtered: a Gaussian prior (the previous
cycle's estimate, its variance grown by ``drift_std ** 2`` per cycle, a random walk) is
combined with ``lambda_obs`` by the product of Gaussians (Miyoshi 2011, eq. 5), and the
result kept in ``bounds`` (squared: the bounds are factors on standard deviations, as
every ``inflation`` of the library). With a perfect model the estimate stays near 1;
where the forecast spread is too small for its error (model error, a sampler that
contracts too much) it rises.

Examples
--------
>>> import torch
>>> from xldensf.filters import get_filter
>>> generator = torch.Generator().manual_seed(0)
>>> truth = torch.zeros(4, dtype=torch.float64)
>>> adaptive = AdaptiveInflation(get_filter("etkf"))
>>> for _ in range(20):   # the forecast spread 0.1, its error 1: too small
...     forecast = truth + torch.randn(4, dtype=torch.float64, generator=generator) \\
...         + 0.1 * torch.randn(50, 4, dtype=torch.float64, generator=generator)
...     analysis = adaptive.analysis(forecast, truth + 0.1 * torch.randn(
...         4, dtype=torch.float64, generator=generator), torch.eye(4, dtype=torch.float64),
...         0.1)
>>> bool(adaptive.factor > 3.0)
True
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import ParameterError, expected_found
from .base import inflate, mean_and_scaled_anomalies, prepare_problem

__all__ = [
    "AdaptiveInflation",
    "innovation_inflation",
    "DEFAULT_INFLATION_BOUNDS",
    "DEFAULT_INFLATION_DRIFT_STD",
    "DEFAULT_INFLATION_INITIAL_STD",
]

#: Default bounds of the adaptive factor on the forecast's standard deviations: never a
#: deflation (a single cycle's estimate below 1 is mostly noise), at most 10x (the fixed
#: ``inflation`` setting's own upper limit).
DEFAULT_INFLATION_BOUNDS = (1.0, 10.0)
#: Default standard deviation of the first cycle's prior on the variance factor
#: ``lambda`` (mean 1): broad, so that the first innovations set the level.
DEFAULT_INFLATION_INITIAL_STD = 1.0
#: Default growth of the prior's standard deviation on ``lambda`` per cycle (a random
#: walk): with one cycle's estimate of standard deviation ``sigma``, the filtered factor
#: averages over about ``sigma / drift_std`` cycles (a few to ten here).
DEFAULT_INFLATION_DRIFT_STD = 0.1
#: Least variance factor the filtered estimate may take (it stays positive).
_LEAST_VARIANCE_FACTOR = 1e-2


def innovation_inflation(ensemble: torch.Tensor, observations: torch.Tensor, operator: Any,
                         obs_std: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor,
                                                                 torch.Tensor, torch.Tensor]:
    """The innovation statistics of one cycle: ``(d^T d - p, tr(S^T S), tr((S^T S)^2), p)``.

    ``ensemble`` is ``(members, n_state)`` or ``(batch, members, n_state)``; each result is
    ``(batch,)`` (``(1,)`` without a batch axis). Missing observations (NaN) do not count.
    ``lambda_obs`` is the first over the second (module docstring).

    Examples
    --------
    >>> import torch
    >>> excess, trace, _, _ = innovation_inflation(torch.tensor([[0.0], [2.0]]),
    ...                                         torch.tensor([3.0]), torch.eye(1), 1.0)
    >>> (excess / trace).tolist()   # d = 2, d^2 - 1 = 3, spread^2 = 2
    [1.5]
    """
    problem = prepare_problem(ensemble, observations, operator, obs_std)
    with torch.no_grad():
        _, _, scaled, innovation = mean_and_scaled_anomalies(problem)
        wide = scaled.to(torch.float64) / math.sqrt(scaled.shape[1] - 1)
        valid = (problem.inverse_std > 0).sum(dim=1).to(torch.float64)
        excess = innovation.to(torch.float64).square().sum(dim=1) - valid
        trace = wide.square().sum(dim=(1, 2))
        gram = wide @ wide.transpose(1, 2)  # (batch, members, members): tr(G^2) = |G|_F^2
        return excess, trace, gram.square().sum(dim=(1, 2)), valid


class AdaptiveInflation:
    """A filter whose forecast anomalies are inflated, before each analysis, by a factor
    estimated from the innovation statistics (module docstring).

    The object keeps the estimate from cycle to cycle: use a new one for each
    assimilation (:func:`~xldensf.filters.cycle` and
    :func:`~xldensf.filters.particle_start_cycle` call its ``analysis`` once per cycle).

    Parameters
    ----------
    kernel
        The filter run on the inflated forecast (its own ``inflation`` still applies to
        its analysis anomalies; give it 1.0 for the adaptive factor alone).
    initial
        The factor on standard deviations before the first cycle (the prior's mean).
    initial_std
        Standard deviation of the first prior on the variance factor ``lambda``.
    drift_std
        Growth per cycle of the prior's standard deviation on ``lambda``.
    bounds
        ``(lower, upper)`` of the factor on standard deviations.

    Attributes
    ----------
    factors
        The factor on standard deviations applied at each cycle so far.
    estimates
        Each cycle's single-cycle estimate ``sqrt(max(lambda_obs, 0))`` (diagnostics).

    Examples
    --------
    >>> import torch
    >>> from xldensf.filters import get_filter
    >>> generator = torch.Generator().manual_seed(1)
    >>> adaptive = AdaptiveInflation(get_filter("ensf", steps=20))
    >>> prior = torch.randn(100, 3, generator=generator, dtype=torch.float64)
    >>> adaptive.analysis(prior, torch.zeros(3), torch.eye(3, dtype=torch.float64), 0.5,
    ...                   generator).shape, len(adaptive.factors)
    (torch.Size([100, 3]), 1)
    """

    def __init__(self, kernel: Any, *, initial: float = 1.0,
                 initial_std: float = DEFAULT_INFLATION_INITIAL_STD,
                 drift_std: float = DEFAULT_INFLATION_DRIFT_STD,
                 bounds: tuple[float, float] = DEFAULT_INFLATION_BOUNDS) -> None:
        lower, upper = (float(value) for value in bounds)
        if not 0 < lower <= upper < math.inf:
            raise ParameterError(expected_found("bounds", "0 < lower <= upper < inf",
                                                tuple(bounds)))
        if not lower <= initial <= upper:
            raise ParameterError(expected_found("initial", f"a factor in [{lower}, {upper}]",
                                                initial))
        for name, value in (("initial_std", initial_std), ("drift_std", drift_std)):
            if not 0 <= value < math.inf:
                raise ParameterError(expected_found(name, "a finite number >= 0", value))
        if initial_std == 0 and drift_std == 0:
            raise ParameterError(expected_found("initial_std, drift_std", "not both 0 (the "
                                                "factor would never change)", (0, 0)))
        self.kernel, self.name = kernel, kernel.name
        self.bounds = (lower, upper)
        self.drift_std = float(drift_std)
        self._mean: torch.Tensor | float = float(initial) ** 2  # lambda, a variance factor
        self._variance: torch.Tensor | float = float(initial_std) ** 2
        self.factors: list[float] = []
        self.estimates: list[float] = []

    @property
    def factor(self) -> float:
        """The factor on standard deviations the next cycle starts from (in the bounds;
        the mean over a batch)."""
        return float(torch.as_tensor(self._mean).sqrt().clamp(*self.bounds).mean())

    def update(self, ensemble: torch.Tensor, observations: torch.Tensor, operator: Any,
               obs_std: torch.Tensor | float) -> torch.Tensor:
        """Update the estimate with this cycle's innovations; the factor on standard
        deviations ``(batch,)`` to apply to the forecast ``ensemble``."""
        excess, trace, trace_square, valid = innovation_inflation(ensemble, observations, operator,
                                                           obs_std)
        prior_mean = torch.as_tensor(self._mean, dtype=torch.float64).expand_as(excess)
        prior_variance = torch.as_tensor(self._variance, dtype=torch.float64).expand_as(
            excess) + (self.drift_std ** 2 if self.factors else 0.0)
        informative = trace > 0
        safe = torch.where(informative, trace, torch.ones_like(trace))
        estimate = excess / safe
        variance = 2 * (prior_mean.square() * trace_square + 2 * prior_mean * trace + valid) \
            / safe.square()
        gain = torch.where(informative, prior_variance / (prior_variance + variance), 0.0)
        lower, upper = self.bounds
        # the estimate itself is kept unbiased (only positive and below the upper bound);
        # the factor applied is kept in the bounds
        mean = (prior_mean + gain * (estimate - prior_mean)).clamp(_LEAST_VARIANCE_FACTOR,
                                                                  upper ** 2)
        self._mean, self._variance = mean, (1 - gain) * prior_variance
        factor = mean.sqrt().clamp(lower, upper)
        self.factors.append(float(factor.mean()))
        self.estimates.append(float(estimate.clamp(min=0).sqrt().mean()))
        return factor

    def analysis(self, ensemble, observations, operator, obs_std, generator=None, **positions):
        factor = self.update(ensemble, observations, operator, obs_std)
        if ensemble.ndim == 3:
            mean = ensemble.mean(dim=1, keepdim=True)
            inflated = mean + factor.to(ensemble)[:, None, None] * (ensemble - mean)
        else:
            inflated = inflate(ensemble, float(factor[0]))
        return self.kernel.analysis(inflated, observations, operator, obs_std, generator,
                                    **positions)
