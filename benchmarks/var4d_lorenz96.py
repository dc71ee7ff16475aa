"""4D-Var on Lorenz-96 against DAPPER's Var4D (Bocquet & Sakov 2013, Fig. 4 setting).

DAPPER's ``mods.Lorenz96.sakov2008`` with observations every 4 steps: N = 40, F = 8, RK4
with dt = 0.05, every variable observed every ``dko = 4`` steps (0.2 time units) with
R = I, no model noise, 1000 observation cycles, burn-in 20 time units (2 Tplot),
B = xB * the climatological covariance of the truth (``--background eye``: xB * I, the
default of DAPPER's Var4D when its notes were written; DAPPER 1.x's default is the
climatology). DAPPER's suggested tunings and their RMSEs: Lag 1, xB 0.2 -> 0.46; Lag 2,
xB 0.1 -> 0.39; Lag 4, xB 0.02 -> 0.37.

xldensf runs through the public path, ``obs.ldensf.assimilate(xl.simulator("lorenz96"),
method="4dvar", window=lag, background_covariance=xB * B, ...)``, Gauss-Newton with 10
iterations per window (DAPPER's nIter = 10, wtol = 0). DAPPER runs on the same truth,
observations and background in its own virtual environment (this file, ``--dapper-worker``
mode, imports only numpy and DAPPER there)::

    python3 -m venv /tmp/venv-dapper && /tmp/venv-dapper/bin/pip install dapper
    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/var4d_lorenz96.py \\
        --dapper-python /tmp/venv-dapper/bin/python

Results go to ``benchmarks/results/var4d_lorenz96.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: (label, lag, xB, DAPPER's published RMSE) of the sakov2008 tuning notes.
CONFIGS = [("Var4D Lag 1", 1, 0.2, 0.46), ("Var4D Lag 2", 2, 0.1, 0.39),
           ("Var4D Lag 4", 4, 0.02, 0.37)]
DT, DKO, BURN_IN_TIME = 0.05, 4, 20.0
RESULTS = Path(__file__).parent / "results"
#: ``--background``: the shape of B (scaled by xB).
BACKGROUNDS = {"clim": "the climatological covariance of the truth", "eye": "the identity"}


class _ResolvedOperator:
    """DAPPER's observation operator at one time that also accepts being called with the
    time again: DAPPER 1.7.1's ``Var4D`` does ``Obs = HMM.Obs(ko)`` and then
    ``Obs(ko).linear(x)``, which calls the resolved operator with ``ko`` as the state (an
    upstream bug; the same code is on DAPPER's master). Any other call is passed on."""

    def __init__(self, operator):
        self._operator = operator

    def __call__(self, *args, **kwargs):
        if len(args) == 1 and not kwargs and isinstance(args[0], (int, np.integer)):
            return self
        return self._operator(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._operator, name)


class PatchedObs:
    """``HMM.Obs`` whose ``Obs(ko)`` is a :class:`_ResolvedOperator`."""

    def __init__(self, obs):
        self._obs = obs

    def __call__(self, ko):
        return _ResolvedOperator(self._obs(ko))

    def __getattr__(self, name):
        return getattr(self._obs, name)


def dapper_worker(data_path: str, out_path: str, dko: int = DKO) -> None:
    """Run DAPPER's Var4D on the saved data (inside DAPPER's environment)."""
    import dapper
    import dapper.da_methods as da
    import dapper.mods as modelling
    import dapper.tools.progressbar
    from dapper.mods.Lorenz96 import dstep_dx, step

    dapper.tools.progressbar.disable_progbar = True
    data = dict(np.load(data_path))
    dko = int(data.get("dko", dko))
    truth, observations = data["xx"], data["yy"]
    n_state, cycles = truth.shape[1], observations.shape[0]
    tseq = modelling.Chronology(DT, dko=dko, Ko=cycles - 1, BurnIn=BURN_IN_TIME)
    dynamics = {"M": n_state, "model": step, "linear": dstep_dx, "noise": 0}
    observation = modelling.partial_Id_Obs(n_state, np.arange(n_state))
    observation["noise"] = 1.0
    initial = modelling.GaussRV(mu=data["mu"], C=0.001)
    model = modelling.HiddenMarkovModel(dynamics, observation, tseq, initial)
    model.Obs = PatchedObs(model.Obs)
    results = []
    for label, lag, xb, _ in CONFIGS:
        method = da.Var4D(B=data["B"], xB=xb, Lag=lag, nIter=10)
        start = time.perf_counter()
        method.assimilate(model, truth, observations)
        wall = time.perf_counter() - start
        method.stats.average_in_time()
        results.append({"label": label, "rmse": float(method.avrgs.err.rms.a.val),
                        "wall_s": wall, "dapper_method": repr(method).split("\n")[0][:200]})
    with open(out_path, "w") as file:
        json.dump({"dapper_version": dapper.__version__, "results": results}, file, indent=1)


def make_data(cycles: int, seed: int, dko: int = DKO, background: str = "clim") -> dict:
    """Truth at every step, observations every ``dko`` steps (absolute std 1), background
    shape ``B`` (``"clim"``: the truth's climatological covariance, DAPPER 1.x's default;
    ``"eye"``: the identity, the default of DAPPER's Var4D when its notes were written)."""
    import xldensf as xl
    from xldensf.conventions import units

    truth = xl.simulate("lorenz96", runs=1, seed=seed, n_outputs=cycles * dko + 1,
                        forcing_prior=(8.0, 8.0), progress=False).isel(run=0)
    obs = truth.isel(time=slice(dko, None, dko)).ldensf.observe(
        stations="40", noise=units.Quantity(1.0, "dimensionless"), seed=seed)
    xx = truth["x"].values
    rng = np.random.default_rng(seed)
    mu = xx[0] + np.sqrt(0.001) * rng.standard_normal(xx.shape[1])  # DAPPER's X0 law
    return {"truth": truth, "obs": obs, "xx": xx, "yy": obs["x"].values,
            "mu": mu, "B": np.cov(xx.T) if background == "clim" else np.eye(xx.shape[1]),
            "dko": dko}


def run_xldensf(data: dict) -> list[dict]:
    """Each configuration through ``obs.ldensf.assimilate(..., method="4dvar")``."""
    import xldensf as xl

    prior = data["truth"].isel(time=0).copy()
    prior["x"] = prior["x"].copy(data=data["mu"])
    truth_at_obs = data["xx"][data["dko"]::data["dko"]]
    keep = data["obs"]["time"].values > BURN_IN_TIME + 1e-9
    results = []
    for label, lag, xb, published in CONFIGS:
        start = time.perf_counter()
        analysis = data["obs"].ldensf.assimilate(
            xl.simulator("lorenz96"), method="4dvar", window=lag, prior=prior,
            background_covariance=xb * data["B"], estimate_parameters=False,
            background_time=0.0, max_iter=10, tol=0.0, seed=0, progress=False)
        wall = time.perf_counter() - start
        error = analysis["x"].isel(member=0).values - truth_at_obs
        rmse = float(np.sqrt((error[keep] ** 2).mean(axis=1)).mean())
        results.append({"label": label, "lag": lag, "xB": xb, "rmse": rmse, "wall_s": wall,
                        "published_dapper_rmse": published,
                        "within_10_percent_of_published": abs(rmse - published)
                        <= 0.1 * published,
                        "mean_iterations": float(analysis["iterations"].mean())})
    return results


def run_dapper(data: dict, python: str) -> dict | None:
    """DAPPER on the same data in its own interpreter; None if it cannot run."""
    with tempfile.TemporaryDirectory() as folder:
        data_path, out_path = os.path.join(folder, "data.npz"), os.path.join(folder, "o.json")
        np.savez(data_path, xx=data["xx"], yy=data["yy"], mu=data["mu"], B=data["B"],
                 dko=data["dko"])
        env = {**os.environ, "PYTHONPATH": "", "OMP_NUM_THREADS": "1", "MPLBACKEND": "agg"}
        process = subprocess.run([python, __file__, "--dapper-worker", data_path, out_path],
                                 env=env, capture_output=True, text=True, check=False)
        if process.returncode != 0:
            return {"error": process.stderr[-2000:]}
        with open(out_path) as file:
            return json.load(file)


def write(record: dict, stem: str = "var4d_lorenz96") -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(record, indent=1) + "\n")
    dapper = {row["label"]: row for row in (record.get("dapper") or {}).get("results", [])}
    lines = ["# 4D-Var on Lorenz-96: xldensf vs DAPPER Var4D", "",
             f"Command: `{record['command']}`", "", record["setting"], "",
             "| configuration | xldensf RMSE | xldensf wall (s) | DAPPER RMSE (same data) "
             "| DAPPER wall (s) | DAPPER published | within 10% of published |",
             "|---|---|---|---|---|---|---|"]
    for row in record["xldensf"]:
        other = dapper.get(row["label"], {})
        dapper_rmse = f"{other['rmse']:.3f}" if other else "n/a"
        dapper_wall = f"{other['wall_s']:.1f}" if other else "n/a"
        lines.append(f"| {row['label']}, xB {row['xB']} | {row['rmse']:.3f} | "
                     f"{row['wall_s']:.1f} | {dapper_rmse} | {dapper_wall} | "
                     f"{row['published_dapper_rmse']} | "
                     f"{'yes' if row['within_10_percent_of_published'] else 'no'} |")
    lines += ["", f"DAPPER version: {(record.get('dapper') or {}).get('dapper_version', 'n/a')}"
              f"; xldensf {record['xldensf_version']}; torch {record['torch_version']}.", ""]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dapper-python", default=None)
    parser.add_argument("--dapper-worker", nargs=2, metavar=("DATA", "OUT"))
    parser.add_argument("--dko", type=int, default=DKO,
                        help="model steps between observations (sakov2008 itself: 1)")
    parser.add_argument("--background", choices=sorted(BACKGROUNDS), default="clim",
                        help="B's shape: the truth's climatology (DAPPER 1.x's default) or "
                             "the identity (DAPPER's default when the notes were written)")
    parser.add_argument("--output", default="var4d_lorenz96",
                        help="file stem in benchmarks/results/")
    args = parser.parse_args()
    if args.dapper_worker:
        dapper_worker(*args.dapper_worker)
        return
    import torch

    import xldensf as xl

    data = make_data(args.cycles, args.seed, args.dko, args.background)
    record = {
        "command": "OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/var4d_lorenz96.py "
                   + " ".join(sys.argv[1:]),
        "setting": (f"N = 40, F = 8, dt = {DT}, all variables observed every {args.dko} steps, "
                    f"R = I, {args.cycles} cycles, RMSE averaged over analysis times after "
                    f"t = {BURN_IN_TIME:g}; B = xB * {BACKGROUNDS[args.background]}; "
                    "Gauss-Newton, 10 iterations per window; seed "
                    f"{args.seed}. DAPPER published: sakov2008 tuning notes (Bocquet & Sakov "
                    "2013, Fig. 4)."),
        "xldensf_version": xl.__version__, "torch_version": torch.__version__,
        "xldensf": run_xldensf(data),
        "dapper": run_dapper(data, args.dapper_python) if args.dapper_python else None,
    }
    write(record, args.output)


if __name__ == "__main__":
    main()
