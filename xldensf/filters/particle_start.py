"""A tempered particle start for cycling filters with a cheap forecast.

The first analyses of a filter that starts from a broad prior are where it is most easily
lost: with few stations the likelihood of the source or parameters is multimodal (wave
arrival times, phases), and a Gaussian analysis (an ensemble Kalman filter, or the
default EnSF with its Gaussian prior score) of a broad prior locks onto the wrong mode
and never recovers. Where a forecast costs microseconds (a latent model), the early,
broad posterior can instead be represented exactly by importance weights on many
candidates drawn from the prior:

1. ``candidates`` prior draws are advanced to each observation time and weighted by the
   Gaussian likelihood of its observations (a bootstrap particle filter: exact for a
   deterministic forecast);
2. each cycle's likelihood is added in tempered fractions ``beta`` chosen by bisection so
   that the weights keep an effective sample size above a target; each cycle's analysis
   is ``members`` draws from the weighted candidates;
3. with plain candidates (importance weights only, ``start="weights"`` of the latent
   filters) the target is ``members``, and at the first cycle that needs ``beta < 1``
   the candidates are resampled to ``members`` members; the cycling filter analyses the
   remaining fraction ``1 - beta`` of that cycle's likelihood (its observation error
   divided by ``sqrt(1 - beta)``), then cycles as usual: the tempered likelihoods
   multiply to the full one, so no observation is used twice;
4. with a :class:`CandidatePrior` (resample-move, Chopin 2002; the latent filters'
   default ``start="particles"``) the target is a fraction of the candidates, and after
   each tempered step the candidates are resampled and moved by Metropolis steps in the
   prior's base space (a random walk, and a share of independent prior draws that can
   find a mode the candidates lost), each proposal replayed from ``t0``. So the
   candidates follow the posterior through the multimodal first cycles instead of
   thinning out on the prior's draws. They are handed over to the filter after a cycle
   that needed no move (or, as moves grow costlier with each cycle, any cycle from the
   fourth on) when the next cycles' observations are nearly linear in the state across
   them (:func:`observation_nonlinearity`): where a Gaussian analysis loses little.

:func:`particle_start_cycle` runs this in front of :func:`~xldensf.filters.cycle` and
returns its :class:`~xldensf.filters.CyclingResult` with the cycle of the handover and
the fraction ``beta`` there (docs/ldensf.md, "First cycles").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import ConfigurationError, expected_found
from .base import EnsembleFilter, OperatorLike, prepare_problem
from .cycling import Advance, CyclingResult, cycle, per_cycle

__all__ = ["particle_start_cycle", "ParticleStartResult", "CandidatePrior",
           "effective_sample_size", "tempering_fraction", "systematic_resample",
           "observation_nonlinearity"]

#: Bisection steps of :func:`tempering_fraction` (``beta`` to 2**-30), and the most
#: tempering steps of one cycle in the resample-move start.
_BISECTIONS = 30
#: Draws of the weighted candidates on which the handover test fits its linear model.
_CHECK_DRAWS = 512


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


def _distinct_rows(ensemble: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct rows of ``ensemble`` ``(n, d)`` and the inverse index (``unique[inverse] ==
    ensemble``).

    Rows are grouped by a fixed linear key (a 1-D sort, much cheaper than
    ``torch.unique(dim=0)``'s row sort; docs/ldensf.md "Speed") and the grouping is checked
    exactly; a key shared by different rows, or a NaN, falls back to
    ``torch.unique(dim=0)``.

    Examples
    --------
    >>> import torch
    >>> rows = torch.tensor([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0]])
    >>> unique, inverse = _distinct_rows(rows)
    >>> unique.shape[0], torch.equal(unique[inverse], rows)
    (2, True)

    Two different rows with the same key (its weights are ``sqrt(1), ..., sqrt(4)``, so
    both keys are 2) are kept apart by the check:

    >>> clash = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    >>> _distinct_rows(clash)[0].shape[0]
    2
    """
    device = ensemble.device
    weights = torch.arange(1, ensemble.shape[1] + 1, dtype=torch.float64, device=device).sqrt()
    keys, inverse = torch.unique(ensemble.double() @ weights, return_inverse=True)
    first = torch.empty(len(keys), dtype=torch.long, device=device).scatter_(
        0, inverse, torch.arange(ensemble.shape[0], device=device))
    unique = ensemble[first]
    if torch.equal(unique[inverse], ensemble):
        return unique, inverse
    return torch.unique(ensemble, dim=0, return_inverse=True)


