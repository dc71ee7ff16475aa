"""Speed-up of the LD-EnSF benchmark on dask.distributed: serial against N worker processes.

The same ``run_benchmark`` call (a small setting: the quick tsunami with the shipped
surrogate, a few truths and methods) runs once serially in this process (one torch thread)
and once with ``client=`` a ``LocalCluster`` of N single-threaded worker processes,
side by side in one run; the scores of the two runs are checked to be identical (only wall
times may differ). The cluster's start-up is timed apart from the benchmark.

Usage::

    python benchmarks/benchmark_distributed.py [--workers 2] [--truths 4]
        [--methods ld-ensf-decoder enkf] [--latent-members 20] [--output benchmarks/results]

Writes ``benchmark_distributed.json`` and ``benchmark_distributed.md``. On a shared machine
the times are noisy: the load average before and after is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

import xldensf
from xldensf.experiments import run_benchmark
from xldensf.experiments.benchmark import distributed_client

#: Per-record keys that are wall times.
TIMES = {"seconds", "seconds_per_cycle", "filter_seconds_per_cycle", "call_seconds", "phases"}


def scores(result: dict) -> dict:
    """The result without wall times: what must not depend on the workers (compared as
    JSON text, where NaN equals NaN)."""
    return {"methods": {method: [{k: v for k, v in run.items() if k not in TIMES}
                                 for run in entry["runs"]]
                        for method, entry in result["methods"].items()},
            "truth_parameters": result["truth_parameters"]}


def markdown(results: dict) -> str:
    s = results["setting"]
    lines = [
        "# LD-EnSF benchmark on dask.distributed",
        "",
        f"`{results['command']}`",
        "",
        f"Setting: `run_benchmark(\"{s['case']}\", quick=True, truths={s['truths']}, "
        f"latent_members={s['latent_members']}, methods={s['methods']})` with the shipped "
        f"surrogate; {s['truths'] * len(s['methods'])} (truth, method) tasks plus "
        f"{s['truths']} truth simulations.",
        "",
        "| run | wall time (s) | speed-up |",
        "|---|---|---|",
        f"| serial, this process, 1 torch thread | {results['serial_s']:.1f} | 1.00 |",
        f"| LocalCluster, {results['workers']} worker processes x 1 thread | "
        f"{results['distributed_s']:.1f} | {results['speedup']:.2f} |",
        "",
        f"Cluster start-up (not included above): {results['cluster_startup_s']:.1f} s. "
        f"Scores identical to the serial run: **{results['identical']}**.",
        "",
        f"Machine: {results['environment']['cpus']} CPU cores, shared with other jobs; "
        f"load average before {results['load_before']}, after {results['load_after']}. "
        "Serial first, then distributed, in one process.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="tsunami")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--truths", type=int, default=4)
    parser.add_argument("--latent-members", type=int, default=20)
    parser.add_argument("--methods", nargs="+", default=["ld-ensf-decoder", "enkf"])
    parser.add_argument("--output", default="benchmarks/results")
    args = parser.parse_args()
    torch.set_num_threads(1)   # as each worker (the nanny sets OMP_NUM_THREADS=1)
    settings = {"quick": True, "truths": args.truths, "latent_members": args.latent_members,
                "methods": args.methods, "progress": False}
    load_before = [round(x, 2) for x in os.getloadavg()]
    start = time.perf_counter()
    serial = run_benchmark(args.case, **settings)
    serial_s = time.perf_counter() - start
    start = time.perf_counter()
    with distributed_client(workers=args.workers) as client:
        client.wait_for_workers(args.workers)
        startup = time.perf_counter() - start
        start = time.perf_counter()
        parallel = run_benchmark(args.case, client=client, **settings)
        distributed_s = time.perf_counter() - start
    load_after = [round(x, 2) for x in os.getloadavg()]
    results = {
        "command": "python benchmarks/benchmark_distributed.py --workers "
                   f"{args.workers} --truths {args.truths} --methods {' '.join(args.methods)}"
                   f" --latent-members {args.latent_members}",
        "setting": {"case": args.case, "truths": args.truths, "methods": args.methods,
                    "latent_members": args.latent_members,
                    "members": serial["setting"]["members"]},
        "workers": args.workers, "serial_s": serial_s, "distributed_s": distributed_s,
        "speedup": serial_s / distributed_s, "cluster_startup_s": startup,
        "identical": json.dumps(scores(serial)) == json.dumps(scores(parallel)),
        "load_before": load_before, "load_after": load_after,
        "environment": {"xldensf": xldensf.__version__, "torch": torch.__version__,
                        "cpus": os.cpu_count(), "python": platform.python_version()},
    }
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "benchmark_distributed.json").write_text(json.dumps(results, indent=2) + "\n")
    (output / "benchmark_distributed.md").write_text(markdown(results))


if __name__ == "__main__":
    main()
