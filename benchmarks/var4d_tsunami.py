"""4D-Var with the full model on the small tsunami, the source position in the control.

The quick setting of the LD-EnSF benchmark (``benchmarks/results/ldensf_tsunami_quick.md``):
the held-out truths ``1000 + seed + i`` of the small preset over the surrogate's 51
frames, the 16 random stations of the shipped surrogate's encoder layout, 10 % noise
(stations and noise seeded ``seed + i``), scored with the same metrics (relative RMSE of
the ensemble mean, parameter error as a fraction of the prior range, spread/skill).

4D-Var: ``obs.ldensf.assimilate(xl.simulator("tsunami", preset="small"),
method="4dvar", initial_state_parameters=True, ...)``: the source position ``x0, y0``
sets the initial bump, so it enters the control vector through the initial state; its
background is the centre of the prior range with the prior's standard deviation
(climatological ``B`` of the parameters), the fields have no state correction
(``background_std=0``: the control is ``x0, y0`` alone, the strong constraint). The
window spans every observation time (``window = 51``): each window starts at t = 0 and
fits its newest observation time, the background being the previous window's optimum
(DAPPER's ``Var4D`` cycling), so every observation time has an analysis, each the model
run from the current estimate. Gauss-Newton with the Jacobian by forward mode (two
tangents per member), ``max_iter`` iterations per window. ``--members N`` runs the
randomised-maximum-likelihood ensemble batched through the simulator.

Model runs are counted in member-intervals (one member advanced over one observation
interval, 8 time steps): those carrying tangents (the Jacobian) and plain forecasts.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/var4d_tsunami.py --truths 3 \\
        --members 1 8

``--frames F`` assimilates only the first F frames (the cost grows with the square of the
number of frames: window k runs the model over k intervals); ``--truth-indices`` runs a
subset of the truths and ``--merge A.json B.json`` combines runs into one table.

Results go to ``benchmarks/results/var4d_tsunami.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.autograd import forward_ad

import xldensf as xl
from xldensf.assimilation import encoder_layout
from xldensf.experiments import SETTINGS, TRUTH_SEED_OFFSET, shipped_model_path
from xldensf.metrics import parameter_error, relative_rmse, spread_skill_ratio
from xldensf.surrogate import load_model

RESULTS = Path(__file__).parent / "results"
VARIABLES = ["u", "v", "eta"]


class CountingTsunami:
    """Wraps a simulator's ``advance`` to count member-intervals, split into runs that
    carry forward-mode tangents or an autograd graph (gradient runs) and plain runs."""

    def __init__(self, model: Any, interval: float):
        self.model, self.interval = model, interval
        self.counts = {"gradient": 0.0, "forward": 0.0}
        self._advance = model.advance
        model.advance = self.advance

    def advance(self, state: torch.Tensor, params: torch.Tensor, t0: float,
                duration: float) -> torch.Tensor:
        tangent = forward_ad.unpack_dual(state).tangent
        kind = "gradient" if tangent is not None or state.requires_grad else "forward"
        self.counts[kind] += len(state) * duration / self.interval
        return self._advance(state, params, t0, duration)


def run_truth(index: int, members: int, max_iter: int, tol: float, seed: int,
              frames: int | None = None) -> dict[str, Any]:
    """One truth: the 4D-Var analysis scored like the quick benchmark (over its first
    ``frames`` frames when given)."""
    setting = SETTINGS["quick"]
    surrogate = load_model(shipped_model_path("tsunami", setting.preset))
    frames = len(surrogate.metadata.times)
    truth = xl.simulate("tsunami", runs=1, seed=TRUTH_SEED_OFFSET + seed + index,
                        preset=setting.preset, n_outputs=frames, progress=False).isel(run=0)
    observations = truth.ldensf.observe(stations=encoder_layout(surrogate),
                                        noise=setting.noise, seed=seed + index)
    if frames is not None and frames < truth.sizes["time"]:
        truth, observations = truth.isel(time=slice(0, frames)), observations.isel(
            time=slice(0, frames))
    model = xl.simulator("tsunami", preset=setting.preset)
    interval = float(truth.time[1] - truth.time[0])
    counter = CountingTsunami(model, interval)
    widths = {spec.name: spec.prior_high - spec.prior_low for spec in model.parameter_specs}
    start = time.perf_counter()
    analysis = observations.ldensf.assimilate(
        model, method="4dvar", members=members, seed=seed + index, progress=False,
        window=truth.sizes["time"], shift=1, background_std=0.0, initial_state_parameters=True,
        optimizer="gauss-newton", max_iter=max_iter, tol=tol)
    seconds = time.perf_counter() - start
    relative = relative_rmse(analysis, truth, VARIABLES)
    errors = parameter_error(analysis, truth, list(widths), ranges=widths)
    record: dict[str, Any] = {
        "truth": index,
        "truth_parameters": {name: float(truth[name]) for name in widths},
        "members": members,
        "frames": int(truth.sizes["time"]),
        "stations": int(observations.sizes["station"]),
        "relative_rmse": {name: relative[name].values.tolist() for name in VARIABLES},
        "final": {name: float(relative[name].values[-1]) for name in VARIABLES},
        "mean": {name: float(np.mean(relative[name].values[1:])) for name in VARIABLES},
        "parameter_error": {name: float(errors[name].values[-1]) for name in widths},
        "parameter_error_over_time": {name: errors[name].values.tolist() for name in widths},
        "seconds": seconds,
        "windows": int(analysis.sizes["time"]),
        "seconds_per_window": seconds / analysis.sizes["time"],
        "member_intervals": counter.counts,
        "iterations_mean": float(analysis["iterations"].mean()),
    }
    if members > 1:
        ratio = spread_skill_ratio(analysis, truth, VARIABLES)
        record["spread_skill"] = {name: float(np.nanmean(ratio[name].values[1:]))
                                  for name in VARIABLES}
    return record


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the truths."""
    def mean(key: str) -> dict[str, float]:
        return {name: float(np.mean([r[key][name] for r in records]))
                for name in records[0][key]}
    summary = {"final": mean("final"), "mean": mean("mean"),
               "parameter_error": mean("parameter_error"),
               "seconds": float(np.mean([r["seconds"] for r in records])),
               "seconds_per_window": float(np.mean([r["seconds_per_window"] for r in records])),
               "member_intervals": mean("member_intervals"),
               "eta_over_time": np.mean([r["relative_rmse"]["eta"] for r in records],
                                        axis=0).tolist()}
    if "spread_skill" in records[0]:
        summary["spread_skill"] = mean("spread_skill")
    return summary


