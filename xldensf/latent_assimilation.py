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

import copy
import json
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import xarray as xr

from ._version import __version__
from .assimilation import _check_members, observation_problem
from .conventions import MEMBER_DIM, convert_values, coordinate_attrs
from .errors import ConfigurationError, DataError, XLDEnSFError, check_name, expected_found
from .filters import cycle, get_filter
from .filters.base import ObservationOperator
from .geometry import GridGeometry
from .options import resolve_seed
from .surrogate import LatentModel
from .surrogate.dataset import forecast_points, frame_indices

__all__ = [
    "default_likelihood",
    "assimilate_latent",
    "encoder_layout",
    "latent_geometry",
    "LATENT_METHODS",
    "LIKELIHOODS",
    "DEFAULT_LIKELIHOOD",
    "latent_ensemble_dataset",
    "training_latent_box",
    "DEFAULT_LATENT_MARGIN",
]

#: Methods with a :class:`LatentModel`: LD-EnSF, and ensemble Kalman analyses of the same
#: latent problem (for comparison).
LATENT_METHODS = ("ld-ensf", "enkf", "etkf")
#: Likelihoods of the latent analysis.
LIKELIHOODS = ("decoder", "encoder")
#: Phases timed in the attrs of the analysis, ``xldensf_seconds_<phase>`` (wall seconds,
#: summed over cycles): the latent prediction steps (with the prior's start), the analyses
#: (with the encoder or the station operators they need), and the decoding of the output.
PHASES = ("forecast", "analysis", "decode")
#: Likelihood when the encoder cannot be used (no encoder, another or a moving layout,
#: ``linearize=True``); on the encoder's own layout the default is ``"encoder"`` (see
#: :func:`default_likelihood` and docs/ldensf.md for the measurements behind the choice).
DEFAULT_LIKELIHOOD = "decoder"
#: Latent observation error of the encoder likelihood, in the encoder's scaled units
#: (latent spread, normalised parameters), when the model stores no encoder validation loss.
FALLBACK_LATENT_OBS_STD = 0.1
#: Cap of a standardised component's scale: the diagonal of the linearised
#: ``J^T R^-1 J`` is at most ``_SCALE_CAP ** 2`` in standardised units (as for the
#: full-space EnSF, :data:`xldensf.assimilation._SCALE_PER_OBS_STD`).
_SCALE_CAP = 3.0
#: Default margin of the box of the training latents that analysis members are kept in, as
#: a fraction of the box's width per component (see :func:`training_latent_box`).
DEFAULT_LATENT_MARGIN = 0.5
#: Parameter sets (a Sobol sequence over ``[-1, 1]``) whose latent trajectories span the
#: box of the training latents.
_BOX_SAMPLES = 512
#: Station position tolerance when matching observations to the encoder's stations, in
#: grid spacings (fit snaps encoder stations to grid points).
_STATION_MATCH_SPACINGS = 0.5


# ---------------------------------------------------------------------- geometry
def latent_geometry(model: LatentModel) -> GridGeometry:
    """Grid geometry of a surrogate's training grid (axes by CF meaning, as for the data).

    Examples
    --------
    >>> import torch
    >>> from xldensf.surrogate import LatentModel, LDNetConfig, SurrogateMetadata
    >>> meta = SurrogateMetadata(variables=("h",), coordinate_names=("x",),
    ...     coordinate_attrs={"x": {"units": "m", "axis": "X"}}, grid_shape=(5,),
    ...     grid_values={"x": [0.0, 1.0, 2.0, 3.0, 4.0]}, parameters=("c",),
    ...     parameter_ranges=((0.0, 1.0),))
    >>> model = LatentModel(LDNetConfig.small(), meta, torch.arange(5.0)[:, None])
    >>> latent_geometry(model).dims
    ('x',)
    """
    meta = model.metadata
    if meta.grid_shape is None or not meta.grid_values:
        raise DataError(expected_found("surrogate grid", "a full rectilinear training grid",
                                       "scattered points"))
    names = list(meta.coordinate_names)
    coords = {name: (name, np.asarray(meta.grid_values[name], dtype=np.float64),
                     meta.coordinate_attrs.get(name, {})) for name in names}
    layout = {"grid": (names, np.broadcast_to(0.0, tuple(meta.grid_shape)))}
    attrs = {key: meta.attrs[key] for key in ("xldensf_case", "xldensf_periodic")
             if key in meta.attrs}
    return GridGeometry.from_dataset(xr.Dataset(layout, coords=coords, attrs=attrs))


