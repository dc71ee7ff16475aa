"""DAPPER's own sakov2008 tuning notes, run in DAPPER's environment (no xldensf).

The Var4D RMSEs that issue #15 targets (Lag 1, xB 0.2 -> 0.46; Lag 2, xB 0.1 -> 0.39;
Lag 4, xB 0.02 -> 0.37) are comments in ``dapper/mods/Lorenz96/sakov2008.py`` under
"Reproduce Bocquet/Sakov'2013 'Joint...', Fig 4, i.e. dto=0.2", next to
``iEnKS('Sqrt', N=20, Lag=4, xN=2) # 0.31``. This script runs those lines as written, on
DAPPER's own HMM (its truth, observations and initial ensemble; observations every 4 steps
of dt 0.05), and reports DAPPER's time-averaged RMSE of the analysis (``a``), the smoothed
estimate at the window's start (``s``) and the forecast (``f``), so that the notes can be
checked against the DAPPER release installed, independently of xldensf.

Usage (in a virtual environment with ``pip install dapper``)::

    OMP_NUM_THREADS=1 python benchmarks/dapper_sakov2008_notes.py var4d-lag1 [var4d-lag2 ...]
        [--cycles 1000] [--seed 1] [--output benchmarks/results/dapper_sakov2008_notes.json]

Methods: the keys of :data:`NOTES` (``var4d-lag1`` ... ``ienks-lag4``, and
``var4d-eye-lag1`` ... with ``B = xB I``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from var4d_lorenz96 import PatchedObs  # noqa: E402  (DAPPER 1.7.1's Var4D needs it)

#: method name -> (DAPPER method, its keywords as in the notes' line, the notes' RMSE); the
#: ``eye`` rows set ``B = xB I``: the default B of DAPPER's Var4D when the notes were
#: written (B=None meant the identity until DAPPER 1.x made it the truth's climatology)
NOTES = {"var4d-lag1": ("Var4D", {"Lag": 1, "xB": 0.2}, 0.46),
         "var4d-lag2": ("Var4D", {"Lag": 2, "xB": 0.1}, 0.39),
         "var4d-lag4": ("Var4D", {"Lag": 4, "xB": 0.02}, 0.37),
         "ienks-lag4": ("iEnKS", {"upd_a": "Sqrt", "N": 20, "Lag": 4, "xN": 2}, 0.31),
         "var4d-eye-lag1": ("Var4D", {"B": "eye", "Lag": 1, "xB": 0.2}, 0.46),
         "var4d-eye-lag2": ("Var4D", {"B": "eye", "Lag": 2, "xB": 0.1}, 0.39),
         "var4d-eye-lag4": ("Var4D", {"B": "eye", "Lag": 4, "xB": 0.02}, 0.37)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("methods", nargs="+", choices=sorted(NOTES))
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1, help="numpy seed of the truth")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    import dapper
    import dapper.da_methods as da
    import dapper.mods as modelling
    import dapper.tools.progressbar
    from dapper.mods.Lorenz96.sakov2008 import HMM

    dapper.tools.progressbar.disable_progbar = True
    HMM.tseq = modelling.Chronology(0.05, dko=4, Ko=args.cycles, BurnIn=20)
    HMM.Obs = PatchedObs(HMM.Obs)
    np.random.seed(args.seed)  # noqa: NPY002 - DAPPER draws from numpy's global state
    truth, observations = HMM.simulate()
    rows = []
    for name in args.methods:
        class_name, keywords, published = NOTES[name]
        call = f"{class_name}({', '.join(f'{key}={value!r}' for key, value in keywords.items())})"
        method = getattr(da, class_name)(**keywords)
        started = time.perf_counter()
        method.assimilate(HMM, truth, observations)
        method.stats.average_in_time()
        rms = method.avrgs.err.rms
        row = {"method": name, "call": call, "published": published,
               "wall_s": time.perf_counter() - started,
               **{f"rmse_{key}": float(getattr(rms, key).val) for key in ("a", "s", "f")
                  if getattr(rms, key, None) is not None}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(
            {"dapper_version": dapper.__version__, "cycles": args.cycles, "seed": args.seed,
             "command": "OMP_NUM_THREADS=1 python benchmarks/dapper_sakov2008_notes.py "
             + " ".join(sys.argv[1:] if argv is None else argv), "rows": rows},
            indent=1))


if __name__ == "__main__":
    main()
