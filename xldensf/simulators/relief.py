"""Real ocean relief (ETOPO) for the tsunami case: load it, cut a region, get a depth.

The 1-degree ETOPO60 relief (NOAA, public domain, as shipped by Debian's
``ferret-datasets``) is included in the package. Finer versions (``etopo40.cdf``,
``etopo20.cdf``, ``etopo5.cdf`` from the same package) are found in a folder given by
``path=``, the environment variable ``XLDENSF_ETOPO_DIR`` or ``/usr/share/ferret-vis/data``.

:func:`regional_depth` turns a box around a point (longitude, latitude) into a still-water
depth on the planar tsunami grid, ready for ``xl.simulate("tsunami", depth=...)``:

>>> from xldensf.simulators.relief import regional_depth
>>> depth = regional_depth(lon=143.0, lat=38.0, shape=(32, 32), min_depth=10.0)
>>> depth.dims, depth.attrs["units"], float(depth.min())
(('y', 'x'), 'm', 10.0)
"""

from __future__ import annotations

import os
from pathlib import Path

import cf_xarray  # noqa: F401 - registers the .cf accessor used to find axes
import numpy as np
import xarray as xr

from ..conventions import convert_values, coordinate_attrs, variable_attrs
from ..errors import DataError, expected_found
from .base import cell_centres
from .sphere import EARTH_RADIUS

__all__ = [
    "EARTH_RADIUS",
    "ETOPO_RESOLUTIONS",
    "PAPER_LENGTH",
    "PAPER_SHAPE",
    "depth_on_grid",
    "is_labelled_array",
    "ETOPO_DIR_VARIABLE",
    "etopo_path",
    "load_relief",
    "regional_depth",
]

#: ``(ny, nx)`` cells and ``(length_y, length_x)`` [m] of the paper basin: the defaults of
#: :class:`~xldensf.simulators.tsunami.TsunamiConfig` (kept equal by the tests).
PAPER_SHAPE = (150, 150)
PAPER_LENGTH = (1.0e6, 1.0e6)
#: Grid spacings [arc-minutes] of the ETOPO files that Ferret ships.
ETOPO_RESOLUTIONS = (5, 20, 40, 60, 120)
#: Environment variable naming a folder holding ``etopo<minutes>.cdf`` files.
ETOPO_DIR_VARIABLE = "XLDENSF_ETOPO_DIR"

_PACKAGE_DATA = Path(__file__).parent.parent / "data"
_SYSTEM_DIR = Path("/usr/share/ferret-vis/data")


def etopo_path(resolution: int = 60, path: str | os.PathLike | None = None) -> Path:
    """Locate ``etopo<resolution>.cdf``.

    Parameters
    ----------
    resolution
        Grid spacing in arc-minutes, one of :data:`ETOPO_RESOLUTIONS`.
    path
        A file, or a folder to look in first.

    Returns
    -------
    pathlib.Path
        The first existing file among ``path``, ``$XLDENSF_ETOPO_DIR``, the package data
        (60 only) and ``/usr/share/ferret-vis/data``.

    Examples
    --------
    >>> etopo_path(60).name
    'etopo60.cdf'
    """
    if resolution not in ETOPO_RESOLUTIONS:
        raise DataError(expected_found("ETOPO resolution [arc-minutes]", ETOPO_RESOLUTIONS,
                                       resolution))
    name = f"etopo{resolution}.cdf"
    if path is not None and Path(path).is_file():
        return Path(path)
    folders = [Path(path)] if path is not None else []
    if os.environ.get(ETOPO_DIR_VARIABLE):
        folders.append(Path(os.environ[ETOPO_DIR_VARIABLE]))
    folders += [_PACKAGE_DATA, _SYSTEM_DIR]
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    raise DataError(expected_found(
        f"ETOPO file {name}",
        f"in one of {[str(folder) for folder in folders]} (Debian package ferret-datasets; "
        f"set ${ETOPO_DIR_VARIABLE} or pass path=)",
        "no such file"))


