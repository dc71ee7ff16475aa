"""The latent ensemble-variational smoother (xldensf.filters.envar, method="latent-envar")."""

from __future__ import annotations

import math

import pytest
import torch
from test_latent_assimilation import LinearLatentModel, linear_observations

import xldensf as xl
from xldensf.filters.envar import calibration_factor, envar, envar_window

F64 = torch.float64


def linear_problem(seed: int = 0, n: int = 4, m: int = 3, times: int = 3):
    """A linear model x_{k+1} = M x_k observed by H at ``times`` steps, and its window map."""
    generator = torch.Generator().manual_seed(seed)
    propagator = torch.eye(n, dtype=F64) + 0.3 * torch.randn(n, n, generator=generator,
                                                             dtype=F64)
    operator = torch.randn(m, n, generator=generator, dtype=F64)
    stacked = torch.cat([operator @ torch.linalg.matrix_power(propagator, k + 1)
                         for k in range(times)])

    def advance(x, start, duration):
        for _ in range(round(duration)):
            x = x @ propagator.T
        return x

    def observe(x, index):
        return x @ operator.T

    return propagator, operator, stacked, advance, observe, generator


def batch_solution(mean, covariance, stacked, values, obs_std):
    """The exact linear-Gaussian smoother of the start: the batch least-squares solution."""
    innovation = stacked @ covariance @ stacked.T + obs_std ** 2 * torch.eye(len(values),
                                                                               dtype=F64)
    gain = covariance @ stacked.T @ torch.linalg.inv(innovation)
    return mean + gain @ (values - stacked @ mean), covariance - gain @ stacked @ covariance


def test_full_control_gauss_newton_is_the_batch_smoother():
    _, _, stacked, _, _, generator = linear_problem()
    n = stacked.shape[1]
    factor = torch.randn(n, n, generator=generator, dtype=F64)
    covariance = factor @ factor.T + 0.1 * torch.eye(n, dtype=F64)
    root = torch.linalg.cholesky(covariance)
    mean = torch.randn(n, generator=generator, dtype=F64)
    values = torch.randn(len(stacked), generator=generator, dtype=F64)
    result = envar_window(lambda x: x @ stacked.T, mean, root, values, 0.3)
    exact_mean, exact_cov = batch_solution(mean, covariance, stacked, values, 0.3)
    # linear: one Gauss-Newton step is the solution, float64 round-off only
    assert float((result.state - exact_mean).abs().max()) < 1e-8
    posterior = result.posterior_root @ result.posterior_root.T
    assert float((posterior - exact_cov).abs().max()) < 1e-8
    # L-BFGS reaches the same minimiser (to its gradient tolerance)
    lbfgs = envar_window(lambda x: x @ stacked.T, mean, root, values, 0.3,
                         optimizer="lbfgs", iterations=200, tol=1e-12)
    assert float((lbfgs.state - exact_mean).abs().max()) < 1e-6


@pytest.mark.parametrize("control", ["ensemble", "full"])
def test_ensemble_subspace_is_exact_when_it_spans_the_state(control):
    propagator, _, stacked, advance, observe, generator = linear_problem(seed=1)
    n, members = stacked.shape[1], 6  # N - 1 = 5 >= n = 4
    background = torch.randn(members, n, generator=generator, dtype=F64) + 1.0
    values = torch.randn(3, 3, generator=generator, dtype=F64)
    result = envar(advance, observe, background, 0.0, [1.0, 2.0, 3.0], values, 0.2, window=3,
                   control=control, uncertainty="hessian")
    exact_mean, exact_cov = batch_solution(background.mean(0), torch.cov(background.T),
                                           stacked, values.reshape(-1), 0.2)
    for k in range(3):  # the smoother at every time of the window: M^(k+1) of the start
        power = torch.linalg.matrix_power(propagator, k + 1)
        assert float((result.mean[k] - power @ exact_mean).abs().max()) < 1e-8
        assert float((result.analysis[k].mean(0) - power @ exact_mean).abs().max()) < 1e-8
        if control == "ensemble":  # deterministic square root: the covariance exactly
            assert float((torch.cov(result.analysis[k].T) - power @ exact_cov @ power.T)
                         .abs().max()) < 1e-8


