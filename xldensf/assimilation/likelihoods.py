"""The two likelihoods of the latent analysis: the decoder at the stations and the encoder.

``"decoder"`` (beyond the paper)
    ``y = R(s, x_station) + eta``: the mesh-free decoder evaluated at the station
    coordinates (:class:`DecoderOperator`), with a hand-written reverse pass for its
    log-likelihood gradient and Jacobian (no autograd graph per sampler step). Any layout,
    also moving or never seen in training, without retraining.
``"encoder"`` (the paper)
    latent observations ``(s_hat, u_hat) = LSTM(y_{1:t})`` from the history-aware encoder
    (:func:`encoder_observations`), an identity operator and Gaussian latent noise
    (:func:`latent_observation_std`). Needs the layout the encoder was trained for
    (:func:`encoder_layout`, :func:`match_encoder_stations`).

Examples
--------
>>> import xldensf as xl
>>> from xldensf.experiments import shipped_model_path
>>> model = xl.load_model(shipped_model_path("tsunami", "small"))
>>> layout = encoder_layout(model)
>>> layout.sizes["station"]
16
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import numpy as np
import torch
import xarray as xr

from ..errors import ConfigurationError, DataError, expected_found
from ..filters.base import ObservationOperator
from ..geometry import GridGeometry, periodic_declaration
from ..surrogate import LatentModel
from .setup import observation_problem

__all__ = [
    "DecoderOperator",
    "decoder_operators",
    "default_likelihood",
    "encoder_layout",
    "encoder_observations",
    "latent_geometry",
    "latent_observation_problem",
    "latent_observation_std",
    "match_encoder_stations",
    "check_obs_std",
    "LIKELIHOODS",
    "DEFAULT_LIKELIHOOD",
    "FALLBACK_LATENT_OBS_STD",
]

#: Likelihoods of the latent analysis.
LIKELIHOODS = ("decoder", "encoder")
#: Likelihood used when none is given, on every layout (the encoder's own included: there
#: too the decoder likelihood is the more accurate; :func:`default_likelihood`,
#: docs/ldensf.md).
DEFAULT_LIKELIHOOD = "decoder"
#: Latent observation error of the encoder likelihood, in the encoder's scaled units
#: (latent spread, normalised parameters), when the model stores no encoder validation loss.
FALLBACK_LATENT_OBS_STD = 0.1
#: Station position tolerance when matching observations to the encoder's stations, in
#: grid spacings (fit snaps encoder stations to grid points).
_STATION_MATCH_SPACINGS = 0.5


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
    return GridGeometry.from_coordinates(
        {name: np.asarray(meta.grid_values[name], dtype=np.float64)
         for name in meta.coordinate_names},
        meta.coordinate_attrs, periodic=periodic_declaration(meta.attrs))


def latent_observation_problem(observations: xr.Dataset, model: LatentModel,
                               obs_error: Any = None) -> tuple[Any, GridGeometry]:
    """The observations read in the surrogate's variables, units, grid and time units, and
    that grid's geometry.

    Examples
    --------
    >>> import xldensf as xl
    >>> from xldensf.experiments import shipped_model_path
    >>> model = xl.load_model(shipped_model_path("tsunami", "small"))
    >>> centre = {name: [sum(bounds) / 2] for name, bounds in
    ...           zip(model.metadata.parameters, model.metadata.parameter_ranges)}
    >>> truth = model.forecast(centre).isel(run=0)
    >>> problem, geometry = latent_observation_problem(
    ...     truth.ldensf.observe(stations=4, noise=0.1, seed=0), model)
    >>> problem.n_stations, geometry.shape
    (4, (64, 64))
    """
    meta = model.metadata
    geometry = latent_geometry(model)
    problem = observation_problem(
        observations, model, obs_error=obs_error, variables=meta.variables,
        variable_units={name: meta.variable_attrs.get(name, {}).get("units", "1")
                        for name in meta.variables},
        geometry=geometry, time_units=meta.time_attrs.get("units", "1"))
    return problem, geometry


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


class DecoderOperator(ObservationOperator):
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

    def standardized(self, scale: torch.Tensor, shift: torch.Tensor
                     ) -> tuple[DecoderOperator, float]:
        """The same operator acting on ``z = (kappa - shift) / scale`` (no offset)."""
        operator = copy.copy(self)
        operator.scale, operator.shift = scale, shift
        operator.function = operator._observe  # bound to the copy
        return operator, 0.0

    def release(self) -> None:
        """Free the decoder's buffers (bounded memory with one operator per cycle)."""
        if self.decoder is not None:
            self.decoder.release()

    def _latent(self, state: torch.Tensor) -> torch.Tensor:
        kappa = state if self.scale is None else state * self.scale + self.shift
        return kappa[..., : self.model.latent_dim]

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        latent = self._latent(state)
        if self.decoder is None:
            fields = self.model.decode(latent, coords=self.stations)[..., self.variable_indices,
                                                                     :]
            return fields.flatten(-2)
        # the forward pass alone (chunked, two buffers): no activations kept for a pullback
        fields = self.decoder.fields(latent.reshape(-1, latent.shape[-1]))
        return fields.reshape(*latent.shape[:-1], -1)

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


