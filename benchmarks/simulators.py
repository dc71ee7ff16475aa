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
from xldensf.simulators import tsunami_kernel

sys.path.insert(0, str(Path(__file__).parent))
from numpy_tsunami import numpy_tsunami  # noqa: E402

BATCH = 20
TARGET = 5.0  # issues #2, #14: batched torch >= 5x the single-run numpy scheme


def time_steps(model, batch: int, budget: float) -> dict:
    """Time ``model.step`` on a batch; steps double until ``budget`` seconds are spent."""
    parameters = model.draw_parameters(batch, torch.Generator().manual_seed(0))
    with torch.no_grad():
        state = model.initial_internal(parameters, torch.Generator().manual_seed(0))
        for _ in range(2):  # warm-up (allocations, compilation)
            state = model.step(state, parameters, 0.0)
        steps, elapsed = 1, 0.0
        while steps == 1 or elapsed < budget:
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
                        help="also time the tsunami with compile_step=True (torch.compile), "
                        "float64 and float32 (float32 rows are labelled, not the headline)")
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

    # tsunami versus numpy, interleaved so that all variants see the same machine load
    agreement = check_numpy_matches_torch()
    paper = xl.simulator("tsunami", preset="paper", kernel="eager", progress=False)
    models = {"eager": {"float64": paper},
              "fused": {"float64": xl.simulator("tsunami", preset="paper", kernel="fused",
                                                progress=False)}}
    if args.compile:
        models["compiled"] = {
            dtype: xl.simulator("tsunami", preset="paper", kernel="compiled", dtype=dtype,
                                progress=False)
            for dtype in ("float64", "float32")
        }
    variants = {"numpy single run, float64": lambda: time_numpy_tsunami(paper, budget)}
    compile_seconds = {}
    for mode, by_dtype in models.items():
        for dtype, model in by_dtype.items():
            for threads in (1, 2):
                name = f"torch {mode} batch {BATCH}, {dtype}, {threads} thread(s)"
                if mode == "compiled":  # compile once per dtype and thread count, untimed
                    start = time.perf_counter()
                    _with_threads(threads, lambda model=model: time_steps(model, BATCH, 0.0))
                    compile_seconds[name] = time.perf_counter() - start
                variants[name] = (lambda threads=threads, model=model: _with_threads(
                    threads, lambda: time_steps(model, BATCH, budget)))
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            rates[name].append(run()["cell_updates_per_s"])
    baseline = statistics.median(rates["numpy single run, float64"])
    comparison = {
        name: {"cell_updates_per_s": statistics.median(values), "all": values,
               "speedup_vs_numpy": statistics.median(values) / baseline}
        for name, values in rates.items()
    }
    for name, row in comparison.items():
        print(f"{name:48s} {row['cell_updates_per_s']:.3g}  x{row['speedup_vs_numpy']:.2f}")
    same_precision = {name: row["speedup_vs_numpy"] for name, row in comparison.items()
                      if "float64" in name and name.startswith("torch")}
    best = max(same_precision, key=same_precision.get)

    results = {
        "command": "python benchmarks/simulators.py " + " ".join(argv or sys.argv[1:]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "numpy": np.__version__,
                    "xldensf": xl.__version__,
                    "cpu": _cpu_model(), "caches": _caches(),
                    "load_average_before": load_before,
                    "load_average_after": os.getloadavg()[0]},
        "batch": BATCH,
        "cases": cases,
        "tsunami_vs_numpy": {
            "grid": [paper.config.ny, paper.config.nx], "dtype": "float64",
            "max_abs_difference_numpy_vs_torch": agreement,
            "variants": comparison,
            "best_float64": {"variant": best, "speedup_vs_numpy": same_precision[best],
                             "target": TARGET, "target_met": same_precision[best] >= TARGET},
            "compile_seconds": compile_seconds,
            "fused_build_seconds_this_run": tsunami_kernel.build_seconds(),
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


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _caches() -> dict[str, str]:
    """Cache sizes from sysfs (``{"L1d": "48K", "L2": "1280K", ...}``), empty if unknown."""
    caches = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        suffix = {"Data": "d", "Instruction": "i"}.get(kind, "")
        caches[f"L{level}{suffix}"] = size
    return caches


def markdown(results: dict) -> str:
    machine = results["machine"]
    lines = [
        "# Simulator throughput",
        "",
        f"Command: `{results['command'].strip()}`; {machine['cpus']} CPUs "
        f"({machine['cpu']}, caches {machine['caches']}), torch "
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
        "Interleaved: each repeat runs every variant in turn; the median over repeats is "
        "shown. numpy runs one run on one core; torch runs a batch of "
        f"{results['batch']} with the thread count given.",
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
    best = tsunami["best_float64"]
    lines += [
        "",
        f"Best same-precision (float64) speed-up: {best['speedup_vs_numpy']:.2f}x "
        f"({best['variant']}); target {best['target']:g}x "
        f"{'met' if best['target_met'] else 'NOT met'}. float32 rows compare against the "
        "float64 numpy baseline and are not the headline.",
    ]
    built = tsunami.get("fused_build_seconds_this_run")
    lines += ["", "Fused C++ step (`kernel=\"fused\"`, the default `\"auto\"` once cached): "
              + (f"built in this run in {built:.0f} s." if built is not None
                 else "loaded from the on-disk cache (built by an earlier process).")]
    if tsunami["compile_seconds"]:
        spent = ", ".join(f"{seconds:.0f} s" for seconds in tsunami["compile_seconds"].values())
        lines += ["", f"One-off compilation (untimed) per dtype and thread count: {spent}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
