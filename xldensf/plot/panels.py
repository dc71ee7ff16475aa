"""Drawing helpers of the figures: cartopy set-up and the shipped coastlines, the panel
axes (new ones or the user's ``ax=``), one field per axis, station markers.

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> figure, axes = panel_axes(None, 1, 2, on_sphere=False, projection=None)
>>> axes.shape
(1, 2)
"""

from __future__ import annotations

import functools
import os
from importlib import resources
from pathlib import Path
from typing import Any

import cf_xarray  # noqa: F401  (registers ds.cf)
import numpy as np
import xarray as xr

from ..conventions import convert_values, find_time_name, is_datetime_like, station_dim
from ..errors import DataError, ParameterError, expected_found
from .timing import time_title

__all__ = ["natural_earth_dir", "configure_cartopy", "is_lat_lon", "panel_axes", "draw_field",
           "draw_stations", "check_stations"]


def natural_earth_dir() -> Path:
    """Folder holding the shipped ``shapefiles/natural_earth/physical/ne_110m_*`` files.

    Examples
    --------
    >>> (natural_earth_dir() / "shapefiles" / "natural_earth").is_dir()
    True
    """
    return Path(str(resources.files("xldensf") / "data" / "cartopy"))


def configure_cartopy() -> Any:
    """Import cartopy and, when you have set no ``pre_existing_data_dir`` (in
    ``cartopy.config`` or the ``CARTOPY_DATA_DIR`` environment variable), point it at the
    shipped Natural Earth files, so ``ax.coastlines("110m")`` draws offline.

    The plot functions do not need this (they read the shipped coastlines directly) and do
    not call it; ``cartopy.config["data_dir"]`` is never changed.

    Returns
    -------
    module
        The ``cartopy`` module.

    Examples
    --------
    >>> cartopy = configure_cartopy()
    >>> "pre_existing_data_dir" in cartopy.config
    True
    """
    import cartopy

    current = str(cartopy.config.get("pre_existing_data_dir") or "")
    if current in ("", ".") and not os.environ.get("CARTOPY_DATA_DIR"):
        cartopy.config["pre_existing_data_dir"] = str(natural_earth_dir())
    return cartopy


@functools.lru_cache(maxsize=1)
def _shipped_coastlines() -> Any:
    """The shipped 110m coastlines as a cartopy feature (read once)."""
    import cartopy.crs as ccrs
    from cartopy.feature import ShapelyFeature
    from cartopy.io.shapereader import Reader

    path = natural_earth_dir() / "shapefiles" / "natural_earth" / "physical"
    geometries = list(Reader(str(path / "ne_110m_coastline.shp")).geometries())
    return ShapelyFeature(geometries, ccrs.PlateCarree(), facecolor="none",
                          edgecolor="black")


def is_lat_lon(field: xr.DataArray) -> bool:
    """Whether ``field`` has CF latitude and longitude coordinates (a map is drawn).

    Examples
    --------
    >>> lat = ("lat", [0.0, 10.0], {"standard_name": "latitude"})
    >>> lon = ("lon", [0.0, 10.0], {"standard_name": "longitude"})
    >>> is_lat_lon(xr.DataArray(np.zeros((2, 2)), dims=("lat", "lon"),
    ...                         coords={"lat": lat, "lon": lon}))
    True
    """
    try:
        field.cf["latitude"], field.cf["longitude"]
    except KeyError:
        return False
    return True


def _is_geo_axes(axis: Any) -> bool:
    return hasattr(axis, "projection")


# ------------------------------------------------------------------------------ axes
def panel_axes(ax: Any, rows: int, cols: int, on_sphere: bool, projection: Any):
    """The figure and a (rows, cols) array of axes: the user's ``ax`` (one per panel,
    row by row) or new ones (map axes in ``projection``, default ``PlateCarree``, on the
    sphere; plain longitude/latitude axes without cartopy).

    Raises
    ------
    ParameterError
        ``ax`` with another number of axes than panels, ``projection`` with ``ax`` or for a
        field that is not on the sphere.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> figure, given = plt.subplots(1, 2)
    >>> panel_axes(given, 2, 1, on_sphere=False, projection=None)[1].shape
    (2, 1)
    """
    if ax is not None:
        if projection is not None:
            raise ParameterError(expected_found("projection", "None when ax= is given (the "
                                                "axes carry their projection)", projection))
        axes = np.asarray(ax, dtype=object).ravel()
        if axes.size != rows * cols:
            raise ParameterError(expected_found(
                "ax", f"{rows * cols} axes ({rows} variable(s) x {cols} panel(s))",
                axes.size))
        return axes[0].figure, axes.reshape(rows, cols)
    import matplotlib.pyplot as plt

    subplot_kw: dict[str, Any] = {}
    if on_sphere:
        if projection is None:
            try:
                import cartopy.crs as ccrs
            except ImportError:  # no cartopy: plain lon/lat axes
                ccrs = None
            projection = None if ccrs is None else ccrs.PlateCarree()
        if projection is not None:
            subplot_kw = {"projection": projection}
    elif projection is not None:
        raise ParameterError(expected_found("projection", "None for fields without "
                                            "latitude/longitude", projection))
    return plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False,
                        subplot_kw=subplot_kw, constrained_layout=True)


