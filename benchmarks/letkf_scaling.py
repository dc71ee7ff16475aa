"""LETKF analysis cost against the state dimension: peak memory and seconds per analysis.

A Lorenz-96-like ring of ``d`` sites (periodic distance, period ``d``), every site observed
(the identity operator, applied as a callable so that no ``d x d`` matrix is formed),
``--members`` members, Gaspari-Cohn radius ``--loc``. Each size runs in its own process;
the recorded memory is the growth of the peak resident set (``resource.getrusage``)
during the analyses over the resident set just before them, so the problem set-up and
the imported libraries are not counted. ``first`` is the first analysis (it builds the
taper or the neighbour lists), ``repeat`` the mean of the further ones (same position
tensors: a small taper is then reused).

``--label`` names the code version measured (e.g. ``before`` / ``after`` a change); rows of
other labels already in the JSON are kept, so two versions can be recorded side by side.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/letkf_scaling.py --sizes 1000 10000 100000 \\
        --label after
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def current_rss_mib() -> float:
    """The resident set size now (Linux ``/proc/self/statm``), MiB."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """The peak resident set size of this process so far (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(size: int, members: int, loc: float, repeats: int, dtype_name: str) -> dict:
    """One size, in this process: seconds of the first and later analyses, memory growth."""
    import torch

    from xldensf.filters import LETKF

    torch.set_num_threads(1)
    dtype = getattr(torch, dtype_name)
    generator = torch.Generator().manual_seed(0)
    prior = 2.0 + torch.randn(members, size, generator=generator, dtype=dtype)
    observations = torch.randn(size, generator=generator, dtype=dtype)
    sites = torch.arange(size, dtype=dtype)
    letkf = LETKF(inflation=1.02, localization=loc, distance="periodic", period=float(size))

    def analyse() -> torch.Tensor:
        return letkf.analysis(prior, observations, lambda x: x, 1.0,
                              state_positions=sites, observation_positions=sites)

    before = current_rss_mib()
    start = time.perf_counter()
    first_analysis = analyse()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        analyse()
        times.append(time.perf_counter() - start)
    return {"d": size, "members": members, "loc": loc, "dtype": dtype_name,
            "first_s": first, "repeat_s": sum(times) / len(times) if times else None,
            "peak_growth_mib": peak_rss_mib() - before,
            "checksum": float(first_analysis.double().sum())}


def table(rows: list[dict]) -> str:
    lines = ["| label | d | members | first analysis (s) | repeated analysis (s) | "
             "peak memory growth (MiB) | load (1 min) | checksum |",
             "|---|---|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: (r["d"], r["label"])):
        if "error" in row:
            lines.append(f"| {row['label']} | {row['d']} | {row['members']} | - | - | - | "
                         f"{row['load']:.1f} | {row['error']} |")
            continue
        repeat = "-" if row["repeat_s"] is None else f"{row['repeat_s']:.3f}"
        lines.append(f"| {row['label']} | {row['d']} | {row['members']} | {row['first_s']:.3f} "
                     f"| {repeat} | {row['peak_growth_mib']:.0f} | {row['load']:.1f} | "
                     f"{row['checksum']:.10g} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--loc", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--label", default="current")
    parser.add_argument("--timeout", type=float, default=1200.0,
                        help="seconds allowed per size (its process is stopped after)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--render", action="store_true",
                        help="only rewrite the markdown table from the JSON record")
    args = parser.parse_args()
    if args.render:
        write_markdown(json.loads((RESULTS / "letkf_scaling.json").read_text()))
        return
    if args.child:
        result = measure(args.sizes[0], args.members, args.loc, args.repeats, args.dtype)
        sys.stdout.write(json.dumps(result) + "\n")
        return
    path = RESULTS / "letkf_scaling.json"
    previous = json.loads(path.read_text()) if path.exists() else {"rows": [], "commands": []}
    rows = [row for row in previous["rows"] if row["label"] != args.label]
    for size in args.sizes:
        load = os.getloadavg()[0]
        command = [sys.executable, __file__, "--child", "--sizes", str(size), "--members",
                   str(args.members), "--loc", str(args.loc), "--repeats", str(args.repeats),
                   "--dtype", args.dtype]
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False,
                                  timeout=args.timeout)
            if done.returncode == 0:
                row = json.loads(done.stdout.strip().splitlines()[-1])
            else:
                tail = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
                row = {"d": size, "members": args.members, "error": tail[:120]}
        except subprocess.TimeoutExpired:
            row = {"d": size, "members": args.members,
                   "error": f"stopped after {args.timeout:.0f} s"}
        row.update(label=args.label, load=load)
        rows.append(row)
        sys.stderr.write(json.dumps(row) + "\n")
    commands = [c for c in previous.get("commands", []) if c["label"] != args.label]
    commands.append({"label": args.label, "command": "python benchmarks/letkf_scaling.py "
                     + shlex.join(sys.argv[1:]),
                     "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                              capture_output=True, text=True,
                                              check=False).stdout.strip()})
    machine = f"{platform.platform()}, {os.cpu_count()} CPUs (shared: see the load column)"
    record = {"machine": machine, "settings": {"loc": args.loc, "dtype": args.dtype},
              "notes": previous.get("notes", []), "rows": rows, "commands": commands}
    path.write_text(json.dumps(record, indent=1) + "\n")
    write_markdown(record)


def write_markdown(record: dict) -> None:
    """``results/letkf_scaling.md`` from the JSON record."""
    settings = record.get("settings", {"loc": 4.0, "dtype": "float64"})
    notes = "\n".join(f"Command ({c['label']}, commit {c['commit']}): `{c['command']}`."
                      for c in record["commands"])
    extra = "".join(f"{note}\n\n" for note in record.get("notes", []))
    (RESULTS / "letkf_scaling.md").write_text(
        "# LETKF analysis cost against the state dimension\n\n"
        f"Periodic ring of d sites, every site observed (identity as a callable), "
        f"Gaspari-Cohn radius {settings['loc']}, inflation 1.02, one torch thread, "
        f"{settings['dtype']}. Peak memory growth: peak resident set during the analyses "
        "minus the resident set just before them. The machine is shared (load average "
        "column): seconds are indicative. The checksum (sum of the analysis ensemble) shows "
        "that the versions compute the same numbers.\n\n"
        f"{table(record['rows'])}\n\n{extra}{notes}\nMachine: {record['machine']}.\n")

if __name__ == "__main__":
    main()