def test_rml_spread_converges_to_the_exact_posterior():
    propagator, _, stacked, advance, observe, generator = linear_problem(seed=3)
    values = torch.randn(3, 3, generator=generator, dtype=F64)
    errors = []
    for members in (40, 4000):
        background = 1.0 + torch.randn(members, 4, generator=generator, dtype=F64)
        result = envar(advance, observe, background, 0.0, [1.0, 2.0, 3.0], values, 0.5,
                       window=3, generator=torch.Generator().manual_seed(members))
        # exact posterior of the start given this background ensemble's moments, at time 1
        mean, cov = batch_solution(background.mean(0), torch.cov(background.T), stacked,
                                   values.reshape(-1), 0.5)
        mean, cov = propagator @ mean, propagator @ cov @ propagator.T
        analysed = result.analysis[0]
        errors.append((float((torch.cov(analysed.T) - cov).norm() / cov.norm()),
                       float((analysed.mean(0) - mean).norm() / cov.diagonal().sum().sqrt())))
    # RML is exact in distribution for a linear-Gaussian problem; what remains is the
    # sampling error of the perturbations, O(1/sqrt(N)): a few % of the covariance at
    # N = 4000 (tolerance 8 %, about 3 standard errors), and it shrinks with N
    assert errors[1][0] < 0.08 and errors[1][0] < errors[0][0]
    assert errors[1][1] < 0.05


def test_member_jacobians_equal_the_mean_jacobian_for_a_linear_model():
    _, _, stacked, advance, observe, generator = linear_problem(seed=4)
    background = torch.randn(8, 4, generator=generator, dtype=F64)
    values = torch.randn(2, 3, generator=generator, dtype=F64)
    runs = [envar(advance, observe, background, 0.0, [1.0, 2.0], values, 0.3, window=2,
                  jacobian=jacobian, generator=torch.Generator().manual_seed(0))
            for jacobian in ("mean", "member")]
    assert float((runs[0].analysis - runs[1].analysis).abs().max()) < 1e-10


def test_mean_jacobian_rml_members_converge_from_a_wide_prior():
    # an injective nonlinear map and a background far wider than the posterior: with the
    # shared Jacobian the members start at the converged minimiser (linearised RML), so in
    # a few iterations they reach the spread of the exact per-member RML minimisers (from
    # their own backgrounds under the Jacobian of the mean they did not: std 0.36 for 0.05)
    generator = torch.Generator().manual_seed(0)
    matrix = torch.tensor([[1.0, 0.5], [-0.3, 1.0], [0.7, -0.8]], dtype=F64)

    def forward(x):
        return (torch.tanh(3 * x) + 0.2 * x) @ matrix.T

    std, members = 0.05, 40
    values = forward(torch.tensor([[0.4, -0.6]], dtype=F64))[0] \
        + std * torch.randn(3, generator=generator, dtype=F64)
    background = torch.randn(members, 2, generator=generator, dtype=F64)
    perturbations = std * torch.randn(members, 3, generator=generator, dtype=F64)
    root = torch.linalg.cholesky(torch.cov(background.T))
    runs = [envar_window(forward, background.mean(0), root, values, std, members=background,
                         perturbations=perturbations, jacobian=jacobian,
                         iterations=iterations, tol=1e-14)
            for jacobian, iterations in (("member", 40), ("mean", 5))]
    exact, shared = runs[0].members, runs[1].members
    assert float((shared.mean(0) - exact.mean(0)).abs().max()) < 0.01
    assert float((shared.std(0) / exact.std(0) - 1).abs().max()) < 0.1


# ---------------------------------------------------------------- the LatentModel adapter
@pytest.fixture(scope="module")
def linear_model():
    return LinearLatentModel()



