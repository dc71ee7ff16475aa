"""Lorenz-96 filter benchmark: xldensf's EnKF/ETKF/LETKF against DAPPER, side by side.

Setting of Sakov & Oke (2008) as reproduced by DAPPER (``mods/Lorenz96/sakov2008.py``,
REFERENCES.md section 3): N = 40, F = 8, RK4 with dt = 0.05, every variable observed every
step with R = I, no model noise, initial ensemble ~ N(mu, 0.001 I). One truth and one set
of observations are generated here, saved to a temporary ``.npz`` and fed to both codes;
DAPPER runs in its own virtual environment (``benchmarks/dapper_lorenz96.py``).

Recorded: time-averaged analysis RMSE after burn-in and wall time of each code, in
``benchmarks/results/lorenz96_filters.json`` and ``.md``.

Usage::

    .venv/bin/python benchmarks/lorenz96_filters.py [--cycles 10000] [--burn-in 1000]
        [--dapper .venv-dapper/bin/python] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import xldensf
from xldensf.filters import cycle, get_filter
from xldensf.simulators.lorenz96 import lorenz96_tendency

RESULTS = Path(__file__).parent / "results"
N_SITES, FORCING, DT, INITIAL_VARIANCE, OBS_STD = 40, 8.0, 0.05, 0.001, 1.0

#: Configurations and DAPPER's published RMSE (REFERENCES.md section 3 / the issue).
CONFIGS = [
    {"label": "ETKF N=24 infl=1.013 rot", "method": "etkf", "N": 24, "infl": 1.013,
     "rot": True, "published": 0.18},
    {"label": "EnKF PertObs N=40 infl=1.06", "method": "enkf", "N": 40, "infl": 1.06,
     "published": 0.22},
    {"label": "LETKF N=7 infl=1.04 loc=4", "method": "letkf", "N": 7, "infl": 1.04,
     "loc_rad": 4.0, "published": 0.22},
    {"label": "ETKF N=40 infl=1.02", "method": "etkf", "N": 40, "infl": 1.02,
     "published": 0.17},
    {"label": "LETKF N=20 infl=1.04 loc=4", "method": "letkf", "N": 20, "infl": 1.04,
     "loc_rad": 4.0, "published": 0.21},
]


def rk4_step(x: torch.Tensor) -> torch.Tensor:
    """One RK4 step of Lorenz-96 (F = 8) on ``(..., 40)`` states."""
    k1 = lorenz96_tendency(x, FORCING)
    k2 = lorenz96_tendency(x + 0.5 * DT * k1, FORCING)
    k3 = lorenz96_tendency(x + 0.5 * DT * k2, FORCING)
    k4 = lorenz96_tendency(x + DT * k3, FORCING)
    return x + DT / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)


def fused_rk4_step(x: torch.Tensor) -> torch.Tensor:
    """:func:`rk4_step` with fewer torch calls (the forecast model of the timed cycles).

    The neighbours ``x_{k+1}, x_{k-2}, x_{k-1}`` come from one padded copy of ``x`` (views,
    no ``torch.roll``) and the stage sums use ``alpha=``; the same arithmetic up to rounding.
    """
    def tendency(state: torch.Tensor) -> torch.Tensor:
        padded = torch.cat((state[..., -2:], state, state[..., :1]), dim=-1)
        return torch.addcmul(FORCING - state, padded[..., 3:] - padded[..., :-3],
                             padded[..., 1:-2])

    k1 = tendency(x)
    k2 = tendency(torch.add(x, k1, alpha=0.5 * DT))
    k3 = tendency(torch.add(x, k2, alpha=0.5 * DT))
    k4 = tendency(torch.add(x, k3, alpha=DT))
    return torch.add(x, (k1 + k4).add_(k2, alpha=2.0).add_(k3, alpha=2.0), alpha=DT / 6.0)


def advance(ensemble: torch.Tensor, t0: float, duration: float) -> torch.Tensor:
    """Forecast model of :func:`xldensf.filters.cycle`: whole RK4 steps."""
    for _ in range(round(duration / DT)):
        ensemble = fused_rk4_step(ensemble)
    return ensemble


def make_data(cycles: int, seed: int) -> dict[str, np.ndarray]:
    """Truth ``xx`` (cycles + 1, 40) and observations ``yy`` (cycles, 40) at steps 1..K."""
    generator = torch.Generator().manual_seed(seed)
    x = FORCING + torch.randn(N_SITES, generator=generator, dtype=torch.float64)
    for _ in range(5000):  # onto the attractor
        x = rk4_step(x)
    mu = x.clone()
    x = mu + INITIAL_VARIANCE**0.5 * torch.randn(N_SITES, generator=generator,
                                                 dtype=torch.float64)
    truth = [x]
    for _ in range(cycles):
        x = rk4_step(x)
        truth.append(x)
    xx = torch.stack(truth)
    yy = xx[1:] + OBS_STD * torch.randn(xx[1:].shape, generator=generator, dtype=torch.float64)
    return {"xx": xx.numpy(), "yy": yy.numpy(), "mu": mu.numpy()}


def make_filter(config: dict):
    if config["method"] == "etkf":
        return get_filter("etkf", inflation=config["infl"], rotate=config.get("rot", False))
    if config["method"] == "enkf":
        return get_filter("enkf", inflation=config["infl"])
    return get_filter("letkf", inflation=config["infl"], localization=config["loc_rad"],
                      distance="periodic", period=float(N_SITES))


def run_xldensf(config: dict, data: dict, burn_in: int, seed: int) -> dict:
    """Run one configuration with xldensf; analysis RMSE after burn-in and wall time."""
    generator = torch.Generator().manual_seed(seed)
    truth, observations = torch.from_numpy(data["xx"]), torch.from_numpy(data["yy"])
    mu = torch.from_numpy(data["mu"])
    initial = mu + INITIAL_VARIANCE**0.5 * torch.randn(config["N"], N_SITES, generator=generator,
                                                       dtype=torch.float64)
    sites = torch.arange(N_SITES, dtype=torch.float64)
    cycles = observations.shape[0]
    start = time.perf_counter()
    result = cycle(make_filter(config), advance, initial, DT * torch.arange(1, cycles + 1),
                   observations, torch.eye(N_SITES, dtype=torch.float64), OBS_STD,
                   generator=generator, state_positions=sites, observation_positions=sites,
                   summary=lambda ensemble: ensemble.mean(-2), progress=False)
    wall = time.perf_counter() - start
    rmse = (result.analysis - truth[1:]).square().mean(-1).sqrt()
    return {"rmse": float(rmse[burn_in:].mean()), "wall_s": wall}


def run_dapper(python: str, data: dict, burn_in: int, configs: list[dict]) -> dict:
    """Run ``dapper_lorenz96.py`` in DAPPER's environment on the same data."""
    with tempfile.TemporaryDirectory() as folder:
        data_path, configs_path = Path(folder) / "l96.npz", Path(folder) / "configs.json"
        out_path = Path(folder) / "dapper.json"
        np.savez(data_path, **data, dt=DT, burn_in=burn_in, initial_variance=INITIAL_VARIANCE,
                 obs_std=OBS_STD)
        configs_path.write_text(json.dumps(configs))
        script = Path(__file__).with_name("dapper_lorenz96.py")
        subprocess.run([python, str(script), str(data_path), str(configs_path), str(out_path)],
                       check=True)
        return json.loads(out_path.read_text())


