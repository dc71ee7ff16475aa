"""The ensemble score filter (EnSF) of Bao, Zhang & Zhang (CMAME 2024, arXiv 2309.00983).

A training-free diffusion model samples the posterior. Forward process on pseudo-time
``t in [0, 1]``: ``Z_t | Z_0 ~ N(alpha_t Z_0, beta_t^2 I)`` with

    alpha_t   = 1 - (1 - eps_alpha) t,        beta_t^2 = eps_beta + (1 - eps_beta) t,
    b(t)      = d log(alpha_t)/dt = -(1 - eps_alpha) / alpha_t,
    sigma^2(t) = d(beta_t^2)/dt - 2 b(t) beta_t^2.

Prior scores (``prior_score``), from the forecast members ``x_j`` with mean ``m``, anomalies
``A = E - m`` and covariance ``C = A^T A / (M - 1) = V diag(s^2) V^T`` (thin SVD, rank
``k <= M - 1``, so memory stays ``O(members x n_state)``):

- ``"gaussian"`` (default): the score of ``N(alpha m, alpha^2 C + beta^2 I)``, the forward
  marginal of the Gaussian with the ensemble's moments (exact for a Gaussian prior),
  ``S = -[u_perp / beta^2 + (c / (alpha^2 s^2 + beta^2)) V^T]`` with ``u = z - alpha m``,
  ``c = u V`` and ``u_perp = u - c V^T``;
- ``"kernel"``: the mixture of ``N(m + a (x_j - m), h^2 C)`` (a kernel density estimate in the
  ensemble subspace, shrunk by ``a = sqrt(1 - h^2)`` to keep the ensemble's covariance,
  Silverman's ``h`` unless ``bandwidth`` is given), whose forward marginals are mixtures
  of ``N(alpha (m + a (x_j - m)), alpha^2 h^2 C + beta^2 I)``: analytic, with ``M x M``
  weights;
- ``"mixture"`` (the paper's form): softmax over a random mini-batch of ``J`` members,
  ``S = - sum_j w_j (z - alpha x_j) / beta^2``, ``w = softmax(-|z - alpha x_j|^2 / 2 beta^2)``;
- ``"member"``: reverse particle ``m`` paired with member ``m`` (``J = 1``, the public
  reference codes). Its exact reverse-time solution is the member itself: the update is a
  discretisation effect of the sampler (see :meth:`EnSF.paper`).

Likelihood scores (``likelihood``):

- ``"tweedie"`` (default): the likelihood of the denoised estimate. With the Tweedie mean
  ``xhat = (z + beta^2 S_prior) / alpha`` and the Gaussian-moment covariance of ``x_0``
  given ``z``, ``P_t = V diag(s^2 beta^2 / (alpha^2 s^2 + beta^2)) V^T``,

      S_lik = (d xhat / dz)^T J_H(xhat)^T (R + J P_t J^T)^-1 (y - H(xhat)),

  ``J V`` from the ensemble's observation anomalies (statistical linearisation, one
  operator pass per analysis; exact for a linear operator), the inverse by Woodbury in
  the ``k``-dimensional subspace. ``jacobian="ensemble"`` (default) uses the same ``J V``
  for ``J_H(xhat)^T`` (one forward operator pass per step, no autograd);
  ``jacobian="local"`` takes it at ``xhat`` by autograd. With the ``"gaussian"`` prior
  score and a linear operator this is the exact score of the diffused posterior: the
  sampler then targets the Kalman analysis of the ensemble's moments at any pseudo-time,
  and its stiffness is never above the prior's ``1 / beta^2``.
- ``"damped"`` (the paper's form): ``h(t) J_H(z)^T R^-1 (y - H(z))`` at the noisy particle,
  damping ``h(t) = 1 - t``.

The Jacobian products of a callable ``H`` come from :func:`torch.autograd.grad`.
Samplers, ``K`` steps from ``t = 1`` (``Z_1 ~ N(0, I)``) to ``t = 0`` on the grid
``t_k = (1 - k/K)^p`` (``p = time_power``; ``p = 1`` is the paper's ``dt = 1/K``):

    "sde" (Euler-Maruyama): Z <- Z - dt [b Z - sigma^2 S_post] + sqrt(dt) sigma xi,
    "ode" (probability flow): Z <- Z - dt [b Z - sigma^2 S_post / 2].

With ``center_noise`` the start and every increment ``xi`` are centred over the members
(and rescaled by ``sqrt(M / (M - 1))``), which removes the sampler's own Monte Carlo error
from the analysis mean of a linear-Gaussian problem.

Stability: along the stiffest direction the explicit step multiplies a perturbation by
``f_k = 1 - dt [b + sigma^2 kappa]`` (``1/2 sigma^2`` for the ODE), ``kappa`` the largest
curvature of ``-S_post``: ``1 / beta^2`` from the prior, plus ``h(t) lambda_max(J^T R^-1 J)``
for the damped likelihood (the Tweedie likelihood adds none for a linear-Gaussian
problem). Settings whose amplification over the remaining steps, ``max_k prod_{j>=k}
|f_j|``, exceeds :data:`MAX_GROWTH` are adapted (more steps, with a warning) or refused
(``on_unstable="raise"``), naming the minimum number of steps, or run as given
(``on_unstable="keep"``: the reference codes run their ``K`` steps whatever the curvature;
the EnSF paper's Lorenz-96 setting is unstable by this measure in its last steps, along the
components observed near ``arctan``'s steepest point, and is run so in
``benchmarks/ensf_lorenz96.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import FilterDivergenceError, ParameterError, check_name, expected_found, warn
from .base import EnsembleFilter, ObservationOperator, Problem
from .ensf_schedule import (
    MAX_ADAPTED_STEPS,
    MAX_GROWTH,
    log_growth,
    minimum_stable_steps,
    noise_schedule,
    silverman_bandwidth,
)

__all__ = ["EnSF", "PRIOR_SCORES", "LIKELIHOODS", "SAMPLERS", "PAPER_CASES",
           "PAPER_LATENT_SCALE", "PAPER_LATENT_OBS_STD", "minimum_stable_steps",
           "silverman_bandwidth"]

PRIOR_SCORES = ("gaussian", "kernel", "mixture", "member")
LIKELIHOODS = ("tweedie", "damped")
SAMPLERS = ("sde", "ode")
UNSTABLE_ACTIONS = ("adapt", "raise", "keep")
JACOBIANS = ("ensemble", "local")

#: ``eps_alpha`` of the LD-EnSF reference code per benchmark case (:meth:`EnSF.paper`).
PAPER_CASES = {"tsunami": 0.5, "atmosphere": 0.01, "kolmogorov": 0.01, "lorenz96": 0.01}
#: The reference code multiplies the latent state (and parameters) by this before the update.
PAPER_LATENT_SCALE = 100.0
#: Latent observation error standard deviation of the reference code, in scaled units.
PAPER_LATENT_OBS_STD = 0.1
#: Largest ``n_state x n_obs`` Jacobian formed densely for the stability check of a nonlinear
#: operator; larger ones use power iteration with Jacobian-vector products.
DENSE_JACOBIAN_ELEMENTS = 2**22
#: Largest state size for which the sampler of a linear problem (``"gaussian"`` prior
#: score, ``"tweedie"`` likelihood, ``jacobian="ensemble"``, a dense matrix operator, no
#: score clip) runs as one affine map per step (:meth:`EnSF._affine_steps`): its
#: ``n_state x n_state`` maps are then cheap, and the step is a few tensor operations
#: instead of some forty (docs/ldensf.md, "Speed").
AFFINE_STATE_LIMIT = 64


@dataclass
class _Moments:
    """The forecast ensemble's moments in its subspace (per batch element).

    ``mean`` (b, 1, d); ``basis`` V^T (b, k, d); ``variance`` s^2 (b, k); ``coordinates``
    of the members' anomalies (b, M, k); ``observed`` G = R^-1/2 J V diag(s) (b, n_obs, k)
    or ``None``.
    """

    mean: torch.Tensor
    basis: torch.Tensor
    variance: torch.Tensor
    coordinates: torch.Tensor
    observed: torch.Tensor | None
    #: ``G^T G`` (b, k, k), or ``None`` without ``observed``.
    observed_gram: torch.Tensor | None = None


def _ensemble_moments(problem: Problem, observed: bool) -> _Moments:
    ensemble = problem.ensemble
    members = ensemble.shape[1]
    mean = ensemble.mean(dim=1, keepdim=True)
    anomalies = (ensemble - mean) / math.sqrt(members - 1)
    left, singular, basis = torch.linalg.svd(anomalies, full_matrices=False)
    coordinates = left * singular[:, None, :] * math.sqrt(members - 1)
    gram = None
    if observed:
        projected = problem.operator.apply(ensemble)
        projected = (projected - projected.mean(dim=1, keepdim=True)) \
            * problem.inverse_std[:, None, :]
        gram = projected.transpose(-1, -2) @ left / math.sqrt(members - 1)
    return _Moments(mean, basis, singular.square(), coordinates, gram,
                    None if gram is None else gram.transpose(-1, -2) @ gram)


def _vector_jacobian(operator: ObservationOperator, state: torch.Tensor,
                     weights_of: object) -> tuple[torch.Tensor, torch.Tensor]:
    """``(H(state), J_H(state)^T w)`` with ``w = weights_of(H(state))`` (b, M, n_obs).

    One forward and one backward pass of the operator (linear ones included: the matrix
    product is differentiable).
    """
    with torch.enable_grad():
        leaf = state.detach().requires_grad_(True)
        observed = operator.apply(leaf)
        weights = weights_of(observed.detach())
        (gradient,) = torch.autograd.grad(observed, leaf, weights)
    return observed.detach(), gradient


@dataclass(frozen=True)
class EnSF(EnsembleFilter):
    """Ensemble score filter.

    The defaults (Gaussian prior score from the ensemble's moments, likelihood of the
    Tweedie estimate, centred sampler noise, a quadratic time grid)
    approach the Bayesian posterior; the reference code's configuration is :meth:`paper`.

    Parameters
    ----------
    inflation
        Multiplicative inflation of the analysis anomalies.
    steps
        ``K``, the number of reverse-time steps.
    eps_alpha, eps_beta
        Schedule constants: ``alpha_1 = eps_alpha``, ``beta_0^2 = eps_beta``.
    prior_score
        ``"gaussian"``, ``"kernel"``, ``"mixture"`` or ``"member"`` (module docstring).
    likelihood
        ``"tweedie"`` (likelihood of the denoised estimate) or ``"damped"`` (``(1 - t)``
        times the likelihood score at the noisy particle).
    mixture_batch
        ``J``, members per step in the ``"mixture"`` score; ``None`` = all members.
    bandwidth
        Kernel width ``h`` of the ``"kernel"`` score in units of the ensemble's spread
        (``0 < h < 1``); ``None`` = :func:`silverman_bandwidth`.
    sampler
        ``"sde"`` (reverse SDE, Euler-Maruyama) or ``"ode"`` (probability flow).
    score_clip
        Clamp every score component to ``[-score_clip, score_clip]``; ``None`` = off.
    center_noise
        Centre the start and the increments of the sampler's noise over the members.
    on_unstable
        ``"adapt"`` (more steps, with a warning) or ``"raise"`` (:class:`ParameterError`)
        when ``steps`` is too few for a stable explicit sampler; ``"keep"`` runs exactly
        ``steps`` without the check (as the reference codes do; no curvature estimate).
    memory_limit_gib
        Refuse analyses whose estimated working memory exceeds this many GiB.
    time_power
        Sampler times ``t_k = (1 - k / steps) ** time_power``: 1 is the uniform grid of the
        paper, larger values put more steps near ``t = 0`` where the scores are stiffest.
    jacobian
        Jacobian of the Tweedie likelihood: ``"ensemble"`` (the statistical linearisation
        ``J V`` from the members' observation anomalies, the same one used in
        ``J P_t J^T``; no autograd) or ``"local"`` (``J_H(xhat)^T`` by autograd).
    latent_scale, latent_obs_std
        Settings for a latent driver (the kernel does not read them): the factor applied
        to the latent state before the analysis and the latent observation error in
        scaled units (:meth:`paper` sets the reference code's values).

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
    prior_score: str = "gaussian"
    likelihood: str = "tweedie"
    mixture_batch: int | None = None
    bandwidth: float | None = None
    sampler: str = "sde"
    score_clip: float | None = None
    center_noise: bool = True
    on_unstable: str = "adapt"
    memory_limit_gib: float = 8.0
    latent_scale: float = 1.0
    latent_obs_std: float | None = None
    time_power: float = 2.0
    jacobian: str = "ensemble"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_name("prior_score", self.prior_score, PRIOR_SCORES)
        check_name("likelihood", self.likelihood, LIKELIHOODS)
        check_name("sampler", self.sampler, SAMPLERS)
        check_name("on_unstable", self.on_unstable, UNSTABLE_ACTIONS)
        check_name("jacobian", self.jacobian, JACOBIANS)
        if self.steps < 1:
            raise ParameterError(expected_found("steps", ">= 1", self.steps))
        if not (0 < self.eps_alpha < 1 and 0 <= self.eps_beta < 1):
            raise ParameterError(expected_found("(eps_alpha, eps_beta)",
                                                "0 < eps_alpha < 1, 0 <= eps_beta < 1",
                                                (self.eps_alpha, self.eps_beta)))
        if self.mixture_batch is not None and self.mixture_batch < 1:
            raise ParameterError(expected_found("mixture_batch", ">= 1 or None",
                                                self.mixture_batch))
        if self.bandwidth is not None and not 0 < self.bandwidth < 1:
            raise ParameterError(expected_found("bandwidth", "0 < h < 1 or None",
                                                self.bandwidth))
        if self.score_clip is not None and not self.score_clip > 0:
            raise ParameterError(expected_found("score_clip", "> 0 or None", self.score_clip))
        if not self.time_power >= 1:
            raise ParameterError(expected_found("time_power", ">= 1", self.time_power))
        if not self.memory_limit_gib > 0:
            raise ParameterError(expected_found("memory_limit_gib", "> 0",
                                                self.memory_limit_gib))

    @classmethod
    def paper(cls, case: str, **overrides: object) -> EnSF:
        """The LD-EnSF reference code's analysis for benchmark ``case``.

        Member-paired prior score, damped likelihood at the noisy particle, ``K = 100``
        Euler-Maruyama steps, ``eps_beta = 0``, ``eps_alpha`` 0.5 (tsunami) or 0.01
        (atmosphere, kolmogorov, lorenz96), no score clip, uncentred noise. The latent
        driver reads ``latent_scale`` (:data:`PAPER_LATENT_SCALE`) and ``latent_obs_std``
        (:data:`PAPER_LATENT_OBS_STD`). With the member score the exact reverse-time
        solution is the member itself, so the analysis is a nudge toward the observation
        whose strength is set by the step count (weaker for more steps), not a posterior.

        Parameters
        ----------
        case
            ``"tsunami"``, ``"atmosphere"``, ``"kolmogorov"`` or ``"lorenz96"``.
        **overrides
            Fields to change (for example ``steps``).

        Examples
        --------
        >>> preset = EnSF.paper("tsunami")
        >>> preset.eps_alpha, preset.prior_score, preset.latent_scale, preset.latent_obs_std
        (0.5, 'member', 100.0, 0.1)
        """
        settings: dict[str, object] = {
            "steps": 100, "eps_alpha": PAPER_CASES[check_name("case", case, PAPER_CASES)],
            "eps_beta": 0.0, "prior_score": "member", "likelihood": "damped",
            "sampler": "sde", "score_clip": None, "center_noise": False, "time_power": 1.0,
            "latent_scale": PAPER_LATENT_SCALE, "latent_obs_std": PAPER_LATENT_OBS_STD}
        settings.update(overrides)
        return cls(**settings)

    # ------------------------------------------------------------------ schedule
    def schedule(self, t: float) -> tuple[float, float, float, float]:
        """``(alpha_t, beta_t^2, b(t), sigma^2(t))`` at pseudo-time ``t``.

        Examples
        --------
        >>> EnSF(eps_alpha=0.5, eps_beta=0.0).schedule(1.0)
        (0.5, 1.0, -1.0, 3.0)
        """
        return noise_schedule(t, self.eps_alpha, self.eps_beta)

    def memory_estimate(self, batch: int, members: int, n_state: int, n_obs: int,
                        itemsize: int = 8) -> float:
        """Estimated working memory of one analysis in bytes (operator graph excluded).

        Examples
        --------
        >>> EnSF().memory_estimate(1, 20, 1000, 10) / 2 ** 20 < 2
        True
        """
        pairs = {"member": 0, "mixture": members * (self.mixture_batch or members),
                 "kernel": 2 * members * members, "gaussian": 0}[self.prior_score]
        rank = min(members, n_state)
        elements = (10 * members * n_state + 4 * members * n_obs + rank * (n_state + n_obs)
                    + pairs + rank * rank)
        return float(itemsize * batch * elements)

    def stable_steps(self, curvature: float = 0.0) -> int:
        """The sampler's step count: ``steps``, or more if ``steps`` is unstable.

        ``curvature`` is ``lambda_max(J^T R^-1 J)`` (read only by the damped likelihood).
        Adapting warns; with ``on_unstable="raise"`` a :class:`ParameterError` names the
        minimum steps; ``on_unstable="keep"`` always returns ``steps``.

        Examples
        --------
        >>> EnSF.paper("atmosphere").stable_steps(curvature=100.0)
        100
        >>> EnSF.paper("atmosphere", on_unstable="keep").stable_steps(curvature=1e4)
        100
        """
        if self.on_unstable == "keep":
            return self.steps
        damped, ode = self.likelihood == "damped", self.sampler == "ode"
        if log_growth(self.steps, self.eps_alpha, self.eps_beta, curvature, damped, ode,
                   self.time_power) <= math.log(MAX_GROWTH):
            return self.steps
        needed = minimum_stable_steps(self.eps_alpha, self.eps_beta, curvature, damped, ode,
                                      start=self.steps, power=self.time_power)
        message = expected_found(
            "EnSF steps", f">= {needed} for a stable explicit sampler at likelihood "
            f"curvature {curvature:.3g} (dt sigma^2 |curvature| too large)", self.steps)
        if self.on_unstable == "raise" or needed > MAX_ADAPTED_STEPS:
            raise ParameterError(message)
        warn(message + f"; using {needed} steps", UserWarning)
        return needed

    # ------------------------------------------------------------------ pieces
    def _check_memory(self, problem: Problem) -> None:
        batch, members, n_state = problem.ensemble.shape
        estimate = self.memory_estimate(batch, members, n_state, problem.observations.shape[-1],
                                        problem.ensemble.element_size())
        if estimate > self.memory_limit_gib * 2 ** 30:
            raise ParameterError(expected_found(
                "EnSF working memory", f"<= memory_limit_gib = {self.memory_limit_gib} GiB",
                f"about {estimate / 2 ** 30:.1f} GiB for batch {batch} x {members} members x "
                f"{n_state} state values ({self.prior_score} prior score)"))

    def _curvature(self, problem: Problem, iterations: int = 20) -> float:
        """``lambda_max(J^T R^-1 J)`` at each ensemble mean, the largest over the batch.

        Power iteration for a matrix, and for a callable (autograd Jacobian) whose Jacobian
        has more than :data:`DENSE_JACOBIAN_ELEMENTS` entries (Jacobian-vector products, no
        dense Jacobian); the operator's dense Jacobian otherwise (an operator with its own
        ``jacobian``, such as the surrogate's decoder, or a small callable)."""
        operator, weights = problem.operator, problem.inverse_std[:, None, :] ** 2
        point = problem.ensemble.mean(dim=1, keepdim=True)
        dense = (point.shape[-1] * problem.observations.shape[-1] <= DENSE_JACOBIAN_ELEMENTS
                 or type(operator).jacobian is not ObservationOperator.jacobian)
        if not operator.is_linear and dense:
            # the operator's own Jacobian (hand-written for the surrogate's decoder, autograd
            # otherwise): lambda_max(J^T R^-1 J) = sigma_max(R^-1/2 J)^2, one per problem
            return max(float(torch.linalg.matrix_norm(
                operator.jacobian(point[index, 0]) * problem.inverse_std[index][:, None],
                ord=2) ** 2) for index in range(point.shape[0]))
        vector = torch.randn(point.shape, generator=torch.Generator().manual_seed(0),
                             dtype=point.dtype).to(point.device)
        value = torch.zeros(point.shape[0], dtype=point.dtype, device=point.device)
        for _ in range(iterations):
            vector = vector / vector.norm(dim=-1, keepdim=True).clamp(min=1e-300)
            if operator.is_linear:
                scaled = operator.apply(vector) * weights
            else:  # J v at the mean by autograd (no dense Jacobian: memory O(n_state + n_obs))
                with torch.enable_grad():
                    _, tangent = torch.autograd.functional.jvp(operator.apply, point, vector)
                scaled = tangent * weights
            _, product = _vector_jacobian(operator, point, lambda _, scaled=scaled: scaled)
            value = (vector * product).sum(dim=(-1, -2))
            vector = product
        return float(value.max())

    def _prior(self, z: torch.Tensor, members: torch.Tensor, alpha: float, beta2: float,
               generator: torch.Generator | None, moments: _Moments | None,
               shrink: float) -> torch.Tensor:
        if self.prior_score == "member":  # -(z - alpha x_m) / beta^2, the same numbers
            return (members * alpha).sub_(z).div_(beta2)
        if self.prior_score == "mixture":
            count = members.shape[1]
            if self.mixture_batch is not None and self.mixture_batch < count:
                chosen = torch.randperm(count, generator=generator)[: self.mixture_batch]
                members = members[:, chosen.to(members.device)]
            centres = alpha * members                                        # (batch, J, d)
            squared = (z.square().sum(-1)[..., :, None] - 2 * z @ centres.transpose(-1, -2)
                       + centres.square().sum(-1)[..., None, :])           # (batch, M, J)
            weights = torch.softmax(-squared / (2 * beta2), dim=-1)
            return -(z - weights @ centres) / beta2
        basis = moments.basis                                                 # (b, k, d)
        offset = z - alpha * moments.mean
        coefficients = offset @ basis.transpose(-1, -2)                       # (b, M, k)
        perpendicular = offset - coefficients @ basis
        if self.prior_score == "gaussian":
            precision = 1.0 / (alpha ** 2 * moments.variance + beta2)
            return -(perpendicular / beta2 + (coefficients * precision[:, None, :]) @ basis)
        # kernel: components N(alpha (m + a q_j), alpha^2 h^2 C + beta^2 I), a = shrink
        width2 = 1.0 - shrink ** 2
        precision = 1.0 / (alpha ** 2 * width2 * moments.variance + beta2)  # (b, k)
        centres = alpha * shrink * moments.coordinates                        # (b, M, k)
        logits = ((coefficients * precision[:, None, :]) @ centres.transpose(-1, -2)
                  - 0.5 * (centres.square() * precision[:, None, :]).sum(-1)[:, None, :])
        weights = torch.softmax(logits, dim=-1)                               # (b, M, M)
        nearest = coefficients - weights @ centres
        return -(perpendicular / beta2 + (nearest * precision[:, None, :]) @ basis)

    def _tweedie(self, z: torch.Tensor, prior: torch.Tensor, alpha: float, beta2: float,
                 moments: _Moments, problem: Problem) -> torch.Tensor:
        """Likelihood score of the denoised estimate (module docstring)."""
        denoised = (z + beta2 * prior) / alpha
        damping = (beta2 / (alpha ** 2 * moments.variance + beta2)).sqrt()     # (b, k)
        inverse_std = problem.inverse_std[:, None, :]
        if self.jacobian == "ensemble":
            # (J V)^T w = diag(1/s) G^T R^1/2 w, w = R^-1/2 (I - O (O^T O + I)^-1 O^T) R^-1/2
            # (y - H(xhat)) with O = G D: in the k-dimensional subspace, m (I - D (D Q D +
            # I)^-1 D Q) with m = (y - H(xhat)) R^-1/2 G and Q = G^T G. No autograd, one
            # operator pass per step.
            gram = moments.observed_gram                                        # (b, k, k)
            small = torch.linalg.cholesky(
                damping[:, :, None] * gram * damping[:, None, :]
                + torch.eye(gram.shape[-1], dtype=z.dtype, device=z.device))
            solved = torch.cholesky_solve(damping[:, :, None] * gram, small)   # (b, k, k)
            transfer = torch.eye(gram.shape[-1], dtype=z.dtype, device=z.device) \
                - damping[:, :, None] * solved
            misfit = (problem.observations[:, None, :] - problem.operator.apply(denoised)) \
                * inverse_std
            projected = (misfit @ moments.observed) @ transfer                  # (b, M, k)
            gain = alpha * moments.variance.sqrt() / (alpha ** 2 * moments.variance + beta2)
            return (projected * gain[:, None, :]) @ moments.basis
        observed = moments.observed * damping[:, None, :]                      # (b, n, k)
        small = torch.linalg.cholesky(
            observed.transpose(-1, -2) @ observed
            + torch.eye(observed.shape[-1], dtype=z.dtype, device=z.device))

        def weights_of(predicted: torch.Tensor) -> torch.Tensor:
            misfit = (problem.observations[:, None, :] - predicted) * inverse_std
            solved = torch.cholesky_solve(observed.transpose(-1, -2) @ misfit.transpose(-1, -2),
                                          small)                               # (b, k, M)
            return (misfit - (observed @ solved).transpose(-1, -2)) * inverse_std

        _, gradient = _vector_jacobian(problem.operator, denoised, weights_of)
        gain = alpha * moments.variance / (alpha ** 2 * moments.variance + beta2)
        return ((gradient @ moments.basis.transpose(-1, -2)) * gain[:, None, :]) @ moments.basis

    def _affine(self, problem: Problem, moments: _Moments | None) -> bool:
        """Whether every sampler step is an affine map of ``z`` that
        :meth:`_affine_steps` can form (a linear problem with a small state)."""
        operator = problem.operator
        return (self.prior_score == "gaussian" and self.likelihood == "tweedie"
                and self.jacobian == "ensemble" and self.score_clip is None
                and moments is not None and moments.observed is not None
                and operator.is_linear and not operator.is_sparse
                and problem.ensemble.shape[-1] <= AFFINE_STATE_LIMIT
                and problem.ensemble.device.type != "mps")  # float64 maps

    def _affine_steps(self, problem: Problem, moments: _Moments, times: list[float]
                      ) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
        """The sampler steps of a linear problem as ``z <- z A_k + c_k + sigma_k xi``.

        With the ``"gaussian"`` prior score ``S_prior = -(z - alpha m) P`` (``P = (I - V^T
        V) / beta^2 + V^T diag(1 / (alpha^2 s^2 + beta^2)) V``), the Tweedie mean ``xhat =
        z D + d0`` (``D = (I - beta^2 P) / alpha``, ``d0 = beta^2 m P``) and a matrix
        operator, the likelihood score of :meth:`_tweedie` is ``(y - xhat H^T) C`` with ``C
        = diag(1 / std) G T diag(gain) V`` (its per-step subspace factors), so the whole
        score and the step are affine in ``z``. All steps at once, in float64: ``A``
        ``(steps, b, d, d)``, ``c`` ``(steps, b, 1, d)`` and the noise scales ``sigma_k``.
        Equal to the step-by-step sampler up to rounding.
        """
        wide, device = torch.float64, problem.ensemble.device
        steps = len(times) - 1
        t = torch.tensor(times[:-1], dtype=wide, device=device)
        dt = t - torch.tensor(times[1:], dtype=wide, device=device)
        alpha, beta2, drift, diffusion2 = noise_schedule(t, self.eps_alpha, self.eps_beta)
        weight = diffusion2 if self.sampler == "sde" else 0.5 * diffusion2
        alpha, beta2 = alpha[:, None, None], beta2[:, None, None]          # (S, 1, 1)
        basis, variance = moments.basis.to(wide), moments.variance.to(wide)  # (b,k,d), (b,k)
        mean, gram = moments.mean.to(wide), moments.observed_gram.to(wide)  # (b,1,d), (b,k,k)
        observed = moments.observed.to(wide) * problem.inverse_std.to(wide)[:, :, None]
        identity_d = torch.eye(basis.shape[-1], dtype=wide, device=device)
        identity_k = torch.eye(basis.shape[-2], dtype=wide, device=device)
        precision = 1.0 / (alpha * alpha * variance + beta2)                # (S, b, k)
        prior = ((identity_d - basis.transpose(-1, -2) @ basis) / beta2[..., None]
                 + (basis.transpose(-1, -2) * precision[:, :, None, :]) @ basis)  # (S,b,d,d)
        damping = (beta2 * precision).sqrt()                                # (S, b, k)
        small = torch.linalg.cholesky(damping[..., :, None] * gram * damping[..., None, :]
                                      + identity_k)
        transfer = identity_k - damping[..., :, None] * torch.cholesky_solve(
            damping[..., :, None] * gram, small)                            # (S, b, k, k)
        gain = alpha * variance.sqrt() * precision                          # (S, b, k)
        likelihood = (observed @ transfer * gain[..., None, :]) @ basis     # (S, b, n, d)
        matrix = problem.operator.matrix.to(wide)                           # (n, d)/(b, n, d)
        denoise = (identity_d - beta2[..., None] * prior) / alpha[..., None]  # (S, b, d, d)
        observe = matrix.transpose(-1, -2) @ likelihood                     # (S, b, d, d)
        score = -prior - denoise @ observe
        offset = (alpha[..., None] * mean @ prior
                  + problem.observations.to(wide)[:, None, :] @ likelihood
                  - beta2[..., None] * (mean @ prior) @ observe)           # (S, b, 1, d)
        rate = (dt * weight)[:, None, None, None]
        maps = (1.0 - dt * drift)[:, None, None, None] * identity_d + rate * score
        scales = (dt * diffusion2).sqrt().tolist() if self.sampler == "sde" else [0.0] * steps
        return maps, rate * offset, scales

    def _analysis(self, problem: Problem, generator, state_positions, observation_positions):
        members = problem.ensemble
        count = members.shape[1]
        self._check_memory(problem)
        damped = self.likelihood == "damped"
        checked = damped and self.on_unstable != "keep"
        steps = self.stable_steps(self._curvature(problem) if checked else 0.0)
        moments = None
        if self.prior_score in ("gaussian", "kernel") or not damped:
            moments = _ensemble_moments(problem, observed=not damped)
        shrink = 1.0
        if self.prior_score == "kernel":
            h = self.bandwidth or silverman_bandwidth(count, min(count - 1, members.shape[2]))
            shrink = (1.0 - h ** 2) ** 0.5
        times = [(1.0 - k / steps) ** self.time_power for k in range(steps + 1)]
        rescale = (count / (count - 1)) ** 0.5

        def noise() -> torch.Tensor:
            draw = torch.randn(members.shape, generator=generator, dtype=members.dtype,
                               device="cpu" if generator is None else generator.device)
            draw = draw.to(members.device)
            if self.center_noise:
                draw = (draw - draw.mean(dim=1, keepdim=True)) * rescale
            return draw

        z = noise()
        if self._affine(problem, moments):
            maps, offsets, scales = self._affine_steps(problem, moments, times)
            z = z.to(torch.float64)
            for k in range(steps):
                z = torch.baddbmm(offsets[k], z, maps[k])
                if scales[k]:
                    z.add_(noise(), alpha=scales[k])
            z = z.to(members.dtype)
        else:
            # In place on tensors made here (z, score, the step and the noise): the same
            # operations in the same order as the out-of-place expressions in the comments,
            # so the same numbers, without allocating member-sized tensors per step.
            for k in range(steps):
                t, dt = times[k], times[k] - times[k + 1]
                alpha, beta2, drift, diffusion2 = self.schedule(t)
                score = self._prior(z, members, alpha, beta2, generator, moments, shrink)
                if damped:  # score + (1 - t) grad log p(y | z)
                    score.add_(problem.operator.log_likelihood_gradient(
                        z, problem.observations, problem.inverse_std).mul_(1.0 - t))
                else:
                    score.add_(self._tweedie(z, score, alpha, beta2, moments, problem))
                if self.score_clip is not None:
                    score.clamp_(-self.score_clip, self.score_clip)
                # z - dt (b z - sigma^2 S) [+ sqrt(dt sigma^2) xi]; sigma^2 S / 2 for the ODE
                score.mul_(diffusion2 if self.sampler == "sde" else 0.5 * diffusion2)
                z.sub_((z * drift).sub_(score).mul_(dt))
                if self.sampler == "sde":
                    z.add_(noise().mul_((dt * diffusion2) ** 0.5))
        if not math.isfinite(float(z.sum())):
            raise FilterDivergenceError(expected_found(
                "EnSF analysis", "finite values", f"NaN or Inf after {steps} steps"))
        return z
