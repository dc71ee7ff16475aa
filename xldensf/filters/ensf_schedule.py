"""The noise schedule of the EnSF sampler and the stability of its explicit steps.

The reverse-time sampler of :class:`~xldensf.filters.ensf.EnSF` runs on the times
``t_k = (1 - k / steps) ** power`` with ``alpha(t) = 1 - (1 - eps_alpha) t`` and
``beta^2(t) = eps_beta + (1 - eps_beta) t``; an explicit step multiplies a perturbation
along the stiffest direction by ``1 - dt (b + sigma^2 kappa)``. :func:`minimum_stable_steps`
finds the fewest steps whose product of those factors stays below :data:`MAX_GROWTH`
(docs/filters.md); :func:`silverman_bandwidth` is the kernel prior score's default width.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["noise_schedule", "minimum_stable_steps", "silverman_bandwidth", "MAX_ADAPTED_STEPS",
           "MAX_GROWTH"]

#: Most sampler steps ``on_unstable="adapt"`` may use before refusing.
MAX_ADAPTED_STEPS = 100_000
#: Largest amplification of a perturbation along the stiffest direction that counts as
#: stable (the product of the step factors over the remaining steps).
MAX_GROWTH = 10.0


def silverman_bandwidth(members: int, dimension: int) -> float:
    """Silverman's rule for a Gaussian kernel in ``dimension`` dimensions, capped below 1.

    ``h = (4 / ((dimension + 2) members)) ** (1 / (dimension + 4))``, in units of the
    ensemble's standard deviation.

    Examples
    --------
    >>> round(silverman_bandwidth(100, 1), 3)
    0.422
    """
    h = (4.0 / ((dimension + 2) * members)) ** (1.0 / (dimension + 4))
    return min(h, 0.99)


def noise_schedule(t: Any, eps_alpha: float, eps_beta: float) -> tuple[Any, Any, Any, Any]:
    """``(alpha_t, beta_t^2, b(t), sigma^2(t))`` at pseudo-time ``t`` (a float or a tensor).

    ``alpha = 1 - (1 - eps_alpha) t``, ``beta^2 = eps_beta + (1 - eps_beta) t``, the drift
    ``b = -(1 - eps_alpha) / alpha`` and ``sigma^2 = (1 - eps_beta) - 2 b beta^2``.

    Examples
    --------
    >>> noise_schedule(1.0, 0.5, 0.0)
    (0.5, 1.0, -1.0, 3.0)
    """
    alpha = 1.0 - (1.0 - eps_alpha) * t
    beta2 = eps_beta + (1.0 - eps_beta) * t
    drift = -(1.0 - eps_alpha) / alpha
    diffusion2 = (1.0 - eps_beta) - 2.0 * drift * beta2
    return alpha, beta2, drift, diffusion2


def _schedule_arrays(steps: int, eps_alpha: float, eps_beta: float, power: float = 1.0
                     ) -> tuple[torch.Tensor, ...]:
    """``(t, dt, alpha, beta^2, b, sigma^2)`` at the ``steps`` sampler times (float64).

    The times are ``t_k = (1 - k / steps) ** power``, ``dt_k = t_k - t_{k+1}``.
    """
    grid = (1.0 - torch.arange(steps + 1, dtype=torch.float64) / steps) ** power
    t, dt = grid[:-1], grid[:-1] - grid[1:]
    return (t, dt, *noise_schedule(t, eps_alpha, eps_beta))


def log_growth(steps: int, eps_alpha: float, eps_beta: float, curvature: float,
            damped: bool, ode: bool, power: float = 1.0) -> float:
    """``log max_k prod_{j >= k} |1 - dt_j (b_j + sigma_j^2 kappa_j)|`` over the steps."""
    t, dt, _, beta2, drift, diffusion2 = _schedule_arrays(steps, eps_alpha, eps_beta, power)
    kappa = 1.0 / beta2 + ((1.0 - t) * curvature if damped else 0.0)
    weight = 0.5 if ode else 1.0
    logs = (1.0 - dt * (drift + weight * diffusion2 * kappa)).abs().log()
    return float(torch.flip(torch.cumsum(torch.flip(logs, [0]), 0), [0]).max())


def minimum_stable_steps(eps_alpha: float, eps_beta: float, curvature: float,
                         damped: bool = True, ode: bool = False, start: int = 10,
                         power: float = 1.0) -> int:
    """The fewest sampler steps, at least ``start``, whose explicit updates are all stable.

    Parameters
    ----------
    eps_alpha, eps_beta
        Schedule constants.
    curvature
        Largest eigenvalue of ``J^T R^-1 J`` (the likelihood's curvature).
    damped
        Whether the likelihood score is the damped one at the noisy particle (its
        curvature adds to the prior's); the Tweedie score does not add to it.
    ode
        Probability-flow sampler (half the score weight).
    start
        Smallest step count considered.
    power
        Time grid ``t_k = (1 - k / steps) ** power``.

    Examples
    --------
    >>> minimum_stable_steps(0.01, 0.0, 100.0)   # the reference code's latent settings
    74
    >>> minimum_stable_steps(0.01, 0.0, 400.0)   # sigma_obs 0.05 instead of 0.1
    285
    """
    def stable(steps: int) -> bool:
        return (log_growth(steps, eps_alpha, eps_beta, curvature, damped, ode, power)
                <= math.log(MAX_GROWTH))

    # Stability is not monotone in the step count at a handful of steps (the first step
    # has no likelihood weight): search upward from ``start``.
    high = max(1, start)
    while not stable(high):
        high *= 2
        if high > 4 * MAX_ADAPTED_STEPS:
            return high
    low = max(start, high // 2) - 1
    while high - low > 1:  # stable(high); not stable(low) or low below start
        middle = (low + high) // 2
        low, high = (low, middle) if stable(middle) else (middle, high)
    return high
