"""4D-Var with a full-order simulator (``method="4dvar"``): the xarray side of
:func:`xldensf.filters.fourdvar.fourdvar`.

The control vector is the state at each window's start and, where the case has parameters,
the parameters (joint state + parameter estimation); gradients come from autograd through
the simulator's :meth:`~xldensf.simulators.base.Simulator.advance`. Where the parameters
only set the initial state (the tsunami's source position), ``initial_state_parameters``
estimates them through it. The output holds one member, the analysis at every observation
time, or with ``members > 1`` an ensemble of perturbed minimisations (randomised maximum
likelihood) batched through the simulator.

Examples
--------
>>> import xldensf as xl
>>> truth = xl.simulate("lorenz96", runs=1, seed=1, preset="small", n_outputs=11).isel(run=0)
>>> obs = truth.ldensf.observe(stations="20", noise=0.1, seed=0)
>>> analysis = obs.ldensf.assimilate(xl.simulator("lorenz96", preset="small"),
...                                  method="4dvar", window=2, seed=0)
>>> analysis["x"].dims, analysis.sizes["member"]
(('time', 'member', 'k'), 1)
>>> ensemble = obs.ldensf.assimilate(xl.simulator("lorenz96", preset="small"),
...                                  method="4dvar", window=2, members=3, seed=0)
>>> ensemble.sizes["member"]
3
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from .._version import __version__
from ..conventions import MEMBER_DIM, variable_attrs
from ..errors import ConfigurationError, check_positive_int, expected_found
from ..filters.fourdvar import background_sqrt, fourdvar
from ..geometry import GridGeometry, InterpolationOperator
from ..options import progress_enabled, resolve_seed
from ..simulators.base import Simulator
from .output import EnsembleFields, analysis_dataset
from .setup import observation_problem, prior_fields

__all__ = ["assimilate_4dvar", "VARIATIONAL_METHODS"]

#: Variational methods with a full-order simulator.
VARIATIONAL_METHODS = ("4dvar",)


def _prior_states(model: Simulator, prior: xr.Dataset | None, members: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The background state ``(n_fields,)`` and, if there are any, members
    ``(members, n_fields)``: a prior Dataset (one state, or members whose mean is the
    background), or ``members`` draws of the case's prior (the first is the background)."""
    if prior is None:
        states = model.initial_state(model.draw_parameters(members, generator), generator)
        flat = states.reshape(members, -1)
        return flat[0], flat
    stacked = prior_fields(model, prior)
    if MEMBER_DIM in prior.dims:
        flat = stacked.reshape(prior.sizes[MEMBER_DIM], -1)
        return flat.mean(0), flat
    return stacked.reshape(-1), None


def _background_parameters(model: Simulator, prior: xr.Dataset | None) -> torch.Tensor:
    """Parameters read from the prior's coordinates of the same names, else the defaults."""
    names = model.parameter_names
    if prior is not None and all(name in prior.coords or name in prior.data_vars
                                 for name in names):
        values = [float(np.mean(prior[name].values)) for name in names]
        return model.check_parameters(torch.tensor([values], dtype=torch.float64))[0]
    return model.default_parameters(1)[0]


def _static_std(model: Simulator, background_std: Any, background: torch.Tensor) -> torch.Tensor:
    """Per-component background standard deviation ``(n_fields,)``: a number, a mapping by
    variable, or (``None``) each variable's spatial standard deviation in the background."""
    n_grid = int(np.prod(model.grid_shape))
    per_variable = background.reshape(len(model.variables), n_grid)
    if background_std is None:
        values = per_variable.std(dim=1).tolist()
    elif isinstance(background_std, Mapping):
        unknown = sorted(set(background_std) - set(model.variables))
        if unknown:
            raise ConfigurationError(expected_found("background_std variables",
                                                    list(model.variables), unknown))
        defaults = per_variable.std(dim=1).tolist()
        values = [float(background_std.get(name, default))
                  for name, default in zip(model.variables, defaults)]
    else:
        values = [float(background_std)] * len(model.variables)
    return torch.tensor(values, dtype=torch.float64).repeat_interleave(n_grid)


def _parameter_std(model: Simulator, parameter_std: Any, estimate: bool) -> torch.Tensor:
    """Background standard deviation of each parameter (0 = fixed); default the standard
    deviation of the case's uniform prior, ``(high - low) / sqrt(12)``."""
    specs = model.parameter_specs
    if not estimate:
        return torch.zeros(len(specs), dtype=torch.float64)
    if parameter_std is None:
        return torch.tensor([(s.prior_high - s.prior_low) / math.sqrt(12.0) for s in specs],
                            dtype=torch.float64)
    if isinstance(parameter_std, Mapping):
        unknown = sorted(set(parameter_std) - set(model.parameter_names))
        if unknown:
            raise ConfigurationError(expected_found("parameter_std names",
                                                    list(model.parameter_names), unknown))
        return torch.tensor([float(parameter_std.get(s.name, (s.prior_high - s.prior_low)
                                                     / math.sqrt(12.0))) for s in specs],
                            dtype=torch.float64)
    return torch.full((len(specs),), float(parameter_std), dtype=torch.float64)


