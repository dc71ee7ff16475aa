"""EnSF on Lorenz-96 with arctan observations, in the setting of Bao, Zhang & Zhang (2024).

The setting of the EnSF paper's public code (``zezhongzhang/EnSF``, ``EnSF_L96.py``):
Lorenz-96 (F = 8) advanced by one forward-Euler step of ``dt = 0.005`` per cycle with model
noise ``sqrt(dt) 0.1 xi``; truth starting from ``10 U(0, 1)``, initial ensemble ``N(0, I)``
(no information about the truth); every variable observed every cycle through ``arctan``
with ``sigma_obs = 0.05``; 600 cycles. ``--integrator rk4 --dt 0.05 --model-noise 0`` gives
the former setting of this benchmark (RK4, truth spun up, initial ensemble truth + N(0, I)).
Two differences from the reference script, both deliberate: it computes in float16 on a GPU
(here float32 on the CPU), and it rolls the ``(members, d)`` ensemble array without an axis
for the model's neighbours, so each member's first and last variables are coupled to the
neighbouring members' (here every member is its own ring).

Methods (``name`` or ``name@members``; members default to ``--members``):

- ``paper``: :meth:`EnSF.paper` with the EnSF paper's ``eps_alpha = 0.05`` (member-paired
  prior score, damped likelihood, ``K = --steps`` Euler-Maruyama steps, ``eps_beta = 0``),
  whose stability check adds steps (with a warning) where ``K`` is too few;
- ``paper-k``: the same with exactly ``K`` steps (``on_unstable="keep"``), as the reference
  code (no stability check);
- ``default``: ``EnSF()`` (Gaussian prior score from the ensemble's moments, Tweedie
  likelihood);
- ``letkf``: ``LETKF`` with periodic Gaspari-Cohn localisation ``--loc`` and inflation
  ``--letkf-inflation``;
- ``free``: no assimilation.

Every (d, method) runs in its own process, so the recorded peak resident memory growth
(``resource.getrusage``) is per run. Recorded: RMSE of the analysis mean per cycle, its
mean after ``--spin-up`` cycles, seconds per analysis, sampler steps actually used,
peak memory growth. Runs longer than ``--time-limit`` seconds stop early (recorded).

Usage::

    .venv/bin/python benchmarks/ensf_lorenz96.py --sizes 1000 --members 250 --cycles 600 \\
        --spin-up 300 --methods paper-k paper default default@20 letkf@20 free
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shlex
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from xldensf.filters import LETKF, EnsembleFilter, EnSF
from xldensf.simulators.lorenz96 import lorenz96_tendency

RESULTS = Path(__file__).parent / "results"
FORCING = 8.0
METHODS = ("paper", "paper-k", "default", "letkf", "free")


def model_step(x: torch.Tensor, dt: float, noise: float, integrator: str,
               generator: torch.Generator) -> torch.Tensor:
    """One Lorenz-96 step of ``dt`` (forward Euler or RK4) plus ``sqrt(dt) noise xi``."""
    forcing = torch.tensor(FORCING, dtype=x.dtype)
    if integrator == "euler":
        x = x + dt * lorenz96_tendency(x, forcing)
    else:
        k1 = lorenz96_tendency(x, forcing)
        k2 = lorenz96_tendency(x + 0.5 * dt * k1, forcing)
        k3 = lorenz96_tendency(x + 0.5 * dt * k2, forcing)
        k4 = lorenz96_tendency(x + dt * k3, forcing)
        x = x + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    if noise > 0:
        x = x + math.sqrt(dt) * noise * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return x


def make_filter(method: str, args: argparse.Namespace, n_state: int) -> EnsembleFilter | None:
    """The filter of ``method`` (``None`` for the free run)."""
    if method == "paper-k":
        return EnSF.paper("lorenz96", eps_alpha=args.eps_alpha, steps=args.steps,
                          latent_scale=1.0, latent_obs_std=None, on_unstable="keep")
    if method == "paper":
        return EnSF.paper("lorenz96", eps_alpha=args.eps_alpha, steps=args.steps,
                          latent_scale=1.0, latent_obs_std=None)
    if method == "default":
        return EnSF()
    if method == "letkf":
        return LETKF(localization=args.loc, distance="periodic", period=float(n_state),
                     inflation=args.letkf_inflation)
    return None


def initial_states(n_state: int, members: int, args: argparse.Namespace,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Truth and initial ensemble of the chosen setting."""
    if args.integrator == "euler":
        truth = 10.0 * torch.rand(n_state, generator=generator)
        return truth, torch.randn(members, n_state, generator=generator)
    truth = FORCING + torch.randn(n_state, generator=generator)
    for _ in range(300):
        truth = model_step(truth, args.dt, 0.0, args.integrator, generator)
    return truth, truth + torch.randn(members, n_state, generator=generator)


