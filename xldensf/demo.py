"""The built-in demonstration run by ``make demo`` / ``xldensf demo``.

The whole pipeline on the small tsunami preset: simulate a truth, observe it with 10% noise
at the 4 x 4 stations (0.39% of the grid) that the shipped surrogate's observation encoder
was trained for, assimilate with LD-EnSF (the latent surrogate shipped in
``xldensf/data/models``, encoder likelihood as in the paper) and with the full-space LETKF on
the same observations, print a table of errors and times, and write the truth and the
LD-EnSF analysis as netCDF and a figure as PNG. (On other layouts LD-EnSF uses the decoder
likelihood, which tracks this surrogate less well: ``docs/ldensf.md``.)

The shipped surrogate is regenerated with one command::

    xldensf train tsunami --preset small --runs 60 --seed 0 --stations 16 \\
        -o xldensf/data/models/tsunami_small.ldensf

(``--stations 16`` also trains the observation encoder for a regular 4 x 4 layout, 0.39 %
of the grid, used by the demo and by ``xldensf benchmark tsunami --quick``.)
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .io import atomic_path, write_netcdf
from .metrics import relative_rmse
from .simulators import simulate, simulator

__all__ = ["run_demo", "shipped_model_path"]


def shipped_model_path() -> Path:
    """Path of the small tsunami surrogate shipped with the package."""
    return Path(str(resources.files("xldensf") / "data" / "models" / "tsunami_small.ldensf"))


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
        Paths written and one row of scores and timings per method.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .latent_assimilation import encoder_layout
    from .plot import plot_analysis
    from .surrogate import load_model

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    truth = simulate("tsunami", runs=1, seed=1000 + seed, preset="small",
                     progress=progress).isel(run=0)
    truth_path = write_netcdf(truth, output / "tsunami_truth.nc")
    surrogate = load_model(shipped_model_path())
    observations = truth.ldensf.observe(stations=encoder_layout(surrogate), noise=0.1,
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
        full_model, method="letkf", members=members, seed=seed, inflation=1.05,
        localization=150e3, progress=progress)
    rows.append(_summary("LETKF (full model)", analyses["LETKF"], truth,
                         time.perf_counter() - start, widths))

    analysis_path = write_netcdf(analyses["LD-EnSF"], output / "ldensf_analysis.nc")
    figure = plot_analysis(analyses["LD-EnSF"], truth, ["eta", "u"])
    figure_path = output / "ldensf_analysis.png"
    with atomic_path(figure_path) as temporary:
        figure.savefig(temporary, dpi=90, format="png")
    plt.close(figure)

    print(f"\nxldensf demo: small tsunami, {n_stations} stations "
          f"({100 * n_stations / grid_points:.2f}% of the grid), "
          f"10% noise, {members} members")
    header = ("method", "eta final", "eta mean", "u final", "v final", "x0 err", "y0 err",
              "s/cycle")
    print("  " + " | ".join(f"{h:>18}" if i == 0 else f"{h:>9}" for i, h in enumerate(header)))
    for row in rows:
        cells = [row["eta_final"], row["eta_mean"], row["u_final"], row["v_final"],
                 row["x0_error"], row["y0_error"], row["seconds_per_cycle"]]
        print("  " + f"{row['method']:>18} | " + " | ".join(f"{c:9.3f}" for c in cells))
    print("  (relative RMSE of the ensemble mean; parameter errors as fractions of the "
          "prior range)")
    print(f"  wrote {truth_path}, {analysis_path} and {figure_path}")
    return {"truth": str(truth_path), "analysis": str(analysis_path),
            "figure": str(figure_path), "rows": rows,
            "stations_fraction": n_stations / grid_points}
