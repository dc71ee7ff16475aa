"""latent-envar's spread calibrations on the quick tsunami benchmark (issue #15).

Runs :func:`xldensf.experiments.run_benchmark` (``xldensf benchmark tsunami --quick --truths 5
--methods latent-envar``: the benchmark's truths, unseen layout, seeds and scores) once per
calibration of the window's analysis spread (``calibration=`` of ``method="latent-envar"``,
:func:`xldensf.filters.envar.calibration_factor`), one process per row so that rows can run
side by side, and merges their JSON into ``benchmarks/results/latent_envar_calibration.{json,md}``.

Run::

    OMP_NUM_THREADS=1 python benchmarks/latent_envar_calibration.py --row none --output out/none
    OMP_NUM_THREADS=1 python benchmarks/latent_envar_calibration.py --row model-error \\
        --output out/model-error
    python benchmarks/latent_envar_calibration.py --merge none=out/none model-error=out/model-error

``--twin``: a perfect linear model (10 components, a slowly decaying rotation, 48 or 9
random observations per time at noise 0.1, windows of 5, 50 members, inflation 1.1, 50
times, 4 seeds), each calibration's spread/skill of the state against the truth from the
6th time (the model is perfect: a calibration should leave it near the uncalibrated one).

A row ``NAME=DIR`` of ``--merge`` reads ``DIR/ldensf_tsunami_quick.json`` (a run of
``--row``, or of ``run_benchmark`` with ``filter_settings={"latent-envar":
{"calibration": ...}}``), ``NAME=FILE.json`` that file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from xldensf.experiments import run_benchmark
from xldensf.filters.envar import ENVAR_CALIBRATIONS, envar


def run_row(calibration: str, output: str, truths: int) -> None:
    """One row: the quick tsunami benchmark, latent-envar only, with ``calibration``."""
    torch.set_num_threads(1)
    run_benchmark("tsunami", quick=True, truths=truths, methods=["latent-envar"],
                  output=output, progress=False,
                  filter_settings={"latent-envar": {"calibration": calibration}})


def _row(path: Path) -> dict:
    """The means and per-truth numbers of latent-envar in one benchmark JSON."""
    result = json.loads(path.read_text())
    runs = result["methods"]["latent-envar"]["runs"]
    summary = result["methods"]["latent-envar"]["summary"]

    def per_truth(record: dict) -> dict:
        row = {"eta_final": record["final"]["eta"], "eta_mean": record["mean"]["eta"],
               "spread_skill_eta": record["spread_skill"]["eta"],
               "spread_skill": float(np.mean(list(record["spread_skill"].values()))),
               "parameter_error": record["parameter_error"],
               "call_seconds": record["call_seconds"]}
        for name in ("variance_factor", "calibration_factor"):
            if name in record:  # one value per observation time: its window's
                row[f"{name}_median"] = float(np.median(record[name]))
        return row

    truths = [per_truth(record) for record in runs]
    means = {key: float(np.mean([row[key] for row in truths])) for key in truths[0]
             if key != "parameter_error"}
    means["parameter_error"] = {name: float(np.mean([row["parameter_error"][name]
                                                     for row in truths]))
                                for name in truths[0]["parameter_error"]}
    means["final_all"] = summary["final"]
    return {"settings": result["filter_settings"]["latent-envar"], "truths": truths,
            "mean": means}


def merge(rows: list[str], output: Path) -> None:
    """``NAME=DIR`` rows into ``latent_envar_calibration.{json,md}`` under ``output``."""
    table = {}
    for item in rows:
        name, where = item.split("=", 1)
        path = Path(where)
        table[name] = _row(path if path.suffix == ".json" else path / "ldensf_tsunami_quick.json")
    output.mkdir(parents=True, exist_ok=True)
    (output / "latent_envar_calibration.json").write_text(json.dumps(table, indent=1))
    lines = ["# latent-envar spread calibration: quick tsunami benchmark, 5 truths", "",
             "`run_benchmark('tsunami', quick=True, truths=5, methods=['latent-envar'], "
             "filter_settings={'latent-envar': {'calibration': NAME}})` (= `xldensf "
             "benchmark tsunami --quick --truths 5 --threads 1 --methods latent-envar` with "
             "the calibration set; `benchmarks/latent_envar_calibration.py`); 50 members, "
             "window 5, 5 Gauss-Newton iterations, inflation 1.1; the unseen 16-station layout, "
             "10 % noise, all 50 members scored on the grid at every frame. Spread/skill: mean "
             "over frames, then over u, v, eta (as the benchmark table) and of eta alone. "
             "Factors: the median over observation times of the window's a-posteriori variance "
             "factor 2 J_min / m and of the factor applied.", "",
             "| calibration | eta final (truths 0-4) | eta final mean | eta time mean | "
             "x0 / y0 err | spread/skill (all / eta) | 2J/m median | applied median | "
             "call s |", "|---|---|---|---|---|---|---|---|---|"]
    for name, row in table.items():
        mean = row["mean"]
        finals = " / ".join(f"{truth['eta_final']:.3f}" for truth in row["truths"])
        errors = " / ".join(f"{value:.4f}" for value in mean["parameter_error"].values())
        factors = [f"{mean[key]:.2f}" if key in mean else "-"
                   for key in ("variance_factor_median", "calibration_factor_median")]
        lines.append(f"| {name} | {finals} | {mean['eta_final']:.4f} | {mean['eta_mean']:.4f} "
                     f"| {errors} | {mean['spread_skill']:.3f} / "
                     f"{mean['spread_skill_eta']:.3f} | {factors[0]} | {factors[1]} | "
                     f"{mean['call_seconds']:.1f} |")
    (output / "latent_envar_calibration.md").write_text("\n".join(lines) + "\n")


def twin(per_time: int, seeds: int = 4, n: int = 10, times: int = 50) -> dict:
    """Spread/skill and applied factors of each calibration in the perfect linear twin."""
    sums = {name: [0.0, 0.0, []] for name in ENVAR_CALIBRATIONS}
    for seed in range(seeds):
        generator = torch.Generator().manual_seed(seed)
        rotation, _ = torch.linalg.qr(torch.randn(n, n, generator=generator,
                                                  dtype=torch.float64))
        propagator = 0.99 * rotation
        operator = 0.1 * torch.randn(per_time, n, generator=generator, dtype=torch.float64)
        state, truth = torch.randn(n, generator=generator, dtype=torch.float64), []
        for _ in range(times):
            state = propagator @ state
            truth.append(state)
        truth = torch.stack(truth)
        values = truth @ operator.T + 0.1 * torch.randn(times, per_time, generator=generator,
                                                         dtype=torch.float64)
        background = torch.randn(50, n, generator=generator, dtype=torch.float64)
        for name, total in sums.items():
            result = envar(
                lambda x, t, d, m=propagator: x @ torch.linalg.matrix_power(m, round(d)).T,
                lambda x, i, h=operator: x @ h.T, background, 0.0, torch.arange(1.0, times + 1),
                values, 0.1, window=5, calibration=name, inflation=1.1,
                generator=torch.Generator().manual_seed(seed))
            error = (result.analysis.mean(1) - truth).square().mean(-1).sqrt()
            total[0] += float(result.analysis.var(1).mean(-1).sqrt()[5:].mean())
            total[1] += float(error[5:].mean())
            total[2] += result.calibration[::5].tolist()
    return {name: {"spread_skill": total[0] / total[1],
                   "applied_mean": float(np.mean(total[2]))}
            for name, total in sums.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--row", default=None, help="calibration of the row to run")
    parser.add_argument("--truths", type=int, default=5)
    parser.add_argument("--merge", nargs="*", default=None, metavar="NAME=DIR",
                        help="rows to merge into the report")
    parser.add_argument("--twin", action="store_true", help="the perfect linear twin")
    parser.add_argument("--output", default="benchmarks/results")
    args = parser.parse_args()
    if args.twin:
        print(json.dumps({f"m per window {5 * per_time}": twin(per_time)
                          for per_time in (48, 9)}, indent=1))
    if args.row is not None:
        run_row(args.row, args.output, args.truths)
    if args.merge:
        merge(args.merge, Path(args.output))


if __name__ == "__main__":
    main()
