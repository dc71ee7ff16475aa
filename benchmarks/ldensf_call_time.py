"""Wall and CPU seconds of one ``assimilate`` call: default LD-EnSF against the LETKF.

Issue #12's speed target: the time from the ``assimilate`` call to the returned analysis,
side by side in one process. The quick tsunami benchmark's truths, layouts and settings
(``xldensf benchmark tsunami --quick``: seeds ``1000 + i``, the shipped small surrogate,
200 latent members, 20 full-space members, the LETKF's benchmark settings), one thread;
for each truth the calls alternate (LD-EnSF on the unseen layout, on the encoder's layout,
then the LETKF on the encoder's layout), so load on a shared machine hits them alike.
LD-EnSF returns its fields lazily (decoded on access, timed by the benchmark apart); the
LETKF's analysis is the gridded ensemble itself. A first call pays torch's lazy imports, so
one untimed LD-EnSF call comes first.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/ldensf_call_time.py [--truths 5]
        [--output benchmarks/results/ldensf_call_time]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import xldensf as xl
from xldensf.experiments import benchmark_truths
from xldensf.experiments.settings import method_settings


def _timed(call, *args, **kwargs):
    """``call(*args, **kwargs)``, its wall and CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = call(*args, **kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--truths", type=int, default=5)
    parser.add_argument("--output", default="benchmarks/results/ldensf_call_time")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    truths = benchmark_truths("tsunami", quick=True, last=args.truths)
    setting, model, full = truths.setting, truths.model, truths.simulator
    letkf = method_settings("tsunami", ["letkf"])["letkf"]
    rows = []
    for prepared in truths:
        index, observations = prepared.index, prepared.observations
        if index == 0:  # torch's lazy imports, untimed
            observations["unseen"].ldensf.assimilate(model, seed=prepared.seed, progress=False)
        latent = {"members": setting.latent_members}
        calls = {  # method -> (layout, model, settings)
            "ld-ensf-decoder-unseen": ("unseen", model, latent),
            "ld-ensf-decoder": ("trained", model, latent),
            "letkf": ("trained", full, {"method": "letkf", "members": setting.members,
                                        **letkf}),
        }
        for method, (layout, forecast_model, settings) in calls.items():
            _, wall, cpu = _timed(observations[layout].ldensf.assimilate, forecast_model,
                                  seed=prepared.seed, progress=False, **settings)
            rows.append({"truth": index, "method": method, "wall_s": wall, "cpu_s": cpu})
            print(f"truth {index} {method}: wall {wall:.2f} s, cpu {cpu:.2f} s", flush=True)
    summary = {}
    for method in ("ld-ensf-decoder-unseen", "ld-ensf-decoder", "letkf"):
        chosen = [row for row in rows if row["method"] == method]
        summary[method] = {key: float(np.mean([row[key] for row in chosen]))
                           for key in ("wall_s", "cpu_s")}
    for method in ("ld-ensf-decoder-unseen", "ld-ensf-decoder"):
        for key in ("wall_s", "cpu_s"):
            summary[method][f"letkf_over_{key}"] = summary["letkf"][key] / summary[method][key]
    command = "OMP_NUM_THREADS=1 python " + " ".join(["benchmarks/ldensf_call_time.py",
                                                        *sys.argv[1:]])
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(
        {"command": command, "rows": rows, "summary": summary,
         "xldensf_version": xl.__version__}, indent=1))
    lines = ["# One `assimilate` call: default LD-EnSF against the LETKF (tsunami, quick)", "",
             f"Command: `{command}`. {args.truths} truths of the quick benchmark, one thread, "
             "calls alternating per truth; means over truths.", "",
             "| method | wall s | CPU s | LETKF / method (wall) | LETKF / method (CPU) |",
             "|---|---|---|---|---|"]
    for method, values in summary.items():
        ratios = (f"{values['letkf_over_wall_s']:.1f} | {values['letkf_over_cpu_s']:.1f}"
                  if method != "letkf" else "- | -")
        lines.append(f"| {method} | {values['wall_s']:.2f} | {values['cpu_s']:.2f} | {ratios} |")
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
