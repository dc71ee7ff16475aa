"""Throughput of the full-order simulators (grid-cell updates per second).

For every case registered in ``xl.CASES`` the time step is run batched over 20 runs
(``paper`` preset for the tsunami, ``small`` for the others) and timed. The tsunami is
also compared side by side, in the same process and interleaved, with the plain single-run
numpy implementation of the same scheme (``benchmarks/numpy_tsunami.py``), after checking
that both give the same answer.

Usage::

    python benchmarks/simulators.py [--quick] [--compile] [--output benchmarks/results]

Writes ``simulators.json`` and ``simulators.md`` into the output folder. Timings on shared
machines are noisy: read the ratios measured side by side, and the load average recorded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import xldensf as xl

sys.path.insert(0, str(Path(__file__).parent))
from numpy_tsunami import numpy_tsunami  # noqa: E402

BATCH = 20


def time_steps(model, batch: int, budget: float) -> dict:
    """Time ``model.step`` on a batch; steps double until ``budget`` seconds are spent."""
    parameters = model.draw_parameters(batch, torch.Generator().manual_seed(0))
    with torch.no_grad():
        state = model.initial_internal(parameters, torch.Generator().manual_seed(0))
        for _ in range(2):  # warm-up (allocations, compilation)
            state = model.step(state, parameters, 0.0)
        steps, elapsed = 1, 0.0
        while elapsed < budget:
            steps *= 2
            start = time.perf_counter()
            for i in range(steps):
                state = model.step(state, parameters, i * model.dt)
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
    cells = math.prod(model.grid_shape)
    return {"batch": batch, "grid": list(model.grid_shape), "steps": steps,
            "seconds": elapsed, "cell_updates_per_s": batch * cells * steps / elapsed}


def time_numpy_tsunami(model, budget: float) -> dict:
    config = model.config
    steps, elapsed = 8, 0.0
    while elapsed < budget:
        steps *= 2
        start = time.perf_counter()
        numpy_tsunami(-2.0e5, -1.0e5, nx=config.nx, ny=config.ny, dt=model.dt, steps=steps,
                      output_every=steps)
        elapsed = time.perf_counter() - start
    cells = config.nx * config.ny
    return {"batch": 1, "grid": [config.ny, config.nx], "steps": steps, "seconds": elapsed,
            "cell_updates_per_s": cells * steps / elapsed}


def check_numpy_matches_torch() -> float:
    """Max |numpy - torch| over a small-preset trajectory (u, v in m/s, eta in m)."""
    model = xl.simulator("tsunami", preset="small", n_outputs=11, progress=False)
    config = model.config
    torch_frames = model.trajectory(torch.tensor([[-2.0e5, -1.5e5]]))[0].numpy()
    numpy_frames = numpy_tsunami(-2.0e5, -1.5e5, nx=config.nx, ny=config.ny, dt=model.dt,
                                 steps=10 * config.output_every,
                                 output_every=config.output_every)
    return float(np.abs(torch_frames - numpy_frames).max())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short timings (0.3 s each)")
    parser.add_argument("--compile", action="store_true",
                        help="also time the tsunami with compile_step=True (torch.compile)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    budget = 0.3 if args.quick else 2.0
    repeats = 1 if args.quick else args.repeats
    load_before = os.getloadavg()[0]

    cases = {}
    for case in sorted(xl.CASES):
        preset = "paper" if case == "tsunami" else "small"
        model = xl.simulator(case, preset=preset, progress=False)
        result = time_steps(model, BATCH, budget)
        cases[case] = {"preset": preset, **result}
        print(f"{case:12s} {preset:6s} {result['cell_updates_per_s']:.3g} cell updates/s",
              flush=True)

    # tsunami versus numpy, interleaved so that both see the same machine load
    agreement = check_numpy_matches_torch()
    variants = {"numpy single run": lambda: time_numpy_tsunami(paper, budget)}
    paper = xl.simulator("tsunami", preset="paper", progress=False)
    for threads in (1, 2):
        variants[f"torch batch {BATCH}, {threads} thread(s)"] = (
            lambda threads=threads: _with_threads(threads, lambda: time_steps(paper, BATCH,
                                                                              budget)))
    if args.compile:
        compiled = xl.simulator("tsunami", preset="paper", compile_step=True, progress=False)
        start = time.perf_counter()
        time_steps(compiled, BATCH, 0.0)  # compile once, outside the timings
        compile_seconds = time.perf_counter() - start
        for threads in (1, 2):
            variants[f"torch compiled batch {BATCH}, {threads} thread(s)"] = (
                lambda threads=threads: _with_threads(threads, lambda: time_steps(compiled,
                                                                                  BATCH, budget)))
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            rates[name].append(run()["cell_updates_per_s"])
    baseline = statistics.median(rates["numpy single run"])
    comparison = {
        name: {"cell_updates_per_s": statistics.median(values), "all": values,
               "speedup_vs_numpy": statistics.median(values) / baseline}
        for name, values in rates.items()
    }
    for name, row in comparison.items():
        print(f"{name:40s} {row['cell_updates_per_s']:.3g}  x{row['speedup_vs_numpy']:.2f}")

    results = {
        "command": "python benchmarks/simulators.py " + " ".join(argv or sys.argv[1:]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "numpy": np.__version__,
                    "xldensf": xl.__version__,
                    "load_average_before": load_before,
                    "load_average_after": os.getloadavg()[0]},
        "batch": BATCH,
        "cases": cases,
        "tsunami_vs_numpy": {
            "grid": [paper.config.ny, paper.config.nx], "dtype": "float64",
            "max_abs_difference_numpy_vs_torch": agreement,
            "variants": comparison,
            **({"compile_seconds": compile_seconds} if args.compile else {}),
        },
    }
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "simulators.json").write_text(json.dumps(results, indent=2) + "\n")
    (output / "simulators.md").write_text(markdown(results))
    return results


def _with_threads(threads: int, run):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return run()
    finally:
        torch.set_num_threads(previous)


def markdown(results: dict) -> str:
    machine = results["machine"]
    lines = [
        "# Simulator throughput",
        "",
        f"Command: `{results['command'].strip()}`; {machine['cpus']} CPUs, torch "
        f"{machine['torch']}, numpy {machine['numpy']}; load average "
        f"{machine['load_average_before']:.1f} before, {machine['load_average_after']:.1f} after "
        "(shared machine: read the ratios).",
        "",
        f"## All cases, batch of {results['batch']} runs, float64, default threads",
        "",
        "| case | preset | grid | cell updates / s |",
        "|---|---|---|---|",
    ]
    for case, row in results["cases"].items():
        lines.append(f"| {case} | {row['preset']} | {' x '.join(map(str, row['grid']))} | "
                     f"{row['cell_updates_per_s']:.3g} |")
    tsunami = results["tsunami_vs_numpy"]
    lines += [
        "",
        f"## Tsunami (paper grid {tsunami['grid'][0]} x {tsunami['grid'][1]}) versus plain numpy",
        "",
        f"Same answer: max |numpy - torch| = {tsunami['max_abs_difference_numpy_vs_torch']:.2g} "
        "over 80 steps of the small preset.",
        "",
        "| implementation | cell updates / s (median) | speed-up vs numpy |",
        "|---|---|---|",
    ]
    for name, row in tsunami["variants"].items():
        lines.append(f"| {name} | {row['cell_updates_per_s']:.3g} | "
                     f"{row['speedup_vs_numpy']:.2f} |")
    if "compile_seconds" in tsunami:
        lines += ["", f"One-off compilation: {tsunami['compile_seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