def load_relief(resolution: int = 60, path: str | os.PathLike | None = None) -> xr.DataArray:
    """ETOPO relief of the Earth's surface (positive up) as a CF DataArray.

    Parameters
    ----------
    resolution, path
        See :func:`etopo_path`.

    Returns
    -------
    xarray.DataArray
        Dims ``(lat, lon)``, longitudes in ``[-180, 180)`` without duplicates, values in
        metres above mean sea level (ocean negative).

    Examples
    --------
    >>> relief = load_relief()
    >>> relief.sizes["lat"], relief.sizes["lon"], relief.attrs["units"]
    (180, 360, 'm')
    """
    file = etopo_path(resolution, path)
    with xr.open_dataset(file) as dataset:
        names = list(dataset.data_vars)
        if len(names) != 1 or dataset[names[0]].ndim != 2:
            raise DataError(expected_found(f"variables of {file}", "one 2-D relief field",
                                           names))
        relief = dataset[names[0]].load()
    lat_dim, lon_dim = relief.dims
    lon = (relief[lon_dim].values + 180.0) % 360.0 - 180.0
    relief = relief.assign_coords({lon_dim: lon}).rename({lat_dim: "lat", lon_dim: "lon"})
    _, unique = np.unique(relief["lon"].values, return_index=True)
    relief = relief.isel(lon=np.sort(unique)).sortby("lon").sortby("lat")
    relief = relief.astype(np.float64)
    relief["lat"].attrs = coordinate_attrs("lat")
    relief["lon"].attrs = coordinate_attrs("lon")
    relief.attrs = {
        "units": "m",
        "standard_name": "height_above_mean_sea_level",
        "long_name": "relief of the Earth's surface (ETOPO)",
        "source": f"NOAA ETOPO{resolution} via Ferret ({file.name}), public domain",
    }
    return relief.rename("relief")


def regional_depth(
    lon: float,
    lat: float,
    *,
    shape: tuple[int, int] | None = None,
    length: tuple[float, float] | None = None,
    min_depth: float | None = None,
    resolution: int = 60,
    path: str | os.PathLike | None = None,
) -> xr.DataArray:
    """Still-water depth of a real ocean region on the planar tsunami grid.

    The grid (cell centres ``x, y`` in metres, centred on 0) is mapped to the sphere by a
    local sinusoidal projection centred on ``(lon, lat)``: ``lat = lat_c + y / R`` and
    ``lon = lon_c + x / (R cos lat)``, which keeps distances along parallels and meridians
    (distortion under 1 % across 1000 km away from the poles). The ETOPO relief is
    interpolated bilinearly onto those points and the depth is ``-relief``.

    Parameters
    ----------
    lon, lat
        Centre of the region [degrees_east, degrees_north].
    shape
        ``(ny, nx)`` cells; default that of :meth:`TsunamiConfig.paper` (150 x 150).
    length
        ``(length_y, length_x)`` [m]; default the paper basin (1000 km x 1000 km).
    min_depth
        If given [m], land and shallower cells are set to this depth, so the simulator
        (which needs depth > 0 everywhere) can run: coasts become shallow shelves instead of
        walls. The count of such cells is recorded in ``attrs["clipped_cells"]``.
    resolution, path
        ETOPO file, see :func:`etopo_path`.

    Returns
    -------
    xarray.DataArray
        Dims ``(y, x)`` with CF coordinates ``x, y`` [m] and 2-D ``lat, lon``; units ``m``
        (positive down), standard_name ``sea_floor_depth_below_mean_sea_level``.

    Examples
    --------
    Off Chile, at 1-degree ETOPO resolution:

    >>> depth = regional_depth(lon=-75.0, lat=-33.0, shape=(16, 16), min_depth=5.0)
    >>> float(depth.max()) > 4000.0, depth.attrs["clipped_cells"] > 0
    (True, True)
    """
    ny, nx = shape if shape is not None else PAPER_SHAPE
    length_y, length_x = length if length is not None else PAPER_LENGTH
    if not (-90.0 < lat < 90.0):
        raise DataError(expected_found("lat [degrees_north]", "inside (-90, 90)", lat))
    x = cell_centres(nx, length_x)
    y = cell_centres(ny, length_y)
    lat_2d = lat + np.degrees(y / EARTH_RADIUS)[:, None] + 0.0 * x[None, :]
    if np.abs(lat_2d).max() >= 89.0:
        raise DataError(expected_found("region", "at least 1 degree away from the poles",
                                       f"latitudes up to {np.abs(lat_2d).max():.2f}"))
    lon_2d = lon + np.degrees(x[None, :] / (EARTH_RADIUS * np.cos(np.radians(lat_2d))))
    lon_2d = (lon_2d + 180.0) % 360.0 - 180.0

    relief = load_relief(resolution, path)
    # periodic in longitude: one wrapped column on each side covers the date line
    relief = xr.concat(
        [relief.isel(lon=[-1]).assign_coords(lon=relief["lon"].values[-1:] - 360.0),
         relief,
         relief.isel(lon=[0]).assign_coords(lon=relief["lon"].values[:1] + 360.0)],
        dim="lon",
    )
    points = relief.interp(lat=xr.DataArray(lat_2d, dims=("y", "x")),
                           lon=xr.DataArray(lon_2d, dims=("y", "x")))
    depth_values = -points.values
    attrs = variable_attrs("tsunami", "depth")
    attrs.update({
        "source": relief.attrs["source"],
        "projection": f"local sinusoidal projection centred on lon = {lon:g}, lat = {lat:g} "
                      f"(R = {EARTH_RADIUS:g} m)",
        "centre_lon": float(lon),
        "centre_lat": float(lat),
    })
    if min_depth is not None:
        if not min_depth > 0:
            raise DataError(expected_found("min_depth", "> 0 m", min_depth))
        clipped = depth_values < min_depth
        depth_values = np.where(clipped, float(min_depth), depth_values)
        attrs.update({"min_depth": float(min_depth), "clipped_cells": int(clipped.sum())})
    return xr.DataArray(
        depth_values,
        dims=("y", "x"),
        coords={
            "y": ("y", y, coordinate_attrs("y")),
            "x": ("x", x, coordinate_attrs("x")),
            "lat": (("y", "x"), lat_2d, _auxiliary_attrs("lat")),
            "lon": (("y", "x"), lon_2d, _auxiliary_attrs("lon")),
        },
        name="depth",
        attrs=attrs,
    )