def _augmented_matrices(model, stations):
    """kappa = (s, u) -> kappa' and kappa -> h(stations) of the linear latent model."""
    latent = model.latent_dim
    transition = torch.zeros(latent + 1, latent + 1, dtype=F64)
    transition[:latent, :latent] = model.propagator
    transition[:latent, latent:] = model.forcing.T
    transition[latent, latent] = 1.0
    operator = torch.cat([model._basis(stations), torch.zeros(len(stations), 1, dtype=F64)],
                         dim=1)
    return transition, operator


def _calibration_trials(extra_variance, trials=200, n=6, m=120, seed=0):
    """Linear-Gaussian windows ``y = H x_t + e + eps`` (``x_t ~ B = I``, ``eps ~ R = I``,
    ``e ~ N(0, extra_variance I)`` an error the model does not know): the means of both
    calibration factors, of the analysis' squared error at the observations against
    ``H x_t + e`` and of the calibrated members' variance there, ``p * factor``."""
    generator = torch.Generator().manual_seed(seed)
    operator = 0.3 * torch.randn(m, n, generator=generator, dtype=F64)
    sums = torch.zeros(4, dtype=F64)
    for _ in range(trials):
        truth = torch.randn(n, generator=generator, dtype=F64)
        error = math.sqrt(extra_variance) * torch.randn(m, generator=generator, dtype=F64)
        values = operator @ truth + error + torch.randn(m, generator=generator, dtype=F64)
        window = envar_window(lambda x: x @ operator.T, torch.zeros(n, dtype=F64),
                              torch.eye(n, dtype=F64), values, 1.0)
        model_error = calibration_factor(window, "model-error")
        sums += torch.tensor([calibration_factor(window, "variance-factor"), model_error,
                              float((operator @ (window.state - truth) - error).square().sum()),
                              window.dof * model_error], dtype=F64)
    return (sums / trials).tolist(), window


@pytest.mark.parametrize("k", [1.0, 2.0])
def test_variance_factor_recovers_a_mis_stated_noise(k):
    # the noise is k times the stated one (extra variance k^2 - 1): E[2 J_min] / m =
    # k^2 - (k^2 - 1) p / m (p < n = 6 of m = 120 observations), 1 when R is right
    (variance, _, _, _), window = _calibration_trials(k ** 2 - 1.0)
    expected = k ** 2 - (k ** 2 - 1.0) * window.dof / window.n_obs
    # 200 windows: the standard error of the mean is sqrt(2 / m / 200) k^2 = 0.9 % k^2
    assert abs(variance - expected) < 0.03 * k ** 2
    assert window.n_obs == 120 and 0 < window.dof < 6


@pytest.mark.parametrize("extra", [0.0, 1.0])
def test_model_error_calibration_matches_the_actual_error_at_the_observations(extra):
    # the error the model cannot represent is added to the members' variance: the
    # calibrated members' variance at the observations equals the analysis' actual squared
    # error there (against truth + unrepresented error); with none, the factor is 1
    (_, factor, actual, calibrated), window = _calibration_trials(extra)
    if extra == 0:
        # unbiased, but noisy (std sqrt(2 m) / p per window): mean of 200 within ~3 se
        assert abs(factor - 1.0) < 0.5 and abs(calibrated - actual) < 0.5 * window.dof
    else:  # about 1 + extra (m - p) / p: a large factor for a tight posterior
        assert factor > 10 and abs(calibrated - actual) < 0.05 * actual


@pytest.mark.parametrize("calibration", ["variance-factor", "model-error"])
def test_calibration_scales_the_members_about_the_minimiser(calibration):
    propagator, _, _, advance, observe, generator = linear_problem(seed=5)
    background = torch.randn(30, 4, generator=generator, dtype=F64)
    values = 3.0 * torch.randn(4, 3, generator=generator, dtype=F64)  # noise under-stated
    runs = {name: envar(advance, observe, background, 0.0, [1.0, 2.0, 3.0, 4.0], values,
                        0.3, window=2, calibration=name,
                        generator=torch.Generator().manual_seed(0))
            for name in ("none", calibration)}
    assert float(runs["none"].variance_factor[0]) > 2
    assert (runs["none"].calibration == 1).all()
    # the model error is estimated from the second window on (MIN_POOLED_WINDOWS)
    frames = slice(0, 2) if calibration == "variance-factor" else slice(2, 4)
    assert (runs[calibration].calibration[frames] > 2).all()
    if calibration == "model-error":
        assert (runs[calibration].calibration[:2] == 1).all()
    first = [runs[name].analysis[frames] - runs[name].mean[frames, None] for name in runs]
    factor = float(runs[calibration].calibration[frames.start])
    assert torch.allclose(first[1], math.sqrt(factor) * first[0])  # linear: about the mean
    # the variance factor scales B too (the next window starts from the scaled members);
    # an unrepresented error is the output's: the next window is the uncalibrated one's
    chained = torch.allclose(runs[calibration].mean, runs["none"].mean)
    assert chained == (calibration == "model-error")