def run_one(n_state: int, method: str, members: int, args: argparse.Namespace) -> dict:
    """One cycled run of ``method`` at ``n_state`` variables (float32, one thread)."""
    torch.set_num_threads(1)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    generator = torch.Generator().manual_seed(args.seed)
    truth, ensemble = initial_states(n_state, members, args, generator)
    noise = torch.Generator().manual_seed(args.seed + 1)  # the same truth for every method
    filter_ = make_filter(method, args, n_state)
    sites = torch.arange(n_state, dtype=torch.float32)
    errors, spread, analysis_time, notes = [], [], 0.0, set()
    started = time.perf_counter()
    for _ in range(args.cycles):
        truth = model_step(truth, args.dt, args.model_noise, args.integrator, noise)
        ensemble = model_step(ensemble, args.dt, args.model_noise, args.integrator, generator)
        observations = torch.atan(truth) + args.obs_std * torch.randn(n_state, generator=noise)
        if filter_ is not None:
            start = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ensemble = filter_.analysis(ensemble, observations, torch.atan, args.obs_std,
                                            generator, state_positions=sites,
                                            observation_positions=sites)
            analysis_time += time.perf_counter() - start
            notes.update(str(warning.message) for warning in caught)
        errors.append(float((ensemble.mean(0) - truth).square().mean().sqrt()))
        spread.append(float(ensemble.var(0).mean().sqrt()))
        if not math.isfinite(errors[-1]) or time.perf_counter() - started > args.time_limit:
            break
    done = len(errors)
    after = errors[args.spin_up:] or errors[-1:]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"n_state": n_state, "method": method, "members": members, "cycles_run": done,
            "stopped_early": done < args.cycles, "rmse_after_spin_up": sum(after) / len(after),
            "rmse_last": errors[-1], "spread_last": spread[-1], "rmse_per_cycle": errors,
            "seconds_per_analysis": analysis_time / done if filter_ is not None else 0.0,
            "peak_rss_growth_mib": (peak - base) / 1024.0, "warnings": sorted(notes)}


def parse_methods(specs: list[str], members: int) -> list[tuple[str, int]]:
    """``["paper", "default@20"]`` -> ``[("paper", members), ("default", 20)]``."""
    parsed = []
    for spec in specs:
        name, _, count = spec.partition("@")
        if name not in METHODS:
            raise SystemExit(f"unknown method {name!r} (one of {', '.join(METHODS)})")
        parsed.append((name, int(count) if count else members))
    return parsed


