"""The ``xldensf`` command line: ``xldensf simulate|observe|assimilate|score|train|demo|benchmark``.

Files in, files out: ``simulate`` writes a truth, ``observe`` samples station observations
of it, ``assimilate`` runs a filter (or LD-EnSF with a saved latent model) on them and
``score`` verifies the analysis against the truth. Inputs are netCDF files or zarr stores
(a directory ending ``.zarr``); outputs are written atomically in the format of their
suffix (:func:`xldensf.io.write_dataset`). Every command takes ``--config FILE.toml`` and
``--set KEY=VALUE`` (:mod:`xldensf.cli_config`) and ``-v/--verbose``.

Exit status: 0 on success, 1 on a data error (any :class:`~xldensf.errors.XLDEnSFError`, a
missing or unreadable file: one line on standard error, no traceback), 2 on a usage error.

The only module of the package that prints: the library returns values and logs progress
through :mod:`logging` (loggers under ``xldensf``); while a command runs, those messages of
level INFO and above (DEBUG with ``-v``) go to standard error.

Examples
--------
>>> main(["simulate", "lorenz96", "--preset", "small", "--seed", "0", "--quiet",
...       "--output", "/dev/null"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .alignment import DEFAULT_TOLERANCE
from .cli_config import (
    apply_settings,
    command_settings,
    drop_overridden,
    parse_assignment,
    read_config,
)
from .errors import DataError, XLDEnSFError, expected_found
from .io import (
    atomic_write_bytes,
    is_zarr_path,
    json_safe,
    read_dataset,
    require_zarr,
    write_dataset,
)

__all__ = ["main", "build_parser", "score_table", "METRICS"]

logger = logging.getLogger("xldensf.cli")  # also when run as ``python -m``

#: ``xldensf score --metric`` names -> functions of :mod:`xldensf.metrics`.
METRICS = {"rmse": "rmse", "relative_rmse": "relative_rmse", "spread": "spread",
           "spread_skill": "spread_skill_ratio", "crps": "crps"}
DEFAULT_METRICS = ["rmse", "relative_rmse", "spread_skill", "crps"]
#: ``xldensf observe`` options that place stations: one of them, the highest level wins.
STATION_OPTIONS = ("stations", "layout", "station_file")
#: Suffixes ``xldensf score -o`` writes.
SCORE_FORMATS = (".nc", ".zarr", ".csv", ".json")
#: Help of options declared without one (the benchmark's), shown by ``--help``.
DEFAULT_HELP = {
    "seed": "random seed (None: a fresh seed, recorded in the output)",
    "preset": "configuration preset of the simulator",
    "runs": "number of simulated runs",
    "dtype": "floating-point precision of the computation",
    "device": "torch device (e.g. cpu, cuda; None: the package default)",
    "case": "the simulator",
    "methods": "methods to compare",
}


def _checked_output(path: str, what: str,
                    suffixes: Sequence[str] | None = None) -> Path:
    """The output path, checked before any work is done: its directory exists and, with
    ``suffixes``, it has one of them."""
    target = Path(path)
    if not target.parent.is_dir():
        raise DataError(expected_found("output directory", "an existing directory",
                                       str(target.parent)))
    if suffixes is not None and target.suffix.lower() not in suffixes:
        raise DataError(expected_found(f"{what} suffix", " or ".join(suffixes),
                                       target.suffix or target.name))
    if is_zarr_path(target):
        require_zarr(target)
    return target


def _one_run(dataset: Any, run: int, what: str) -> Any:
    """``dataset`` at ``run`` when it has a ``run`` dim (``xldensf simulate`` output)."""
    if "run" not in dataset.dims:
        return dataset
    if not -dataset.sizes["run"] <= run < dataset.sizes["run"]:
        raise DataError(expected_found(f"{what} run", f"an index below {dataset.sizes['run']}",
                                       run))
    return dataset.isel(run=run)


def _simulate(args: argparse.Namespace) -> None:
    from .simulators import simulate

    output = _checked_output(args.output, "simulate output")
    dataset = simulate(args.case, runs=args.runs, seed=args.seed, preset=args.preset,
                       dtype=args.dtype, device=args.device, progress=not args.quiet,
                       start=args.start, time_unit=args.time_unit, **args.extras)
    write_dataset(dataset, output)
    print(f"wrote {output}: {dict(dataset.sizes)}")


def _noise(text: str) -> Any:
    """``--noise``: a number (relative to each field's standard deviation) or a quantity
    with units such as ``"0.05 m"`` (absolute)."""
    try:
        return float(text)
    except ValueError:
        pass
    from .conventions import units

    try:
        quantity = units.Quantity(text)
    except Exception as err:  # pint raises several unrelated types
        raise argparse.ArgumentTypeError(
            f"expected a number or a quantity such as '0.05 m', found {text!r}") from err
    if quantity.dimensionless:
        return float(quantity.magnitude)
    return quantity


def _stations(args: argparse.Namespace) -> Any:
    """The ``stations`` argument of ``observe`` from --stations, --layout, --station-file."""
    given = [name for name in STATION_OPTIONS if getattr(args, name) is not None]
    if len(given) > 1:  # from one level of --config / --set (flags are exclusive)
        args.subparser.error(f"settings {', '.join(given)}: expected only one of them")
    if args.layout is not None:
        return str(args.layout)
    if args.station_file is not None:
        return read_dataset(args.station_file, "station file")
    return 20 if args.stations is None else args.stations


def _observe(args: argparse.Namespace) -> None:
    from .observations import observe

    output = _checked_output(args.output, "observe output")
    truth = _one_run(read_dataset(args.truth, "truth"), args.run, "truth")
    observations = observe(truth, _stations(args), noise=args.noise,
                           variables=args.variables, every=args.every, seed=args.seed)
    write_dataset(observations, output)
    print(f"wrote {output}: {dict(observations.sizes)}")


def _forecast_model(args: argparse.Namespace) -> Any:
    """A built-in simulator by name, else a saved latent model file."""
    from .simulators import CASES, simulator
    from .surrogate import load_model

    if args.model in CASES:
        return simulator(args.model, args.preset, dtype=args.dtype, device=args.device,
                         progress=not args.quiet)
    if not Path(args.model).is_file():
        raise DataError(expected_found("assimilate --model", f"one of {sorted(CASES)} or an "
                                       "existing model file", args.model))
    return load_model(args.model, device=args.device)


def _assimilate(args: argparse.Namespace) -> None:
    from .assimilation import assimilate

    output = _checked_output(args.output, "assimilate output")
    observations = read_dataset(args.observations, "observations")
    model = _forecast_model(args)
    settings = dict(args.extras)
    if args.prior is not None:
        settings["prior"] = read_dataset(args.prior, "prior")
    analysis = assimilate(observations, model, method=args.method, members=args.members,
                          seed=args.seed, progress=not args.quiet, **settings)
    write_dataset(analysis, output)
    print(f"wrote {output}: {analysis.attrs.get('xldensf_method', 'analysis')} "
          f"{dict(analysis.sizes)}")


def _scores(args: argparse.Namespace) -> Any:
    """The requested metrics of the analysis against the truth as one Dataset, variables
    named ``<variable>_<metric>``."""
    import xarray as xr

    from . import metrics

    analysis = read_dataset(args.analysis, "analysis")
    truth = _one_run(read_dataset(args.truth, "truth"), args.run, "truth")
    parts = []
    for name in dict.fromkeys(args.metric):
        function = getattr(metrics, METRICS[name])
        if name == "spread":
            scored = function(analysis, args.variables)
        else:
            scored = function(analysis, truth, args.variables, tolerance=args.tolerance,
                              interpolate=args.interpolate)
        parts.append(scored.rename({v: f"{v}_{name}" for v in scored.data_vars}))
    combined = xr.merge(parts, compat="override", combine_attrs="override")
    combined.attrs = {"title": "xldensf verification scores", "xldensf_metrics":
                      " ".join(dict.fromkeys(args.metric)), "xldensf_analysis":
                      str(args.analysis), "xldensf_truth": str(args.truth),
                      "xldensf_version": __version__}
    return combined


def score_table(scores: Any) -> str:
    """A short text table of score Datasets of ``xldensf score``: one row per score, its
    mean over the remaining dims (e.g. time) and its units.

    Examples
    --------
    >>> import xarray as xr
    >>> scores = xr.Dataset({"u_rmse": ("time", [1.0, 3.0], {"units": "m s-1"})})
    >>> print(score_table(scores))
    score   mean over time  units
    u_rmse  2               m s-1
    """
    dims = sorted({str(d) for v in scores.data_vars.values() for d in v.dims})
    head = ["score", f"mean over {', '.join(dims)}" if dims else "value", "units"]
    rows = [head] + [[str(name), f"{float(v.mean()):.4g}", str(v.attrs.get("units", ""))]
                     for name, v in scores.data_vars.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in rows)


def _score(args: argparse.Namespace) -> None:
    import json


    output = (None if args.output is None
              else _checked_output(args.output, "score output", SCORE_FORMATS))
    scores = _scores(args)
    if output is None:
        print(score_table(scores))
        return
    suffix = output.suffix.lower()
    if suffix == ".csv":
        atomic_write_bytes(output, scores.to_dataframe().to_csv().encode())
    elif suffix == ".json":
        text = json.dumps(json_safe(scores.to_dict(data="list"), strict=True), indent=1)
        atomic_write_bytes(output, text.encode())
    else:
        write_dataset(scores, output)
    print(f"wrote {output}: {', '.join(map(str, scores.data_vars))}")


def _train(args: argparse.Namespace) -> None:
    from .simulators import simulate, simulator
    from .surrogate import fit

    output = _checked_output(args.output, "train output")
    runs = simulate(args.case, runs=args.runs, seed=args.seed, preset=args.preset,
                    dtype="float32", progress=not args.quiet)
    names = list(simulator(args.case, preset=args.preset).parameter_names)
    model = fit(runs, names, stations=args.stations, preset=args.preset, seed=args.seed,
                progress=not args.quiet)
    model.save(output)
    print(f"wrote {output}: LD-EnSF surrogate of {args.case} ({args.runs} runs, "
          f"parameters {names})")


def _demo(args: argparse.Namespace) -> None:
    from .experiments import demo_report, run_demo

    summary = run_demo(args.output, seed=args.seed, progress=not args.quiet)
    print("\n" + demo_report(summary))


def _benchmark(args: argparse.Namespace) -> None:
    import torch

    from .experiments import markdown_report, run_benchmark
    from .experiments.benchmark import distributed_client

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with distributed_client(args.workers, args.scheduler) as client:
        results = run_benchmark(args.case, quick=args.quick, truths=args.truths,
                                members=args.members, methods=args.methods or None,
                                model=args.model, seed=args.seed, output=args.output,
                                progress=not args.quiet, client=client)
    print(markdown_report(results))
    setting = results["setting"]["name"]
    print(f"wrote {args.output}/ldensf_{args.case}_{setting}.json and .md")


def _add_observe(commands: Any) -> None:
    """The ``observe`` subcommand (``commands``: the subparsers of :func:`build_parser`)."""
    observe = commands.add_parser("observe", help="sample noisy station observations")
    observe.add_argument("truth", metavar="TRUTH", help="gridded fields (.nc or .zarr)")
    observe.add_argument("--output", "-o", default=None,
                         help="observations to write (.nc or .zarr; required)")
    placement = observe.add_mutually_exclusive_group()
    placement.add_argument("--stations", type=int, default=None,
                           help="number of randomly placed stations (20 when no --layout "
                                "or --station-file)")
    placement.add_argument("--layout", default=None,
                           help="regular layout 'NxM' (or 'N' in 1-D), on grid points")
    placement.add_argument("--station-file", default=None,
                           help="file with station coordinates (dims station or time, "
                                "station)")
    observe.add_argument("--noise", type=_noise, default=0.1,
                         help="error standard deviation: a number is relative to each "
                              "field's standard deviation, a quantity ('0.05 m') absolute")
    observe.add_argument("--variables", nargs="+", default=None,
                         help="variables to observe (None: all gridded fields)")
    observe.add_argument("--every", type=int, default=1, help="observe every N-th time")
    observe.add_argument("--seed", type=int, default=None,
                         help="seed of layout and noise (None: fresh, recorded)")
    observe.add_argument("--run", type=int, default=0,
                         help="run of a truth with a run dim (xldensf simulate --runs)")
    observe.set_defaults(handler=_observe, required=("output",), extras_allowed=False,
                         exclusive=(STATION_OPTIONS,))


def _add_assimilate(commands: Any, cases: Sequence[str], presets: Sequence[str]) -> None:
    """The ``assimilate`` subcommand."""
    from .assimilation import FULL_ORDER_METHODS, LATENT_ENVAR_METHODS, LATENT_METHODS

    assimilate = commands.add_parser(
        "assimilate", help="assimilate observations into a simulator or a latent model")
    assimilate.add_argument("observations", metavar="OBS", help="observations (.nc, .zarr)")
    assimilate.add_argument("--model", default=None,
                            help=f"a built-in simulator ({', '.join(sorted(cases))}) or a "
                                 "saved latent model file (.ldensf; required)")
    assimilate.add_argument("--method", default=None,
                            choices=sorted({*FULL_ORDER_METHODS, *LATENT_METHODS,
                                            *LATENT_ENVAR_METHODS}),
                            help="filter (None: letkf for a simulator, ld-ensf for a "
                                 "latent model)")
    assimilate.add_argument("--members", type=int, default=None,
                            help="ensemble size (None: the method's default)")
    assimilate.add_argument("--seed", type=int, default=None,
                            help="seed of the prior draw and of stochastic filters")
    assimilate.add_argument("--prior", default=None,
                            help="prior states (.nc or .zarr; simulator only; None: the "
                                 "simulator's prior)")
    assimilate.add_argument("--preset", choices=presets, default="small",
                            help="preset of a built-in simulator (the observed grid's)")
    assimilate.add_argument("--dtype", choices=["float32", "float64"], default="float64",
                            help="precision of a built-in simulator")
    assimilate.add_argument("--device", default=None, help="torch device (e.g. cpu, cuda)")
    assimilate.add_argument("--output", "-o", default=None,
                            help="analysis ensemble to write (.nc or .zarr; required)")
    assimilate.add_argument("--quiet", action="store_true", help="no progress bars")
    assimilate.set_defaults(handler=_assimilate, required=("model", "output"), extras_allowed=True)


def _add_score(commands: Any) -> None:
    """The ``score`` subcommand."""
    score = commands.add_parser("score", help="verify an analysis against the truth")
    score.add_argument("analysis", metavar="ANALYSIS", help="analysis ensemble (.nc, .zarr)")
    score.add_argument("truth", metavar="TRUTH", help="true fields (.nc or .zarr)")
    score.add_argument("--metric", nargs="+", choices=list(METRICS), default=DEFAULT_METRICS,
                       help="scores to compute (see xldensf.metrics)")
    score.add_argument("--variables", nargs="+", default=None,
                       help="variables to score (None: all in both with the spatial axes)")
    score.add_argument("--run", type=int, default=0,
                       help="run of a truth with a run dim (xldensf simulate --runs)")
    score.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                       help="label tolerance of the truth, as a fraction of the grid spacing")
    score.add_argument("--interpolate", action="store_true",
                       help="interpolate a truth on another grid to the analysis'")
    score.add_argument("--output", "-o", default=None,
                       help="scores to write (.nc, .zarr, .csv or .json; None: a table "
                            "on standard output)")
    score.set_defaults(handler=_score, extras_allowed=False)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``xldensf`` command.

    Examples
    --------
    >>> args = build_parser().parse_args(["observe", "truth.nc", "-o", "obs.nc"])
    >>> args.command, args.noise, args.every
    ('observe', 0.1, 1)
    """
    from .simulators import CASES, PRESETS

    parser = argparse.ArgumentParser(prog="xldensf", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"xldensf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    simulate = commands.add_parser("simulate", help="run a full-order simulator to a file")
    simulate.add_argument("case", choices=sorted(CASES), help="the simulator")
    simulate.add_argument("--preset", choices=PRESETS, default="small",
                          help="configuration preset of the simulator")
    simulate.add_argument("--runs", type=int, default=1, help="number of runs")
    simulate.add_argument("--seed", type=int, default=None,
                          help="seed of the parameter draw (None: fresh, recorded)")
    simulate.add_argument("--dtype", choices=["float32", "float64"], default="float64",
                          help="floating-point precision")
    simulate.add_argument("--device", default=None, help="torch device (e.g. cpu, cuda)")
    simulate.add_argument("--start", default=None,
                          help="datetime of the initial state (ISO 8601): a datetime axis")
    simulate.add_argument("--time-unit", default=None,
                          help="duration of one model time unit (e.g. '5 days')")
    simulate.add_argument("--output", "-o", default=None,
                          help="file to write (.nc netCDF, .zarr zarr store; required)")
    simulate.add_argument("--quiet", action="store_true", help="no progress bars")
    simulate.set_defaults(handler=_simulate, required=("output",), extras_allowed=True)

    _add_observe(commands)
    _add_assimilate(commands, CASES, PRESETS)
    _add_score(commands)

    train = commands.add_parser("train", help="simulate runs and train a latent surrogate")
    train.add_argument("case", choices=sorted(CASES), help="the simulator")
    train.add_argument("--preset", choices=PRESETS, default="small",
                       help="configuration preset of simulator and networks")
    train.add_argument("--runs", type=int, default=60, help="number of training runs")
    train.add_argument("--seed", type=int, default=0, help="seed of simulation and training")
    train.add_argument("--stations", type=int, default=None,
                       help="station count for the encoder (e.g. 100), None: no encoder")
    train.add_argument("--output", "-o", default=None, help="model file to write (required)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(handler=_train, required=("output",), extras_allowed=False)

    demo = commands.add_parser("demo", help="the built-in demonstration (small tsunami)")
    demo.add_argument("--output", "-o", default="out", help="directory for netCDF and PNG")
    demo.add_argument("--seed", type=int, default=0, help="seed of the demonstration")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(handler=_demo, extras_allowed=False)

    from .experiments.settings import BENCHMARK_CASES, BENCHMARK_METHODS, METHODS

    benchmark = commands.add_parser(
        "benchmark", help="LD-EnSF against EnSF, EnKF and LETKF on held-out truths")
    benchmark.add_argument("case", choices=sorted(BENCHMARK_CASES))
    benchmark.add_argument("--quick", action="store_true",
                           help="small presets, 5 truths: minutes on a CPU (default: the "
                                "paper setting, which needs a surrogate trained on a GPU)")
    benchmark.add_argument("--truths", type=int, default=None, help="held-out truths")
    benchmark.add_argument("--members", type=int, default=None, help="ensemble size")
    benchmark.add_argument("--methods", nargs="+", choices=BENCHMARK_METHODS, default=None,
                           help=f"methods to compare (none given: {' '.join(METHODS)}; "
                                "latent-envar, latent-ensf and 4dvar run only when named; "
                                "latent-ensf trains a VAE, saved in --output and reused)")
    benchmark.add_argument("--model", default=None,
                           help="surrogate file (default: shipped, else trained and saved)")
    benchmark.add_argument("--seed", type=int, default=0)
    benchmark.add_argument("--threads", type=int, default=None,
                           help="torch CPU threads (default: torch's; 1 on a shared machine)")
    cluster = benchmark.add_mutually_exclusive_group()
    cluster.add_argument("--workers", type=int, default=None,
                         help="run truths and methods as tasks on a dask LocalCluster of N "
                              "single-threaded worker processes (needs xldensf[dask])")
    cluster.add_argument("--scheduler", default=None,
                         help="run them on the dask.distributed scheduler at ADDRESS")
    benchmark.add_argument("--output", "-o", default="out", help="directory for JSON and MD")
    benchmark.add_argument("--quiet", action="store_true", help="no progress bars")
    benchmark.set_defaults(handler=_benchmark)

    for subparser in commands.choices.values():
        _add_common_options(subparser)
        subparser.set_defaults(subparser=subparser, commands=tuple(commands.choices))
    return parser


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--set``, ``-v``, help texts and shown defaults for every command."""
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.add_argument("--config", metavar="FILE.toml", default=None,
                        help="settings file: a [command] table and shared top-level keys")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                        type=parse_assignment,
                        help="a setting (TOML value; repeatable); overrides --config, "
                             "flags override it")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="debug messages of the package on standard error")
    parser.set_defaults(extras={}, required=parser.get_default("required") or (),
                        exclusive=parser.get_default("exclusive") or ())
    # argparse keeps a parser's actions in ``_actions`` only.
    for action in parser._actions:
        if action.help is None and action.dest in DEFAULT_HELP:
            action.help = DEFAULT_HELP[action.dest]
        elif action.help is None:
            action.help = action.dest.replace("_", " ")


class _StderrHandler(logging.Handler):
    """Log records as plain lines on the current ``sys.stderr`` (looked up at each record,
    so that a redirected stream is honoured)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr)


@contextlib.contextmanager
def _package_logging(verbose: int = 0) -> Iterator[None]:
    """Show the package's INFO messages (DEBUG ones too when ``verbose``) on standard
    error while a command runs."""
    logger = logging.getLogger("xldensf")
    handler = _StderrHandler()
    if verbose:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _configured(parser: argparse.ArgumentParser, args: argparse.Namespace,
                argv: Sequence[str]) -> argparse.Namespace:
    """The command line parsed again over the settings of --config and --set."""
    config = read_config(args.config) if args.config is not None else {}
    shared, table = command_settings(config, args.command, args.commands)
    given = {name for group in args.exclusive for name in group
             if getattr(args, name) is not None}  # flags of the command line
    shared, table, assigned = drop_overridden([shared, table, dict(args.set)],
                                              args.exclusive, given)
    own = {**table, **assigned}
    logger.debug("settings of %s: shared %s, own %s", args.command, shared, own)
    extras = apply_settings(args.subparser, shared, own, extras=args.extras_allowed)
    args = parser.parse_args(argv)
    args.extras = extras
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status.

    0: success; 1: a data error (an :class:`~xldensf.errors.XLDEnSFError` or an unreadable
    or unwritable file), reported as one line on standard error without a traceback;
    usage errors exit with status 2 (``SystemExit`` from :mod:`argparse`).
    """
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    with _package_logging(args.verbose):
        try:
            if args.config is not None or args.set:
                args = _configured(parser, args, argv)
            missing = [name for name in args.required if getattr(args, name) is None]
            if missing:
                args.subparser.error("the following settings are required: " + ", ".join(
                    f"--{name}" for name in missing) + " (or in --config / --set)")
            args.handler(args)
        except (XLDEnSFError, OSError) as err:
            message = " ".join(line.strip() for line in str(err).splitlines())
            print(f"xldensf: error: {message}", file=sys.stderr)
            logger.debug("the error's traceback", exc_info=True)
            return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
