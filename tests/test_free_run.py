"""The free run (``method="free-run"``): forecasts only, the floor of every benchmark."""

import numpy as np
import torch

import xldensf as xl
from xldensf.experiments import markdown_report
from xldensf.filters import FILTERS, FreeRun, cycle


def test_the_analysis_returns_the_forecast_and_inflates_only_when_asked():
    prior = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.equal(FreeRun().analysis(prior, torch.zeros(2, 3), torch.eye(3), 0.1), prior)
    inflated = FreeRun(inflation=2.0).analysis(prior, torch.zeros(2, 3), torch.eye(3), 0.1)
    torch.testing.assert_close(inflated.mean(dim=1), prior.mean(dim=1))
    torch.testing.assert_close(inflated.std(dim=1), 2.0 * prior.std(dim=1))
    assert FILTERS["free-run"] is FreeRun


def test_cycling_equals_the_forecast_alone():
    # linear model x <- 0.9 x: the free run after k cycles is 0.9^k times the prior exactly
    prior = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    observations = torch.full((3, 2), 100.0, dtype=torch.float64)  # far away: must be ignored
    operator = torch.eye(4, dtype=torch.float64)[:2]
    result = cycle(FreeRun(), lambda ensemble, t0, duration: 0.9 * ensemble, prior,
                   [1.0, 2.0, 3.0], observations, operator, 0.1)
    for k, analysis in enumerate(result.analysis, start=1):
        torch.testing.assert_close(analysis, prior * 0.9 ** k)


def test_the_full_model_free_run_ignores_the_observations():
    model = xl.simulator("lorenz96", preset="small")
    truth = xl.simulate("lorenz96", runs=1, seed=3, preset="small", n_outputs=4).isel(run=0)
    runs = [truth.ldensf.observe(stations=8, noise=0.1, seed=seed)
            .ldensf.assimilate(model, method="free-run", members=6, seed=0, progress=False)
            for seed in (0, 1)]   # two different observation draws, the same prior seed
    np.testing.assert_array_equal(runs[0]["x"].values, runs[1]["x"].values)
    # the parameter keeps its prior draw: no observation updates it
    np.testing.assert_array_equal(runs[0]["F"].values, runs[0]["F"].isel(time=[0] * 4).values)
    assert runs[0].attrs["xldensf_method"] == "free-run"


def test_the_report_states_the_floor_ratio():
    def summary(final):
        return {"summary": {"runs": 1, "final": {"x": final}, "mean": {"x": final},
                            "parameter_error": {"F": 0.1}, "spread_skill": {"x": 1.0},
                            "filter_seconds_per_cycle": 0.1, "seconds_per_cycle": 0.1,
                            "relative_rmse": {"x": [final, final]}}}
    results = {"case": "lorenz96", "setting": {"name": "quick", "truths": 1, "members": 4,
               "noise": 0.1}, "model": "given", "variables": ["x"], "parameters": {"F": 4.0},
               "stations": {"trained": 2, "unseen": 2, "grid_points": 40, "fraction": 0.05},
               "methods": {"free-run": summary(0.9), "enkf": summary(0.3),
                           "letkf": summary(0.45)},
               "prediction_step": {"latent_s_per_member": 1e-6, "full_s_per_member": 1e-4,
                                   "ratio": 100.0}}
    assert "free run / best): x 3x (enkf)." in markdown_report(results)
