"""Calibration of the ensemble-variational smoother's analysis spread.

A window's minimised cost and misfit say whether ``B`` and ``R`` describe the errors:
for a perfect linear-Gaussian problem ``E[2 J_min] = m`` and ``E|d_a|^2 = m - p`` (``m``
observations, ``p`` the analysis' degrees of freedom). :func:`calibration_factor` turns
either into a variance factor for the window's members; :func:`model_error_factor`
estimates an unrepresented (model) error from the misfit above the noise, pooled over the
windows so far (docs/latent_envar.md, "Spread calibration").
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..errors import check_name

if TYPE_CHECKING:
    from .envar import WindowAnalysis

__all__ = ["ENVAR_CALIBRATIONS", "MIN_POOLED_WINDOWS", "calibration_factor",
           "model_error_factor"]

#: Calibrations of the analysis spread: none, the a-posteriori variance factor from the
#: minimised cost, or an unrepresented (model) error from the misfit above the noise.
ENVAR_CALIBRATIONS = ("none", "variance-factor", "model-error")
#: Standard errors taken off the pooled unrepresented variance (a one-sided lower bound:
#: 1 keeps a perfect linear twin within 4 % of its uncalibrated spread/skill, 2 leaves it
#: alone but the quick tsunami at 0.63; docs/latent_envar.md).
_LOWER_BOUND_SE = 1.0
#: Windows pooled before an unrepresented variance is estimated: one window's misfit is
#: correlated across its stations and times far beyond the independent-noise standard
#: error, and on the quick atmosphere (two windows) it set factors 3-4 on two truths whose
#: uncalibrated spread was already right (docs/latent_envar.md, "Spread calibration").
MIN_POOLED_WINDOWS = 2


def calibration_factor(result: WindowAnalysis, calibration: str) -> float:
    """The variance factor of a window's analysis (see the module docstring).

    ``"variance-factor"``: ``2 J_min / m``; ``"model-error"``: ``1 + (|d_a|^2 - m + p) / p``;
    ``"none"``: 1. Both estimates are unbiased, 1 in expectation for a perfect
    linear-Gaussian problem (``E[2 J_min] = m``, ``E|d_a|^2 = m - p``); they may fall below
    1 (:func:`envar` applies at least 1).

    Examples
    --------
    >>> import torch
    >>> from xldensf.filters.envar import WindowAnalysis
    >>> window = WindowAnalysis(torch.zeros(1), torch.zeros(0, 1), torch.ones(1, 1),
    ...                         cost=100.0, iterations=1, misfit=190.0, n_obs=100, dof=10.0)
    >>> calibration_factor(window, "variance-factor"), calibration_factor(window, "model-error")
    (2.0, 11.0)
    """
    check_name("calibration", calibration, ENVAR_CALIBRATIONS)
    if calibration == "none" or result.n_obs == 0:
        return 1.0
    if calibration == "variance-factor":
        return 2.0 * result.cost / result.n_obs
    if not result.dof > 0:
        return 1.0
    return 1.0 + (result.misfit - result.n_obs + result.dof) / result.dof


def model_error_factor(result: WindowAnalysis, excess: float, free: float,
                       windows: int) -> float:
    """The output variance factor of a window under an unrepresented (model) error.

    ``excess = sum (|d_a|^2 - m + p)`` and ``free = sum (m - p)`` over the ``windows``
    windows so far (this one included; 1 until :data:`MIN_POOLED_WINDOWS` are pooled)
    estimate the unrepresented variance per observation,
    ``q = excess / free`` in units of the noise; less one standard error of its sampling
    noise under a perfect model (``sqrt(2 / free)``), at least 0, it is added to the
    members' own variance at this window's observations, ``p``:
    ``1 + q (m - p) / p``.

    Examples
    --------
    >>> import torch
    >>> from xldensf.filters.envar import WindowAnalysis
    >>> window = WindowAnalysis(torch.zeros(1), torch.zeros(0, 1), torch.ones(1, 1),
    ...                         cost=150.0, iterations=1, misfit=290.0, n_obs=200, dof=10.0)
    >>> round(model_error_factor(window, 100.0, 190.0, 2), 2)  # q = 0.526 - 0.103
    9.05
    >>> model_error_factor(window, 10.0, 190.0, 2)  # within the noise of a perfect model
    1.0
    >>> model_error_factor(window, 100.0, 190.0, 1)  # one window: no estimate yet
    1.0
    """
    if windows < MIN_POOLED_WINDOWS or not (result.dof > 0 and free > 0):
        return 1.0
    variance = max(0.0, excess / free - _LOWER_BOUND_SE * math.sqrt(2.0 / free))
    return 1.0 + variance * (result.n_obs - result.dof) / result.dof
