"""Adaptive additive model error estimated from the innovation statistics.

:class:`AdaptiveModelError` wraps any filter (anything with the ``analysis`` method of
:class:`~xldensf.filters.base.EnsembleFilter`) and, before each analysis, adds to the
forecast members centred Gaussian noise of covariance ``alpha Q``: ``Q = diag(scale ** 2)``
has a fixed shape (for a latent filter, the latent state's spread across the trained
parameter range, zero for the parameters), ``alpha`` is estimated from the innovations.
Where multiplicative inflation (:class:`~xldensf.filters.AdaptiveInflation`) can only
widen the spread the ensemble already has, an additive term restores spread that has
collapsed (a surrogate's error that the ensemble does not carry).

With the observation-space quantities whitened by ``R^-1/2`` (as in
:mod:`~xldensf.filters.inflation`), ``d`` the innovation of the forecast mean, ``S`` the
scaled forecast anomalies and ``G = R^-1/2 H Q H^T R^-1/2`` (``H`` the operator's
linearisation, estimated by ``probes`` draws of ``N(0, probe_step^2 Q)`` around the
forecast mean through the operator itself), a forecast whose error covariance is
``P + alpha Q`` has

    E[d^T d] = tr(S^T S) + alpha tr(G) + p.

One cycle's excess ``e = d^T d - p - tr(S^T S)`` is noisy (its variance under a perfect
model ``v = 2 tr((S S^T + I)^2)`` for Gaussian innovations), so the estimate pools the
cycles so far with a forgetting factor ``w`` (memory about ``1 / (1 - w)`` cycles) and
takes one standard error off as a one-sided lower bound, as the latent smoother's
calibration does (:func:`~xldensf.filters.envar_calibration.model_error_factor`):

    E_t = w E_{t-1} + e_t,   T_t = w T_{t-1} + tr(G_t),   V_t = w^2 V_{t-1} + v_t,
    alpha_t = max(0, (E_t - sqrt(V_t)) / T_t).

With a perfect model (and a right forecast spread) the excess is zero in expectation and
``alpha`` stays 0 most cycles; where the forecast spread is too small for its error it
rises (docs/twin.md, "Additive model error").

Examples
--------
>>> import torch
>>> from xldensf.filters import get_filter
>>> generator = torch.Generator().manual_seed(0)
>>> truth = torch.zeros(4, dtype=torch.float64)
>>> noisy = AdaptiveModelError(get_filter("etkf"), torch.ones(4, dtype=torch.float64))
>>> for _ in range(20):   # a collapsed forecast (spread 0.01) whose error is 1
...     forecast = truth + torch.randn(4, dtype=torch.float64, generator=generator) \\
...         + 0.01 * torch.randn(50, 4, dtype=torch.float64, generator=generator)
...     analysis = noisy.analysis(forecast, truth + 0.1 * torch.randn(
...         4, dtype=torch.float64, generator=generator), torch.eye(4, dtype=torch.float64),
...         0.1, generator)
>>> 0.5 < noisy.variances[-1] < 2.0
True
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import DataError, ParameterError, expected_found
from .inflation import innovation_inflation

__all__ = ["AdaptiveModelError", "DEFAULT_MODEL_ERROR_MEMORY", "DEFAULT_MODEL_ERROR_PROBES"]

#: Default forgetting factor of the pooled innovation excess (a memory of about ten cycles).
DEFAULT_MODEL_ERROR_MEMORY = 0.9
#: Default number of probe draws that estimate ``tr(G)`` (its relative sampling error is
#: about ``sqrt(2 / probes)`` for a rank-one ``G``, less for a wider one).
DEFAULT_MODEL_ERROR_PROBES = 64
#: Default standard errors taken off the pooled excess (a one-sided lower bound, as the
#: latent smoother's :data:`~xldensf.filters.envar_calibration._LOWER_BOUND_SE`).
DEFAULT_MODEL_ERROR_LOWER_BOUND_SE = 1.0
#: Default size of the probes relative to ``Q``'s standard deviations (small: the
#: operator's local linearisation, not its response to the whole prior spread).
DEFAULT_MODEL_ERROR_PROBE_STEP = 0.1


class AdaptiveModelError:
    """A filter whose forecast members receive additive noise ``N(0, alpha Q)`` before
    each analysis, ``alpha`` estimated from the innovations (module docstring).

    The object keeps the pooled statistics from cycle to cycle: use a new one for each
    assimilation.

    Parameters
    ----------
    kernel
        The filter run on the perturbed forecast.
    scale
        ``(n_state,)`` standard deviations of ``Q`` (its shape; zero for components that
        receive no noise, e.g. constant parameters).
    memory
        The forgetting factor ``w`` in ``(0, 1]`` (1: pool every cycle alike).
    probes
        Number of probe draws for ``tr(G)`` (at least 2).
    probe_step
        Size of the probes relative to ``scale``.
    lower_bound_se
        Standard errors of the pooled excess under a perfect model taken off (>= 0).
    seed
        Seed of the object's own generator for the probes and the noise: the kernel's
        generator is left alone, so a cycle with ``alpha = 0`` is the kernel's own analysis
        to the last bit.

    Attributes
    ----------
    variances
        ``alpha`` applied at each cycle so far (the mean over a batch).
    estimates
        Each cycle's single-cycle estimate ``e_t / tr(G_t)`` (diagnostics; may be < 0).

    Examples
    --------
    >>> import torch
    >>> from xldensf.filters import get_filter
    >>> noisy = AdaptiveModelError(get_filter("etkf"), torch.ones(3, dtype=torch.float64))
    >>> prior = torch.randn(100, 3, dtype=torch.float64)
    >>> noisy.analysis(prior, torch.zeros(3), torch.eye(3, dtype=torch.float64), 0.5).shape
    torch.Size([100, 3])
    >>> noisy.variances   # a prior as wide as its error: no model error
    [0.0]
    """

    def __init__(self, kernel: Any, scale: torch.Tensor, *,
                 memory: float = DEFAULT_MODEL_ERROR_MEMORY,
                 probes: int = DEFAULT_MODEL_ERROR_PROBES,
                 probe_step: float = DEFAULT_MODEL_ERROR_PROBE_STEP,
                 lower_bound_se: float = DEFAULT_MODEL_ERROR_LOWER_BOUND_SE,
                 seed: int = 0) -> None:
        scale = torch.as_tensor(scale)
        if scale.ndim != 1 or not bool(((scale >= 0) & torch.isfinite(scale)).all()) \
                or not bool((scale > 0).any()):
            raise DataError(expected_found("scale", "(n_state,) finite values >= 0, not all 0",
                                           tuple(scale.shape) if scale.ndim != 1
                                           else scale.tolist()[:5]))
        if not 0 < memory <= 1:
            raise ParameterError(expected_found("memory", "a number in (0, 1]", memory))
        if not (isinstance(probes, int) and probes >= 2):
            raise ParameterError(expected_found("probes", "an integer >= 2", probes))
        if not 0 < probe_step < math.inf:
            raise ParameterError(expected_found("probe_step", "a positive number", probe_step))
        if not 0 <= lower_bound_se < math.inf:
            raise ParameterError(expected_found("lower_bound_se", "a number >= 0",
                                                lower_bound_se))
        self.kernel, self.name = kernel, getattr(kernel, "name", type(kernel).__name__)
        self.scale, self.memory = scale, float(memory)
        self.probes, self.probe_step = probes, float(probe_step)
        self.lower_bound_se = float(lower_bound_se)
        self._generator = torch.Generator().manual_seed(int(seed))
        self._pooled: tuple[torch.Tensor, ...] | None = None  # E, T, V of the docstring
        self.variances: list[float] = []
        self.estimates: list[float] = []

    def _probe_trace(self, mean: torch.Tensor, observations: torch.Tensor, operator: Any,
                     obs_std: torch.Tensor | float) -> torch.Tensor:
        """``tr(G)`` ``(batch,)`` from probes around the forecast mean ``(batch, 1, n)``."""
        batch, _, n_state = mean.shape
        draws = torch.randn((batch, self.probes, n_state), generator=self._generator,
                            dtype=torch.float64).to(mean)
        step = self.probe_step * self.scale.to(mean)
        _, trace, _, _ = innovation_inflation(mean + draws * step, observations, operator,
                                              obs_std)
        return trace / self.probe_step ** 2

    def update(self, ensemble: torch.Tensor, observations: torch.Tensor, operator: Any,
               obs_std: torch.Tensor | float) -> torch.Tensor:
        """Pool this cycle's innovations; ``alpha`` ``(batch,)`` to apply to ``ensemble``."""
        # d^T d - p, tr(S^T S), tr((S^T S)^2), p: the excess and its perfect-model variance
        # 2 tr((S S^T + I)^2) = 2 (tr((S^T S)^2) + 2 tr(S^T S) + p)
        innovation, spread, spread_square, valid = innovation_inflation(
            ensemble, observations, operator, obs_std)
        excess = innovation - spread
        variance = 2 * (spread_square + 2 * spread + valid)
        mean = (ensemble if ensemble.ndim == 3 else ensemble[None]).mean(dim=1, keepdim=True)
        with torch.no_grad():
            trace = self._probe_trace(mean, observations, operator, obs_std)
        if self._pooled is None:
            self._pooled = tuple(torch.zeros_like(excess) for _ in range(3))
        pooled_excess, pooled_trace, pooled_variance = self._pooled
        w = self.memory
        self._pooled = (w * pooled_excess + excess, w * pooled_trace + trace,
                        w ** 2 * pooled_variance + variance)
        pooled_excess, pooled_trace, pooled_variance = self._pooled
        informative = pooled_trace > 0
        safe = torch.where(informative, pooled_trace, torch.ones_like(pooled_trace))
        alpha = torch.where(informative, (pooled_excess - self.lower_bound_se
                                         * pooled_variance.sqrt()) / safe, 0.0)
        alpha = alpha.clamp(min=0.0)
        self.variances.append(float(alpha.mean()))
        self.estimates.append(float((excess / torch.where(trace > 0, trace, 1.0)).mean()))
        return alpha

    def analysis(self, ensemble, observations, operator, obs_std, generator=None, **positions):
        alpha = self.update(ensemble, observations, operator, obs_std)
        if bool((alpha > 0).any()):
            batched = ensemble.ndim == 3
            members = ensemble if batched else ensemble[None]
            noise = torch.randn(members.shape, generator=self._generator,
                                dtype=torch.float64).to(members)
            n_members = members.shape[1]
            noise = (noise - noise.mean(dim=1, keepdim=True)) \
                * math.sqrt(n_members / (n_members - 1))
            std = alpha.to(members).sqrt()[:, None, None] * self.scale.to(members)
            members = members + noise * std
            ensemble = members if batched else members[0]
        return self.kernel.analysis(ensemble, observations, operator, obs_std, generator,
                                    **positions)
