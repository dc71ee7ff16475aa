"""4D-Var: the gradient, the linear-Gaussian smoother, the adapter and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xldensf as xl
from xldensf.errors import ConfigurationError, XLDEnSFError
from xldensf.filters.fourdvar import WindowProblem, background_sqrt, fourdvar, window_cost
from xldensf.simulators.lorenz96 import Lorenz96Config, Lorenz96Simulator

F64 = torch.float64


def l96_advance(model):
    def advance(state, params, t0, duration):
        fields = state.reshape(-1, *model.state_shape).contiguous()
        return model.advance(fields, params, t0, duration).reshape(len(state), -1)
    return advance


def test_window_cost_gradient_matches_finite_differences():
    """Autograd gradient of J(v) through 8 RK4 steps of Lorenz-96 vs central differences.

    Tolerance 1e-6 relative: in float64 with step h = 1e-5 the truncation error of the
    central difference is O(h^2 |J'''|) ~ 1e-8 relative and the rounding error
    O(eps |J| / h) ~ 1e-9 relative, so 1e-6 leaves a margin of 100 and still catches any
    wrong gradient (a detached step or a missing term changes it at order 1).
    """
    model = xl.simulator("lorenz96", preset="small")
    advance = l96_advance(model)
    generator = torch.Generator().manual_seed(0)
    params = model.default_parameters(1)
    state = model.initial_state(params, generator).reshape(-1)
    truth = [advance(state[None], params, 0.0, 0.05 * k)[0] for k in (2, 4, 8)]
    values = [x + 0.5 * torch.randn(40, generator=generator, dtype=F64) for x in truth]
    window = _window_for(values, [0.1, 0.2, 0.4])
    root = background_sqrt(40, std=1.5)
    param_std = torch.tensor([0.5], dtype=F64)
    background = state + torch.randn(40, generator=generator, dtype=F64)
    v = 0.3 * torch.randn(41, generator=generator, dtype=F64)

    def cost(u):
        return window_cost(advance, u, background, params[0], root, param_std, window)

    x = v.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(cost(x), x)
    step = 1e-5
    for _ in range(3):
        direction = torch.randn(41, generator=generator, dtype=F64)
        direction /= direction.norm()
        with torch.no_grad():
            finite = (cost(v + step * direction) - cost(v - step * direction)) / (2 * step)
        analytic = gradient @ direction
        assert abs(float(finite - analytic)) <= 1e-6 * max(abs(float(finite)), 1.0)


def _window_for(values, offsets):
    """A one-window problem with identity observations and unit errors."""
    n = len(values[0])
    return WindowProblem(0.0, list(offsets), list(values), [torch.eye(n, dtype=F64)] * len(values),
                   [torch.ones(n, dtype=F64)] * len(values))


def _linear_problem(seed=0, n=4, n_obs=2, cycles=5):
    generator = torch.Generator().manual_seed(seed)
    a = torch.eye(n, dtype=F64) + 0.1 * torch.randn(n, n, generator=generator, dtype=F64)
    b = torch.randn(n, generator=generator, dtype=F64)  # how the parameter forces the state
    h = torch.randn(n_obs, n, generator=generator, dtype=F64)
    r_std = 0.3
    xb = torch.randn(n, generator=generator, dtype=F64)
    pb = torch.tensor([0.5], dtype=F64)
    b_root = torch.linalg.cholesky(0.5 * torch.eye(n, dtype=F64) + 0.1 * torch.ones(n, n,
                                                                                   dtype=F64))
    p_std = torch.tensor([0.7], dtype=F64)
    y = torch.randn(cycles, n_obs, generator=generator, dtype=F64)
    return a, b, h, r_std, xb, pb, b_root, p_std, y


def _linear_advance(a, b):
    def advance(state, params, t0, duration):
        for _ in range(round(duration)):
            state = state @ a.T + params[:, :1] * b
        return state
    return advance


@pytest.mark.parametrize("optimizer, tolerance", [("gauss-newton", 1e-10), ("lbfgs", 1e-6)])
def test_linear_gaussian_equals_kalman_smoother(optimizer, tolerance):
    """One window over all observations, linear model and operator, Gaussian B and R: the
    4D-Var minimiser is the smoothed mean at time 0 (state and parameter).

    Gauss-Newton solves the quadratic exactly in one step (1e-10: the normal equations'
    rounding at condition ~1e3); L-BFGS stops at a gradient of 1e-10, i.e. within about
    gradient / smallest Hessian eigenvalue (>= 1, the background term) of the minimum,
    and 1e-6 leaves room for the line search's last step.
    """
    a, b, h, r_std, xb, pb, b_root, p_std, y = _linear_problem()
    expected, _ = _smoother_posterior(a, b, h, r_std, xb, pb, b_root, p_std, y)
    times = torch.arange(1.0, len(y) + 1, dtype=F64)
    result = fourdvar(_linear_advance(a, b), xb, pb, 0.0, times, y, h, r_std,
                      background_sqrt=b_root, parameter_std=p_std, window=len(y),
                      shift=len(y), optimizer=optimizer, max_iter=200, tol=1e-10)
    x0 = torch.linalg.solve(a, result.analysis[0] - result.parameters[0, 0] * b)
    assert torch.allclose(x0, expected[:-1], atol=tolerance, rtol=0)
    assert torch.allclose(result.parameters[0], expected[-1:], atol=tolerance, rtol=0)


def _smoother_posterior(a, b, h, r_std, xb, pb, b_root, p_std, y):
    """Mean and covariance of ``z = [x0, p]`` given all observations (the exact smoother)."""
    n = len(xb)
    rows, m_x, m_p = [], torch.eye(n, dtype=F64), torch.zeros(n, 1, dtype=F64)
    for _ in range(len(y)):
        m_x, m_p = a @ m_x, a @ m_p + b[:, None]
        rows.append(torch.cat([h @ m_x, h @ m_p], dim=1))
    g = torch.cat(rows)
    cov = torch.block_diag(b_root @ b_root.T, torch.diag(p_std ** 2))
    zb = torch.cat([xb, pb])
    gain = cov @ g.T @ torch.linalg.inv(g @ cov @ g.T + r_std ** 2 * torch.eye(len(g),
                                                                               dtype=F64))
    return zb + gain @ (y.reshape(-1) - g @ zb), cov - gain @ g @ cov


@pytest.mark.parametrize("members", [200, 4000])
def test_rml_ensemble_samples_the_smoother_posterior(members):
    """Randomised maximum likelihood on a linear-Gaussian problem: each member minimises
    the cost with perturbed background and observations, so the members are exact draws
    of the smoother's posterior of ``[x0, p]``; their mean and covariance converge to it.

    Tolerance: Monte Carlo error only (Gauss-Newton solves each quadratic exactly). The
    sample mean's error has standard deviation ``sqrt(P_ii / N)`` and a sample covariance
    entry's ``sqrt((P_ii P_jj + P_ij^2) / N)``; 4 of them (a 6e-5 two-sided chance per
    entry, fixed seed) at N = 200 and N = 4000, so the bound shrinks as ``1 / sqrt(N)``.
    """
    a, b, h, r_std, xb, pb, b_root, p_std, y = _linear_problem()
    mean, cov = _smoother_posterior(a, b, h, r_std, xb, pb, b_root, p_std, y)
    times = torch.arange(1.0, len(y) + 1, dtype=F64)
    result = fourdvar(_linear_advance(a, b), xb, pb, 0.0, times, y, h, r_std,
                      background_sqrt=b_root, parameter_std=p_std, window=len(y),
                      shift=len(y), optimizer="gauss-newton", max_iter=3,
                      members=members, generator=torch.Generator().manual_seed(members))
    p = result.ensemble_parameters[0]
    x0 = torch.linalg.solve(a, (result.ensemble[0] - p[:, :1] * b).T).T
    z = torch.cat([x0, p], dim=1)
    assert z.shape == (members, len(mean))
    sd = cov.diagonal().sqrt()
    assert ((z.mean(0) - mean).abs() <= 4 * sd / members ** 0.5).all()
    bound = 4 * ((sd[:, None] * sd[None]) ** 2 + cov ** 2).sqrt() / members ** 0.5
    assert ((torch.cov(z.T) - cov).abs() <= bound).all()
    assert torch.allclose(result.analysis, result.ensemble.mean(1))


def test_parameters_through_the_initial_state_equal_the_linear_smoother():
    """``initial(p) = c p``: a window starting at t0 moves the start state by
    ``c (p - pb)``, so ``p`` is estimated through it; Gauss-Newton on the linear problem
    is the closed-form posterior mean in control space (1e-10: one exact step)."""
    a, _, h, r_std, xb, pb, b_root, p_std, y = _linear_problem()
    c = torch.linspace(1.0, 2.0, len(xb), dtype=F64)
    zero = torch.zeros(len(xb), dtype=F64)
    times = torch.arange(1.0, len(y) + 1, dtype=F64)
    result = fourdvar(_linear_advance(a, zero), xb + c * pb, pb, 0.0, times, y, h, r_std,
                      background_sqrt=b_root, parameter_std=p_std, window=len(y),
                      shift=len(y), optimizer="gauss-newton", max_iter=3,
                      initial=lambda p: p[:, :1] * c)
    root = torch.cat([b_root, (c * p_std)[:, None]], dim=1)
    g = torch.cat([h @ torch.linalg.matrix_power(a, k) @ root for k in range(1, len(y) + 1)])
    innovation = y.reshape(-1) - torch.cat([h @ torch.linalg.matrix_power(a, k) @ (xb + c * pb)
                                            for k in range(1, len(y) + 1)])
    v = torch.linalg.solve(torch.eye(root.shape[1], dtype=F64) + g.T @ g / r_std ** 2,
                           g.T @ innovation / r_std ** 2)
    assert torch.allclose(result.parameters[0], pb + p_std * v[-1], atol=1e-10, rtol=0)
    assert torch.allclose(result.analysis[0], a @ (xb + c * pb + root @ v), atol=1e-10)


def test_sliding_windows_cover_every_time_and_cycle_the_background():
    a, b, h, r_std, xb, pb, b_root, p_std, y = _linear_problem(cycles=7)
    times = torch.arange(1.0, 8.0, dtype=F64)
    result = fourdvar(_linear_advance(a, b), xb, pb, 0.0, times, y, h, r_std,
                      background_sqrt=b_root, window=3, shift=2)
    assert torch.isfinite(result.analysis).all()
    assert result.windows == [(0, 2), (1, 4), (3, 6), (4, 7)]
    # The first window alone is the smoother over its two observations.
    expected, _ = _smoother_posterior(a, b, h, r_std, xb, pb, b_root,
                                      torch.zeros(1, dtype=F64), y[:2])
    first = a @ expected[:-1] + pb * b
    assert torch.allclose(result.analysis[0], first, atol=1e-9)


def test_hybrid_background_root_factorises_the_hybrid_covariance():
    generator = torch.Generator().manual_seed(1)
    members = torch.randn(6, 4, generator=generator, dtype=F64)
    root = background_sqrt(4, std=torch.tensor([1.0, 2.0, 3.0, 4.0]), ensemble=members,
                           ensemble_weight=0.3)
    expected = 0.7 * torch.diag(torch.tensor([1.0, 4.0, 9.0, 16.0], dtype=F64)) \
        + 0.3 * torch.cov(members.T)
    assert torch.allclose(root @ root.T, expected)


@pytest.fixture(scope="module")
def lorenz_case():
    truth = xl.simulate("lorenz96", runs=1, seed=3, preset="small", n_outputs=13,
                        output_every=2).isel(run=0)
    obs = truth.ldensf.observe(stations="40", noise=0.1, seed=0)
    return truth, obs


def test_adapter_reduces_the_error_below_the_prior(lorenz_case):
    truth, obs = lorenz_case
    model = xl.simulator("lorenz96", preset="small")
    analysis = obs.ldensf.assimilate(model, method="4dvar", window=2, seed=0)
    assert analysis.sizes["member"] == 1
    assert analysis.attrs["xldensf_method"] == "4dvar"
    assert analysis.attrs["xldensf_wall_time_s"] > 0
    assert {"cost_function", "iterations", "F"} <= set(analysis.data_vars)
    # The prior: the same background (first prior draw of the seed) run freely.
    background = xl.simulator("lorenz96", preset="small")
    generator = torch.Generator().manual_seed(0)
    draws = background.initial_state(background.draw_parameters(20, generator), generator)
    free = [draws[:1]]
    for _ in range(len(truth.time) - 1):
        free.append(background.advance(free[-1], background.default_parameters(1), 0.0, 0.1))
    prior_error = np.sqrt(np.mean((torch.cat(free)[:, 0].numpy() - truth["x"].values) ** 2))
    error = np.sqrt(np.mean((analysis["x"].isel(member=0).values - truth["x"].values)[-6:]
                            ** 2))
    assert error < 0.2 * prior_error
    # The forcing (background 8, the case default) moves towards the truth's.
    truth_forcing = float(truth["F"])
    assert abs(float(analysis["F"][-1, 0]) - truth_forcing) < abs(8.0 - truth_forcing)


def test_adapter_rml_ensemble_has_members_and_spread(lorenz_case):
    truth, obs = lorenz_case
    analysis = obs.isel(time=slice(0, 6)).ldensf.assimilate(
        xl.simulator("lorenz96", preset="small"), method="4dvar", window=2, members=4,
        seed=0)
    assert analysis.sizes["member"] == 4
    assert analysis.attrs["xldensf_members"] == 4
    assert analysis["cost_function"].dims == ("time", "member")
    spread = analysis["x"].std("member")
    assert bool((spread > 0).all()) and bool(np.isfinite(analysis["x"]).all())


def test_tsunami_source_position_through_the_initial_state():
    """x0, y0 alone in the control (background_std=0), entering through the initial bump:
    the estimate moves from the prior centre towards the truth's."""
    truth = xl.simulate("tsunami", runs=1, seed=1000, preset="small", n_outputs=4,
                        progress=False).isel(run=0)
    obs = truth.ldensf.observe(stations="4x4", noise=0.1, seed=0)
    model = xl.simulator("tsunami", preset="small", n_outputs=4)
    analysis = obs.ldensf.assimilate(model, method="4dvar", window=4, background_std=0.0,
                                     initial_state_parameters=True, seed=0)
    centre = model.default_parameters(1)[0].numpy()
    for j, name in enumerate(("x0", "y0")):
        error = abs(float(analysis[name][-1, 0]) - float(truth[name]))
        assert error < 0.25 * abs(centre[j] - float(truth[name]))


def test_initial_state_parameters_need_a_deterministic_initial_state(lorenz_case):
    _, obs = lorenz_case
    with pytest.raises(ConfigurationError, match="deterministic"):
        obs.ldensf.assimilate(xl.simulator("lorenz96", preset="small"), method="4dvar",
                              initial_state_parameters=True, seed=0)


def test_window_longer_than_the_observations_is_refused(lorenz_case):
    _, obs = lorenz_case
    with pytest.raises(ConfigurationError, match="window"):
        obs.ldensf.assimilate(xl.simulator("lorenz96", preset="small"), method="4dvar",
                              window=50, seed=0)


class DetachedLorenz96(Lorenz96Simulator):
    """Lorenz-96 whose step leaves autograd (as a numpy-backed model would)."""

    def step(self, internal, parameters, time):
        return super().step(internal.detach(), parameters.detach(), time)


def test_model_without_gradients_is_refused(lorenz_case):
    _, obs = lorenz_case
    model = DetachedLorenz96(Lorenz96Config.small())
    with pytest.raises(XLDEnSFError, match="differentiable model"):
        obs.ldensf.assimilate(model, method="4dvar", window=2, seed=0)


@pytest.mark.parametrize("settings, match", [
    ({"window": 2, "shift": 3}, "shift"),
    ({"optimizer": "newton"}, "optimizer"),
    ({"return_forecasts": True}, "return_forecasts"),
    ({"ensemble_weight": 1.5}, "ensemble_weight"),
])
def test_bad_settings_are_refused(lorenz_case, settings, match):
    _, obs = lorenz_case
    with pytest.raises(ConfigurationError, match=match):
        obs.ldensf.assimilate(xl.simulator("lorenz96", preset="small"), method="4dvar",
                              seed=0, **settings)
