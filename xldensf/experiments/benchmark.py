"""The LD-EnSF benchmark behind ``xldensf benchmark <case> [--quick]``: orchestration and
scoring.

For one case (tsunami, atmosphere, Kolmogorov; Lorenz-96 for tests), on held-out truths
that the surrogate never saw, sparse noisy stations (the paper's density, 10 % noise, 20
members; :mod:`xldensf.experiments.settings`) are assimilated by every method of
:data:`~xldensf.experiments.settings.METHODS`: the free run (no analysis, the floor),
LD-EnSF with the decoder likelihood, with
the paper's encoder likelihood, with the decoder likelihood on a random layout of the same
size that the surrogate never saw, and the full-space EnSF, EnKF and LETKF with the
full-order model; on request (:data:`~xldensf.experiments.settings.OPTIONAL_METHODS`) also
the latent ensemble-variational smoother, Latent-EnSF (with a coupled VAE trained here on
the training runs unless given) and full-model 4D-Var. How each method is called and
scored is in :mod:`xldensf.experiments.methods`.

Every method starts from the same prior parameters (the case's prior range, never the
truth) and sees the same observations. Recorded per truth and method: the relative RMSE of
the ensemble mean per variable over time (cos-latitude weights on the sphere, as in the
LD-EnSF paper), the error of the posterior-mean parameters as a fraction of their prior
range, the spread/skill ratio, and the wall time per cycle; once per benchmark, the
prediction-step time per member of the latent and of the full model, side by side. The
result is a JSON-ready dict; :mod:`xldensf.experiments.report` writes it as JSON and as a
markdown table. Progress goes to the ``logging`` logger of this module, never to print.

Examples
--------
>>> from xldensf.experiments import METHODS, run_benchmark
>>> METHODS[0]     # the floor: the prior ensemble with no analysis
'free-run'
"""

from __future__ import annotations

import contextlib
import functools
import logging
import pickle
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from .._version import __version__
from ..errors import ConfigurationError, check_names, expected_found
from ..options import resolve_seed
from ..simulators import Simulator, simulate, simulator
from ..surrogate import LatentModel, fit, load_model
from .methods import resolve_vae, run_method, scored_variables
from .report import write_report
from .settings import (
    BENCHMARK_METHODS,
    BenchmarkSetting,
    method_settings,
    regular_station_count,
    shipped_model_path,
)
from .truths import BenchmarkTruth, BenchmarkTruths, prepare_truth, resolve_setting

__all__ = [
    "scored_variables",
    "summarize_runs",
    "distributed_client",
    "prediction_step_seconds",
    "run_benchmark",
]

logger = logging.getLogger(__name__)


def _median_seconds(function: Callable[[], Any], repeats: int) -> float:
    function()  # warm-up (allocations, first-call dispatch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


@torch.no_grad()
def prediction_step_seconds(latent_model: Any, full_model: Simulator, members: int = 20,
                            repeats: int = 5, seed: int = 0) -> dict[str, float]:
    """Wall time per member of one forecast over one observation interval (one training
    frame), for the latent model and the full-order model, measured side by side.

    Parameters
    ----------
    latent_model
        A :class:`~xldensf.surrogate.LatentModel`.
    full_model
        The simulator it was trained on.
    members
        Batch of states advanced at once (the ensemble size).
    repeats
        Timed repetitions after one warm-up; the median is reported.
    seed
        Seed of the parameters drawn from the prior.

    Returns
    -------
    dict
        ``latent_s_per_member``, ``full_s_per_member`` and their ``ratio`` (full / latent).

    Examples
    --------
    >>> import xldensf as xl
    >>> from xldensf.surrogate import fit
    >>> runs = xl.simulate("lorenz96", runs=3, seed=0, preset="small", n_outputs=4)
    >>> surrogate = fit(runs, ["F"], steps=2, finetune_steps=0, seed=0, progress=False)
    >>> times = prediction_step_seconds(surrogate, xl.simulator("lorenz96", preset="small"),
    ...                                 members=4, repeats=1)
    >>> sorted(times)
    ['full_s_per_member', 'latent_s_per_member', 'ratio']
    """
    generator = torch.Generator().manual_seed(seed)
    parameters = full_model.draw_parameters(members, generator)
    interval = float(full_model.output_times[1] - full_model.output_times[0])
    state = full_model.initial_state(parameters, generator)
    normalized = latent_model.normalize_parameters(
        parameters.to(dtype=latent_model.dtype, device=latent_model.device))
    latent = latent_model.unroll(normalized, 1)[..., 0, :]
    full = _median_seconds(lambda: full_model.advance(state, parameters, 0.0, interval),
                           repeats)
    surrogate = _median_seconds(lambda: latent_model.advance(latent, normalized, 1), repeats)
    return {"latent_s_per_member": surrogate / members, "full_s_per_member": full / members,
            "ratio": full / surrogate}


