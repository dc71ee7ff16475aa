"""The benchmark's report: markdown tables and the JSON/markdown files of a
:func:`~xldensf.experiments.run_benchmark` result.

Examples
--------
>>> from xldensf.experiments import markdown_report
>>> callable(markdown_report)
True
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_path, json_safe
from .settings import FREE_RUN, OPTIONAL_METHODS

__all__ = ["markdown_report", "report_paths", "write_report"]

#: The variable whose error curve the report shows, per case (else the first variable).
_SHOWN_VARIABLE = {"tsunami": "eta", "atmosphere": "h_anomaly", "kolmogorov": "vorticity"}


def _frames(n_frames: int, count: int = 5) -> list[int]:
    return sorted({int(round(k)) for k in np.linspace(1, n_frames - 1, count)})


def _optional_sentence(results: dict[str, Any]) -> str:
    """The settings of the opt-in methods run, and where the Latent-EnSF VAE came from
    (empty for the default rows)."""
    settings = results.get("filter_settings", {})
    parts = [f"{method}: " + (", ".join(f"{key} {value}" for key, value in
                                        settings[method].items()) or "defaults")
             for method in OPTIONAL_METHODS if method in settings]
    sentence = f" Settings of the opt-in methods: {'; '.join(parts)}." if parts else ""
    if "vae" in results:
        sentence += f" Latent-EnSF VAE: {results['vae']}."
    return sentence


def _method_table(results: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """The table of means over the truths, one row per method, and the error curves."""
    setting = results["setting"]
    variables, parameters = results["variables"], list(results["parameters"])
    header = (["method"] + [f"{v} final" for v in variables] + [f"{v} mean" for v in variables]
              + [f"{p} err" for p in parameters] + ["spread/skill", "filter s/cycle",
                                                     "total s/cycle", "call s"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    curves: dict[str, dict[str, list[float]]] = {}
    for method, entry in results["methods"].items():
        summary = entry["summary"]
        if not summary.get("runs"):
            reason = next((r.get("failure") for r in entry["runs"] if "failure" in r), "")
            lines.append(f"| {method} | " + " | ".join(["-"] * (len(header) - 1))
                         + f" |  <!-- {reason} -->")
            continue
        ratio = float(np.mean(list(summary["spread_skill"].values())))
        cells = ([summary["final"][v] for v in variables] + [summary["mean"][v] for v in variables]
                 + [summary["parameter_error"][p] for p in parameters] + [ratio])
        lines.append(f"| {method} | " + " | ".join(f"{c:.4f}" for c in cells)
                     + f" | {summary['filter_seconds_per_cycle']:.3g}"
                     + f" | {summary['seconds_per_cycle']:.3g}"
                     + f" | {summary.get('call_seconds', math.nan):.3g} |")
        if summary["runs"] < setting["truths"]:
            lines[-1] += f" ({summary['runs']}/{setting['truths']} truths ran)"
        curves[method] = summary["relative_rmse"]
    return lines, curves


def _curve_table(results: dict[str, Any], curves: dict[str, Any]) -> list[str]:
    """The error of one variable over time, at five frames, one row per method."""
    variables = results["variables"]
    first_variable = _SHOWN_VARIABLE.get(results["case"], variables[0])
    first_variable = first_variable if first_variable in variables else variables[0]
    n_frames = len(next(iter(curves.values()))[first_variable])
    frames = _frames(n_frames)
    lines = ["", f"Relative RMSE of {first_variable} over time (mean over truths):", "",
             "| method | " + " | ".join(f"frame {k}" for k in frames) + " |",
             "|" + "---|" * (len(frames) + 1)]
    for method, curve in curves.items():
        lines.append(f"| {method} | " + " | ".join(
            f"{curve[first_variable][k]:.4f}" for k in frames) + " |")
    return lines


def _floor_lines(results: dict[str, Any]) -> list[str]:
    """The free run's final error over the best other method's, per variable (the floor:
    a ratio near 1 means no method used the observations)."""
    methods = {name: entry["summary"] for name, entry in results["methods"].items()
               if entry["summary"].get("runs")}
    if FREE_RUN not in methods or len(methods) < 2:
        return []
    cells = []
    for variable in results["variables"]:
        best = min((name for name in methods if name != FREE_RUN),
                   key=lambda name: methods[name]["final"][variable])
        ratio = methods[FREE_RUN]["final"][variable] / methods[best]["final"][variable]
        cells.append(f"{variable} {ratio:.3g}x ({best})")
    return ["", "Free run against the best method, final relative RMSE (free run / best): "
            + ", ".join(cells) + "."]


def markdown_report(results: dict[str, Any]) -> str:
    """Markdown tables of a :func:`~xldensf.experiments.run_benchmark` result.

    Parameters
    ----------
    results
        The dict returned by :func:`~xldensf.experiments.run_benchmark` (or its JSON).

    Returns
    -------
    str
        The settings in a sentence, the table of means per method, the error curve of one
        variable over time and the prediction-step timing.

    Examples
    --------
    >>> report = markdown_report({"case": "lorenz96", "setting": {"name": "quick",
    ...     "truths": 1, "members": 4, "noise": 0.1}, "model": "given", "variables": ["x"],
    ...     "parameters": {"F": 4.0}, "stations": {"trained": 2, "unseen": 2,
    ...     "grid_points": 40, "fraction": 0.05}, "methods": {}, "prediction_step":
    ...     {"latent_s_per_member": 1e-6, "full_s_per_member": 1e-4, "ratio": 100.0}})
    >>> report.splitlines()[0]
    '# LD-EnSF benchmark: lorenz96, quick setting'
    """
    setting, stations = results["setting"], results["stations"]
    lines = [
        f"# LD-EnSF benchmark: {results['case']}, {setting['name']} setting", "",
        f"{setting['truths']} held-out truths, {setting.get('latent_members', '-')} "
        f"members for the latent methods and {setting['members']} for the full-space ones, "
        f"{stations['trained']} stations ({100 * stations['fraction']:.2f} % of "
        f"{stations['grid_points']} grid points), {100 * setting['noise']:g} % noise. "
        f"Surrogate: {results['model']}.{_optional_sentence(results)}", "",
        "Means over the truths: relative RMSE of the ensemble mean at the last frame and "
        "averaged over frames 1..end; parameter error as a fraction of the prior range; "
        "spread/skill averaged over frames; wall time per cycle: the filter (forecast + "
        "analysis) and in total (with decoding every member on the grid for the scores); "
        "call: wall seconds from the `assimilate` call to the returned analysis (latent "
        "fields decoded lazily, on access).", "",
    ]
    table, curves = _method_table(results)
    lines += table + _floor_lines(results)
    if curves:
        lines += _curve_table(results, curves)
    timing = results["prediction_step"]
    lines += ["", "Prediction step over one observation interval, per member (median, "
              "side by side):", "",
              "| latent model [s] | full model [s] | ratio full / latent |", "|---|---|---|",
              f"| {timing['latent_s_per_member']:.3g} | {timing['full_s_per_member']:.3g} | "
              f"{timing['ratio']:.3g} |"]
    lines.append("")
    return "\n".join(lines)


def report_paths(results: dict[str, Any], directory: str | Path) -> tuple[Path, Path]:
    """The JSON and markdown files of a result in ``directory``.

    Parameters
    ----------
    results
        A :func:`~xldensf.experiments.run_benchmark` result (its ``case`` and setting name).
    directory
        The output directory.

    Returns
    -------
    tuple of pathlib.Path
        ``ldensf_<case>_<setting>.json`` and ``.md``.

    Examples
    --------
    >>> [p.name for p in report_paths({"case": "tsunami", "setting": {"name": "quick"}}, "out")]
    ['ldensf_tsunami_quick.json', 'ldensf_tsunami_quick.md']
    """
    stem = Path(directory) / f"ldensf_{results['case']}_{results['setting']['name']}"
    return stem.with_suffix(".json"), stem.with_suffix(".md")


def write_report(results: dict[str, Any], directory: str | Path) -> tuple[Path, Path]:
    """Write a result as strict JSON (every number) and as markdown, atomically.

    Parameters
    ----------
    results
        A :func:`~xldensf.experiments.run_benchmark` result.
    directory
        An existing directory.

    Returns
    -------
    tuple of pathlib.Path
        The JSON and markdown files written (:func:`report_paths`).

    Examples
    --------
    >>> import tempfile
    >>> results = {"case": "lorenz96", "setting": {"name": "quick", "truths": 1,
    ...     "members": 4, "noise": 0.1}, "model": "given", "variables": ["x"],
    ...     "parameters": {"F": 4.0}, "stations": {"trained": 2, "unseen": 2,
    ...     "grid_points": 40, "fraction": 0.05}, "methods": {}, "prediction_step":
    ...     {"latent_s_per_member": 1e-6, "full_s_per_member": 1e-4, "ratio": 100.0}}
    >>> with tempfile.TemporaryDirectory() as directory:
    ...     json_path, md_path = write_report(results, directory)
    ...     json_path.is_file() and md_path.is_file()
    True
    """
    json_path, md_path = report_paths(results, directory)
    with atomic_path(json_path) as temporary:
        Path(temporary).write_text(json.dumps(json_safe(results, strict=True), indent=1))
    with atomic_path(md_path) as temporary:
        Path(temporary).write_text(markdown_report(results))
    return json_path, md_path
