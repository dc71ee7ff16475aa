"""Tests of the adaptive additive model error (xldensf.filters.model_error)."""

from __future__ import annotations

import pytest
import torch

from xldensf.errors import DataError, ParameterError
from xldensf.filters import AdaptiveModelError, cycle, get_filter

F64 = torch.float64
N_STATE, MEMBERS, OBS_STD = 6, 40, 0.5
#: Observes every component, with correlations between them (as a decoder would).
OPERATOR = torch.eye(N_STATE, dtype=F64) + 0.5 * torch.ones(N_STATE, N_STATE, dtype=F64)
SCALE = torch.linspace(0.5, 1.5, N_STATE, dtype=F64)


def random_walk(cycles: int, model_std: float, seed: int):
    """A persistent state that moves by ``N(0, model_std^2 diag(SCALE^2))`` each cycle (an
    error of the known shape that a persistence forecast does not carry), observed each
    cycle, and a prior around the first truth."""
    generator = torch.Generator().manual_seed(seed)
    truth = torch.zeros(N_STATE, dtype=F64)
    truths, obs = [], []
    for _ in range(cycles):
        truth = truth + model_std * SCALE * torch.randn(N_STATE, generator=generator, dtype=F64)
        truths.append(truth)
        obs.append(truth @ OPERATOR.T + OBS_STD * torch.randn(N_STATE, generator=generator,
                                                              dtype=F64))
    prior = torch.randn(MEMBERS, N_STATE, generator=generator, dtype=F64)
    return torch.stack(truths), torch.stack(obs), prior


def run(kernel, truths, obs, prior, seed=0):
    """Cycle ``kernel`` with persistence; the second half's error and spread."""
    half = len(truths) // 2
    analysis = cycle(kernel, lambda ensemble, start, duration: ensemble, prior,
                     torch.arange(1.0, len(truths) + 1), obs, OPERATOR, OBS_STD,
                     generator=torch.Generator().manual_seed(seed), progress=False).analysis
    error = (analysis[half:].mean(dim=1) - truths[half:]).square().mean().sqrt()
    return float(error), float(analysis[half:].var(dim=1).mean().sqrt())


@pytest.mark.parametrize("model_std", [0.3, 1.0])
def test_recovers_the_variance_of_a_known_model_error(model_std):
    """200 cycles of a random walk of variance ``model_std^2 Q``: the mean of ``alpha`` over
    the last 100 cycles is ``model_std^2`` within 35 % (measured over seeds 1-4: 0.78-1.06
    of it at 0.3, 0.82-1.18 at 1.0; the estimate is pooled over a memory of ~10 cycles, the
    one-standard-error lower bound biases it low, the ETKF's sampling error of the forecast
    spread moves it either way)."""
    truths, obs, prior = random_walk(200, model_std, seed=1)
    noisy = AdaptiveModelError(get_filter("etkf"), SCALE)
    run(noisy, truths, obs, prior)
    alpha = sum(noisy.variances[100:]) / 100
    assert alpha == pytest.approx(model_std ** 2, rel=0.35)
    assert len(noisy.variances) == len(noisy.estimates) == 200


def test_calibrates_a_collapsing_filter():
    """Without the term the persistence ETKF collapses (spread far below its error); with it
    the error falls and spread/skill is within 0.7-1.3 (a linear-Gaussian problem whose
    model error has exactly the assumed shape; measured over seeds 2-4: plain spread/skill
    0.02-0.04, error 0.13-0.24 of the plain one, spread/skill 0.84-1.04)."""
    truths, obs, prior = random_walk(120, 0.3, seed=2)
    plain_error, plain_spread = run(get_filter("etkf"), truths, obs, prior)
    error, spread = run(AdaptiveModelError(get_filter("etkf"), SCALE), truths, obs, prior)
    assert plain_spread < 0.3 * plain_error
    assert error < 0.7 * plain_error
    assert 0.7 < spread / error < 1.3


