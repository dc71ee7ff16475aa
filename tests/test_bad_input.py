"""Bad input gets a clear xldensf error (issue 13, item 9)."""

import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

import xldensf as xl
from xldensf.conventions import station_dim
from xldensf.experiments import shipped_model_path


@pytest.fixture(scope="module")
def lorenz():
    truth = xl.simulate("lorenz96", runs=1, seed=1, preset="small", n_outputs=6).isel(run=0)
    return truth, truth.ldensf.observe(stations=10, noise=0.1, seed=0)


def all_missing(observations, names):
    out = observations.copy()
    for name in names:
        out[name] = observations[name].where(False)
    return out


def test_all_observations_missing_is_nothing_to_assimilate(lorenz):
    _, obs = lorenz
    model = xl.simulator("lorenz96", preset="small")
    with pytest.raises(xl.XLDEnSFError, match="nothing to assimilate"):
        all_missing(obs, ["x"]).ldensf.assimilate(model, method="etkf", members=4)
    with pytest.raises(xl.DataError, match="nothing to assimilate"):
        obs.isel(station=[]).ldensf.assimilate(model, method="etkf", members=4)


def test_all_observations_missing_with_the_shipped_latent_model():
    model = xl.load_model(shipped_model_path())
    truth = xl.simulate("tsunami", runs=1, seed=0, preset="small", n_outputs=3).isel(run=0)
    obs = truth.ldensf.observe(stations=9, noise=0.1, seed=0, variables=["eta"])
    with pytest.raises(xl.XLDEnSFError, match="nothing to assimilate"):
        all_missing(obs, ["eta"]).ldensf.assimilate(model, members=4, seed=0)


def test_station_dim_found_by_cf_role(lorenz):
    truth, obs = lorenz
    model = xl.simulator("lorenz96", preset="small")
    renamed = obs.rename(station="site")
    assert station_dim(renamed) == "site"
    assert renamed["site"].attrs["cf_role"] == "timeseries_id"
    settings = dict(method="etkf", members=4, seed=0)
    expected = obs.ldensf.assimilate(model, **settings)
    analysis = renamed.ldensf.assimilate(model, **settings)
    np.testing.assert_array_equal(analysis["x"].values, expected["x"].values)
    unmarked = renamed.copy()
    unmarked["site"].attrs.pop("cf_role")
    with pytest.raises(xl.DataError, match="cf_role 'timeseries_id'"):
        unmarked.ldensf.assimilate(model, **settings)


def test_station_dim_of_a_string_identifier_variable():
    ds = xr.Dataset({"name": (("obs", "strlen"), np.zeros((3, 4), "S1"),
                              {"cf_role": "timeseries_id"})})
    assert station_dim(ds) == "obs"
    assert station_dim(xr.Dataset({"u": ("x", [1.0])})) is None


def test_truth_on_a_different_grid_is_a_clear_error(lorenz):
    truth, _ = lorenz
    analysis = truth.expand_dims(member=2)
    coarse = truth.isel(k=slice(None, None, 2)).assign_coords(k=truth["k"][::2] + 0.5)
    with pytest.raises(xl.DataError, match="interpolate=True"):
        analysis.ldensf.rmse(coarse)


def test_import_emits_no_warning_without_matplotlib():
    code = ("import sys, warnings\n"
            "sys.modules['matplotlib'] = None\n"
            "warnings.simplefilter('error')\n"
            "import xldensf\n"
            "import xldensf.conventions\n")
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
