"""Ensemble filters as batched torch kernels (layer 1: no xarray inside).

Each filter is a frozen dataclass of its settings with one
:meth:`~xldensf.filters.base.EnsembleFilter.analysis` method, found by name in
:data:`FILTERS`:

``"enkf"``
    Stochastic EnKF with perturbed observations (:class:`EnKF`).
``"etkf"``
    Ensemble transform KF, symmetric square root, optional rotation (:class:`ETKF`).
``"letkf"``
    Local ETKF with Gaspari-Cohn R-localisation (:class:`LETKF`).
``"ensf"``
    Ensemble score filter (:class:`EnSF`), any differentiable observation operator.
``"free-run"``
    No analysis: the forecasts alone (:class:`FreeRun`), the floor of every comparison.

:class:`AdaptiveInflation` wraps any of them with a multiplicative inflation of the
forecast estimated each cycle from the innovations, :class:`AdaptiveModelError` with an
additive model error estimated the same way. :func:`cycle` runs forecast/analysis
cycles with any of them; :func:`particle_start_cycle`
the same after a tempered (and optionally resample-move) particle start on many prior
draws (cheap forecasts only).

Examples
--------
>>> import torch
>>> from xldensf.filters import get_filter
>>> etkf = get_filter("etkf", inflation=1.02)
>>> prior = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
>>> etkf.analysis(prior, torch.zeros(5), torch.eye(5), 1.0).shape
torch.Size([8, 5])
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import ConfigurationError, check_name, expected_found
from .base import EnsembleFilter, ObservationOperator, inflate
from .cycling import CyclingResult, cycle
from .enkf import EnKF
from .ensf import EnSF
from .etkf import ETKF
from .free_run import FreeRun
from .inflation import AdaptiveInflation, innovation_inflation
from .letkf import LETKF
from .localization import gaspari_cohn, localization_weights, pairwise_distance
from .model_error import AdaptiveModelError
from .particle_start import CandidatePrior, ParticleStartResult, particle_start_cycle

__all__ = [
    "FILTERS",
    "get_filter",
    "EnsembleFilter",
    "ObservationOperator",
    "EnKF",
    "ETKF",
    "LETKF",
    "EnSF",
    "FreeRun",
    "cycle",
    "CyclingResult",
    "particle_start_cycle",
    "ParticleStartResult",
    "CandidatePrior",
    "inflate",
    "AdaptiveInflation",
    "innovation_inflation",
    "AdaptiveModelError",
    "gaspari_cohn",
    "pairwise_distance",
    "localization_weights",
]

#: Filter name -> filter class.
FILTERS: dict[str, type[EnsembleFilter]] = {cls.name: cls for cls in (EnKF, ETKF, LETKF, EnSF,
                                                                     FreeRun)}


def get_filter(name: str, **settings: Any) -> EnsembleFilter:
    """The filter called ``name`` with ``settings`` (the fields of its dataclass).

    Raises
    ------
    UnknownNameError
        If ``name`` is not in :data:`FILTERS` (the message lists the valid names).
    ConfigurationError
        If a setting is not a field of that filter.

    Examples
    --------
    >>> get_filter("letkf", localization=4.0, distance="periodic", period=40.0).localization
    4.0
    >>> try:
    ...     get_filter("kalman")
    ... except KeyError as err:
    ...     print(err)
    filter: expected one of ['enkf', 'ensf', 'etkf', 'free-run', 'letkf'], found 'kalman'
    """
    cls = FILTERS[check_name("filter", name, FILTERS)]
    fields = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise ConfigurationError(expected_found(f"{name} settings", sorted(fields), unknown))
    return cls(**settings)