def test_alpha_zero_leaves_the_kernel_and_its_generator_alone():
    """Probes and noise come from the object's own generator: where ``alpha`` is 0 the
    analysis is the kernel's own, bit for bit, with the same generator state after."""
    truths, obs, prior = random_walk(10, 0.0, seed=0)
    kernel = get_filter("enkf")  # stochastic: consumes the generator
    plain = kernel.analysis(prior, obs[0], OPERATOR, OBS_STD, torch.Generator().manual_seed(7))
    noisy = AdaptiveModelError(kernel, SCALE)
    wrapped = noisy.analysis(prior, obs[0], OPERATOR, OBS_STD,
                             torch.Generator().manual_seed(7))
    assert noisy.variances == [0.0] and torch.equal(plain, wrapped)


def test_perfect_model_adds_nothing_on_most_cycles():
    """A fixed truth, no model error, six seeds of 40 cycles: ``alpha`` is 0 on most cycles
    (the pooled excess is zero in expectation and one standard error is taken off; measured
    over seeds 0-5: 0 on 90-100 % of the cycles)."""
    zero_fractions = []
    for seed in range(6):
        truths, obs, prior = random_walk(40, 0.0, seed=seed)
        noisy = AdaptiveModelError(get_filter("etkf"), SCALE)
        run(noisy, truths, obs, prior, seed=seed)
        zero_fractions.append(sum(value == 0 for value in noisy.variances) / 40)
    assert min(zero_fractions) >= 0.8


def test_noise_only_on_components_with_scale_and_mean_preserved():
    """Components of zero scale (e.g. constant parameters) are not perturbed, and the
    noise is centred: the mean of the perturbed forecast is the forecast's."""
    scale = torch.tensor([1.0, 1.0, 0.0], dtype=F64)

    class Echo:
        name = "echo"

        def analysis(self, ensemble, observations, operator, obs_std, generator=None):
            self.seen = ensemble
            return ensemble

    echo = Echo()
    noisy = AdaptiveModelError(echo, scale)
    forecast = 0.01 * torch.randn(50, 3, dtype=F64, generator=torch.Generator().manual_seed(3))
    noisy.analysis(forecast, torch.tensor([3.0, -3.0, 3.0], dtype=F64),
                   torch.eye(3, dtype=F64), 0.1)
    assert noisy.variances[0] > 0
    assert torch.equal(echo.seen[:, 2], forecast[:, 2])
    assert torch.allclose(echo.seen.mean(dim=0), forecast.mean(dim=0), atol=1e-12)
    assert float(echo.seen[:, 0].std()) > 10 * float(forecast[:, 0].std())


def test_batched_problems_get_their_own_alpha():
    generator = torch.Generator().manual_seed(5)
    ensemble = 0.01 * torch.randn(2, MEMBERS, N_STATE, generator=generator, dtype=F64)
    obs = torch.stack([torch.zeros(N_STATE, dtype=F64), 5 * torch.ones(N_STATE, dtype=F64)])
    noisy = AdaptiveModelError(get_filter("etkf"), SCALE)
    alpha = noisy.update(ensemble, obs, OPERATOR, OBS_STD)
    assert alpha.shape == (2,) and float(alpha[1]) > float(alpha[0])
    assert noisy.analysis(ensemble, obs, OPERATOR, OBS_STD, generator).shape == ensemble.shape


@pytest.mark.parametrize(("keywords", "error"), [
    ({"scale": torch.zeros(3)}, DataError), ({"scale": torch.ones(2, 2)}, DataError),
    ({"scale": torch.tensor([1.0, float("nan")])}, DataError),
    ({"memory": 0.0}, ParameterError), ({"memory": 1.5}, ParameterError),
    ({"probes": 1}, ParameterError), ({"probe_step": 0.0}, ParameterError)])
def test_bad_settings_are_refused(keywords, error):
    settings = {"scale": torch.ones(3), **keywords}
    with pytest.raises(error, match="expected"):
        AdaptiveModelError(get_filter("etkf"), **settings)