def encoder_layout(model: LatentModel) -> xr.Dataset:
    """The station layout the model's encoder was trained for, as a layout Dataset.

    Pass it to ``truth.ldensf.observe(stations=encoder_layout(model), ...)`` to observe
    where ``likelihood="encoder"`` can be used.

    Raises
    ------
    ConfigurationError
        If the model has no encoder.
    """
    if model.encoder is None or model.metadata.stations is None:
        raise ConfigurationError(expected_found("encoder", "a model trained with stations",
                                                "no encoder"))
    geometry = latent_geometry(model)
    return geometry.layout_dataset(np.asarray(model.metadata.stations, dtype=np.float64),
                                   "encoder")


def _axis_order(model: LatentModel, geometry: GridGeometry) -> list[int]:
    """Column of each of the model's coordinates in the geometry's position vectors."""
    names = [axis.name for axis in geometry.axes]
    return [names.index(name) for name in model.metadata.coordinate_names]


# ---------------------------------------------------------------------- operators
class _DecoderOperator(ObservationOperator):
    """``kappa -> R(s, x_station)`` for the observed variables, variable-major.

    The likelihood gradient and Jacobian come from a hand-written reverse pass through the
    decoder at the stations (:meth:`LatentModel.decoder_at`: first layer's station features
    computed once, no autograd graph per sampler step); for models without one (a subclass
    with its own ``decode``) from autograd through ``model.decode``. With ``scale`` and
    ``shift`` the operator acts on standardised ``z``, ``kappa = z * scale + shift``.
    """

    def __init__(self, model: LatentModel, stations: torch.Tensor,
                 variable_indices: list[int]) -> None:
        super().__init__(function=self._observe)
        self.model, self.stations, self.variable_indices = model, stations, variable_indices
        self.decoder = model.decoder_at(stations, variables=variable_indices)
        self.scale: torch.Tensor | None = None
        self.shift: torch.Tensor | None = None

    def standardized(self, scale: torch.Tensor, shift: torch.Tensor) -> _DecoderOperator:
        """The same operator acting on ``z = (kappa - shift) / scale``."""
        operator = copy.copy(self)
        operator.scale, operator.shift = scale, shift
        operator.function = operator._observe  # bound to the copy
        return operator

    def _latent(self, state: torch.Tensor) -> torch.Tensor:
        kappa = state if self.scale is None else state * self.scale + self.shift
        return kappa[..., : self.model.latent_dim]

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        latent = self._latent(state)
        if self.decoder is None:
            fields = self.model.decode(latent, coords=self.stations)[..., self.variable_indices,
                                                                     :]
            return fields.flatten(-2)
        fields, _ = self.decoder.fields_and_saved(latent.reshape(-1, latent.shape[-1]))
        return fields.transpose(-1, -2).reshape(*latent.shape[:-1], -1)

    def __call__(self, state: torch.Tensor) -> torch.Tensor:
        return self._observe(state)

    def _pullback(self, saved: tuple, cotangent: torch.Tensor, n_state: int) -> torch.Tensor:
        """``J^T cotangent`` as ``(rows, n_state)`` (zero for the parameters) from the saved
        forward pass of ``rows`` states and ``(rows, n_obs)`` variable-major cotangents."""
        rows = cotangent.shape[0]
        cotangent = cotangent.reshape(rows, len(self.variable_indices), -1).transpose(-1, -2)
        gradient = self.decoder.pullback(saved, cotangent)
        if self.scale is not None:
            gradient = gradient * self.scale[: gradient.shape[-1]]
        return torch.cat([gradient, gradient.new_zeros(rows, n_state - gradient.shape[-1])],
                         dim=-1)

    def log_likelihood_gradient(self, state: torch.Tensor, observations: torch.Tensor,
                                inverse_std: torch.Tensor) -> torch.Tensor:
        if self.decoder is None:
            return super().log_likelihood_gradient(state, observations, inverse_std)
        batch, members, n_state = state.shape
        fields, saved = self.decoder.fields_and_saved(
            self._latent(state).reshape(batch * members, -1))
        predicted = fields.transpose(-1, -2).reshape(batch, members, -1)
        weighted = (observations[:, None, :] - predicted) * inverse_std[:, None, :] ** 2
        gradient = self._pullback(saved, weighted.reshape(batch * members, -1), n_state)
        return gradient.reshape(batch, members, n_state)

    def jacobian(self, point: torch.Tensor) -> torch.Tensor:
        """``(n_obs, n_state)`` Jacobian at ``point`` ``(n_state,)``."""
        if self.decoder is None:
            with torch.enable_grad():
                return torch.autograd.functional.jacobian(
                    lambda x: self._observe(x[None])[0], point, vectorize=True)
        n_obs = self.decoder.n_points * len(self.variable_indices)
        _, saved = self.decoder.fields_and_saved(self._latent(point).expand(n_obs, -1))
        return self._pullback(saved, torch.eye(n_obs, dtype=point.dtype, device=point.device),
                              point.shape[-1])


