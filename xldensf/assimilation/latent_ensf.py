"""Latent-EnSF (Si & Chen, ICLR 2025): the EnSF in the latent space of a coupled VAE, the
members propagated by the full-order model.

Each cycle (:class:`LatentEnSFAnalysis`):

1. the forecast members (full fields) are encoded by the VAE's state encoder (latent
   members: the encoder means);
2. the observations are encoded by its observation encoder (latent observation: the mean;
   its error standard deviation: the encoder's, ``exp(log_var / 2)``, unless
   ``latent_obs_std`` is given);
3. the EnSF analyses the latent members with an identity observation operator;
4. the analysis members are decoded to full fields.

Between cycles the decoded members are advanced by the full-order model
(:func:`~xldensf.assimilation.full_order.assimilate_full_order` runs the cycles with this
analysis as its kernel). The members' parameters are not analysed: each keeps its prior draw
(Latent-EnSF estimates the state only).

Examples
--------
>>> import xldensf as xl
>>> from xldensf.geometry import regular_layout
>>> from xldensf.surrogate import fit_vae
>>> train = xl.simulate("lorenz96", runs=4, seed=0, preset="small", n_outputs=11)
>>> vae = fit_vae(train, stations=regular_layout(train, 10), seed=0, steps=20, width=32)
>>> truth = xl.simulate("lorenz96", runs=1, seed=5, preset="small", n_outputs=11).isel(run=0)
>>> obs = truth.ldensf.observe(stations=vae.layout(), noise=0.1, seed=0)
>>> analysis = obs.ldensf.assimilate(xl.simulator("lorenz96", preset="small"),
...                                  method="latent-ensf", vae=vae, members=10, seed=0)
>>> analysis.attrs["xldensf_method"], analysis["x"].dims
('latent-ensf', ('time', 'member', 'k'))
"""

from __future__ import annotations

import json
import math
from typing import Any, ClassVar

import numpy as np
import torch
import xarray as xr

from ..errors import ConfigurationError, DataError, expected_found
from ..filters import EnSF, get_filter
from ..geometry import GridGeometry
from ..simulators.base import Simulator
from ..surrogate import LatentModel
from ..surrogate.vae import VAEModel
from .full_order import assimilate_full_order, field_attrs
from .setup import observation_problem
from .user_model import ForecastModel, ForecastModelAdapter

__all__ = ["assimilate_latent_ensf", "LatentEnSFAnalysis", "LATENT_ENSF_METHOD",
           "POSITION_TOLERANCE"]

#: The method name of Latent-EnSF in :func:`xldensf.assimilation.assimilate`.
LATENT_ENSF_METHOD = "latent-ensf"
#: Largest station position difference (relative to the domain's extent along each axis)
#: that counts as the VAE's station.
POSITION_TOLERANCE = 1e-6


