"""The ``xldensf`` command line: ``xldensf simulate|train|demo|benchmark ...``.

The only module of the package that prints: the library returns values and logs progress
through :mod:`logging` (loggers under ``xldensf``); while a command runs, those messages of
level INFO and above go to standard error.

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

from . import __version__
from .errors import XLDEnSFError

__all__ = ["main"]


def _simulate(args: argparse.Namespace) -> None:
    from .io import write_netcdf
    from .simulators import simulate

    dataset = simulate(args.case, runs=args.runs, seed=args.seed, preset=args.preset,
                       dtype=args.dtype, device=args.device, progress=not args.quiet)
    write_netcdf(dataset, args.output)
    print(f"wrote {args.output}: {dict(dataset.sizes)}")


def _train(args: argparse.Namespace) -> None:
    from .simulators import simulate, simulator
    from .surrogate import fit

    runs = simulate(args.case, runs=args.runs, seed=args.seed, preset=args.preset,
                    dtype="float32", progress=not args.quiet)
    names = list(simulator(args.case, preset=args.preset).parameter_names)
    model = fit(runs, names, stations=args.stations, preset=args.preset, seed=args.seed,
                progress=not args.quiet)
    model.save(args.output)
    print(f"wrote {args.output}: LD-EnSF surrogate of {args.case} ({args.runs} runs, "
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``xldensf`` command."""
    from .simulators import CASES, PRESETS

    parser = argparse.ArgumentParser(prog="xldensf", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"xldensf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    simulate = commands.add_parser("simulate", help="run a full-order simulator to netCDF")
    simulate.add_argument("case", choices=sorted(CASES))
    simulate.add_argument("--preset", choices=PRESETS, default="small")
    simulate.add_argument("--runs", type=int, default=1)
    simulate.add_argument("--seed", type=int, default=None)
    simulate.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    simulate.add_argument("--device", default=None)
    simulate.add_argument("--output", "-o", required=True, help="netCDF file to write")
    simulate.add_argument("--quiet", action="store_true", help="no progress bars")
    simulate.set_defaults(handler=_simulate)

    train = commands.add_parser("train", help="simulate runs and train a latent surrogate")
    train.add_argument("case", choices=sorted(CASES))
    train.add_argument("--preset", choices=PRESETS, default="small")
    train.add_argument("--runs", type=int, default=60)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--stations", type=int, default=None,
                       help="station count for the encoder (e.g. 100), default: no encoder")
    train.add_argument("--output", "-o", required=True, help="model file to write")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(handler=_train)

    demo = commands.add_parser("demo", help="the built-in demonstration (small tsunami)")
    demo.add_argument("--output", "-o", default="out", help="directory for netCDF and PNG")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(handler=_demo)

    from .experiments.settings import BENCHMARK_CASES, METHODS

    benchmark = commands.add_parser(
        "benchmark", help="LD-EnSF against EnSF, EnKF and LETKF on held-out truths")
    benchmark.add_argument("case", choices=sorted(BENCHMARK_CASES))
    benchmark.add_argument("--quick", action="store_true",
                           help="small presets, 3 truths: minutes on a CPU (default: the "
                                "paper setting, which needs a surrogate trained on a GPU)")
    benchmark.add_argument("--truths", type=int, default=None, help="held-out truths")
    benchmark.add_argument("--members", type=int, default=None, help="ensemble size")
    benchmark.add_argument("--methods", nargs="+", choices=METHODS, default=None)
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
    return parser


class _StderrHandler(logging.Handler):
    """Log records as plain lines on the current ``sys.stderr`` (looked up at each record,
    so that a redirected stream is honoured)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr)


@contextlib.contextmanager
def _package_logging() -> Iterator[None]:
    """Show the package's INFO messages on standard error while a command runs."""
    logger = logging.getLogger("xldensf")
    handler = _StderrHandler()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (2 for xldensf errors)."""
    args = build_parser().parse_args(argv)
    try:
        with _package_logging():
            args.handler(args)
    except XLDEnSFError as err:
        print(f"xldensf: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
