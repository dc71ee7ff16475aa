"""LETKF localisation radius on the quick atmosphere benchmark (5 truths, its surrogate).

Runs ``run_benchmark("atmosphere", quick=True, truths=5, methods=["letkf"])`` once per
radius [m] (inflation 1.05, as ``BENCHMARK_CASES``) and prints the mean final relative RMSE.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/atmosphere_letkf_radius.py MODEL.ldensf R1 R2 ...``
"""

import sys

import torch

import xldensf as xl
from xldensf.experiments import run_benchmark

torch.set_num_threads(1)
model = xl.load_model(sys.argv[1])
for radius in map(float, sys.argv[2:]):
    result = run_benchmark("atmosphere", quick=True, truths=5, methods=["letkf"], model=model,
                           seed=0, progress=False,
                           filter_settings={"letkf": {"inflation": 1.05,
                                                      "localization": radius}})
    runs = result["methods"]["letkf"]["runs"]
    finals = {name: sum(run["final"][name] for run in runs) / len(runs)
              for name in runs[0]["final"]}
    print(f"radius {radius:.3g} m, mean final relative RMSE:",
          ", ".join(f"{name} {value:.4f}" for name, value in finals.items()), flush=True)
