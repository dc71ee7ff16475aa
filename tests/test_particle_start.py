"""The tempered particle start (xldensf.filters.particle_start) against exact posteriors."""

import pytest
import torch

from xldensf.errors import ConfigurationError
from xldensf.filters import CandidatePrior, get_filter, particle_start_cycle
from xldensf.filters.particle_start import (
    effective_sample_size,
    observation_nonlinearity,
    systematic_resample,
    tempering_fraction,
)

F64 = torch.float64


def keep(ensemble, start, duration):
    """A persistent state: the filtering posterior is the static Bayes posterior."""
    return ensemble


def _gaussian_prior(count, dimension, seed):
    return torch.randn(count, dimension, generator=torch.Generator().manual_seed(seed),
                       dtype=F64)


def test_systematic_resampling_draws_each_candidate_in_proportion():
    weights = torch.tensor([0.1, 0.6, 0.3], dtype=F64)
    indices = systematic_resample(weights.log(), 1000, torch.Generator().manual_seed(0))
    counts = torch.bincount(indices, minlength=3)
    # systematic resampling: each count is floor or ceil of 1000 w_i, no sampling noise
    assert ((counts - 1000 * weights).abs() <= 1).all(), counts


def test_tempering_keeps_the_target_effective_size():
    log_likelihood = -0.5 * (torch.linspace(-4, 4, 2001, dtype=F64) / 0.05) ** 2
    beta = tempering_fraction(torch.zeros(2001, dtype=F64), log_likelihood, 300)
    # bisection to 2**-30: the effective size at beta is the target to a fraction of one
    assert 0 < beta < 1
    assert effective_sample_size(beta * log_likelihood) == pytest.approx(300, abs=0.5)
    assert tempering_fraction(torch.zeros(10, dtype=F64), torch.zeros(10, dtype=F64), 5) == 1.0


@pytest.mark.parametrize("obs_std", [1.0, 0.05])
def test_linear_gaussian_analysis_is_the_kalman_posterior(obs_std):
    """Prior N(0, I_3), two components observed three times; exact posterior by Kalman.

    obs_std 1: the candidates carry every cycle (no handover); 0.05: the handover happens
    at the first cycle with beta < 1 and the ETKF (exact for linear-Gaussian given the
    moments) analyses the rest of the likelihood, so the result is still the posterior
    if and only if no observation is counted twice.
    """
    operator = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], dtype=F64)
    observations = torch.tensor([[0.8, -0.4], [0.7, -0.6], [0.9, -0.5]], dtype=F64)
    members = 400
    result = particle_start_cycle(get_filter("etkf"), keep, _gaussian_prior(8000, 3, 0),
                                  [1.0, 2.0, 3.0], observations, operator, obs_std,
                                  members=members, generator=torch.Generator().manual_seed(1))
    precision = torch.eye(3, dtype=F64) + 3 * operator.T @ operator / obs_std**2
    covariance = torch.linalg.inv(precision)
    mean = covariance @ operator.T @ observations.sum(0) / obs_std**2
    final = result.analysis[-1]
    std = covariance.diagonal().sqrt()
    # Monte Carlo error of the mean of 400 draws of an ESS-400 importance sample: about
    # 0.07 posterior std; 0.25 allows 3.5 standard errors. Spread: within 20 %.
    assert ((final.mean(0) - mean).abs() / std).max() < 0.25, (final.mean(0), mean)
    ratio = final.std(0) / std
    assert ((ratio > 0.8) & (ratio < 1.2)).all(), ratio
    assert result.analysis.shape == (3, members, 3)
    if obs_std == 1.0:
        assert result.handover == 3 and result.beta == 1.0
    else:
        assert result.handover == 0 and 0 < result.beta < 1


def test_bimodal_likelihood_keeps_both_modes():
    """y = x^2 + noise with x ~ U(-1, 1): the posterior has modes at +-sqrt(y)."""
    generator = torch.Generator().manual_seed(0)
    prior = 2 * torch.rand(8000, 1, generator=generator, dtype=F64) - 1
    square = lambda ensemble: ensemble ** 2  # noqa: E731 - the observation operator
    observations = torch.full((4, 1), 0.25, dtype=F64)
    result = particle_start_cycle(get_filter("etkf"), keep, prior, [1.0, 2.0, 3.0, 4.0],
                                  observations, square, 0.05, members=200,
                                  generator=generator)
    final = result.analysis[-1, :, 0]
    positive = float((final > 0).double().mean())
    # symmetric posterior: each mode holds half the members (binomial sd 0.035 at 200)
    assert 0.35 < positive < 0.65, positive
    assert (final.abs() - 0.5).abs().max() < 0.1  # every member near a mode
    # the prior start's ETKF linearises through the ensemble: cov(x, x^2) = 0 for the
    # symmetric prior, so it hardly moves the members and few lie near a mode (uniform: 20 %)
    etkf = get_filter("etkf").analysis(prior[:200], observations[0], square, 0.05, generator)
    assert float(((etkf.abs() - 0.5).abs() < 0.1).double().mean()) < 0.5


