"""Full-space assimilation through ``obs.ldensf.assimilate(simulator, ...)``."""

import json

import numpy as np
import pytest
import xarray as xr

import xldensf as xl


@pytest.fixture(scope="module")
def lorenz():
    truth = xl.simulate("lorenz96", runs=1, seed=1, preset="small", n_outputs=81).isel(run=0)
    obs = truth.ldensf.observe(stations=40, noise=0.1, seed=0)
    return truth, obs, xl.simulator("lorenz96", preset="small")


def rmse(analysis, truth, start=0):
    error = analysis["x"].mean("member") - truth["x"]
    return float(np.sqrt((error.isel(time=slice(start, None)) ** 2).mean()))


def test_letkf_tracks_lorenz96_and_its_forcing(lorenz):
    truth, obs, model = lorenz
    analysis = obs.ldensf.assimilate(model, method="letkf", members=20, seed=0,
                                     inflation=1.04, localization=4.0)
    obs_std = float(obs["x_error_std"])
    # Every site is observed with error obs_std each step: a working filter's analysis error
    # after burn-in is well below the observation error (0.07 vs 0.29 measured); half of
    # the observation error leaves room for seeds and platforms.
    assert rmse(analysis, truth, start=40) < 0.5 * obs_std
    # The prior draws F ~ U(6, 10); the joint analysis must find the truth's F closely
    # (measured |error| 0.02; 0.3 is 7.5% of the prior range).
    assert abs(float(analysis["F"].isel(time=-1).mean()) - float(truth["F"])) < 0.3
    assert analysis["x"].dims == ("time", "member", "k")
    assert analysis["member"].attrs["standard_name"] == "realization"
    assert analysis.attrs["xldensf_method"] == "letkf"
    assert analysis.attrs["xldensf_seed"] == 0
    assert "localization" in analysis.attrs["xldensf_settings"]


def test_letkf_with_infinite_radius_equals_etkf(lorenz):
    _, obs, model = lorenz
    short = obs.isel(time=slice(0, 6))
    letkf = short.ldensf.assimilate(model, method="letkf", members=12, seed=3)
    etkf = short.ldensf.assimilate(model, method="etkf", members=12, seed=3)
    # Same prior, same deterministic transforms: equal to rounding (float64).
    xr.testing.assert_allclose(letkf, etkf.assign_attrs(letkf.attrs), atol=1e-9, rtol=0)


def test_missing_observations_are_skipped(lorenz):
    truth, obs, model = lorenz
    holes = obs.copy()
    rng = np.random.default_rng(0)
    mask = rng.random(holes["x"].shape) < 0.3
    holes["x"] = holes["x"].where(~mask)
    holes["x"][5] = np.nan  # one cycle with nothing observed
    analysis = holes.isel(time=slice(0, 20)).ldensf.assimilate(
        model, method="letkf", members=10, seed=0, localization=4.0, inflation=1.04)
    assert np.isfinite(analysis["x"].values).all()


def test_forecasts_are_returned(lorenz):
    _, obs, model = lorenz
    analysis = obs.isel(time=slice(0, 4)).ldensf.assimilate(
        model, method="enkf", members=6, seed=0, return_forecasts=True)
    assert {"x", "x_forecast", "F", "F_forecast"} <= set(analysis.data_vars)
    # The first cycle is at the prior's time, so forecast 0 is the prior; the analysis
    # differs from it because the observations move it.
    assert not np.allclose(analysis["x"][0], analysis["x_forecast"][0])


def test_prior_as_member_dataset_and_single_state(lorenz):
    truth, obs, model = lorenz
    short = obs.isel(time=slice(1, 5))
    start = truth.isel(time=0)
    around = short.ldensf.assimilate(model, method="etkf", members=8, seed=0,
                                     prior=start, prior_spread=0.05)
    assert np.allclose(around["F"].isel(time=0), float(truth["F"]))  # read from the prior
    members = xr.concat([start] * 8, dim="member").assign_coords(member=np.arange(8))
    with pytest.raises(xl.DataError, match="prior members"):
        short.ldensf.assimilate(model, method="etkf", members=6, prior=members)


