"""Station observations: geometry, interpolation operator, layouts, noise and CF output."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import xarray as xr

import xldensf as xl
from xldensf.conventions import units
from xldensf.geometry import (
    EARTH_RADIUS,
    GridGeometry,
    InterpolationOperator,
    random_layout,
    regular_layout,
)
from xldensf.observations import observe

# Interpolation is a weighted sum of at most four float64 numbers: results agree with the
# analytic value to a few ulps of the field's magnitude (~1e3 here), hence 1e-9 absolute.
EXACT = {"rtol": 1e-12, "atol": 1e-9}


# ------------------------------------------------------------------------------ fixtures
def bilinear(x, y, t=0.0):
    """A bilinear function of (x, y), with coefficients varying in time."""
    return 2.0 + 0.3 * x - 0.7 * y + 0.05 * x * y + t * (1.0 + 0.1 * x)


def planar_dataset(x_units: str = "m") -> xr.Dataset:
    """Non-uniform planar grid (metres), dims (time, y, x), no xldensf attrs."""
    x = np.array([0.0, 1.0, 2.5, 4.0, 7.0, 10.0])
    y = np.array([-3.0, -1.0, 0.0, 2.0, 5.0])
    time = np.arange(4.0)
    t, yy, xx = np.meshgrid(time, y, x, indexing="ij")
    scale = float(units.Quantity(1.0, x_units).to("m").magnitude)
    return xr.Dataset(
        {
            "eta": (("time", "y", "x"), bilinear(xx, yy, t), {"units": "m",
                    "standard_name": "sea_surface_height_above_mean_sea_level"}),
            "u": (("time", "y", "x"), -bilinear(xx, yy, t), {"units": "m s-1"}),
            "depth": (("y", "x"), np.full(xx.shape[1:], 100.0), {"units": "m"}),
        },
        coords={
            "time": ("time", time, {"standard_name": "time", "units": "s"}),
            "x": ("x", x / scale, {"axis": "X", "units": x_units}),
            "y": ("y", y / scale, {"axis": "Y", "units": x_units}),
        },
    )


def sphere_dataset(lon: np.ndarray | None = None, descending: bool = False) -> xr.Dataset:
    """Lat/lon grid named latitude/longitude, winds in km/h, global in longitude."""
    lon = np.arange(0.0, 360.0, 2.0) if lon is None else lon
    lat = np.linspace(-60.0, 60.0, 7)
    if descending:
        lat = lat[::-1]
    time = np.arange(3.0)
    t, la, lo = np.meshgrid(time, lat, lon, indexing="ij")
    wind = 10.0 * np.cos(np.deg2rad(lo)) * np.cos(np.deg2rad(la)) + t + 0.1 * la
    return xr.Dataset(
        {"wind": (("time", "latitude", "longitude"), wind,
                  {"units": "km h-1", "standard_name": "eastward_wind"})},
        coords={
            "time": ("time", time, {"standard_name": "time", "units": "h"}),
            "latitude": ("latitude", lat, {"units": "degrees_north"}),
            "longitude": ("longitude", lon, {"units": "degrees_east"}),
        },
    )


@pytest.fixture(scope="module")
def lorenz() -> xr.Dataset:
    return xl.simulate("lorenz96", preset="small", runs=1, seed=0).isel(run=0)


def stations(**positions) -> xr.Dataset:
    """A layout Dataset from name -> (values, attrs) with dim ``station``."""
    return xr.Dataset(coords={name: ("station", np.asarray(values, dtype=float), attrs)
                              for name, (values, attrs) in positions.items()})


# ------------------------------------------------------------------------------ geometry
def test_geometry_finds_axes_by_cf_meaning_and_periodicity(lorenz):
    planar = GridGeometry.from_dataset(planar_dataset())
    assert planar.dims == ("y", "x") and not planar.sphere
    assert all(axis.period is None for axis in planar.axes)

    sphere = GridGeometry.from_dataset(sphere_dataset())
    assert sphere.sphere and sphere.dims == ("latitude", "longitude")
    assert sphere.axis("longitude").period == 360.0 and sphere.axis("latitude").period is None

    regional = GridGeometry.from_dataset(sphere_dataset(lon=np.arange(0.0, 90.0, 2.0)))
    assert regional.axis("longitude").period is None  # does not close the circle

    assert GridGeometry.from_dataset(lorenz).axes[0].period == 40.0  # from xldensf_case

    # Kolmogorov-like nondimensional [0, 2 pi) grid: detected from the full-period span.
    side = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    kolmogorov = xr.Dataset(coords={"x": ("x", side, {"axis": "X", "units": "1"}),
                                    "y": ("y", side, {"axis": "Y", "units": "1"})})
    assert [a.period for a in GridGeometry.from_dataset(kolmogorov).axes] == pytest.approx(
        [2 * np.pi] * 2)
    # ... and the attribute overrides detection.
    kolmogorov.attrs["xldensf_periodic"] = "none"
    assert all(a.period is None for a in GridGeometry.from_dataset(kolmogorov).axes)
    kolmogorov.attrs["xldensf_periodic"] = "X"
    assert [a.period is None for a in GridGeometry.from_dataset(kolmogorov).axes] == [True, False]


def test_geometry_from_simulator_matches_dataset(lorenz):
    from_model = GridGeometry.from_simulator(xl.simulator("lorenz96", preset="small"))
    from_data = GridGeometry.from_dataset(lorenz)
    assert from_model.shape == from_data.shape and from_model.axes[0].period == 40.0
    for case in xl.CASES:  # every registered simulator: same dims, in the state's order
        model = xl.simulator(case, preset="small")
        geometry = GridGeometry.from_simulator(model)
        assert geometry.dims == model.grid_dims and geometry.shape == model.grid_shape


def test_distances():
    sphere = GridGeometry.from_dataset(sphere_dataset())  # axes (latitude, longitude)
    quarter = sphere.distances([[0.0, 0.0]], [[0.0, 90.0], [0.0, -90.0], [90.0, 10.0]])
    np.testing.assert_allclose(quarter.numpy(), [[np.pi / 2 * EARTH_RADIUS] * 3], rtol=1e-12)

    planar_km = GridGeometry.from_dataset(planar_dataset("km"))  # axes (y, x) in km
    assert planar_km.distance_units == "m"
    assert float(planar_km.distances([[0.0, 0.0]], [[0.003, 0.004]])) == pytest.approx(5.0)

    ring = GridGeometry.from_dataset(xl.simulate("lorenz96", preset="small", runs=1, seed=0,
                                                 n_outputs=2, spinup_steps=0))
    assert ring.distances([[1.0]], [[39.0], [21.0]]).tolist() == [[2.0, 20.0]]


# ------------------------------------------------------------------------------ operator
def test_bilinear_interpolation_is_exact_for_bilinear_functions():
    data = planar_dataset()
    geometry = GridGeometry.from_dataset(data)
    rng = np.random.default_rng(1)
    xs, ys = rng.uniform(0.0, 10.0, 50), rng.uniform(-3.0, 5.0, 50)
    operator = InterpolationOperator.from_grid(geometry, np.stack([ys, xs], axis=-1))
    sampled = operator(torch.as_tensor(data["eta"].values))  # (time, station)
    expected = np.stack([bilinear(xs, ys, t) for t in data.time.values])
    np.testing.assert_allclose(sampled.numpy(), expected, **EXACT)

    dense = operator.to_dense()
    assert dense.shape == (50, 30)
    np.testing.assert_allclose(dense.sum(dim=1).numpy(), 1.0, rtol=1e-14)  # partition of unity
    assert operator.matrix._nnz() <= 4 * 50


def test_linear_interpolation_in_1d_is_exact():
    k = np.array([0.0, 1.0, 3.0, 4.0, 8.0])
    grid = xr.Dataset(coords={"k": ("k", k, {"axis": "X", "units": "1"})},
                      attrs={"xldensf_periodic": "none"})
    geometry = GridGeometry.from_dataset(grid)
    where = np.array([0.0, 0.5, 2.2, 7.99, 8.0])
    line = torch.as_tensor(3.0 - 1.5 * k)
    sampled = InterpolationOperator.from_grid(geometry, where[:, None])(line[None])
    np.testing.assert_allclose(sampled[0].numpy(), 3.0 - 1.5 * where, **EXACT)


def test_sampling_at_grid_points_returns_grid_values_exactly():
    data = planar_dataset()
    yy, xx = np.meshgrid(data.y.values, data.x.values, indexing="ij")
    layout = stations(x=(xx.ravel(), {"axis": "X", "units": "m"}),
                      y=(yy.ravel(), {"axis": "Y", "units": "m"}))
    obs = observe(data, layout, noise=0.0, variables="eta")
    np.testing.assert_array_equal(obs["eta"].values, data["eta"].values.reshape(4, -1))


def test_periodic_wrap_in_longitude_and_both_longitude_conventions():
    data = sphere_dataset()  # longitudes 0, 2, ..., 358
    field = data["wind"].isel(time=0)
    layout = stations(latitude=([20.0, 20.0, 20.0], {"units": "degrees_north"}),
                      longitude=([359.5, -0.5, 719.5], {"units": "degrees_east"}))
    obs = observe(data, layout, noise=0.0)
    # 359.5 lies between 358 (weight 0.25) and 360 = 0 (weight 0.75).
    expected = 0.25 * field.sel(longitude=358.0) + 0.75 * field.sel(longitude=0.0)
    np.testing.assert_allclose(obs["wind"].isel(time=0).values,
                               [float(expected.sel(latitude=20.0))] * 3, **EXACT)

    shifted = sphere_dataset(lon=np.arange(-180.0, 180.0, 2.0))  # same field, -180..178
    np.testing.assert_allclose(observe(shifted, layout, noise=0.0)["wind"].values,
                               obs["wind"].values, **EXACT)


def test_descending_latitudes_give_the_same_values():
    layout = random_layout(sphere_dataset(), 30, seed=3)
    ascending = observe(sphere_dataset(), layout, noise=0.0)
    descending = observe(sphere_dataset(descending=True), layout, noise=0.0)
    np.testing.assert_allclose(descending["wind"].values, ascending["wind"].values, **EXACT)


def test_operator_is_batched_differentiable_and_dtype_agnostic():
    geometry = GridGeometry.from_dataset(planar_dataset())
    operator = InterpolationOperator.from_grid(geometry, [[0.5, 0.5], [4.0, 9.0], [-3.0, 0.0]])
    fields = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    out = operator(fields)
    assert out.shape == (2, 3, 3)
    assert torch.autograd.gradcheck(operator, (fields,))
    # Single precision: same values to float32 round-off.
    np.testing.assert_allclose(operator(fields.float()).detach().numpy(),
                               out.detach().numpy(), rtol=1e-6, atol=1e-6)
    # The block-diagonal matrix observes a stacked (variable-major) state the same way.
    block = operator.block_diagonal(3)
    stacked = torch.sparse.mm(block, fields.reshape(2, -1).T).T
    np.testing.assert_allclose(stacked.detach().numpy(), out.reshape(2, -1).detach().numpy(),
                               rtol=1e-14)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_operator_runs_on_cuda():
    geometry = GridGeometry.from_dataset(planar_dataset())
    operator = InterpolationOperator.from_grid(geometry, [[0.5, 0.5]])
    fields = torch.randn(2, 5, 6, dtype=torch.float64)
    np.testing.assert_allclose(operator(fields.cuda()).cpu().numpy(), operator(fields).numpy(),
                               rtol=1e-12)


# ------------------------------------------------------------------------------ layouts
def test_random_layout_is_uniform_inside_the_domain_and_reproducible():
    data = planar_dataset()
    layout = random_layout(data, 2000, seed=0)
    assert layout.x.min() >= 0.0 and layout.x.max() <= 10.0
    assert layout.y.min() >= -3.0 and layout.y.max() <= 5.0
    # Uniform on [0, 10]: mean 5, standard error 10 / sqrt(12 * 2000) = 0.065; 4 sigma.
    assert abs(float(layout.x.mean()) - 5.0) < 0.26
    xr.testing.assert_identical(layout, random_layout(data, 2000, seed=0))

    sphere = random_layout(sphere_dataset(), 4000, seed=1)
    # Uniform in area between +-60 degrees: sin(latitude) uniform, so about half the
    # stations lie poleward of sin^-1(sin(60)/2) = 25.7 degrees; binomial sd 0.008, 4 sigma.
    poleward = float((abs(sphere.latitude) > np.rad2deg(np.arcsin(np.sin(np.pi / 3) / 2))).mean())
    assert abs(poleward - 0.5) < 0.032


def test_regular_layout_matches_the_string_form():
    data = planar_dataset()
    layout = regular_layout(data, 4, 3)
    assert layout.sizes["station"] == 12 and layout.attrs["xldensf_layout"] == "regular 4x3"
    # on grid points: the interior points of 5 (4) equal index gaps of the 6 x (5 y) points
    np.testing.assert_allclose(np.unique(layout.x), [1.0, 2.5, 4.0, 7.0])
    np.testing.assert_allclose(np.unique(layout.y), [-1.0, 0.0, 2.0])
    by_string = observe(data, "4x3", noise=0.0)
    by_layout = observe(data, layout, noise=0.0)
    np.testing.assert_array_equal(by_string["eta"].values, by_layout["eta"].values)
    assert by_string.attrs["xldensf_layout"] == "regular 4x3"
    with pytest.raises(xl.ParameterError, match="at most 4 on a bounded axis"):
        regular_layout(data, 5, 3)  # two stations would share a grid point
    # The paper's 0.44%: 100 stations on a 150 x 150 grid.
    assert 100 / 150**2 == pytest.approx(0.0044, abs=5e-5)


def test_station_units_are_converted(lorenz):
    data = planar_dataset()
    in_metres = stations(x=([1.0, 6.5], {"axis": "X", "units": "m"}),
                         y=([0.5, -2.0], {"axis": "Y", "units": "m"}))
    in_km = stations(x=([0.001, 0.0065], {"axis": "X", "units": "km"}),
                     y=([0.0005, -0.002], {"axis": "Y", "units": "km"}))
    np.testing.assert_allclose(observe(data, in_km, noise=0.0)["eta"].values,
                               observe(data, in_metres, noise=0.0)["eta"].values, **EXACT)
    # A grid in km observed by stations in metres: same values, positions in km.
    obs = observe(planar_dataset("km"), in_metres, noise=0.0)
    np.testing.assert_allclose(obs.x.values, [0.001, 0.0065], rtol=1e-12)
    assert obs.x.attrs["units"] == "km"


def test_moving_stations_follow_their_positions():
    data = planar_dataset()
    times = data.time.values
    xs = np.stack([np.linspace(1.0, 6.0, 3) + t for t in times])  # (time, station)
    ys = np.full_like(xs, 1.5) - 0.5 * times[:, None]
    layout = xr.Dataset(coords={
        "time": ("time", times),
        "x": (("time", "station"), xs, {"axis": "X", "units": "m"}),
        "y": (("time", "station"), ys, {"axis": "Y", "units": "m"}),
    })
    obs = observe(data, layout, noise=0.0, variables=["eta"])
    assert obs.x.dims == ("time", "station") and "moving" in obs.attrs["xldensf_layout"]
    np.testing.assert_allclose(obs["eta"].values, bilinear(xs, ys, times[:, None]), **EXACT)
    # every=2 selects the positions at the observed times by coordinate value.
    sub = observe(data, layout, noise=0.0, variables=["eta"], every=2)
    np.testing.assert_allclose(sub["eta"].values, obs["eta"].values[::2], **EXACT)


def test_observation_dataset_can_serve_as_layout(lorenz):
    first = observe(lorenz, 7, noise=0.1, seed=4)
    again = observe(lorenz, first, noise=0.0)
    np.testing.assert_array_equal(again.k.values, first.k.values)


# ------------------------------------------------------------------------------ noise
def test_relative_noise_is_a_fraction_of_the_spatio_temporal_std(lorenz):
    exact = observe(lorenz, 40, noise=0.0, seed=5)
    noisy = observe(lorenz, 40, noise=0.1, seed=5)
    sigma = 0.1 * float(np.nanstd(lorenz["x"].values))
    assert float(noisy["x_error_std"]) == pytest.approx(sigma, rel=1e-12)
    errors = (noisy["x"] - exact["x"]).values.ravel()
    # 201 x 40 = 8040 draws: the sample std has a relative standard error of
    # 1 / sqrt(2 * 8040) = 0.8%; 4%  is 5 standard errors.
    assert np.std(errors) == pytest.approx(sigma, rel=0.04)
    assert abs(np.mean(errors)) < 4 * sigma / np.sqrt(errors.size)


def test_absolute_noise_in_km_per_hour_on_winds_in_km_per_hour():
    data = sphere_dataset()
    obs = observe(data, 20, noise=units.Quantity(5.0, "km/h"), seed=0)
    assert obs["wind"].attrs["units"] == "km h-1"
    assert float(obs["wind_error_std"]) == pytest.approx(5.0)
    assert obs["wind_error_std"].attrs["units"] == "km h-1"
    assert obs["wind_error_std"].attrs["standard_name"] == "eastward_wind standard_error"
    in_ms = observe(data, 20, noise=units.Quantity(1.0, "m/s"), seed=0)
    assert float(in_ms["wind_error_std"]) == pytest.approx(3.6)
    with pytest.raises(xl.UnitsError, match="km h-1"):
        observe(data, 20, noise=units.Quantity(1.0, "m"), seed=0)


def test_seed_reproduces_stations_and_noise(lorenz):
    first = observe(lorenz, 5, noise=0.1, seed=11)
    xr.testing.assert_identical(first, observe(lorenz, 5, noise=0.1, seed=11))
    other = observe(lorenz, 5, noise=0.1, seed=12)
    assert not np.array_equal(first["x"].values, other["x"].values)
    assert observe(lorenz, 5)["x"].attrs  # seed None draws and records a fresh one
    assert isinstance(observe(lorenz, 5).attrs["xldensf_seed"], int)


# ------------------------------------------------------------------------------ output
def test_output_follows_cf_discrete_sampling_geometry(lorenz):
    obs = lorenz.ldensf.observe(stations=6, noise=0.1, seed=0, every=10)
    assert obs.attrs["featureType"] == "timeSeries"
    assert obs["x"].dims == ("time", "station") and obs.sizes["time"] == 21
    assert obs.station.attrs["cf_role"] == "timeseries_id"
    assert obs.k.dims == ("station",) and obs.k.attrs["units"] == "1"
    assert obs["x"].attrs["ancillary_variables"] == "x_error_std"
    assert obs["x"].attrs["units"] == lorenz["x"].attrs["units"]
    assert obs.attrs["xldensf_case"] == "lorenz96" and obs.attrs["xldensf_seed"] == 0
    assert obs.attrs["xldensf_truth_seed"] == 0 and obs.attrs["xldensf_every"] == 10
    np.testing.assert_array_equal(obs.time.values, lorenz.time.values[::10])


def test_netcdf_round_trip(tmp_path):
    obs = observe(sphere_dataset(), 12, noise=units.Quantity(2.0, "km/h"), seed=2)
    path = tmp_path / "obs.nc"
    obs.to_netcdf(path)
    with xr.open_dataset(path) as back:
        xr.testing.assert_identical(back.load(), obs)


def test_missing_values_propagate_as_nan():
    data = planar_dataset()
    data["eta"][:, 2, 3] = np.nan  # grid point (y=0, x=4)
    layout = stations(x=([4.0, 3.0, 8.0, 5.0], {"axis": "X", "units": "m"}),
                      y=([0.0, 1.0, 3.0, np.nan], {"axis": "Y", "units": "m"}))
    obs = observe(data, layout, noise=0.1, seed=0, variables="eta")
    # Stations 0 and 1 use the NaN point, station 2 does not, station 3 has no position.
    assert np.isnan(obs["eta"].values[:, [0, 1, 3]]).all()
    assert np.isfinite(obs["eta"].values[:, 2]).all()


def test_tsunami_simulation_can_be_observed():
    if "tsunami" not in xl.CASES:
        pytest.skip("tsunami simulator not registered")
    truth = xl.simulate("tsunami", preset="small", runs=1, seed=0).isel(run=0)
    obs = truth.ldensf.observe("10x10", noise=0.1, seed=0)
    assert set(obs.data_vars) == {"u", "v", "eta", "u_error_std", "v_error_std",
                                  "eta_error_std"}  # depth is static, not observed
    assert obs["eta"].shape == (truth.sizes["time"], 100)


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("count", [0, -3, True, 2.5])
def test_bad_station_counts(lorenz, count):
    with pytest.raises(xl.ParameterError, match="stations"):
        observe(lorenz, count)


def test_stations_outside_a_bounded_domain():
    layout = stations(x=([11.0], {"axis": "X", "units": "m"}),
                      y=([0.0], {"axis": "Y", "units": "m"}))
    with pytest.raises(xl.DataError, match=r"values in \[0, 10\].*found 11"):
        observe(planar_dataset(), layout)


def test_bad_noise_variables_every_and_units(lorenz):
    with pytest.raises(xl.ParameterError, match="noise"):
        observe(lorenz, 3, noise=-0.1)
    with pytest.raises(xl.UnknownNameError, match=r"\['eta', 'u'\], found 'w'"):
        observe(planar_dataset(), 3, variables=["w"])
    with pytest.raises(xl.DataError, match="dims of variable 'depth'"):
        observe(planar_dataset(), 3, variables=["depth"])
    with pytest.raises(xl.ParameterError, match="every"):
        observe(lorenz, 3, every=0)
    seconds = stations(x=([1.0], {"axis": "X", "units": "s"}),
                       y=([0.0], {"axis": "Y", "units": "m"}))
    with pytest.raises(xl.UnitsError, match="'m'"):
        observe(planar_dataset(), seconds)
    with pytest.raises(xl.ParameterError, match="NxM"):
        observe(planar_dataset(), "ten")


def test_dataset_without_recognisable_axes():
    anonymous = xr.Dataset({"f": (("time", "a", "b"), np.zeros((2, 3, 4)))},
                           coords={"a": [0, 1, 2], "b": [0, 1, 2, 3]})
    with pytest.raises(xl.DataError, match="latitude and longitude.*found"):
        observe(anonymous, 3)


def test_extra_dims_are_refused():
    with pytest.raises(xl.DataError, match="select one run"):
        observe(xl.simulate("lorenz96", preset="small", runs=2, seed=0, n_outputs=2), 3,
                variables="x")
    assert math.isfinite(EARTH_RADIUS)


def test_latitude_longitude_found_by_name_when_attributes_are_missing():
    bare = sphere_dataset()
    for name in ("latitude", "longitude", "time"):
        bare[name].attrs = {}
    geometry = GridGeometry.from_dataset(bare)
    assert geometry.sphere and geometry.axis("longitude").period == 360.0
    np.testing.assert_allclose(observe(bare, 5, noise=0.0, seed=1)["wind"].values,
                               observe(sphere_dataset(), 5, noise=0.0, seed=1)["wind"].values,
                               **EXACT)
