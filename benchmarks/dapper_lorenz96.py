"""Run DAPPER's filters on a saved Lorenz-96 truth and observations (Sakov & Oke 2008 setting).

Runs inside DAPPER's own virtual environment (it pins old Jupyter packages), e.g.::

    python3 -m venv .venv-dapper && .venv-dapper/bin/pip install dapper   # DAPPER 1.7.1
    .venv-dapper/bin/python benchmarks/dapper_lorenz96.py data.npz configs.json out.json

``data.npz`` (written by ``benchmarks/lorenz96_filters.py``) holds the truth ``xx``
``(K + 1, 40)``, the observations ``yy`` ``(K, 40)`` at steps 1..K, the initial-ensemble
mean ``mu``, ``dt`` and the burn-in length in cycles ``burn_in``. ``configs.json`` is a list
of ``{"label", "method", "N", "infl", "rot", "loc_rad"}``. For each, the time-averaged
analysis RMSE after burn-in and the wall time of ``assimilate`` are written to ``out.json``.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def build_model(data):
    """DAPPER's ``mods.Lorenz96.sakov2008`` HMM with our time sequence and initial law."""
    import dapper.mods as modelling
    from dapper.mods.Lorenz96 import step
    from dapper.tools.localization import nd_Id_localization

    n_state = data["xx"].shape[1]
    cycles = data["yy"].shape[0]
    dt = float(data["dt"])
    tseq = modelling.Chronology(dt, dko=1, Ko=cycles - 1, BurnIn=int(data["burn_in"]) * dt)
    dynamics = {"M": n_state, "model": step, "noise": 0}
    initial = modelling.GaussRV(mu=data["mu"], C=float(data["initial_variance"]))
    observation = modelling.partial_Id_Obs(n_state, np.arange(n_state))
    observation["noise"] = float(data["obs_std"]) ** 2
    observation["localizer"] = nd_Id_localization((n_state,), (1,))
    return modelling.HiddenMarkovModel(dynamics, observation, tseq, initial)


def make_method(config):
    """The DAPPER method object of one configuration."""
    import dapper.da_methods as da

    if config["method"] == "etkf":
        return da.EnKF("Sqrt", config["N"], infl=config["infl"], rot=config.get("rot", False))
    if config["method"] == "enkf":
        return da.EnKF("PertObs", config["N"], infl=config["infl"])
    if config["method"] == "letkf":
        return da.LETKF(config["N"], loc_rad=config["loc_rad"], infl=config["infl"])
    raise ValueError(f"method: expected etkf, enkf or letkf, found {config['method']!r}")


def main(data_path: str, configs_path: str, out_path: str) -> None:
    import dapper
    import dapper.tools.progressbar

    dapper.tools.progressbar.disable_progbar = True  # time the filter, not the bar
    data = dict(np.load(data_path))
    with open(configs_path) as file:
        configs = json.load(file)
    model = build_model(data)
    truth, observations = data["xx"], data["yy"]
    results = []
    for config in configs:
        np.random.seed(int(config.get("seed", 0)))  # noqa: NPY002 - DAPPER draws from it
        method = make_method(config)
        start = time.perf_counter()
        method.assimilate(model, truth, observations, liveplots=False)
        wall = time.perf_counter() - start
        method.stats.average_in_time()
        rmse = float(method.avrgs.err.rms.a.val)
        results.append({"label": config["label"], "rmse": rmse, "wall_s": wall,
                        "dapper_method": repr(method)})
        print(f"DAPPER {config['label']}: rmse {rmse:.4f}, {wall:.1f} s", flush=True)
    with open(out_path, "w") as file:
        json.dump({"dapper_version": dapper.__version__, "results": results}, file, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:4])