def markdown(results: dict[str, Any]) -> str:
    """The results table."""
    lines = ["# 4D-Var with the full model: tsunami, quick setting", "",
             f"Command: `{results['command']}`", "", results["description"], "",
             "| configuration | truths | u final | v final | eta final | u mean | v mean | "
             "eta mean | x0 err | y0 err | spread/skill (eta) | s/window | total s | "
             "gradient member-intervals | forecast member-intervals |",
             "|" + "---|" * 15]
    for label, entry in results["configurations"].items():
        s = entry["summary"]
        ratio = s.get("spread_skill", {}).get("eta")
        lines.append(
            f"| {label} | {len(entry['records'])} | " + " | ".join(
                f"{s['final'][n]:.4f}" for n in VARIABLES) + " | " + " | ".join(
                f"{s['mean'][n]:.4f}" for n in VARIABLES) + " | "
            f"{s['parameter_error']['x0']:.4f} | {s['parameter_error']['y0']:.4f} | "
            f"{'-' if ratio is None else f'{ratio:.3f}'} | {s['seconds_per_window']:.3g} | "
            f"{s['seconds']:.4g} | {s['member_intervals']['gradient']:.4g} | "
            f"{s['member_intervals']['forward']:.4g} |")
    frames = [1, 13, 26, 38, 50]
    lines += ["", "Relative RMSE of eta over time (mean over truths):", "",
              "| configuration | " + " | ".join(f"frame {f}" for f in frames) + " |",
              "|" + "---|" * (len(frames) + 1)]
    for label, entry in results["configurations"].items():
        eta = entry["summary"]["eta_over_time"]
        lines.append(f"| {label} | " + " | ".join(
            f"{eta[f]:.4f}" if f < len(eta) else "-" for f in frames) + " |")
    lines += ["", f"xldensf {xl.__version__}; torch {torch.__version__}; "
              f"{results['threads']} thread(s)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--truths", type=int, default=SETTINGS["quick"].truths)
    parser.add_argument("--members", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-iter", type=int, default=10)
    parser.add_argument("--tol", type=float, default=1e-6,
                        help="Gauss-Newton stops when |dv|^2 < tol * 2 (v in prior stds)")
    parser.add_argument("--truth-indices", type=int, nargs="+", default=None,
                        help="run only these truths (default 0 .. truths-1)")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="combine the configurations of these result JSONs instead")
    parser.add_argument("--frames", type=int, default=None,
                        help="assimilate only the first FRAMES frames (default all 51)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS / "var4d_tsunami")
    parser.add_argument("--command", default=None, help="command recorded in the results")
    args = parser.parse_args()
    configurations: dict[str, Any] = {}
    for path in args.merge or []:
        for label, entry in json.loads(path.read_text())["configurations"].items():
            records = configurations.get(label, {"records": []})["records"] + entry["records"]
            configurations[label] = {"records": records, "summary": summarize(records)}
    if args.merge:
        write(args, configurations)
        return
    for members in args.members:
        label = "4dvar" if members == 1 else f"4dvar RML {members} members"
        if args.frames:
            label += f", frames 0-{args.frames - 1}"
        records = []
        for index in args.truth_indices or range(args.truths):
            records.append(run_truth(index, members, args.max_iter, args.tol, args.seed,
                                     args.frames))
            configurations[label] = {"records": records, "summary": summarize(records)}
            write(args, configurations)  # after every truth: a partial run keeps its numbers


def write(args: argparse.Namespace, configurations: dict[str, Any]) -> None:
    """The results JSON and Markdown table."""
    results = {
        "command": args.command or (
            "OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/var4d_tsunami.py "
            f"--truths {args.truths} --members {' '.join(map(str, args.members))}"),
        "description": (
            "Small tsunami (64 x 64), truths 1000 + i, the 16 random stations of the shipped "
            "surrogate's encoder layout (u, v, eta observed), 10 % noise, as the quick "
            "LD-EnSF benchmark. Control: the source position x0, y0 through the initial "
            "state (background the prior centre, B its prior variance), no state "
            "correction; windows from t = 0 to every observation time, Gauss-Newton with "
            f"at most {args.max_iter} iterations per window, tol {args.tol:g} "
            "(Jacobian by forward mode). "
            "Errors: relative RMSE of the ensemble mean at the last frame and averaged over "
            "frames 1..50; x0/y0 error as a fraction of the prior range; wall time per "
            "window (one per observation time) and per truth; model runs in "
            "member-intervals (one member over one observation interval, 8 steps), with "
            "tangents (Jacobian) and plain."),
        "threads": torch.get_num_threads(),
        "max_iter": args.max_iter,
        "tol": args.tol,
        "seed": args.seed,
        "configurations": configurations,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(results, indent=1))
    args.output.with_suffix(".md").write_text(markdown(results))


if __name__ == "__main__":
    main()
