"""Real time axes: a plain ``time`` coordinate, datetimes end to end, CF time units."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

import xldensf as xl  # noqa: E402
import xldensf.experiments  # noqa: E402
from xldensf.conventions import find_time_name, time_coordinate  # noqa: E402
from xldensf.errors import DataError, ParameterError  # noqa: E402
from xldensf.plot import plot_analysis, plot_fields, time_title  # noqa: E402
from xldensf.surrogate import fit, forecast  # noqa: E402
from xldensf.surrogate.dataset import frame_indices, set_time_origin  # noqa: E402

START = "2011-03-11T05:46:00"


@pytest.fixture(scope="module")
def l96_truth():
    return xl.simulate("lorenz96", seed=1, preset="small", n_outputs=21).isel(run=0)


@pytest.fixture(scope="module")
def l96_dated():
    return xl.simulate("lorenz96", seed=1, preset="small", n_outputs=21,
                       start=START).isel(run=0)


def _letkf(obs, model=None, **settings):
    model = model if model is not None else xl.simulator("lorenz96", preset="small")
    return obs.ldensf.assimilate(model, method="letkf", members=10, seed=0,
                                 localization=4.0, **settings)


# ------------------------------------------------------------------ the time lookup
def test_plain_time_coordinate_is_found_and_assimilated(l96_truth):
    # as DAPPER or a hand-made script builds it: a time coordinate without attributes
    plain = l96_truth.assign_coords(time=("time", l96_truth.time.values))
    assert plain.time.attrs == {}
    obs = plain.ldensf.observe(stations=20, noise=0.1, seed=0, every=2)
    reference = l96_truth.ldensf.observe(stations=20, noise=0.1, seed=0, every=2)
    analysis = _letkf(obs)
    expected = _letkf(reference)
    np.testing.assert_array_equal(analysis["x"].values, expected["x"].values)


@pytest.mark.parametrize("coords, expected", [
    ({"k": ("k", [0, 1], {"axis": "X"}), "time": ("time", [0.0, 1.0])}, "time"),
    ({"x": ("x", [0.0, 1.0], {"units": "m", "axis": "X"}), "t": ("t", [0.0, 1.0])}, "t"),
    ({"x": ("x", [0.0, 1.0], {"units": "m", "axis": "X"}),
      "when": ("when", np.array(["2000-01-01", "2000-01-02"], "datetime64[ns]"))}, "when"),
    ({"x": ("x", [0.0], {"axis": "X"}), "step": ("step", [0, 6], {"units": "hours since 2000"})},
     "step"),
    ({"x": ("x", [0.0], {"axis": "X"}), "s": ("s", [0, 1], {"axis": "T"})}, "s"),
])
def test_find_time_name(coords, expected):
    assert find_time_name(xr.Dataset(coords=coords)) == expected


def test_no_time_coordinate_is_a_data_error():
    with pytest.raises(DataError, match="time coordinate"):
        time_coordinate(xr.Dataset(coords={"x": ("x", [0.0, 1.0], {"axis": "X"})}))


# ------------------------------------------------------------------ simulate start=
def test_simulate_start_puts_runs_on_a_datetime_axis(l96_truth, l96_dated):
    assert l96_dated.time.dtype == np.dtype("datetime64[ns]")
    assert l96_dated.time.values[0] == np.datetime64(START)
    # Lorenz-96: 0.05 time units ~ 6 hours
    assert l96_dated.time.values[1] - l96_dated.time.values[0] == np.timedelta64(6, "h")
    np.testing.assert_array_equal(l96_dated["x"].values, l96_truth["x"].values)
    model = xl.simulator("lorenz96", preset="small", start=START)
    assert model.start == np.datetime64(START)


def test_simulator_start_of_a_dimensional_case_uses_seconds():
    model = xl.simulator("tsunami", preset="small", start=START)
    assert model.time_unit_seconds == 1.0


def test_nondimensional_case_without_a_known_time_unit_is_refused():
    with pytest.raises(ParameterError, match="time_unit"):
        xl.simulator("kolmogorov", preset="small", start=START)
    model = xl.simulator("kolmogorov", preset="small", start=START, time_unit="1 hour")
    assert model.time_unit_seconds == 3600.0


def test_datetimes_through_netcdf(tmp_path, l96_dated):
    path = xl.io.write_netcdf(l96_dated, tmp_path / "run.nc")
    with xr.open_dataset(path) as back:
        assert back.time.dtype == np.dtype("datetime64[ns]")
        np.testing.assert_array_equal(back.time.values, l96_dated.time.values)
    with xr.open_dataset(path, decode_times=False) as raw:
        assert "since" in raw.time.attrs["units"]


def test_written_datetimes_without_encoding_get_cf_units(tmp_path):
    times = np.array(["2011-03-11T05:46", "2011-03-11T06:46"], dtype="datetime64[ns]")
    ds = xr.Dataset({"u": ("time", [1.0, 2.0]), "arrival": ("time", times)},
                    coords={"time": ("time", times)})
    path = xl.io.write_netcdf(ds, tmp_path / "n.nc")
    with xr.open_dataset(path, decode_times=False) as raw:
        assert raw.time.attrs["units"].startswith("seconds since 2011-03-11")
        assert "since" in raw.arrival.attrs["units"]
    with xr.open_dataset(path) as back:
        xr.testing.assert_identical(back, ds)
    assert ds.time.encoding == {}  # the caller's Dataset is untouched


def test_observations_with_datetimes_through_netcdf(tmp_path, l96_dated):
    obs = l96_dated.ldensf.observe(stations=8, noise=0.1, seed=0, every=4)
    assert obs.time.dtype == np.dtype("datetime64[ns]")
    with xr.open_dataset(xl.io.write_netcdf(obs, tmp_path / "obs.nc")) as back:
        np.testing.assert_array_equal(back.time.values, obs.time.values)


# ------------------------------------------------------------------ full-order assimilation
def test_full_order_assimilation_keeps_datetimes(l96_truth, l96_dated):
    dated = _letkf(l96_dated.ldensf.observe(stations=20, noise=0.1, seed=0, every=2))
    numeric = _letkf(l96_truth.ldensf.observe(stations=20, noise=0.1, seed=0, every=2))
    assert dated.time.dtype == np.dtype("datetime64[ns]")
    np.testing.assert_array_equal(dated.time.values, l96_dated.time.values[::2])
    np.testing.assert_allclose(dated["x"].values, numeric["x"].values, rtol=0, atol=1e-12)


def test_simulator_start_sets_the_prior_time(l96_truth, l96_dated):
    # observations from the third frame on: the prior is at the simulator's start
    dated = l96_dated.isel(time=slice(2, None)).ldensf.observe(stations=20, noise=0.1, seed=0)
    numeric = l96_truth.isel(time=slice(2, None)).ldensf.observe(stations=20, noise=0.1,
                                                                 seed=0)
    started = _letkf(dated, xl.simulator("lorenz96", preset="small", start=START))
    expected = _letkf(numeric)
    np.testing.assert_allclose(started["x"].values, expected["x"].values, rtol=0, atol=1e-12)


def test_observations_before_the_start_are_refused(l96_dated):
    obs = l96_dated.ldensf.observe(stations=20, noise=0.1, seed=0)
    with pytest.raises(DataError, match=">= 0"):
        _letkf(obs, xl.simulator("lorenz96", preset="small", start="2011-03-12"))


# ------------------------------------------------------------------ latent
@pytest.fixture(scope="module")
def tsunami_model():
    return xl.load_model(xldensf.experiments.shipped_model_path("tsunami", "small"))


@pytest.fixture(scope="module")
def tsunami_dated_obs():
    truth = xl.simulate("tsunami", seed=3, preset="small", start=START).isel(run=0)
    return truth.ldensf.observe(stations="4x4", noise=0.1, seed=0, every=5)


def test_latent_assimilation_keeps_datetimes(tsunami_model, tsunami_dated_obs):
    dated = tsunami_dated_obs.ldensf.assimilate(tsunami_model, members=6, seed=0, steps=10)
    numeric_obs = tsunami_dated_obs.assign_coords(
        time=("time", np.asarray(tsunami_model.metadata.times)[::5],
              {"units": "s", "axis": "T", "standard_name": "time"}))
    numeric = numeric_obs.ldensf.assimilate(tsunami_model, members=6, seed=0, steps=10)
    assert dated.time.dtype == np.dtype("datetime64[ns]")
    np.testing.assert_array_equal(dated.time.values, tsunami_dated_obs.time.values)
    np.testing.assert_allclose(dated["eta"].values, numeric["eta"].values, rtol=0, atol=1e-6)


def test_latent_explicit_origin(tsunami_model, tsunami_dated_obs):
    model = xl.load_model(xldensf.experiments.shipped_model_path("tsunami", "small"))
    times = tsunami_dated_obs.time.values
    # the first frame at START: the observations are frames 0, 5, 10, ...
    assert frame_indices(model, times[1:3]).tolist() == [0, 5]
    set_time_origin(model, START)
    assert frame_indices(model, times[1:3]).tolist() == [5, 10]
    result = forecast(model, {"x0": -2e5, "y0": -2e5}, times=times[1:3])
    np.testing.assert_array_equal(result.time.values, times[1:3])


def test_fit_learns_from_datetime_runs(l96_dated):
    train = xl.simulate("lorenz96", runs=4, seed=0, preset="small", n_outputs=11,
                        start="2000-01-01")
    model = fit(train, parameters=["F"], seed=0, steps=5, finetune_steps=0,
                reconstruction_width=16)
    assert model.metadata.time_attrs["xldensf_time_origin"] == "2000-01-01T00:00:00"
    assert model.dt == 6 * 3600.0
    result = model.forecast({"F": [8.0]})
    np.testing.assert_array_equal(result.time.values, train.time.values)
    obs = train.isel(run=0).ldensf.observe(stations=10, noise=0.1, seed=0, every=2)
    analysis = obs.ldensf.assimilate(model, members=6, seed=0, steps=10)
    np.testing.assert_array_equal(analysis.time.values, obs.time.values)


# ------------------------------------------------------------------ plots
def test_plots_with_datetimes(l96_dated):
    figure = plot_fields(l96_dated, "x", times=[0, -1])
    assert "2011-03-11 05:46" in figure.axes[0].get_title()
    obs = l96_dated.ldensf.observe(stations=20, noise=0.1, seed=0, every=10)
    analysis = _letkf(obs)
    figure = plot_analysis(analysis, l96_dated)
    assert "2011-03-16 05:46" in figure._suptitle.get_text()


def test_time_title_is_readable():
    assert time_title(xr.DataArray(42570.1, name="time", attrs={"units": "s"})) == \
        "time = 11.83 h"
    assert time_title(xr.DataArray(0.25, name="time", attrs={"units": "1"})) == "time = 0.25"


def test_cftime_axes(l96_dated):
    times = xr.date_range("2000-01-01", periods=l96_dated.sizes["time"], freq="6h",
                          calendar="360_day", use_cftime=True)
    truth = l96_dated.assign_coords(time=("time", times))
    obs = truth.ldensf.observe(stations=20, noise=0.1, seed=0, every=2)
    analysis = _letkf(obs)
    expected = _letkf(l96_dated.ldensf.observe(stations=20, noise=0.1, seed=0, every=2))
    assert list(analysis.time.values) == list(times[::2])
    np.testing.assert_allclose(analysis["x"].values, expected["x"].values, rtol=0, atol=1e-12)
    assert "2000-01-01 00:00" in plot_fields(truth, "x").axes[0].get_title()


def test_fit_on_cftime_runs_returns_cftime():
    train = xl.simulate("lorenz96", runs=4, seed=0, preset="small", n_outputs=6)
    times = xr.date_range("2000-02-29", periods=6, freq="6h", calendar="360_day",
                          use_cftime=True)
    train = train.assign_coords(time=("time", times))
    model = fit(train, parameters=["F"], seed=0, steps=2, finetune_steps=0,
                reconstruction_width=8)
    assert model.metadata.time_attrs["xldensf_time_calendar"] == "360_day"
    assert list(model.forecast({"F": [8.0]}).time.values) == list(times)


def test_datetimes_without_attributes_beside_spatial_attributes(l96_dated):
    bare = l96_dated.assign_coords(time=("time", l96_dated.time.values))
    assert bare.time.attrs == {} and bare.k.attrs
    obs = bare.ldensf.observe(stations=10, noise=0.1, seed=0, every=5)
    np.testing.assert_array_equal(obs.time.values, l96_dated.time.values[::5])


def test_subsecond_datetimes_round_trip_exactly_through_netcdf(tmp_path):
    """Datetimes 0.2 s apart were written as float "seconds since" (xarray warned and the
    times came back up to 1 ns off); the unit is now the coarsest that keeps them integers."""
    import warnings

    import numpy as np
    import xarray as xr

    import xldensf as xl

    start = np.datetime64("2011-03-11T05:46:00", "ns")
    times = start + np.timedelta64(200, "ms") * np.arange(6)
    dataset = xr.Dataset({"a": ("time", np.arange(6.0))}, coords={"time": times})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xl.io.write_netcdf(dataset, tmp_path / "t.nc")
    back = xr.open_dataset(tmp_path / "t.nc")
    assert (back["time"].values == times).all()
    assert back["time"].encoding["units"] == "milliseconds since 2011-03-11T05:46:00"