def _resolve_model(case: str, setting: BenchmarkSetting, model: Any, stations: int,
                   output: Path | None, seed: int, progress: bool,
                   training_runs: Callable[[], xr.Dataset]) -> tuple[Any, str]:
    """The surrogate: given, shipped with the package, or trained here (and saved)."""
    if isinstance(model, LatentModel):
        return model, "given"
    if model is not None:
        return load_model(model), str(model)
    shipped = shipped_model_path(case, setting.preset)
    if shipped is not None:
        return load_model(shipped), f"shipped: {shipped.name}"
    logger.info("xldensf benchmark: no surrogate given or shipped for %s/%s; training one "
                "on %d runs with %d encoder stations", case, setting.preset,
                setting.training_runs, stations)
    runs = training_runs()
    names = list(simulator(case, preset=setting.preset).parameter_names)
    trained = fit(runs, names, stations=stations, preset=setting.preset, seed=seed,
                  progress=progress)
    if output is None:
        return trained, "trained (not saved)"
    path = output / f"{case}_{setting.preset}.ldensf"
    trained.save(path)
    return trained, f"trained: {path}"


def summarize_runs(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the truths that ran (NaN-free lists for JSON).

    Parameters
    ----------
    records
        The per-truth records of one method (``failure`` records are left out).

    Returns
    -------
    dict
        ``runs`` (how many ran) and, if any ran, the means of ``final``, ``mean``,
        ``spread_skill``, ``parameter_error``, the times per cycle and the error curves.

    Examples
    --------
    >>> summarize_runs([{"failure": "diverged"}])
    {'runs': 0}
    """
    ran = [record for record in records if "failure" not in record]
    if not ran:
        return {"runs": 0}
    summary: dict[str, Any] = {"runs": len(ran)}
    for key in ("final", "mean", "spread_skill", "parameter_error"):
        names = ran[0][key]
        summary[key] = {name: float(np.mean([record[key][name] for record in ran]))
                        for name in names}
    for key in ("seconds_per_cycle", "filter_seconds_per_cycle", "call_seconds"):
        if all(key in record for record in ran):
            summary[key] = float(np.mean([record[key] for record in ran]))
    curves = np.array([[record["relative_rmse"][name] for name in record["relative_rmse"]]
                       for record in ran])
    summary["relative_rmse"] = dict(zip(ran[0]["relative_rmse"],
                                        curves.mean(axis=0).tolist(), strict=True))
    return summary


def _method_task(method: str, prepared: BenchmarkTruth, models: bytes,
                 setting: BenchmarkSetting, settings: dict[str, Any], seed: int,
                 widths: dict[str, float]) -> dict[str, Any]:
    """One method on one prepared truth, as a task of a dask.distributed client.

    The models (surrogate, simulator, VAE or ``None``) come pickled (distributed's own
    torch serialiser fails on modules that hold weak references); lazily decoded latent
    fields are computed in the task, on its own thread."""
    latent_model, full_model, vae = pickle.loads(models)
    return run_method(method, prepared.truth, prepared.observations, latent_model,
                      full_model, setting, settings, seed, widths, vae=vae,
                      scheduler="synchronous")


def _truth_summary(prepared: BenchmarkTruth) -> tuple[dict[str, float], int]:
    """The true parameters and the station count of the trained layout of a truth."""
    return prepared.parameters, prepared.observations["trained"].sizes["station"]


def _run_truths(truths: BenchmarkTruths, settings: dict[str, dict[str, Any]], vae: Any,
                widths: dict[str, float], progress: bool, client: Any = None,
                ) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, float]], int]:
    """Every method of ``settings`` (method -> its settings) on every held-out truth: the
    records per method, the truths' parameters and the number of stations observed on the
    trained layout. ``vae``: the VAE of Latent-EnSF (or ``None``).

    With a dask.distributed ``client`` every truth, and every method on it, is a task
    (the models are scattered to the workers once); the records are the serial ones."""
    latent_model, full_model, setting = truths.model, truths.simulator, truths.setting
    methods = list(settings)
    records: dict[str, list[dict[str, Any]]] = {method: [] for method in methods}

    def record(index: int, method: str, found: dict[str, Any]) -> None:
        found["truth"] = index
        records[method].append(found)
        if progress:
            final = found.get("final", found.get("failure"))
            logger.info("  truth %d/%d %s: %s", index + 1, setting.truths, method, final)

    if client is None:
        summaries = []
        for prepared in truths:
            summaries.append(_truth_summary(prepared))
            for method in methods:
                record(prepared.index, method, run_method(
                    method, prepared.truth, prepared.observations, latent_model,
                    full_model, setting, settings[method], prepared.seed, widths, vae=vae))
    else:
        indices = range(truths.first, truths.last)
        scattered = client.scatter(pickle.dumps((latent_model, full_model, vae)),
                                   broadcast=True)
        futures = [client.submit(prepare_truth, truths.case, setting, index, truths.seed,
                                 truths.frames, truths.layouts, truths.parameter_names,
                                 pure=False) for index in indices]
        tasks = [[client.submit(_method_task, method, future, scattered, setting,
                                settings[method], truths.seed + index, widths, pure=False)
                  for method in methods]
                 for index, future in zip(indices, futures)]
        summaries = client.gather([client.submit(_truth_summary, future)
                                   for future in futures])
        for index, per_method in zip(indices, client.gather(tasks)):
            for method, found in zip(methods, per_method):
                record(index, method, found)
    return records, [parameters for parameters, _ in summaries], summaries[-1][1]


@contextlib.contextmanager
def distributed_client(workers: int | None = None, scheduler: str | None = None
                       ) -> Iterator[Any]:
    """A dask.distributed client for :func:`run_benchmark` (``None`` if neither is given).

    Parameters
    ----------
    workers
        Start a ``LocalCluster`` of that many worker processes, one thread each (closed
        on exit), without distributed's ``MALLOC_TRIM_THRESHOLD_`` setting (it slows
        torch's allocations down several times).
    scheduler
        Address of a running scheduler (``"tcp://host:8786"``) to connect to instead.

    Yields
    ------
    distributed.Client or None

    Raises
    ------
    ConfigurationError
        Both given, a worker count below 1, or the ``distributed`` package missing.

    Examples
    --------
    >>> with distributed_client() as client:
    ...     client is None
    True
    """
    if workers is None and scheduler is None:
        yield None
        return
    if workers is not None and scheduler is not None:
        raise ConfigurationError(expected_found("workers or scheduler", "one of them",
                                                "both"))
    if workers is not None and workers < 1:
        raise ConfigurationError(expected_found("workers", "a positive integer", workers))
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError as error:
        raise ConfigurationError(expected_found(
            "the distributed package (pip install 'xldensf[dask]')", "installed",
            "not importable")) from error
    if scheduler is not None:
        with Client(scheduler) as client:
            yield client
        return
    # distributed sets MALLOC_TRIM_THRESHOLD_ in its workers, which turns off glibc's
    # dynamic mmap threshold: torch's large temporaries are then mapped and faulted in
    # anew at every step (the tsunami filters ran several times slower); left out here
    environ = {key: value for key, value in
               dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
               if key != "MALLOC_TRIM_THRESHOLD_"}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}), \
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                         dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


def _worker_count(client: Any) -> int | None:
    """Workers of a distributed client (``None``: the serial run)."""
    return None if client is None else len(client.scheduler_info()["workers"])


def run_benchmark(case: str = "tsunami", *, quick: bool = True, truths: int | None = None,
                  members: int | None = None, latent_members: int | None = None,
                  methods: Sequence[str] | None = None, model: Any = None, seed: int = 0,
                  output: str | Path | None = None, progress: bool = True,
                  client: Any = None, vae: Any = None,
                  vae_settings: Mapping[str, Any] | None = None,
                  filter_settings: Mapping[str, Mapping[str, Any]] | None = None
                  ) -> dict[str, Any]:
    """Run the LD-EnSF benchmark of one case; optionally write JSON and markdown.

    Parameters
    ----------
    case
        ``"tsunami"``, ``"atmosphere"``, ``"kolmogorov"`` or ``"lorenz96"``.
    quick
        The quick setting (small presets, 3 truths, minutes on a CPU) instead of the
        paper setting (paper grids, 10 truths; train the surrogate on a GPU).
    truths, members, latent_members
        Overrides of the setting's number of held-out truths and ensemble sizes (of the
        full-space filters, of the latent methods).
    methods
        Names of :data:`~xldensf.experiments.settings.BENCHMARK_METHODS` (default: the
        default rows, :data:`~xldensf.experiments.settings.METHODS`); the opt-in
        ``"latent-envar"``, ``"latent-ensf"`` and ``"4dvar"``
        (:data:`~xldensf.experiments.settings.OPTIONAL_METHODS`) run only when named.
    model
        A :class:`~xldensf.surrogate.LatentModel`, a path to one, or ``None``: the model
        shipped for the case and preset, else one trained here (saved in ``output``).
    seed
        Seed of the benchmark: truths use ``1000 + seed + i``, the stations, noise and
        filters ``seed + i``.
    output
        Directory for ``ldensf_<case>_<setting>.json`` and ``.md``; ``None`` writes nothing.
    progress
        Progress bars (simulation, training) and one ``logging`` line (level INFO, logger
        ``xldensf.experiments.benchmark``) per truth and method.
    client
        A ``distributed.Client`` (see :func:`distributed_client`): every truth, and every
        method on it, runs as a task on its workers. The scores are those of the serial
        run with the same seeds (only the times differ); ``None``: serial, in this process.
    vae
        The coupled VAE of ``latent-ensf`` (:class:`~xldensf.surrogate.VAEModel` or a path
        to one), trained for the stations of the trained layout; ``None``:
        ``<output>/<case>_<preset>.vae`` if it exists, else one trained on the training
        runs of the setting (saved there). Used only with ``"latent-ensf"``.
    vae_settings
        Training settings of :func:`~xldensf.surrogate.fit_vae` replacing
        :data:`~xldensf.experiments.settings.VAE_SETTINGS`.
    filter_settings
        Settings per method replacing or adding to those of
        :data:`~xldensf.experiments.settings.BENCHMARK_CASES` (e.g.
        ``{"latent-envar": {"members": 20}}``); recorded in the result.

    Returns
    -------
    dict
        Settings, per-method records per truth and their means, and the prediction-step
        timing.

    Raises
    ------
    UnknownNameError
        Unknown case or method (also in ``filter_settings``).
    ConfigurationError
        Fewer than one truth or two members; a surrogate of another case or grid.

    Examples
    --------
    >>> import xldensf as xl
    >>> from xldensf.surrogate import fit
    >>> runs = xl.simulate("lorenz96", runs=4, seed=0, preset="small", n_outputs=4)
    >>> surrogate = fit(runs, ["F"], steps=2, finetune_steps=0, seed=0, progress=False)
    >>> result = run_benchmark("lorenz96", model=surrogate, truths=1, members=4,
    ...                        methods=["ld-ensf-decoder", "enkf"], progress=False)
    >>> sorted(result["methods"])
    ['enkf', 'ld-ensf-decoder']
    """
    # Long by its docstring (every option documented); the body is sequential steps
    # (settings, models, truths, record) kept in one place.
    setting, methods = resolve_setting(case, quick, truths, members, latent_members, methods)
    if filter_settings:
        check_names("method of filter_settings", sorted(filter_settings), BENCHMARK_METHODS)
    seed = resolve_seed(seed)
    output_dir = Path(output) if output is not None else None
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
    full_model = simulator(case, preset=setting.preset, progress=False)
    stations = regular_station_count(full_model.grid_shape, setting.density)
    # the training runs of a surrogate or VAE trained here, simulated once if at all
    training_runs = functools.cache(lambda: simulate(
        case, runs=setting.training_runs, seed=seed, preset=setting.preset, dtype="float32",
        progress=progress))
    latent_model, model_source = _resolve_model(case, setting, model, stations, output_dir,
                                                 seed, progress, training_runs)
    held_out = BenchmarkTruths.from_models(case, setting, latent_model, full_model, seed,
                                           progress=progress)
    widths = {spec.name: spec.prior_high - spec.prior_low for spec in full_model.parameter_specs}
    settings = method_settings(case, methods, filter_settings)
    sources, used_vae = {"model": model_source}, None
    if "latent-ensf" in methods:
        path = None if output_dir is None else output_dir / f"{case}_{setting.preset}.vae"
        used_vae, sources["vae"] = resolve_vae(vae, path, training_runs,
                                               held_out.layouts["trained"], seed, vae_settings)
    records, truth_parameters, observed = _run_truths(held_out, settings, used_vae,
                                                      widths, progress, client)

    grid_points = int(np.prod(full_model.grid_shape))
    timing = prediction_step_seconds(latent_model, full_model, setting.members, seed=seed)
    results: dict[str, Any] = {
        "case": case, "setting": setting.__dict__, **sources,
        "variables": scored_variables(case, full_model), "parameters": widths,
        "stations": {"trained": int(observed), "unseen": stations,
                     "grid_points": grid_points, "fraction": observed / grid_points},
        "truth_parameters": truth_parameters, "seed": seed,
        "filter_settings": settings,
        "methods": {method: {"runs": records[method], "summary": summarize_runs(records[method])}
                    for method in methods},
        "prediction_step": timing,
        "environment": {"xldensf": __version__, "torch": torch.__version__,
                        "threads": torch.get_num_threads(), "python": platform.python_version(),
                        "machine": platform.machine(), "workers": _worker_count(client)},
    }
    if output_dir is not None:
        write_report(results, output_dir)
    return results
