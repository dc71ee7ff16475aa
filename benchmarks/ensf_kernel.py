"""The EnSF analysis kernel against exact posteriors (issue #12), with an ablation.

An 8-dimensional Gaussian prior ``N(0, Sigma)`` (fixed random correlations, unit
variances); per trial the truth is drawn from the prior (so it is never a member), the
``members`` forecast members are independent draws from the prior, and the first 3
components are observed: linearly with sigma_obs = 0.5, or through ``arctan`` with
sigma_obs = 0.1. The exact posterior is the Kalman filter of the true prior (linear) or
importance sampling with 2e5 prior draws (arctan; its effective sample size is recorded).
Every method analyses the same draws (all trials in one batched call).

Metrics per method, obs type and member count, averaged over trials and the 8 dimensions:
``error`` = (analysis mean - posterior mean)^2 / posterior variance; ``spread`` =
sqrt(mean analysis variance / posterior variance); seconds per analysis (batched call
time / trials, 1 thread).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/ensf_kernel.py [--trials 60] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

from xldensf.filters import ETKF, EnSF

RESULTS = Path(__file__).parent / "results"
F64 = torch.float64
DIM, OBSERVED = 8, 3
OBS_STD = {"linear": 0.5, "arctan": 0.1}
MEMBERS = (20, 50, 100, 200)

#: Methods: name -> (filter, description). "default" is ``EnSF()``.
METHODS: dict[str, tuple[object, str]] = {
    "etkf": (ETKF(), "ETKF (symmetric square root)"),
    "default": (EnSF(), "EnSF() default: gaussian prior score, tweedie likelihood, K = 100, "
                        "eps_alpha 0.05, quadratic time grid, centred noise"),
    "old-default": (EnSF(prior_score="member", likelihood="damped", center_noise=False),
                    "main's default: member score, damped likelihood, uncentred noise"),
    "paper": (EnSF.paper("lorenz96"), "EnSF.paper('lorenz96') (eps_alpha 0.01)"),
    "mixture": (EnSF(prior_score="mixture", likelihood="damped", center_noise=False),
                "paper's mixture score, damped likelihood"),
    "mixture-eb05": (EnSF(prior_score="mixture", likelihood="damped", eps_beta=0.05,
                          center_noise=False), "mixture, damped, eps_beta 0.05"),
    "gaussian-damped": (EnSF(likelihood="damped"), "gaussian score, damped likelihood"),
    "gaussian-damped-ea05": (EnSF(likelihood="damped", eps_alpha=0.5),
                             "gaussian score, damped likelihood, eps_alpha 0.5"),
    "mixture-tweedie": (EnSF(prior_score="mixture"), "mixture score, tweedie likelihood"),
    "kernel": (EnSF(prior_score="kernel"), "kernel mixture (Silverman h), tweedie"),
    "uncentred": (EnSF(center_noise=False), "default without centred noise"),
    "ode": (EnSF(sampler="ode"), "default with the probability-flow ODE"),
    "K25": (EnSF(steps=25), "default with K = 25"),
    "K400": (EnSF(steps=400), "default with K = 400"),
    "ea05": (EnSF(eps_alpha=0.5), "default with eps_alpha 0.5 (the N(0, I) start is then "
                                  "biased: the t = 1 marginal has mean 0.5 m)"),
    "local-jacobian": (EnSF(jacobian="local"), "default with J_H(xhat)^T by autograd"),
    "uniform": (EnSF(time_power=1.0), "default with the uniform time grid"),
}


def prior_covariance() -> torch.Tensor:
    """The fixed prior covariance: random correlations, unit variances."""
    generator = torch.Generator().manual_seed(12)
    factor = torch.randn(DIM, DIM, generator=generator, dtype=F64) / DIM ** 0.5
    covariance = factor @ factor.T + 0.5 * torch.eye(DIM, dtype=F64)
    scale = covariance.diagonal().rsqrt()
    return covariance * scale[:, None] * scale[None, :]


def observe(kind: str, state: torch.Tensor) -> torch.Tensor:
    """``H(state)`` for rows ``(..., DIM)``."""
    observed = state[..., :OBSERVED]
    return observed if kind == "linear" else torch.atan(observed)


def exact_posteriors(kind: str, observations: torch.Tensor, cholesky: torch.Tensor,
                     draws: int = 200_000) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Posterior means, variances ``(trials, DIM)`` and the smallest IS effective size."""
    covariance = cholesky @ cholesky.T
    std = OBS_STD[kind]
    if kind == "linear":
        operator = torch.eye(DIM, dtype=F64)[:OBSERVED]
        innovation = operator @ covariance @ operator.T + std ** 2 * torch.eye(OBSERVED,
                                                                                 dtype=F64)
        gain = covariance @ operator.T @ torch.linalg.inv(innovation)
        means = observations @ gain.T
        variance = (covariance - gain @ operator @ covariance).diagonal()
        return means, variance.expand_as(means).clone(), float("inf")
    generator = torch.Generator().manual_seed(99)
    samples = torch.randn(draws, DIM, generator=generator, dtype=F64) @ cholesky.T
    predicted = observe(kind, samples)
    means, variances, smallest = [], [], float("inf")
    for y in observations:
        log_weight = -0.5 * ((y - predicted) / std).square().sum(-1)
        weight = torch.softmax(log_weight, dim=0)
        mean = weight @ samples
        means.append(mean)
        variances.append(weight @ (samples - mean).square())
        smallest = min(smallest, float(1.0 / weight.square().sum()))
    return torch.stack(means), torch.stack(variances), smallest


