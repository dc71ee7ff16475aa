"""GPU-scale surrogate benchmark: the LD-EnSF settings of one case (not run on the CPU machines).

200 trajectories of the ``paper`` simulator preset of the case, split 120 / 40 / 40 (train /
valid / test, REFERENCES §2): 160 runs go to ``fit`` (which holds out 40 = 25 % for
validation) and 40 other runs are the test set. ``preset="paper"`` takes the case's network
sizes (``LDNetConfig.paper(case)``: tsunami latent 10, F 8 x 50, R residual 10 x 300;
atmosphere latent 50, F 8 x 200, R 15 x 500; Kolmogorov latent 9, F 9 x 200, R 14 x 500)
and the paper-sized encoder on a regular layout at the paper's density (0.44 %: 10 x 10 on
the 150 x 150 tsunami). Reports the time-averaged relative RMSE per variable on the test
runs (paper, improved LDNet: tsunami 0.0168, atmosphere 0.0656, Kolmogorov 0.0123; original
LDNet on the tsunami 0.184) and the encoder errors at 0 / 10 / 20 % noise. Checkpoints go to
``--checkpoint-dir`` so a killed run resumes.

Kolmogorov: every run starts from one shared initial field (the ``paper`` preset's
``initial_field="shared"``), spun up for 4 time units at each run's ``Re`` as in the
reference setting; ``--spinup-reynolds 1000`` spins the shared field up once at
``Re = 1000`` instead (the same first frame for every run, a trajectory about ten times
less sensitive to ``Re``: ``docs/simulators/kolmogorov.md``) and writes
``surrogate_paper_kolmogorov_spinup<Re>.*``.

Usage::

    python benchmarks/surrogate_paper.py --device cuda [--case tsunami] [--variants
        improved,original] [--checkpoint-dir ckpt] [--out DIR] [--spinup-reynolds RE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from surrogate_small import CASES, encoder_errors, evaluate

import xldensf as xl
from xldensf.experiments import regular_station_count
from xldensf.surrogate import fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="tsunami", choices=CASES)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--variants", default="improved,original",
                        help="comma-separated subset of improved,original")
    parser.add_argument("--checkpoint-dir", default=None)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--spinup-reynolds", type=float, default=None,
                        help="Kolmogorov only: spin the shared initial field up at this Re "
                             "(default: each run's Re, as the paper)")
    args = parser.parse_args()
    xl.set_options(progress=True)
    simulator = {}
    stem = f"surrogate_paper_{args.case}"
    if args.spinup_reynolds is not None:
        if args.case != "kolmogorov":
            parser.error("--spinup-reynolds is a Kolmogorov setting")
        simulator = {"spinup_reynolds": args.spinup_reynolds}
        stem += f"_spinup{args.spinup_reynolds:g}"
    train = xl.simulate(args.case, preset="paper", runs=160, seed=1, device=args.device,
                        **simulator)
    test = xl.simulate(args.case, preset="paper", runs=40, seed=2, device=args.device,
                       **simulator)
    full_model = xl.simulator(args.case, preset="paper", **simulator)
    stations = regular_station_count(full_model.grid_shape)
    results = {}
    for variant in args.variants.split(","):
        original = variant == "original"
        began = time.perf_counter()
        checkpoint = None if args.checkpoint_dir is None else Path(args.checkpoint_dir) / variant
        model = fit(train, parameters=list(full_model.parameter_names),
                    variables=list(full_model.variables), seed=0, preset="paper",
                    device=args.device, checkpoint_dir=checkpoint, validation_fraction=0.25,
                    original=original, stations=None if original else stations)
        entry = {"train_seconds": time.perf_counter() - began,
                 "relative_rmse": evaluate(model.to("cpu"), test, args.case)}
        if model.encoder is not None:
            entry["encoder"] = encoder_errors(model, test, (0.0, 0.1, 0.2))
            model.save(Path(args.out) / f"{stem}.ldensf")
        results[variant] = entry
        print(variant, json.dumps(entry, indent=1), flush=True)
    (Path(args.out) / f"{stem}.json").write_text(
        json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
