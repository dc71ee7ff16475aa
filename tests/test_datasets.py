"""Every case's Dataset follows the conventions: CF axes, units, attrs, exact netCDF round trip."""

import json

import cf_xarray  # noqa: F401  (registers ds.cf)
import numpy as np
import pytest
import xarray as xr

import xldensf as xl
from xldensf.conventions import parse_units

CASES = ["tsunami", "atmosphere", "kolmogorov", "lorenz96"]


@pytest.fixture(scope="module", params=CASES)
def small_run(request):
    case = request.param
    return case, xl.simulate(case, runs=2, seed=3, preset="small")


def test_cf_axes_are_found(small_run):
    case, ds = small_run
    axes = ds.cf.axes
    assert axes["T"] == ["time"]
    assert "X" in axes
    if case == "atmosphere":
        assert ds.cf["latitude"].name == "lat"
        assert ds.cf["longitude"].name == "lon"
    if case != "lorenz96":
        assert "Y" in axes


def test_every_variable_has_parseable_units_and_long_name(small_run):
    _, ds = small_run
    for name, variable in {**ds.data_vars, **ds.coords}.items():
        if name == "run":
            continue
        assert "units" in variable.attrs, name
        parse_units(variable.attrs["units"], name)
        assert variable.attrs.get("long_name"), name


def test_parameters_are_run_coordinates_with_units(small_run):
    case, ds = small_run
    model = xl.simulator(case, preset="small")
    for spec in model.parameter_specs:
        assert ds[spec.name].dims == ("run",)
        assert ds[spec.name].attrs["units"] == spec.units
        assert np.all(ds[spec.name] >= spec.prior_low)
        assert np.all(ds[spec.name] <= spec.prior_high)


def test_attrs_record_provenance(small_run):
    case, ds = small_run
    assert ds.attrs["xldensf_case"] == case
    assert ds.attrs["xldensf_preset"] == "small"
    assert ds.attrs["xldensf_seed"] == 3
    assert ds.attrs["xldensf_version"] == xl.__version__
    assert isinstance(json.loads(ds.attrs["xldensf_config"]), dict)


def test_values_are_finite(small_run):
    _, ds = small_run
    for name, variable in ds.data_vars.items():
        assert np.isfinite(variable.values).all(), name


def test_netcdf_round_trip_is_exact(small_run, tmp_path):
    _, ds = small_run
    path = xl.io.write_netcdf(ds, tmp_path / "run.nc")
    with xr.open_dataset(path) as back:
        back = back.load()
    xr.testing.assert_identical(back, ds)


def test_same_seed_same_run_and_parameters_given_explicitly(small_run):
    case, ds = small_run
    again = xl.simulate(case, runs=2, seed=3, preset="small")
    xr.testing.assert_identical(again, ds)
    model = xl.simulator(case, preset="small")
    explicit = {name: ds[name].values for name in model.parameter_names}
    replay = xl.simulate(case, parameters=explicit, seed=3, preset="small")
    assert replay.sizes["run"] == 2
    for name in model.parameter_names:
        np.testing.assert_array_equal(replay[name].values, ds[name].values)
