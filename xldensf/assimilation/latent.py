"""LD-EnSF: joint state-parameter assimilation in the latent space of a :class:`LatentModel`.

:func:`assimilate_latent` (``obs.ldensf.assimilate(model)`` with a trained
:class:`~xldensf.surrogate.LatentModel`) runs the ensemble score filter on the augmented
latent ``kappa = (s, u)`` of Xiao, Si & Chen (ICLR 2026, arXiv 2411.19305):

- prior: normalised parameters ``u ~ U(-1, 1)`` (uniform over the training range, never
  seeded with the truth) and the latent start ``s_0 = model.unroll(u, 1)`` of each member
  (the LDNet's shifted initial latent, which depends on ``u``);
- prediction: every member advances its ``s`` with its own ``u`` through the latent
  dynamics (``model.advance``), one latent step per training frame; ``u`` persists, with
  an optional random-walk ``parameter_jitter`` (normalised units per step), and stays in
  the trained range ``[-1, 1]``;
- analysis, with one of two likelihoods:

  ``"decoder"`` (beyond the paper)
      ``y = R(s, x_station) + eta``: the mesh-free decoder evaluated at the station
      coordinates, the gradient of the log-likelihood by a hand-written reverse pass
      through the decoder (:meth:`LatentModel.decoder_at`; station features computed once
      per layout, no autograd graph per sampler step). Works with any station layout, also
      moving or never seen in training, without retraining. ``linearize=True`` replaces
      the decoder by its tangent at the forecast mean (one Jacobian per cycle).
  ``"encoder"`` (the paper)
      latent observations ``(s_hat, u_hat) = LSTM(y_{1:t})`` from the history-aware
      encoder, an identity observation operator and Gaussian latent noise. Needs an
      encoder trained for this station layout.

The EnSF runs on standardised coordinates (the forecast ensemble's mean and spread per
latent component, capped so that the linearised likelihood stays resolvable by the
sampler, as for the full-space EnSF). ``method="etkf"`` or ``"enkf"`` run the same latent
problem with an ensemble Kalman analysis instead (for comparison; exact in the
linear-Gaussian case). Output: the analysis members decoded on the model grid (or at
``coords``) once after the cycles, the parameter members in physical units at every time,
optionally the latent members; the attrs hold the wall seconds of each phase
(``xldensf_seconds_forecast``, ``_analysis``, ``_decode``).

Examples
--------
>>> import xldensf as xl
>>> from xldensf.surrogate import fit
>>> train = xl.simulate("lorenz96", runs=4, seed=0, preset="small", n_outputs=6)
>>> model = fit(train, parameters=["F"], seed=0, steps=5, finetune_steps=0,
...             reconstruction_width=8, latent_dim=3, progress=False)
>>> truth = train.isel(run=0)
>>> obs = truth.ldensf.observe(stations=8, noise=0.1, seed=0)
>>> analysis = obs.ldensf.assimilate(model, members=4, seed=0, steps=5)
>>> analysis["x"].dims, analysis["F"].dims, analysis.attrs["xldensf_likelihood"]
(('time', 'member', 'k'), ('time', 'member'), 'decoder')
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import xarray as xr

from .._version import __version__
from ..errors import ConfigurationError, DataError, check_name, expected_found
from ..filters import cycle, get_filter
from ..filters.wrappers import BoundedAnalysis, StandardizedAnalysis
from ..options import resolve_seed
from ..surrogate import LatentModel
from ..surrogate.dataset import forecast_points, frame_indices
from .likelihoods import (
    LIKELIHOODS,
    check_obs_std,
    decoder_operators,
    default_likelihood,
    encoder_observations,
    latent_geometry,
    latent_observation_std,
    match_encoder_stations,
)
from .output import EnsembleFields, analysis_dataset
from .setup import check_members, observation_problem

__all__ = [
    "assimilate_latent",
    "training_latent_box",
    "LATENT_METHODS",
    "DEFAULT_LATENT_MARGIN",
    "PHASES",
]

#: Methods with a :class:`LatentModel`: LD-EnSF, and ensemble Kalman analyses of the same
#: latent problem (for comparison).
LATENT_METHODS = ("ld-ensf", "enkf", "etkf")
#: Phases timed in the attrs of the analysis, ``xldensf_seconds_<phase>`` (wall seconds,
#: summed over cycles): the latent prediction steps (with the prior's start), the analyses
#: (with the encoder or the station operators they need), and the decoding of the output.
PHASES = ("forecast", "analysis", "decode")
#: Default margin of the box of the training latents that analysis members are kept in, as
#: a fraction of the box's width per component (see :func:`training_latent_box`).
DEFAULT_LATENT_MARGIN = 0.5
#: Parameter sets (a Sobol sequence over ``[-1, 1]``) whose latent trajectories span the
#: box of the training latents.
_BOX_SAMPLES = 512


def training_latent_box(model: LatentModel, margin: float = 0.0) -> tuple[torch.Tensor,
                                                                         torch.Tensor]:
    """Lower and upper bounds ``(latent_dim,)`` of the latent trajectories over the trained
    parameter range, widened by ``margin`` times the width on each side.

    The trajectories ``model.unroll(u)`` at every training frame for a fixed Sobol sequence
    of ``u`` over ``[-1, 1]`` (the training runs' range): the region of latent space the
    dynamics and decoder were trained on, outside which their networks extrapolate.

    Examples
    --------
    >>> import torch
    >>> from xldensf.surrogate import LatentModel, LDNetConfig, SurrogateMetadata
    >>> meta = SurrogateMetadata(variables=("h",), coordinate_names=("x",),
    ...     times=(0.0, 1.0, 2.0), parameters=("c",), parameter_ranges=((0.0, 1.0),))
    >>> model = LatentModel(LDNetConfig.small().replace(latent_dim=3), meta,
    ...                     torch.rand(6, 1))
    >>> lower, upper = training_latent_box(model, margin=0.5)
    >>> lower.shape, bool((lower < upper).all())
    (torch.Size([3]), True)
    """
    sobol = torch.quasirandom.SobolEngine(model.n_parameters, scramble=True, seed=0)
    parameters = (2 * sobol.draw(_BOX_SAMPLES, dtype=torch.float64) - 1).to(model.dtype)
    with torch.no_grad():
        latents = model.unroll(parameters.to(model.device)).flatten(0, -2).cpu()
    lower, upper = latents.amin(dim=0), latents.amax(dim=0)
    width = upper - lower
    return lower - margin * width, upper + margin * width


def _kernel(method: str, settings: dict[str, Any], n_regressed: int,
            linearize: bool = False) -> Any:
    if method == "ld-ensf":
        # Clip scores (+-1000, as in the EnSF paper) as a guard against stiff decoders;
        # overridable.
        settings.setdefault("score_clip", 1e3)
        return StandardizedAnalysis(get_filter("ensf", **settings), n_regressed=n_regressed,
                                    linearize=linearize)
    return get_filter(method, **settings)


def assimilate_latent(
    observations: xr.Dataset,
    model: LatentModel,
    *,
    method: str = "ld-ensf",
    members: int = 20,
    likelihood: str | None = None,
    obs_error: Any = None,
    latent_obs_std: float | None = None,
    parameter_jitter: float = 0.0,
    linearize: bool = False,
    latent_margin: float | None = DEFAULT_LATENT_MARGIN,
    coords: Any = None,
    seed: int | None = None,
    return_latent: bool = False,
    return_forecasts: bool = False,
    progress: bool | None = None,
    **settings: Any,
) -> xr.Dataset:
    """LD-EnSF: assimilate station observations in the latent space of a surrogate.

    Parameters
    ----------
    observations
        CF timeSeries Dataset, dims ``(time, station)``, at times ``t0 + k dt`` of the
        model's training frames (``k >= 0``); NaN values are skipped.
    model
        A trained :class:`~xldensf.surrogate.LatentModel`.
    method
        ``"ld-ensf"`` (EnSF on the standardised latent) or ``"etkf"`` / ``"enkf"`` (the
        same latent problem with an ensemble Kalman analysis).
    members
        Ensemble size (>= 2).
    likelihood
        ``None`` (default): ``"encoder"`` on the layout the model's encoder was trained
        for, else ``"decoder"`` (see :func:`default_likelihood`). ``"decoder"``: any
        layout; ``"encoder"``: the paper's LSTM latent
        observations; needs the encoder's station layout, see :func:`encoder_layout`).
    obs_error
        Override of the observation error standard deviation (decoder likelihood), as in
        :func:`xldensf.assimilation.assimilate`.
    latent_obs_std
        Latent observation error of the encoder likelihood, in the encoder's scaled units
        (latent components over their training spread, normalised parameters). Default:
        the square root of the encoder's validation loss stored with the model
        (else 0.1).
    parameter_jitter
        Standard deviation of a random walk on the normalised parameters per latent step
        (0: parameters persist).
    linearize
        LD-EnSF with the decoder likelihood only: replace the decoder at the stations by
        its tangent at the forecast mean in each cycle, ``R(s) ~ R(m) + J (s - m)``: one
        Jacobian per cycle instead of a decoder pass per sampler step (much faster; exact
        for a linear decoder, an approximation otherwise).
    latent_margin
        Analysis latent members are kept in the box of the training latents (all frames,
        the whole parameter range; :func:`training_latent_box`) widened by this fraction
        of its width on each side, as the parameters are kept in ``[-1, 1]``: off the
        training latents the networks extrapolate and members can run away. ``None``: no
        bound.
    coords
        Mapping of every grid coordinate name to 1-D points where the analysis is decoded;
        default the training grid.
    seed
        Seed of the prior draw and of the filter; recorded in the attrs.
    return_latent
        Also return the latent members (variable ``latent``, dims ``(time, member,
        latent)``).
    return_forecasts
        Also return the decoded forecast members (``<name>_forecast``).
    progress
        Progress bar over cycles; ``None`` follows :func:`xldensf.set_options`.
    **settings
        Settings of the filter kernel (e.g. ``steps``, ``eps_alpha``, ``prior_score``).

    Returns
    -------
    xarray.Dataset
        Analysis members ``(time, member, *grid)`` (or ``(time, member, point)``) in the
        observations' units (the model's for unobserved variables), parameter members
        ``(time, member)`` in the training units, attrs with method, likelihood,
        settings, seed and version, and the wall seconds of each phase (summed over
        cycles): ``xldensf_seconds_forecast`` (latent prediction steps),
        ``xldensf_seconds_analysis`` (analyses, with the encoder or the station
        operators) and ``xldensf_seconds_decode`` (decoding the output).

    Raises
    ------
    ConfigurationError
        Fewer than 2 members, an unknown setting, an encoder likelihood without encoder,
        ``linearize`` other than with LD-EnSF and the decoder likelihood,
        times that are not on the model's frames.
    UnknownNameError
        Unknown method or likelihood; observed variables the model was not trained on.
    DataError
        Stations outside the trained domain; a layout other than the encoder's with
        ``likelihood="encoder"`` (the message suggests ``likelihood="decoder"``); an
        observation error that is not positive and finite (decoder likelihood).
    """
    if not isinstance(model, LatentModel):
        raise ConfigurationError(expected_found("model", "a LatentModel",
                                                type(model).__name__))
    members = check_members(members)
    check_name("method (with a LatentModel)", method, LATENT_METHODS)
    if likelihood is not None:
        check_name("likelihood", likelihood, LIKELIHOODS)
    if linearize and (method, likelihood or "decoder") != ("ld-ensf", "decoder"):
        raise ConfigurationError(expected_found(
            "linearize=True", "method='ld-ensf' with likelihood='decoder'",
            f"method={method!r}, likelihood={likelihood!r}"))
    if not (parameter_jitter >= 0 and math.isfinite(parameter_jitter)):
        raise ConfigurationError(expected_found("parameter_jitter", ">= 0", parameter_jitter))
    if latent_margin is not None and not (latent_margin >= 0 and math.isfinite(latent_margin)):
        raise ConfigurationError(expected_found("latent_margin", ">= 0 or None", latent_margin))
    seed = resolve_seed(seed)
    generator = torch.Generator().manual_seed(int(seed))
    meta = model.metadata
    geometry = latent_geometry(model)
    problem = observation_problem(
        observations, model, obs_error=obs_error, variables=meta.variables,
        variable_units={name: meta.variable_attrs.get(name, {}).get("units", "1")
                        for name in meta.variables},
        geometry=geometry, time_units=meta.time_attrs.get("units", "1"))
    likelihood = likelihood or default_likelihood(model, problem, geometry, linearize)
    frames = frame_indices(model, problem.times, stacklevel=3)
    if (np.diff(frames) < 1).any():
        raise DataError(expected_found("observation times", "one per latent step (distinct)",
                                       problem.times.tolist()[:5]))
    variable_indices = [meta.variables.index(name) for name in problem.variables]
    recorded = {**settings, "likelihood": likelihood, "parameter_jitter": parameter_jitter,
                "latent_margin": latent_margin}
    if linearize:
        recorded["linearize"] = True

    seconds = dict.fromkeys(PHASES, 0.0)
    started = time.perf_counter()
    dtype, n_latent = model.dtype, model.latent_dim
    if likelihood == "decoder":
        check_obs_std(problem)
        operators, values = decoder_operators(model, problem, geometry, variable_indices)
        obs_std = problem.obs_std.to(dtype)
        values = values.to(dtype)
    else:
        match = match_encoder_stations(model, problem, geometry)
        values = encoder_observations(model, problem, frames, match)
        std, scaled = latent_observation_std(model, latent_obs_std)
        obs_std = std.expand(values.shape)
        operators = torch.eye(n_latent + model.n_parameters, dtype=dtype)
        recorded["latent_obs_std"] = scaled
    kernel = _kernel(method, settings, model.n_parameters if likelihood == "decoder" else 0,
                     linearize and likelihood == "decoder")
    if latent_margin is not None:
        kernel = BoundedAnalysis(kernel, *training_latent_box(model, latent_margin))
    seconds["analysis"] += time.perf_counter() - started

    started = time.perf_counter()
    with torch.no_grad():
        parameters = 2 * torch.rand(members, model.n_parameters, generator=generator,
                                    dtype=torch.float64).to(dtype) - 1
        initial = torch.cat([model.unroll(parameters.to(model.device), 1)[:, 0].cpu(),
                             parameters], dim=1)
    t0 = float(meta.times[0])
    seconds["forecast"] += time.perf_counter() - started

    def advance(ensemble: torch.Tensor, start: float, duration: float) -> torch.Tensor:
        started = time.perf_counter()
        steps = round(duration / model.dt)
        latent, params = ensemble[:, :n_latent], ensemble[:, n_latent:]
        if steps and parameter_jitter > 0:
            noise = torch.randn(params.shape, generator=generator, dtype=torch.float64)
            params = params + parameter_jitter * math.sqrt(steps) * noise.to(params)
        params = params.clamp(-1.0, 1.0)  # the surrogate is trained on [-1, 1] only
        with torch.no_grad():
            latent = model.advance(latent.to(model.device), params.to(model.device), steps)
        seconds["forecast"] += time.perf_counter() - started
        return torch.cat([latent.cpu(), params], dim=1)

    started, initial_seconds = time.perf_counter(), seconds["forecast"]
    result = cycle(kernel, advance, initial, problem.times.copy(), values, operators, obs_std,
                   t0=t0, generator=generator, return_forecasts=return_forecasts,
                   progress=progress)
    # the cycles' time less the forecasts: analyses (and the divergence checks)
    seconds["analysis"] += time.perf_counter() - started - (seconds["forecast"]
                                                           - initial_seconds)
    attrs = {
        "title": f"xldensf {method} analysis",
        "xldensf_method": method,
        "xldensf_likelihood": likelihood,
        "xldensf_settings": json.dumps(recorded, sort_keys=True, default=str),
        "xldensf_members": members,
        "xldensf_seed": int(seed),
        "xldensf_version": __version__,
        "xldensf_forecast_model": repr(model),
        "xldensf_observed": " ".join(problem.variables),
    }
    if "xldensf_case" in meta.attrs:
        attrs["xldensf_case"] = meta.attrs["xldensf_case"]
    ensembles = {"": result.analysis}
    if return_forecasts:
        ensembles["_forecast"] = result.forecast
    started = time.perf_counter()
    dataset = latent_ensemble_dataset(model, problem, ensembles, attrs, coords=coords,
                                      return_latent=return_latent)
    seconds["decode"] = time.perf_counter() - started
    dataset.attrs.update({f"xldensf_seconds_{phase}": float(value)
                          for phase, value in seconds.items()})
    return dataset


def latent_ensemble_dataset(model: LatentModel, problem: Any,
                            ensembles: Mapping[str, torch.Tensor], attrs: Mapping[str, Any],
                            coords: Any = None, return_latent: bool = False) -> xr.Dataset:
    """Decode latent ensembles ``(n_cycles, members, latent_dim + n_parameters)`` as a
    Dataset; keys of ``ensembles`` are suffixes of the variable names (``""`` for the
    analysis)."""
    meta = model.metadata
    n_latent = model.latent_dim
    if coords is None:
        points, space_dims = None, tuple(meta.coordinate_names)
        space_coords = {name: (name, np.asarray(meta.grid_values[name]),
                               meta.coordinate_attrs.get(name, {})) for name in space_dims}
    else:
        points, point_dim = forecast_points(model, coords)
        space_dims = (point_dim,)
        space_coords = {name: (point_dim, points[:, index], meta.coordinate_attrs.get(name, {}))
                        for index, name in enumerate(meta.coordinate_names)}
    at = None if points is None else torch.as_tensor(points)
    written = {}
    for suffix, ensemble in ensembles.items():
        decoded = None
        with torch.no_grad():  # frame by frame: bounded memory on any grid
            for index, frame in enumerate(ensemble):
                fields = model.decode(frame[:, :n_latent].to(model.device), at).cpu().numpy()
                if decoded is None:
                    decoded = np.empty((len(ensemble), *fields.shape), dtype=np.float64)
                decoded[index] = fields
        physical = model.denormalize_parameters(ensemble[..., n_latent:].to(model.device))
        physical = physical.detach().cpu().numpy().astype(np.float64)
        extra = {}
        if return_latent:
            extra["latent"] = (("latent",),
                               ensemble[..., :n_latent].detach().cpu().numpy().astype(np.float64),
                               {"long_name": "latent state of the surrogate", "units": "1"})
        written[suffix] = EnsembleFields(
            fields={name: (decoded[:, :, index], dict(meta.variable_attrs.get(name, {})))
                    for index, name in enumerate(meta.variables)},
            parameters={name: (physical[..., index], dict(meta.parameter_attrs.get(name, {})))
                        for index, name in enumerate(meta.parameters)},
            extra=extra)
    return analysis_dataset(problem, space_coords, space_dims, written, attrs)
