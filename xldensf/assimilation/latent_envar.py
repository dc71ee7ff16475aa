"""A latent ensemble-variational smoother (``method="latent-envar"``) with a LatentModel.

:func:`assimilate_latent_envar` runs the 4DEnVar smoother of :func:`xldensf.filters.envar.envar`
on the augmented latent ``kappa = (s, u)`` of a trained
:class:`~xldensf.surrogate.LatentModel`, in the spirit of LEVDA (Si & Chen, arXiv
2602.19406): over each window of observation times the start latent and the normalised
parameters are the control (their coefficients in the ensemble subspace, or the full
``kappa`` with the ensemble's covariance), the cost is the background term plus the misfit
of the decoder at the stations (any layout, moving stations, any observation times on the
model's frames), and gradients come from autograd through the latent dynamics
(``model.advance``) and the decoder (``model.decode``). The prior is LD-EnSF's
(``u ~ U(-1, 1)``, ``s_0 = model.unroll(u, 1)``); windows are chained, and the output is
written as LD-EnSF's (:func:`~xldensf.assimilation.latent_output.latent_ensemble_dataset`).

Examples
--------
>>> import xldensf as xl
>>> from xldensf.surrogate import fit
>>> train = xl.simulate("lorenz96", runs=4, seed=0, preset="small", n_outputs=6)
>>> model = fit(train, parameters=["F"], seed=0, steps=5, finetune_steps=0,
...             reconstruction_width=8, latent_dim=3, progress=False)
>>> obs = train.isel(run=0).ldensf.observe(stations=8, noise=0.1, seed=0)
>>> analysis = obs.ldensf.assimilate(model, method="latent-envar", members=6, window=3,
...                                  iterations=2, seed=0)
>>> analysis["x"].dims, analysis["F"].dims, analysis.attrs["xldensf_method"]
(('time', 'member', 'k'), ('time', 'member'), 'latent-envar')
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from .._version import __version__
from ..errors import ConfigurationError, DataError, check_name, check_names, expected_found
from ..filters.envar import (
    ENVAR_CALIBRATIONS,
    ENVAR_CONTROLS,
    ENVAR_JACOBIANS,
    ENVAR_OPTIMIZERS,
    ENVAR_UNCERTAINTIES,
    envar,
)
from ..options import progress_enabled, resolve_seed
from ..surrogate import LatentModel
from ..surrogate.dataset import frame_indices
from .latent import DEFAULT_LATENT_MARGIN, LATENT_METHODS, assimilate_latent, training_latent_box
from .latent_output import OUTPUTS, latent_ensemble_dataset
from .likelihoods import check_obs_std, decoder_operators, latent_observation_problem
from .setup import check_members

__all__ = ["assimilate_latent_envar", "latent_adapter", "LATENT_ENVAR_METHODS",
           "DEFAULT_ENVAR_MEMBERS", "DEFAULT_ENVAR_WINDOW", "DEFAULT_ENVAR_INFLATION",
           "DEFAULT_ENVAR_CALIBRATION"]

#: Ensemble-variational methods with a LatentModel.
LATENT_ENVAR_METHODS = ("latent-envar",)
#: Default ensemble size: every RML member is one more minimisation per window.
DEFAULT_ENVAR_MEMBERS = 50
#: Default number of observation times per window.
DEFAULT_ENVAR_WINDOW = 5
#: Default multiplicative inflation of each window's background anomalies (the latent
#: dynamics are deterministic and the parameters persist, as for LD-EnSF).
DEFAULT_ENVAR_INFLATION = 1.1
#: Default calibration of each window's analysis spread
#: (:data:`~xldensf.filters.envar.ENVAR_CALIBRATIONS`): the surrogate's own error, the misfit
#: left above the observation noise, widens the output members (docs/latent_envar.md).
DEFAULT_ENVAR_CALIBRATION = "model-error"


def latent_adapter(observations: xr.Dataset, model: LatentModel, *, method: str = "ld-ensf",
                   **settings: Any) -> xr.Dataset:
    """The adapter of :class:`LatentModel`: ``method="latent-envar"`` to
    :func:`assimilate_latent_envar`, the others to
    :func:`~xldensf.assimilation.latent.assimilate_latent`.

    Examples
    --------
    >>> latent_adapter(None, None, method="letkf")
    Traceback (most recent call last):
    ...
    xldensf.errors.UnknownNameError: method (with a LatentModel): expected one of ...
    """
    check_name("method (with a LatentModel)", method, LATENT_METHODS + LATENT_ENVAR_METHODS)
    if method in LATENT_ENVAR_METHODS:
        return assimilate_latent_envar(observations, model, method=method, **settings)
    return assimilate_latent(observations, model, method=method, **settings)


def _checked_settings(settings: dict[str, Any]) -> None:
    check_name("control", settings["control"], ENVAR_CONTROLS)
    check_name("uncertainty", settings["uncertainty"], ENVAR_UNCERTAINTIES)
    check_name("optimizer", settings["optimizer"], ENVAR_OPTIMIZERS)
    check_name("jacobian", settings["jacobian"], ENVAR_JACOBIANS)
    check_name("calibration", settings["calibration"], ENVAR_CALIBRATIONS)
    check_name("output", settings["output"], OUTPUTS)
    margin = settings["latent_margin"]
    if margin is not None and not (margin >= 0 and math.isfinite(margin)):
        raise ConfigurationError(expected_found("latent_margin", ">= 0 or None", margin))


def assimilate_latent_envar(
    observations: xr.Dataset,
    model: LatentModel,
    *,
    method: str = "latent-envar",
    members: int | None = None,
    window: int = DEFAULT_ENVAR_WINDOW,
    iterations: int = 10,
    control: str = "ensemble",
    uncertainty: str = "rml",
    optimizer: str = "gauss-newton",
    jacobian: str = "mean",
    inflation: float = DEFAULT_ENVAR_INFLATION,
    calibration: str = DEFAULT_ENVAR_CALIBRATION,
    tol: float = 1e-8,
    obs_error: Any = None,
    latent_margin: float | None = DEFAULT_LATENT_MARGIN,
    output: str = "lazy",
    coords: Any = None,
    seed: int | None = None,
    return_latent: bool = False,
    progress: bool | None = None,
    **unknown: Any,
) -> xr.Dataset:
    """Latent 4DEnVar smoother: assimilate station observations in a surrogate's latent space.

    Parameters
    ----------
    observations
        CF timeSeries Dataset, dims ``(time, station)``, at times ``t0 + k dt`` of the
        model's frames; any (also moving) stations; NaN values are skipped.
    model
        A trained :class:`~xldensf.surrogate.LatentModel`, differentiable by autograd.
    method
        ``"latent-envar"``.
    members
        Ensemble size (>= 2), default :data:`DEFAULT_ENVAR_MEMBERS`.
    window
        Observation times per window (at most the number of observation times).
    iterations
        Minimiser iterations per window.
    control
        ``"ensemble"`` (4DEnVar: coefficients of the ensemble anomalies) or ``"full"`` (the
        whole latent and parameters, ``B`` the ensemble covariance).
    uncertainty
        ``"rml"`` (perturbed minimisations, one per member) or ``"hessian"`` (the
        Gauss-Newton posterior square root around the minimiser).
    optimizer, jacobian, tol
        ``"gauss-newton"`` or ``"lbfgs"``; the RML members' Gauss-Newton Jacobian
        (``"mean"``: the members start at the minimiser and share its Jacobian there,
        ``"member"``: each from its own background with its own); the stopping tolerance
        (see :func:`xldensf.filters.envar.envar_window`).
    inflation
        Multiplicative inflation of each window's background anomalies (>= 1).
    calibration
        ``"none"``, ``"variance-factor"`` or ``"model-error"``: each window's analysis
        members' anomalies about its minimiser scaled by the square root of a variance factor
        estimated from the minimised costs (``"variance-factor"``:
        :func:`~xldensf.filters.envar.calibration_factor`, the next window's background
        too; ``"model-error"``: :func:`~xldensf.filters.envar.model_error_factor`, pooled
        over the windows so far, the output only); default
        :data:`DEFAULT_ENVAR_CALIBRATION`.
    obs_error
        Override of the observation error standard deviation.
    latent_margin
        Analysed latent starts are kept in the box of the training latents widened by this
        fraction of its width (:func:`~xldensf.assimilation.latent.training_latent_box`),
        the parameters in ``[-1, 1]``; ``None``: no latent bound.
    output, coords, return_latent
        As for :func:`~xldensf.assimilation.latent.assimilate_latent`.
    seed
        Seed of the prior draw and of the observation perturbations; recorded in the attrs.
    progress
        Progress bar over windows; ``None`` follows :func:`xldensf.set_options`.

    Returns
    -------
    xarray.Dataset
        Analysis members ``(time, member, *grid)`` in the observations' units, parameter
        members ``(time, member)``, the final cost and iterations of each time's window,
        attrs with method, settings, seed, version and wall seconds
        (``xldensf_seconds_analysis``: the smoother; ``xldensf_seconds_decode``).

    Raises
    ------
    ConfigurationError
        Fewer than 2 members, a window longer than the observations, a model without
        gradients, an unknown setting, times off the model's frames.
    UnknownNameError
        Unknown control, uncertainty, optimizer, jacobian or output; unobserved variables.
    DataError
        Stations outside the trained domain; a non-positive observation error.
    """
    # Long by its docstring; the body is the sequential steps (check, read, cycle, write).
    if unknown:
        check_names("setting of method='latent-envar'", sorted(unknown),
                    ["window", "iterations", "control", "uncertainty", "optimizer",
                     "jacobian", "inflation", "calibration", "tol", "obs_error",
                     "latent_margin", "output", "coords", "return_latent"])
    if not isinstance(model, LatentModel):
        raise ConfigurationError(expected_found("model", "a LatentModel", type(model).__name__))
    check_name("method", method, LATENT_ENVAR_METHODS)
    members = check_members(DEFAULT_ENVAR_MEMBERS if members is None else members)
    recorded = {"window": window, "iterations": iterations, "control": control,
                "uncertainty": uncertainty, "optimizer": optimizer, "jacobian": jacobian,
                "inflation": inflation, "calibration": calibration, "tol": tol,
                "latent_margin": latent_margin, "output": output}
    _checked_settings(recorded)
    seed = resolve_seed(seed)
    generator = torch.Generator().manual_seed(int(seed))
    meta, dtype, n_latent = model.metadata, model.dtype, model.latent_dim
    problem, geometry = latent_observation_problem(observations, model, obs_error)
    check_obs_std(problem)
    frames = frame_indices(model, problem.times, stacklevel=3)
    if (np.diff(frames) < 1).any():
        raise DataError(expected_found("observation times", "one per latent step (distinct)",
                                       problem.times.tolist()[:5]))
    variable_indices = [meta.variables.index(name) for name in problem.variables]
    started = time.perf_counter()
    operators, values = decoder_operators(model, problem, geometry, variable_indices)
    stations = [operator.stations for operator in operators]
    lower, upper = (training_latent_box(model, latent_margin) if latent_margin is not None
                    else (None, None))
    with torch.no_grad():
        parameters = 2 * torch.rand(members, model.n_parameters, generator=generator,
                                    dtype=torch.float64).to(dtype) - 1
        initial = torch.cat([model.unroll(parameters.to(model.device), 1)[:, 0].cpu(),
                             parameters], dim=1)

    def advance(state: torch.Tensor, start: float, duration: float) -> torch.Tensor:
        latent, params = state[:, :n_latent], state[:, n_latent:].clamp(-1.0, 1.0)
        latent = model.advance(latent.to(model.device), params.to(model.device),
                               round(duration / model.dt))
        return torch.cat([latent.cpu(), state[:, n_latent:]], dim=1)

    def observe(state: torch.Tensor, index: int) -> torch.Tensor:
        fields = model.decode(state[:, :n_latent].to(model.device), coords=stations[index])
        return fields[:, variable_indices].flatten(-2).cpu()

    def bound(state: torch.Tensor) -> torch.Tensor:
        latent, params = state[:, :n_latent], state[:, n_latent:].clamp(-1.0, 1.0)
        if lower is not None:
            latent = torch.minimum(torch.maximum(latent, lower.to(latent)), upper.to(latent))
        return torch.cat([latent, params], dim=1)

    def wrapper(plan: list) -> Any:
        return tqdm(plan, desc="latent-envar windows", disable=not progress_enabled(progress),
                    leave=False, unit="window")

    result = envar(advance, observe, initial, float(meta.times[0]), problem.times.copy(),
                   values.to(dtype), problem.obs_std.to(dtype), window=window,
                   control=control, uncertainty=uncertainty, optimizer=optimizer,
                   jacobian=jacobian, iterations=iterations, tol=tol, inflation=inflation,
                   calibration=calibration, bound=bound, generator=generator, progress=wrapper)
    seconds = {"analysis": time.perf_counter() - started}
    attrs = {
        "title": f"xldensf {method} analysis",
        "xldensf_method": method,
        "xldensf_likelihood": "decoder",
        "xldensf_settings": json.dumps(recorded, sort_keys=True, default=str),
        "xldensf_members": members,
        "xldensf_seed": int(seed),
        "xldensf_version": __version__,
        "xldensf_forecast_model": repr(model),
        "xldensf_observed": " ".join(problem.variables),
        "xldensf_windows": len(result.windows),
    }
    if "xldensf_case" in meta.attrs:
        attrs["xldensf_case"] = meta.attrs["xldensf_case"]
    started = time.perf_counter()
    dataset = latent_ensemble_dataset(model, problem, {"": result.analysis}, attrs,
                                      coords=coords, return_latent=return_latent,
                                      output=output)
    seconds["decode"] = time.perf_counter() - started
    time_name = problem.time_coordinate.name
    dataset["cost_function"] = (time_name, result.cost.numpy(),
                                {"long_name": "final cost of the window's minimisation",
                                 "units": "1"})
    dataset["iterations"] = (time_name, result.iterations.numpy(),
                             {"long_name": "minimiser iterations of the window", "units": "1"})
    dataset["variance_factor"] = (time_name, result.variance_factor.numpy(), {
        "long_name": "a-posteriori variance factor 2 J_min / m of the window", "units": "1"})
    dataset["calibration_factor"] = (time_name, result.calibration.numpy(), {
        "long_name": "variance factor applied to the window's analysis members",
        "units": "1"})
    dataset.attrs.update({f"xldensf_seconds_{phase}": float(value)
                          for phase, value in seconds.items()})
    dataset.attrs["xldensf_seconds_per_window"] = seconds["analysis"] / len(result.windows)
    return dataset
