"""Figures: planar panels, and cartopy maps with coastlines drawn offline from shipped data."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

import xldensf as xl  # noqa: E402
from xldensf.plot import configure_cartopy, natural_earth_dir, plot_fields  # noqa: E402


def lat_lon_dataset():
    lat = np.linspace(-87.5, 87.5, 36)
    lon = np.arange(0, 360, 10.0)
    time = np.array([0.0, 3600.0])
    field = np.cos(np.deg2rad(lat))[None, :, None] * np.sin(np.deg2rad(lon))[None, None, :]
    field = np.repeat(field, 2, axis=0)
    return xr.Dataset(
        {"u": (("time", "lat", "lon"), field, {"units": "m s-1", "long_name": "eastward wind"})},
        coords={
            "time": ("time", time, {"axis": "T", "units": "s"}),
            "lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude"}),
        },
    )


def test_shipped_coastlines_exist():
    folder = natural_earth_dir() / "shapefiles" / "natural_earth" / "physical"
    for suffix in ("shp", "shx", "dbf"):
        assert (folder / f"ne_110m_coastline.{suffix}").stat().st_size > 0


def test_map_draws_coastlines_without_downloading(monkeypatch, tmp_path):
    cartopy = pytest.importorskip("cartopy")
    # Any attempt to download would need a writable data_dir; point it at an empty folder
    # and forbid the downloader's network access.
    monkeypatch.setitem(cartopy.config, "data_dir", str(tmp_path))
    import urllib.request

    def no_network(*args, **kwargs):
        raise AssertionError("cartopy tried to download data")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    figure = plot_fields(lat_lon_dataset(), "u", times=[0, 1])
    figure.canvas.draw()  # coastlines are read when the figure is drawn
    geo_axes = [axis for axis in figure.axes if hasattr(axis, "projection")]
    assert len(geo_axes) == 2
    assert list(tmp_path.iterdir()) == []  # nothing was fetched into the data dir


def test_planar_and_errors():
    truth = xl.simulate("lorenz96", runs=1, seed=0, preset="small")
    figure = plot_fields(truth, times=[0])
    assert len(figure.axes) == 1
    with pytest.raises(xl.UnknownNameError, match="variable"):
        plot_fields(truth, "nope")
    with pytest.raises(xl.DataError, match="time axis"):
        plot_fields(truth.isel(time=0, drop=True))


def test_analysis_panels_planar_and_on_the_sphere(tmp_path):
    truth = xl.simulate("tsunami", runs=1, seed=7, preset="small", n_outputs=3).isel(run=0)
    obs = truth.ldensf.observe(stations="4x4", noise=0.1, seed=0, variables=["eta"])
    analysis = obs.ldensf.assimilate(xl.simulator("tsunami", preset="small", n_outputs=3),
                                     method="etkf", members=4, seed=0)
    figure = analysis.ldensf.plot(truth, variables="eta")
    titles = [axis.get_title() for axis in figure.axes if axis.get_title()]
    assert titles == ["eta: truth", "eta: analysis mean", "eta: analysis - truth",
                      "eta: spread"]
    figure.savefig(tmp_path / "panels.png")
    assert (tmp_path / "panels.png").stat().st_size > 0

    pytest.importorskip("cartopy")
    sphere = lat_lon_dataset()
    members = xr.concat([sphere * (1 + 0.1 * k) for k in range(3)], dim="member")
    figure = xl.plot.plot_analysis(members, None, "u", frame=1)
    assert sum(hasattr(axis, "projection") for axis in figure.axes) == 2  # mean, spread
    # a deterministic analysis (no members): the analysis and its error, no spread panel
    figure = xl.plot.plot_analysis(sphere, sphere * 1.1, "u", frame=0)
    assert [a.get_title() for a in figure.axes if a.get_title()] == [
        "u: truth", "u: analysis", "u: analysis - truth"]


# ---------------------------------------------------------------- plots that compose
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PathCollection, QuadMesh  # noqa: E402

from xldensf.plot import frame_index, plot_analysis  # noqa: E402

START = "2011-03-11T05:46:00"


@pytest.fixture(scope="module")
def tsunami_case():
    truth = xl.simulate("tsunami", runs=1, seed=7, preset="small", n_outputs=3).isel(run=0)
    obs = truth.ldensf.observe(stations="4x4", noise=0.1, seed=0, variables=["eta"])
    analysis = obs.ldensf.assimilate(xl.simulator("tsunami", preset="small", n_outputs=3),
                                     method="etkf", members=4, seed=0)
    return truth, obs, analysis


def _meshes(axis):
    return [c for c in axis.collections if isinstance(c, QuadMesh)]


def _markers(axis):
    return [c for c in axis.collections if isinstance(c, PathCollection)]


def test_ax_draws_into_the_given_axes(tsunami_case):
    truth, obs, analysis = tsunami_case
    figure, axis = plt.subplots()
    assert plot_fields(truth, "eta", frame=1, ax=axis) is figure
    assert len(_meshes(axis)) == 1 and "851.4 s" in axis.get_title()
    figure, axes = plt.subplots(2, 4)
    assert analysis.ldensf.plot(truth, ["eta", "u"], ax=axes) is figure
    assert all(len(_meshes(a)) == 1 for a in axes.ravel())
    assert [a.get_title() for a in axes[1]] == ["u: truth", "u: analysis mean",
                                               "u: analysis - truth", "u: spread"]
    figure, axes = plt.subplots(1, 3)
    plot_fields(truth, "eta", frame=[0, 1, 2], ax=list(axes))
    assert [len(_meshes(a)) for a in axes] == [1, 1, 1]
    with pytest.raises(xl.ParameterError, match=r"expected 4 axes .* found 3"):
        analysis.ldensf.plot(truth, "eta", ax=axes)
    plt.close("all")


def test_error_panel_has_its_own_symmetric_scale(tsunami_case):
    truth, _, analysis = tsunami_case
    # the same truth with y reversed and eta in cm: aligned by labels, converted to metres
    shuffled = truth.isel(y=slice(None, None, -1))
    shuffled["eta"] = shuffled["eta"] * 100.0
    shuffled["eta"].attrs = dict(truth["eta"].attrs, units="cm")
    error = analysis["eta"].isel(time=-1).mean("member") - truth["eta"].isel(time=-1)
    expected = float(np.abs(error).max())
    for given in (truth, shuffled):
        figure = plot_analysis(analysis, given, "eta")
        panel = next(a for a in figure.axes if a.get_title() == "eta: analysis - truth")
        (mesh,) = _meshes(panel)
        low, high = mesh.get_clim()
        assert low == -high
        np.testing.assert_allclose(high, expected, rtol=1e-12)
        assert mesh.get_cmap().name == "RdBu_r"
        truth_panel = next(a for a in figure.axes if a.get_title() == "eta: truth")
        np.testing.assert_allclose(_meshes(truth_panel)[0].get_clim()[1],
                                   float(np.abs(truth["eta"].isel(time=-1)).max()))
        plt.close(figure)
    with pytest.raises(xl.DataError, match="truth dims"):
        plot_analysis(analysis, truth.ldensf.observe(stations=5, noise=0.0, seed=0), "eta")


def test_station_markers(tsunami_case):
    truth, obs, analysis = tsunami_case
    figure = plot_fields(truth, "eta", frame=[0, -1], stations=obs)
    maps = [a for a in figure.axes if a.get_title()]
    assert [len(_markers(a)[0].get_offsets()) for a in maps] == [16, 16]
    # positions in km, as the axes
    np.testing.assert_allclose(np.sort(_markers(maps[0])[0].get_offsets()[:, 0]),
                               np.sort(obs["x"].values / 1e3))
    assert figure.legends == []
    figure = analysis.ldensf.plot(truth, "eta", stations=obs)
    assert sum(len(_markers(a)) for a in figure.axes) == 4
    # one dimension (Lorenz-96): markers along the bottom of each panel
    l96 = xl.simulate("lorenz96", runs=1, seed=0, preset="small", n_outputs=3).isel(run=0)
    l96_obs = l96.ldensf.observe(stations=7, noise=0.1, seed=0)
    figure = plot_fields(l96, "x", frame=0, stations=l96_obs)
    assert len(_markers(figure.axes[0])[0].get_offsets()) == 7
    with pytest.raises(xl.DataError, match="station"):
        plot_fields(truth, "eta", stations=truth)
    plt.close("all")


def test_moving_stations_on_the_sphere_and_plain_axes():
    sphere = lat_lon_dataset()
    drifters = xr.Dataset(coords={
        "time": ("time", sphere.time.values, {"axis": "T", "units": "s"}),
        "lon": (("time", "station"), np.array([[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]]),
                {"units": "degrees_east", "standard_name": "longitude"}),
        "lat": (("time", "station"), np.zeros((2, 3)),
                {"units": "degrees_north", "standard_name": "latitude"}),
        "station": ("station", np.arange(3), {"cf_role": "timeseries_id"})})
    figure, axis = plt.subplots()  # plain axes: a lon/lat image, no cartopy needed
    plot_fields(sphere, "u", frame=-1, ax=axis, stations=drifters)
    assert len(_meshes(axis)) == 1 and axis.get_xlabel().startswith("lon")
    np.testing.assert_array_equal(_markers(axis)[0].get_offsets()[:, 0], [40.0, 50.0, 60.0])
    plt.close("all")


def test_time_selection_by_label():
    dated = xl.simulate("lorenz96", seed=1, preset="small", n_outputs=5,
                        start=START).isel(run=0)
    times = dated.time.values
    assert frame_index(dated.time, time="2011-03-11T12:00") == int(
        np.argmin(np.abs(times - np.datetime64("2011-03-11T12:00"))))
    assert frame_index(dated.time, time=times[3]) == 3
    figure = plot_fields(dated, "x", time=[times[2], str(times[4])])
    titles = [a.get_title() for a in figure.axes]
    assert titles[0].endswith(str(np.datetime_as_string(times[2], unit="m")).replace("T", " "))
    with pytest.raises(xl.ParameterError, match="within half a frame spacing"):
        plot_fields(dated, "x", time="2012-01-01")
    with pytest.raises(xl.ParameterError, match="a datetime"):
        plot_fields(dated, "x", time=3)
    with pytest.raises(xl.ParameterError, match=r"frame.*\[-5, 4\]"):
        plot_fields(dated, "x", frame=5)
    with pytest.raises(xl.ParameterError, match="not both"):
        plot_fields(dated, "x", time=str(times[0]), frame=0)
    # cftime: labels in the axis' calendar
    cf_times = xr.date_range("2000-02-29", periods=5, freq="6h", calendar="360_day",
                             use_cftime=True)
    cf = dated.assign_coords(time=("time", cf_times))
    assert frame_index(cf.time, time="2000-02-29T11:00") == 2
    assert "2000-02-29 12:00" in plot_fields(cf, "x", time="2000-02-29T11:00").axes[0].get_title()
    assert frame_index(cf.time, time=cf_times[4]) == 4
    with pytest.raises(xl.ParameterError, match="2000-02-30 00:00"):
        frame_index(cf.time, time="2000-03-02")
    # numbers in the axis' units, durations, and the ambiguous small int
    numeric = lat_lon_dataset()
    assert frame_index(numeric.time, time=3000.0) == 1
    assert frame_index(numeric.time, time="1 hour") == 1
    assert frame_index(numeric.time, time=0) == 0  # an exact label
    with pytest.raises(xl.ParameterError, match="frame=1"):
        frame_index(numeric.time, time=1)
    plt.close("all")


# the cartopy tests below skip without cartopy


def test_projection_and_geo_axes():
    ccrs = pytest.importorskip("cartopy.crs")
    sphere = lat_lon_dataset()
    figure = plot_fields(sphere, "u", frame=0)
    assert isinstance(figure.axes[0].projection, ccrs.PlateCarree)  # the default
    figure = plot_fields(sphere, "u", frame=0, projection=ccrs.Robinson())
    assert isinstance(figure.axes[0].projection, ccrs.Robinson)
    figure, axis = plt.subplots(subplot_kw={"projection": ccrs.Orthographic(0, 30)})
    plot_fields(sphere, "u", frame=0, ax=axis)
    assert len(_meshes(axis)) == 1
    with pytest.raises(xl.ParameterError, match="projection"):
        plot_fields(sphere, "u", frame=0, ax=axis, projection=ccrs.Robinson())
    stations = xr.Dataset(coords={
        "lon": ("station", [0.0, 90.0, 180.0, 270.0], {"standard_name": "longitude"}),
        "lat": ("station", [0.0, 10.0, 20.0, 30.0], {"standard_name": "latitude"}),
        "station": ("station", np.arange(4), {"cf_role": "timeseries_id"})})
    members = xr.concat([sphere * (1 + 0.1 * k) for k in range(3)], dim="member")
    figure = plot_analysis(members, sphere, "u", frame=0, stations=stations,
                           projection=ccrs.Robinson())
    maps = [a for a in figure.axes if a.get_title()]
    assert [len(_markers(a)[0].get_offsets()) for a in maps] == [4, 4, 4, 4]
    assert all(isinstance(a.projection, ccrs.Robinson) for a in maps)
    plt.close("all")


def test_user_cartopy_config_is_left_alone(monkeypatch, tmp_path):
    cartopy_module = pytest.importorskip("cartopy")
    mine, data = tmp_path / "mine", tmp_path / "data"
    monkeypatch.setitem(cartopy_module.config, "pre_existing_data_dir", str(mine))
    monkeypatch.setitem(cartopy_module.config, "data_dir", str(data))
    figure = plot_fields(lat_lon_dataset(), "u", frame=0)
    figure.canvas.draw()
    assert cartopy_module.config["pre_existing_data_dir"] == str(mine)
    assert cartopy_module.config["data_dir"] == str(data)
    configure_cartopy()  # the user's own folder is kept
    assert cartopy_module.config["pre_existing_data_dir"] == str(mine)
    monkeypatch.delenv("CARTOPY_DATA_DIR", raising=False)
    monkeypatch.setitem(cartopy_module.config, "pre_existing_data_dir", "")
    configure_cartopy()  # unset: pointed at the shipped files, data_dir untouched
    assert cartopy_module.config["pre_existing_data_dir"] == str(natural_earth_dir())
    assert cartopy_module.config["data_dir"] == str(data)
    plt.close("all")


def test_bad_input(tsunami_case):
    truth, obs, analysis = tsunami_case
    with pytest.raises(xl.UnknownNameError, match="nope"):
        analysis.ldensf.plot(truth, "nope")
    with pytest.raises(xl.DataError, match="missing"):
        analysis.ldensf.plot(truth[["u"]], "eta")
    with pytest.raises(xl.ParameterError, match=r"frame.*\[-3, 2\]"):
        analysis.ldensf.plot(truth, "eta", frame=3)
    with pytest.raises(xl.ParameterError, match="frame=1"):
        analysis.ldensf.plot(truth, "eta", time=1)  # the old integer position
    with pytest.raises(xl.ParameterError, match="within half a frame spacing"):
        analysis.ldensf.plot(truth, "eta", time=1e6)
    with pytest.raises(xl.ParameterError, match="latitude/longitude"):
        plot_fields(truth, "eta", projection=object())
    dated = truth.assign_coords(time=("time", np.array(
        ["2011-03-11T00:00", "2011-03-11T00:15", "2011-03-11T00:30"], dtype="datetime64[ns]")))
    moving = obs.assign_coords(x=(("time", "station"), np.tile(obs.x.values, (3, 1))))
    with pytest.raises(xl.DataError, match="moving stations"):
        plot_fields(dated, "eta", stations=moving)  # datetimes against seconds
    plt.close("all")


def test_one_signed_fields_use_their_range(tsunami_case):
    """A depth or a height (one sign) is drawn over its range with a sequential map, a field
    with both signs symmetric about zero (a 5 km deep layer on a +-6 km scale was one colour)."""
    truth, _, analysis = tsunami_case
    deep = truth.assign(eta=truth["eta"] + 5000.0)
    figure, axis = plt.subplots()
    plot_fields(deep, "eta", frame=1, ax=axis)
    (mesh,) = _meshes(axis)
    values = deep["eta"].values
    assert mesh.get_clim() == pytest.approx((values.min(), values.max()))
    assert mesh.get_cmap().name == "viridis"
    figure, axis = plt.subplots()
    plot_fields(truth, "u", frame=1, ax=axis)
    (mesh,) = _meshes(axis)
    low, high = mesh.get_clim()
    assert low == -high == -np.abs(truth["u"].values).max()
    assert mesh.get_cmap().name == "RdBu_r"
    plt.close("all")