def _chained_twin(representation_std, seed=0, n=10, per_time=48, times=30,
                  calibration="model-error"):
    """A perfect linear model (a slowly decaying rotation) observed with noise 0.1 plus a
    fixed error pattern of ``representation_std`` the model cannot produce; the calibrated
    chained smoother and, per time from the 6th, the members' variance and the ensemble
    mean's squared error at the observations against ``H x_t + e``."""
    generator = torch.Generator().manual_seed(seed)
    rotation, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=F64))
    operator = 0.1 * torch.randn(per_time, n, generator=generator, dtype=F64)
    state, truth = torch.randn(n, generator=generator, dtype=F64), []
    for _ in range(times):
        state = 0.99 * rotation @ state
        truth.append(operator @ state)
    pattern = representation_std * torch.randn(per_time, generator=generator, dtype=F64)
    target = torch.stack(truth) + pattern
    values = target + 0.1 * torch.randn(times, per_time, generator=generator, dtype=F64)
    result = envar(lambda x, t, d: x @ torch.linalg.matrix_power(0.99 * rotation, round(d)).T,
                   lambda x, i: x @ operator.T,
                   torch.randn(50, n, generator=generator, dtype=F64), 0.0,
                   torch.arange(1.0, times + 1), values, 0.1, window=5,
                   calibration=calibration, inflation=1.1,
                   generator=torch.Generator().manual_seed(seed))
    predicted = result.analysis @ operator.T
    variance = predicted.var(1).sum(-1)[5:]
    error = (predicted.mean(1) - target).square().sum(-1)[5:]
    return result, float(variance.mean()), float(error.mean())


def test_model_error_calibration_leaves_a_perfect_model_nearly_alone():
    # the pooled estimate less one standard error: little widening without a model error
    # (the members' variance at the observations over the uncalibrated one, 3 twins: 1.67
    # on one, 1 on the others)
    ratios = [_chained_twin(0.0, seed=seed)[1]
              / _chained_twin(0.0, seed=seed, calibration="none")[1] for seed in range(3)]
    assert min(ratios) >= 1.0 and sum(ratios) / 3 < 1.5
    # a fixed pattern of half the noise the model cannot produce: the output members'
    # variance at the observations now accounts for the ensemble mean's error there
    result, variance, error = _chained_twin(0.05)
    assert (result.calibration[5:] > 5).all()
    assert 0.7 < variance / error < 1.3


def _prior(model, members, seed):
    """The adapter's prior draw (LD-EnSF's): u ~ U(-1, 1), s_0 = unroll(u, 1)."""
    generator = torch.Generator().manual_seed(seed)
    u = 2 * torch.rand(members, model.n_parameters, generator=generator, dtype=F64) - 1
    return torch.cat([model.unroll(u, 1)[:, 0], u], dim=1)