def _whitened_residuals(ensemble: torch.Tensor, observations: torch.Tensor,
                        operator: OperatorLike, obs_std: torch.Tensor | float,
                        repeated: bool = True) -> torch.Tensor:
    """``(members, n_obs)`` residuals ``(H(x) - y) / std`` (zero where a value is missing).

    With ``repeated``, repeated members (resampled candidates: about a third of them in a
    cycle, half of the handover check's draws) go through the operator once.
    """
    if repeated:
        unique, inverse = _distinct_rows(ensemble)
        if 2 <= unique.shape[0] < ensemble.shape[0]:
            return _whitened_residuals(unique, observations, operator, obs_std,
                                       repeated=False)[inverse]
    problem = prepare_problem(ensemble, observations, operator, obs_std)
    predicted = problem.operator.apply(problem.ensemble)[0]
    return (predicted - problem.observations) * problem.inverse_std


def _log_likelihood(residuals: torch.Tensor) -> torch.Tensor:
    """Gaussian log-likelihood ``(members,)`` from whitened residuals (``-inf``: off the data)."""
    log_likelihood = -0.5 * (residuals.double() ** 2).sum(dim=-1)
    return torch.nan_to_num(log_likelihood, nan=-math.inf)


@dataclass(frozen=True)
class CandidatePrior:
    """Prior draws in a base space that the particle start can rejuvenate (resample-move).

    With a deterministic forecast the state at every time is a function of the state at
    ``t0``, and that of a few base variables (for a latent model: its parameters). Given
    the map and the prior's support, the particle start keeps ``len(draws)`` candidates
    through the first cycles: when the weights degenerate it resamples and moves the
    candidates by random-walk Metropolis steps in the base space (each proposal replayed
    from ``t0`` through the cycles so far), so the candidates follow the posterior
    instead of thinning out on the prior's draws.

    Attributes
    ----------
    draws
        ``(n_candidates, n_base)`` draws from the prior.
    initial_state
        ``initial_state(base) -> (n, n_state)``: the state at ``t0`` of base values.
    lower, upper
        ``(n_base,)`` bounds of the prior's support, or ``None`` (unbounded); the proposals
        are reflected at them.
    log_density
        ``log_density(base) -> (n,)``: the prior's log-density up to a constant, or
        ``None`` for a flat prior within the bounds (a uniform box).
    sample
        ``sample(n, generator) -> (n, n_base)``: fresh prior draws, or ``None``. With it, a
        share of the Metropolis proposals are independent prior draws (global moves that
        can reach a mode the candidates have lost); without it, random-walk moves only.
    """

    draws: torch.Tensor
    initial_state: Callable[[torch.Tensor], torch.Tensor]
    lower: torch.Tensor | None = None
    upper: torch.Tensor | None = None
    log_density: Callable[[torch.Tensor], torch.Tensor] | None = None
    sample: Callable[[int, torch.Generator | None], torch.Tensor] | None = None

    def log_prior(self, base: torch.Tensor) -> torch.Tensor:
        """``(n,)`` log prior density (zero for a flat prior)."""
        if self.log_density is None:
            return torch.zeros(base.shape[0], dtype=torch.float64)
        return self.log_density(base).double()

    def reflect(self, base: torch.Tensor) -> torch.Tensor:
        """``base`` folded back into ``[lower, upper]`` (a symmetric proposal stays symmetric)."""
        if self.lower is None or self.upper is None:
            return base
        lower, width = self.lower.to(base), (self.upper - self.lower).to(base)
        folded = torch.remainder(base - lower, 2 * width)
        return lower + width - (folded - width).abs()


