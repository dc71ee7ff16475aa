"""Figures of gridded fields: planar panels and, on lat/lon grids, cartopy maps.

Cartopy is imported lazily, and pointed at the Natural Earth 110m coastlines shipped in
``xldensf/data/cartopy`` so maps draw offline.

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> import xldensf as xl
>>> truth = xl.simulate("lorenz96", runs=1, seed=0, preset="small").isel(run=0)
>>> figure = plot_fields(truth, "x", times=[0, -1])
>>> len(figure.axes)
2
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import cf_xarray  # noqa: F401  (registers ds.cf)
import numpy as np
import xarray as xr

from .conventions import (
    MEMBER_DIM,
    convert_values,
    find_time_name,
    is_datetime_like,
    parse_units,
    units,
)
from .errors import DataError, UnitsError, check_names, expected_found

__all__ = ["configure_cartopy", "natural_earth_dir", "plot_fields", "plot_analysis",
           "time_title"]


def time_title(time: xr.DataArray) -> str:
    """A readable title of one time: the datetime (to the minute, or the second), or a
    numeric time in hours when it is over an hour of seconds, else with its units.

    Examples
    --------
    >>> import numpy as np
    >>> time_title(xr.DataArray(np.datetime64("2011-03-11T05:46:00", "ns"), name="time"))
    'time = 2011-03-11 05:46'
    >>> time_title(xr.DataArray(42570.1, name="time", attrs={"units": "s"}))
    'time = 11.83 h'
    """
    value = np.asarray(time.values)
    if is_datetime_like(value):
        if np.issubdtype(value.dtype, np.datetime64):
            seconds = np.datetime64(value, "s")
            unit = "m" if seconds == np.datetime64(value, "m") else "s"
            text = str(np.datetime_as_string(seconds, unit=unit)).replace("T", " ")
        else:
            text = value.item().isoformat(sep=" ")
        return f"{time.name} = {text}"
    if np.issubdtype(value.dtype, np.timedelta64):
        value, unit_text = value / np.timedelta64(1, "s"), "s"
    else:
        unit_text = str(time.attrs.get("units", ""))
    number = float(value)
    try:
        is_time = bool(unit_text) and parse_units(unit_text).dimensionality == \
            units.s.dimensionality
    except UnitsError:
        is_time = False
    if is_time:
        seconds = float(convert_values(number, unit_text, "s"))
        if abs(seconds) >= 3600:
            return f"{time.name} = {seconds / 3600:.4g} h"
        return f"{time.name} = {seconds:.4g} s"
    suffix = f" {unit_text}" if unit_text and unit_text != "1" else ""
    return f"{time.name} = {number:g}{suffix}"


def natural_earth_dir() -> Path:
    """Folder holding the shipped ``shapefiles/natural_earth/physical/ne_110m_*`` files."""
    return Path(str(resources.files("xldensf") / "data" / "cartopy"))


def configure_cartopy() -> Any:
    """Import cartopy and make it read the shipped Natural Earth data (no downloads).

    Returns
    -------
    module
        The ``cartopy`` module.
    """
    import cartopy

    cartopy.config["pre_existing_data_dir"] = str(natural_earth_dir())
    return cartopy


def _is_lat_lon(field: xr.DataArray) -> bool:
    try:
        field.cf["latitude"], field.cf["longitude"]
    except KeyError:
        return False
    return True


def plot_fields(
    dataset: xr.Dataset,
    variables: str | Sequence[str] | None = None,
    *,
    times: Sequence[int] = (0, -1),
    cmap: str = "RdBu_r",
    coastlines: bool = True,
):
    """Draw each variable at each chosen time index: one row per variable.

    Parameters
    ----------
    dataset
        Gridded fields with a time axis (one run: no ``run`` dimension, or the first run
        is taken).
    variables
        Variable names (default: every variable with the time axis).
    times
        Integer time indices to show.
    cmap
        Matplotlib colour map (symmetric limits per variable).
    coastlines
        On lat/lon grids, draw the shipped coastlines.

    Returns
    -------
    matplotlib.figure.Figure
    """
    time_name = find_time_name(dataset)
    if time_name is None:
        raise DataError(expected_found("dataset axes", "a time axis (CF axis T, datetimes or "
                                       "a coordinate named 'time')", sorted(dataset.dims)))
    if "run" in dataset.dims:
        dataset = dataset.isel(run=0)
    if variables is None:
        variables = [name for name, v in dataset.data_vars.items() if time_name in v.dims]
    elif isinstance(variables, str):
        variables = [variables]
    check_names("variable", variables, dataset.data_vars)
    on_sphere = _is_lat_lon(dataset[variables[0]])
    figure, axes = _figure(len(variables), len(times), on_sphere)
    for row, name in enumerate(variables):
        field = dataset[name]
        limit = float(np.nanmax(np.abs(field.values))) or 1.0
        for col, index in enumerate(times):
            snapshot = field.isel({time_name: index})
            image = _draw(axes[row, col], snapshot, on_sphere, cmap, -limit, limit, coastlines)
            axes[row, col].set_title(f"{name}, {time_title(snapshot[time_name])}",
                                     fontsize=9)
        if field.ndim > 2:
            figure.colorbar(image, ax=axes[row, :].tolist(), shrink=0.85,
                            label=f"{name} [{field.attrs.get('units', '')}]")
    if dataset[variables[0]].ndim == 2:
        figure.legend(list(variables), loc="outside upper right")
    return figure


def plot_analysis(
    analysis: xr.Dataset,
    truth: xr.Dataset | None = None,
    variables: str | Sequence[str] | None = None,
    *,
    time: int = -1,
    cmap: str = "RdBu_r",
    coastlines: bool = True,
):
    """Truth / analysis mean / error / spread panels at one analysis time.

    Parameters
    ----------
    analysis
        Analysis ensemble with a ``member`` dim (as returned by ``assimilate``).
    truth
        True fields on the same grid (selected at the analysis time by value); without it
        only the mean and spread panels are drawn.
    variables
        Variables to show, one row each (default: every gridded analysis variable that is
        not a forecast).
    time
        Integer index of the analysis time.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import xldensf as xl
    >>> truth = xl.simulate("lorenz96", runs=1, seed=1, preset="small", n_outputs=3)
    >>> obs = truth.isel(run=0).ldensf.observe(stations=40, noise=0.1, seed=0)
    >>> analysis = obs.ldensf.assimilate(xl.simulator("lorenz96", preset="small"),
    ...                                  method="etkf", members=5, seed=0)
    >>> len(plot_analysis(analysis, truth).axes)
    4
    """
    if MEMBER_DIM not in analysis.dims:
        raise DataError(expected_found("analysis dims", "a member dim", sorted(analysis.dims)))
    time_name = find_time_name(analysis)
    if time_name is None:
        raise DataError(expected_found("analysis axes", "a time axis", sorted(analysis.dims)))
    snapshot = analysis.isel({time_name: time})
    grid_dims = [d for d in snapshot.dims if d != MEMBER_DIM]
    if variables is None:
        variables = [name for name, v in snapshot.data_vars.items()
                     if grid_dims and set(grid_dims) <= set(v.dims)
                     and not name.endswith("_forecast")]
    elif isinstance(variables, str):
        variables = [variables]
    check_names("variable", variables, snapshot.data_vars)
    if truth is not None:
        if "run" in truth.dims:
            truth = truth.isel(run=0)
        truth = truth.sel({time_name: snapshot[time_name]})
    on_sphere = _is_lat_lon(snapshot[variables[0]])
    columns = ["truth", "analysis mean", "error (mean - truth)", "spread"]
    if truth is None:
        columns = ["analysis mean", "spread"]
    figure, axes = _figure(len(variables), len(columns), on_sphere)
    for row, name in enumerate(variables):
        mean = snapshot[name].mean(MEMBER_DIM)
        panels = {"analysis mean": mean, "spread": snapshot[name].std(MEMBER_DIM, ddof=1)}
        if truth is not None:
            if name not in truth:
                raise DataError(expected_found(f"truth variable {name!r}",
                                               sorted(truth.data_vars), "missing"))
            panels["truth"] = truth[name].transpose(*mean.dims)
            panels["error (mean - truth)"] = mean - panels["truth"]
        limit = float(np.nanmax(np.abs(panels.get("truth", mean).values))) or 1.0
        for col, title in enumerate(columns):
            field = panels[title]
            if title == "spread":
                top = float(np.nanmax(field.values)) or 1.0
                image = _draw(axes[row, col], field, on_sphere, "viridis", 0.0, top, coastlines)
            else:
                image = _draw(axes[row, col], field, on_sphere, cmap, -limit, limit, coastlines)
            axes[row, col].set_title(f"{name}: {title}", fontsize=9)
            if field.ndim == 2:
                figure.colorbar(image, ax=axes[row, col], shrink=0.8,
                                label=snapshot[name].attrs.get("units", ""))
    figure.suptitle(time_title(snapshot[time_name]), fontsize=10)
    return figure


def _figure(rows: int, cols: int, on_sphere: bool):
    import matplotlib.pyplot as plt

    subplot_kw: dict[str, Any] = {}
    if on_sphere:
        configure_cartopy()
        import cartopy.crs as ccrs

        subplot_kw = {"projection": ccrs.Robinson()}
    return plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False,
                        subplot_kw=subplot_kw, constrained_layout=True)


def _draw(axis: Any, snapshot: xr.DataArray, on_sphere: bool, cmap: str, vmin: float,
          vmax: float, coastlines: bool) -> Any:
    """Draw one field: a map, a planar image or a line; return the artist."""
    if on_sphere:
        import cartopy.crs as ccrs

        lon, lat = snapshot.cf["longitude"], snapshot.cf["latitude"]
        image = axis.pcolormesh(lon, lat, snapshot.transpose(lat.name, lon.name),
                                transform=ccrs.PlateCarree(), cmap=cmap, vmin=vmin,
                                vmax=vmax, shading="auto")
        if coastlines:
            axis.coastlines(resolution="110m", linewidth=0.6)
        axis.set_global()
        return image
    if snapshot.ndim == 1:
        (image,) = axis.plot(snapshot[snapshot.dims[0]], snapshot)
        axis.set_ylim(vmin, vmax)
        axis.set_xlabel(snapshot.dims[0])
        return image
    y_name, x_name = snapshot.dims
    (x, x_label), (y, y_label) = _axis_values(snapshot[x_name]), _axis_values(snapshot[y_name])
    image = axis.pcolormesh(x, y, snapshot, cmap=cmap, vmin=vmin, vmax=vmax, shading="auto")
    axis.set_aspect("equal")
    axis.set_xlabel(x_label)
    axis.set_ylabel(y_label)
    return image


def _axis_values(coordinate: xr.DataArray) -> tuple[np.ndarray, str]:
    """Coordinate values and label; distances in metres over 10 km are shown in km."""
    units = coordinate.attrs.get("units", "")
    values = np.asarray(coordinate.values)
    if units == "m" and np.ptp(values) > 1e4:
        return values / 1e3, f"{coordinate.name} [km]"
    return values, f"{coordinate.name} [{units}]" if units else str(coordinate.name)
