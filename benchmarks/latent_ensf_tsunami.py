"""Latent-EnSF (coupled VAE + EnSF in its latent, full-order forecasts) on the small tsunami.

Trains the coupled VAE (:func:`xldensf.surrogate.fit_vae`) on ``--runs`` simulated runs
(seed 1, every frame) for the regular 10 x 10 layout observing ``u, v, eta``; then, for
each held-out truth (seeds 101 and 102, as ``benchmarks/full_space_baselines.py``), observes
at the VAE's stations with 10 % noise (seed 0) and runs, from the same prior ensemble (the
case's parameter prior, seed 0, 20 members):

- ``latent-ensf``: ``method="latent-ensf", vae=vae`` (default EnSF settings in the latent);
- ``letkf``: the full-space LETKF of the baselines (inflation 1.05, localisation 150 km);
- ``free``: the prior ensemble run freely (an ETKF with an observation error of 1e6).

Recorded: the VAE's training time and held-out reconstruction error (state encoder ->
decoder, and observation encoder -> decoder from noise-free station values), and per
method and truth the relative RMSE of the ensemble mean of eta at the last frame and
averaged over frames 1..end, spread/skill, and the wall time. Results go to
``benchmarks/results/latent_ensf_tsunami.{json,md}``.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latent_ensf_tsunami.py
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

import xldensf as xl
from xldensf.geometry import InterpolationOperator, regular_layout
from xldensf.geometry.grid import GridGeometry
from xldensf.io import json_safe
from xldensf.surrogate import VAEModel, fit_vae

TRUTHS = (101, 102)
LETKF = {"inflation": 1.05, "localization": 150000.0}
VARIABLES = ("u", "v", "eta")


def scores(analysis: xr.Dataset, truth: xr.Dataset, name: str = "eta") -> dict[str, Any]:
    """Relative RMSE of the ensemble mean and spread/skill of ``name`` per frame."""
    mean = analysis[name].mean("member")
    grid = [dim for dim in truth[name].dims if dim != "time"]
    error = np.sqrt(((mean - truth[name]) ** 2).sum(grid).values)
    norm = np.sqrt((truth[name] ** 2).sum(grid).values)
    spread = np.sqrt(analysis[name].var("member", ddof=1).sum(grid).values)
    relative = error / norm
    return {"relative_rmse_by_frame": relative.tolist(),
            "relative_rmse_final": float(relative[-1]),
            "relative_rmse_mean": float(np.mean(relative[1:])),
            "spread_skill_mean": float(np.mean(spread[1:] / error[1:]))}


def reconstruction(vae: Any, dataset: xr.Dataset) -> dict[str, list[float]]:
    """Relative L2 error per variable of state-encoder and observation-encoder
    reconstructions (latent means) of every frame of ``dataset``."""
    fields = torch.as_tensor(np.stack([dataset[v].values for v in VARIABLES], axis=2)
                             .reshape(-1, 3, *dataset["eta"].shape[-2:]), dtype=torch.float32)
    geometry = GridGeometry.from_dataset(dataset)
    operator = InterpolationOperator.from_grid(geometry, vae.stations)
    observed = torch.cat([operator(fields[:, i]) for i in range(3)], dim=-1)
    out = {}
    for label, latent in (("state", vae.encode_state(fields)[0]),
                          ("observation", vae.encode_observations(observed)[0])):
        decoded = vae.decode(latent)
        out[label] = ((decoded - fields).square().sum(dim=(0, 2, 3))
                      / fields.square().sum(dim=(0, 2, 3))).sqrt().tolist()
    return out


def write_json(results: dict[str, Any], output: Path) -> None:
    """Write ``results`` to ``output.json`` (after every run: partial results survive)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(json_safe(results, strict=True),
                                                      indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=120)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--output", default="benchmarks/results/latent_ensf_tsunami")
    parser.add_argument("--vae", default="/tmp/latent_ensf_tsunami.vae")
    parser.add_argument("--reuse", action="store_true", help="load --vae instead of fitting")
    parser.add_argument("--baselines-from", default=None,
                        help="a previous results .json whose letkf and free rows are kept "
                             "(they do not depend on the VAE) instead of rerunning them")
    args = parser.parse_args()
    xl.set_options(progress=False)
    model = xl.simulator("tsunami", preset="small")
    start = time.perf_counter()
    train = xl.simulate("tsunami", runs=2 if args.reuse else args.runs, seed=1, preset="small")
    simulate_seconds = time.perf_counter() - start
    layout = regular_layout(train, 10, 10)
    start = time.perf_counter()
    if args.reuse:
        vae = VAEModel.from_file(args.vae)
    else:
        vae = fit_vae(train, stations=layout, seed=0, steps=args.steps)
        vae.save(args.vae)
    fit_seconds = time.perf_counter() - start
    print("fit", fit_seconds, vae.metadata.training["losses"], file=sys.stderr, flush=True)
    if args.reuse:
        simulate_seconds = fit_seconds = float("nan")
    del train
    results: dict[str, Any] = {
        "settings": {"runs": args.runs, "steps": args.steps, "training": vae.metadata.training,
                     "letkf": LETKF, "members": 20, "noise": 0.1, "truths": list(TRUTHS),
                     "stations": "regular 10x10 (the VAE's layout), u, v, eta"},
        "simulate_seconds": simulate_seconds, "fit_seconds": fit_seconds,
        "machine": {"platform": platform.platform(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
        "truths": {}}
    previous = json.loads(Path(args.baselines_from).read_text())["truths"] \
        if args.baselines_from else {}
    for seed in TRUTHS:
        truth = xl.simulate("tsunami", runs=1, seed=seed, preset="small").isel(run=0)
        obs = truth.ldensf.observe(stations=vae.layout(), noise=0.1, seed=0)
        entry: dict[str, Any] = {"reconstruction": reconstruction(vae, truth.expand_dims("run"))}
        runs = {"latent-ensf": {"method": "latent-ensf", "vae": vae},
                "letkf": {"method": "letkf", **LETKF},
                "free": {"method": "etkf", "obs_error": 1e6}}
        for label, settings in runs.items():
            if label != "latent-ensf" and label in previous.get(str(seed), {}):
                entry[label] = previous[str(seed)][label]
                continue
            start = time.perf_counter()
            analysis = obs.ldensf.assimilate(model, members=20, seed=0, **settings)
            seconds = time.perf_counter() - start
            entry[label] = {**scores(analysis, truth), "seconds": seconds}
            results["truths"][str(seed)] = entry
            print(seed, label, entry[label]["relative_rmse_final"], seconds, file=sys.stderr,
                  flush=True)
            write_json(results, Path(args.output))
    output = Path(args.output)
    training = {key: value for key, value in vae.metadata.training.items() if key != "losses"}
    lines = ["# Latent-EnSF on the small tsunami", "",
             f"VAE: {args.runs} training runs (seed 1, 51 frames each), {args.steps} Adam steps, "
             f"fit {fit_seconds:.0f} s (simulation {simulate_seconds:.0f} s); "
             f"settings {json.dumps(training)}.",
             "", "| truth | method | eta rel. RMSE final | eta rel. RMSE mean (frames 1..50) "
             "| spread/skill | wall s |", "|---|---|---|---|---|---|"]
    for seed, entry in results["truths"].items():
        for label in ("latent-ensf", "letkf", "free"):
            row = entry[label]
            lines.append(f"| {seed} | {label} | {row['relative_rmse_final']:.3f} | "
                         f"{row['relative_rmse_mean']:.3f} | {row['spread_skill_mean']:.2f} | "
                         f"{row['seconds']:.1f} |")
    lines += ["", "Held-out reconstruction (relative L2 error of u, v, eta over all frames):", ""]
    for seed, entry in results["truths"].items():
        rec = entry["reconstruction"]
        lines.append(f"- truth {seed}: state encoder {np.round(rec['state'], 3).tolist()}, "
                     f"observation encoder {np.round(rec['observation'], 3).tolist()}")
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