@dataclass
class _Candidates:
    """The weighted candidates of the particle start at the current cycle."""

    base: torch.Tensor          # (n, n_base) base values (the states without moves)
    states: torch.Tensor        # (n, n_state) at the current time
    past: torch.Tensor          # (n,) log-likelihood of the completed cycles
    residuals: torch.Tensor     # (n, n_obs) whitened residuals of the current cycle
    log_weights: torch.Tensor   # (n,)

    def take(self, indices: torch.Tensor) -> None:
        """Keep the candidates ``indices`` with equal weights (after resampling)."""
        self.base, self.states = self.base[indices], self.states[indices]
        self.past, self.residuals = self.past[indices], self.residuals[indices]
        self.log_weights = torch.zeros(len(indices), dtype=torch.float64)


def observation_nonlinearity(states: torch.Tensor, residuals: torch.Tensor,
                             log_weights: torch.Tensor) -> float:
    """Mean variance, in observation-error units, of the whitened predictions that a linear
    function of the state does not explain across the weighted ensemble.

    Zero for a linear observation operator; much below one means a Gaussian (Kalman-type)
    analysis of these observations loses little against the exact one.

    Examples
    --------
    >>> import torch
    >>> states = torch.randn(500, 2, generator=torch.Generator().manual_seed(0),
    ...                      dtype=torch.float64)
    >>> linear = states @ torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    >>> round(observation_nonlinearity(states, linear, torch.zeros(500)), 6)
    0.0
    >>> observation_nonlinearity(states, 3 * states ** 2, torch.zeros(500)) > 1
    True
    """
    weights = torch.softmax(log_weights.double(), dim=0)
    keep = torch.isfinite(residuals).all(dim=-1) & (weights > 0)
    weights, x, y = weights[keep], states[keep].double(), residuals[keep].double()
    root = weights.sqrt()[:, None]
    design = torch.cat([torch.ones_like(x[:, :1]), x - (weights[:, None] * x).sum(0)], dim=1)
    solution = torch.linalg.lstsq(root * design, root * y).solution
    unexplained = y - design @ solution
    return float((weights[:, None] * unexplained ** 2).sum(0).mean())


