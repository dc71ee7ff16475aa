"""GPU-scale surrogate benchmark: the LD-EnSF tsunami setting (not run on the CPU machines).

200 trajectories of the ``paper`` tsunami preset split 120 / 40 / 40 (train / valid / test,
REFERENCES §2), ``LDNetConfig.paper()`` (latent 10, F 8 x 50, R residual 10 x 300) and the
paper-sized encoder on 10 x 10 stations. Reports the time-averaged relative RMSE per variable
on the 40 test runs (paper: 0.0168 improved, 0.184 original LDNet) and the encoder errors at
0 / 10 / 20 % noise. Checkpoints go to ``--checkpoint-dir`` so a killed run resumes.

Usage::

    python benchmarks/surrogate_paper.py --device cuda [--checkpoint-dir ckpt] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from surrogate_small import encoder_errors, evaluate

import xldensf as xl
from xldensf.surrogate import fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--checkpoint-dir", default=None)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    xl.set_options(progress=True)
    # 160 runs for training and validation (fit holds out 40 = 25 %), 40 for testing.
    train = xl.simulate("tsunami", preset="paper", runs=160, seed=1, device=args.device)
    test = xl.simulate("tsunami", preset="paper", runs=40, seed=2, device=args.device)
    results = {}
    for variant, original in (("improved", False), ("original", True)):
        began = time.perf_counter()
        checkpoint = None if args.checkpoint_dir is None else Path(args.checkpoint_dir) / variant
        model = fit(train, parameters=["x0", "y0"], variables=["u", "v", "eta"], seed=0,
                    preset="paper", device=args.device, checkpoint_dir=checkpoint,
                    validation_fraction=0.25, original=original,
                    stations=None if original else 100)
        entry = {"train_seconds": time.perf_counter() - began,
                 "relative_rmse": evaluate(model.to("cpu"), test)}
        if model.encoder is not None:
            entry["encoder"] = encoder_errors(model, test, (0.0, 0.1, 0.2))
            model.save(Path(args.out) / "surrogate_paper.ldensf")
        results[variant] = entry
        print(variant, json.dumps(entry, indent=1), flush=True)
    (Path(args.out) / "surrogate_paper.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