def _decoder_operators(model: LatentModel, problem: Any, geometry: GridGeometry,
                       variable_indices: list[int]) -> tuple[list[_DecoderOperator],
                                                             torch.Tensor]:
    """One decoder operator per cycle; NaN positions become missing observations."""
    positions = problem.positions.values
    frames = positions if problem.positions.moving else np.broadcast_to(
        positions, (len(problem.times), *positions.shape))
    order = _axis_order(model, geometry)
    values = problem.values.clone()
    n_stations = problem.n_stations
    fallback = np.array([axis.values[0] for axis in geometry.axes])
    operators: list[_DecoderOperator] = []
    for index, frame in enumerate(frames):
        missing = np.isnan(frame).any(axis=-1)
        frame = np.where(missing[:, None], fallback, frame)
        for block in range(len(variable_indices)):
            values[index, block * n_stations + np.flatnonzero(missing)] = math.nan
        stations = torch.as_tensor(frame[:, order], dtype=model.dtype, device=model.device)
        if operators and torch.equal(operators[-1].stations, stations):
            operators.append(operators[-1])  # fixed stations: one operator for all cycles
        else:
            operators.append(_DecoderOperator(model, stations, variable_indices))
    return operators, values


def _match_encoder_stations(model: LatentModel, problem: Any,
                            geometry: GridGeometry) -> np.ndarray:
    """Index of the observed station matching each encoder station (same layout)."""
    hint = "use likelihood='decoder' (any layout, no retraining)"
    if model.encoder is None:
        raise ConfigurationError(expected_found(
            "likelihood='encoder'", "a model trained with stations (an encoder)",
            f"no encoder; {hint}"))
    if problem.positions.moving:
        raise DataError(expected_found("station layout for the encoder likelihood",
                                       "the fixed stations the encoder was trained for",
                                       f"moving stations; {hint}"))
    trained = np.asarray(model.metadata.stations, dtype=np.float64)
    order = _axis_order(model, geometry)
    observed = problem.positions.values[:, order]
    spacing = np.array([np.min(np.diff(np.sort(geometry.axes[i].values))) for i in order])
    if len(observed) != len(trained):
        raise DataError(expected_found("stations for the encoder likelihood",
                                       f"the encoder's {len(trained)} stations",
                                       f"{len(observed)} stations; {hint}"))
    distance = np.abs(trained[:, None, :] - observed[None, :, :]) / spacing
    nearest = np.nan_to_num(distance, nan=np.inf).max(axis=-1)
    match = nearest.argmin(axis=1)
    close = nearest[np.arange(len(trained)), match] <= _STATION_MATCH_SPACINGS
    if not close.all() or len(set(match.tolist())) != len(match):
        first = int(np.flatnonzero(~close)[0]) if not close.all() else 0
        raise DataError(expected_found(
            "stations for the encoder likelihood",
            f"the encoder's layout (within {_STATION_MATCH_SPACINGS} grid spacing; "
            "see xldensf.latent_assimilation.encoder_layout)",
            f"no observed station at {trained[first].tolist()}; {hint}"))
    return match


