"""One benchmark method on one held-out truth: how each method of
:data:`~xldensf.experiments.settings.BENCHMARK_METHODS` is called, and how its analysis is
scored (:func:`run_method`); the Latent-EnSF VAE of the benchmark (:func:`resolve_vae`).

Every method records the same fields (``final``, ``mean``, ``spread_skill``,
``parameter_error``, ``relative_rmse``, ``seconds``, ``seconds_per_cycle``,
``filter_seconds_per_cycle``, ``call_seconds``, ``members``, ``scored_members``;
``phases`` where the method times its phases), or ``failure``: the reason it did not run.

Examples
--------
>>> from xldensf.experiments.methods import run_method
>>> run_method("latent-ensf", None, {}, None, None, None, {}, 0, {}, vae=None)
{'failure': 'skipped: no VAE for latent-ensf (its entry vae in the result says why)'}
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import XLDEnSFError
from ..metrics import parameter_error, relative_rmse, spatial_anomaly, spread_skill_ratio
from ..simulators import Simulator
from ..surrogate import VAEModel, fit_vae
from .settings import ANOMALY_VARIABLES, VAE_SETTINGS, BenchmarkSetting

__all__ = ["scored_variables", "run_method", "resolve_vae"]

logger = logging.getLogger(__name__)


def _time_mean(values: np.ndarray) -> float:
    """Mean over the frames after the first (frame 0 is the prior time)."""
    values = np.asarray(values, dtype=float)[1:]
    return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan


def scored_variables(case: str, full_model: Simulator) -> list[str]:
    """The model's variables, then the anomalies of
    :data:`~xldensf.experiments.settings.ANOMALY_VARIABLES`.

    Parameters
    ----------
    case
        The benchmark case.
    full_model
        Its simulator.

    Returns
    -------
    list of str
        Names scored by the benchmark.

    Examples
    --------
    >>> import xldensf as xl
    >>> scored_variables("atmosphere", xl.simulator("atmosphere", preset="small"))
    ['h', 'u', 'v', 'h_anomaly']
    """
    return list(full_model.variables) + [f"{name}_anomaly"
                                         for name in ANOMALY_VARIABLES.get(case, ())]


def _score(analysis: xr.Dataset, truth: xr.Dataset, variables: Sequence[str],
           widths: dict[str, float], seconds: float) -> dict[str, Any]:
    """The recorded numbers of one analysis against its truth (JSON-ready)."""
    anomalies = [name.removesuffix("_anomaly") for name in variables
                 if name.endswith("_anomaly")]
    if anomalies:
        analysis, truth = spatial_anomaly(analysis, anomalies), spatial_anomaly(truth, anomalies)
    relative = relative_rmse(analysis, truth, list(variables))
    # one member (4dvar's plain analysis) has no spread: NaN
    ratio = spread_skill_ratio(analysis, truth, list(variables)) \
        if analysis.sizes["member"] >= 2 else xr.full_like(relative, math.nan)
    errors = parameter_error(analysis, truth, list(widths), ranges=widths)
    cycles = analysis.sizes["time"]
    record: dict[str, Any] = {
        "relative_rmse": {name: relative[name].values.tolist() for name in variables},
        "final": {name: float(relative[name].values[-1]) for name in variables},
        "mean": {name: _time_mean(relative[name].values) for name in variables},
        "spread_skill": {name: _time_mean(ratio[name].values) for name in variables},
        "parameter_error": {name: float(errors[name].values[-1]) for name in widths},
        "seconds": seconds,
        "seconds_per_cycle": seconds / cycles,
        "cycles": cycles,
    }
    # ``xldensf_seconds_per_window`` (latent-envar) is a rate, not a phase
    phases = {key.removeprefix("xldensf_seconds_"): float(value)
              for key, value in analysis.attrs.items()
              if key.startswith("xldensf_seconds_") and not key.startswith("xldensf_seconds_per_")}
    # The filter proper (forecast + analysis) without writing the members on the grid, where
    # the method records its phases (LD-EnSF decodes every member at every point for the
    # output; a full-space filter's state already is the gridded output; the latent
    # smoother's analysis phase holds its forecasts).
    filter_seconds = phases.get("forecast", 0.0) + phases["analysis"] if phases else seconds
    record["filter_seconds_per_cycle"] = filter_seconds / cycles
    if phases:
        record["phases"] = phases
    for name in ("variance_factor", "calibration_factor"):  # latent-envar's window factors
        if name in analysis.data_vars:
            record[name] = analysis[name].values.tolist()
    return record


def _analyse(method: str, observations: dict[str, xr.Dataset], latent_model: Any,
             full_model: Simulator, setting: BenchmarkSetting, settings: dict[str, Any],
             seed: int, vae: VAEModel | None) -> Callable[[], xr.Dataset] | str:
    """The call that runs ``method``, or the reason it does not apply."""
    if method.startswith("ld-ensf"):
        likelihood = "decoder" if method.startswith("ld-ensf-decoder") else "encoder"
        if likelihood == "encoder" and latent_model.encoder is None:
            return "skipped: the surrogate has no encoder"
        layout = "unseen" if method.endswith("unseen") else "trained"
        analysis = "paper" if method == "ld-ensf-paper" else "bayesian"
        return functools.partial(
            observations[layout].ldensf.assimilate, latent_model,
            members=setting.latent_members, likelihood=likelihood, analysis=analysis,
            seed=seed, progress=False)
    if method == "latent-envar":  # the decoder likelihood: the layout the surrogate never saw
        return functools.partial(observations["unseen"].ldensf.assimilate, latent_model,
                                 method=method, seed=seed, progress=False, **settings)
    if method == "latent-ensf":
        if vae is None:
            return "skipped: no VAE for latent-ensf (its entry vae in the result says why)"
        return functools.partial(observations["trained"].ldensf.assimilate, full_model,
                                 method=method, vae=vae, members=setting.members, seed=seed,
                                 progress=False, **settings)
    if settings.get("window") == "all":  # 4dvar: windows from the start to every time
        settings = {**settings, "window": observations["trained"].sizes["time"]}
    return functools.partial(observations["trained"].ldensf.assimilate, full_model,
                             method=method, seed=seed, progress=False,
                             **{"members": setting.members, **settings})


def run_method(method: str, truth: xr.Dataset, observations: dict[str, xr.Dataset],
               latent_model: Any, full_model: Simulator, setting: BenchmarkSetting,
               settings: Mapping[str, Any], seed: int, widths: dict[str, float],
               vae: VAEModel | None = None, **load: Any) -> dict[str, Any]:
    """One method on one truth: its scores, or the reason it did not run.

    Parameters
    ----------
    method
        A name of :data:`~xldensf.experiments.settings.BENCHMARK_METHODS`.
    truth
        The held-out truth, dims ``(time, *grid)`` with its parameters as coordinates.
    observations
        Layout name (``"trained"``, ``"unseen"``) -> its observations of the truth.
    latent_model, full_model
        The surrogate and the full-order simulator.
    setting
        The benchmark setting (ensemble sizes; fields scored on ``setting.members``).
    settings
        The method's keyword settings
        (:func:`~xldensf.experiments.settings.method_settings`).
    seed
        Seed of the method.
    widths
        Prior range width of each parameter (the scale of the parameter error).
    vae
        The coupled VAE of ``latent-ensf`` (``None``: that method is skipped).
    **load
        The dask ``compute`` options for lazily decoded fields (e.g. ``scheduler=``).

    Returns
    -------
    dict
        The record (scores and times), or ``{"failure": reason}`` where the method does not
        apply or raised an :class:`~xldensf.errors.XLDEnSFError` (a diverged filter is a
        result, not a crash).

    Examples
    --------
    >>> run_method("latent-ensf", None, {}, None, None, None, {}, 0, {}, vae=None)
    {'failure': 'skipped: no VAE for latent-ensf (its entry vae in the result says why)'}
    """
    analyse = _analyse(method, observations, latent_model, full_model, setting,
                       dict(settings), seed, vae)
    if isinstance(analyse, str):
        return {"failure": analyse}
    start = time.perf_counter()
    try:
        analysis = analyse()
    except XLDEnSFError as error:
        return {"failure": f"{type(error).__name__}: {error}"}
    seconds = time.perf_counter() - start
    members = analysis.sizes["member"]
    # The fields are scored on the first ``setting.members`` members (exchangeable draws:
    # a random subset), so scoring a large latent ensemble does not decode every member on
    # the grid; the parameters on all of them.
    scored = analysis.isel(member=slice(0, setting.members))
    start = time.perf_counter()
    scored = scored.load(**load)  # decode lazily returned fields (timed apart)
    record = _score(scored, truth, scored_variables(full_model.case, full_model), widths,
                    seconds + time.perf_counter() - start)
    errors = parameter_error(analysis, truth, list(widths), ranges=widths)
    record["parameter_error"] = {name: float(errors[name].values[-1]) for name in widths}
    record.update(call_seconds=seconds, members=members,
                  scored_members=scored.sizes["member"])
    return record


def resolve_vae(vae: Any, path: Path | None, training_runs: Callable[[], xr.Dataset],
                layout: Any, seed: int, settings: Mapping[str, Any] | None = None
                ) -> tuple[VAEModel | None, str]:
    """The coupled VAE of ``latent-ensf``: given, loaded, reused from ``path``, or trained on
    the benchmark's training runs for the trained layout (and saved at ``path``).

    Parameters
    ----------
    vae
        A :class:`~xldensf.surrogate.VAEModel`, a path to one, or ``None``.
    path
        Where a trained VAE is saved (``<output>/<case>_<preset>.vae``) and, if the file
        exists, reused from; ``None``: train without saving.
    training_runs
        Returns the training runs, dims ``(run, time, *grid)`` (called only to train).
    layout
        The trained station layout (``stations=`` of
        :func:`~xldensf.observations.observe`): the VAE's observation encoder is trained
        for it.
    seed
        Seed of the training.
    settings
        Settings of :func:`~xldensf.surrogate.fit_vae` that replace
        :data:`~xldensf.experiments.settings.VAE_SETTINGS`.

    Returns
    -------
    tuple
        The VAE, or ``None`` if training failed, and where it came from (or the failure).

    Examples
    --------
    >>> import xldensf as xl
    >>> runs = lambda: xl.simulate("lorenz96", runs=3, seed=0, preset="small", n_outputs=6)
    >>> vae, source = resolve_vae(None, None, runs, "4", 0, {"steps": 3, "width": 16})
    >>> source, tuple(vae.stations.shape)
    ('trained (not saved)', (4, 1))
    """
    if isinstance(vae, VAEModel):
        return vae, "given"
    if vae is not None:
        return VAEModel.from_file(vae), str(vae)
    if path is not None and path.is_file():
        return VAEModel.from_file(path), f"reused: {path}"
    options = {**VAE_SETTINGS, **(settings or {})}
    logger.info("xldensf benchmark: training the Latent-EnSF VAE (%s)", options)
    try:
        runs = training_runs()
        stations = runs.isel(run=0).ldensf.observe(stations=layout, noise=0.0, seed=seed)
        trained = fit_vae(runs, stations=stations, seed=seed, **options)
    except XLDEnSFError as error:
        return None, f"failure: {type(error).__name__}: {error}"
    if path is None:
        return trained, "trained (not saved)"
    trained.save(path)
    return trained, f"trained: {path}"
