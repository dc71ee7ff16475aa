"""Full-space baselines for LD-EnSF: EnKF, LETKF and EnSF on the tsunami and atmosphere.

Project issue #3 section 5. The full-order simulators are the forecast models; the filters
estimate the augmented state ``[fields, parameters]`` from sparse noisy stations (10 %
noise, 20 members, the paper's density), as the latent LD-EnSF will do later:

- tsunami, ``small`` preset (64 x 64): a regular 10 x 10 layout (100 stations, 2.44 % of
  the grid) and a density-matched layout of 18 random stations (0.44 % of 4096 points, the
  paper's 10 x 10 on 150 x 150); observed ``u, v, eta`` at every frame (51 cycles);
- atmosphere, ``small`` preset (64 x 32): 8 random stations (0.39 % of 2048 points)
  observing ``h, u, v`` every 8 h (7 cycles);
- a probe of the tsunami ``paper`` preset (150 x 150, 10 x 10 = 0.44 %): the wall time of
  two cycles of each method, and a full run of the methods whose 51 cycles fit the budget.

Every method starts from the same prior ensemble (the case's parameter prior, ``--prior-seed``)
and every truth has its own seed. "free" is the no-assimilation reference: the same prior
ensemble run freely (an ETKF with an observation error of 1e6, i.e. no update); its mean
does not depend on the truth.

Recorded per truth, method and time: relative RMSE of the ensemble mean per variable
(cos-latitude weighted on the sphere), spread / skill (RMS ensemble spread over the RMSE of
the mean), the error of the posterior-mean parameters relative to the width of their prior
range, and the wall time per cycle (forecast + analysis). Results go to
``benchmarks/results/full_space_baselines.{json,md}``.

Usage::

    .venv/bin/python benchmarks/full_space_baselines.py            # full (about 20 min)
    .venv/bin/python benchmarks/full_space_baselines.py --quick --output /tmp/fsb
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

import xldensf as xl
from xldensf.errors import XLDEnSFError
from xldensf.experiments import BENCHMARK_CASES

RESULTS = Path(__file__).parent / "results"
MEMBERS, NOISE = 20, 0.1
#: Observation error standing for "no observation": the ETKF update is ~1e-12 of the spread.
FREE_RUN_OBS_ERROR = 1e6

#: Filter settings (the brief of issue #3 section 5; radii in metres): those of the LD-EnSF
#: benchmark, kept in one place.
METHODS = {case: BENCHMARK_CASES[case] for case in ("tsunami", "atmosphere")}

#: Experiments: case, preset, station layout, and the frames shown in the tables.
EXPERIMENTS = [
    {"name": "tsunami small 10x10", "case": "tsunami", "preset": "small", "stations": "10x10",
     "show_frames": [1, 5, 10, 25, 50]},
    {"name": "tsunami small 18 random", "case": "tsunami", "preset": "small", "stations": 18,
     "show_frames": [1, 5, 10, 25, 50]},
    {"name": "atmosphere small 8 random", "case": "atmosphere", "preset": "small",
     "stations": 8, "show_frames": [1, 2, 3, 4, 5, 6]},
]


# --- metrics (a later issue adds xldensf.metrics; keep this local until then) -------------

def area_weights(field: xr.DataArray) -> xr.DataArray:
    """Weights over the grid dims of ``field``: cos(latitude) on a lon-lat grid, else 1."""
    grid = field.isel({dim: 0 for dim in field.dims if dim in ("time", "member")}, drop=True)
    if "lat" in grid.dims:
        return np.cos(np.deg2rad(grid["lat"])).broadcast_like(grid)
    return xr.ones_like(grid)


def field_scores(analysis: xr.DataArray, truth: xr.DataArray) -> dict[str, np.ndarray]:
    """Relative RMSE, RMSE, spread and spread/skill of an ensemble per time.

    ``analysis`` has dims ``(time, member, *grid)``, ``truth`` ``(time, *grid)``.
    Relative RMSE ``sqrt(sum_x w (mean - truth)^2 / sum_x w truth^2)`` (NaN where the truth
    is zero everywhere); spread ``sqrt(sum_x w var_member / sum_x w)`` (unbiased variance).
    """
    weights = area_weights(truth)
    grid = [dim for dim in truth.dims if dim != "time"]
    mean = analysis.mean("member")
    squared_error = ((mean - truth) ** 2 * weights).sum(grid)
    truth_norm = (truth**2 * weights).sum(grid)
    variance = (analysis.var("member", ddof=1) * weights).sum(grid)
    total_weight = float(weights.sum())
    rmse = np.sqrt(squared_error.values / total_weight)
    spread = np.sqrt(variance.values / total_weight)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(truth_norm.values > 0,
                            np.sqrt(squared_error.values / truth_norm.values), np.nan)
        ratio = np.where(rmse > 0, spread / rmse, np.nan)
    return {"relative_rmse": relative, "rmse": rmse, "spread": spread, "spread_skill": ratio}


def anomaly(field: xr.DataArray) -> xr.DataArray:
    """``field`` minus its area-weighted spatial mean (per time and member)."""
    weights = area_weights(field)
    grid = [dim for dim in field.dims if dim not in ("time", "member")]
    return field - (field * weights).sum(grid) / weights.sum()


def score_run(analysis: xr.Dataset, truth: xr.Dataset, model: xl.Simulator
              ) -> dict[str, Any]:
    """All recorded numbers of one analysis against its truth."""
    scores: dict[str, Any] = {"fields": {}, "parameters": {}}
    for name in model.variables:
        scores["fields"][name] = field_scores(analysis[name], truth[name])
    if model.case == "atmosphere":
        # h is ~5 km of fluid with ~0.4 km of variation: its relative RMSE is tiny for any
        # estimate; the anomaly about the global mean (which every member shares, mass being
        # conserved) is the discriminating version.
        scores["fields"]["h_anomaly"] = field_scores(anomaly(analysis["h"]),
                                                     anomaly(truth["h"]))
    for spec in model.parameter_specs:
        width = spec.prior_high - spec.prior_low
        estimate = analysis[spec.name]
        true_value = float(truth[spec.name])
        scores["parameters"][spec.name] = {
            "truth": true_value,
            "relative_error": np.abs(estimate.mean("member").values - true_value) / width,
            "relative_spread": estimate.std("member", ddof=1).values / width,
            "prior_width": width,
        }
    return scores


def time_average(series: np.ndarray, skip_first: bool) -> float:
    """Mean over frames (frame 0, the prior time, left out when ``skip_first``)."""
    values = np.asarray(series[1:] if skip_first else series, dtype=float)
    return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan


# --- runs --------------------------------------------------------------------------------

def run_method(observations: xr.Dataset, model: xl.Simulator, method: str,
               settings: dict[str, Any], prior_seed: int) -> tuple[xr.Dataset | None, dict]:
    """One assimilation; returns the analysis (None on divergence) and its run record."""
    if method == "free":
        method_name, kwargs = "etkf", {"obs_error": FREE_RUN_OBS_ERROR}
    else:
        method_name, kwargs = method, dict(settings)
    start = time.perf_counter()
    try:
        analysis = observations.ldensf.assimilate(model, method=method_name, members=MEMBERS,
                                                  seed=prior_seed, progress=False, **kwargs)
        failure = None
    except XLDEnSFError as error:  # divergence is a result here, not a crash
        analysis, failure = None, f"{type(error).__name__}: {error}"
    seconds = time.perf_counter() - start
    n_cycles = observations.sizes["time"]
    record = {"method": method, "settings": settings, "wall_s": seconds,
              "s_per_cycle": seconds / n_cycles, "cycles": n_cycles, "failure": failure}
    return analysis, record


def to_lists(value: Any) -> Any:
    """numpy arrays and scalars to JSON-ready lists/floats (NaN -> None)."""
    if isinstance(value, dict):
        return {key: to_lists(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_lists(item) for item in value]
    if isinstance(value, np.ndarray):
        return [to_lists(item) for item in value.tolist()]
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def run_experiment(experiment: dict[str, Any], truth_seeds: list[int], prior_seed: int,
                   cycles: int | None, methods: list[str]) -> dict[str, Any]:
    """All methods and truths of one experiment (the free run once: it ignores the truth)."""
    case, preset = experiment["case"], experiment["preset"]
    model = xl.simulator(case, preset=preset)
    n_grid = int(np.prod(model.grid_shape))
    n_stations = None
    runs: list[dict[str, Any]] = []
    free: tuple[xr.Dataset | None, dict] | None = None
    for truth_seed in truth_seeds:
        truth = xl.simulate(case, runs=1, seed=truth_seed, preset=preset).isel(run=0)
        if cycles is not None:
            truth = truth.isel(time=slice(0, cycles))
        observations = truth.ldensf.observe(stations=experiment["stations"], noise=NOISE,
                                            seed=truth_seed)
        n_stations = observations.sizes["station"]
        for method in methods:
            if method == "free" and free is not None:
                analysis, record = free
            else:
                analysis, record = run_method(observations, model, method,
                                              METHODS[case].get(method, {}), prior_seed)
                if method == "free":
                    free = (analysis, record)
            record = dict(record, truth_seed=truth_seed,
                          truth_parameters={spec.name: float(truth[spec.name])
                                            for spec in model.parameter_specs})
            if analysis is not None:
                record["scores"] = score_run(analysis, truth, model)
            runs.append(record)
            print(f"  {experiment['name']} truth {truth_seed} {method}: "
                  f"{record['s_per_cycle']:.2f} s/cycle"
                  + (f"  FAILED {record['failure']}" if record["failure"] else ""), flush=True)
    return {**experiment, "n_grid": n_grid, "n_stations": n_stations,
            "station_fraction": n_stations / n_grid, "truth_seeds": truth_seeds,
            "prior_seed": prior_seed, "times_s": truth["time"].values.tolist(),
            "runs": runs}


def paper_probe(prior_seed: int, truth_seed: int, budget_s: float, methods: list[str]
                ) -> dict[str, Any]:
    """Tsunami ``paper`` preset: time 2 cycles per method; run 51 cycles where they fit."""
    case, preset = "tsunami", "paper"
    model = xl.simulator(case, preset=preset)
    start = time.perf_counter()
    truth = xl.simulate(case, runs=1, seed=truth_seed, preset=preset).isel(run=0)
    truth_seconds = time.perf_counter() - start
    observations = truth.ldensf.observe(stations="10x10", noise=NOISE, seed=truth_seed)
    n_cycles = observations.sizes["time"]
    probe: dict[str, Any] = {"case": case, "preset": preset, "stations": "10x10",
                             "n_grid": int(np.prod(model.grid_shape)),
                             "n_stations": observations.sizes["station"],
                             "truth_seed": truth_seed, "prior_seed": prior_seed,
                             "truth_simulation_s": truth_seconds, "budget_s": budget_s,
                             "methods": {}}
    probe["station_fraction"] = probe["n_stations"] / probe["n_grid"]
    remaining = budget_s
    for method in methods:
        settings = METHODS[case].get(method, {})
        _, timing = run_method(observations.isel(time=slice(0, 2)), model, method, settings,
                               prior_seed)
        # Cycle 0 is at the prior time (no forecast): one full cycle ~ the whole 2-cycle time.
        estimate = timing["wall_s"] * (n_cycles - 1)
        entry: dict[str, Any] = {"two_cycles_s": timing["wall_s"],
                                 "estimated_full_s": estimate, "ran_full": False}
        print(f"  paper probe {method}: 2 cycles {timing['wall_s']:.1f} s, "
              f"51 cycles ~{estimate:.0f} s", flush=True)
        if estimate <= remaining:
            analysis, record = run_method(observations, model, method, settings, prior_seed)
            remaining -= record["wall_s"]
            entry.update(ran_full=True, run=record)
            if analysis is not None:
                entry["run"]["scores"] = score_run(analysis, truth, model)
        probe["methods"][method] = entry
    return probe


# --- reporting ---------------------------------------------------------------------------

def summarise(experiment: dict[str, Any], methods: list[str]) -> list[dict[str, Any]]:
    """Per method: means over truths of time-averaged and per-frame numbers."""
    rows = []
    for method in methods:
        runs = [run for run in experiment["runs"] if run["method"] == method]
        scored = [run for run in runs if "scores" in run]
        row: dict[str, Any] = {"method": method, "truths": len(runs),
                               "failures": [run["failure"] for run in runs if run["failure"]],
                               "s_per_cycle": float(np.mean([r["s_per_cycle"] for r in runs]))}
        if scored:
            fields = scored[0]["scores"]["fields"]
            for name in fields:
                relative = np.array([r["scores"]["fields"][name]["relative_rmse"]
                                     for r in scored])
                ratio = np.array([r["scores"]["fields"][name]["spread_skill"] for r in scored])
                row[f"{name}_relative_rmse_mean"] = float(np.mean(
                    [time_average(series, skip_first=True) for series in relative]))
                with warnings.catch_warnings():  # frame 0 of u, v: NaN for every truth
                    warnings.simplefilter("ignore", RuntimeWarning)
                    row[f"{name}_relative_rmse_by_frame"] = np.nanmean(relative, axis=0)
                row[f"{name}_spread_skill_mean"] = float(np.mean(
                    [time_average(series, skip_first=True) for series in ratio]))
            for name in scored[0]["scores"]["parameters"]:
                errors = np.array([r["scores"]["parameters"][name]["relative_error"]
                                   for r in scored])
                spreads = np.array([r["scores"]["parameters"][name]["relative_spread"]
                                    for r in scored])
                row[f"{name}_error_final"] = float(errors[:, -1].mean())
                row[f"{name}_error_by_frame"] = errors.mean(axis=0)
                row[f"{name}_spread_final"] = float(spreads[:, -1].mean())
        rows.append(row)
    return rows


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}"


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Full-space baselines (EnKF, LETKF, EnSF) on the tsunami and atmosphere", ""]
    settings = report["settings"]
    lines += [f"{MEMBERS} members, {NOISE:.0%} noise (relative to each variable's "
              "spatio-temporal standard deviation), prior drawn from the case's parameter "
              f"prior with seed {settings['prior_seed']}; truths {settings['truth_seeds']}. "
              "Relative RMSE of the ensemble mean averaged over frames 1..end (frame 0 is the "
              "prior time, where the tsunami's u = v = 0), then over truths; spread/skill = "
              "RMS spread / RMSE of the mean, same averaging; parameter error = |posterior "
              "mean - truth| / prior range width at the last frame (spread likewise). "
              "s/cycle = wall time of forecast + analysis. `free` = the prior ensemble without "
              "assimilation.", ""]
    for experiment in report["experiments"]:
        rows = summarise(experiment, report["settings"]["methods"])
        scored = [row for row in rows if any(k.endswith("_error_final") for k in row)]
        fields = [key[: -len("_relative_rmse_mean")] for key in (scored or [{}])[0]
                  if key.endswith("_relative_rmse_mean")]
        parameters = [key[: -len("_error_final")] for key in (scored or [{}])[0]
                      if key.endswith("_error_final")]
        lines += [f"## {experiment['name']}", "",
                  f"{experiment['n_stations']} stations on {experiment['n_grid']} grid points "
                  f"({experiment['station_fraction']:.2%}), {len(experiment['times_s'])} "
                  f"frames; settings: " + "; ".join(
                      f"{m} {json.dumps(METHODS[experiment['case']][m])}"
                      for m in report["settings"]["methods"] if m != "free") + ".", ""]
        header = (["method"] + [f"{f} rel. RMSE" for f in fields]
                  + [f"{f} spread/skill" for f in fields]
                  + [f"{p} err (spread)" for p in parameters] + ["s/cycle", "failed"])
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows:
            cells = [row["method"]]
            cells += [fmt(row.get(f"{f}_relative_rmse_mean")) for f in fields]
            cells += [fmt(row.get(f"{f}_spread_skill_mean"), 2) for f in fields]
            cells += [f"{fmt(row.get(p + '_error_final'), 2)} "
                      f"({fmt(row.get(p + '_spread_final'), 2)})" for p in parameters]
            cells += [fmt(row["s_per_cycle"], 3), f"{len(row['failures'])}/{row['truths']}"]
            lines.append("| " + " | ".join(cells) + " |")
        frames = [f for f in experiment["show_frames"] if f < len(experiment["times_s"])]
        hours = [experiment["times_s"][f] / 3600 for f in frames]
        lines += ["", "Relative RMSE of the ensemble mean by frame (mean over truths):", ""]
        header = ["method", "variable"] + [f"{h:.1f} h" for h in hours]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows:
            for name in fields + [f"{p}_error" for p in parameters]:
                key = (f"{name}_relative_rmse_by_frame" if not name.endswith("_error")
                       else f"{name}_by_frame")
                if key not in row:
                    continue
                series = np.asarray(row[key], dtype=float)
                label = name if not name.endswith("_error") else f"{name[:-6]} (param err)"
                lines.append("| " + " | ".join([row["method"], label]
                                                + [fmt(series[f]) for f in frames]) + " |")
        for row in rows:
            for failure in row["failures"]:
                lines.append(f"\n{row['method']} failed: `{failure[:300]}`")
        lines.append("")
    probe = report.get("paper_probe")
    if probe:
        lines += ["## tsunami paper preset (150 x 150, 10x10 = "
                  f"{probe['station_fraction']:.2%}) probe", "",
                  f"Truth simulation {probe['truth_simulation_s']:.0f} s; budget for full runs "
                  f"{probe['budget_s']:.0f} s.", "",
                  "| method | 2 cycles s | estimated 51 cycles s | ran | eta rel. RMSE | "
                  "u rel. RMSE | v rel. RMSE | x0 err | y0 err |", "|" + "---|" * 9]
        for method, entry in probe["methods"].items():
            cells = [method, fmt(entry["two_cycles_s"]), fmt(entry["estimated_full_s"]),
                     "yes" if entry["ran_full"] else "no (over budget)"]
            scores = entry.get("run", {}).get("scores")
            if scores:
                cells += [fmt(time_average(scores["fields"][v]["relative_rmse"], True))
                          for v in ("eta", "u", "v")]
                cells += [fmt(float(scores["parameters"][p]["relative_error"][-1]), 2)
                          for p in ("x0", "y0")]
            else:
                cells += ["-"] * 5
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    machine = report["machine"]
    lines += [f"Command: `{report['command']}`; total {report['total_s'] / 60:.1f} min; "
              f"{machine['nproc']} CPUs (shared), torch {machine['torch']} with "
              f"{machine['torch_threads']} thread(s), xldensf {machine['xldensf']}, "
              f"{machine['platform']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 4 tsunami / 3 atmosphere cycles, one truth, no probe")
    parser.add_argument("--tsunami-truths", type=int, default=2)
    parser.add_argument("--atmosphere-truths", type=int, default=3)
    parser.add_argument("--prior-seed", type=int, default=0)
    parser.add_argument("--paper-budget", type=float, default=200.0,
                        help="seconds allowed for full paper-preset runs (0: probe only)")
    parser.add_argument("--no-paper", action="store_true", help="skip the paper-preset probe")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    xl.set_options(progress=False)
    methods = ["free", "enkf", "letkf", "ensf"]
    truth_seeds = {"tsunami": [101, 102, 103][: 1 if args.quick else args.tsunami_truths],
                   "atmosphere": [201, 202, 203][: 1 if args.quick else args.atmosphere_truths]}
    start = time.perf_counter()
    experiments = []
    for experiment in EXPERIMENTS:
        cycles = (4 if experiment["case"] == "tsunami" else 3) if args.quick else None
        print(experiment["name"], flush=True)
        experiments.append(run_experiment(experiment, truth_seeds[experiment["case"]],
                                          args.prior_seed, cycles, methods))
    report: dict[str, Any] = {
        "settings": {"members": MEMBERS, "noise": NOISE, "methods": methods,
                     "method_settings": METHODS, "prior_seed": args.prior_seed,
                     "truth_seeds": truth_seeds, "free_run_obs_error": FREE_RUN_OBS_ERROR,
                     "quick": args.quick},
        "experiments": experiments,
    }
    if not (args.quick or args.no_paper):
        print("tsunami paper probe", flush=True)
        report["paper_probe"] = paper_probe(args.prior_seed, truth_seeds["tsunami"][0],
                                            args.paper_budget, ["enkf", "letkf", "ensf", "free"])
    report["total_s"] = time.perf_counter() - start
    report["command"] = "python benchmarks/full_space_baselines.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    report["machine"] = {"nproc": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                         "torch": torch.__version__, "numpy": np.__version__,
                         "xarray": xr.__version__, "xldensf": xl.__version__,
                         "python": platform.python_version(), "platform": platform.platform(),
                         "load_average": os.getloadavg()}
    stem = "full_space_baselines" + ("_quick" if args.quick else "")
    args.output.mkdir(parents=True, exist_ok=True)
    for experiment in report["experiments"]:
        experiment["summary"] = summarise(experiment, methods)
    (args.output / f"{stem}.json").write_text(json.dumps(to_lists(report), indent=1))
    (args.output / f"{stem}.md").write_text(markdown(report))
    print(f"wrote {args.output / stem}.{{json,md}} in {report['total_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
