"""Assimilation of station observations into a forecast model: one :func:`assimilate`.

:func:`assimilate` (``obs.ldensf.assimilate(model, ...)``) reads a CF timeSeries observation
Dataset (:mod:`~xldensf.assimilation.setup`), hands it to the adapter registered for the
model's type, and returns the analysis ensemble as a Dataset in the observations' units
(:mod:`~xldensf.assimilation.output`). Adapters:

- a full-order simulator (``xl.simulator(case)``): :func:`assimilate_full_order`, filters
  on the augmented state ``[fields, parameters]``;
- a trained :class:`~xldensf.surrogate.LatentModel`: :func:`assimilate_latent`, LD-EnSF in
  the surrogate's latent space, with the likelihoods of
  :mod:`~xldensf.assimilation.likelihoods`;
- a user's :class:`~xldensf.assimilation.user_model.ForecastModel` (a template Dataset and
  an ``advance`` method, e.g. made by :func:`forecast_model`): the full-order filters of
  :func:`assimilate_full_order`.

- a method that takes any model and checks it itself, keyed on its name (and on the
  settings that select it when no ``method`` is given): ``"latent-ensf"``, selected by
  ``vae=``, :func:`assimilate_latent_ensf` (a simulator or ForecastModel with a coupled
  VAE).

:func:`register_adapter` adds one for another model type, :func:`register_method` one for
another method name.

Examples
--------
>>> import xldensf as xl
>>> truth = xl.simulate("lorenz96", runs=1, seed=1, preset="small", n_outputs=21).isel(run=0)
>>> obs = truth.ldensf.observe(stations=20, noise=0.1, seed=0)
>>> analysis = obs.ldensf.assimilate(xl.simulator("lorenz96", preset="small"),
...                                  method="etkf", members=10, seed=0)
>>> analysis["x"].dims
('time', 'member', 'k')
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import xarray as xr

from ..errors import ConfigurationError, expected_found
from ..simulators.base import Simulator
from ..surrogate import LatentModel
from .full_order import FULL_ORDER_METHODS, assimilate_full_order
from .latent import (
    DEFAULT_LATENT_MARGIN,
    LATENT_METHODS,
    PHASES,
    assimilate_latent,
    latent_ensemble_dataset,
    training_latent_box,
)
from .latent_ensf import LATENT_ENSF_METHOD, assimilate_latent_ensf
from .latent_envar import LATENT_ENVAR_METHODS, assimilate_latent_envar, latent_adapter
from .likelihoods import (
    DEFAULT_LIKELIHOOD,
    LIKELIHOODS,
    default_likelihood,
    encoder_layout,
    latent_geometry,
)
from .output import EnsembleFields, analysis_dataset
from .setup import ObservationProblem, observation_problem
from .user_model import ForecastModel, forecast_model, run_model

__all__ = [
    "assimilate",
    "register_adapter",
    "register_method",
    "ADAPTERS",
    "METHOD_ADAPTERS",
    "assimilate_full_order",
    "assimilate_latent",
    "assimilate_latent_ensf",
    "ForecastModel",
    "forecast_model",
    "run_model",
    "assimilate_latent_envar",
    "observation_problem",
    "ObservationProblem",
    "analysis_dataset",
    "EnsembleFields",
    "encoder_layout",
    "latent_geometry",
    "default_likelihood",
    "training_latent_box",
    "latent_ensemble_dataset",
    "FULL_ORDER_METHODS",
    "LATENT_METHODS",
    "LATENT_ENVAR_METHODS",
    "LIKELIHOODS",
    "DEFAULT_LIKELIHOOD",
    "DEFAULT_LATENT_MARGIN",
    "PHASES",
]

Adapter = Callable[..., xr.Dataset]

#: Forecast-model type -> its assimilation adapter, searched in order (first match wins).
ADAPTERS: list[tuple[type, Adapter]] = [
    (LatentModel, latent_adapter),  # "latent-envar" to the smoother, else LD-EnSF
    (Simulator, assimilate_full_order),
    (ForecastModel, assimilate_full_order),
]

#: Method name -> (its adapter, the settings that select it when no method is given),
#: checked before :data:`ADAPTERS`: these adapters take any model and check it themselves.
METHOD_ADAPTERS: dict[str, tuple[Adapter, tuple[str, ...]]] = {
    LATENT_ENSF_METHOD: (assimilate_latent_ensf, ("vae",)),
}


def register_adapter(model_type: type, adapter: Adapter) -> None:
    """Use ``adapter(observations, model, *, method, members, seed, progress, **settings)``
    for models of ``model_type`` (checked before the built-in adapters).

    Examples
    --------
    >>> class MyModel:
    ...     pass
    >>> register_adapter(MyModel, lambda observations, model, **settings: "analysed")
    >>> assimilate(None, MyModel())
    'analysed'
    >>> _ = ADAPTERS.pop(0)  # undo the example
    """
    if not isinstance(model_type, type) or not callable(adapter):
        raise ConfigurationError(expected_found("adapter registration", "a type and a callable",
                                                (model_type, adapter)))
    ADAPTERS.insert(0, (model_type, adapter))


def register_method(method: str, adapter: Adapter, *, selected_by: Sequence[str] = ()) -> None:
    """Use ``adapter(observations, model, *, method, members, seed, progress, **settings)``
    for ``method=method`` whatever the model (the adapter checks the model itself), and
    when no method is given but one of the ``selected_by`` settings is.

    Examples
    --------
    >>> register_method("demo", lambda observations, model, **settings: settings["method"],
    ...                 selected_by=["demo_network"])
    >>> assimilate(None, object(), demo_network=None)
    'demo'
    >>> _ = METHOD_ADAPTERS.pop("demo")  # undo the example
    """
    if not isinstance(method, str) or not callable(adapter):
        raise ConfigurationError(expected_found("method registration",
                                                "a method name and a callable",
                                                (method, adapter)))
    METHOD_ADAPTERS[method] = (adapter, tuple(selected_by))


def assimilate(
    observations: xr.Dataset,
    model: Any,
    *,
    method: str | None = None,
    members: int | None = None,
    seed: int | None = None,
    progress: bool | None = None,
    **settings: Any,
) -> xr.Dataset:
    """Assimilate station observations into ``model`` and return the analysis ensemble.

    Parameters
    ----------
    observations
        CF timeSeries Dataset, dims ``(time, station)`` (see
        :func:`xldensf.observations.observe`); NaN values are skipped.
    model
        A full-order simulator (``xl.simulator(case, ...)``) or a user's
        :class:`~xldensf.assimilation.user_model.ForecastModel` (see
        :func:`assimilate_full_order` for its settings: ``prior``, ``prior_spread``,
        ``obs_error``, ``return_forecasts``, filter settings such as ``inflation`` and
        ``localization``), or a trained :class:`~xldensf.surrogate.LatentModel` for LD-EnSF
        (see :func:`assimilate_latent`: ``likelihood``, ``obs_error``, ``latent_obs_std``,
        ``parameter_jitter``, ``linearize``, ``latent_margin``, ``coords``,
        ``return_latent``, ``return_forecasts``, sampler settings such as ``steps``).
    method
        ``"enkf"``, ``"etkf"``, ``"letkf"`` (default) or ``"ensf"`` with a simulator or a
        ForecastModel;
        ``"ld-ensf"`` (default), ``"etkf"`` or ``"enkf"`` with a LatentModel;
        ``"latent-envar"`` (LatentModel): the latent 4DEnVar smoother,
        :func:`~xldensf.assimilation.latent_envar.assimilate_latent_envar`.
        ``"4dvar"`` (simulator): :func:`~xldensf.assimilation.variational.assimilate_4dvar`.
        ``"latent-ensf"`` (simulator or ForecastModel, with ``vae=``; the default when
        ``vae=`` is given): :func:`~xldensf.assimilation.latent_ensf.assimilate_latent_ensf`.
    members
        Ensemble size (>= 2); ``None``: the adapter's default (20 for a simulator,
        :data:`~xldensf.assimilation.latent.DEFAULT_LATENT_MEMBERS` for a LatentModel).
    seed
        Seed of the prior draw and of stochastic filters; recorded in the attrs.
    progress
        Progress bar over cycles; ``None`` follows :func:`xldensf.set_options`.
    **settings
        The adapter's settings (above).

    Returns
    -------
    xarray.Dataset
        Analysis members ``(time, member, *grid)`` in the observations' units, parameter
        members ``(time, member)``, attrs recording method, settings, seed and version.

    Raises
    ------
    ConfigurationError
        A model of no registered type (and no method of :data:`METHOD_ADAPTERS`); a
        ``prior`` with a LatentModel (its prior is the training range).
    """
    if isinstance(model, LatentModel) and "prior" in settings:
        prior = settings.pop("prior")
        if prior is not None:
            raise ConfigurationError(expected_found("prior with a LatentModel", "None (the "
                                                    "training range)", type(prior).__name__))
    if method is None:
        method = next((name for name, (_, keys) in METHOD_ADAPTERS.items()
                       if any(key in settings for key in keys)), None)
    if isinstance(method, str) and method in METHOD_ADAPTERS:
        adapter: Adapter | None = METHOD_ADAPTERS[method][0]
    else:
        adapter = next((candidate for model_type, candidate in ADAPTERS
                        if isinstance(model, model_type)), None)
    if adapter is None:
        raise ConfigurationError(expected_found(
            "model", "a full-order simulator (xl.simulator(...)), a LatentModel or a "
            "ForecastModel (a template Dataset and an advance method: xl.forecast_model)",
            type(model).__name__))
    if method is not None:
        settings["method"] = method
    if members is not None:
        settings["members"] = members
    return adapter(observations, model, seed=seed, progress=progress, **settings)