class LatentEnSFAnalysis:
    """The Latent-EnSF analysis of an augmented ensemble ``[fields, parameters]``.

    Parameters
    ----------
    vae
        The trained coupled VAE.
    n_fields
        Number of field components at the start of the state (the rest, the parameters,
        pass through unchanged).
    observation_order
        Index of each of the VAE's observation-vector entries in the filter's observation
        vector.
    ensf
        The latent EnSF.
    latent_obs_std
        Latent observation error standard deviation; ``None``: the observation encoder's.

    Examples
    --------
    >>> import torch
    >>> from xldensf.filters import EnSF
    >>> from xldensf.surrogate.vae import VAEMetadata
    >>> from xldensf.surrogate.vae_networks import CoupledVAE
    >>> metadata = VAEMetadata(("x",), {"x": "1"}, ("k",), (6,), ("x",), ("k",), [[0.], [3.]])
    >>> vae = VAEModel(CoupledVAE(1, (6,), 2, latent_dim=3, width=8), metadata)
    >>> kernel = LatentEnSFAnalysis(vae, n_fields=6, observation_order=[0, 1], ensf=EnSF())
    >>> prior = torch.randn(5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> tuple(kernel.analysis(prior, torch.zeros(2), None, 0.1).shape)
    (5, 7)
    """

    name: ClassVar[str] = LATENT_ENSF_METHOD
    needs_positions: ClassVar[bool] = False

    def __init__(self, vae: VAEModel, n_fields: int, observation_order: list[int],
                 ensf: EnSF, latent_obs_std: float | None = None) -> None:
        self.vae, self.n_fields, self.ensf = vae, int(n_fields), ensf
        self.observation_order = torch.as_tensor(observation_order, dtype=torch.long)
        if latent_obs_std is not None and not 0 < float(latent_obs_std) < math.inf:
            raise ConfigurationError(expected_found("latent_obs_std",
                                                    "None or a positive number", latent_obs_std))
        self.latent_obs_std = latent_obs_std

    def analysis(self, ensemble: torch.Tensor, observations: torch.Tensor, operator: Any,
                 obs_std: Any, generator: torch.Generator | None = None, *,
                 state_positions: Any = None, observation_positions: Any = None
                 ) -> torch.Tensor:
        """The analysis ensemble, of the shape of ``ensemble`` (``operator`` and
        ``obs_std`` of the station observations are not used: the observation encoder
        replaces them)."""
        batched = ensemble.ndim == 3
        states = ensemble if batched else ensemble[None]
        batch, members, _ = states.shape
        field_shape = self.vae.network.field_shape
        fields = states[..., : self.n_fields].reshape(batch * members, *field_shape)
        latent, _ = self.vae.encode_state(fields)
        rows = observations if observations.ndim == 2 else observations[None]
        latent_obs, log_var = self.vae.encode_observations(
            rows[:, self.observation_order.to(rows.device)])
        std = (0.5 * log_var).exp() if self.latent_obs_std is None \
            else torch.full_like(latent_obs, float(self.latent_obs_std))
        dimension = self.vae.latent_dim
        identity = torch.eye(dimension, dtype=torch.float64, device=states.device)
        analysed = self.ensf.analysis(
            latent.reshape(batch, members, dimension).double(), latent_obs.double(),
            identity, std.double(), generator)
        decoded = self.vae.decode(analysed.reshape(batch * members, dimension))
        out = torch.cat([decoded.reshape(batch, members, -1).to(states),
                         states[..., self.n_fields:]], dim=-1)
        return out if batched else out[0]


def _check_layout(vae: VAEModel, positions: np.ndarray, geometry: GridGeometry) -> None:
    """Raise :class:`ConfigurationError` unless ``positions`` are the VAE's stations."""
    expected = vae.stations
    found = np.asarray(positions, dtype=np.float64)
    names = [axis.name for axis in geometry.axes]
    if sorted(names) != sorted(vae.metadata.axis_names):
        raise ConfigurationError(expected_found("grid axes of the VAE", list(
            vae.metadata.axis_names), names))
    found = found[:, [names.index(name) for name in vae.metadata.axis_names]] \
        if found.ndim == 2 else found
    extent = np.array([max(float(np.ptp(np.asarray(geometry.axes[names.index(name)].values))),
                           1.0) for name in vae.metadata.axis_names])
    if found.shape != expected.shape or not np.all(
            np.abs(found - expected) <= POSITION_TOLERANCE * extent):
        raise ConfigurationError(expected_found(
            "station layout of the observations", f"the {len(expected)} stations the VAE's "
            f"observation encoder was trained for (vae.layout()), first "
            f"{np.round(expected[:3], 3).tolist()}",
            f"{found.shape[0] if found.ndim >= 2 else found.size} stations, first "
            f"{np.round(found.reshape(-1, expected.shape[1])[:3], 3).tolist()}"))


