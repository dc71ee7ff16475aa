"""The latent 4DEnVar smoother against default LD-EnSF on the small tsunami surrogate.

Held-out truths (seeds 1000 + i), 16 random stations (the quick benchmark's unseen layout,
seed 7000 + i), 10 % noise, the shipped small tsunami surrogate; both methods on the same
observations. Writes ``benchmarks/results/latent_envar_tsunami.{json,md}``.

Rows: LD-EnSF default (200 members), latent-envar with RML members (the default) and with
``inflation=2`` and with ``uncertainty="hessian"`` (the Gauss-Newton posterior square root
around the minimiser).

Run: ``OMP_NUM_THREADS=1 python benchmarks/latent_envar_tsunami.py [--truths 3]
[--members 50] [--window 5] [--iterations 5]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import xldensf as xl
from xldensf.experiments import shipped_model_path
from xldensf.experiments.settings import TRUTH_SEED_OFFSET, UNSEEN_LAYOUT_SEED_OFFSET
from xldensf.metrics import parameter_error, relative_rmse, spread_skill_ratio

SCORED_MEMBERS = 10  # fields scored on 10 members (decoding members on the grid is
SCORED_EVERY = 5     # the cost on a shared CPU), at every 5th frame and the last
ROWS = {"ldensf": "ld-ensf (default, decoder)", "rml": "latent-envar",
        "inflation2": "latent-envar (inflation 2)", "hessian": "latent-envar (hessian)"}


def score(analysis, truth, widths, seconds):
    frames = sorted(set(range(0, analysis.sizes["time"], SCORED_EVERY))
                    | {analysis.sizes["time"] - 1})
    scored = analysis.isel(member=slice(0, SCORED_MEMBERS), time=frames).load()
    truth = truth.isel(time=frames)
    rel = relative_rmse(scored, truth, ["eta"])["eta"].values
    ratio = spread_skill_ratio(scored, truth, ["eta"])["eta"].values
    errors = parameter_error(analysis.isel(time=[-1]), truth, list(widths), ranges=widths)
    return {"eta_final": float(rel[-1]), "eta_mean": float(np.nanmean(rel[1:])),
            "eta_by_frame": rel.tolist(), "scored_frames": frames,
            "spread_skill": float(np.nanmean(ratio[1:])),
            **{f"{name}_error": float(errors[name].values[-1]) for name in widths},
            "call_seconds": seconds,
            "seconds_analysis": float(analysis.attrs.get("xldensf_seconds_analysis", np.nan)),
            "seconds_per_window": float(analysis.attrs.get("xldensf_seconds_per_window",
                                                           np.nan))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--truths", type=int, default=3)
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--first", type=int, default=0, help="index of the first truth")
    parser.add_argument("--merge", nargs="*", default=(),
                        help="JSON results of other truths to include in the report")
    parser.add_argument("--skip-ldensf", action="store_true",
                        help="run latent-envar only (LD-EnSF's records come with --merge)")
    parser.add_argument("--rows", nargs="*", default=None, choices=sorted(ROWS),
                        help="run only these rows (the others may come with --merge)")
    parser.add_argument("--output", default="benchmarks/results")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = xl.load_model(shipped_model_path("tsunami", "small"))
    full = xl.simulator("tsunami", preset="small", progress=False)
    widths = {s.name: s.prior_high - s.prior_low for s in full.parameter_specs}
    frames = len(model.metadata.times)
    records: dict[str, list] = {"ld-ensf (default, decoder)": [], "latent-envar": [],
                                "latent-envar (inflation 2)": [],
                                "latent-envar (hessian)": []}
    for index in range(args.first, args.first + args.truths):
        truth = xl.simulate("tsunami", runs=1, seed=TRUTH_SEED_OFFSET + index, preset="small",
                            n_outputs=frames, progress=False).isel(run=0)
        obs = truth.ldensf.observe(stations=16, noise=0.1,
                                   seed=UNSEEN_LAYOUT_SEED_OFFSET + index)
        runs = {
            "ld-ensf (default, decoder)": dict(members=200, likelihood="decoder"),
            "latent-envar": dict(method="latent-envar", members=args.members,
                                 window=args.window, iterations=args.iterations),
            "latent-envar (inflation 2)": dict(method="latent-envar", members=args.members,
                                               window=args.window,
                                               iterations=args.iterations, inflation=2.0),
            "latent-envar (hessian)": dict(method="latent-envar", members=args.members,
                                           window=args.window, iterations=args.iterations,
                                           uncertainty="hessian"),
        }
        if args.skip_ldensf:
            runs.pop("ld-ensf (default, decoder)")
        if args.rows is not None:
            runs = {name: runs[name] for name in runs if name in [ROWS[r] for r in args.rows]}
        for name, settings in runs.items():
            start = time.perf_counter()
            analysis = obs.ldensf.assimilate(model, seed=index, progress=False, **settings)
            seconds = time.perf_counter() - start
            record = score(analysis, truth, widths, seconds)
            record["truth"] = index
            records[name].append(record)
    for path in args.merge:  # truths run separately (same settings)
        for name, rows in json.loads(Path(path).read_text())["records"].items():
            records[name].extend(rows)
    for name in records:  # one record per truth (a merged file may repeat a row)
        records[name] = list({r["truth"]: r for r in records[name]}.values())
    summary = {name: {key: float(np.mean([r[key] for r in rows])) for key in rows[0]
                      if key not in ("truth", "eta_by_frame", "scored_frames")}
               for name, rows in records.items() if rows}
    result = {"truths": len(records["latent-envar"]), "members": args.members,
              "window": args.window,
              "iterations": args.iterations, "stations": 16, "noise": 0.1,
              "threads": torch.get_num_threads(), "records": records, "summary": summary}
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "latent_envar_tsunami.json").write_text(json.dumps(result, indent=1))
    lines = ["# Latent 4DEnVar smoother vs LD-EnSF: small tsunami", "",
             f"{result['truths']} held-out truths, 16 random stations, 10 % noise, shipped "
             f"surrogate; latent-envar {args.members} members, window {args.window}, "
             f"at most {args.iterations} Gauss-Newton iterations, inflation 1.1 unless "
             "named (RML members, or the Hessian's square root); LD-EnSF 200 members; the same "
             f"observations for all. Fields scored on {SCORED_MEMBERS} members at every "
             f"{SCORED_EVERY}th frame and the last "
             "(time mean over the scored frames after the first).", "",
             "| method | eta final | eta time mean | x0 err | y0 err | spread/skill | "
             "call s | s/window |", "|---|---|---|---|---|---|---|---|"]
    for name, row in summary.items():
        lines.append(f"| {name} | {row['eta_final']:.4f} | {row['eta_mean']:.4f} | "
                     f"{row['x0_error']:.4f} | {row['y0_error']:.4f} | "
                     f"{row['spread_skill']:.3f} | {row['call_seconds']:.1f} | "
                     f"{row['seconds_per_window']:.2f} |")
    (output / "latent_envar_tsunami.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
