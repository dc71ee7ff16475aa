"""Surrogate accuracy on the small tsunami preset (CPU): improved vs original LDNet, encoder.

Measures, on held-out runs: the time-averaged relative RMSE per variable (REFERENCES §4)
of the improved LDNet and of the original LDNet (ablation), the training time, and the
encoder's parameter and latent errors at 0, 10 and 20 % observation noise (10 x 10 stations).
The LD-EnSF paper reports 0.0168 (improved) and 0.184 (original) on the full-size tsunami
after 2,000 GPU epochs of a 10 x 300 network; this is a CPU-sized run of the small preset.

Usage::

    python benchmarks/surrogate_small.py [--train-runs 60] [--test-runs 20] [--steps 3000]
        [--threads 1] [--out benchmarks/results]

Writes ``surrogate_small.json`` and ``surrogate_small.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import xldensf as xl
from xldensf.surrogate import fit


def relative_rmse(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Time-averaged relative RMSE over (run, time, *grid) arrays; frames where the truth is
    identically zero (u = v = 0 at t = 0) are left out of the average."""
    axes = tuple(range(2, truth.ndim))
    norm = (truth**2).mean(axes)
    error = ((prediction - truth) ** 2).mean(axes)
    valid = norm > 0
    return float(np.sqrt(error[valid] / norm[valid]).mean())


def evaluate(model, test) -> dict[str, float]:
    forecast = model.forecast({name: test[name].values for name in model.metadata.parameters})
    return {name: relative_rmse(forecast[name].values, test[name].values)
            for name in model.metadata.variables}


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
    parser.add_argument("--train-runs", type=int, default=60)
    parser.add_argument("--test-runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--finetune-steps", type=int, default=1000)
    parser.add_argument("--encoder-steps", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--name", default="surrogate_small")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    xl.set_options(progress=False)

    began = time.perf_counter()
    train = xl.simulate("tsunami", preset="small", runs=args.train_runs, seed=1)
    test = xl.simulate("tsunami", preset="small", runs=args.test_runs, seed=2)
    simulate_seconds = time.perf_counter() - began
    variables = ["u", "v", "eta"]
    results = {"settings": vars(args), "simulate_seconds": simulate_seconds,
               "torch": torch.__version__, "xldensf": xl.__version__}
    for variant, original in (("improved", False), ("original", True)):
        began = time.perf_counter()
        model = fit(train, parameters=["x0", "y0"], variables=variables, seed=0,
                    device=args.device, original=original, steps=args.steps,
                    finetune_steps=args.finetune_steps,
                    stations=100 if not original else None,
                    encoder={"steps": args.encoder_steps})
        seconds = time.perf_counter() - began
        entry = {"train_seconds": seconds, "relative_rmse": evaluate(model, test),
                 "history": json.loads(model.metadata.attrs["xldensf_training"])}
        if model.encoder is not None:
            entry["encoder"] = encoder_errors(model, test, (0.0, 0.1, 0.2))
        results[variant] = entry
        print(variant, json.dumps(entry, indent=1), flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(results, indent=2))
    lines = [f"# Surrogate, small tsunami ({args.train_runs} training / {args.test_runs} "
             f"test runs, {args.steps} + {args.finetune_steps} steps, {args.threads} thread)",
             "", "| variant | u | v | eta | training time [s] |", "|---|---|---|---|---|"]
    for variant in ("improved", "original"):
        error = results[variant]["relative_rmse"]
        lines.append(f"| {variant} LDNet | {error['u']:.4f} | {error['v']:.4f} | "
                     f"{error['eta']:.4f} | {results[variant]['train_seconds']:.0f} |")
    lines += ["", "Encoder (10 x 10 stations), errors on test runs:", "",
              "| noise | parameter RMSE (normalised, final time) | latent RMSE (scaled) |",
              "|---|---|---|"]
    for level, values in results["improved"]["encoder"].items():
        lines.append(f"| {float(level):.0%} | {values['parameter_rmse_normalized_final']:.4f} "
                     f"| {values['latent_rmse_scaled']:.4f} |")
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
