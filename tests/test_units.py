"""Units right: differences convert as differences, Quantity data and settings."""

import numpy as np
import pytest
import xarray as xr

import xldensf as xl
from xldensf.assimilation import observation_problem
from xldensf.conventions import (
    convert_differences,
    convert_values,
    dequantify,
    quantity_magnitude,
    units,
)
from xldensf.errors import UnitsError


@pytest.fixture(scope="module")
def l96_truth():
    return xl.simulate("lorenz96", seed=1, preset="small", n_outputs=11).isel(run=0)


@pytest.fixture(scope="module")
def celsius(l96_truth):
    """A Lorenz-96 truth relabelled as a temperature in degC."""
    out = l96_truth.copy()
    out["x"] = out["x"].copy(data=out["x"].values + 10.0)
    out["x"].attrs = {"units": "degC", "long_name": "temperature"}
    return out


def test_convert_differences():
    assert float(convert_differences(1.0, "K", "degC")) == 1.0
    assert float(convert_differences(1.0, "degC", "K")) == 1.0
    np.testing.assert_allclose(convert_differences(9.0, "delta_degF", "K"), 5.0)
    np.testing.assert_allclose(convert_differences(1.0, "degF", "degC"), 5 / 9)
    np.testing.assert_allclose(convert_differences([1.0, 2.0], "m s-1", "km h-1"), [3.6, 7.2])
    # values (not differences) keep the affine conversion
    np.testing.assert_allclose(convert_values(np.array(1.0), "K", "degC"), -272.15)
    with pytest.raises(UnitsError, match="'m'"):
        convert_differences(1.0, "s", "m")


def test_one_kelvin_of_noise_on_a_degc_field_is_one_degc(celsius):
    obs = celsius.ldensf.observe(stations=5, noise=1.0 * units.K, seed=0)
    assert float(obs["x_error_std"]) == 1.0
    assert obs["x_error_std"].attrs["units"] == "degC"


def test_error_std_is_converted_as_a_difference(celsius):
    obs = celsius.ldensf.observe(stations=5, noise=1.0 * units.K, seed=0)
    problem = observation_problem(obs, xl.simulator("lorenz96", preset="small"),
                                  variable_units={"x": "K"})
    np.testing.assert_allclose(problem.values.numpy(), obs["x"].values + 273.15)
    np.testing.assert_allclose(problem.obs_std.numpy(), 1.0)
    # an ancillary std stored in K, and obs_error= as a Quantity in K
    in_kelvin = obs.assign(x_error_std=obs["x_error_std"].assign_attrs(units="K"))
    problem = observation_problem(in_kelvin, xl.simulator("lorenz96", preset="small"),
                                  variable_units={"x": "K"})
    np.testing.assert_allclose(problem.obs_std.numpy(), 1.0)
    problem = observation_problem(obs, xl.simulator("lorenz96", preset="small"),
                                  variable_units={"x": "degC"}, obs_error=2.0 * units.K)
    np.testing.assert_allclose(problem.obs_std.numpy(), 2.0)


def test_quantified_input_is_dequantified_not_stripped(celsius):
    quantified = celsius.copy()
    quantified["x"] = xr.DataArray(units.Quantity(celsius["x"].values, "K"),
                                   dims=celsius["x"].dims)
    plain = dequantify(quantified)
    assert plain["x"].attrs["units"] == "K"
    assert isinstance(plain["x"].data, np.ndarray)
    obs = quantified.ldensf.observe(stations=5, noise=0.0, seed=0)
    assert obs["x"].attrs["units"] == "K"
    reference = celsius.ldensf.observe(stations=5, noise=0.0, seed=0)
    np.testing.assert_allclose(obs["x"].values, reference["x"].values)
    # quantified observations into the reader: converted from their real units
    quantified_obs = reference.copy()
    quantified_obs["x"] = xr.DataArray(units.Quantity(reference["x"].values, "degC"),
                                       dims=reference["x"].dims,
                                       attrs={"ancillary_variables": "x_error_std"})
    problem = observation_problem(quantified_obs, xl.simulator("lorenz96", preset="small"),
                                  variable_units={"x": "K"}, obs_error=0.5)
    np.testing.assert_allclose(problem.values.numpy(), reference["x"].values + 273.15)


def test_dequantify_a_dataarray_and_coordinates():
    da = xr.DataArray(units.Quantity(np.arange(3.0), "m s-1"), dims="x",
                      coords={"x": ("x", units.Quantity(np.arange(3.0), "km").magnitude)},
                      name="u")
    out = dequantify(da)
    assert out.name == "u" and out.attrs["units"] == "m s-1"
    assert dequantify(out).identical(out)


def test_quantity_magnitude_names_expected_and_found():
    assert float(quantity_magnitude(150 * units.km, "m", "localization")) == 150e3
    with pytest.raises(UnitsError, match=r"expected units convertible to 'm'.*found 's'"):
        quantity_magnitude(3 * units.s, "m", "localization")


@pytest.fixture(scope="module")
def tsunami_obs():
    truth = xl.simulate("tsunami", seed=1, preset="small").isel(run=0)
    return truth.ldensf.observe(stations="4x4", noise=0.1, seed=0, every=10)


def _letkf(obs, case, **settings):
    return obs.ldensf.assimilate(xl.simulator(case, preset="small"), method="letkf",
                                 members=6, seed=0, **settings)


def test_localization_quantity(tsunami_obs):
    with_quantity = _letkf(tsunami_obs, "tsunami", localization=150 * units.km)
    with_metres = _letkf(tsunami_obs, "tsunami", localization=150e3)
    np.testing.assert_array_equal(with_quantity["eta"].values, with_metres["eta"].values)


def test_localization_quantity_on_a_periodic_index_grid(l96_truth):
    obs = l96_truth.ldensf.observe(stations=20, noise=0.1, seed=0, every=2)
    with_quantity = _letkf(obs, "lorenz96", localization=4 * units.dimensionless)
    plain = _letkf(obs, "lorenz96", localization=4.0)
    np.testing.assert_array_equal(with_quantity["x"].values, plain["x"].values)


def test_wrong_unit_localization_is_a_units_error(tsunami_obs):
    with pytest.raises(UnitsError, match=r"localization.*'m'.*found 's'"):
        _letkf(tsunami_obs, "tsunami", localization=150 * units.s)


def test_wrong_unit_obs_error_is_a_units_error(tsunami_obs):
    with pytest.raises(UnitsError, match=r"obs_error.*'m s-1'.*found 's'"):
        _letkf(tsunami_obs, "tsunami", obs_error=1.0 * units.s)
