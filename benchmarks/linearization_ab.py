"""Default LD-EnSF with each ``linearize`` mode, side by side, on a case's quick truths.

For each truth of ``xldensf benchmark <case> --quick`` (``benchmark_truths``) and each
layout (the encoder's, and the unseen random one), the default ``assimilate`` call with
``linearize="sigma-points"`` and with ``linearize="ensemble"`` (same seed, same
observations), scored on the mean of the first 20 members against the truth: relative RMSE
of every model variable at the last frame and averaged over frames 1..end, spread/skill
averaged over frames 1..end, parameter errors as a fraction of the prior range. Prints one
JSON line per call and the means per mode.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/linearization_ab.py atmosphere
        [--model atmosphere_small.ldensf] [--truths 5]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from xldensf.experiments import benchmark_truths

#: The modes compared.
MODES = ("sigma-points", "ensemble")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case")
    parser.add_argument("--model", default=None, help="surrogate file (default: shipped)")
    parser.add_argument("--truths", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    truths = benchmark_truths(args.case, quick=True, last=args.truths, model=args.model)
    setting, model = truths.setting, truths.model
    names = list(model.metadata.parameters)
    ranges = {name: high - low for name, (low, high)
              in zip(names, model.metadata.parameter_ranges)}
    rows = []
    for prepared in truths:
        for layout in ("trained", "unseen"):
            for mode in MODES:
                started = time.perf_counter()
                analysis = prepared.observations[layout].ldensf.assimilate(
                    model, seed=prepared.seed, progress=False,
                    members=setting.latent_members, linearize=mode)
                row = {"truth": prepared.index, "layout": layout, "mode": mode,
                       "seconds": time.perf_counter() - started}
                for name in model.metadata.variables:
                    truth = prepared.truth[name].values
                    members = analysis[name].isel(member=slice(0, setting.members)).values
                    flat = (len(truth), -1)
                    error = np.sqrt(((members.mean(1) - truth) ** 2).reshape(flat).mean(1))
                    relative = error / np.sqrt((truth ** 2).reshape(flat).mean(1))
                    spread = np.sqrt(members.var(1, ddof=1).reshape(flat).mean(1))
                    row[name] = {"final": float(relative[-1]), "mean": float(relative[1:].mean()),
                                 "spread_skill": float(np.mean(spread[1:] / error[1:]))}
                row["parameter_errors"] = [
                    abs(float(analysis[name].isel(time=-1).mean()) - prepared.parameters[name])
                    / ranges[name] for name in names]
                rows.append(row)
                print(json.dumps(row), flush=True)
    for mode in MODES:
        chosen = [row for row in rows if row["mode"] == mode]
        summary = {name: {key: round(float(np.mean([row[name][key] for row in chosen])), 4)
                          for key in ("final", "mean", "spread_skill")}
                   for name in model.metadata.variables}
        errors = np.round(np.mean([row["parameter_errors"] for row in chosen], axis=0), 4)
        print(f"{mode}: {json.dumps(summary)}; parameter errors {errors.tolist()}; "
              f"call {np.mean([row['seconds'] for row in chosen[1:]]):.2f} s "
              "(the first call of each mode left out: the very first pays torch's lazy imports)")


if __name__ == "__main__":
    main()