def markdown(record: dict) -> str:
    """The results table of ``record`` (one or more commands)."""
    settings = record["settings"][0]
    lines = ["# EnSF on Lorenz-96, arctan observations", "",
             f"Setting: {settings['integrator']} steps of dt = {settings['dt']}, model noise "
             f"{settings['model_noise']}, every variable observed every cycle through arctan "
             f"with sigma_obs = {settings['obs_std']}; RMSE of the analysis mean averaged "
             f"after {settings['spin_up']} cycles of spin-up (the last cycle if fewer ran); "
             f"paper = `EnSF.paper('lorenz96', eps_alpha={settings['eps_alpha']}, "
             f"steps={settings['steps']})` (paper-k: exactly {settings['steps']} steps, no "
             "stability adaptation), default = `EnSF()`, LETKF periodic localisation "
             f"{settings['loc']}, inflation {settings['letkf_inflation']}; float32, 1 thread "
             "per run, one process per row (runs may share the CPU: times are upper bounds).",
             "",
             "| d | method | members | cycles run | RMSE after spin-up | final RMSE | final "
             "spread | s / analysis | peak memory growth (MiB) | notes |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in record["rows"]:
        notes = "; ".join(row["warnings"])[:160]
        if row["stopped_early"]:
            notes = "stopped at the time limit. " + notes
        lines.append(f"| {row['n_state']} | {row['method']} | {row['members']} | "
                     f"{row['cycles_run']} | {row['rmse_after_spin_up']:.3f} | "
                     f"{row['rmse_last']:.3f} | {row['spread_last']:.3f} | "
                     f"{row['seconds_per_analysis']:.2f} | {row['peak_rss_growth_mib']:.0f} | "
                     f"{notes} |")
    lines += [""] + [f"Command: `{command}`." for command in record["commands"]] + [""]
    return "\n".join(lines)

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--methods", nargs="+", default=["paper", "default", "default@20",
                                                          "letkf@20", "free"])
    parser.add_argument("--members", type=int, default=250)
    parser.add_argument("--cycles", type=int, default=600)
    parser.add_argument("--spin-up", type=int, default=100)
    parser.add_argument("--steps", type=int, default=100, help="EnSF sampler steps (paper)")
    parser.add_argument("--eps-alpha", type=float, default=0.05)
    parser.add_argument("--dt", type=float, default=0.005)
    parser.add_argument("--model-noise", type=float, default=0.1)
    parser.add_argument("--integrator", choices=("euler", "rk4"), default="euler")
    parser.add_argument("--obs-std", type=float, default=0.05)
    parser.add_argument("--loc", type=float, default=4.0)
    parser.add_argument("--letkf-inflation", type=float, default=1.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=600.0,
                        help="seconds per run before it stops early")
    parser.add_argument("--output", default="ensf_lorenz96", help="results file stem")
    parser.add_argument("--jobs", type=int, default=1, help="runs at the same time")
    parser.add_argument("--append", action="store_true",
                        help="add the rows to the existing results file")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        n_state, method, members = args.one
        print(json.dumps(run_one(int(n_state), method, int(members), args)))
        return
    forwarded = sys.argv[1:]
    runs = [(n_state, method, members) for n_state in args.sizes
            for method, members in parse_methods(args.methods, args.members)]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each run is its own process
        outputs = list(pool.map(lambda run: subprocess.run(
            [sys.executable, __file__, *forwarded, "--one", *map(str, run)],
            check=True, capture_output=True, text=True).stdout, runs))
    rows = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    for row in rows:
        sys.stderr.write(f"d={row['n_state']} {row['method']}@{row['members']}: rmse "
                         f"{row['rmse_after_spin_up']:.3f} ({row['cycles_run']} cycles), "
                         f"{row['seconds_per_analysis']:.2f} s/analysis, "
                         f"peak +{row['peak_rss_growth_mib']:.0f} MiB\n")
    command = "python benchmarks/ensf_lorenz96.py " + shlex.join(forwarded)
    for row in rows:
        row["command"] = command
    settings = {key: value for key, value in vars(args).items() if key != "one"}
    record = {"commands": [command], "settings": [settings], "rows": rows}
    path = RESULTS / f"{args.output}.json"
    if args.append and path.exists():
        previous = json.loads(path.read_text())
        record = {key: previous[key] + record[key] for key in record}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    path.with_suffix(".md").write_text(markdown(record))

if __name__ == "__main__":
    main()
