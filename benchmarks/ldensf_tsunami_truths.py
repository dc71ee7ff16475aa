"""LD-EnSF on further held-out tsunami truths, scored cheaply (7 frames, 20 members).

The quick benchmark's truths ``i`` (``xldensf.experiments.benchmark_truths``:
``simulate(seed=1000 + i)``, layouts the encoder's, ``observe(seed=i)``, and an unseen
random one, ``observe(stations=16, seed=7919 + i)``), shipped
surrogate, 200 latent members and filter seed ``i``, as ``xldensf benchmark tsunami --quick
--truths N`` would run them, but only the default LD-EnSF (or the settings given as JSON)
and scored on frames 1, 5, 10, 20, 30, 40, 50 of the mean of the first 20 members (the
benchmark decodes all 51 frames, which dominates its time). Use it to see how often the
analysis fails on truths that the defaults were not chosen on.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/ldensf_tsunami_truths.py --first 5 --last 15
        ['{"start": "prior"}'] [--letkf]

``--letkf``: the full-model LETKF instead (the benchmark's settings and 20 members, the
encoder's layout only), scored the same way.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from xldensf.experiments import benchmark_truths
from xldensf.experiments.settings import method_settings

#: Frames scored.
FRAMES = [1, 5, 10, 20, 30, 40, 50]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="?", default="{}", help="assimilate keywords (JSON)")
    parser.add_argument("--first", type=int, default=5)
    parser.add_argument("--last", type=int, default=15)
    parser.add_argument("--letkf", action="store_true", help="the full-model LETKF instead")
    args = parser.parse_args(argv)
    settings = json.loads(args.settings)
    truths = benchmark_truths("tsunami", quick=True, first=args.first, last=args.last)
    setting, model, full = truths.setting, truths.model, truths.simulator
    names = list(model.metadata.parameters)
    ranges = {name: high - low for name, (low, high)
              in zip(names, model.metadata.parameter_ranges)}
    if args.letkf:  # the full model, the benchmark's LETKF settings, the trained layout
        runs = [("trained", full, {"method": "letkf", "members": setting.members,
                                   **method_settings("tsunami", ["letkf"])["letkf"]})]
    else:
        runs = [(layout, model, {"members": setting.latent_members, **settings})
                for layout in ("trained", "unseen")]
    finals = []
    for prepared in truths:
        truth = prepared.truth["eta"].values[FRAMES]
        for layout, forecast_model, keywords in runs:
            started = time.perf_counter()
            analysis = prepared.observations[layout].ldensf.assimilate(
                forecast_model, seed=prepared.seed, progress=False, **keywords)
            seconds = time.perf_counter() - started
            members = analysis["eta"].isel(member=slice(0, setting.members),
                                           time=FRAMES).values
            flat = (len(FRAMES), -1)
            error = np.sqrt(((members.mean(1) - truth) ** 2).reshape(flat).mean(1))
            relative = error / np.sqrt((truth ** 2).reshape(flat).mean(1))
            spread = np.sqrt(members.var(1, ddof=1).reshape(flat).mean(1))
            parameters = [abs(float(analysis[name].isel(time=-1).mean())
                              - prepared.parameters[name]) / ranges[name] for name in names]
            finals.append(relative[-1])
            print(f"{layout:8s} truth {prepared.index}: handover "
                  f"{analysis.attrs.get('xldensf_start_handover')} relative RMSE of eta "
                  f"{np.round(relative, 3)} spread/skill {np.round(spread / error, 2)} "
                  f"parameter errors {np.round(parameters, 3)} call {seconds:.1f} s",
                  flush=True)
    print(f"mean final {np.mean(finals):.3f}; runs with final > 0.5: "
          f"{int(np.sum(np.array(finals) > 0.5))} of {len(finals)}")


if __name__ == "__main__":
    main()