def test_forecasts_have_the_analysis_shape():
    result = particle_start_cycle(get_filter("etkf"), keep, _gaussian_prior(400, 2, 0),
                                  [1.0, 2.0], torch.zeros(2, 2, dtype=F64),
                                  torch.eye(2, dtype=F64), 0.01, members=50,
                                  return_forecasts=True)
    assert result.forecast.shape == result.analysis.shape == (2, 50, 2)
    assert len(result.effective_sizes) == result.handover + 1


def test_too_few_candidates_are_refused():
    with pytest.raises(ConfigurationError, match="2 \\* members"):
        particle_start_cycle(get_filter("etkf"), keep, _gaussian_prior(30, 2, 0), [1.0],
                             torch.zeros(1, 2, dtype=F64), torch.eye(2, dtype=F64), 1.0,
                             members=20)


def _gaussian_candidates(count, dimension, seed):
    """A standard normal prior as a CandidatePrior (the state is the base itself)."""
    return CandidatePrior(
        _gaussian_prior(count, dimension, seed), lambda base: base.clone(),
        log_density=lambda base: -0.5 * (base ** 2).sum(-1),
        sample=lambda n, generator: torch.randn(n, dimension, generator=generator, dtype=F64))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resample_move_start_is_the_kalman_posterior(seed):
    """Prior N(0, I_3), two components observed four times with error 0.05: the first
    cycle needs tempered steps and moves, the filter (ETKF: exact here) takes over once a
    cycle needs no move; exact posterior by Kalman."""
    operator = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], dtype=F64)
    observations = torch.tensor([[0.8, -0.4], [0.7, -0.6], [0.9, -0.5], [0.8, -0.5]],
                                dtype=F64)
    obs_std, members = 0.05, 400
    result = particle_start_cycle(get_filter("etkf"), keep, _gaussian_candidates(4000, 3, seed),
                                  [1.0, 2.0, 3.0, 4.0], observations, operator, obs_std,
                                  members=members, return_forecasts=True,
                                  generator=torch.Generator().manual_seed(seed + 10))
    assert result.forecast.shape == result.analysis.shape == (4, members, 3)
    precision = torch.eye(3, dtype=F64) + 4 * operator.T @ operator / obs_std**2
    covariance = torch.linalg.inv(precision)
    mean = covariance @ operator.T @ observations.sum(0) / obs_std**2
    final = result.analysis[-1]
    std = covariance.diagonal().sqrt()
    # resampled and moved candidates are correlated (two Metropolis steps each), so the
    # Monte Carlo error of the mean is larger than for independent draws (0.05 std; about
    # 0.1 for an effective size of 100): 0.35 posterior std allows 3.5 of those; spread
    # within 25 %. Measured: mean 0.11-0.24 std, spread 0.87-1.07.
    assert ((final.mean(0) - mean).abs() / std).max() < 0.35, (final.mean(0), mean)
    ratio = final.std(0) / std
    assert ((ratio > 0.75) & (ratio < 1.25)).all(), ratio
    assert 1 <= result.handover < 4 and result.beta == 0.0  # linear: a handover