def _initial_state_map(model: Simulator, params: torch.Tensor, low: torch.Tensor,
                       high: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``initial(p (batch, n_params)) -> (batch, n_fields)``: the model's initial state of
    the parameters clamped to their valid range, checked deterministic."""
    def initial(parameters: torch.Tensor) -> torch.Tensor:
        clamped = torch.minimum(torch.maximum(parameters.to(model.dtype), low), high)
        return model.initial_state(clamped).reshape(len(parameters), -1)

    probe = params[None].to(model.dtype)
    if not torch.equal(initial(probe), initial(probe)):
        raise ConfigurationError(expected_found(
            "initial_state_parameters", "a case whose initial state is a deterministic "
            "function of its parameters", "a random initial state"))
    return initial


def assimilate_4dvar(
    observations: xr.Dataset,
    model: Simulator,
    *,
    method: str = "4dvar",
    members: int | None = None,
    prior: xr.Dataset | None = None,
    obs_error: Any = None,
    seed: int | None = None,
    progress: bool | None = None,
    window: int = 1,
    shift: int = 1,
    background_std: Any = None,
    background_covariance: Any = None,
    ensemble_weight: float = 0.0,
    estimate_parameters: bool = True,
    parameter_std: Any = None,
    background_time: float | None = None,
    optimizer: str = "auto",
    max_iter: int = 10,
    tol: float = 1e-10,
    reuse_observations: bool = False,
    check_gradient: bool = True,
    prior_members: int = 20,
    initial_state_parameters: bool = False,
) -> xr.Dataset:
    """Strong-constraint 4D-Var of station observations with a full-order simulator.

    Parameters
    ----------
    observations
        CF timeSeries Dataset, dims ``(time, station)``; NaN values are skipped.
    model
        A full-order simulator (``xl.simulator(case, ...)``); its ``advance`` must be
        differentiable by autograd.
    method
        ``"4dvar"``.
    members
        Size of the ensemble of perturbed minimisations (randomised maximum likelihood:
        each member cycles its own windows with observations perturbed by their error and a
        background perturbed by a draw of ``B^{1/2}``, all members batched through the
        simulator); default 1, the plain analysis without spread.
    prior
        Background: one state, or members (their mean is the background, their anomalies
        the hybrid's ensemble). Parameters come from coordinates of the same names, else
        the case's defaults.
    obs_error
        Override of the observation error standard deviation.
    seed
        Seed of the prior draw and of the ensemble's perturbations; recorded in the attrs.
    progress
        Progress bar over windows; ``None`` follows :func:`xldensf.set_options`.
    window, shift
        Observation times per window and the number the window slides by.
    background_std
        Static background error standard deviation in model units: a number, a mapping by
        variable; default each variable's spatial standard deviation in the background.
    background_covariance
        Static background covariance ``(n, n)`` over the flattened fields (variable-major),
        instead of ``background_std``.
    ensemble_weight
        Weight of the ensemble covariance in the hybrid ``B`` (0: static only).
    estimate_parameters
        Put the case's parameters in the control vector.
    parameter_std
        Background standard deviation of the parameters (a number or a mapping by name);
        default the standard deviation of the case's uniform prior.
    background_time
        Time of the background (model time units); default the first observation time.
    optimizer, max_iter, tol, reuse_observations, check_gradient
        Minimiser and window settings (see :func:`xldensf.filters.fourdvar.fourdvar`).
    prior_members
        Size of the prior draw when ``prior`` is None (the first draw is the background,
        all of them form the ensemble of the hybrid covariance).
    initial_state_parameters
        The parameters set the initial state (``model.initial_state(p)``, e.g. the
        tsunami's bump centre): the background state is the initial state of the
        background parameters, ``background_time`` defaults to 0 (the model's start), and
        windows starting there estimate the parameters through the initial state. The
        case's initial state must be a deterministic function of its parameters.

    Returns
    -------
    xarray.Dataset
        Analysis ``(time, member, *grid)`` in the observations' units, parameters
        ``(time, member)``, the final cost and iterations of each time's window, attrs
        recording method, settings, seed, version and wall time.

    Raises
    ------
    ConfigurationError
        A window longer than the observations, a model without gradients, bad settings,
        ``initial_state_parameters`` with a random initial state.
    DataError
        A bad prior or observation Dataset.
    """
    # Long by its docstring (every public option documented); the body is sequential steps
    # (check, read, build the kernel, cycle, write) kept in one place.
    if method not in VARIATIONAL_METHODS:
        raise ConfigurationError(expected_found("method", VARIATIONAL_METHODS, method))
    members = check_positive_int("members", 1 if members is None else members)
    settings = {"window": window, "shift": shift, "background_std": background_std,
                "background_covariance": None if background_covariance is None else "given",
                "ensemble_weight": ensemble_weight, "estimate_parameters": estimate_parameters,
                "parameter_std": parameter_std, "background_time": background_time,
                "optimizer": optimizer, "max_iter": max_iter, "tol": tol,
                "reuse_observations": reuse_observations, "prior_members": prior_members,
                "initial_state_parameters": initial_state_parameters}
    seed = resolve_seed(seed)
    generator = torch.Generator().manual_seed(int(seed))
    geometry = GridGeometry.from_simulator(model)
    problem = observation_problem(observations, model, obs_error=obs_error, geometry=geometry)
    background, ensemble = _prior_states(
        model, prior, max(check_positive_int("prior_members", prior_members), 2), generator)
    params = _background_parameters(model, prior)
    low = model.tensor([spec.valid_low for spec in model.parameter_specs])
    high = model.tensor([spec.valid_high for spec in model.parameter_specs])
    initial = (_initial_state_map(model, params, low, high) if initial_state_parameters
               else None)
    if initial is not None:
        background = initial(params[None].to(model.dtype))[0].to(background)
    n_fields = len(background)
    covariance = (None if background_covariance is None
                  else torch.as_tensor(np.asarray(background_covariance, dtype=np.float64)))
    root = background_sqrt(
        n_fields, std=_static_std(model, background_std, background), covariance=covariance,
        ensemble=ensemble if ensemble_weight > 0 else None, ensemble_weight=ensemble_weight)
    variable_indices = [model.variables.index(name) for name in problem.variables]

    def operator_for(positions: np.ndarray) -> torch.Tensor:
        interpolation = InterpolationOperator.from_grid(geometry, positions)
        return interpolation.selection(variable_indices, n_fields).to(model.dtype)

    operators = ([operator_for(frame) for frame in problem.positions.values]
                 if problem.positions.moving else operator_for(problem.positions.values))

    def advance(state: torch.Tensor, parameters: torch.Tensor, t0: float,
                duration: float) -> torch.Tensor:
        clamped = torch.minimum(torch.maximum(parameters, low), high)
        fields = state.reshape(-1, *model.state_shape).contiguous()
        return model.advance(fields, clamped, t0, duration).reshape(len(state), -1)

    times = problem.times.astype(np.float64)
    t0 = (float(background_time) if background_time is not None
          else 0.0 if initial is not None else float(times[0]))

    def wrapper(plan: list) -> Any:
        return tqdm(plan, desc="4dvar windows", disable=not progress_enabled(progress),
                    leave=False, unit="window")
    start = time.perf_counter()
    result = fourdvar(
        advance, background.to(model.dtype), params.to(model.dtype), t0, times,
        problem.values.to(model.dtype), operators, problem.obs_std.to(model.dtype),
        background_sqrt=root, parameter_std=_parameter_std(model, parameter_std,
                                                           estimate_parameters),
        window=window, shift=shift, optimizer=optimizer, max_iter=max_iter, tol=tol,
        reuse_observations=reuse_observations, check_gradient=check_gradient,
        progress=wrapper, members=members, generator=generator, initial=initial)
    wall = time.perf_counter() - start
    attrs = {
        "title": "xldensf 4dvar analysis",
        "xldensf_method": "4dvar",
        "xldensf_settings": json.dumps(settings, sort_keys=True, default=str),
        "xldensf_members": members,
        "xldensf_seed": int(seed),
        "xldensf_version": __version__,
        "xldensf_case": model.case,
        "xldensf_forecast_model": type(model).__name__,
        "xldensf_observed": " ".join(problem.variables),
        "xldensf_wall_time_s": round(wall, 3),
    }
    array = result.ensemble.detach().cpu().numpy()
    fields = array.reshape(*array.shape[:2], *model.state_shape)
    parameters = result.ensemble_parameters.detach().cpu().numpy()
    iterations = np.repeat(result.iterations.numpy()[:, None], members, axis=1)
    ensembles = {"": EnsembleFields(
        fields={name: (fields[:, :, i], variable_attrs(model.case, name))
                for i, name in enumerate(model.variables)},
        parameters={spec.name: (parameters[..., j], {"units": spec.units,
                                                     "long_name": spec.long_name})
                    for j, spec in enumerate(model.parameter_specs)},
        extra={"cost_function": ((), result.ensemble_cost.numpy(),
                                 {"long_name": "final 4D-Var cost of the window", "units": "1"}),
               "iterations": ((), iterations,
                              {"long_name": "minimiser iterations of the window",
                               "units": "1"})})}
    space_coords = {coord.name: (coord.name, coord.values, coord.attrs)
                    for coord in model.grid_coordinates}
    return analysis_dataset(problem, space_coords, tuple(model.grid_dims), ensembles, attrs)
