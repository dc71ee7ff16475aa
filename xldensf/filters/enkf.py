"""The stochastic ensemble Kalman filter with perturbed observations.

Burgers, van Leeuwen & Evensen (1998); Evensen (2009). Each member is updated with its own
perturbed observation ``y + eps_m``, ``eps_m ~ N(0, R)``:

    x_m^a = x_m + K (y + eps_m - H(x_m)),   K = P H^T (H P H^T + R)^-1,

with ``P`` the ensemble covariance. It is computed in ensemble space (Woodbury identity),
with ``S = (H(E) - mean) R^-1/2``:

    K (.) R^1/2 = A^T (S S^T + (M - 1) I)^-1 S,

so the cost is ``O(M^2 (n_obs + n_state))`` and a missing observation (zero weight in
``R^-1/2``) drops out. As in DAPPER, the perturbations are centred over the members by
default (``center_perturbations``), so that the analysis mean is the Kalman update of the
forecast mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import EnsembleFilter, Problem, add_to_diagonal, mean_and_scaled_anomalies

__all__ = ["EnKF"]


@dataclass(frozen=True)
class EnKF(EnsembleFilter):
    """Stochastic EnKF with perturbed observations.

    Parameters
    ----------
    inflation
        Multiplicative inflation of the analysis anomalies (DAPPER's ``infl``).
    center_perturbations
        Subtract the ensemble mean of the observation perturbations (DAPPER's ``mean0``).

    Examples
    --------
    >>> import torch
    >>> generator = torch.Generator().manual_seed(0)
    >>> prior = torch.randn(50, 2, generator=generator, dtype=torch.float64)
    >>> analysis = EnKF().analysis(prior, torch.tensor([3.0, float("nan")]),
    ...                            torch.eye(2), 0.1, generator)
    >>> round(float(analysis[:, 0].mean()), 1)  # precise observation of 3 wins
    3.0
    """

    name = "enkf"
    center_perturbations: bool = True

    def _analysis(self, problem: Problem, generator, state_positions, observation_positions):
        ensemble = problem.ensemble
        observed = problem.operator.apply(ensemble)
        _, anomalies, scaled, _ = mean_and_scaled_anomalies(problem, observed)
        noise = torch.randn(observed.shape, generator=generator, dtype=observed.dtype,
                            device="cpu" if generator is None else generator.device)
        if noise.device != observed.device:
            noise = noise.to(observed.device)
        if self.center_perturbations:
            noise = noise - noise.mean(dim=1, keepdim=True)
        # Scaled innovations per member: (y + eps - H(x_m)) R^-1/2, eps = R^1/2 noise.
        scaled_innovations = ((problem.observations[:, None, :] - observed)
                              * problem.inverse_std[:, None, :] + noise
                              * (problem.inverse_std[:, None, :] > 0))
        members = ensemble.shape[1]
        gram = scaled @ scaled.transpose(-1, -2)
        factor = torch.linalg.cholesky(add_to_diagonal(gram, members - 1))
        # increments = (innov S^T C^-1) A, C symmetric positive definite.
        coefficients = torch.cholesky_solve(scaled @ scaled_innovations.transpose(-1, -2),
                                            factor)
        return torch.baddbmm(ensemble, coefficients.transpose(-1, -2), anomalies)
