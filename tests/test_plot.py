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
    cartopy = configure_cartopy()
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

    sphere = lat_lon_dataset()
    members = xr.concat([sphere * (1 + 0.1 * k) for k in range(3)], dim="member")
    figure = xl.plot.plot_analysis(members, None, "u", frame=1)
    assert sum(hasattr(axis, "projection") for axis in figure.axes) == 2  # mean, spread
    with pytest.raises(xl.DataError, match="member"):
        xl.plot.plot_analysis(sphere)