def default_likelihood(model: LatentModel, problem: Any, geometry: GridGeometry,
                       linearize: bool = False) -> str:
    """The likelihood used when none is given: ``"encoder"`` where the model's encoder was
    trained for the observed layout and every trained variable is observed (more accurate
    there on the quick tsunami benchmark, docs/benchmark.md), else ``"decoder"``."""
    if linearize or model.encoder is None or \
            sorted(problem.variables) != sorted(model.metadata.variables):
        return DEFAULT_LIKELIHOOD
    try:
        _match_encoder_stations(model, problem, geometry)
    except XLDEnSFError:
        return DEFAULT_LIKELIHOOD
    return "encoder"


def _latent_obs_std(model: LatentModel, latent_obs_std: float | None) -> tuple[torch.Tensor,
                                                                              float]:
    """Latent observation error ``(latent_dim + n_parameters,)`` and its scaled value.

    Default: the square root of the encoder's validation loss (mean squared error of the
    latent, in latent-spread units, plus that of the normalised parameters).
    """
    if latent_obs_std is None:
        history = json.loads(model.metadata.attrs.get("xldensf_training", "{}") or "{}")
        loss = history.get("encoder", {}).get("validation_loss", math.nan)
        scaled = math.sqrt(loss) if loss is not None and loss > 0 and math.isfinite(
            loss) else FALLBACK_LATENT_OBS_STD
    else:
        scaled = float(latent_obs_std)
        if not 0 < scaled < math.inf:
            raise ConfigurationError(expected_found("latent_obs_std", "a positive number",
                                                    latent_obs_std))
    latent_scale = model.encoder.latent_normalizer.scale.to(model.dtype)
    ones = torch.ones(model.n_parameters, dtype=model.dtype)
    return scaled * torch.cat([latent_scale.cpu(), ones]), scaled


def _encoder_observations(model: LatentModel, problem: Any, frames: np.ndarray,
                          match: np.ndarray) -> torch.Tensor:
    """Latent observations ``(n_cycles, latent_dim + n_parameters)`` from the encoder."""
    n_stations = problem.n_stations
    history = torch.full((1, int(frames.max()) + 1, len(match), model.n_variables), math.nan,
                         dtype=model.dtype)
    for block, name in enumerate(problem.variables):
        variable = model.metadata.variables.index(name)
        values = problem.values[:, block * n_stations:(block + 1) * n_stations]
        history[0, torch.as_tensor(frames), :, variable] = values[:, match].to(model.dtype)
    with torch.no_grad():
        latent, parameters = model.encode(history.to(model.device), all_times=True)
    return torch.cat([latent[0], parameters[0]], dim=-1)[torch.as_tensor(frames)].cpu()


def _check_obs_std(problem: Any) -> None:
    """Every observed value needs a positive finite error (the likelihood divides by it)."""
    n_stations = problem.n_stations
    for block, name in enumerate(problem.variables):
        columns = slice(block * n_stations, (block + 1) * n_stations)
        observed = ~torch.isnan(problem.values[:, columns])
        std = problem.obs_std[:, columns][observed]
        bad = ~(torch.isfinite(std) & (std > 0))
        if bad.any():
            raise DataError(expected_found(
                f"observation error standard deviation of {name!r}",
                "positive finite values (a relative noise of a field that is zero gives 0; "
                "pass obs_error=)", float(std[bad][0])))


# ---------------------------------------------------------------------- the filter
def _operator_jacobian(operator: Any, point: torch.Tensor) -> torch.Tensor:
    """``(n_obs, n_state)`` Jacobian at ``point`` ``(n_state,)`` (by hand, autograd or the
    matrix)."""
    if isinstance(operator, torch.Tensor):
        return operator.to(point)
    if isinstance(operator, _DecoderOperator):
        return operator.jacobian(point)
    with torch.enable_grad():
        return torch.autograd.functional.jacobian(lambda x: operator(x[None])[0], point,
                                                  vectorize=True)


