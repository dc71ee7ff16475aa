"""EnSF on Lorenz-96 with arctan observations at d = 1e3 .. 1e5 (Bao, Zhang & Zhang 2024).

Every variable is observed every step through ``arctan`` with sigma_obs = 0.05; the
likelihood gradient comes from :func:`torch.autograd.grad`. Lorenz-96 (F = 8) with RK4,
dt = 0.05 per cycle, no model noise; initial ensemble = truth + N(0, 1). Recorded per d:
analysis RMSE (last 10 cycles), seconds per analysis, and peak resident memory growth of
the run (``resource.getrusage``, a separate process per d) to show O(members x d).

Usage::

    .venv/bin/python benchmarks/ensf_lorenz96.py [--members 20] [--cycles 20] [--steps 100]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from xldensf.filters import EnSF

sys.path.insert(0, str(Path(__file__).parent))
from lorenz96_filters import rk4_step  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def run_one(n_state: int, members: int, cycles: int, steps: int, inflation: float,
            seed: int = 0) -> dict:
    """One EnSF run at ``n_state`` variables (float32)."""
    torch.set_num_threads(1)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    generator = torch.Generator().manual_seed(seed)
    truth = 8.0 + torch.randn(n_state, generator=generator)
    for _ in range(300):
        truth = rk4_step(truth)
    ensemble = truth + torch.randn(members, n_state, generator=generator)
    ensf = EnSF(steps=steps, prior_score="member", inflation=inflation, score_clip=1e3)
    errors, analysis_time = [], 0.0
    for _ in range(cycles):
        truth, ensemble = rk4_step(truth), rk4_step(ensemble)
        observations = torch.atan(truth) + 0.05 * torch.randn(n_state, generator=generator)
        start = time.perf_counter()
        ensemble = ensf.analysis(ensemble, observations, torch.atan, 0.05, generator)
        analysis_time += time.perf_counter() - start
        errors.append(float((ensemble.mean(0) - truth).square().mean().sqrt()))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"n_state": n_state, "members": members, "cycles": cycles, "steps": steps,
            "inflation": inflation, "rmse_last10": sum(errors[-10:]) / len(errors[-10:]),
            "rmse_per_cycle": errors, "seconds_per_analysis": analysis_time / cycles,
            "peak_rss_growth_mib": (peak - base) / 1024.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--inflation", type=float, default=1.0)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000, 100000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.members, args.cycles, args.steps,
                                 args.inflation)))
        return
    rows = []
    for n_state in args.sizes:  # one process per size, so peak memory is per size
        out = subprocess.run([sys.executable, __file__, "--one", str(n_state), "--members",
                              str(args.members), "--cycles", str(args.cycles), "--steps",
                              str(args.steps), "--inflation", str(args.inflation)],
                             check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        row = rows[-1]
        print(f"d={n_state}: rmse {row['rmse_last10']:.3f}, "
              f"{row['seconds_per_analysis']:.2f} s/analysis, "
              f"peak +{row['peak_rss_growth_mib']:.0f} MiB", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"command": "python benchmarks/ensf_lorenz96.py " + " ".join(sys.argv[1:]),
              "settings": vars(args), "rows": rows}
    (RESULTS / "ensf_lorenz96.json").write_text(json.dumps(record, indent=1))
    lines = ["# EnSF on Lorenz-96, arctan observations (sigma_obs = 0.05)", "",
             f"{args.members} members, {args.steps} Euler-Maruyama steps, per-member prior "
             f"score, score clip 1e3, inflation {args.inflation}, {args.cycles} cycles "
             "(dt = 0.05, every variable observed every cycle), float32, 1 thread.", "",
             "| d | RMSE (last 10 cycles) | s / analysis | peak memory growth (MiB) |",
             "|---|---|---|---|"]
    lines += [f"| {r['n_state']} | {r['rmse_last10']:.3f} | {r['seconds_per_analysis']:.2f} | "
              f"{r['peak_rss_growth_mib']:.0f} |" for r in rows]
    lines += ["", f"Command: `{record['command']}`.", ""]
    (RESULTS / "ensf_lorenz96.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