def cell_edges(centres: np.ndarray, bounds: tuple[float, float] | None = None) -> np.ndarray:
    """Edges of the cells around 1-D ``centres`` (midpoints, half a spacing beyond the ends),
    clipped to ``bounds``: latitude edges at the poles keep cartopy from splitting every
    polar cell (a global map drew several times slower).

    Examples
    --------
    >>> cell_edges(np.array([-90.0, 0.0, 90.0]), (-90.0, 90.0)).tolist()
    [-90.0, -45.0, 45.0, 90.0]
    """
    centres = np.asarray(centres, dtype=np.float64)
    if centres.size < 2:
        return np.array([centres[0] - 0.5, centres[0] + 0.5]) if centres.size else centres
    middle = 0.5 * (centres[1:] + centres[:-1])
    edges = np.concatenate([[2 * centres[0] - middle[0]], middle, [2 * centres[-1] - middle[-1]]])
    return edges if bounds is None else np.clip(edges, *bounds)


def draw_field(axis: Any, snapshot: xr.DataArray, on_sphere: bool, cmap: str, vmin: float,
               vmax: float, coastlines: bool, fit_globe: bool = True) -> Any:
    """Draw one field into ``axis``: a map, a planar image or a line; return the artist.

    ``fit_globe`` shows the whole globe on map axes (not for the user's own axes, whose
    extent is kept); ``coastlines`` draws the shipped coastlines on map axes.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> field = xr.DataArray(np.arange(4.0), dims="k", coords={"k": np.arange(4.0)})
    >>> line = draw_field(plt.subplots()[1], field, False, "RdBu_r", -3.0, 3.0, False)
    >>> line.get_ydata().tolist()
    [0.0, 1.0, 2.0, 3.0]
    """
    if on_sphere:
        lon, lat = snapshot.cf["longitude"], snapshot.cf["latitude"]
        values = snapshot.transpose(lat.name, lon.name)
        if not _is_geo_axes(axis):
            image = axis.pcolormesh(lon, lat, values, cmap=cmap, vmin=vmin, vmax=vmax,
                                    shading="auto")
            axis.set_xlabel(f"{lon.name} [{lon.attrs.get('units', 'degrees_east')}]")
            axis.set_ylabel(f"{lat.name} [{lat.attrs.get('units', 'degrees_north')}]")
            return image
        import cartopy.crs as ccrs

        image = axis.pcolormesh(cell_edges(lon.values), cell_edges(lat.values, (-90.0, 90.0)),
                                values, transform=ccrs.PlateCarree(), cmap=cmap, vmin=vmin,
                                vmax=vmax, shading="flat")
        if coastlines:
            axis.add_feature(_shipped_coastlines(), linewidth=0.6)
        if fit_globe:
            axis.set_global()
        return image
    if snapshot.ndim == 1:
        (image,) = axis.plot(snapshot[snapshot.dims[0]], snapshot)
        axis.set_ylim(vmin, vmax)
        axis.set_xlabel(snapshot.dims[0])
        return image
    y_name, x_name = snapshot.dims
    (x, x_label, _), (y, y_label, _) = (_axis_values(snapshot[x_name]),
                                        _axis_values(snapshot[y_name]))
    image = axis.pcolormesh(x, y, snapshot, cmap=cmap, vmin=vmin, vmax=vmax, shading="auto")
    axis.set_aspect("equal")
    axis.set_xlabel(x_label)
    axis.set_ylabel(y_label)
    return image


