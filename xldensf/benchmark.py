"""Moved to :mod:`xldensf.experiments` (kept so that old imports keep working).

``from xldensf.benchmark import run_benchmark`` still works; new code imports from
:mod:`xldensf.experiments`. The project's acceptance targets are no longer computed by the
package (``docs/benchmarks.md``, "Targets").

Examples
--------
>>> from xldensf.benchmark import regular_station_count
>>> regular_station_count((150, 150))   # the paper's 10 x 10
100
"""

from .experiments import (
    ANOMALY_VARIABLES,
    BENCHMARK_CASES,
    LETKF_RADIUS,
    METHODS,
    PAPER_DENSITY,
    SETTINGS,
    TRUTH_SEED_OFFSET,
    UNSEEN_LAYOUT_SEED_OFFSET,
    BenchmarkSetting,
    markdown_report,
    prediction_step_seconds,
    regular_station_count,
    run_benchmark,
    scored_variables,
    shipped_model_path,
)

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
    "markdown_report",
    "prediction_step_seconds",
    "regular_station_count",
    "run_benchmark",
    "scored_variables",
    "shipped_model_path",
]
