"""How well each linearisation of the decoder fits, on the analyses of the quick calls.

Records the forecast ensemble and the decoder operator of every ``StandardizedAnalysis``
call (the cycles after the particle start's handover) in the default ``assimilate`` calls
on the quick tsunami benchmark's truths (both layouts), takes about every
``len // 12``-th of them per call, and scores each linear fit ``H(x) ~ G x + offset``
against the decoder at all forecast members, in observation-error standard deviations:

- ``residual``: RMS over members and observations of ``G x + offset - H(x)`` (the
  least-squares fit over all members is the smallest possible);
- ``mean``: RMS over observations of the predicted observation of the ensemble mean
  against the members' mean observation.

Fits: least squares over all members (``ensemble_linearization``), over the first 100
(``linearize="ensemble"``), and the sigma points (``linearize="sigma-points"``).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/linearization_fit.py [--truths 5]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import xldensf.filters.wrappers as wrappers
from xldensf.experiments import benchmark_truths
from xldensf.filters.base import ObservationOperator

#: Cycles scored per call (about evenly spaced).
CYCLES_PER_CALL = 12


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--truths", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    recorded: list[tuple[torch.Tensor, ObservationOperator, torch.Tensor]] = []
    analysis = wrappers.StandardizedAnalysis.analysis

    def recording(self, ensemble, observations, operator, obs_std, generator=None, **kw):
        recorded.append((ensemble.clone(), ObservationOperator.wrap(operator),
                         torch.as_tensor(obs_std, dtype=torch.float64)))
        return analysis(self, ensemble, observations, operator, obs_std, generator, **kw)

    wrappers.StandardizedAnalysis.analysis = recording
    fits = {"least squares, all members": lambda op, x: wrappers.ensemble_linearization(op, x),
            "least squares, first 100": lambda op, x: wrappers.ensemble_linearization(
                op, x[:100]),
            "sigma points": wrappers.sigma_point_linearization}
    scores: dict[str, dict[str, list[float]]] = {name: {"residual": [], "mean": []}
                                                 for name in fits}
    truths = benchmark_truths("tsunami", quick=True, last=args.truths)
    for prepared in truths:
        for layout in ("trained", "unseen"):
            recorded.clear()
            prepared.observations[layout].ldensf.assimilate(
                truths.model, seed=prepared.seed, progress=False,
                members=truths.setting.latent_members)
            for ensemble, operator, obs_std in recorded[::max(1, len(recorded)
                                                               // CYCLES_PER_CALL)]:
                with torch.no_grad():
                    observed = operator(ensemble).double()
                state = ensemble.double()
                for name, fit in fits.items():
                    linear, offset = fit(operator, ensemble)
                    predicted = state @ linear.matrix.double().T + offset.double()
                    scores[name]["residual"].append(float(
                        (((predicted - observed) / obs_std) ** 2).mean().sqrt()))
                    at_mean = linear.matrix.double() @ state.mean(0) + offset.double()
                    scores[name]["mean"].append(float(
                        (((at_mean - observed.mean(0)) / obs_std) ** 2).mean().sqrt()))
    print(f"{len(scores['sigma points']['mean'])} cycles; RMS in observation-error stds, "
          "median / 90th percentile / max")
    for name, values in scores.items():
        text = ", ".join(f"{key} {np.median(v):.4f} / {np.quantile(v, 0.9):.4f} / "
                         f"{np.max(v):.4f}" for key, v in values.items())
        print(f"{name}: {text}")


if __name__ == "__main__":
    main()
