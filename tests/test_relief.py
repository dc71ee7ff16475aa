"""Real relief: finding and loading ETOPO, cutting a region onto the tsunami grid."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import xldensf as xl
from xldensf.relief import EARTH_RADIUS, etopo_path, load_relief, regional_depth
from xldensf.simulators import relief


def test_shipped_etopo60_is_found_and_is_cf():
    assert etopo_path(60).parent.name == "data"
    topography = load_relief()
    assert topography.dims == ("lat", "lon")
    lon = topography["lon"].values
    assert lon.min() >= -180.0 and lon.max() < 180.0 and (np.diff(lon) > 0).all()
    assert topography["lat"].attrs["standard_name"] == "latitude"
    assert topography.attrs["units"] == "m"
    # sanity of the 1-degree averages: the Mariana trench region is deep, Tibet is high
    assert float(topography.sel(lat=11.5, lon=142.5)) < -5000.0
    assert float(topography.sel(lat=32.5, lon=88.5)) > 4000.0
    # about 71 % of the Earth's surface is ocean; cell areas weigh by cos(latitude)
    weights = np.cos(np.radians(topography["lat"]))
    ocean = float(((topography < 0) * weights).sum() / (weights.sum() * topography.sizes["lon"]))
    assert ocean == pytest.approx(0.71, abs=0.03)


def test_finer_files_come_from_the_environment_variable(tmp_path, monkeypatch):
    fake = xr.Dataset(
        {"ROSE": (("Y", "X"), np.array([[-100.0, -200.0], [300.0, 400.0]]), {"units": "m"})},
        coords={"Y": [-1.0, 1.0], "X": [359.0, 1.0]})
    fake.to_netcdf(tmp_path / "etopo5.cdf")
    monkeypatch.setenv(relief.ETOPO_DIR_VARIABLE, str(tmp_path))
    loaded = load_relief(5)
    np.testing.assert_array_equal(loaded["lon"].values, [-1.0, 1.0])  # 359 E -> -1
    np.testing.assert_array_equal(loaded.values, [[-100.0, -200.0], [300.0, 400.0]])
    assert load_relief(5, path=tmp_path / "etopo5.cdf").equals(loaded)


def test_missing_file_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv(relief.ETOPO_DIR_VARIABLE, raising=False)
    monkeypatch.setattr(relief, "_SYSTEM_DIR", tmp_path)
    with pytest.raises(xl.DataError, match="etopo20.cdf.*ferret-datasets"):
        etopo_path(20)
    with pytest.raises(xl.DataError, match="resolution"):
        etopo_path(7)


def test_regional_depth_projection_and_clipping():
    depth = regional_depth(lon=143.0, lat=38.0, shape=(40, 50), length=(8.0e5, 1.0e6),
                           min_depth=10.0)
    assert depth.dims == ("y", "x") and depth.shape == (40, 50)
    assert depth.attrs["standard_name"] == "sea_floor_depth_below_mean_sea_level"
    # the grid is the tsunami grid of that size
    np.testing.assert_allclose(depth["x"].values[[0, -1]], [-4.9e5, 4.9e5])
    # local projection: latitude steps are dy / R, and a row spans length_x along its parallel
    np.testing.assert_allclose(np.diff(depth["lat"].values[:, 0]),
                               np.degrees(2.0e4 / EARTH_RADIUS), rtol=1e-12)
    row_lat = np.radians(depth["lat"].values[20, 0])
    span = np.radians(np.ptp(depth["lon"].values[20])) * EARTH_RADIUS * np.cos(row_lat)
    assert span == pytest.approx(1.0e6 - 2.0e4, rel=1e-12)
    # Japan: Honshu, west of the centre, is land (clipped); the Japan trench side is deep
    clipped = depth == 10.0
    assert float(depth.min()) == 10.0 and int(clipped.sum()) == depth.attrs["clipped_cells"] > 50
    assert float(depth["lon"].where(clipped).max()) < 142.5
    sendai = ((depth["lon"] - 140.9) ** 2 + (depth["lat"] - 38.3) ** 2).argmin(...)
    assert float(depth.isel(sendai)) == 10.0
    assert float(depth.isel(x=slice(-10, None)).mean()) > 5000.0


def test_regional_depth_across_the_date_line_has_no_gaps():
    east = regional_depth(lon=180.0, lat=-20.0, shape=(12, 12))
    west = regional_depth(lon=-180.0, lat=-20.0, shape=(12, 12))
    assert np.isfinite(east.values).all()
    # the same place whichever way the longitude is written (up to interpolation rounding)
    np.testing.assert_allclose(east.values, west.values, rtol=1e-9, atol=1e-6)


def test_regional_depth_bad_inputs():
    with pytest.raises(xl.DataError, match="poles"):
        regional_depth(lon=0.0, lat=88.0, shape=(8, 8))
    with pytest.raises(xl.DataError, match="min_depth"):
        regional_depth(lon=0.0, lat=0.0, shape=(8, 8), min_depth=0.0)
