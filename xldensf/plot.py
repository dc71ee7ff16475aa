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

from .errors import DataError, UnknownNameError, expected_found

__all__ = ["configure_cartopy", "natural_earth_dir", "plot_fields"]


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
    import matplotlib.pyplot as plt

    time_name = dataset.cf["T"].name if "T" in dataset.cf.axes else None
    if time_name is None:
        raise DataError(expected_found("dataset axes", "a time axis (CF axis T)",
                                       sorted(dataset.dims)))
    if "run" in dataset.dims:
        dataset = dataset.isel(run=0)
    if variables is None:
        variables = [name for name, v in dataset.data_vars.items() if time_name in v.dims]
    elif isinstance(variables, str):
        variables = [variables]
    for name in variables:
        if name not in dataset.data_vars:
            raise UnknownNameError(expected_found("variable", list(dataset.data_vars), name))
    first = dataset[variables[0]]
    on_sphere = _is_lat_lon(first)
    subplot_kw: dict[str, Any] = {}
    if on_sphere:
        configure_cartopy()
        import cartopy.crs as ccrs

        subplot_kw = {"projection": ccrs.Robinson()}
    rows, cols = len(variables), len(times)
    figure, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False,
                                subplot_kw=subplot_kw, constrained_layout=True)
    for row, name in enumerate(variables):
        field = dataset[name]
        limit = float(np.nanmax(np.abs(field.values))) or 1.0
        units = field.attrs.get("units", "")
        for col, index in enumerate(times):
            axis = axes[row, col]
            snapshot = field.isel({time_name: index})
            label = f"{name} [{units}]"
            title = f"{name}, {time_name} = {float(snapshot[time_name]):g}"
            if on_sphere:
                import cartopy.crs as ccrs

                lon, lat = snapshot.cf["longitude"], snapshot.cf["latitude"]
                image = axis.pcolormesh(lon, lat, snapshot.transpose(lat.name, lon.name),
                                        transform=ccrs.PlateCarree(), cmap=cmap,
                                        vmin=-limit, vmax=limit, shading="auto")
                if coastlines:
                    axis.coastlines(resolution="110m", linewidth=0.6)
                axis.set_global()
            elif snapshot.ndim == 1:
                (image,) = axis.plot(snapshot[snapshot.dims[0]], snapshot)
                axis.set_ylim(-limit, limit)
                axis.set_xlabel(snapshot.dims[0])
                label = None
            else:
                y_name, x_name = snapshot.dims
                image = axis.pcolormesh(snapshot[x_name], snapshot[y_name], snapshot,
                                        cmap=cmap, vmin=-limit, vmax=limit, shading="auto")
                axis.set_aspect("equal")
                axis.set_xlabel(x_name)
                axis.set_ylabel(y_name)
            axis.set_title(title, fontsize=9)
            if label and col == cols - 1:
                figure.colorbar(image, ax=axes[row, :].tolist(), label=label, shrink=0.85)
    if snapshot.ndim == 1:
        figure.legend([name for name in variables], loc="outside upper right")
    return figure
