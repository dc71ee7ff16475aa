"""The free run: forecasts only, no analysis (the floor of every comparison).

A "filter" whose analysis returns the forecast ensemble unchanged, so that cycling it
(:func:`~xldensf.filters.cycle`, ``assimilate(simulator, method="free-run")``) runs the
prior ensemble through the model without looking at the observations. Every benchmark
table (``xldensf benchmark``) carries it as its first row: a method that does not beat
the free run has not used the observations.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import EnsembleFilter, Problem

__all__ = ["FreeRun"]


@dataclass(frozen=True)
class FreeRun(EnsembleFilter):
    """No analysis: the forecast ensemble is the "analysis" (with ``inflation``, if any).

    Parameters
    ----------
    inflation
        Multiplicative inflation of the anomalies (1 = none, the plain free run).

    Examples
    --------
    >>> import torch
    >>> prior = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    >>> analysis = FreeRun().analysis(prior, torch.zeros(3), torch.eye(3), 0.1)
    >>> bool(torch.equal(analysis, prior))   # the observations are not used
    True
    """

    name = "free-run"

    def _analysis(self, problem: Problem, generator, state_positions, observation_positions):
        return problem.ensemble