def _auxiliary_attrs(name: str) -> dict[str, str]:
    """CF attributes of a 2-D auxiliary coordinate (no ``axis``: it is not a dimension)."""
    attrs = coordinate_attrs(name)
    attrs.pop("axis", None)
    return attrs


def is_labelled_array(value: object) -> bool:
    """Whether ``value`` is an :class:`xarray.DataArray` (read by :func:`depth_on_grid`).

    Examples
    --------
    >>> is_labelled_array(xr.DataArray([1.0])), is_labelled_array(1.0)
    (True, False)
    """
    return isinstance(value, xr.DataArray)


def depth_on_grid(depth: xr.DataArray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Depth values [m] of a DataArray on the model cell centres ``(len(y), len(x))``.

    The DataArray's x and y axes are found by CF meaning (``axis``, ``standard_name``) or
    else by the names ``x``/``y``; coordinate and value units are converted to metres.
    Values are linearly interpolated; model centres within half a cell outside the
    DataArray's outermost centres take the edge value.

    Examples
    --------
    >>> da = xr.DataArray(np.full((2, 2), 50.0), dims=("y", "x"),
    ...                   coords={"x": [-1.0, 1.0], "y": [-1.0, 1.0]}, attrs={"units": "m"})
    >>> depth_on_grid(da, np.array([0.0]), np.array([-1.5, 1.5]))
    array([[50.],
           [50.]])
    """
    axes = {}
    for axis, name in (("X", "x"), ("Y", "y")):
        found = depth.cf.axes.get(axis, [])
        dims = [dim for dim in found if dim in depth.dims]
        axes[name] = dims[0] if dims else name
    if depth.ndim != 2 or set(axes.values()) != set(depth.dims):
        raise DataError(expected_found("depth DataArray dims", "two: y and x (CF axes Y, X)",
                                       depth.dims))
    values_units = depth.attrs.get("units", "m")
    targets = {}
    for name, model_values in (("x", x), ("y", y)):
        dim = axes[name]
        if dim not in depth.coords:
            raise DataError(expected_found(f"depth coordinate {dim!r}", "values in metres",
                                           "no coordinate"))
        source = convert_values(depth[dim].values.astype(np.float64),
                                depth[dim].attrs.get("units", "m"), "m", f"units of {dim!r}")
        low, high = source.min(), source.max()
        half_cell = 0.5 * (high - low) / max(len(source) - 1, 1)
        outside = (model_values < low - half_cell) | (model_values > high + half_cell)
        if outside.any():
            raise DataError(expected_found(
                f"depth coordinate {dim!r} [m]",
                f"covering the model grid {model_values.min():g} .. {model_values.max():g}",
                f"{low:g} .. {high:g}"))
        source_order = np.argsort(source)
        targets[dim] = (source[source_order], np.clip(model_values, low, high), source_order)
    ordered = depth.transpose(axes["y"], axes["x"]).values.astype(np.float64)
    ordered = ordered[targets[axes["y"]][2]][:, targets[axes["x"]][2]]
    interpolated = xr.DataArray(
        ordered, dims=("y", "x"),
        coords={"y": targets[axes["y"]][0], "x": targets[axes["x"]][0]},
    ).interp(y=targets[axes["y"]][1], x=targets[axes["x"]][1])
    return convert_values(interpolated.values, values_units, "m", "units of depth")
