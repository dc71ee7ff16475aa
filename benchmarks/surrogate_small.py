"""Surrogate accuracy on the small presets (CPU): improved vs original LDNet, encoder.

Measures, on held-out runs of one case (tsunami, atmosphere or Kolmogorov flow, small
simulator preset): the time-averaged relative RMSE per variable (REFERENCES §4,
area-weighted on the sphere; the atmosphere's ``h`` also as ``h_anomaly``, its deviation
from the spatial mean, as in the LD-EnSF benchmark) of the improved LDNet and of the
original LDNet (ablation), the training time, and the encoder's parameter and latent errors
at 0, 10 and 20 % observation noise (``--stations``, default 10 x 10).
The LD-EnSF paper reports 0.0168 (improved) and 0.184 (original) on the full-size tsunami
after 2,000 GPU epochs of a 10 x 300 network; this is a CPU-sized run of the small preset.

Usage::

    python benchmarks/surrogate_small.py [--case tsunami] [--train-runs 60] [--train-seed 1]
        [--test-runs 20]
        [--steps N] [--finetune-steps N] [--variants improved,original] [--threads 1]
        [--stations 100] [--set activation='"tanh"' --set latent_modulation=true ...]
        [--train-error] [--out benchmarks/results] [--name surrogate_small]

Writes ``<name>.json`` and ``<name>.md`` into ``--out`` (default name ``surrogate_small``
for the tsunami, ``surrogate_small_<case>`` otherwise). ``--set KEY=JSON`` overrides a
field of ``LDNetConfig.small()`` (for the levers of ``docs/surrogate.md``);
``--train-error`` also measures the error on as many training runs as test runs (train
error much below the held-out error: generalisation; about equal: capacity/optimisation).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

import xldensf as xl
from xldensf.experiments import scored_variables
from xldensf.metrics import relative_rmse, spatial_anomaly
from xldensf.surrogate import fit

#: The three benchmark cases of the LD-EnSF paper.
CASES = ("tsunami", "atmosphere", "kolmogorov")


def evaluate(model, test, case: str) -> tuple[dict[str, float], dict[str, float]]:
    """Relative RMSE per variable (REFERENCES §4) of the surrogate's forecast of the test
    runs, per run and frame, averaged over runs and frames, and over runs at the last frame;
    frames where the truth is identically zero (u = v = 0 at t = 0 on the tsunami) are left
    out of the average."""
    forecast = model.forecast({name: test[name].values for name in model.metadata.parameters})
    names = scored_variables(case, xl.simulator(case, preset="small"))
    anomalies = [name.removesuffix("_anomaly") for name in names if name.endswith("_anomaly")]
    if anomalies:
        forecast, test = spatial_anomaly(forecast, anomalies), spatial_anomaly(test, anomalies)
    relative = relative_rmse(forecast, test, names)
    averaged, last = {}, {}
    for name in names:
        values = relative[name].transpose("run", ...).values      # (run, time)
        averaged[name] = float(values[np.isfinite(values)].mean())
        last[name] = float(values[:, -1].mean())
    return averaged, last


def encoder_errors(model, test, noise_levels, seed: int = 0) -> dict[str, dict[str, float]]:
    stations = torch.tensor(model.metadata.stations, dtype=torch.float64)
    grid = torch.as_tensor(model.grid_points())
    index = torch.cdist(stations, grid).argmin(dim=1).numpy()
    fields = np.stack([test[name].values.reshape(*test[name].shape[:2], -1)
                       for name in model.metadata.variables], axis=-1)   # run, time, point, var
    clean = torch.as_tensor(fields[:, :, index], dtype=torch.float32)
    truth = model.normalize_parameters(torch.as_tensor(
        np.stack([test[p].values for p in model.metadata.parameters], axis=-1)))
    with torch.no_grad():
        latents = model.unroll(truth)
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for level in noise_levels:
        noise = torch.randn(clean.shape, generator=generator)
        noisy = clean + level * model.field_normalizer.scale * noise
        with torch.no_grad():
            latent, parameters = model.encode(noisy, all_times=True)
        scale = model.encoder.latent_normalizer.scale
        out[f"{level:g}"] = {
            "parameter_rmse_normalized_final": float(
                (parameters[:, -1] - truth).pow(2).mean().sqrt()),
            "latent_rmse_scaled": float(((latent - latents) / scale).pow(2).mean().sqrt()),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="tsunami", choices=CASES)
    parser.add_argument("--train-runs", type=int, default=60)
    parser.add_argument("--train-seed", type=int, default=1,
                        help="seed of the training runs (the test runs use seed 2)")
    parser.add_argument("--test-runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=None,
                        help="stage-1 steps (default: the small preset's)")
    parser.add_argument("--finetune-steps", type=int, default=None,
                        help="stage-2 steps (default: the small preset's)")
    parser.add_argument("--encoder-steps", type=int, default=1000)
    parser.add_argument("--variants", default="improved,original",
                        help="comma-separated subset of improved,original")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--stations", type=int, default=100,
                        help="encoder stations (a regular n x n layout)")
    parser.add_argument("--name", default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override a LDNetConfig field, e.g. --set activation='\"tanh\"'")
    parser.add_argument("--train-error", action="store_true",
                        help="also measure the relative RMSE on training runs")
    args = parser.parse_args()
    overrides = {key: json.loads(value) for key, value in
                 (item.split("=", 1) for item in args.set)}
    torch.set_num_threads(args.threads)
    xl.set_options(progress=False)

    began = time.perf_counter()
    stem = args.name or ("surrogate_small" if args.case == "tsunami"
                         else f"surrogate_small_{args.case}")
    train = xl.simulate(args.case, preset="small", runs=args.train_runs, seed=args.train_seed)
    test = xl.simulate(args.case, preset="small", runs=args.test_runs, seed=2)
    simulate_seconds = time.perf_counter() - began
    full_model = xl.simulator(args.case, preset="small")
    parameters, variables = list(full_model.parameter_names), list(full_model.variables)
    scored = scored_variables(args.case, full_model)
    results = {"settings": vars(args), "command": " ".join(["python", *sys.argv]),
               "load_average_start": os.getloadavg(), "simulate_seconds": simulate_seconds,
               "torch": torch.__version__, "xldensf": xl.__version__}
    variants = args.variants.split(",")
    steps = {key: value for key, value in (("steps", args.steps),
                                           ("finetune_steps", args.finetune_steps))
             if value is not None}
    steps.update(overrides)
    for variant in variants:
        original = variant == "original"
        began = time.perf_counter()
        model = fit(train, parameters=parameters, variables=variables, seed=0,
                    device=args.device, original=original, **steps,
                    stations=args.stations if not original else None,
                    encoder={"steps": args.encoder_steps})
        seconds = time.perf_counter() - began
        history = json.loads(model.metadata.attrs["xldensf_training"])
        time_averaged, last_frame = evaluate(model, test, args.case)
        entry = {"train_seconds": seconds,
                 "ldnet_seconds": sum(history[phase]["seconds"] for phase in
                                      ("ldnet", "reconstruction")),
                 "load_average_after": os.getloadavg(),
                 "config": model.config.to_dict(),
                 "relative_rmse": time_averaged, "relative_rmse_last_frame": last_frame,
                 "history": history}
        if args.train_error:
            entry["relative_rmse_train_runs"] = evaluate(
                model, train.isel(run=slice(0, args.test_runs)), args.case)[0]
        if model.encoder is not None:
            entry["encoder"] = encoder_errors(model, test, (0.0, 0.1, 0.2))
        results[variant] = entry
        print(variant, json.dumps(entry, indent=1), flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2))
    first = results[variants[0]]
    lines = [f"# Surrogate, small {args.case} ({args.train_runs} training / {args.test_runs} "
             f"test runs, {first['history']['ldnet']['steps']} + "
             f"{first['history']['reconstruction']['steps']} steps, {args.threads} thread)",
             "", f"Command: `{results['command']}`", "",
             "Held-out relative RMSE per variable (REFERENCES §4), time-averaged / last frame; "
             "LDNet training time (stages 1 + 2) and the whole fit (with the encoder):", "",
             f"| variant | {' | '.join(scored)} | LDNet time [s] | fit time [s] | load average |",
             "|---|" + "---|" * (len(scored) + 3)]
    for variant in variants:
        entry = results[variant]
        cells = " | ".join(f"{entry['relative_rmse'][name]:.4f} / "
                           f"{entry['relative_rmse_last_frame'][name]:.4f}"
                           for name in scored)
        lines.append(f"| {variant} LDNet | {cells} | {entry['ldnet_seconds']:.0f} | "
                     f"{entry['train_seconds']:.0f} | "
                     f"{entry['load_average_after'][0]:.1f} |")
    for variant in variants:
        if "relative_rmse_train_runs" in results[variant]:
            errors = results[variant]["relative_rmse_train_runs"]
            lines.append(f"\n{variant}, time-averaged on {args.test_runs} training runs: "
                         + " / ".join(f"{errors[name]:.4f}" for name in scored))
    lines += ["", f"Load average (1 min) at the start: {results['load_average_start'][0]:.1f} "
              "(2 cores shared with other users).",
              "", f"Encoder ({args.stations} stations), errors on test runs:", "",
              "| noise | parameter RMSE (normalised, final time) | latent RMSE (scaled) |",
              "|---|---|---|"]
    for level, values in results.get("improved", {}).get("encoder", {}).items():
        lines.append(f"| {float(level):.0%} | {values['parameter_rmse_normalized_final']:.4f} "
                     f"| {values['latent_rmse_scaled']:.4f} |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
