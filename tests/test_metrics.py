"""Metrics against hand-computable and brute-force references."""

import numpy as np
import pytest
import xarray as xr

import xldensf as xl
from xldensf import metrics


def planar(values, name="u"):
    ny, nx = values.shape[-2:]
    dims = ("member", "time", "y", "x")[-values.ndim:]
    return xr.Dataset({name: (dims, values, {"units": "m s-1"})},
                      coords={"x": ("x", np.arange(nx), {"axis": "X"}),
                              "y": ("y", np.arange(ny), {"axis": "Y"}),
                              **({"time": ("time", np.arange(values.shape[-3]))}
                                 if values.ndim >= 3 else {})})


def test_relative_rmse_by_hand():
    truth = planar(np.full((3, 4, 5), 2.0))
    analysis = planar(np.full((2, 3, 4, 5), 2.2))  # every member 10% too high
    result = metrics.relative_rmse(analysis, truth)
    np.testing.assert_allclose(result["u"].values, 0.1, rtol=1e-12)
    assert result["u"].dims == ("time",)


def test_area_weights_on_the_sphere():
    lat = np.array([-60.0, 0.0, 60.0])
    lon = np.array([0.0, 120.0, 240.0])
    coords = {"lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude"}),
              "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude"})}
    truth = xr.Dataset({"h": (("lat", "lon"), np.ones((3, 3)))}, coords=coords)
    error = np.zeros((3, 3))
    error[0] = 1.0  # error only at 60 S, weight cos 60 = 0.5 of the equator's
    analysis = truth + xr.DataArray(error, dims=("lat", "lon"))
    expected = np.sqrt(0.5 * 3 / (0.5 * 3 + 3 + 0.5 * 3))
    np.testing.assert_allclose(float(metrics.relative_rmse(analysis, truth)["h"]), expected)


def test_crps_matches_brute_force():
    rng = np.random.default_rng(0)
    members, observed = rng.normal(size=(7, 50)), rng.normal(size=50)
    skill = np.abs(members - observed).mean(axis=0)
    pairs = np.abs(members[:, None] - members[None, :]).sum(axis=(0, 1))
    np.testing.assert_allclose(metrics.crps_ensemble_kernel(members, observed),
                               skill - pairs / (2 * 49), rtol=1e-12)
    np.testing.assert_allclose(metrics.crps_ensemble_kernel(members, observed, fair=True),
                               skill - pairs / (2 * 7 * 6), rtol=1e-12)


def test_calibrated_ensemble_has_unit_spread_skill_and_flat_ranks():
    rng = np.random.default_rng(1)
    # Truth and members are exchangeable draws: the ensemble is calibrated by construction.
    draws = rng.normal(size=(9, 1, 40, 40))
    truth, analysis = planar(draws[0, 0][None]), planar(draws[1:])
    ratio = float(metrics.spread_skill_ratio(analysis, truth)["u"].squeeze())
    # 1600 points: the sampling error of the ratio is a few per cent.
    assert abs(ratio - 1.0) < 0.08
    counts = metrics.rank_histogram(analysis, truth, "u").values
    expected = 1600 / 9
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 26.1  # 99.9% quantile of chi-square with 8 degrees of freedom
    above = metrics.rank_histogram(analysis, truth + 100.0, "u").values
    assert above[-1] == 1600 and above[:-1].sum() == 0


def test_accessor_scores_an_analysis_and_errors():
    truth = xl.simulate("lorenz96", runs=1, seed=1, preset="small", n_outputs=11).isel(run=0)
    obs = truth.ldensf.observe(stations=40, noise=0.1, seed=0)
    analysis = obs.ldensf.assimilate(xl.simulator("lorenz96", preset="small"), method="letkf",
                                     members=8, seed=0, localization=4.0, inflation=1.04)
    score = analysis.ldensf.relative_rmse(truth)
    assert score["x"].dims == ("time",)
    assert float(score["x"][-1]) < float(score["x"][0])  # assimilation reduces the error
    assert float(analysis.ldensf.crps(truth)["x"][-1]) > 0
    with pytest.raises(xl.DataError, match=r"analysis' \['x'\] in the truth"):
        analysis.ldensf.rmse(truth.rename({"x": "y"}))
    with pytest.raises(xl.DataError, match="variable 'x' in the truth"):
        metrics.relative_rmse(analysis, truth.rename({"x": "y"}), ["x"])
    with pytest.raises(xl.DataError, match="variable 'z' in the analysis"):
        metrics.relative_rmse(analysis, truth, ["z"])
    with pytest.raises(xl.DataError, match="member"):
        metrics.spread(analysis.isel(member=0))


def test_spatial_anomaly_has_zero_area_weighted_mean_on_the_sphere():
    truth = xl.simulate("atmosphere", runs=1, seed=0, preset="small", n_outputs=2).isel(run=0)
    anomaly = metrics.spatial_anomaly(truth, ["h"])["h_anomaly"]
    weights = np.cos(np.deg2rad(truth["lat"]))
    weighted_mean = (anomaly * weights).sum(("lat", "lon")) / (weights.sum() * truth.sizes["lon"])
    # float64 sums of ~2000 values of ~100 m: round-off ~1e-12 m
    assert float(abs(weighted_mean).max()) < 1e-9
    shift = (anomaly - truth["h"]).std(("lat", "lon"))
    assert float(shift.max()) < 1e-9             # one constant per time: only the mean moved
    with pytest.raises(xl.DataError, match="variable 'q'"):
        metrics.spatial_anomaly(truth, ["q"])
