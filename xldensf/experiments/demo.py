"""The built-in demonstration run by ``make demo`` / ``xldensf demo``.

The whole pipeline on the small tsunami preset: simulate a truth, observe it with 10% noise
at the regular 4 x 4 stations that the shipped surrogate's observation encoder was trained
for, assimilate with LD-EnSF (the latent surrogate shipped in ``xldensf/data/models``, its
default analysis: the decoder at the stations, which works on any layout) and with the
full-space LETKF on the same observations, score both, and write the truth and the LD-EnSF
analysis as netCDF and a figure as PNG. :func:`run_demo` returns the scores;
:func:`demo_report` formats them as the table that ``xldensf demo`` prints
(``docs/ldensf.md`` explains the default).

The shipped surrogate is regenerated with one command::

    xldensf train tsunami --preset small --runs 60 --seed 0 --stations 16 \\
        -o xldensf/data/models/tsunami_small.ldensf

(``--stations 16`` also trains the observation encoder for a regular 4 x 4 layout, used by
the demo and by ``xldensf benchmark tsunami --quick``.)

Examples
--------
>>> from xldensf.experiments import demo_report, run_demo
>>> callable(run_demo) and callable(demo_report)
True
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..assimilation import encoder_layout
from ..errors import ConfigurationError, expected_found
from ..io import atomic_path, write_netcdf
from ..metrics import relative_rmse
from ..plot import plot_analysis
from ..simulators import simulate, simulator
from ..surrogate import load_model
from .settings import BENCHMARK_CASES, TRUTH_SEED_OFFSET, shipped_model_path

__all__ = ["run_demo", "demo_report"]

#: Relative observation noise of the demo (the paper's 10 %).
DEMO_NOISE = 0.1


def _summary(name: str, analysis: xr.Dataset, truth: xr.Dataset, seconds: float,
             widths: dict[str, float]) -> dict[str, Any]:
    score = relative_rmse(analysis, truth, ["u", "v", "eta"])
    cycles = analysis.sizes["time"]
    row: dict[str, Any] = {"method": name, "seconds_per_cycle": seconds / cycles}
    for variable in ("eta", "u", "v"):
        row[f"{variable}_final"] = float(score[variable].isel(time=-1))
        row[f"{variable}_mean"] = float(score[variable].isel(time=slice(1, None)).mean())
    for parameter, width in widths.items():
        estimate = float(analysis[parameter].isel(time=-1).mean("member"))
        row[f"{parameter}_error"] = abs(estimate - float(truth[parameter])) / width
    return row


def _write_figure(analysis: xr.Dataset, truth: xr.Dataset, path: Path) -> Path:
    """The LD-EnSF analysis against the truth as PNG (matplotlib without a display)."""
    import matplotlib  # function level: the Agg backend must be chosen before pyplot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plot_analysis(analysis, truth, ["eta", "u"])
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=90, format="png")
    plt.close(figure)
    return path


def run_demo(output: str | Path = "out", *, seed: int = 0, members: int = 20,
             progress: bool = True) -> dict[str, Any]:
    """Run the demo and return its summary; files go to ``output``.

    Parameters
    ----------
    output
        Directory for ``tsunami_truth.nc``, ``ldensf_analysis.nc`` and
        ``ldensf_analysis.png`` (created if needed).
    seed
        Seed of the truth's bump position, the observation noise and the filters.
    members
        Ensemble size of both filters.
    progress
        Show progress bars.

    Returns
    -------
    dict
        Paths written (``truth``, ``analysis``, ``figure``), one row of scores and timings
        per method (``rows``), the number of ``stations``, their ``stations_fraction`` of
        the grid, the ``noise`` and the ``members``; :func:`demo_report` formats it.

    Raises
    ------
    ConfigurationError
        The package ships no small tsunami surrogate (a broken installation).

    Examples
    --------
    >>> summary = run_demo("out", progress=False)  # doctest: +SKIP
    >>> [row["method"] for row in summary["rows"]]  # doctest: +SKIP
    ['LD-EnSF (latent)', 'LETKF (full model)']
    """
    model_path = shipped_model_path("tsunami", "small")
    if model_path is None:
        raise ConfigurationError(expected_found(
            "the shipped surrogate xldensf/data/models/tsunami_small.ldensf", "a file",
            "none"))
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    truth = simulate("tsunami", runs=1, seed=TRUTH_SEED_OFFSET + seed, preset="small",
                     progress=progress).isel(run=0)
    truth_path = write_netcdf(truth, output / "tsunami_truth.nc")
    surrogate = load_model(model_path)
    observations = truth.ldensf.observe(stations=encoder_layout(surrogate), noise=DEMO_NOISE,
                                        seed=seed)
    n_stations = observations.sizes["station"]
    grid_points = float(np.prod(truth["eta"].shape[1:]))
    full_model = simulator("tsunami", preset="small", progress=False)
    widths = {spec.name: spec.prior_high - spec.prior_low
              for spec in full_model.parameter_specs}

    rows, analyses = [], {}
    start = time.perf_counter()
    analyses["LD-EnSF"] = observations.ldensf.assimilate(surrogate, members=members, seed=seed,
                                                         progress=progress)
    rows.append(_summary("LD-EnSF (latent)", analyses["LD-EnSF"], truth,
                         time.perf_counter() - start, widths))
    start = time.perf_counter()
    analyses["LETKF"] = observations.ldensf.assimilate(
        full_model, method="letkf", members=members, seed=seed, progress=progress,
        **BENCHMARK_CASES["tsunami"]["letkf"])
    rows.append(_summary("LETKF (full model)", analyses["LETKF"], truth,
                         time.perf_counter() - start, widths))

    analysis_path = write_netcdf(analyses["LD-EnSF"], output / "ldensf_analysis.nc")
    figure_path = _write_figure(analyses["LD-EnSF"], truth, output / "ldensf_analysis.png")
    return {"truth": str(truth_path), "analysis": str(analysis_path),
            "figure": str(figure_path), "rows": rows, "stations": int(n_stations),
            "stations_fraction": n_stations / grid_points, "noise": DEMO_NOISE,
            "members": members}


def demo_report(summary: dict[str, Any]) -> str:
    """The table of a :func:`run_demo` summary, as ``xldensf demo`` prints it.

    Parameters
    ----------
    summary
        The dict returned by :func:`run_demo`.

    Returns
    -------
    str
        A title line, one row per method (errors and seconds per cycle) and the files
        written.

    Examples
    --------
    >>> row = {"method": "LETKF (full model)", "eta_final": 0.3, "eta_mean": 0.4,
    ...        "u_final": 0.3, "v_final": 0.3, "x0_error": 0.1, "y0_error": 0.2,
    ...        "seconds_per_cycle": 0.5}
    >>> print(demo_report({"stations": 16, "stations_fraction": 16 / 4096, "noise": 0.1,
    ...     "members": 20, "rows": [row], "truth": "t.nc", "analysis": "a.nc",
    ...     "figure": "a.png"}).splitlines()[0])
    xldensf demo: small tsunami, 16 stations (0.39% of the grid), 10% noise, 20 members
    """
    lines = [f"xldensf demo: small tsunami, {summary['stations']} stations "
             f"({100 * summary['stations_fraction']:.2f}% of the grid), "
             f"{100 * summary['noise']:g}% noise, {summary['members']} members"]
    header = ("method", "eta final", "eta mean", "u final", "v final", "x0 err", "y0 err",
              "s/cycle")
    lines.append("  " + " | ".join(f"{h:>18}" if i == 0 else f"{h:>9}"
                                   for i, h in enumerate(header)))
    for row in summary["rows"]:
        cells = [row["eta_final"], row["eta_mean"], row["u_final"], row["v_final"],
                 row["x0_error"], row["y0_error"], row["seconds_per_cycle"]]
        lines.append("  " + f"{row['method']:>18} | " + " | ".join(f"{c:9.3f}" for c in cells))
    lines.append("  (relative RMSE of the ensemble mean; parameter errors as fractions of the "
                 "prior range)")
    lines.append(f"  wrote {summary['truth']}, {summary['analysis']} and {summary['figure']}")
    return "\n".join(lines)