def decoder_operators(model: LatentModel, problem: Any, geometry: GridGeometry,
                       variable_indices: list[int]) -> tuple[list[DecoderOperator],
                                                             torch.Tensor]:
    """One decoder operator per cycle; NaN positions become missing observations."""
    positions = problem.positions.values
    frames = positions if problem.positions.moving else np.broadcast_to(
        positions, (len(problem.times), *positions.shape))
    order = _axis_order(model, geometry)
    values = problem.values.clone()
    n_stations = problem.n_stations
    fallback = np.array([axis.values[0] for axis in geometry.axes])
    operators: list[DecoderOperator] = []
    for index, frame in enumerate(frames):
        missing = np.isnan(frame).any(axis=-1)
        frame = np.where(missing[:, None], fallback, frame)
        for block in range(len(variable_indices)):
            values[index, block * n_stations + np.flatnonzero(missing)] = math.nan
        stations = torch.as_tensor(frame[:, order], dtype=model.dtype, device=model.device)
        if operators and torch.equal(operators[-1].stations, stations):
            operators.append(operators[-1])  # fixed stations: one operator for all cycles
        else:
            operators.append(DecoderOperator(model, stations, variable_indices))
    return operators, values


def match_encoder_stations(model: LatentModel, problem: Any,
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
            "see xldensf.assimilation.encoder_layout)",
            f"no observed station at {trained[first].tolist()}; {hint}"))
    return match


def default_likelihood(model: LatentModel, problem: Any, geometry: GridGeometry,
                       linearize: bool = False) -> str:
    """The likelihood used when none is given: :data:`DEFAULT_LIKELIHOOD` (``"decoder"``)
    on every layout.

    On the encoder's own layout the decoder likelihood is also the more accurate one on
    the quick tsunami benchmark (every held-out truth, docs/ldensf.md), so the encoder
    likelihood (the paper's) is used only when asked for with ``likelihood="encoder"``.
    The arguments are kept for the signature of earlier releases and are not read.

    Examples
    --------
    >>> import xldensf as xl
    >>> from xldensf.experiments import shipped_model_path
    >>> model = xl.load_model(shipped_model_path("tsunami", "small"))
    >>> centre = {name: [sum(bounds) / 2] for name, bounds in
    ...           zip(model.metadata.parameters, model.metadata.parameter_ranges)}
    >>> truth = model.forecast(centre).isel(run=0)
    >>> observed = truth.ldensf.observe(stations=encoder_layout(model), noise=0.1, seed=0)
    >>> problem, geometry = latent_observation_problem(observed, model)
    >>> default_likelihood(model, problem, geometry)
    'decoder'
    """
    del model, problem, geometry, linearize
    return DEFAULT_LIKELIHOOD


def latent_observation_std(model: LatentModel, latent_obs_std: float | None) -> tuple[torch.Tensor,
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


def encoder_observations(model: LatentModel, problem: Any, frames: np.ndarray,
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


def check_obs_std(problem: Any) -> None:
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


