"""The ensemble score filter (EnSF) of Bao, Zhang & Zhang (CMAME 2024, arXiv 2309.00983).

A training-free diffusion model samples the posterior. Forward process on pseudo-time
``t in [0, 1]``: ``Z_t | Z_0 ~ N(alpha_t Z_0, beta_t^2 I)`` with

    alpha_t   = 1 - (1 - eps_alpha) t,        beta_t^2 = eps_beta + (1 - eps_beta) t,
    b(t)      = d log(alpha_t)/dt = -(1 - eps_alpha) / alpha_t,
    sigma^2(t) = d(beta_t^2)/dt - 2 b(t) beta_t^2.

Prior score, Monte Carlo over forecast members ``x_j`` (``prior_score="mixture"``, the
paper's form, over a random mini-batch of ``J`` members each step):

    S_prior(z, t) = - sum_j w_j (z - alpha_t x_j) / beta_t^2,
    w_j = softmax_j(-|z - alpha_t x_j|^2 / (2 beta_t^2)),

or ``prior_score="member"``: reverse particle ``m`` paired with member ``m`` (``J = 1``, as
in the public reference codes). Posterior score with damping ``h(t) = 1 - t``:

    S_post = S_prior + h(t) J_H(z)^T R^-1 (y - H(z))

(the likelihood gradient by :func:`torch.autograd.grad` for a callable ``H``). Samplers,
``K`` steps from ``t = 1`` (``Z_1 ~ N(0, I)``) to ``t = 0`` with ``dt = 1/K``:

    "sde" (Euler-Maruyama): Z <- Z - dt [b Z - sigma^2 S_post] + sqrt(dt) sigma xi,
    "ode" (probability flow): Z <- Z - dt [b Z - sigma^2 S_post / 2].

Memory is ``O(members x n_state)`` (plus ``members x J`` mixture weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ParameterError, check_name, expected_found
from .base import EnsembleFilter, ObservationOperator, Problem

__all__ = ["EnSF", "PRIOR_SCORES", "SAMPLERS"]

PRIOR_SCORES = ("mixture", "member")
SAMPLERS = ("sde", "ode")


@dataclass(frozen=True)
class EnSF(EnsembleFilter):
    """Ensemble score filter.

    Parameters
    ----------
    inflation
        Multiplicative inflation of the analysis anomalies.
    steps
        ``K``, the number of reverse-time steps.
    eps_alpha, eps_beta
        Schedule constants: ``alpha_1 = eps_alpha``, ``beta_0^2 = eps_beta``.
    prior_score
        ``"mixture"`` (softmax over ``mixture_batch`` members) or ``"member"``.
    mixture_batch
        ``J``, members per step in the mixture score; ``None`` = all members.
    sampler
        ``"sde"`` (reverse SDE, Euler-Maruyama) or ``"ode"`` (probability flow).
    score_clip
        Clamp every score component to ``[-score_clip, score_clip]``; ``None`` = off.

    Examples
    --------
    >>> import torch
    >>> generator = torch.Generator().manual_seed(0)
    >>> truth = torch.linspace(-1.0, 1.0, 50, dtype=torch.float64)
    >>> prior = truth + 0.5 + 0.5 * torch.randn(20, 50, generator=generator,
    ...                                         dtype=torch.float64)
    >>> analysis = EnSF().analysis(prior, torch.atan(truth), torch.atan, 0.1, generator)
    >>> rmse = lambda ensemble: float((ensemble.mean(0) - truth).square().mean().sqrt())
    >>> rmse(analysis) < rmse(prior)   # arctan observations, gradient by autograd
    True
    """

    name = "ensf"
    steps: int = 100
    eps_alpha: float = 0.05
    eps_beta: float = 0.0
    prior_score: str = "member"
    mixture_batch: int | None = None
    sampler: str = "sde"
    score_clip: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_name("prior_score", self.prior_score, PRIOR_SCORES)
        check_name("sampler", self.sampler, SAMPLERS)
        if self.steps < 1:
            raise ParameterError(expected_found("steps", ">= 1", self.steps))
        if not (0 < self.eps_alpha < 1 and 0 <= self.eps_beta < 1):
            raise ParameterError(expected_found("(eps_alpha, eps_beta)",
                                                "0 < eps_alpha < 1, 0 <= eps_beta < 1",
                                                (self.eps_alpha, self.eps_beta)))
        if self.mixture_batch is not None and self.mixture_batch < 1:
            raise ParameterError(expected_found("mixture_batch", ">= 1 or None",
                                                self.mixture_batch))
        if self.score_clip is not None and not self.score_clip > 0:
            raise ParameterError(expected_found("score_clip", "> 0 or None", self.score_clip))

    # ------------------------------------------------------------------ schedule
    def schedule(self, t: float) -> tuple[float, float, float, float]:
        """``(alpha_t, beta_t^2, b(t), sigma^2(t))`` at pseudo-time ``t``.

        Examples
        --------
        >>> EnSF(eps_alpha=0.5, eps_beta=0.0).schedule(1.0)
        (0.5, 1.0, -1.0, 3.0)
        """
        alpha = 1.0 - (1.0 - self.eps_alpha) * t
        beta2 = self.eps_beta + (1.0 - self.eps_beta) * t
        drift = -(1.0 - self.eps_alpha) / alpha
        diffusion2 = (1.0 - self.eps_beta) - 2.0 * drift * beta2
        return alpha, beta2, drift, diffusion2

    def _prior_score(self, z: torch.Tensor, members: torch.Tensor, alpha: float, beta2: float,
                     generator: torch.Generator | None) -> torch.Tensor:
        if self.prior_score == "member":
            return -(z - alpha * members) / beta2
        count = members.shape[1]
        if self.mixture_batch is not None and self.mixture_batch < count:
            chosen = torch.randperm(count, generator=generator)[: self.mixture_batch]
            members = members[:, chosen.to(members.device)]
        centres = alpha * members                                        # (batch, J, d)
        squared = (z.square().sum(-1)[..., :, None] - 2 * z @ centres.transpose(-1, -2)
                   + centres.square().sum(-1)[..., None, :])           # (batch, M, J)
        weights = torch.softmax(-squared / (2 * beta2), dim=-1)
        return -(z - weights @ centres) / beta2

    def _analysis(self, problem: Problem, generator, state_positions, observation_positions):
        members = problem.ensemble
        operator: ObservationOperator = problem.operator
        dt = 1.0 / self.steps

        def noise() -> torch.Tensor:
            draw = torch.randn(members.shape, generator=generator, dtype=members.dtype,
                               device="cpu" if generator is None else generator.device)
            return draw.to(members.device)

        z = noise()
        for k in range(self.steps):
            t = 1.0 - k * dt
            alpha, beta2, drift, diffusion2 = self.schedule(t)
            score = self._prior_score(z, members, alpha, beta2, generator)
            score = score + (1.0 - t) * operator.log_likelihood_gradient(
                z, problem.observations, problem.inverse_std)
            if self.score_clip is not None:
                score = score.clamp(-self.score_clip, self.score_clip)
            if self.sampler == "sde":
                z = z - dt * (drift * z - diffusion2 * score) + (dt * diffusion2) ** 0.5 * noise()
            else:
                z = z - dt * (drift * z - 0.5 * diffusion2 * score)
        return z