def _axis_values(coordinate: xr.DataArray) -> tuple[np.ndarray, str, float]:
    """Coordinate values, label and display scale; metres over 10 km are shown in km."""
    unit_text = coordinate.attrs.get("units", "")
    values = np.asarray(coordinate.values)
    if unit_text == "m" and np.ptp(values) > 1e4:
        return values / 1e3, f"{coordinate.name} [km]", 1e-3
    return values, f"{coordinate.name} [{unit_text}]" if unit_text else str(coordinate.name), 1.0


# -------------------------------------------------------------------------- stations
def _station_coordinate(stations: xr.Dataset, field: xr.DataArray, key: str) -> tuple[
        xr.DataArray, xr.DataArray]:
    """The station coordinate matching the field's coordinate ``key`` (a dim name, or
    ``latitude``/``longitude``), and that field coordinate."""
    if key in ("latitude", "longitude"):
        reference = field.cf[key]
        try:
            return stations.cf[key], reference
        except KeyError:
            pass
    else:
        reference = field[key]
    if reference.name in stations.variables:
        return stations[reference.name], reference
    raise DataError(expected_found(f"station positions matching the field's {key!r}",
                                   f"a coordinate {reference.name!r} (or CF {key}) of the "
                                   "stations", sorted(map(str, stations.variables))))


def draw_stations(axis: Any, stations: xr.Dataset, field: xr.DataArray, on_sphere: bool,
                   time: xr.DataArray) -> Any:
    """Mark the station positions of ``stations`` on ``axis`` (at ``time`` for moving
    stations, in the field's units); return the scatter artist (no legend entry).

    Raises
    ------
    DataError
        Stations without positions on the field's axes, or moving stations on a time axis of
        another kind than the field's.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> field = xr.DataArray(np.zeros(4), dims="k", coords={"k": np.arange(4.0)})
    >>> stations = xr.Dataset(coords={"k": ("station", [1.0, 2.5])})
    >>> marks = draw_stations(plt.subplots()[1], stations, field, False, field.k[0])
    >>> len(marks.get_offsets())
    2
    """
    if on_sphere:
        keys = ["longitude", "latitude"]
    else:
        keys = [field.dims[-1]] if field.ndim == 1 else [field.dims[1], field.dims[0]]
    station_time = find_time_name(stations)
    positions = []
    for key in keys:
        coordinate, reference = _station_coordinate(stations, field, key)
        if station_time is not None and station_time in coordinate.dims:
            if is_datetime_like(stations[station_time]) != is_datetime_like(time):
                raise DataError(expected_found(
                    f"times of the moving stations' {key!r}", "times of the same kind as "
                    f"the field's ({time_title(time)})",
                    time_title(stations[station_time][0])))
            coordinate = coordinate.sel({station_time: time.values}, method="nearest")
        values = np.asarray(coordinate.values, dtype=np.float64).ravel()
        source, target = coordinate.attrs.get("units"), reference.attrs.get("units")
        if not on_sphere and source and target and source != target:
            values = np.asarray(convert_values(values, source, target,
                                               f"units of the station {key!r}"))
        positions.append(values * (1.0 if on_sphere else _axis_values(reference)[2]))
    style: dict[str, Any] = {"marker": "^", "s": 22, "facecolors": "white",
                             "edgecolors": "black", "linewidths": 0.7, "zorder": 3,
                             "label": "_nolegend_"}
    if len(positions) == 1:
        return axis.scatter(positions[0], np.zeros_like(positions[0]),
                            transform=axis.get_xaxis_transform(), clip_on=False, **style)
    if _is_geo_axes(axis):
        import cartopy.crs as ccrs

        style["transform"] = ccrs.PlateCarree()
    return axis.scatter(positions[0], positions[1], **style)


def check_stations(stations: Any) -> None:
    """Refuse ``stations`` that are not an observation Dataset with a station dim.

    Examples
    --------
    >>> check_stations(xr.Dataset(coords={"k": ("station", [1.0])}))
    >>> check_stations(xr.Dataset())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xldensf.errors.DataError: stations: expected a Dataset with a station dim ...
    """
    if stations is not None and not isinstance(stations, xr.Dataset):
        raise DataError(expected_found("stations", "an observation xarray.Dataset",
                                       type(stations).__name__))
    if stations is not None and station_dim(stations) is None:
        raise DataError(expected_found("stations", "a Dataset with a station dim (cf_role "
                                       "timeseries_id, or 'station')",
                                       sorted(map(str, stations.dims))))
