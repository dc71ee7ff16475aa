"""A tensor-level cycling driver: forecast, analyse, repeat.

:func:`cycle` advances the ensemble to each observation time with the caller's forecast
function, runs one analysis of any :class:`~xldensf.filters.base.EnsembleFilter`, and
stores the analysis (and optionally forecast) ensembles. It checks each analysis for
divergence (NaN/Inf, or values beyond ``divergence_threshold`` times the initial
ensemble's scale) and raises :class:`~xldensf.errors.XLDEnSFError` naming the cycle.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..errors import DataError, FilterDivergenceError, expected_found
from ..options import progress_enabled
from .base import EnsembleFilter, OperatorLike

__all__ = ["cycle", "CyclingResult", "FilterDivergenceError"]

logger = logging.getLogger(__name__)

Advance = Callable[[torch.Tensor, float, float], torch.Tensor]


@dataclass
class CyclingResult:
    """What :func:`cycle` returns.

    Attributes
    ----------
    times
        ``(n_cycles,)`` observation times.
    analysis
        ``(n_cycles, ...)``: each analysis ensemble (or its ``summary``).
    forecast
        ``(n_cycles, ...)`` forecasts before each analysis, or ``None``.
    """

    times: torch.Tensor
    analysis: torch.Tensor
    forecast: torch.Tensor | None = None


def per_cycle(value, index: int, count: int):
    """``value[index]`` if ``value`` is a sequence of one item per cycle, else ``value``."""
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise DataError(expected_found("per-cycle sequence length", count, len(value)))
        return value[index]
    return value


def _check_divergence(ensemble: torch.Tensor, limit: float, what: str) -> None:
    ensemble = ensemble.detach()
    largest = float(torch.linalg.vector_norm(ensemble, math.inf) if ensemble.is_floating_point()
                    else ensemble.abs().amax())  # max |x| (NaN if any is NaN), one reduction
    if not largest <= limit:  # NaN fails every comparison
        found = "NaN or Inf" if not torch.isfinite(ensemble).all() else f"|x| = {largest:.3g}"
        raise FilterDivergenceError(expected_found(what, f"finite values below {limit:.3g}",
                                                   found))


def cycle(
    filter: EnsembleFilter,  # noqa: A002 - the natural name
    advance: Advance,
    initial_ensemble: torch.Tensor,
    observation_times: Sequence[float] | torch.Tensor,
    observations: torch.Tensor,
    operator: OperatorLike | Sequence[OperatorLike],
    obs_std: torch.Tensor | float,
    *,
    t0: float = 0.0,
    generator: torch.Generator | None = None,
    state_positions: torch.Tensor | None = None,
    observation_positions: torch.Tensor | Sequence[torch.Tensor] | None = None,
    return_forecasts: bool = False,
    summary: Callable[[torch.Tensor], torch.Tensor] | None = None,
    divergence_threshold: float = 1e3,
    progress: bool | None = None,
) -> CyclingResult:
    """Run forecast/analysis cycles.

    Parameters
    ----------
    filter
        Any filter of :data:`~xldensf.filters.FILTERS`.
    advance
        ``advance(ensemble, t0, duration) -> ensemble``, the forecast model.
    initial_ensemble
        ``(members, n_state)`` or ``(batch, members, n_state)`` at time ``t0``.
    observation_times
        ``(n_cycles,)`` increasing times, all after ``t0``.
    observations
        ``(n_cycles, n_obs)`` or ``(n_cycles, batch, n_obs)``; NaN = missing.
    operator
        One observation operator, or a sequence of one per cycle (stations that move).
    obs_std
        Scalar, ``(n_obs,)``, or the shape of ``observations`` (one row per cycle).
    t0
        Time of ``initial_ensemble``.
    generator
        Random generator for stochastic filters.
    state_positions, observation_positions
        Positions for localising filters; ``observation_positions`` may be one per cycle.
    return_forecasts
        Also store the forecast ensembles.
    summary
        Function applied to each ensemble before it is stored (e.g. ``lambda e: e.mean(-2)``
        to keep only the mean of a large problem); ``None`` stores ensembles.
    divergence_threshold
        Raise if an analysis value exceeds this many times
        ``max(1, max |initial ensemble|)``.
    progress
        Progress bar; ``None`` follows :func:`xldensf.set_options`.

    Returns
    -------
    CyclingResult

    Raises
    ------
    FilterDivergenceError
        At the first cycle whose analysis is not finite or has grown beyond the threshold.

    Examples
    --------
    >>> import torch
    >>> from xldensf.filters import get_filter
    >>> decay = lambda ensemble, t0, duration: ensemble * 0.9   # a linear model
    >>> prior = torch.randn(10, 2, generator=torch.Generator().manual_seed(0))
    >>> result = cycle(get_filter("etkf"), decay, prior, [1.0, 2.0, 3.0],
    ...                torch.zeros(3, 2), torch.eye(2), 0.1)
    >>> result.analysis.shape
    torch.Size([3, 10, 2])
    """
    times = torch.as_tensor(observation_times, dtype=torch.float64)
    n_cycles = times.shape[0]
    if observations.shape[0] != n_cycles:
        raise DataError(expected_found("observations first axis (cycles)", n_cycles,
                                       observations.shape[0]))
    if (torch.diff(torch.cat([torch.tensor([t0], dtype=torch.float64), times])) < 0).any():
        raise DataError(expected_found("observation_times", f"non-decreasing and >= t0 = {t0}",
                                       times.tolist()[:5]))
    std_per_cycle = isinstance(obs_std, torch.Tensor) and obs_std.shape == observations.shape
    scale = max(1.0, float(initial_ensemble.detach().abs().max()))
    limit = divergence_threshold * scale
    summarise = summary if summary is not None else (lambda ensemble: ensemble)
    ensemble, time = initial_ensemble, float(t0)
    analyses, forecasts = [], []
    bar = tqdm(total=n_cycles, desc=f"{filter.name} cycles",
               disable=not progress_enabled(progress), leave=False, unit="cycle")
    for index, target in enumerate(times.tolist()):
        ensemble = advance(ensemble, time, target - time)
        time = target
        _check_divergence(ensemble, limit, f"forecast before the {filter.name} analysis at "
                          f"cycle {index} (t = {time:g})")
        if return_forecasts:
            forecasts.append(summarise(ensemble))
        ensemble = filter.analysis(
            ensemble, observations[index], per_cycle(operator, index, n_cycles),
            obs_std[index] if std_per_cycle else obs_std, generator,
            state_positions=state_positions,
            observation_positions=per_cycle(observation_positions, index, n_cycles))
        _check_divergence(ensemble, limit, f"{filter.name} analysis at cycle {index} "
                          f"(t = {time:g})")
        analyses.append(summarise(ensemble))
        bar.update()
    bar.close()
    logger.debug("ran %d %s cycles", n_cycles, filter.name)
    return CyclingResult(times, torch.stack(analyses),
                         torch.stack(forecasts) if return_forecasts else None)
