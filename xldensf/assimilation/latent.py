"""LD-EnSF: joint state-parameter assimilation in the latent space of a :class:`LatentModel`.

:func:`assimilate_latent` (``obs.ldensf.assimilate(model)`` with a trained
:class:`~xldensf.surrogate.LatentModel`) runs the ensemble score filter on the augmented
latent ``kappa = (s, u)`` of Xiao, Si & Chen (ICLR 2026, arXiv 2411.19305):

- prior: normalised parameters ``u ~ U(-1, 1)`` (uniform over the training range, never
  seeded with the truth) and the latent start ``s_0 = model.unroll(u, 1)`` of each member
  (the LDNet's shifted initial latent, which depends on ``u``);
- first cycles (``start="particles"``, default): a resample-move particle start on many
  prior draws (:func:`~xldensf.filters.particle_start_cycle`) until the observations are
  nearly linear in the state across them, then the filter;
- prediction: every member advances its ``s`` with its own ``u`` through the latent
  dynamics (``model.advance``), one latent step per training frame; ``u`` persists, with
  an optional random-walk ``parameter_jitter`` (normalised units per step), and stays in
  the trained range ``[-1, 1]``;
- analysis (``analysis="bayesian"``, default): the default EnSF (Gaussian prior score
  from the ensemble's moments, likelihood at the Tweedie estimate) on the joint latent
  state and parameters, with multiplicative inflation, :data:`DEFAULT_LATENT_STEPS`
  sampler steps on the grid :data:`DEFAULT_LATENT_TIME_POWER`; or ``analysis="paper"``, the
  reference code's settings (:meth:`~xldensf.filters.ensf.EnSF.paper`, a nudge). The
  likelihood is ``"decoder"`` (the decoder at the stations, any layout; by default its
  least-squares linear fit over the forecast members, one decoder pass per cycle) or
  ``"encoder"`` (the paper's LSTM latent observations, the encoder's layout only; see
  :mod:`~xldensf.assimilation.likelihoods`). ``method="etkf"`` or ``"enkf"`` analyse the
  same latent problem with an ensemble Kalman filter.

Output (``output=``): the analysis members decoded on the model grid (or at ``coords``)
lazily on access (dask), now, or as their mean and spread; the parameter members in
physical units at every time, optionally the latent members; the attrs hold the wall
seconds of each phase (``xldensf_seconds_forecast``, ``_analysis``, ``_decode``).

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

import dataclasses
import json
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import xarray as xr

from .._version import __version__
from ..errors import (
    ConfigurationError,
    DataError,
    ParameterError,
    check_name,
    expected_found,
)
from ..filters import cycle, get_filter, particle_start_cycle
from ..filters.ensf import PAPER_CASES, EnSF
from ..filters.inflation import AdaptiveInflation
from ..filters.model_error import AdaptiveModelError
from ..filters.wrappers import (
    LINEARIZATIONS,
    BoundedAnalysis,
    StandardizedAnalysis,
    cheaper_linearization,
)
from ..options import resolve_seed
from ..surrogate import LatentModel
from ..surrogate.dataset import frame_indices
from .latent_output import OUTPUTS, latent_ensemble_dataset
from .latent_prior import candidate_prior, training_latent_box, training_latent_spread
from .likelihoods import (
    LIKELIHOODS,
    check_obs_std,
    decoder_operators,
    default_likelihood,
    encoder_observations,
    latent_observation_problem,
    latent_observation_std,
    match_encoder_stations,
)
from .setup import check_members

__all__ = [
    "assimilate_latent",
    "candidate_prior",
    "latent_ensemble_dataset",
    "training_latent_box",
    "LATENT_METHODS",
    "LATENT_ANALYSES",
    "OUTPUTS",
    "PARAMETER_UPDATES",
    "DEFAULT_LATENT_MEMBERS",
    "DEFAULT_LATENT_INFLATION",
    "DEFAULT_LATENT_MARGIN",
    "DEFAULT_LATENT_STEPS",
    "DEFAULT_LATENT_TIME_POWER",
    "DEFAULT_LINEARIZE_MEMBERS",
    "DEFAULT_START_CANDIDATES",
    "STARTS",
    "PHASES",
]

#: Methods with a :class:`LatentModel`: LD-EnSF, and ensemble Kalman analyses of the same
#: latent problem (for comparison).
LATENT_METHODS = ("ld-ensf", "enkf", "etkf")
#: Configurations of the LD-EnSF analysis (``analysis=``): ``"bayesian"`` (the default EnSF
#: of :class:`~xldensf.filters.ensf.EnSF`, a posterior sampler) and ``"paper"`` (the
#: reference code's settings, :meth:`EnSF.paper`, a nudge; docs/ldensf.md).
LATENT_ANALYSES = ("bayesian", "paper")
#: How the parameters are updated under the decoder likelihood (``parameter_update=``):
#: ``"joint"`` (in the same analysis as the latent state, through the prior's
#: cross-covariance) or ``"regression"`` (on the latent increments afterwards,
#: :func:`~xldensf.filters.wrappers.regress_unobserved`).
PARAMETER_UPDATES = ("joint", "regression")
#: Default ensemble size of the latent methods: a latent member costs microseconds per
#: prediction step, and the joint latent-parameter state needs far more than the
#: full-space habit of 20 (measurements in docs/ldensf.md).
DEFAULT_LATENT_MEMBERS = 200
#: Default multiplicative inflation of the default latent EnSF's analysis anomalies: the
#: latent dynamics are deterministic and the parameters persist, so without it the
#: ensemble loses its spread over the cycles (docs/ldensf.md).
DEFAULT_LATENT_INFLATION = 1.1
#: Additive model errors of the latent filters (setting ``model_error``; docs/twin.md).
MODEL_ERRORS = ("adaptive",)
#: Keywords of :class:`~xldensf.filters.AdaptiveModelError` a ``model_error`` mapping may set.
MODEL_ERROR_SETTINGS = ("memory", "probes", "probe_step", "lower_bound_se")
#: Default sampler steps of the default latent EnSF (``steps=`` overrides): with the
#: Gaussian prior score and the ensemble-linearised decoder the posterior of each analysis
#: is Gaussian, and 20 steps on the grid :data:`DEFAULT_LATENT_TIME_POWER` give its mean to
#: rounding and its spread within a fifth (the kernel's default 100 steps: a twentieth) at
#: a fifth of the cost (docs/ldensf.md).
DEFAULT_LATENT_STEPS = 20
#: Default time grid of the default latent EnSF, ``t_k = (1 - k / steps) ** 3``: more of
#: the few steps near ``t = 0``, where the scores are stiffest (docs/ldensf.md).
DEFAULT_LATENT_TIME_POWER = 3.0
#: Members ``linearize="ensemble"`` fits its linearisation of the decoder on (the first
#: of the forecast members, which are exchangeable; all of them when fewer): half the
#: decoder passes of all 200, with the same accuracy on the tsunami's truths 0-14
#: (docs/ldensf.md, "Speed"; the default is ``"sigma-points"`` since).
DEFAULT_LINEARIZE_MEMBERS = 100
#: How the first cycles start (``start=``): ``"particles"`` (a resample-move particle
#: start on many prior draws, :func:`~xldensf.filters.particle_start_cycle` with a
#: :func:`candidate_prior`), ``"weights"`` (the same start with importance weights only,
#: handed over when their effective size falls below ``members``) or ``"prior"`` (the
#: filter's first analysis on ``members`` prior draws).
STARTS = ("particles", "weights", "prior")
#: Default number of prior draws of each particle start, and the least number per member
#: taken when ``members`` is large: a latent candidate costs microseconds per step and one
#: decoder pass at the stations per cycle (and per replayed move); the moving start needs
#: fewer (docs/ldensf.md, "First cycles").
DEFAULT_START_CANDIDATES = {"particles": (1024, 4), "weights": (4096, 10)}
#: Phases timed in the attrs of the analysis, ``xldensf_seconds_<phase>`` (wall seconds,
#: summed over cycles): the latent prediction steps (with the prior's start), the analyses
#: (with the encoder or the station operators they need), and the decoding of the output.
PHASES = ("forecast", "analysis", "decode")
#: Default margin of the box of the training latents that analysis members are kept in, as
#: a fraction of the box's width per component (see :func:`training_latent_box`).
DEFAULT_LATENT_MARGIN = 0.5


def _kernel(method: str, analysis: str, settings: dict[str, Any], case: str | None,
            n_regressed: int, linearize: bool | str, standardize: bool) -> tuple[Any, EnSF | None]:
    """The analysis of one cycle, and the EnSF inside it (``None`` for a Kalman kernel)."""
    if method != "ld-ensf":
        return get_filter(method, **settings), None
    if analysis == "paper":
        if case not in PAPER_CASES:
            raise ConfigurationError(expected_found(
                "analysis='paper'", f"a model whose xldensf_case attr is one of "
                f"{sorted(PAPER_CASES)}", case))
        ensf = EnSF.paper(case, **settings)
        return StandardizedAnalysis(ensf, fixed_scale=1.0 / ensf.latent_scale,
                                    n_regressed=n_regressed, linearize=linearize), ensf
    ensf = get_filter("ensf", **{"steps": DEFAULT_LATENT_STEPS,
                                 "time_power": DEFAULT_LATENT_TIME_POWER, **settings})
    # standardised by the forecast's mean and spread, uncapped: the Tweedie likelihood is
    # no stiffer than the prior, so the cap of the damped likelihood is not needed
    wrapped = StandardizedAnalysis(ensf, fixed_scale=None if standardize else 1.0, cap=None,
                                   n_regressed=n_regressed, linearize=linearize,
                                   linearize_members=DEFAULT_LINEARIZE_MEMBERS)
    return wrapped, ensf


def _check_memory(ensf: EnSF | None, members: int, n_state: int, n_obs: int,
                  output_values: int, limit_gib: float) -> None:
    """Refuse member counts whose analysis or eager output would not fit ``limit_gib``."""
    estimates = {"output (output='members')": 8.0 * output_values}
    if ensf is not None:
        estimates["EnSF analysis"] = ensf.memory_estimate(1, members, n_state, n_obs)
    for what, estimate in estimates.items():
        if estimate > limit_gib * 2 ** 30:
            raise ParameterError(expected_found(
                f"memory of the {what}", f"<= memory_limit_gib = {limit_gib} GiB",
                f"about {estimate / 2 ** 30:.1f} GiB for {members} members; use fewer "
                "members or output='lazy'/'mean'"))


def assimilate_latent(
    observations: xr.Dataset,
    model: LatentModel,
    *,
    method: str = "ld-ensf",
    members: int | None = None,
    analysis: str = "bayesian",
    likelihood: str | None = None,
    obs_error: Any = None,
    latent_obs_std: float | None = None,
    parameter_jitter: float = 0.0,
    linearize: bool | str | None = None,
    standardize: bool = False,
    parameter_update: str = "joint",
    latent_margin: float | None = DEFAULT_LATENT_MARGIN,
    start: str | None = None,
    start_candidates: int | None = None,
    output: str = "lazy",
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
        Ensemble size (>= 2); default :data:`DEFAULT_LATENT_MEMBERS`. Counts whose analysis
        or eager output would exceed ``memory_limit_gib`` (an EnSF setting, default 8) are
        refused with the estimate.
    analysis
        ``"bayesian"`` (default): the default :class:`~xldensf.filters.ensf.EnSF` (Gaussian
        prior score from the ensemble's moments, likelihood at the Tweedie estimate), a
        posterior sampler, with ``inflation`` :data:`DEFAULT_LATENT_INFLATION`, ``steps``
        :data:`DEFAULT_LATENT_STEPS` and ``time_power`` :data:`DEFAULT_LATENT_TIME_POWER`
        unless given in ``settings``. ``"paper"``: the LD-EnSF reference code,
        ``EnSF.paper(case)`` for the model's ``xldensf_case`` attr, run on the latent
        state and parameters times ``latent_scale`` (100) with ``latent_obs_std`` (0.1)
        in those scaled units, no standardisation and no score clip; its member-paired
        score makes the analysis a nudge toward the observation whose strength is set by
        the step count.
    likelihood
        ``None`` (default): ``"decoder"`` on every layout (on the encoder's own layout too,
        where it is also the more accurate; see :func:`default_likelihood`).
        ``"decoder"``: the decoder at the stations, any layout; ``"encoder"``: the paper's
        LSTM latent observations (needs the encoder's station layout, see
        :func:`encoder_layout`).
    obs_error
        Override of the observation error standard deviation (decoder likelihood), as in
        :func:`xldensf.assimilation.assimilate`.
    latent_obs_std
        Latent observation error of the encoder likelihood, in the encoder's scaled units
        (latent components over their training spread, normalised parameters). Default:
        the square root of the encoder's validation loss stored with the model
        (else 0.1). With ``analysis="paper"``: in the paper's scaled units (default 0.1,
        i.e. 0.001 of the unscaled latent and normalised parameters).
    parameter_jitter
        Standard deviation of a random walk on the normalised parameters per latent step
        (0: parameters persist).
    linearize
        LD-EnSF with the decoder likelihood only: replace the decoder at the stations by
        its tangent at the forecast mean in each cycle, ``R(s) ~ R(m) + J (s - m)``: one
        Jacobian per cycle instead of a decoder pass per sampler step (much faster; exact
        for a linear decoder, an approximation otherwise; ``"tangent"`` is the same).
        ``"ensemble"``: the least-squares linear fit of the decoder at the stations over
        the forecast members (:func:`~xldensf.filters.wrappers.ensemble_linearization`,
        one decoder pass over the first ``DEFAULT_LINEARIZE_MEMBERS`` members per cycle;
        the linearisation of an ensemble Kalman filter). ``"sigma-points"``: that of a
        Gaussian with the forecast ensemble's mean and covariance, by central differences
        along its principal axes
        (:func:`~xldensf.filters.wrappers.sigma_point_linearization`, ``2 n + 1``
        decoder evaluations per cycle for ``n`` latents and parameters, whatever the
        member count). ``None`` (default): for the default analysis with the decoder
        likelihood the cheaper of the two (``"sigma-points"`` unless ``2 n + 1`` is at least
        the ensemble fit's members; docs/ldensf.md), off otherwise.
    standardize
        Run the EnSF on the forecast ensemble's standardised coordinates (mean and spread
        per component, each scale capped so the linearised likelihood stays resolvable by
        the sampler; :class:`~xldensf.filters.wrappers.StandardizedAnalysis`). Off by
        default: the default EnSF's Tweedie likelihood is no stiffer than its prior.
    parameter_update
        Decoder likelihood only (the parameters have no likelihood gradient there):
        ``"joint"`` (default) updates them in the same analysis through the prior score's
        cross-covariance with the latent state; ``"regression"`` by regression on the
        latent increments afterwards (:func:`~xldensf.filters.wrappers.regress_unobserved`;
        always used with the member-paired score of ``analysis="paper"``, which carries no
        cross-covariance).
    latent_margin
        Analysis latent members are kept in the box of the training latents (all frames,
        the whole parameter range; :func:`training_latent_box`) widened by this fraction
        of its width on each side, as the parameters are kept in ``[-1, 1]``: off the
        training latents the networks extrapolate and members can run away. ``None``: no
        bound.
    start
        ``"particles"`` (default, except with ``analysis="paper"``): the first cycles are
        analysed by ``start_candidates`` prior draws, weighted by each cycle's likelihood
        in tempered steps, resampled and moved after each step by Metropolis proposals
        in the parameters (random walk and independent prior draws), each replayed
        through the latent dynamics from the first time (:func:`candidate_prior`); after
        a cycle that needed no move (or any from the fourth on), once the next cycles'
        observations are nearly linear in the latent state across the candidates,
        ``members`` of them go to the filter, which analyses every later cycle
        (:func:`~xldensf.filters.particle_start_cycle`; no observation is used twice). It
        follows the multimodal early posterior instead of letting the filter lock onto a
        wrong mode (docs/ldensf.md, "First cycles").
        With ``parameter_jitter > 0`` (dynamics not deterministic) or a model without
        parameters it falls back to ``"weights"``: importance weights only, handed over
        at the first cycle that would leave them an effective size below ``members``
        (the rest of that cycle's likelihood to the filter). ``"prior"``: the filter's
        first analysis on ``members`` prior draws (the paper's). The attrs record the start
        that ran (``xldensf_settings``) and the cycle of the handover
        (``xldensf_start_handover``).
    start_candidates
        Prior draws of the particle start; default from
        :data:`DEFAULT_START_CANDIDATES` (``"particles"``: 1024, at least four per member;
        ``"weights"``: 4096, at least ten per member); at least ``2 * members``.
    output
        ``"lazy"`` (default): every member's fields, decoded frame by frame on access (a
        dask array when dask is installed; else decoded now, as ``"members"``), so the call
        returns after the filter. ``"members"``: every member decoded now. ``"mean"``: the
        fields are the ensemble mean of the decoded members ``(time, *grid)`` with
        ``<name>_spread`` (their standard deviation, ddof 1), decoded now without holding
        the members. Parameters (and ``latent``) are always returned per member.
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
        ``inflation="adaptive"`` (any method): no fixed inflation; the forecast anomalies
        are inflated before each analysis by a factor estimated from the innovations
        (:class:`~xldensf.filters.AdaptiveInflation`), recorded per analysed cycle in the
        attr ``xldensf_inflation_factors`` (docs/twin.md). ``model_error="adaptive"``
        (any method): before each analysis, noise ``N(0, alpha Q)`` on the latent state
        (not the parameters), ``Q`` its spread across the trained parameters, ``alpha``
        from the innovations (:class:`~xldensf.filters.AdaptiveModelError`; a mapping of
        its keywords, e.g. ``{"lower_bound_se": 0}``, sets them), recorded per analysed
        cycle in the attr ``xldensf_model_error_variances``.

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
    # Long by its docstring (every public option documented); the body is 150 lines of
    # sequential steps (check, read, build the kernel, cycle, write) kept in one place.
    if not isinstance(model, LatentModel):
        raise ConfigurationError(expected_found("model", "a LatentModel",
                                                type(model).__name__))
    members = check_members(DEFAULT_LATENT_MEMBERS if members is None else members)
    check_name("method (with a LatentModel)", method, LATENT_METHODS)
    check_name("analysis", analysis, LATENT_ANALYSES)
    check_name("output", output, OUTPUTS)
    check_name("parameter_update", parameter_update, PARAMETER_UPDATES)
    start = ("prior" if analysis == "paper" and method == "ld-ensf" else "particles") \
        if start is None else start
    check_name("start", start, STARTS)
    if start == "particles" and (parameter_jitter > 0 or not model.n_parameters):
        start = "weights"  # moves replay the deterministic dynamics of the parameters
    if start_candidates is None and start != "prior":
        least, per_member = DEFAULT_START_CANDIDATES[start]
        start_candidates = max(least, per_member * members)
    if start != "prior" and not (isinstance(start_candidates, (int, np.integer))
                                     and start_candidates >= 2 * members):
        raise ConfigurationError(expected_found(
            "start_candidates", f"an integer >= 2 * members = {2 * members}",
            start_candidates))
    if likelihood is not None:
        check_name("likelihood", likelihood, LIKELIHOODS)
    if linearize is None:  # the default analysis: linearised decoder (docs/ldensf.md)
        linearize = cheaper_linearization(
            model.latent_dim + model.n_parameters, members, DEFAULT_LINEARIZE_MEMBERS) \
            if method == "ld-ensf" and analysis == "bayesian" and likelihood != "encoder" \
            else False
        explicit_linearize = False
    else:
        explicit_linearize = bool(linearize)
    if explicit_linearize and (method, likelihood or "decoder") != ("ld-ensf", "decoder"):
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
    problem, geometry = latent_observation_problem(observations, model, obs_error)
    likelihood = likelihood or default_likelihood(model, problem, geometry,
                                                  explicit_linearize)
    if linearize not in (True, False, *LINEARIZATIONS):
        raise ConfigurationError(expected_found(
            "linearize", f"True, False, None or one of {list(LINEARIZATIONS)}", linearize))
    linearize = (linearize if likelihood == "decoder" else False) or False
    frames = frame_indices(model, problem.times, stacklevel=3)
    if (np.diff(frames) < 1).any():
        raise DataError(expected_found("observation times", "one per latent step (distinct)",
                                       problem.times.tolist()[:5]))
    variable_indices = [meta.variables.index(name) for name in problem.variables]
    paper = method == "ld-ensf" and analysis == "paper"
    if paper:
        parameter_update = "regression"  # the member score has no cross-covariance
    # inflation="adaptive": AdaptiveInflation of the forecast around a kernel without any
    model_error = settings.pop("model_error", None)  # an additive term around the kernel
    error_settings = dict(model_error) if isinstance(model_error, Mapping) else {}
    if isinstance(model_error, Mapping):  # AdaptiveModelError's keywords
        model_error = "adaptive"
        unknown = sorted(set(error_settings) - set(MODEL_ERROR_SETTINGS))
        if unknown:
            raise ConfigurationError(expected_found("model_error settings",
                                                    list(MODEL_ERROR_SETTINGS), unknown))
    if model_error is not None:
        check_name("model_error", model_error, MODEL_ERRORS)
    inflation = settings.get("inflation", DEFAULT_LATENT_INFLATION
                             if (method, analysis) == ("ld-ensf", "bayesian") else None)
    adaptive = isinstance(inflation, str) and check_name("inflation", inflation,
                                                         ("adaptive",)) == "adaptive"
    kernel_settings = settings if inflation is None else {
        **settings, "inflation": 1.0 if adaptive else inflation}
    recorded = {**kernel_settings, "likelihood": likelihood, "parameter_jitter": parameter_jitter,
                "latent_margin": latent_margin, "analysis": analysis, "output": output,
                "start": start}
    if start != "prior":
        recorded["start_candidates"] = int(start_candidates)
    if adaptive:
        recorded["inflation"] = "adaptive"
    if model_error is not None:
        recorded["model_error"] = {"kind": model_error, **error_settings} if error_settings \
            else model_error
    if method == "ld-ensf":
        recorded.update(standardize=standardize and not paper)
        if likelihood == "decoder":
            recorded["parameter_update"] = parameter_update
    if method == "ld-ensf" and likelihood == "decoder":
        recorded["linearize"] = linearize

    seconds = dict.fromkeys(PHASES, 0.0)
    started = time.perf_counter()
    dtype, n_latent = model.dtype, model.latent_dim
    regressed = model.n_parameters if likelihood == "decoder" and \
        parameter_update == "regression" else 0
    kernel, ensf = _kernel(method, analysis, kernel_settings, meta.attrs.get("xldensf_case"),
                           regressed, linearize, standardize)
    if adaptive:  # the forecast inflated before the kernel, which has none
        kernel = inflator = AdaptiveInflation(kernel)
    if model_error is not None:  # noise N(0, alpha Q) on the latent state, not the parameters
        kernel = error_model = AdaptiveModelError(kernel, torch.cat([
            training_latent_spread(model), torch.zeros(model.n_parameters, dtype=torch.float64)]),
            seed=int(seed), **error_settings)
    if likelihood == "decoder":
        check_obs_std(problem)
        operators, values = decoder_operators(model, problem, geometry, variable_indices)
        obs_std = problem.obs_std.to(dtype)
        values = values.to(dtype)
    else:
        match = match_encoder_stations(model, problem, geometry)
        values = encoder_observations(model, problem, frames, match)
        if paper:  # the reference code's error, in its scaled units, for every component
            scaled = float(ensf.latent_obs_std if latent_obs_std is None else latent_obs_std)
            if not 0 < scaled < math.inf:
                raise ConfigurationError(expected_found("latent_obs_std", "a positive number",
                                                        latent_obs_std))
            std = torch.full((n_latent + model.n_parameters,), scaled / ensf.latent_scale,
                             dtype=dtype)
        else:
            std, scaled = latent_observation_std(model, latent_obs_std)
        obs_std = std.expand(values.shape)
        operators = torch.eye(n_latent + model.n_parameters, dtype=dtype)
        recorded["latent_obs_std"] = scaled
    if ensf is not None:  # every setting of the EnSF that ran
        recorded["ensf"] = dataclasses.asdict(ensf)
    if paper:
        recorded.update(latent_scale=ensf.latent_scale, case=meta.attrs["xldensf_case"])
    n_points = (int(np.prod(meta.grid_shape)) if coords is None
                else len(next(iter(dict(coords).values()))))
    _check_memory(ensf, members, n_latent + model.n_parameters, values.shape[-1],
                  (1 + return_forecasts) * len(problem.times) * members * len(meta.variables)
                  * n_points if output == "members" else 0,
                  float(settings.get("memory_limit_gib", EnSF.memory_limit_gib)))
    if latent_margin is not None:
        kernel = BoundedAnalysis(kernel, *training_latent_box(model, latent_margin))
    seconds["analysis"] += time.perf_counter() - started

    started = time.perf_counter()
    with torch.no_grad():  # the prior: members, or the particle start's candidates
        draws = members if start == "prior" else int(start_candidates)
        parameters = 2 * torch.rand(draws, model.n_parameters, generator=generator,
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
    if start in ("particles", "weights"):
        result = particle_start_cycle(
            kernel, advance, candidate_prior(model, parameters)
            if start == "particles" else initial, problem.times.copy(), values, operators,
            obs_std, members=members, t0=t0, generator=generator,
            return_forecasts=return_forecasts, progress=progress)
    else:
        result = cycle(kernel, advance, initial, problem.times.copy(), values, operators,
                       obs_std, t0=t0, generator=generator,
                       return_forecasts=return_forecasts, progress=progress)
    # the cycles' time less the forecasts: analyses (and the divergence checks)
    seconds["analysis"] += time.perf_counter() - started - (seconds["forecast"]
                                                           - initial_seconds)
    attrs = {
        "title": f"xldensf {method} analysis",
        "xldensf_method": method,
        "xldensf_analysis": analysis if method == "ld-ensf" else method,
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
    if start != "prior":  # the cycle the filter took over (n_cycles: never)
        attrs["xldensf_start_handover"] = int(result.handover)
    if adaptive:  # the factor on the forecast's spread at each cycle the filter analysed
        attrs["xldensf_inflation_factors"] = json.dumps([round(f, 4) for f in inflator.factors])
    if model_error is not None:  # alpha of the additive model error at each analysed cycle
        attrs["xldensf_model_error_variances"] = json.dumps(
            [float(f"{value:.4g}") for value in error_model.variances])
    ensembles = {"": result.analysis}
    if return_forecasts:
        ensembles["_forecast"] = result.forecast
    started = time.perf_counter()
    dataset = latent_ensemble_dataset(model, problem, ensembles, attrs, coords=coords,
                                      return_latent=return_latent, output=output)
    seconds["decode"] = time.perf_counter() - started
    dataset.attrs.update({f"xldensf_seconds_{phase}": float(value)
                          for phase, value in seconds.items()})
    return dataset