def test_latent_envar_window_is_the_exact_smoother(linear_model):
    _, observations = linear_observations(linear_model, 2.4, stations=4)
    members, window = 8, 3  # N - 1 = 7 >= the 3 components of (s, u)
    analysis = observations.ldensf.assimilate(
        linear_model, method="latent-envar", members=members, window=window, seed=0,
        uncertainty="hessian", inflation=1.0, calibration="none", latent_margin=None,
        return_latent=True, output="members")
    assert analysis.attrs["xldensf_method"] == "latent-envar"
    assert analysis["h"].dims == ("time", "member", "x")
    stations = torch.as_tensor(observations["x"].values)[:, None]
    transition, operator = _augmented_matrices(linear_model, stations)
    prior = _prior(linear_model, members, 0)
    # observation times 0, 1, 2 of the first window: the start is observed directly
    stacked = torch.cat([operator @ torch.linalg.matrix_power(transition, k)
                         for k in range(window)])
    obs_std = float(observations["h_error_std"])
    values = torch.as_tensor(observations["h"].values[:window]).reshape(-1)
    mean, cov = batch_solution(prior.mean(0), torch.cov(prior.T), stacked, values, obs_std)
    latent = torch.as_tensor(analysis["latent"].values)
    u = linear_model.normalize_parameters(torch.as_tensor(analysis["c"].values)[..., None])
    kappa = torch.cat([latent, u], dim=-1)
    assert float(u.abs().max()) < 1  # the parameter clamp is inactive: the problem is linear
    for k in range(window):
        power = torch.linalg.matrix_power(transition, k)
        # float64 round-off, through the parameter (de)normalisation
        assert float((kappa[k].mean(0) - power @ mean).abs().max()) < 1e-8
        assert float((torch.cov(kappa[k].T) - power @ cov @ power.T).abs().max()) < 1e-8
    assert analysis.sizes["time"] == observations.sizes["time"]
    assert analysis.attrs["xldensf_windows"] == 2


def test_latent_envar_rml_moves_the_parameter_towards_the_truth(linear_model):
    _, observations = linear_observations(linear_model, 2.4, stations=4)
    analysis = observations.ldensf.assimilate(linear_model, method="latent-envar",
                                              members=40, window=2, seed=1)
    final = analysis["c"].isel(time=-1)
    # prior U(1, 3): mean 2, spread 0.58; six observation times of four stations at 10 %
    assert abs(float(final.mean()) - 2.4) < 0.1
    assert 0 < float(final.std()) < 0.3
    assert math.isfinite(float(analysis["cost_function"].isel(time=-1)))
    # the default calibration: the windows' factors, applied at least 1
    assert (analysis["calibration_factor"] >= 1).all()
    assert (analysis["variance_factor"] > 0).all()
    assert '"calibration": "model-error"' in analysis.attrs["xldensf_settings"]


class DetachedLatentModel(LinearLatentModel):
    """The linear model with dynamics that leave autograd (as a numpy surrogate would)."""

    def advance(self, latent, parameters, steps=1):
        return super().advance(latent, parameters, steps).detach()


def test_bad_input_is_refused_with_expected_and_found(linear_model):
    _, observations = linear_observations(linear_model, 2.4, stations=3)
    with pytest.raises(xl.ConfigurationError, match="window: expected at most the 6 "
                                                    "observation times, found 7"):
        observations.ldensf.assimilate(linear_model, method="latent-envar", members=4,
                                       window=7)
    with pytest.raises(xl.ConfigurationError, match="a differentiable model"):
        observations.ldensf.assimilate(DetachedLatentModel(), method="latent-envar",
                                       members=4, window=2)
    with pytest.raises(xl.UnknownNameError, match="setting of method='latent-envar'.*steps"):
        observations.ldensf.assimilate(linear_model, method="latent-envar", members=4,
                                       steps=10)
    with pytest.raises(xl.UnknownNameError, match="calibration"):
        observations.ldensf.assimilate(linear_model, method="latent-envar", members=4,
                                       calibration="desroziers")
    with pytest.raises(xl.UnknownNameError, match="control"):
        observations.ldensf.assimilate(linear_model, method="latent-envar", members=4,
                                       control="diagonal")
    with pytest.raises(xl.ConfigurationError, match="members: expected an integer >= 2"):
        observations.ldensf.assimilate(linear_model, method="latent-envar", members=1)
    with pytest.raises(xl.UnknownNameError, match="latent-envar"):
        observations.ldensf.assimilate(linear_model, method="4dvar", members=4)