class _StandardizedLatentEnSF:
    """EnSF on ``z = (kappa - shift) / scale``: the forecast ensemble's mean and spread per
    component, each scale capped so that ``diag(J^T R^-1 J) <= _SCALE_CAP ** 2`` in z
    (J at the ensemble mean), which the default 100 Euler-Maruyama steps integrate stably.
    The operator and observations are transformed to match: the same problem is analysed.
    With ``linearize`` the decoder is replaced by its tangent at the mean,
    ``h(x) ~ h(m) + J (x - m)`` (one Jacobian per cycle instead of a decoder pass per
    sampler step).
    """

    def __init__(self, ensf: Any, n_regressed: int = 0, linearize: bool = False) -> None:
        self.ensf, self.name, self.n_regressed = ensf, ensf.name, n_regressed
        self.linearize = linearize

    def analysis(self, ensemble, observations, operator, obs_std, generator=None, **positions):
        shift = ensemble.mean(dim=0)
        scale = ensemble.std(dim=0)
        scale = torch.where(scale > 0, scale, torch.full_like(scale, 1e-8))
        obs_std = torch.as_tensor(obs_std).to(ensemble).expand(observations.shape)
        inverse_std = torch.where(torch.isnan(observations), 0.0, 1.0 / obs_std)
        jacobian = _operator_jacobian(operator, shift)
        gram = ((jacobian * inverse_std[:, None]) ** 2).sum(dim=0)
        scale = torch.minimum(scale, _SCALE_CAP / gram.sqrt().clamp(min=1e-30))
        if isinstance(operator, torch.Tensor):
            z_operator: Any = jacobian * scale
            z_observations = observations - jacobian @ shift
        elif self.linearize:
            z_operator = jacobian * scale
            z_observations = observations - operator(shift[None])[0]
        elif isinstance(operator, _DecoderOperator):
            z_operator, z_observations = operator.standardized(scale, shift), observations
        else:
            def z_operator(z: torch.Tensor) -> torch.Tensor:
                return operator(z * scale + shift)
            z_observations = observations
        z = self.ensf.analysis((ensemble - shift) / scale, z_observations, z_operator,
                               obs_std, generator)
        if isinstance(operator, _DecoderOperator) and operator.decoder is not None:
            operator.decoder.release()  # bounded memory with one operator per cycle
        analysis = z * scale + shift
        if self.n_regressed:
            analysis = _regress_unobserved(ensemble, analysis, self.n_regressed)
        return analysis


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


class _BoundedLatent:
    """A filter whose analysis latent members are kept in a box (component-wise clamp), as
    the parameters are kept in ``[-1, 1]``: off the training latents the surrogate's
    networks extrapolate, and members there can run away from one cycle to the next."""

    def __init__(self, kernel: Any, lower: torch.Tensor, upper: torch.Tensor) -> None:
        self.kernel, self.name, self.lower, self.upper = kernel, kernel.name, lower, upper

    def analysis(self, ensemble, observations, operator, obs_std, generator=None, **positions):
        analysis = self.kernel.analysis(ensemble, observations, operator, obs_std, generator,
                                        **positions)
        n_latent = len(self.lower)
        latent = analysis[:, :n_latent].clamp(self.lower.to(analysis),
                                              self.upper.to(analysis))
        return torch.cat([latent, analysis[:, n_latent:]], dim=1)


def _regress_unobserved(forecast: torch.Tensor, analysis: torch.Tensor,
                        n_regressed: int) -> torch.Tensor:
    """Update the last ``n_regressed`` columns (no likelihood gradient: the parameters
    under the decoder likelihood) by regression on the analysis increments of the others.

    ``u_a = u_f + (s_a - s_f) C_ss^+ C_su`` with the forecast ensemble's covariances: the
    two-step ensemble update (Anderson 2003). The score filter alone cannot move them, since
    its member-paired prior score carries no cross-covariance; in the linear-Gaussian case
    this makes the joint update exact given an exact update of ``s``.
    """
    observed = forecast[:, :-n_regressed]
    anomalies = forecast - forecast.mean(dim=0)
    gain = torch.linalg.pinv(anomalies[:, :-n_regressed], rtol=1e-10) @ anomalies[:,
                                                                                  -n_regressed:]
    increments = analysis[:, :-n_regressed] - observed
    return torch.cat([analysis[:, :-n_regressed], forecast[:, -n_regressed:]
                      + increments @ gain], dim=1)