def particle_start_cycle(
    filter: EnsembleFilter,  # noqa: A002 - the natural name, as in cycle
    advance: Advance,
    candidates: torch.Tensor | CandidatePrior,
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
    resample_fraction: float = 0.125,
    move_steps: int = 2,
    global_fraction: float = 0.2,
    linear_tolerance: float = 0.05,
    lookahead: int = 5,
    move_cycles: int = 4,
    early_rejection: bool = True,
) -> ParticleStartResult:
    """Cycle ``filter`` after a tempered particle start on ``candidates`` prior draws.

    Parameters
    ----------
    filter, advance, observation_times, observations, operator, obs_std
        As in :func:`~xldensf.filters.cycle` (one unbatched ensemble).
    candidates
        ``(n_candidates, n_state)`` draws from the prior at ``t0`` (importance weights
        only: the handover comes at the first cycle whose whole likelihood would leave
        them an effective size below ``members``), or a :class:`CandidatePrior`
        (resample-move, below); ``n_candidates >= 2 * members``.
    members
        Ensemble size of the analyses (and of the filter after the handover).
    t0, generator, return_forecasts, progress
        As in :func:`~xldensf.filters.cycle`.
    resample_fraction
        Resample-move: each cycle's likelihood is added in tempered steps that keep an
        effective size of at least this fraction of the candidates (and ``members``);
        after each step the candidates are resampled and moved.
    move_steps
        Metropolis steps per move: random-walk proposals in the base space (the
        covariance of the candidates, its scale adapted towards an acceptance of 0.3),
        each replayed from ``t0`` (``advance`` must be deterministic).
    global_fraction
        Share of the proposals that are independent prior draws (with
        :attr:`CandidatePrior.sample`).
    linear_tolerance, lookahead, move_cycles
        The handover: after a cycle that needed no move (or any cycle from ``move_cycles
        - 1`` on: a move replays every cycle so far, so late moves cost most), if the
        observations of the next ``lookahead`` cycles are nearly linear in the forecast
        state across the candidates (:func:`observation_nonlinearity` ``<=
        linear_tolerance``), ``members`` resampled candidates go to the filter, which
        analyses every later cycle.
    early_rejection
        Stop replaying a proposal once its log-likelihood over the cycles replayed so far
        rules out its acceptance (each cycle's term is at most 0, so every decision is the
        same: ``False`` gives the same chain with more operator passes).

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
    movable = isinstance(candidates, CandidatePrior)
    prior = candidates if movable else None
    initial = prior.initial_state(prior.draws) if movable else candidates
    if initial.ndim != 2:
        raise ConfigurationError(expected_found("candidates shape", "(n_candidates, n_state)",
                                                tuple(initial.shape)))
    count = initial.shape[0]
    if count < 2 * members:
        raise ConfigurationError(expected_found(
            "particle start candidates", f">= 2 * members = {2 * members}", count))
    times = torch.as_tensor(observation_times, dtype=torch.float64)
    n_cycles = times.shape[0]
    # one row per cycle, a copy: the handover's row is rescaled below
    std = torch.broadcast_to(torch.as_tensor(obs_std, dtype=initial.dtype),
                             observations.shape).clone()

    def residuals_at(states: torch.Tensor, index: int, repeated: bool = True) -> torch.Tensor:
        return _whitened_residuals(states, observations[index],
                                   per_cycle(operator, index, n_cycles), std[index], repeated)

    def replay(base: torch.Tensor, index: int, threshold: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """States at cycle ``index``, past log-likelihood and that cycle's residuals of the
        rows of ``base`` whose log-likelihood can still exceed ``threshold``, and those
        rows' indices.

        Early rejection (Solonen et al. 2012): each cycle's log-likelihood is at most 0,
        so once a row's sum over the cycles replayed so far is at most its ``threshold``
        the whole sum is too; the row is dropped from the later cycles' decoder passes.
        """
        states, time = prior.initial_state(base), float(t0)
        past = torch.zeros(base.shape[0], dtype=torch.float64)
        alive = torch.arange(base.shape[0])
        for cycle_index in range(index + 1):
            target = float(times[cycle_index])
            states, time = advance(states, time, target - time), target
            residuals = residuals_at(states, cycle_index, repeated=False)  # fresh proposals
            if cycle_index < index:
                past = past + _log_likelihood(residuals)
                if not early_rejection:
                    continue
                kept = past > threshold[alive]
                if not bool(kept.all()):
                    states, past, alive = states[kept], past[kept], alive[kept]
                    residuals = residuals[kept]
                if not len(alive):  # every proposal rejected: nothing left to decode
                    break
        return states, past, residuals, alive

    target_size = max(members, count * resample_fraction) if movable else members
    state = _Candidates(prior.draws if movable else initial, initial,
                        torch.zeros(count, dtype=torch.float64), None,
                        torch.zeros(count, dtype=torch.float64))
    scale = 2.38 / math.sqrt(prior.draws.shape[1]) if movable else 0.0
    analyses, forecasts, sizes = [], [], []
    handover, beta, time, partial = n_cycles, 1.0, float(t0), False
    for index, target in enumerate(times.tolist()):
        state.states, time = advance(state.states, time, target - time), target
        if return_forecasts:
            forecasts.append(state.states[systematic_resample(state.log_weights, members,
                                                              generator)])
        state.residuals = residuals_at(state.states, index)
        log_likelihood = _log_likelihood(state.residuals)
        beta, moved = 0.0, False
        for _ in range(_BISECTIONS if movable else 1):  # tempering steps of this cycle
            step = (1 - beta) * tempering_fraction(state.log_weights,
                                                   (1 - beta) * log_likelihood, target_size)
            state.log_weights = state.log_weights + step * log_likelihood
            beta = 1.0 if step >= 1 - beta - 1e-12 else beta + step
            if not movable or beta == 1.0:  # the rest of the cycle keeps the target size
                break
            state.take(systematic_resample(state.log_weights, count, generator))
            scale = _move(state, prior, replay, index, beta, scale, move_steps,
                          global_fraction, generator)
            log_likelihood, moved = _log_likelihood(state.residuals), True
        sizes.append(effective_sample_size(state.log_weights))
        drawn = state.states[systematic_resample(state.log_weights, members, generator)]
        if beta < 1.0:  # the filter analyses the rest of this cycle
            handover, ensemble, partial = index, drawn, True
            break
        state.past = state.past + log_likelihood
        analyses.append(drawn)
        if movable and (not moved or index + 1 >= move_cycles) and index + 1 < n_cycles \
                and _nearly_linear(
                state, index, lookahead, linear_tolerance, advance, residuals_at, times,
                generator):  # the filter takes the next cycles
            handover, ensemble, beta = index + 1, drawn, 0.0
            break
    if handover < n_cycles:
        std[handover] = std[handover] / math.sqrt(max(1.0 - beta, 1e-12))
        rest = cycle(filter, advance, ensemble, times[handover:], observations[handover:],
                     _slice_operators(operator, handover, n_cycles), std[handover:],
                     t0=time, generator=generator, return_forecasts=return_forecasts,
                     progress=progress)
        analyses.extend(rest.analysis)
        if return_forecasts:  # a partly weighted cycle's forecast is the candidates'
            forecasts.extend(rest.forecast[1:] if partial else rest.forecast)
    return ParticleStartResult(times, torch.stack(analyses),
                               torch.stack(forecasts) if return_forecasts else None,
                               handover=handover, beta=beta, effective_sizes=tuple(sizes))


def _nearest_values(base: torch.Tensor, values: torch.Tensor, factor: torch.Tensor
                    ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``points -> values`` of the nearest ``base`` row in the metric whitened by the
    Cholesky ``factor`` of the base covariance (the cheap first stage of :func:`_move`)."""
    def whiten(points: torch.Tensor) -> torch.Tensor:
        return torch.linalg.solve_triangular(factor, points.double().T, upper=False).T

    reference = whiten(base)

    def nearest(points: torch.Tensor) -> torch.Tensor:
        return values[torch.cdist(whiten(points), reference).min(dim=1).indices]

    return nearest


