"""Strong-constraint 4D-Var over sliding windows, gradients by automatic differentiation.

Over each window the control vector ``v = [v_x, v_p]`` sets the state at the window's start
and the parameters, ``x0 = xb + L v_x`` and ``p = pb + sigma_p * v_p`` (the control-variable
transform, ``B = L L^T``), and the cost ::

    J(v) = 1/2 |v|^2 + 1/2 sum_k |R_k^{-1/2} (y_k - H_k M_{0->k}(x0, p))|^2

is minimised by Gauss-Newton (the Jacobian of the window's observations in one pass
through a batch of copies of the start state: forward mode with one copy per control when
there are fewer controls than observations, else reverse mode with one copy per
observation) or by L-BFGS with a strong-Wolfe line search (the gradient by reverse mode).
With ``members > 1`` an ensemble of perturbed minimisations (randomised maximum
likelihood, :func:`~xldensf.filters.rml.perturbed_members`) runs batched. No adjoint is
written by hand: ``advance`` must be differentiable, which :func:`check_differentiable`
verifies against a finite difference before the first window.

Windows span ``window`` observation times and slide by ``shift`` of them; each window
fits its newest ``shift`` observations (or all of its observations, ``reuse_observations``)
and reports the analysis (the forecast of its optimal start state) at its newest ``shift``
observation times, so every observation time has one. The background of the next window
is the previous window's optimal start state propagated to the new start (the cycling of
DAPPER's ``Var4D``, Bocquet & Sakov 2013).

Examples
--------
>>> import torch
>>> decay = lambda state, params, t0, duration: state * 0.9 ** round(duration)
>>> times = torch.arange(1.0, 6.0)
>>> truth = torch.stack([torch.ones(3) * 0.9 ** t for t in range(1, 6)])
>>> result = fourdvar(decay, torch.zeros(3), torch.zeros(0), 0.0, times, truth,
...                   torch.eye(3), 0.01, background_sqrt=torch.eye(3), window=2)
>>> tuple(result.analysis.shape), bool((result.analysis - truth).abs().max() < 0.05)
((5, 3), True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.autograd import forward_ad

from ..errors import ConfigurationError, DataError, check_positive_int, expected_found
from .rml import Initial, perturbed_members

__all__ = ["FourDVarResult", "WindowProblem", "fourdvar", "background_sqrt", "check_differentiable",
           "window_cost", "OPTIMIZERS"]

#: Minimisers of the window cost.
OPTIMIZERS = ("gauss-newton", "lbfgs")

#: Above this many observations per window times control directions, "auto" uses L-BFGS
#: (batch 1) rather than Gauss-Newton (the model batched over the window's observations).
GAUSS_NEWTON_MAX_SIZE = 200_000

Advance = Callable[[torch.Tensor, torch.Tensor, float, float], torch.Tensor]


@dataclass
class FourDVarResult:
    """Analyses of a 4D-Var run.

    Attributes
    ----------
    analysis
        ``(n_times, n_state)``: the analysis at each observation time (the members' mean).
    parameters
        ``(n_times, n_params)``: the parameters of the window that produced it (mean).
    cost
        ``(n_times,)``: the final cost of that window (mean over members).
    iterations
        ``(n_times,)``: the minimiser's iterations in that window.
    windows
        ``(first, end)`` observation indices of each window.
    ensemble, ensemble_parameters, ensemble_cost
        ``(n_times, members, ...)``: each member's analysis, parameters and cost (one
        member: the plain analysis).
    """

    analysis: torch.Tensor
    parameters: torch.Tensor
    cost: torch.Tensor
    iterations: torch.Tensor
    windows: list[tuple[int, int]] = field(default_factory=list)
    ensemble: torch.Tensor | None = None
    ensemble_parameters: torch.Tensor | None = None
    ensemble_cost: torch.Tensor | None = None


def background_sqrt(n_state: int, *, std: Any = None, covariance: torch.Tensor | None = None,
                    ensemble: torch.Tensor | None = None, ensemble_weight: float = 0.0,
                    dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A square root ``L`` (``B = L L^T``) of the background covariance, ``(n_state, r)``.

    The static part is ``diag(std)^2`` or ``covariance`` (symmetric square root); with an
    ``ensemble`` ``(members, n_state)`` the hybrid ``B = (1 - w) B_static + w P_ens``
    (``w = ensemble_weight``) is factored by stacking the two roots, so the control vector
    gains one entry per member.

    Examples
    --------
    >>> root = background_sqrt(3, std=2.0)
    >>> torch.allclose(root @ root.T, 4.0 * torch.eye(3, dtype=torch.float64))
    True
    >>> members = torch.randn(5, 3, dtype=torch.float64)
    >>> hybrid = background_sqrt(3, std=1.0, ensemble=members, ensemble_weight=0.5)
    >>> hybrid.shape
    torch.Size([3, 8])
    """
    if not 0.0 <= float(ensemble_weight) <= 1.0:
        raise ConfigurationError(expected_found("ensemble_weight", "a number in [0, 1]",
                                                ensemble_weight))
    if covariance is not None:
        covariance = torch.as_tensor(covariance, dtype=dtype)
        if covariance.shape != (n_state, n_state):
            raise ConfigurationError(expected_found("background covariance shape",
                                                    (n_state, n_state), tuple(covariance.shape)))
        values, vectors = torch.linalg.eigh(0.5 * (covariance + covariance.T))
        static = vectors * values.clamp(min=0.0).sqrt() @ vectors.T
    else:
        std = torch.as_tensor(1.0 if std is None else std, dtype=dtype)
        std = std.expand(n_state) if std.ndim == 0 else std.reshape(-1)
        if std.shape != (n_state,) or (std < 0).any():
            raise ConfigurationError(expected_found("background_std", f"{n_state} values >= 0",
                                                    tuple(std.shape)))
        static = torch.diag(std)
    weight = float(ensemble_weight)
    if ensemble is None:
        if weight > 0:
            raise ConfigurationError(expected_found("ensemble for ensemble_weight > 0",
                                                    "an ensemble (members, n_state)", None))
        return static
    ensemble = torch.as_tensor(ensemble, dtype=dtype)
    if ensemble.ndim != 2 or ensemble.shape[1] != n_state or ensemble.shape[0] < 2:
        raise ConfigurationError(expected_found("ensemble shape", f"(>= 2, {n_state})",
                                                tuple(ensemble.shape)))
    anomalies = (ensemble - ensemble.mean(0)).T / (ensemble.shape[0] - 1) ** 0.5
    return torch.cat([(1.0 - weight) ** 0.5 * static, weight ** 0.5 * anomalies], dim=1)


