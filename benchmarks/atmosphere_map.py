"""Map of truth and LD-EnSF analysis of the ``h`` anomaly at the final frame (small atmosphere).

Truth: benchmark truth 0 (``seed=1000``), observed at 9 random stations (0.44 % of the grid)
with 10 % noise; LD-EnSF with the surrogate the quick benchmark trained, 200 members.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/atmosphere_map.py MODEL.ldensf OUT.png``
"""

import sys

import cartopy.crs as ccrs
import torch

import xldensf as xl

torch.set_num_threads(1)
xl.set_options(progress=False)
model = xl.load_model(sys.argv[1])
truth = xl.simulate("atmosphere", runs=1, seed=1000, preset="small").isel(run=0)
obs = truth.ldensf.observe(stations=9, noise=0.1, seed=0)
analysis = obs.ldensf.assimilate(model, members=200, seed=0)
truth_a = xl.metrics.spatial_anomaly(truth, ["h"])
analysis_a = xl.metrics.spatial_anomaly(analysis, ["h"])
score = analysis_a.ldensf.relative_rmse(truth_a)["h_anomaly"]
error = analysis_a["h_anomaly"].isel(time=-1).mean("member") - truth_a["h_anomaly"].isel(time=-1)
print(f"final h_anomaly relative RMSE: {float(score[-1]):.4f}; max |error| "
      f"{float(abs(error).max()):.1f} m; max |truth| "
      f"{float(abs(truth_a['h_anomaly'].isel(time=-1)).max()):.1f} m")
figure = analysis_a.ldensf.plot(truth_a, "h_anomaly", time=truth.time.values[-1],
                                stations=obs, projection=ccrs.Robinson())
figure.suptitle("small atmosphere, final frame (72 h): LD-EnSF vs truth, h anomaly")
figure.savefig(sys.argv[2], dpi=90, bbox_inches="tight")