def assimilate_latent_ensf(
    observations: xr.Dataset,
    model: Simulator | ForecastModel,
    *,
    vae: VAEModel | None = None,
    method: str = LATENT_ENSF_METHOD,
    members: int = 20,
    latent_obs_std: float | None = None,
    obs_error: Any = None,
    seed: int | None = None,
    return_forecasts: bool = False,
    progress: bool | None = None,
    **settings: Any,
) -> xr.Dataset:
    """Latent-EnSF: the EnSF in a coupled VAE's latent space, members advanced by ``model``.

    Parameters
    ----------
    observations
        CF timeSeries Dataset at the VAE's stations (``vae.layout()``), in their order,
        of exactly the VAE's observed variables.
    model
        The full-order model: a simulator (``xl.simulator(case)``) or a user's
        ForecastModel, with the VAE's variables, units and grid.
    vae
        The coupled VAE (:func:`xldensf.surrogate.fit_vae`).
    method
        ``"latent-ensf"`` (the only value).
    members
        Ensemble size (>= 2).
    latent_obs_std
        Error standard deviation of the latent observation; ``None`` (default): the
        observation encoder's own, ``exp(log_var / 2)``.
    obs_error
        Override of the station error standard deviation (read and checked as for the
        other filters; the observation encoder, trained with its own noise level, does
        not use it).
    seed, return_forecasts, progress
        As for :func:`~xldensf.assimilation.full_order.assimilate_full_order`; the prior
        is the model's (``prior=``, ``prior_spread=`` are passed on).
    **settings
        Settings of the latent :class:`~xldensf.filters.EnSF` (``steps``, ``eps_alpha``,
        ``prior_score``, ...), and ``prior`` / ``prior_spread``.

    Returns
    -------
    xarray.Dataset
        As :func:`~xldensf.assimilation.full_order.assimilate_full_order` returns, with
        ``xldensf_method = "latent-ensf"`` and the VAE's sizes in the attrs.

    Raises
    ------
    ConfigurationError
        No VAE; a LatentModel as the model; observations at other stations than the VAE's
        (expected and found positions); an unknown EnSF setting.
    DataError
        Model variables, grid or units, or observed variables, other than the VAE's.
    """
    if method != LATENT_ENSF_METHOD:
        raise ConfigurationError(expected_found("method", LATENT_ENSF_METHOD, method))
    if not isinstance(vae, VAEModel):
        raise ConfigurationError(expected_found(
            "vae", "a VAEModel (xl.surrogate.fit_vae(...) or VAEModel.from_file(...))",
            type(vae).__name__))
    if isinstance(model, LatentModel) or not isinstance(model, (Simulator, ForecastModel)):
        raise ConfigurationError(expected_found(
            "model with latent-ensf", "a full-order simulator or ForecastModel (the members "
            "are propagated in the full space)", type(model).__name__))
    full = model if isinstance(model, Simulator) else ForecastModelAdapter(model)
    meta = vae.metadata
    if tuple(full.variables) != meta.variables:
        raise DataError(expected_found("model variables (the VAE's, in order)",
                                       list(meta.variables), list(full.variables)))
    if tuple(full.grid_shape) != meta.grid_shape:
        raise DataError(expected_found("model grid shape (the VAE's)", meta.grid_shape,
                                       tuple(full.grid_shape)))
    model_units = {name: attrs["units"] for name, attrs in field_attrs(full).items()}
    if any(model_units[name] != meta.units[name] for name in meta.variables):
        raise DataError(expected_found("model units (the VAE's)", meta.units, model_units))
    geometry = full.geometry if isinstance(full, ForecastModelAdapter) \
        else GridGeometry.from_simulator(full)
    problem = observation_problem(observations, full, obs_error=obs_error, geometry=geometry,
                                  variable_units=model_units)
    if sorted(problem.variables) != sorted(meta.observed):
        raise DataError(expected_found("observed variables (the VAE's observation encoder)",
                                       list(meta.observed), list(problem.variables)))
    if problem.positions.moving:
        raise ConfigurationError(expected_found("stations with latent-ensf",
                                                "the VAE's fixed stations", "moving stations"))
    _check_layout(vae, problem.positions.values, geometry)
    n_stations = problem.n_stations
    order = [problem.variables.index(name) * n_stations + station
             for name in meta.observed for station in range(n_stations)]
    passed = {key: settings.pop(key) for key in ("prior", "prior_spread") if key in settings}
    ensf = get_filter("ensf", **settings)
    kernel = LatentEnSFAnalysis(vae, len(meta.variables) * math.prod(meta.grid_shape), order,
                                ensf, latent_obs_std)
    analysis = assimilate_full_order(observations, model, method=method, members=members,
                                     obs_error=obs_error, seed=seed,
                                     return_forecasts=return_forecasts, progress=progress,
                                     kernel=kernel, **passed)
    analysis.attrs["xldensf_settings"] = json.dumps(
        {**settings, "latent_obs_std": latent_obs_std, **{key: str(value) if key == "prior"
                                                          else value
                                                          for key, value in passed.items()}},
        sort_keys=True, default=str)
    analysis.attrs["xldensf_vae"] = json.dumps(
        {"latent_dim": vae.latent_dim, "width": vae.network.width, "depth": vae.network.depth,
         "stations": len(meta.stations), "observed": list(meta.observed),
         "training": meta.training}, default=str)
    return analysis