def write_tables(record: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "lorenz96_filters.json").write_text(json.dumps(record, indent=1))
    lines = [
        "# Lorenz-96 filter benchmark (Sakov & Oke 2008 setting)",
        "",
        f"N = 40, F = 8, dt = 0.05, R = I, all variables observed every step; "
        f"{record['cycles']} cycles, RMSE averaged after {record['burn_in']} burn-in cycles; "
        f"same truth and observations for both codes. torch threads: {record['threads']}. "
        f"DAPPER: {record.get('dapper_version', 'not run')}.",
        "",
        "| configuration | published | xldensf RMSE | DAPPER RMSE | xldensf s | DAPPER s "
        "| speed-up | load (1 min avg, before/after) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        dapper_rmse = f"{row['dapper_rmse']:.4f}" if "dapper_rmse" in row else "-"
        dapper_wall = f"{row['dapper_wall_s']:.1f}" if "dapper_wall_s" in row else "-"
        speedup = f"{row['speedup']:.1f}x" if "speedup" in row else "-"
        lines.append(f"| {row['label']} | {row['published']} | {row['rmse']:.4f} | "
                     f"{dapper_rmse} | {row['wall_s']:.1f} | {dapper_wall} | {speedup} | "
                     f"{row['load_before']:.1f} / {row['load_after']:.1f} |")
    lines += ["", "Each configuration runs in xldensf, then in DAPPER (its default settings, "
              "progress bar off), one after the other, so both see about the same load; the "
              "xldensf forecast is a torch RK4 (`fused_rk4_step`), DAPPER's its numpy RK4.",
              "", f"Command: `{record['command']}`; machine: {record['machine']}, "
              f"{record['cpu_count']} CPUs (shared).", ""]
    (RESULTS / "lorenz96_filters.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=10000)
    parser.add_argument("--burn-in", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dapper", default=str(Path(__file__).parents[1] / ".venv-dapper"
                                                 / "bin" / "python"))
    parser.add_argument("--only", nargs="*", help="labels to run (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    configs = [c for c in CONFIGS if not args.only or c["label"] in args.only]
    data = make_data(args.cycles, args.seed)
    run_dapper_too = Path(args.dapper).exists()
    rows, dapper_version = [], f"not run: {args.dapper} not found"
    # Side by side: each configuration runs in xldensf and then in DAPPER, so that both
    # see about the same machine load (recorded as the 1-minute load average).
    for config in configs:
        row = {**config, "load_before": os.getloadavg()[0],
               **run_xldensf(config, data, args.burn_in, args.seed)}
        print(f"xldensf {config['label']}: rmse {row['rmse']:.4f}, {row['wall_s']:.1f} s",
              flush=True)
        if run_dapper_too:
            dapper = run_dapper(args.dapper, data, args.burn_in, [config])
            dapper_version = dapper["dapper_version"]
            result = dapper["results"][0]
            row.update(dapper_rmse=result["rmse"], dapper_wall_s=result["wall_s"],
                       speedup=result["wall_s"] / row["wall_s"])
        row["load_after"] = os.getloadavg()[0]
        rows.append(row)
    record = {"cycles": args.cycles, "burn_in": args.burn_in, "seed": args.seed,
              "threads": args.threads, "xldensf_version": xldensf.__version__,
              "torch_version": torch.__version__, "machine": platform.platform(),
              "cpu_count": os.cpu_count(), "dapper_version": dapper_version,
              "command": "python benchmarks/lorenz96_filters.py " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                  if k in ("cycles", "burn_in", "seed", "threads")), "rows": rows}
    write_tables(record)


if __name__ == "__main__":
    main()
