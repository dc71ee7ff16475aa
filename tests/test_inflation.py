"""Tests of the adaptive inflation (xldensf.filters.inflation)."""

from __future__ import annotations

import math

import pytest
import torch

from xldensf.errors import ParameterError
from xldensf.filters import AdaptiveInflation, cycle, get_filter, innovation_inflation

F64 = torch.float64
N_STATE, N_OBS, MEMBERS = 6, 4, 40
OPERATOR = torch.cat([torch.eye(N_OBS, dtype=F64), torch.ones(N_OBS, 2, dtype=F64)], dim=1)
OBS_STD = 0.5
#: Observes every component (multiplicative inflation grows an unobserved direction's
#: spread without bound, whatever estimates the factor).
FULL_OPERATOR = torch.eye(N_STATE, dtype=F64) + 0.5 * torch.ones(N_STATE, N_STATE, dtype=F64)


def forecasts(batch: int, spread_error: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` linear-Gaussian forecasts whose anomalies have a unit covariance while their
    mean's error has ``spread_error ** 2`` times it, and observations of the truth.

    The anomalies are exactly white (whitened sample), so the only misfit between spread
    and error is the known factor.
    """
    generator = torch.Generator().manual_seed(seed)
    truth = torch.randn(batch, N_STATE, generator=generator, dtype=F64)
    draws = torch.randn(batch, MEMBERS, N_STATE, generator=generator, dtype=F64)
    draws = draws - draws.mean(dim=1, keepdim=True)
    covariance = draws.transpose(1, 2) @ draws / (MEMBERS - 1)
    anomalies = draws @ torch.linalg.inv(torch.linalg.cholesky(covariance)).transpose(1, 2)
    mean = truth + spread_error * torch.randn(batch, N_STATE, generator=generator, dtype=F64)
    obs = truth @ OPERATOR.T + OBS_STD * torch.randn(batch, N_OBS, generator=generator,
                                                     dtype=F64)
    return mean[:, None, :] + anomalies, obs


@pytest.mark.parametrize("spread_error", [1.0, 2.0, 0.5])
def test_single_cycle_estimate_is_unbiased_with_the_stated_variance(spread_error):
    """Over 4000 independent problems the mean of ``lambda_obs`` is the true variance factor
    within 3 standard errors, and its spread matches the stated variance within 10 %."""
    ensemble, obs = forecasts(4000, spread_error, seed=0)
    excess, trace, trace_square, valid = innovation_inflation(ensemble, obs, OPERATOR, OBS_STD)
    estimate = excess / trace
    true = spread_error ** 2
    standard_error = float(estimate.std()) / math.sqrt(len(estimate))
    assert abs(float(estimate.mean()) - true) < 3 * standard_error
    stated = 2 * (true ** 2 * trace_square + 2 * true * trace + valid) / trace.square()
    assert float(estimate.var()) == pytest.approx(float(stated.mean()), rel=0.1)


@pytest.mark.parametrize(("spread_error", "bounds", "expected", "tolerance"), [
    (2.0, (1.0, 10.0), 2.0, 0.15),   # spread too small by 2: recovered within 15 %
    (1.0, (1.0, 10.0), 1.0, 0.15),   # right spread: near the lower bound
    (0.5, (0.1, 10.0), 0.5, 0.15),   # too large by 2, deflation allowed: recovered
])
def test_filtered_factor_recovers_the_spread_deficit(spread_error, bounds, expected,
                                                     tolerance):
    """200 cycles of the update (no analysis: the same stationary misfit each cycle). One
    cycle's estimate has a standard deviation of about 1.1 in ``lambda`` here (one
    dominant direction in observation space), so the filtered factor's own spread over
    seeds is 5-10 %: the tolerance is 15 %."""
    adaptive = AdaptiveInflation(get_filter("etkf"), bounds=bounds, drift_std=0.02)
    ensemble, obs = forecasts(200, spread_error, seed=1)
    for index in range(200):
        adaptive.update(ensemble[index], obs[index], OPERATOR, OBS_STD)
    assert adaptive.factor == pytest.approx(expected, rel=tolerance)
    assert len(adaptive.factors) == len(adaptive.estimates) == 200


def test_cycled_filter_with_unrepresented_model_error():
    """A persistent state with model noise the forecast does not carry: the ETKF without
    inflation loses the truth, the adaptive one follows it with spread matched to error."""
    generator = torch.Generator().manual_seed(2)
    cycles, model_std = 80, 0.3
    truth = torch.zeros(N_STATE, dtype=F64)
    truths, obs = [], []
    for _ in range(cycles):
        truth = truth + model_std * torch.randn(N_STATE, generator=generator, dtype=F64)
        truths.append(truth)
        obs.append(truth @ FULL_OPERATOR.T + OBS_STD * torch.randn(
            N_STATE, generator=generator, dtype=F64))
    truths, obs = torch.stack(truths), torch.stack(obs)
    prior = torch.randn(MEMBERS, N_STATE, generator=generator, dtype=F64)

    def persist(ensemble, start, duration):
        return ensemble

    def run(kernel):
        analysis = cycle(kernel, persist, prior, torch.arange(1.0, cycles + 1), obs,
                         FULL_OPERATOR, OBS_STD).analysis[cycles // 2:]
        error = (analysis.mean(dim=1) - truths[cycles // 2:]).square().mean().sqrt()
        return float(error), float(analysis.var(dim=1).mean().sqrt())

    plain_error, plain_spread = run(get_filter("etkf"))
    adaptive = AdaptiveInflation(get_filter("etkf"))
    error, spread = run(adaptive)
    assert plain_spread < 0.3 * plain_error          # collapsed without inflation
    assert error < 0.8 * plain_error
    assert 0.6 < spread / error < 1.5
    assert adaptive.factor > 1.1


def test_perfect_model_stays_near_one():
    """Persistent truth, no model error, 40 cycles, six seeds: the time-mean factor is 1 on
    most seeds (measured: 1.0 on four, 1.18 and 1.2 on two, where the 40-member ETKF's
    own sampling error leaves its spread short), so the median is 1 and none is above 1.25.
    """
    means = []
    for seed in range(6):
        generator = torch.Generator().manual_seed(seed)
        truth = torch.randn(N_STATE, generator=generator, dtype=F64)
        prior = truth + torch.randn(MEMBERS, N_STATE, generator=generator, dtype=F64)
        obs = truth @ FULL_OPERATOR.T + OBS_STD * torch.randn(40, N_STATE, generator=generator,
                                                              dtype=F64)
        adaptive = AdaptiveInflation(get_filter("etkf"))
        cycle(adaptive, lambda ensemble, start, duration: ensemble, prior,
              torch.arange(1.0, 41), obs, FULL_OPERATOR, OBS_STD, progress=False)
        means.append(sum(adaptive.factors) / len(adaptive.factors))
    means.sort()
    assert means[2] < 1.01 and means[-1] < 1.25


def test_batched_problems_get_their_own_factor():
    ensemble, obs = forecasts(2, 1.0, seed=4)
    ensemble[1] = ensemble[1].mean(dim=0) + 0.2 * (ensemble[1] - ensemble[1].mean(dim=0))
    adaptive = AdaptiveInflation(get_filter("etkf"), initial_std=10.0)
    factor = adaptive.update(ensemble, obs, OPERATOR, OBS_STD)
    assert factor.shape == (2,) and float(factor[1]) > float(factor[0])
    assert adaptive.analysis(ensemble, obs, OPERATOR, OBS_STD).shape == ensemble.shape


@pytest.mark.parametrize("keywords", [{"bounds": (2.0, 1.0)}, {"bounds": (0.0, 2.0)},
                                      {"initial": 0.5}, {"drift_std": -1.0},
                                      {"initial_std": 0.0, "drift_std": 0.0}])
def test_bad_settings_are_refused(keywords):
    with pytest.raises(ParameterError, match="expected"):
        AdaptiveInflation(get_filter("etkf"), **keywords)
