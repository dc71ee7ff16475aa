"""Experiments built on the package: the LD-EnSF benchmark and the demo.

Nothing in the core imports this package; the command line (``xldensf benchmark``,
``xldensf demo``) does, and prints what these functions return.

- :mod:`~xldensf.experiments.settings`: the cases x filter settings tables, citing their
  sources and the numbers they are expected to reproduce;
- :mod:`~xldensf.experiments.benchmark`: :func:`run_benchmark` (orchestration, scoring;
  progress through ``logging``);
- :mod:`~xldensf.experiments.truths`: :func:`benchmark_truths`, the benchmark's held-out
  truths, layouts and models (:class:`BenchmarkTruths`, :class:`BenchmarkTruth`), for
  scripts that run their own variant of a method on them;
- :mod:`~xldensf.experiments.report`: :func:`markdown_report` and the JSON/markdown files;
- :mod:`~xldensf.experiments.demo`: :func:`run_demo` and its table :func:`demo_report`.

Examples
--------
>>> from xldensf.experiments import SETTINGS, regular_station_count
>>> SETTINGS["quick"].truths
5
>>> regular_station_count((64, 64))
16
"""

from .benchmark import prediction_step_seconds, run_benchmark, scored_variables, summarize_runs
from .demo import demo_report, run_demo
from .report import markdown_report, report_paths, write_report
from .settings import (
    ANOMALY_VARIABLES,
    BENCHMARK_CASES,
    LETKF_RADIUS,
    METHODS,
    PAPER_DENSITY,
    SETTINGS,
    TRUTH_SEED_OFFSET,
    UNSEEN_LAYOUT_SEED_OFFSET,
    BenchmarkSetting,
    regular_station_count,
    shipped_model_path,
)
from .truths import BenchmarkTruth, BenchmarkTruths, benchmark_truths, resolve_setting

__all__ = [
    "ANOMALY_VARIABLES",
    "BENCHMARK_CASES",
    "LETKF_RADIUS",
    "METHODS",
    "PAPER_DENSITY",
    "SETTINGS",
    "TRUTH_SEED_OFFSET",
    "UNSEEN_LAYOUT_SEED_OFFSET",
    "BenchmarkSetting",
    "BenchmarkTruth",
    "BenchmarkTruths",
    "benchmark_truths",
    "demo_report",
    "markdown_report",
    "prediction_step_seconds",
    "regular_station_count",
    "report_paths",
    "resolve_setting",
    "run_benchmark",
    "run_demo",
    "scored_variables",
    "shipped_model_path",
    "summarize_runs",
    "write_report",
]