def test_units_of_observations_come_back(lorenz):
    import cf_xarray.units  # noqa: F401

    truth = xl.simulate("tsunami", runs=1, seed=7, preset="small", n_outputs=4).isel(run=0)
    obs = truth.ldensf.observe(stations="5x5", noise=0.1, seed=0, variables=["u", "eta"])
    model = xl.simulator("tsunami", preset="small", n_outputs=4)
    in_kmh = obs.copy()
    in_kmh["u"] = (obs["u"] * 3.6).assign_attrs(obs["u"].attrs | {"units": "km h-1"})
    in_kmh["u_error_std"] = (obs["u_error_std"] * 3.6).assign_attrs(
        obs["u_error_std"].attrs | {"units": "km h-1"})
    metres = obs.ldensf.assimilate(model, method="etkf", members=6, seed=2)
    kmh = in_kmh.ldensf.assimilate(model, method="etkf", members=6, seed=2)
    assert kmh["u"].attrs["units"] == "km h-1"
    assert metres["v"].attrs["units"] == "m s-1"  # unobserved: model units
    np.testing.assert_allclose(kmh["u"].values, 3.6 * metres["u"].values, rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_allclose(kmh["eta"].values, metres["eta"].values, rtol=1e-9, atol=1e-12)
    in_kg = obs.copy()
    in_kg["u"].attrs["units"] = "kg"
    with pytest.raises(xl.UnitsError, match="kg"):
        in_kg.ldensf.assimilate(model, method="etkf", members=6)


def test_bad_input(lorenz):
    truth, obs, model = lorenz
    with pytest.raises(xl.ConfigurationError, match="members"):
        obs.ldensf.assimilate(model, method="etkf", members=1)
    with pytest.raises(xl.UnknownNameError, match="letkf"):
        obs.ldensf.assimilate(model, method="kalman", members=4)
    renamed = obs.rename({"x": "temperature"})
    renamed["temperature"].attrs["ancillary_variables"] = "x_error_std"
    with pytest.raises(xl.UnknownNameError, match="temperature"):
        renamed.ldensf.assimilate(model, method="etkf", members=4)
    early = obs.assign_coords(time=obs["time"] - 1.0)
    with pytest.raises(xl.DataError, match="times >= 0"):
        early.ldensf.assimilate(model, method="etkf", members=4)
    empty = obs.copy()
    empty["x"] = empty["x"] * np.nan
    with pytest.raises(xl.DataError, match="missing"):
        empty.ldensf.assimilate(model, method="etkf", members=4)
    with pytest.raises(xl.DataError, match="station"):
        truth.ldensf.assimilate(model, method="etkf", members=4)
    with pytest.raises(xl.ConfigurationError, match="model"):
        obs.ldensf.assimilate("lorenz96", method="etkf", members=4)


def test_obs_error_override_changes_the_weighting(lorenz):
    _, obs, model = lorenz
    first = obs.isel(time=[0])
    default = first.ldensf.assimilate(model, method="etkf", members=10, seed=0)
    doubtful = first.ldensf.assimilate(model, method="etkf", members=10, seed=0, obs_error=30.0)
    # Same prior (same seed); a larger observation error gives a smaller update, so the
    # analysis spread stays closer to the (climatological, ~3.6) prior spread.
    spread = lambda analysis: float(analysis["x"].std("member").mean())  # noqa: E731
    assert spread(doubtful) > 2 * spread(default)
    quantity = first.ldensf.assimilate(model, method="etkf", members=10, seed=0,
                                       obs_error={"x": 30.0 * xl.conventions.units("1")})
    xr.testing.assert_allclose(quantity, doubtful)
    with pytest.raises(xl.DataError, match="positive"):
        first.ldensf.assimilate(model, method="etkf", members=10, obs_error=-1.0)


def test_full_space_ensf_runs_stably_and_uses_the_observations(lorenz):
    truth, obs, model = lorenz
    short = obs.isel(time=slice(0, 10))
    analysis = short.ldensf.assimilate(model, method="ensf", members=10, seed=0,
                                       return_forecasts=True)
    assert np.isfinite(analysis["x"].values).all()
    # Every site is observed: the analysis must sit closer to the truth than its own
    # forecast on average (the EnSF's correction is weak but has the right sign).
    error = lambda name: float(abs(analysis[name].mean("member") - truth["x"].isel(  # noqa: E731
        time=slice(0, 10))).mean())
    assert error("x") < error("x_forecast")
    assert json.loads(analysis.attrs["xldensf_settings"]) == {}