@dataclass
class WindowProblem:
    """One window's problem: the start time, the observation times as offsets from it, and
    per observation time the values (``(m,)``, or ``(batch, m)`` with one row per member),
    the operator ``(m, n_state)`` and ``1 / obs_std``.

    Examples
    --------
    >>> problem = WindowProblem(0.0, [1.0], [torch.ones(2)], [torch.eye(2)], [torch.ones(2)])
    >>> problem.offsets
    [1.0]
    """

    start: float
    offsets: list[float]
    values: list[torch.Tensor]
    operators: list[torch.Tensor]
    inv_std: list[torch.Tensor]

    @property
    def n_obs(self) -> int:
        """Observations in the window (per member)."""
        return sum(int(values.shape[-1]) for values in self.values)

    def repeated(self, copies: int) -> WindowProblem:
        """The problem with each member's values repeated ``copies`` times (batched rows)."""
        values = [y.reshape(-1, y.shape[-1]).repeat_interleave(copies, dim=0)
                  for y in self.values]
        return WindowProblem(self.start, self.offsets, values, self.operators, self.inv_std)


def _trajectory(advance: Advance, state: torch.Tensor, params: torch.Tensor,
                window: WindowProblem) -> list[torch.Tensor]:
    """States ``(batch, n_state)`` at the window's observation times."""
    states, time = [], window.start
    for offset in window.offsets:
        duration = window.start + offset - time
        state = advance(state, params, time, duration) if duration > 0 else state
        time = window.start + offset
        states.append(state)
    return states


