"""Free run (no assimilation) of the quick atmosphere benchmark's truths.

Truth i: ``xl.simulate("atmosphere", runs=1, seed=1000 + i, preset="small")`` (the held-out
truths of ``xldensf benchmark atmosphere --quick --seed 0``). Free run: the full model at the
prior mean ``hf0 = 15.05 m, sigma = 2.5 rad``, scored against each truth with
:func:`xldensf.metrics.relative_rmse` of the ``h`` anomaly (``h`` minus its area-weighted
mean), ``u`` and ``v``. Pass ``weak`` to score the former weak-forcing small setting
(:data:`xldensf.simulators.sphere.WEAK_FORCING_SMALL`).

Usage: ``OMP_NUM_THREADS=1 python benchmarks/atmosphere_free_run.py [TRUTHS] [weak]``
"""

import json
import sys

import numpy as np
import torch

import xldensf as xl
from xldensf.metrics import relative_rmse, spatial_anomaly
from xldensf.simulators.sphere import WEAK_FORCING_SMALL

torch.set_num_threads(1)
xl.set_options(progress=False)
truths = int(sys.argv[1]) if len(sys.argv) > 1 else 5
options = WEAK_FORCING_SMALL if "weak" in sys.argv[2:] else {}
names = ["h_anomaly", "u", "v"]
parameters = ("hf0", "sigma")


def run(**kwargs):
    """One atmosphere run of the small preset with its h anomaly."""
    ds = xl.simulate("atmosphere", preset="small", **options, **kwargs).isel(run=0)
    return spatial_anomaly(ds, ["h"]).drop_vars(parameters)


forecast = run(parameters={"hf0": [15.05], "sigma": [2.5]})
out = {"setting": "weak" if options else "small", "final": {n: [] for n in names},
       "mean_over_frames_1_end": {n: [] for n in names}, "truth_parameters": []}
for i in range(truths):
    truth_ds = xl.simulate("atmosphere", preset="small", runs=1, seed=1000 + i,
                           **options).isel(run=0)
    out["truth_parameters"].append([float(truth_ds[p]) for p in parameters])
    truth = spatial_anomaly(truth_ds, ["h"]).drop_vars(parameters)
    scores = relative_rmse(forecast, truth, names)
    for n in names:
        out["final"][n].append(float(scores[n].values[-1]))
        out["mean_over_frames_1_end"][n].append(float(scores[n].values[1:].mean()))
out["means"] = {key: {n: float(np.mean(out[key][n])) for n in names}
                for key in ("final", "mean_over_frames_1_end")}
print(json.dumps(out, indent=1))