def _move(state: _Candidates, prior: CandidatePrior, replay, index: int, beta: float,
          scale: float, steps: int, global_fraction: float,
          generator: torch.Generator | None) -> float:
    """Delayed-acceptance Metropolis steps on the resampled candidates; returns the adapted
    scale.

    The target is the prior times the likelihood of the cycles before ``index`` and the
    fraction ``beta`` of cycle ``index``; the proposal covariance is ``scale**2`` times the
    candidates' base covariance, and ``scale`` is adapted towards an acceptance of 0.3.
    Delayed acceptance (Christen and Fox 2005): a proposal is first screened with the
    tempered log-likelihood of its nearest candidate in the other half of the candidates
    (no replay; each half moves in turn, so its screen is fixed while it moves), and only
    those that pass are replayed from ``t0`` and accepted with the ratio of exact to
    screened likelihood ratios: the chain keeps the exact target, and the replays shrink to
    the screened proposals. A replay stops early for a proposal whose likelihood over the
    cycles replayed so far already rules out its acceptance (early rejection: the
    remaining cycles can only lower it).
    """
    base = state.base.double()
    covariance = torch.cov(base.T).reshape(base.shape[1], base.shape[1])
    jitter = 1e-12 * torch.eye(base.shape[1], dtype=torch.float64) * (1 + covariance.diag().max())
    factor = torch.linalg.cholesky(covariance + jitter)
    current = state.past + beta * _log_likelihood(state.residuals)  # tempered log-likelihood
    current_prior = prior.log_prior(state.base)
    count = base.shape[0]
    halves = torch.arange(count) % 2 == 0  # resampled candidates come in random order
    for _ in range(steps):
        noise = torch.randn(base.shape, generator=generator, dtype=torch.float64)
        proposal = prior.reflect(state.base + (scale * noise @ factor.T).to(state.base))
        independent = torch.zeros(count, dtype=torch.bool)
        if prior.sample is not None and global_fraction > 0:
            independent = torch.rand(count, generator=generator) < global_fraction
            proposal[independent] = prior.sample(int(independent.sum()), generator).to(proposal)
        proposed_prior = prior.log_prior(proposal)
        uniform = torch.rand(2, count, generator=generator, dtype=torch.float64)
        accept = torch.zeros(count, dtype=torch.bool)
        for half in (halves, ~halves):
            screen = _nearest_values(state.base[~half], current[~half], factor)
            rows = torch.nonzero(half).flatten()
            screened, proposed_screened = screen(state.base[rows]), screen(proposal[rows])
            # an independent prior draw's acceptance is the likelihood ratio alone
            log_ratio = proposed_screened - screened + torch.where(
                independent[rows], 0.0, proposed_prior[rows] - current_prior[rows])
            passed = torch.log(uniform[0, rows]) < log_ratio
            rows, screened, proposed_screened = (rows[passed], screened[passed],
                                                 proposed_screened[passed])
            if not len(rows):
                continue
            # accepted iff the exact tempered log-likelihood exceeds this threshold
            threshold = torch.log(uniform[1, rows]) + proposed_screened + current[rows] \
                - screened
            states, past, residuals, alive = replay(proposal[rows], index, threshold)
            rows, threshold = rows[alive], threshold[alive]
            proposed = past + beta * _log_likelihood(residuals)
            kept = proposed > threshold
            rows = rows[kept]
            state.base[rows], state.states[rows] = proposal[rows], states[kept]
            state.past[rows], state.residuals[rows] = past[kept], residuals[kept]
            current[rows], current_prior[rows] = proposed[kept], proposed_prior[rows]
            accept[rows] = True
        rate = float(accept[~independent].double().mean()) if (~independent).any() else 0.3
        scale = scale * math.exp(rate - 0.3)
    return scale


def _nearly_linear(state: _Candidates, index: int, lookahead: int, tolerance: float,
                   advance: Advance, residuals_at, times: torch.Tensor,
                   generator: torch.Generator | None, size: int = _CHECK_DRAWS) -> bool:
    """Whether the observations of the ``lookahead`` cycles after ``index`` are nearly
    linear in the state across ``size`` draws of the weighted candidates at cycle
    ``index`` (their forecasts only: no data is used)."""
    drawn = systematic_resample(state.log_weights, min(size, len(state.log_weights)), generator)
    states, time = state.states[drawn], float(times[index])
    equal = torch.zeros(len(drawn), dtype=torch.float64)
    for ahead in range(index + 1, min(index + 1 + lookahead, len(times))):
        target = float(times[ahead])
        states, time = advance(states, time, target - time), target
        if observation_nonlinearity(states, residuals_at(states, ahead), equal) > tolerance:
            return False
    return True


def _slice_operators(operator: OperatorLike | Sequence[OperatorLike], start: int,
                     count: int) -> OperatorLike | Sequence[OperatorLike]:
    """The operators of cycles ``start..`` (one operator for all cycles stays one)."""
    if isinstance(operator, (list, tuple)) and len(operator) == count:
        return list(operator[start:])
    return operator