def _normalized_misfits(states: list[torch.Tensor], window: WindowProblem) -> torch.Tensor:
    """``R^{-1/2} (y - H x)`` of every observation time, concatenated ``(batch, m)``;
    missing (NaN) observations have weight 0."""
    parts = [torch.where(torch.isnan(y), 0.0, (y - x @ h.T) * w)
             for x, y, h, w in zip(states, window.values, window.operators, window.inv_std)]
    return torch.cat(parts, dim=-1)


def _start(v: torch.Tensor, state_b: torch.Tensor, params_b: torch.Tensor, root: torch.Tensor,
           param_std: torch.Tensor,
           initial: Initial | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Start states ``(batch, n_state)`` and parameters of control vectors ``v (batch, c)``
    about the backgrounds ``(batch, n_state)``, ``(batch, n_params)``: ``x0 = xb + L v_x``
    (plus ``initial(p) - initial(pb)`` where the parameters set the initial state)."""
    n_x = root.shape[1]
    params = params_b + param_std * v[:, n_x:]
    state = state_b + v[:, :n_x] @ root.T
    if initial is not None:
        state = state + initial(params) - initial(params_b)
    return state, params


def _member_costs(advance: Advance, v: torch.Tensor, state_b: torch.Tensor,
                  params_b: torch.Tensor, root: torch.Tensor, param_std: torch.Tensor,
                  window: WindowProblem, initial: Initial | None) -> torch.Tensor:
    """``J`` of each member's control ``v (batch, c)``, ``(batch,)``: the members are
    independent problems, so their sum is one batched cost with the same minimisers."""
    state, params = _start(v, state_b, params_b, root, param_std, initial)
    misfit = _normalized_misfits(_trajectory(advance, state, params, window), window)
    return 0.5 * v.square().sum(-1) + 0.5 * misfit.square().sum(-1)


def window_cost(advance: Advance, v: torch.Tensor, state_b: torch.Tensor,
                params_b: torch.Tensor, root: torch.Tensor, param_std: torch.Tensor,
                window: WindowProblem, initial: Initial | None = None) -> torch.Tensor:
    """The cost ``J(v)`` of one window (scalar, differentiable in ``v``).

    ``initial(params (batch, n_params)) -> (batch, n_state)``, where given, is the initial
    state the parameters set: the start state moves by ``initial(p) - initial(pb)``.

    Examples
    --------
    >>> identity = lambda state, params, t0, duration: state
    >>> win = WindowProblem(0.0, [1.0], [torch.ones(2)], [torch.eye(2)], [torch.ones(2)])
    >>> float(window_cost(identity, torch.zeros(2), torch.zeros(2), torch.zeros(0),
    ...                   torch.eye(2), torch.zeros(0), win))
    1.0
    """
    return _member_costs(advance, v[None], state_b[None], params_b[None], root, param_std,
                         window, initial)[0]


def _jacobian(advance: Advance, v: torch.Tensor, state_b: torch.Tensor, params_b: torch.Tensor,
              root: torch.Tensor, param_std: torch.Tensor, window: WindowProblem,
              initial: Initial | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The misfits ``d (batch, m)`` at ``v (batch, c)`` and their Jacobians
    ``G = -dd/dv (batch, m, c)``.

    One reverse pass: the model runs on a batch of ``m`` copies of each member's start
    state, copy ``i`` contributes only misfit ``i`` to the summed output, so the gradient of
    copy ``i`` is row ``i`` of the Jacobian (the batched simulators make the ``batch * m``
    copies cost about one run).
    """
    batch, n_obs = v.shape[0], window.n_obs
    copies = v.detach().repeat_interleave(n_obs, dim=0).requires_grad_(True)
    state, params = _start(copies, state_b.repeat_interleave(n_obs, dim=0),
                           params_b.repeat_interleave(n_obs, dim=0), root, param_std, initial)
    repeated = window.repeated(n_obs)
    misfit = _normalized_misfits(_trajectory(advance, state, params, repeated), repeated)
    diagonal = misfit.reshape(batch, n_obs, n_obs).diagonal(dim1=1, dim2=2)
    if not misfit.requires_grad:
        if root.shape[1] == 0:  # only parameters that do not act in this window
            return diagonal.detach(), v.new_zeros(batch, n_obs, v.shape[1])
        raise ConfigurationError(expected_found(
            "a differentiable model", "advance() with an autograd graph",
            "outputs without gradient (the model detaches or leaves torch)"))
    (rows,) = torch.autograd.grad(diagonal.sum(), copies)
    return diagonal.detach(), -rows.reshape(batch, n_obs, -1)


def _jacobian_forward(advance: Advance, v: torch.Tensor, state_b: torch.Tensor,
                      params_b: torch.Tensor, root: torch.Tensor, param_std: torch.Tensor,
                      window: WindowProblem, initial: Initial | None
                      ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """As :func:`_jacobian` by forward mode: one column per copy, ``batch * c`` copies (no
    graph kept, so long windows fit in memory); ``None`` where the model has no forward
    mode (the reverse pass is used instead)."""
    batch, n_control = v.shape
    tangents = torch.eye(n_control, dtype=v.dtype, device=v.device).repeat(batch, 1)
    try:
        with forward_ad.dual_level():
            dual = forward_ad.make_dual(v.detach().repeat_interleave(n_control, dim=0),
                                        tangents)
            state, params = _start(dual, state_b.repeat_interleave(n_control, dim=0),
                                   params_b.repeat_interleave(n_control, dim=0), root,
                                   param_std, initial)
            repeated = window.repeated(n_control)
            misfit = _normalized_misfits(_trajectory(advance, state, params, repeated),
                                         repeated)
            primal, tangent = forward_ad.unpack_dual(misfit)
    except (NotImplementedError, RuntimeError):
        return None
    if tangent is None:
        return None
    primal = primal.reshape(batch, n_control, -1)[:, 0]
    return primal.detach(), -tangent.reshape(batch, n_control, -1).mT


def _gauss_newton(advance: Advance, state_b: torch.Tensor, params_b: torch.Tensor,
                  root: torch.Tensor, param_std: torch.Tensor, window: WindowProblem,
                  max_iter: int, tol: float,
                  initial: Initial | None) -> tuple[torch.Tensor, int]:
    """Gauss-Newton on each member's ``J``: ``(I + G^T G) dv = G^T d - v`` until every
    member's ``|dv|^2 < tol * n``. ``G`` by forward mode when there are fewer controls
    than observations, else by reverse mode (and the step in observation space by the
    Woodbury identity)."""
    n_control = root.shape[1] + params_b.shape[-1]
    v = root.new_zeros(len(state_b), n_control)
    iterations = 0
    while iterations < max_iter:
        forward = (_jacobian_forward(advance, v, state_b, params_b, root, param_std, window,
                                     initial) if n_control < window.n_obs else None)
        misfit, jac = forward if forward is not None else _jacobian(
            advance, v, state_b, params_b, root, param_std, window, initial)
        rhs = (jac.mT @ misfit[..., None])[..., 0] - v
        n_obs = jac.shape[1]
        if n_obs < n_control:
            inner = torch.eye(n_obs, dtype=v.dtype, device=v.device) + jac @ jac.mT
            step = rhs - (jac.mT @ torch.linalg.solve(inner, jac @ rhs[..., None]))[..., 0]
        else:
            eye = torch.eye(n_control, dtype=v.dtype, device=v.device)
            step = torch.linalg.solve(eye + jac.mT @ jac, rhs[..., None])[..., 0]
        v, iterations = v + step, iterations + 1
        if float(step.square().sum(-1).max()) < tol * n_control:
            break
    return v, iterations


def _lbfgs(advance: Advance, state_b: torch.Tensor, params_b: torch.Tensor, root: torch.Tensor,
           param_std: torch.Tensor, window: WindowProblem, max_iter: int,
           tol: float, initial: Initial | None) -> tuple[torch.Tensor, int]:
    """L-BFGS (strong Wolfe) on the members' summed ``J`` with the gradient by reverse mode
    (the members' problems are independent: the sum has their minimisers)."""
    v = root.new_zeros(len(state_b), root.shape[1] + params_b.shape[-1]).requires_grad_(True)
    optimizer = torch.optim.LBFGS([v], lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=tol, tolerance_change=1e-12,
                                  line_search_fn="strong_wolfe")
    evaluations = [0]

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        cost = _member_costs(advance, v, state_b, params_b, root, param_std, window,
                             initial).sum()
        cost.backward()
        evaluations[0] += 1
        return cost

    optimizer.step(closure)
    return v.detach(), int(optimizer.state[v].get("n_iter", evaluations[0]))


def check_differentiable(advance: Advance, state: torch.Tensor, params: torch.Tensor,
                         t0: float, duration: float, *, rtol: float = 1e-3) -> None:
    """Raise :class:`~xldensf.errors.ConfigurationError` unless ``advance`` has a gradient
    that matches a central finite difference along one direction.

    Examples
    --------
    >>> state, params = torch.ones(1, 3, dtype=torch.float64), torch.zeros(1, 0)
    >>> check_differentiable(lambda x, p, t0, d: x.sin(), state, params, 0.0, 1.0)
    >>> check_differentiable(lambda x, p, t0, d: x.detach().sin(), state, params, 0.0, 1.0)
    Traceback (most recent call last):
    ...
    xldensf.errors.ConfigurationError: a differentiable model: expected advance() with an ...
    """
    x = state.detach().clone().requires_grad_(True)
    try:
        out = advance(x, params, t0, duration)
    except RuntimeError as error:
        raise ConfigurationError(expected_found("a differentiable model", "advance() that "
                                                "autograd can trace", str(error))) from error
    if not out.requires_grad:
        raise ConfigurationError(expected_found(
            "a differentiable model", "advance() with an autograd graph",
            "an output without gradient (the model detaches or leaves torch)"))
    generator = torch.Generator().manual_seed(0)
    direction = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x)
    weights = torch.randn(out.shape, generator=generator, dtype=torch.float64).to(out)
    try:
        (gradient,) = torch.autograd.grad((out * weights).sum(), x)
    except RuntimeError as error:
        raise ConfigurationError(expected_found("a differentiable model", "advance() whose "
                                                "backward pass runs", str(error))) from error
    # Central differences: the step that balances truncation and rounding errors.
    scale = torch.finfo(state.dtype).eps ** (1 / 3) * max(1.0, float(state.abs().max()))
    with torch.no_grad():
        plus = (advance(state + scale * direction, params, t0, duration) * weights).sum()
        minus = (advance(state - scale * direction, params, t0, duration) * weights).sum()
    finite = float(plus - minus) / (2 * scale)
    analytic = float((gradient * direction).sum())
    if abs(finite - analytic) > rtol * max(abs(finite), abs(analytic), 1e-12):
        raise ConfigurationError(expected_found(
            "a differentiable model", f"an autograd gradient matching finite differences "
            f"(rtol {rtol:g})", f"{analytic:.6g} vs {finite:.6g}"))


def _window_plan(n_times: int, window: int, shift: int) -> list[tuple[int, int, int]]:
    """``(control, first_obs, end)`` per window: the start is observation ``control`` (-1:
    the background time), the window holds observations ``first_obs..end-1`` and reports the
    newest ``shift`` of them."""
    plan, control, end = [], -1, min(shift, n_times)
    while True:
        plan.append((control, max(0, control + 1), end))
        if end >= n_times:
            return plan
        end = min(end + shift, n_times)
        control = max(control, end - window - 1)


def fourdvar(
    advance: Advance,
    state_background: torch.Tensor,
    params_background: torch.Tensor,
    t0: float,
    times: Sequence[float] | torch.Tensor,
    values: torch.Tensor,
    operators: torch.Tensor | Sequence[torch.Tensor],
    obs_std: float | torch.Tensor,
    *,
    background_sqrt: torch.Tensor,
    parameter_std: torch.Tensor | None = None,
    window: int = 1,
    shift: int = 1,
    optimizer: str = "auto",
    max_iter: int = 10,
    tol: float = 1e-10,
    reuse_observations: bool = False,
    check_gradient: bool = True,
    progress: Callable[[Any], Any] | None = None,
    members: int = 1,
    generator: torch.Generator | None = None,
    initial: Initial | None = None,
) -> FourDVarResult:
    """Run strong-constraint 4D-Var with sliding windows over all observation times.

    Parameters
    ----------
    advance
        ``advance(state (batch, n_state), params (batch, n_params), t0, duration)``: the
        model, differentiable by autograd (reverse mode).
    state_background, params_background
        Background ``(n_state,)`` at ``t0`` and parameters ``(n_params,)`` (may be empty).
    t0
        Time of the background, ``<=`` the first observation time.
    times
        ``(n_times,)`` non-decreasing observation times.
    values
        ``(n_times, m)`` observations (NaN = missing).
    operators
        Linear observation operator ``(m, n_state)``, or one per observation time.
    obs_std
        Observation error standard deviation: a number or ``(n_times, m)``.
    background_sqrt
        ``L`` with ``B = L L^T``, ``(n_state, r)`` (see :func:`background_sqrt`); its zero
        columns are dropped from the control vector.
    parameter_std
        Background standard deviation of each parameter (``None`` or 0: fixed parameters).
    window
        Observation times per window (the lag of DAPPER's ``Var4D``).
    shift
        Observation times the window slides by (``1 <= shift <= window``).
    optimizer
        ``"gauss-newton"``, ``"lbfgs"`` or ``"auto"`` (Gauss-Newton while the window's
        observations times the state size stay under :data:`GAUSS_NEWTON_MAX_SIZE`).
    max_iter
        Iterations per window (Gauss-Newton steps, or L-BFGS iterations).
    tol
        Gauss-Newton stops when ``|dv|^2 < tol * n_control``; L-BFGS when the gradient's
        largest component is below ``tol``.
    reuse_observations
        Fit every observation time of the window (``True``), so that overlapping windows
        assimilate an observation up to ``window / shift`` times; default only the newest
        ``shift`` of them, whose predecessors enter through the background (each
        observation assimilated once, as DAPPER's ``Var4D``). The two agree when
        ``shift == window``.
    check_gradient
        Check ``advance`` against a finite difference first (:func:`check_differentiable`).
    progress
        Optional wrapper of the window iterator (e.g. ``tqdm``).
    members
        Size of the randomised-maximum-likelihood ensemble (:func:`perturbed_members`):
        each member cycles its own minimisations with perturbed background and
        observations, all members batched through ``advance``; 1: the plain analysis.
    generator
        Random generator of the perturbations.
    initial
        ``initial(params (batch, n_params)) -> (batch, n_state)``: the initial state the
        parameters set (e.g. a source position). Windows that start at ``t0`` then move the
        start state by ``initial(p) - initial(pb)``, so the parameters are estimated from
        the observations through it.

    Returns
    -------
    FourDVarResult
        The analysis at every observation time, with the parameters, cost and iterations of
        the window that produced it, and each member's.

    Raises
    ------
    ConfigurationError
        A window longer than the observations, a bad shift or optimizer, a model without
        gradients.
    DataError
        Observation times before ``t0`` or decreasing.
    """
    # Long by its docstring (every public option documented); the body is sequential steps
    # (check, read, perturb, cycle over windows, collect) kept in one place.
    times_t = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
    n_times = len(times_t)
    window = check_positive_int("window", window)
    shift = check_positive_int("shift", shift)
    members = check_positive_int("members", members)
    if window > n_times:
        raise ConfigurationError(expected_found("window", f"at most the {n_times} observation "
                                                "times", window))
    if shift > window:
        raise ConfigurationError(expected_found("shift", f"1 <= shift <= window = {window}",
                                                shift))
    if (torch.diff(torch.cat([times_t.new_tensor([t0]), times_t])) < 0).any():
        raise DataError(expected_found("observation times", f"non-decreasing and >= t0 = {t0}",
                                       times_t.tolist()[:5]))
    state_b = state_background.reshape(-1)
    params_b = params_background.reshape(-1).to(state_b)
    root = torch.as_tensor(background_sqrt).to(state_b)
    root = root[:, root.abs().sum(0) > 0]  # zero columns: no control, no cost
    param_std = (params_b.new_zeros(len(params_b)) if parameter_std is None
                 else torch.as_tensor(parameter_std).to(state_b).reshape(-1).expand(len(params_b)))
    n_control = root.shape[1] + len(params_b)
    if optimizer == "auto":
        size = window * values.shape[-1] * max(len(state_b), n_control)
        optimizer = "gauss-newton" if size <= GAUSS_NEWTON_MAX_SIZE else "lbfgs"
    if optimizer not in OPTIMIZERS:
        raise ConfigurationError(expected_found("optimizer", OPTIMIZERS + ("auto",), optimizer))
    minimise = _gauss_newton if optimizer == "gauss-newton" else _lbfgs
    ops = ([operators] * n_times if isinstance(operators, torch.Tensor) else list(operators))
    ops = [op.to_dense().to(state_b) if op.is_sparse else op.to(state_b) for op in ops]
    values = values.to(state_b)
    inv_std = (1.0 / torch.as_tensor(obs_std, dtype=state_b.dtype)).to(state_b)
    inv_std = inv_std.expand(values.shape)
    if check_gradient:
        duration = float(times_t[0]) - t0 if float(times_t[0]) > t0 else float(
            times_t[-1] - times_t[0]) / max(n_times - 1, 1)
        check_differentiable(advance, state_b[None], params_b[None], t0, duration)
    state_b, params_b, values = perturbed_members(state_b, params_b, root, param_std, values,
                                                  1.0 / inv_std, members, generator, initial)

    ensemble = state_b.new_full((n_times, members, state_b.shape[1]), float("nan"))
    parameters = params_b.new_zeros((n_times, members, params_b.shape[1]))
    costs = torch.zeros(n_times, members, dtype=torch.float64)
    iterations = torch.zeros(n_times)
    plan = _window_plan(n_times, window, shift)
    control_time = float(t0)
    windows = []
    for control, first, end in (progress(plan) if progress is not None else plan):
        start = float(times_t[control]) if control >= 0 else float(t0)
        if start > control_time:  # slide: the background is the forecast of the last start
            with torch.no_grad():
                state_b = advance(state_b, params_b, control_time, start - control_time)
            control_time = start
        from_initial = initial if control < 0 else None
        report = range(max(first, end - shift), end)
        obs = range(first, end) if reuse_observations else report
        problem = WindowProblem(start, [float(times_t[k]) - start for k in obs],
                                [values[k] for k in obs], [ops[k] for k in obs],
                                [inv_std[k] for k in obs])
        if n_control:
            v, n_iter = minimise(advance, state_b, params_b, root, param_std, problem,
                                 max_iter, tol, from_initial)
        else:
            v, n_iter = state_b.new_zeros(members, 0), 0
        with torch.no_grad():  # the cost of the optimum from its trajectory (one run)
            state_b, params_b = _start(v, state_b, params_b, root, param_std, from_initial)
            states = _trajectory(advance, state_b, params_b, problem)
            cost = 0.5 * v.square().sum(-1) + 0.5 * _normalized_misfits(
                states, problem).square().sum(-1)
        for k in report:
            ensemble[k] = states[k - obs.start]
            parameters[k] = params_b
            costs[k], iterations[k] = cost, n_iter
        windows.append((first, end))
    return FourDVarResult(ensemble.mean(1), parameters.mean(1), costs.mean(1), iterations,
                          windows, ensemble, parameters, costs)