def _kernel(method: str, settings: dict[str, Any], n_regressed: int,
            linearize: bool = False) -> Any:
    if method == "ld-ensf":
        # Clip scores (REFERENCES: +-1000) as a guard against stiff decoders; overridable.
        settings.setdefault("score_clip", 1e3)
        return _StandardizedLatentEnSF(get_filter("ensf", **settings), n_regressed,
                                       linearize)
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
    members = _check_members(members)
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
        _check_obs_std(problem)
        operators, values = _decoder_operators(model, problem, geometry, variable_indices)
        obs_std = problem.obs_std.to(dtype)
        values = values.to(dtype)
    else:
        match = _match_encoder_stations(model, problem, geometry)
        values = _encoder_observations(model, problem, frames, match)
        std, scaled = _latent_obs_std(model, latent_obs_std)
        obs_std = std.expand(values.shape)
        operators = torch.eye(n_latent + model.n_parameters, dtype=dtype)
        recorded["latent_obs_std"] = scaled
    kernel = _kernel(method, settings, model.n_parameters if likelihood == "decoder" else 0,
                     linearize and likelihood == "decoder")
    if latent_margin is not None:
        kernel = _BoundedLatent(kernel, *training_latent_box(model, latent_margin))
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


# ---------------------------------------------------------------------- output
def latent_ensemble_dataset(model: LatentModel, problem: Any,
                            ensembles: Mapping[str, torch.Tensor], attrs: Mapping[str, Any],
                            coords: Any = None, return_latent: bool = False) -> xr.Dataset:
    """Decode latent ensembles ``(n_cycles, members, latent_dim + n_parameters)`` as a
    Dataset; keys of ``ensembles`` are suffixes of the variable names (``""`` for the
    analysis)."""
    meta = model.metadata
    time_name = problem.time_coordinate.name
    n_latent = model.latent_dim
    first = next(iter(ensembles.values()))
    coordinates: dict[str, Any] = {
        time_name: problem.time_coordinate.variable,
        MEMBER_DIM: (MEMBER_DIM, np.arange(first.shape[1]), coordinate_attrs(MEMBER_DIM)),
    }
    if coords is None:
        points, space_dims = None, list(meta.coordinate_names)
        for name in space_dims:
            coordinates[name] = (name, np.asarray(meta.grid_values[name]),
                                 meta.coordinate_attrs.get(name, {}))
    else:
        points, point_dim = forecast_points(model, coords)
        space_dims = [point_dim]
        for index, name in enumerate(meta.coordinate_names):
            coordinates[name] = (point_dim, points[:, index], meta.coordinate_attrs.get(name,
                                                                                     {}))
    dims = (time_name, MEMBER_DIM, *space_dims)
    data_vars: dict[str, Any] = {}
    at = None if points is None else torch.as_tensor(points)
    for suffix, ensemble in ensembles.items():
        decoded = None
        with torch.no_grad():  # frame by frame: bounded memory on any grid
            for index, frame in enumerate(ensemble):
                fields = model.decode(frame[:, :n_latent].to(model.device), at).cpu().numpy()
                if decoded is None:
                    decoded = np.empty((len(ensemble), *fields.shape), dtype=np.float64)
                decoded[index] = fields
        label = f" ({suffix.strip('_')})" if suffix else ""
        for index, name in enumerate(meta.variables):
            var_attrs = dict(meta.variable_attrs.get(name, {}))
            values = decoded[:, :, index]
            if name in problem.observation_units and "units" in var_attrs:
                target = problem.observation_units[name]
                values = convert_values(values, var_attrs["units"], target)
                var_attrs["units"] = target
            if label:
                var_attrs["long_name"] = var_attrs.get("long_name", name) + label
            data_vars[name + suffix] = (dims, values, var_attrs)
        physical = model.denormalize_parameters(ensemble[..., n_latent:].to(model.device))
        physical = physical.detach().cpu().numpy().astype(np.float64)
        for index, name in enumerate(meta.parameters):
            param_attrs = dict(meta.parameter_attrs.get(name, {}))
            if label:
                param_attrs["long_name"] = param_attrs.get("long_name", name) + label
            data_vars[name + suffix] = ((time_name, MEMBER_DIM), physical[..., index],
                                        param_attrs)
        if return_latent:
            data_vars["latent" + suffix] = (
                (time_name, MEMBER_DIM, "latent"),
                ensemble[..., :n_latent].detach().cpu().numpy().astype(np.float64),
                {"long_name": "latent state of the surrogate" + label, "units": "1"})
    return xr.Dataset(data_vars, coords=coordinates, attrs=dict(attrs))