def test_resample_move_recovers_a_mode_the_first_cycle_dismissed():
    """u ~ U(-1, 1), truth u = -0.6. Cycle 0 observes (u^2, u / 10): modes at +-0.6, the
    second component favours the wrong one, +0.6, by 10 nats (so the posterior after it
    holds ~5e-5 of its mass near the truth: about no candidate of 2048); cycles 1-3 observe
    u itself and favour the truth by ~290 nats each. Exact posterior on a fine grid."""
    generator = torch.Generator().manual_seed(0)
    draws = 2 * torch.rand(2048, 1, generator=generator, dtype=F64) - 1
    bound = torch.ones(1, dtype=F64)
    prior = CandidatePrior(draws, lambda base: base.clone(), -bound, bound,
                           sample=lambda n, g: 2 * torch.rand(n, 1, generator=g, dtype=F64) - 1)
    operators = [lambda x: torch.cat([x ** 2, x / 10], -1)] + [lambda x: x.expand(-1, 2)] * 3
    nan = float("nan")
    observations = torch.tensor([[0.36, 0.06], [-0.6, nan], [-0.6, nan], [-0.6, nan]],
                                dtype=F64)
    std = torch.tensor([[0.01, 0.12 / 20 ** 0.5]] + [[0.05, 1.0]] * 3, dtype=F64)
    grid = torch.linspace(-1, 1, 200001, dtype=F64)[:, None]
    log_posterior = sum(torch.nansum(-0.5 * ((h(grid) - y) / s) ** 2, -1) for h, y, s
                        in zip(operators, observations, std))
    weights = torch.softmax(log_posterior, 0)
    exact_mean = float((weights * grid[:, 0]).sum())
    exact_std = float((weights * (grid[:, 0] - exact_mean) ** 2).sum().sqrt())
    moving = particle_start_cycle(get_filter("etkf"), keep, prior, [1.0, 2.0, 3.0, 4.0],
                                  observations, operators, std, members=100,
                                  generator=generator)
    final = moving.analysis[-1, :, 0]
    # after cycle 0 the candidates are near +0.6; the independent prior proposals of cycle
    # 1's tempered moves find -0.6 (0.5 exact std: Monte Carlo error of 100 correlated
    # members)
    assert exact_mean == pytest.approx(-0.6, abs=0.01)
    assert float(moving.analysis[0, :, 0].mean()) > 0.5  # cycle 0: the wrong mode, as exact
    assert abs(float(final.mean()) - exact_mean) < 0.5 * exact_std, (final.mean(), exact_mean)


def test_reflection_keeps_proposals_in_the_box():
    bound = torch.ones(2, dtype=F64)
    prior = CandidatePrior(torch.zeros(4, 2, dtype=F64), lambda base: base, -bound, bound)
    values = torch.tensor([[0.5, -0.2], [1.3, -1.1], [3.2, -5.5], [-2.9, 7.0]], dtype=F64)
    folded = prior.reflect(values)
    assert ((folded >= -1) & (folded <= 1)).all()
    torch.testing.assert_close(folded[0], values[0])  # inside: unchanged
    torch.testing.assert_close(folded[1], torch.tensor([0.7, -0.9], dtype=F64))  # mirrored


def test_nonlinearity_is_zero_for_linear_and_large_for_folded_observations():
    states = _gaussian_prior(2000, 3, 0)
    weights = torch.zeros(2000, dtype=F64)
    linear = states @ torch.tensor([[1.0, 0.5], [0.0, 2.0], [1.0, -1.0]], dtype=F64)
    # a linear map plus an offset is fitted exactly: rounding of float64 least squares only
    assert observation_nonlinearity(states, linear + 3.0, weights) < 1e-20
    # |x| over a unit-variance prior: uncorrelated with x, so its unexplained variance is
    # Var|x| = 1 - 2/pi = 0.363 per unit (36.3 for 10 |x|); 10 % covers the sampling error
    # of a variance from 2000 draws (about 3 %)
    folded = 10 * states[:, :1].abs()
    assert observation_nonlinearity(states, folded, weights) == pytest.approx(36.3, rel=0.1)


def test_early_rejection_keeps_the_chain_and_saves_operator_passes():
    """Prior N(0, I_2); cycles observe u1, u2, u1, u2 with errors 0.05, 0.01, 0.005, 0.001,
    so every cycle needs tempered moves and the later moves replay earlier cycles that
    rule out some proposals. With and without early rejection the same generator gives the
    same analyses to the last bit (every accept decision is the same), with fewer operator
    rows (measured: 10725 against 10886)."""
    rows = {True: 0, False: 0}
    results = {}
    for early in (True, False):
        def counted(h, early=early):
            def operator(x):
                rows[early] += x.shape[0]
                return h(x)
            return operator
        generator = torch.Generator().manual_seed(0)
        prior = _gaussian_candidates(2048, 2, 0)
        operators = [counted(lambda x: x[:, :1]), counted(lambda x: x[:, 1:])] * 2
        observations = torch.tensor([[0.3], [-0.2], [0.3], [-0.2]], dtype=F64)
        std = torch.tensor([[0.05], [0.01], [0.005], [0.001]], dtype=F64)
        results[early] = particle_start_cycle(
            get_filter("etkf"), keep, prior, [1.0, 2.0, 3.0, 4.0], observations, operators,
            std, members=100, generator=generator, early_rejection=early, progress=False)
    assert torch.equal(results[True].analysis, results[False].analysis)
    assert results[True].handover == results[False].handover
    assert rows[True] < rows[False], rows
