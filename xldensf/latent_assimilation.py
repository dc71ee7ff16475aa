"""Moved: LD-EnSF now lives in :mod:`xldensf.assimilation` (``latent``, ``likelihoods``).

The names below are re-exported so that code written against the old path keeps working;
import them from :mod:`xldensf.assimilation` instead.

Examples
--------
>>> from xldensf.latent_assimilation import encoder_layout
>>> from xldensf.assimilation import encoder_layout as moved
>>> encoder_layout is moved
True
"""

from __future__ import annotations

from .assimilation import (
    DEFAULT_LATENT_MARGIN,
    DEFAULT_LIKELIHOOD,
    LATENT_METHODS,
    LIKELIHOODS,
    PHASES,
    assimilate_latent,
    default_likelihood,
    encoder_layout,
    latent_ensemble_dataset,
    latent_geometry,
    training_latent_box,
)

__all__ = [
    "default_likelihood",
    "assimilate_latent",
    "encoder_layout",
    "latent_geometry",
    "LATENT_METHODS",
    "LIKELIHOODS",
    "DEFAULT_LIKELIHOOD",
    "PHASES",
    "latent_ensemble_dataset",
    "training_latent_box",
    "DEFAULT_LATENT_MARGIN",
]
