"""A 4D ensemble-variational smoother (4DEnVar) with chained windows, gradients by autograd.

Over each window of observation times the start state is ``x0 = xb + L w`` and ::

    J(w) = 1/2 |w|^2 + 1/2 sum_k |R_k^{-1/2} (y_k - H_k(M_{0->k}(x0)))|^2

is minimised over ``w``: ``L`` is the ensemble anomalies over ``sqrt(N - 1)``
(``control="ensemble"``, 4DEnVar in the ensemble subspace) or the symmetric square root of
the ensemble covariance (``control="full"``, one control per state component; the same
``B``, for a ``B`` given at the kernel level with :func:`envar_window`). ``H_k`` and ``M``
may both be nonlinear; they are differentiated by autograd (no adjoint, no tangent-linear
code). Minimisers: Gauss-Newton (the Jacobian of the window's predictions in one reverse
pass through a batch of copies) or L-BFGS.

Uncertainty (``uncertainty=``): ``"rml"``, randomised maximum likelihood -- every member
``i`` minimises the same cost from its own background ``x_i`` with perturbed observations
``y + eps_i``; exact posterior samples for a linear-Gaussian problem. With Gauss-Newton the
unperturbed problem is solved first and the members start at its minimiser and share its
Jacobian there (their first step is the RML sample of the problem linearised at the
minimiser) unless ``jacobian="member"`` (each member from its own background with its own
Jacobian; exact RML minimisers for nonlinear models, ``N`` times the cost).
``"hessian"``: the analysis members are the minimiser plus the posterior anomalies
``L (I + G^T G)^{-1/2}`` (Gauss-Newton Hessian in the control space, a deterministic
square root as in the ETKF).

Calibration (``calibration=``, applied to each window's analysis members about its
minimiser): ``"none"``; ``"variance-factor"``, the a-posteriori variance factor
``sigma0^2 = 2 J_min / m`` (``m`` observations in the window; ``E[2 J_min] = m`` when ``B``
and ``R`` are right, Talagrand 1999; Desroziers & Ivanov 2001), the members' anomalies
scaled by ``sqrt(max(1, sigma0^2))``; ``"model-error"``, the misfit left above the
observation noise, ``|d_a|^2 - (m - p)`` with ``p = sum s^2 / (1 + s^2)`` the analysis'
degrees of freedom (``s`` the singular values of ``G``), taken as the variance of an error
the model cannot represent and added to the members' own variance at the observations,
``p``: per observation ``q = (|d_a|^2 - m + p) / (m - p)`` in units of the noise, pooled
over the windows so far (none before the second window) and less one standard error of
its sampling noise (``sqrt(2 / sum (m - p))``, a one-sided 84 % lower bound, so that a
perfect model is nearly left alone), the output members' anomalies scaled by
``sqrt(1 + max(0, q) (m - p) / p)`` (:func:`model_error_factor`); the next window starts
from the uncalibrated members. Both single-window factors (:func:`calibration_factor`) are
1 in expectation for a perfect linear-Gaussian problem.

Windows are chained: window ``j`` holds ``window`` consecutive observation times and its
start is the previous window's last observation time (``t0`` for the first); the analysis
members at that time, inflated, are the next background, so every observation time gets an
analysis ensemble.

Examples
--------
>>> import torch
>>> decay = lambda x, t0, duration: x * 0.9 ** round(duration)
>>> observe = lambda x, index: x
>>> background = torch.randn(20, 2, dtype=torch.float64,
...                          generator=torch.Generator().manual_seed(0))
>>> times = torch.arange(1.0, 5.0)
>>> values = torch.ones(4, 2, dtype=torch.float64) * 0.5
>>> result = envar(decay, observe, background, 0.0, times, values, 0.1, window=2,
...                generator=torch.Generator().manual_seed(1))
>>> tuple(result.analysis.shape), tuple(result.mean.shape)
((4, 20, 2), (4, 2))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigurationError, DataError, check_name, check_positive_int, expected_found
from .envar_calibration import ENVAR_CALIBRATIONS, calibration_factor, model_error_factor
from .fourdvar import check_differentiable

__all__ = ["EnVarResult", "WindowAnalysis", "envar", "envar_window", "window_plan",
           "ENVAR_CONTROLS", "ENVAR_OPTIMIZERS", "ENVAR_UNCERTAINTIES", "ENVAR_JACOBIANS",
           "ENVAR_CALIBRATIONS", "calibration_factor", "model_error_factor"]

#: Control vectors: the ensemble subspace (4DEnVar) or one per state component.
ENVAR_CONTROLS = ("ensemble", "full")
#: Minimisers of the window cost.
ENVAR_OPTIMIZERS = ("gauss-newton", "lbfgs")
#: Analysis ensembles: perturbed minimisations or the Gauss-Newton Hessian's square root.
ENVAR_UNCERTAINTIES = ("rml", "hessian")
#: Jacobians of the RML members under Gauss-Newton: the mean problem's, or each member's.
ENVAR_JACOBIANS = ("mean", "member")

Forward = Callable[[torch.Tensor], torch.Tensor]
#: Halvings of a Gauss-Newton step that raises its problem's cost (a nonlinear model).
_BACKTRACKS = 6


@dataclass
class WindowAnalysis:
    """The minimisers of one window.

    Attributes
    ----------
    state
        ``(n,)`` minimiser of the unperturbed problem (the analysis mean of the start).
    members
        ``(N, n)`` minimisers of the perturbed problems (empty ``(0, n)`` without any).
    posterior_root
        ``(n, r)``: ``L (I + G^T G)^{-1/2}`` with ``G`` the Jacobian at ``state``; its outer
        product is the Gauss-Newton posterior covariance of the start.
    cost
        Final cost of the unperturbed problem.
    iterations
        Minimiser iterations.
    misfit
        ``|d_a|^2``: the squared normalised misfit of the unperturbed minimiser.
    n_obs
        Observations of the window (NaN excluded).
    dof
        ``p = sum s^2 / (1 + s^2)`` over the singular values ``s`` of ``G``: the analysis'
        degrees of freedom, ``tr(H A H^T R^-1)`` (the members' variance at the
        observations in units of the noise).
    """

    state: torch.Tensor
    members: torch.Tensor
    posterior_root: torch.Tensor
    cost: float
    iterations: int
    misfit: float = math.nan
    n_obs: int = 0
    dof: float = math.nan


@dataclass
class EnVarResult:
    """The chained smoother's analyses.

    Attributes
    ----------
    analysis
        ``(n_times, N, n)`` analysis members at each observation time.
    mean
        ``(n_times, n)`` trajectory of each window's unperturbed minimiser.
    cost
        ``(n_times,)`` final cost of the window of each time.
    iterations
        ``(n_times,)`` minimiser iterations of that window.
    windows
        ``(first, end)`` observation indices of each window.
    variance_factor
        ``(n_times,)`` the window's a-posteriori variance factor ``2 J_min / m`` (a
        diagnostic: about 1 when ``B`` and ``R`` are right).
    calibration
        ``(n_times,)`` the variance factor applied to the window's analysis members (1 with
        ``calibration="none"``).
    """

    analysis: torch.Tensor
    mean: torch.Tensor
    cost: torch.Tensor
    iterations: torch.Tensor
    variance_factor: torch.Tensor
    calibration: torch.Tensor
    windows: list[tuple[int, int]] = field(default_factory=list)


def _misfits(forward: Forward, states: torch.Tensor, values: torch.Tensor,
             inv_std: torch.Tensor) -> torch.Tensor:
    """``R^{-1/2} (y - H(M(x)))`` ``(batch, m)``; NaN observations weigh 0."""
    predicted = forward(states)
    return torch.where(torch.isnan(values), 0.0, (values - predicted) * inv_std)


def _jacobians(forward: Forward, states: torch.Tensor, values: torch.Tensor,
               inv_std: torch.Tensor) -> torch.Tensor:
    """``dd/dx`` ``(batch, m, n)`` of the misfits at ``states`` ``(batch, n)``: one reverse
    pass through ``m`` copies of each state, copy ``i`` contributing misfit ``i`` only."""
    batch, n = states.shape
    m = values.shape[-1]
    copies = states.detach().repeat_interleave(m, dim=0).requires_grad_(True)
    with torch.enable_grad():
        # the Jacobian needs only where observations are missing, the same for every problem
        misfit = _misfits(forward, copies, values[:1].expand(len(copies), -1),
                          inv_std[:1].expand(len(copies), -1))
        if not misfit.requires_grad:
            raise ConfigurationError(expected_found(
                "a differentiable model", "dynamics and decoder with an autograd graph",
                "outputs without gradient (the model detaches or leaves torch)"))
        picked = misfit.reshape(batch, m, m).diagonal(dim1=1, dim2=2)
        (rows,) = torch.autograd.grad(picked.sum(), copies)
    return rows.reshape(batch, m, n)


def _normal_power(gain: torch.Tensor, power: float, vectors: torch.Tensor) -> torch.Tensor:
    """``vectors (..., k, r) @ (I + G^T G)^power`` from the thin SVD of ``G`` ``(..., m, r)``,
    ``I + V ((1 + s^2)^power - 1) V^T``: cheap when ``m < r`` (many members, few
    observations)."""
    _, singular, vh = torch.linalg.svd(gain, full_matrices=False)
    scale = (1.0 + singular.square()) ** power - 1.0
    return vectors + ((vectors @ vh.mT) * scale[..., None, :]) @ vh


def _gauss_newton_steps(forward: Forward, centers: torch.Tensor, root: torch.Tensor,
                        values: torch.Tensor, inv_std: torch.Tensor, w: torch.Tensor,
                        jacobian: str | torch.Tensor, iterations: int,
                        tol: float) -> tuple[torch.Tensor, int]:
    """Gauss-Newton on every problem ``b`` from ``w``: ``(I + G^T G) dw = G^T d - w``, each
    step halved (up to :data:`_BACKTRACKS` times) while it raises that problem's cost.
    ``jacobian``: ``"member"`` (each problem its own ``G``), ``"mean"`` (problem 0's at its
    iterate, for all) or a fixed ``(m, r)`` ``G`` for all."""
    done = 0
    while done < iterations:
        states = centers + w @ root.T
        with torch.no_grad():
            misfit = _misfits(forward, states, values, inv_std)
        if isinstance(jacobian, torch.Tensor):
            gain = jacobian[None]
        else:
            at = states[:1] if jacobian == "mean" else states
            gain = -_jacobians(forward, at, values[:1], inv_std[:1]) @ root  # G = H' L
        rhs = (gain.mT @ misfit[..., None])[..., 0] - w
        step = _normal_power(gain, -1.0, rhs[:, None])[:, 0] if len(gain) > 1 \
            else _normal_power(gain[0], -1.0, rhs)
        cost = 0.5 * (w.square().sum(-1) + misfit.square().sum(-1))
        for _ in range(_BACKTRACKS):  # halve the steps that raise a problem's cost
            trial = w + step
            with torch.no_grad():
                after = _misfits(forward, centers + trial @ root.T, values, inv_std)
            worse = 0.5 * (trial.square().sum(-1) + after.square().sum(-1)) > cost
            if not bool(worse.any()):
                break
            step = torch.where(worse[:, None], 0.5 * step, step)
        w, done = w + step, done + 1
        if float(step.square().sum(-1).max()) < tol * root.shape[1]:
            break
    return w, done


def _gauss_newton(forward: Forward, centers: torch.Tensor, root: torch.Tensor,
                  values: torch.Tensor, inv_std: torch.Tensor, jacobian: str,
                  iterations: int, tol: float) -> tuple[torch.Tensor, int]:
    """Gauss-Newton on the unperturbed problem 0 and the perturbed (RML) problems 1...

    ``jacobian="member"``: every problem from its own background with its own Jacobian.
    ``"mean"``: problem 0 first, to convergence, from the lowest-cost of the mean and the
    members' backgrounds (a cheap global start for a multimodal cost: one forward pass);
    then every member starts at that minimiser
    ``x_a`` (coefficients ``w_a - v_i`` with ``c_i = c_0 + L v_i``) and iterates with the
    Jacobian at ``x_a`` on its own nonlinear cost. Its first step is the RML sample of the
    problem linearised at the minimiser, where the shared Jacobian is valid (started from
    their own backgrounds across a wide prior, the members would take steps from a Jacobian
    far from their states). For a linear model every start gives the same minimisers.
    """
    w = root.new_zeros(len(centers), root.shape[1])
    if jacobian == "member" or len(centers) == 1:
        return _gauss_newton_steps(forward, centers, root, values, inv_std, w, jacobian,
                                   iterations, tol)
    offsets = (centers[1:] - centers[:1]) @ torch.linalg.pinv(root).T  # v_i
    with torch.no_grad():  # start at the background member of lowest cost, or the mean
        starts = torch.cat([w[:1], offsets])
        misfit = _misfits(forward, centers[:1] + starts @ root.T, values[:1], inv_std[:1])
        best = int(torch.argmin(starts.square().sum(-1) + misfit.square().sum(-1)))
    w0, done = _gauss_newton_steps(forward, centers[:1], root, values[:1], inv_std[:1],
                                   starts[best:best + 1], "mean", iterations, tol)
    state = centers[:1] + w0 @ root.T
    gain = -_jacobians(forward, state, values[:1], inv_std[:1])[0] @ root
    members, _ = _gauss_newton_steps(forward, centers[1:], root, values[1:], inv_std[1:],
                                     w0 - offsets, gain, iterations, tol)
    return torch.cat([w0, members]), done


def _lbfgs(forward: Forward, centers: torch.Tensor, root: torch.Tensor, values: torch.Tensor,
           inv_std: torch.Tensor, iterations: int, tol: float) -> tuple[torch.Tensor, int]:
    """L-BFGS (strong Wolfe) on the sum of the independent costs of every problem."""
    w = root.new_zeros(len(centers), root.shape[1]).requires_grad_(True)
    optimizer = torch.optim.LBFGS([w], lr=1.0, max_iter=iterations, history_size=20,
                                  tolerance_grad=tol, tolerance_change=1e-14,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        with torch.enable_grad():
            misfit = _misfits(forward, centers + w @ root.T, values, inv_std)
            cost = 0.5 * (w.square().sum() + misfit.square().sum())
            cost.backward()
        return cost

    optimizer.step(closure)
    return w.detach(), int(optimizer.state[w].get("n_iter", 0))


def envar_window(
    forward: Forward,
    background: torch.Tensor,
    root: torch.Tensor,
    values: torch.Tensor,
    obs_std: float | torch.Tensor,
    *,
    members: torch.Tensor | None = None,
    perturbations: torch.Tensor | None = None,
    optimizer: str = "gauss-newton",
    jacobian: str = "mean",
    iterations: int = 10,
    tol: float = 1e-8,
) -> WindowAnalysis:
    """Minimise one window's cost from the background and, for RML, from each member.

    Parameters
    ----------
    forward
        ``forward(x0 (batch, n)) -> (batch, m)``: the window's predicted observations
        (dynamics then observation operator at every observation time, concatenated).
    background
        ``(n,)`` background start state ``xb``.
    root
        ``(n, r)``: ``L`` with ``B = L L^T``.
    values
        ``(m,)`` observations (NaN: missing).
    obs_std
        Observation error standard deviation, a number or ``(m,)``.
    members
        ``(N, n)`` backgrounds of the perturbed (RML) problems; ``None``: none.
    perturbations
        ``(N, m)`` observation perturbations of those problems (default zero).
    optimizer
        ``"gauss-newton"`` or ``"lbfgs"``.
    jacobian
        Gauss-Newton with members: ``"mean"`` (the unperturbed problem is minimised first;
        the members start at its minimiser and share its Jacobian there) or ``"member"``
        (each from its own background with its own Jacobian).
    iterations, tol
        Most iterations; Gauss-Newton stops when every step's ``|dw|^2 < tol * r``, L-BFGS
        when the gradient's largest component is below ``tol``.

    Returns
    -------
    WindowAnalysis
        The minimisers, the posterior square root at the unperturbed one, cost, iterations.

    Examples
    --------
    >>> import torch
    >>> linear = lambda x: x @ torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    >>> result = envar_window(linear, torch.zeros(2, dtype=torch.float64),
    ...                       torch.eye(2, dtype=torch.float64),
    ...                       torch.tensor([5.0], dtype=torch.float64), 1.0)
    >>> [round(v, 6) for v in result.state.tolist()]  # B H^T (H B H^T + R)^-1 y
    [0.833333, 1.666667]
    """
    check_name("optimizer", optimizer, ENVAR_OPTIMIZERS)
    check_name("jacobian", jacobian, ENVAR_JACOBIANS)
    iterations = check_positive_int("iterations", iterations)
    background = background.reshape(-1)
    values = values.reshape(1, -1).to(background)
    inv_std = (1.0 / torch.as_tensor(obs_std, dtype=background.dtype)).to(background)
    inv_std = inv_std.expand(values.shape)
    centers, targets = background[None], values
    if members is not None:
        members = members.to(background)
        shifted = values.expand(len(members), -1)
        if perturbations is not None:
            shifted = shifted + perturbations.to(background)
        centers = torch.cat([centers, members])
        targets = torch.cat([values, shifted])
    batch_inv_std = inv_std.expand(targets.shape)
    if optimizer == "gauss-newton":
        w, done = _gauss_newton(forward, centers, root, targets, batch_inv_std, jacobian,
                                iterations, tol)
    else:
        w, done = _lbfgs(forward, centers, root, targets, batch_inv_std, iterations, tol)
    states = centers + w @ root.T
    gain = -_jacobians(forward, states[:1], values, inv_std)[0] @ root
    posterior = _normal_power(gain, -0.5, root)
    singular = torch.linalg.svdvals(gain)
    with torch.no_grad():
        misfit = float(_misfits(forward, states[:1], values, inv_std).square().sum())
    cost = 0.5 * (float(w[0].square().sum()) + misfit)
    return WindowAnalysis(states[0].detach(), states[1:].detach(), posterior.detach(), cost,
                          done, misfit, int((~torch.isnan(values)).sum()),
                          float((singular.square() / (1.0 + singular.square())).sum()))


def window_plan(n_times: int, window: int) -> list[tuple[int, int]]:
    """``(first, end)`` observation indices of consecutive windows of ``window`` times
    (the last may be shorter).

    Examples
    --------
    >>> window_plan(5, 2)
    [(0, 2), (2, 4), (4, 5)]
    """
    window = check_positive_int("window", window)
    if window > n_times:
        raise ConfigurationError(expected_found("window", f"at most the {n_times} observation "
                                                "times", window))
    return [(first, min(first + window, n_times)) for first in range(0, n_times, window)]


def _background_root(ensemble: torch.Tensor, control: str) -> torch.Tensor:
    anomalies = (ensemble - ensemble.mean(0)).T / math.sqrt(len(ensemble) - 1)
    if control == "ensemble":
        return anomalies
    values, vectors = torch.linalg.eigh(anomalies @ anomalies.T)
    return (vectors * values.clamp(min=0.0).sqrt()) @ vectors.T


def envar(
    advance: Callable[[torch.Tensor, float, float], torch.Tensor],
    observe: Callable[[torch.Tensor, int], torch.Tensor],
    background: torch.Tensor,
    t0: float,
    times: Sequence[float] | torch.Tensor,
    values: torch.Tensor,
    obs_std: float | torch.Tensor,
    *,
    window: int = 5,
    control: str = "ensemble",
    uncertainty: str = "rml",
    optimizer: str = "gauss-newton",
    jacobian: str = "mean",
    iterations: int = 10,
    tol: float = 1e-8,
    inflation: float = 1.0,
    calibration: str = "none",
    bound: Callable[[torch.Tensor], torch.Tensor] | None = None,
    check_gradient: bool = True,
    generator: torch.Generator | None = None,
    progress: Callable[[Any], Any] | None = None,
) -> EnVarResult:
    """Run the chained 4DEnVar smoother over all observation times.

    Parameters
    ----------
    advance
        ``advance(x (batch, n), start, duration) -> (batch, n)``, differentiable.
    observe
        ``observe(x (batch, n), index) -> (batch, m)``: predicted observations at
        observation time ``index``, differentiable.
    background
        ``(N, n)`` background ensemble at ``t0`` (``N >= 2``).
    t0
        Time of the background, ``<=`` the first observation time.
    times
        ``(n_times,)`` non-decreasing observation times.
    values
        ``(n_times, m)`` observations (NaN: missing).
    obs_std
        A number or ``(n_times, m)``.
    window
        Observation times per window.
    control, uncertainty, optimizer, jacobian
        See :data:`ENVAR_CONTROLS`, :data:`ENVAR_UNCERTAINTIES`, :data:`ENVAR_OPTIMIZERS`,
        :data:`ENVAR_JACOBIANS` and :func:`envar_window`.
    iterations, tol
        Minimiser settings per window.
    inflation
        Multiplicative inflation of each window's background anomalies (>= 1).
    calibration
        :data:`ENVAR_CALIBRATIONS`: the analysis members' anomalies about the window's
        minimiser are scaled by the square root of :func:`calibration_factor` (at least 1;
        ``"model-error"``: of :func:`model_error_factor`, pooled over the windows so far,
        from the second window on, the output only).
    bound
        Applied to analysed start states (e.g. keep parameters in their range).
    check_gradient
        Check the first window's map against a finite difference first.
    generator
        Random numbers of the RML observation perturbations.
    progress
        Optional wrapper of the window iterator.

    Returns
    -------
    EnVarResult
        Analysis members and the minimiser's trajectory at every observation time.

    Raises
    ------
    ConfigurationError
        A window longer than the observations, a model without gradients, bad settings.
    DataError
        Observation times before ``t0`` or decreasing.
    """
    # Long by its docstring; the body is the window loop (build, minimise, propagate).
    check_name("control", control, ENVAR_CONTROLS)
    check_name("uncertainty", uncertainty, ENVAR_UNCERTAINTIES)
    check_name("calibration", calibration, ENVAR_CALIBRATIONS)
    times_t = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
    plan = window_plan(len(times_t), window)
    if (torch.diff(torch.cat([times_t.new_tensor([t0]), times_t])) < 0).any():
        raise DataError(expected_found("observation times", f"non-decreasing and >= t0 = {t0}",
                                       times_t.tolist()[:5]))
    if not (inflation >= 1.0 and math.isfinite(inflation)):
        raise ConfigurationError(expected_found("inflation", "a number >= 1", inflation))
    ensemble = background.detach().clone()
    if ensemble.ndim != 2 or len(ensemble) < 2:
        raise ConfigurationError(expected_found("background ensemble", "(members >= 2, n)",
                                                tuple(ensemble.shape)))
    values = values.to(ensemble)
    std = torch.as_tensor(obs_std, dtype=ensemble.dtype).to(ensemble).expand(values.shape)
    n_times, (n_members, n) = len(times_t), ensemble.shape
    analysis = ensemble.new_full((n_times, n_members, n), math.nan)
    mean_path = ensemble.new_full((n_times, n), math.nan)
    costs, counts = torch.zeros(n_times, dtype=torch.float64), torch.zeros(n_times)
    factors, applied = (torch.ones(n_times, dtype=torch.float64) for _ in range(2))
    start, pooled = float(t0), (0.0, 0.0, 0)
    for number, (first, end) in enumerate(progress(plan) if progress is not None else plan):
        def trajectory(x: torch.Tensor, first: int = first, end: int = end,
                       begin: float = start) -> list[torch.Tensor]:
            states, time = [], begin
            for k in range(first, end):
                duration = float(times_t[k]) - time
                x = advance(x, time, duration) if duration > 0 else x
                time = float(times_t[k])
                states.append(x)
            return states

        def forward(x: torch.Tensor, first: int = first,
                    trajectory: Callable[..., list[torch.Tensor]] = trajectory) -> torch.Tensor:
            return torch.cat([observe(state, first + i)
                              for i, state in enumerate(trajectory(x))], dim=-1)

        if number == 0 and check_gradient:
            check_differentiable(lambda x, p, t, d: forward(x), ensemble.mean(0)[None],
                                 ensemble.new_zeros(1, 0), start, 0.0,
                                 rtol=1e-3 if ensemble.dtype == torch.float64 else 5e-2)
        center = ensemble.mean(0)
        ensemble = center + inflation * (ensemble - center)
        root = _background_root(ensemble, control)
        window_values = values[first:end].reshape(-1)
        window_std = std[first:end].reshape(-1)
        perturbations = None
        if uncertainty == "rml":
            noise = torch.randn((n_members, len(window_values)), generator=generator,
                                dtype=torch.float64).to(ensemble)
            perturbations = noise * window_std
        result = envar_window(forward, center, root, window_values, window_std,
                              members=ensemble if uncertainty == "rml" else None,
                              perturbations=perturbations, optimizer=optimizer,
                              jacobian=jacobian, iterations=iterations, tol=tol)
        if uncertainty == "rml":
            starts = result.members
        elif control == "ensemble":  # the ETKF's symmetric square root: mean-preserving
            starts = result.state + math.sqrt(n_members - 1) * result.posterior_root.T
        else:
            draws = torch.randn((n_members, root.shape[1]), generator=generator,
                                dtype=torch.float64).to(ensemble)
            draws = (draws - draws.mean(0)) * math.sqrt(n_members / (n_members - 1))
            starts = result.state + draws @ result.posterior_root.T
        state = result.state[None]
        if calibration == "model-error":  # pooled over the windows so far
            pooled = (pooled[0] + result.misfit - result.n_obs + result.dof,
                      pooled[1] + result.n_obs - result.dof, pooled[2] + 1)
            scale = model_error_factor(result, *pooled)
        else:
            scale = max(1.0, calibration_factor(result, calibration))
        calibrated = (result.state + math.sqrt(scale) * (starts - result.state)
                      if scale > 1.0 else starts)
        # the variance factor scales B and R alike: the next background too; an unrepresented
        # (model) error is the output's, not the latent prior's: the next background is the
        # uncalibrated members
        chained = calibration != "model-error" or scale == 1.0
        if chained:
            starts = calibrated
        if bound is not None:
            starts, state, calibrated = bound(starts), bound(state), bound(calibrated)
        with torch.no_grad():
            members_path, centre_path = trajectory(starts), trajectory(state)
            output_path = members_path if chained else trajectory(calibrated)
        for i, k in enumerate(range(first, end)):
            analysis[k], mean_path[k] = output_path[i], centre_path[i][0]
            costs[k], counts[k] = result.cost, result.iterations
            factors[k] = calibration_factor(result, "variance-factor")
            applied[k] = scale
        ensemble = members_path[-1].clone()
        start = float(times_t[end - 1])
    return EnVarResult(analysis, mean_path, costs, counts, factors, applied,
                       plan)
