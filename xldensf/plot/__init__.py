"""Figures of gridded fields: planar panels and, on lat/lon grids, cartopy maps.

Both figure functions compose with matplotlib: ``ax=`` draws into your own Axes (or cartopy
GeoAxes), one panel per axis; ``projection=`` chooses the map projection of the axes they
make (the data are always given in ``PlateCarree``). Times are chosen by label (``time=``: a
datetime string, ``numpy.datetime64``, cftime datetime or number, matched to the nearest
frame) or by position (``frame=``). ``stations=`` marks the station positions of an
observation Dataset. Nothing is shown (no ``plt.show()``); the figure is returned.

Cartopy is imported lazily. Coastlines are read from the Natural Earth 110m files shipped in
``xldensf/data/cartopy``, so maps draw offline; cartopy's configuration is not changed.

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> import xldensf as xl
>>> truth = xl.simulate("lorenz96", runs=1, seed=0, preset="small").isel(run=0)
>>> figure = plot_fields(truth, "x", frame=[0, -1])
>>> len(figure.axes)
2
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from ..alignment import DEFAULT_TOLERANCE, align_truth, member_dim
from ..conventions import find_time_name
from ..errors import DataError, ParameterError, check_names, expected_found
from .panels import (
    check_stations,
    configure_cartopy,
    draw_field,
    draw_stations,
    is_lat_lon,
    natural_earth_dir,
    panel_axes,
)
from .timing import frame_index, time_title

__all__ = ["configure_cartopy", "natural_earth_dir", "plot_fields", "plot_analysis",
           "time_title", "frame_index", "colour_limits"]

#: Default colour maps of fields with both signs / one sign (:func:`colour_limits`).
DIVERGING_CMAP = "RdBu_r"
SEQUENTIAL_CMAP = "viridis"

#: Colour map of the error panel (always diverging, with symmetric limits).
ERROR_CMAP = "RdBu_r"


def _variables(dataset: xr.Dataset, variables: str | Sequence[str] | None,
               default: list[str]) -> list[str]:
    if variables is None:
        variables = default
    elif isinstance(variables, str):
        variables = [variables]
    check_names("variable", variables, dataset.data_vars)
    if not variables:
        raise DataError(expected_found("variables to plot", "at least one gridded variable",
                                       sorted(dataset.data_vars)))
    return list(variables)


def _time_axis(dataset: xr.Dataset, what: str) -> xr.DataArray:
    name = find_time_name(dataset)
    if name is None or dataset[name].ndim != 1:
        raise DataError(expected_found(f"{what} axes", "a time axis (CF axis T, datetimes or "
                                       "a coordinate named 'time')", sorted(dataset.dims)))
    return dataset[name]


def _aligned_truth(analysis: xr.Dataset, truth: xr.Dataset, variables: list[str],
                   tolerance: float, interpolate: bool) -> xr.Dataset:
    """The truth at the one analysis time, on its labels and in its units."""
    if not isinstance(truth, xr.Dataset):
        raise DataError(expected_found("truth", "an xarray.Dataset", type(truth).__name__))
    if "run" in truth.dims:
        truth = truth.isel(run=0)
    missing = [name for name in variables if name not in truth.data_vars]
    if missing:
        raise DataError(expected_found("truth variables", variables,
                                       f"{sorted(truth.data_vars)} (missing {missing})"))
    truth = align_truth(analysis, truth, variables, tolerance=tolerance,
                        interpolate=interpolate)
    time_name = _time_axis(analysis, "analysis").dims[0]
    return truth.isel({time_name: 0}) if time_name in truth.dims else truth


def _analysis_panels(field: xr.DataArray, truth: xr.Dataset | None,
                     members: Any) -> dict[str, xr.DataArray]:
    """The panels of one variable, in order: truth, analysis (mean), analysis - truth,
    spread (the truth's with a truth, the spread's with members)."""
    mean = field if members is None else field.mean(members)
    panels: dict[str, xr.DataArray] = {}
    if truth is not None:
        panels["truth"] = truth[field.name].transpose(*mean.dims)
    panels["analysis" if members is None else "analysis mean"] = mean
    if truth is not None:
        panels["analysis - truth"] = mean - panels["truth"]
    if members is not None:
        panels["spread"] = field.std(members, ddof=1)
    return panels


# --------------------------------------------------------------------------- figures
def colour_limits(values: Any, cmap: str | None = None) -> tuple[float, float, str]:
    """Colour limits and map of a field: symmetric about zero with a diverging map when the
    values have both signs, the values' range with a sequential map when they have one sign
    (so that a 5 km deep fluid is not drawn in one colour of a +-6 km scale).

    Examples
    --------
    >>> colour_limits(np.array([-1.0, 3.0]))
    (-3.0, 3.0, 'RdBu_r')
    >>> colour_limits(np.array([4800.0, 5100.0]))
    (4800.0, 5100.0, 'viridis')
    """
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return -1.0, 1.0, cmap or DIVERGING_CMAP
    low, high = float(finite.min()), float(finite.max())
    if low < 0.0 < high:
        limit = max(-low, high)
        return -limit, limit, cmap or DIVERGING_CMAP
    if low == high:
        low, high = low - (abs(low) or 1.0) * 0.01, high + (abs(high) or 1.0) * 0.01
    return low, high, cmap or SEQUENTIAL_CMAP


def plot_fields(
    dataset: xr.Dataset,
    variables: str | Sequence[str] | None = None,
    *,
    time: Any = None,
    frame: int | Sequence[int] | None = None,
    times: Sequence[int] | None = None,
    ax: Any = None,
    projection: Any = None,
    stations: xr.Dataset | None = None,
    cmap: str | None = None,
    coastlines: bool = True,
):
    """Draw each variable at each chosen time: one row per variable, one column per time.

    Parameters
    ----------
    dataset
        Gridded fields with a time axis (one run: no ``run`` dimension, or the first run
        is taken).
    variables
        Variable names (default: every variable with the time axis).
    time
        One time label or a list of them (datetime strings, ``numpy.datetime64``, cftime
        datetimes, or numbers in the axis' units), each matched to the nearest frame (see
        :func:`frame_index`).
    frame
        One integer position or a list of them (default: the first and the last frame).
    times
        Same as ``frame`` (the earlier name, kept working).
    ax
        Matplotlib Axes (or cartopy GeoAxes) to draw into: one per panel, as a list or an
        array (variables x times, row by row). Default: a new figure.
    projection
        Cartopy CRS of the new map axes on latitude/longitude grids (default
        ``PlateCarree``; the data are always given in ``PlateCarree``). Without cartopy the
        maps are drawn on plain longitude/latitude axes.
    stations
        An observation Dataset (``observe``'s output): its station positions are marked on
        every panel (longitude/latitude on the sphere, the grid's x/y on planes; moving
        stations at the panel's time).
    cmap
        Matplotlib colour map. Default: ``"RdBu_r"`` with limits symmetric about zero for a
        variable with both signs, ``"viridis"`` over its range for a one-signed variable
        (a depth or a height); :func:`colour_limits`.
    coastlines
        On map axes, draw the shipped coastlines.

    Returns
    -------
    matplotlib.figure.Figure
        The new figure, or the figure of ``ax``.

    Raises
    ------
    UnknownNameError
        An unknown variable.
    DataError
        No time axis, or stations without positions on the field's axes.
    ParameterError
        A time out of range, ``ax`` with the wrong number of axes.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> import xldensf as xl
    >>> truth = xl.simulate("tsunami", runs=1, seed=7, preset="small", n_outputs=3).isel(run=0)
    >>> obs = truth.ldensf.observe(stations="4x4", noise=0.1, seed=0, variables=["eta"])
    >>> figure, axis = plt.subplots()
    >>> plot_fields(truth, "eta", time=900.0, ax=axis, stations=obs) is figure
    True
    """
    time_axis = _time_axis(dataset, "dataset")
    time_name = str(time_axis.dims[0])
    if "run" in dataset.dims:
        dataset = dataset.isel(run=0)
    variables = _variables(dataset, variables, [name for name, v in dataset.data_vars.items()
                                                if time_name in v.dims])
    check_stations(stations)
    if times is not None:
        if frame is not None:
            raise ParameterError(expected_found("frame", "frame= or times= (the same "
                                                "option), not both", (frame, times)))
        frame = times
    if time is not None:
        if frame is not None:
            raise ParameterError(expected_found("time selection", "time= (labels) or frame= "
                                                "(positions), not both", (time, frame)))
        labels = [time] if isinstance(time, str) or np.ndim(time) == 0 else list(time)
        positions = [frame_index(time_axis, time=label) for label in labels]
    else:
        chosen = (0, -1) if frame is None else frame
        chosen = [chosen] if np.ndim(chosen) == 0 else list(chosen)
        positions = [frame_index(time_axis, frame=position) for position in chosen]
    on_sphere = is_lat_lon(dataset[variables[0]])
    figure, axes = panel_axes(ax, len(variables), len(positions), on_sphere, projection)
    lines = []
    for row, name in enumerate(variables):
        field = dataset[name]
        low, high, colours = colour_limits(field.values, cmap)
        for col, index in enumerate(positions):
            snapshot = field.isel({time_name: index})
            axis = axes[row, col]
            image = draw_field(axis, snapshot, on_sphere, colours, low, high, coastlines,
                               fit_globe=ax is None)
            if stations is not None:
                draw_stations(axis, stations, snapshot, on_sphere, snapshot[time_name])
            axis.set_title(f"{name}, {time_title(snapshot[time_name])}", fontsize=9)
        lines.append(image)
        if field.ndim > 2:
            figure.colorbar(image, ax=axes[row, :].tolist(), shrink=0.85,
                            label=f"{name} [{field.attrs.get('units', '')}]")
    if dataset[variables[0]].ndim == 2 and ax is None:
        figure.legend(lines, list(variables), loc="outside upper right")
    return figure


def plot_analysis(
    analysis: xr.Dataset,
    truth: xr.Dataset | None = None,
    variables: str | Sequence[str] | None = None,
    *,
    time: Any = None,
    frame: int | None = None,
    ax: Any = None,
    projection: Any = None,
    stations: xr.Dataset | None = None,
    cmap: str | None = None,
    coastlines: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
    interpolate: bool = False,
):
    """Truth / analysis mean / analysis - truth / spread panels at one analysis time.

    Parameters
    ----------
    analysis
        Analysis ensemble with a member dim (found as in the metrics: ``standard_name:
        realization``, or ``member``), as returned by ``assimilate``. Without one (a
        deterministic analysis) the analysis itself is drawn and there is no spread panel.
    truth
        True fields, aligned to the analysis by coordinate labels and converted to its
        units (as the metrics do: :func:`xldensf.alignment.align_truth`); it adds a truth
        panel and an ``analysis - truth`` panel with its own symmetric colour scale
        (``vmin = -vmax``, ``vmax`` the largest absolute error) and a diverging colour map.
        Without it only the mean and spread panels are drawn.
    variables
        Variables to show, one row each (default: every gridded analysis variable that is
        not a forecast).
    time
        The analysis time by label (datetime string, ``numpy.datetime64``, cftime datetime,
        or a number in the axis' units), matched to the nearest frame (see
        :func:`frame_index`).
    frame
        The analysis time by integer position (default: the last).
    ax
        Axes (or GeoAxes) to draw into, one per panel (variables x panels, row by row).
    projection
        Cartopy CRS of the new map axes (default ``PlateCarree``).
    stations
        An observation Dataset whose station positions are marked on every panel.
    cmap
        Colour map of the truth and mean panels (the error panel is always diverging,
        the spread panel ``viridis``).
    coastlines
        On map axes, draw the shipped coastlines.
    tolerance, interpolate
        Label matching of the truth (see :func:`xldensf.alignment.align_truth`).

    Returns
    -------
    matplotlib.figure.Figure
        The new figure, or the figure of ``ax``.

    Raises
    ------
    DataError
        No time axis, a truth that does not align with the analysis.
    ParameterError
        A time out of range, ``ax`` with the wrong number of axes.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import xldensf as xl
    >>> truth = xl.simulate("lorenz96", runs=1, seed=1, preset="small", n_outputs=3)
    >>> obs = truth.isel(run=0).ldensf.observe(stations=40, noise=0.1, seed=0)
    >>> analysis = obs.ldensf.assimilate(xl.simulator("lorenz96", preset="small"),
    ...                                  method="etkf", members=5, seed=0)
    >>> len(plot_analysis(analysis, truth, stations=obs).axes)
    4
    """
    members = member_dim(analysis)
    time_axis = _time_axis(analysis, "analysis")
    time_name = time_axis.dims[0]
    index = frame_index(time_axis, time=time, frame=frame)
    snapshot = analysis.isel({time_name: index})
    grid_dims = [d for d in snapshot.dims if d != members]
    variables = _variables(snapshot, variables, [
        name for name, v in snapshot.data_vars.items()
        if grid_dims and set(grid_dims) <= set(v.dims) and not name.endswith("_forecast")])
    check_stations(stations)
    if truth is not None:
        truth = _aligned_truth(analysis[variables].isel({time_name: [index]}), truth,
                               variables, tolerance, interpolate)
    on_sphere = is_lat_lon(snapshot[variables[0]])
    rows = [_analysis_panels(snapshot[name], truth, members) for name in variables]
    figure, axes = panel_axes(ax, len(variables), len(rows[0]), on_sphere, projection)
    for row, (name, panels) in enumerate(zip(variables, rows, strict=True)):
        limits = colour_limits(next(iter(panels.values())).values, cmap)
        for col, (title, field) in enumerate(panels.items()):
            axis = axes[row, col]
            low, high, colours = limits
            if title == "spread":
                low, high, colours = 0.0, float(np.nanmax(field.values)) or 1.0, "viridis"
            elif title == "analysis - truth":
                high = float(np.nanmax(np.abs(field.values))) or 1.0
                low, colours = -high, ERROR_CMAP
            image = draw_field(axis, field, on_sphere, colours, low, high, coastlines,
                               fit_globe=ax is None)
            if stations is not None:
                draw_stations(axis, stations, field, on_sphere, snapshot[time_name])
            axis.set_title(f"{name}: {title}", fontsize=9)
            if field.ndim == 2:
                figure.colorbar(image, ax=axis, shrink=0.8,
                                label=snapshot[name].attrs.get("units", ""))
    figure.suptitle(time_title(snapshot[time_name]), fontsize=10)
    return figure