def evaluate(method: object, kind: str, prior: torch.Tensor, observations: torch.Tensor,
             means: torch.Tensor, variances: torch.Tensor, seed: int) -> dict:
    """Error, spread ratio and time of ``method`` on all trials (one batched call)."""
    operator = (torch.eye(DIM, dtype=F64)[:OBSERVED] if kind == "linear"
                else (lambda x: observe(kind, x)))
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        analysis = method.analysis(prior, observations, operator, OBS_STD[kind], generator)
    seconds = (time.perf_counter() - start) / prior.shape[0]
    error = ((analysis.mean(1) - means).square() / variances).mean()
    spread = (analysis.var(1) / variances).mean().sqrt()
    return {"error": float(error), "spread": float(spread), "seconds": seconds,
            "warnings": sorted({str(w.message) for w in caught})}


def run(trials: int, members_list: tuple[int, ...], methods: list[str]) -> list[dict]:
    """All rows: per obs type, member count and method."""
    cholesky = torch.linalg.cholesky(prior_covariance())
    rows = []
    for kind in ("linear", "arctan"):
        generator = torch.Generator().manual_seed(7)
        truth = torch.randn(trials, DIM, generator=generator, dtype=F64) @ cholesky.T
        observations = observe(kind, truth) + OBS_STD[kind] * torch.randn(
            trials, OBSERVED, generator=generator, dtype=F64)
        means, variances, ess = exact_posteriors(kind, observations, cholesky)
        for members in members_list:
            prior = torch.randn(trials, members, DIM, generator=torch.Generator().manual_seed(
                1000 + members), dtype=F64) @ cholesky.T
            for name in methods:
                row = evaluate(METHODS[name][0], kind, prior, observations, means, variances,
                               seed=members)
                row.update({"obs": kind, "members": members, "method": name,
                            "reference_min_ess": ess})
                rows.append(row)
                print(f"{kind:6s} M={members:3d} {name:16s} error {row['error']:.3f} "
                      f"spread {row['spread']:.2f} {1e3 * row['seconds']:.1f} ms", flush=True)
    return rows


def markdown(rows: list[dict], trials: int, command: str) -> str:
    """The results table (error / spread per member count) and the ablation key."""
    members_list = sorted({r["members"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = ["# The EnSF kernel against exact posteriors", "",
             f"8-D Gaussian prior (unit variances, random correlations), 3 components "
             f"observed, {trials} trials, truth drawn from the prior (not a member), members "
             "drawn independently; reference: Kalman (linear, sigma_obs 0.5) or importance "
             "sampling with 2e5 prior draws (arctan, sigma_obs 0.1). Cells: normalised "
             "squared error of the analysis mean in posterior-variance units (averaged over "
             "trials and dimensions) / spread ratio (analysis std / posterior std). "
             "Float64, 1 thread; time = batched call / trials, at the largest M.", ""]
    for kind in ("linear", "arctan"):
        ess = min(r["reference_min_ess"] for r in rows if r["obs"] == kind)
        lines += [f"## {kind} observations" + ("" if kind == "linear" else
                                               f" (smallest IS effective size {ess:.0f})"), "",
                  "| method | " + " | ".join(f"M = {m}" for m in members_list)
                  + " | ms / analysis |", "|---|" + "---|" * (len(members_list) + 1)]
        for name in methods:
            cells = {r["members"]: r for r in rows if r["obs"] == kind and r["method"] == name}
            lines.append(f"| {name} | " + " | ".join(
                f"{cells[m]['error']:.3f} / {cells[m]['spread']:.2f}" for m in members_list)
                + f" | {1e3 * cells[members_list[-1]]['seconds']:.2f} |")
        lines.append("")
    lines += ["## Methods", ""] + [f"- `{name}`: {METHODS[name][1]}" for name in methods]
    warned = sorted({w for r in rows for w in r["warnings"]})
    if warned:
        lines += ["", "Warnings raised (step adaptation):", ""] + [f"- {w}" for w in warned]
    lines += ["", f"Command: `{command}`.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--members", type=int, nargs="*", default=list(MEMBERS))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = run(args.trials, tuple(args.members), args.methods)
    if args.no_write:
        return
    command = "OMP_NUM_THREADS=1 python benchmarks/ensf_kernel.py " + " ".join(sys.argv[1:])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ensf_kernel.json").write_text(json.dumps(
        {"command": command, "trials": args.trials, "rows": rows}, indent=1))
    (RESULTS / "ensf_kernel.md").write_text(markdown(rows, args.trials, command))


if __name__ == "__main__":
    main()
