"""The built-in demonstration run by ``make demo`` / ``xldensf demo``.

It simulates the small tsunami preset, writes the run as netCDF and draws a figure of the
sea-surface elevation as PNG. Later stages (observation, LD-EnSF assimilation, baselines)
extend this script as they land.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .io import atomic_path, write_netcdf
from .simulators import simulate

__all__ = ["run_demo"]


def run_demo(output: str | Path = "out", *, seed: int = 0, progress: bool = True) -> dict:
    """Run the demo and return a summary; files go to ``output``.

    Parameters
    ----------
    output
        Directory for ``tsunami_truth.nc`` and ``tsunami_truth.png`` (created if needed).
    seed
        Seed of the bump position.
    progress
        Show progress bars.

    Returns
    -------
    dict
        Paths written and timings (seconds).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    truth = simulate("tsunami", runs=1, seed=seed, preset="small", progress=progress)
    simulate_seconds = time.perf_counter() - start
    netcdf_path = write_netcdf(truth, output / "tsunami_truth.nc")

    run = truth.isel(run=0)
    frames = np.linspace(0, run.sizes["time"] - 1, 4).astype(int)
    figure, axes = plt.subplots(1, 4, figsize=(16, 4), constrained_layout=True)
    limit = float(abs(run["eta"]).max())
    for axis, frame in zip(axes, frames):
        field = run["eta"].isel(time=frame)
        image = axis.pcolormesh(run["x"] / 1e3, run["y"] / 1e3, field, cmap="RdBu_r",
                                vmin=-limit, vmax=limit, shading="auto")
        axis.set_title(f"t = {float(run['time'][frame]) / 3600:.1f} h")
        axis.set_xlabel("x [km]")
        axis.set_aspect("equal")
    axes[0].set_ylabel("y [km]")
    figure.colorbar(image, ax=axes, label="sea surface elevation eta [m]")
    figure_path = output / "tsunami_truth.png"
    with atomic_path(figure_path) as temporary:
        figure.savefig(temporary, dpi=100, format="png")
    plt.close(figure)

    summary = {
        "netcdf": str(netcdf_path),
        "figure": str(figure_path),
        "simulate_seconds": simulate_seconds,
        "bump_centre_km": (float(run["x0"]) / 1e3, float(run["y0"]) / 1e3),
    }
    print(f"xldensf demo: simulated the small tsunami in {simulate_seconds:.1f} s "
          f"(bump centre {summary['bump_centre_km'][0]:.0f} km, "
          f"{summary['bump_centre_km'][1]:.0f} km)")
    print(f"  wrote {netcdf_path} and {figure_path}")
    return summary
