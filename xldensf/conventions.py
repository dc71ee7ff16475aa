"""CF conventions used by xldensf: one table of variables, the dimension names and the
single pint registry.

Every Dataset that xldensf writes takes its variable metadata from :data:`VARIABLES` and
its coordinate metadata from :data:`COORDINATES`; units are parsed with
:data:`units`, which is ``cf_xarray.units.units`` (a pint registry that understands CF
spellings such as ``degrees_north``).

Examples
--------
>>> from xldensf.conventions import VARIABLES, units
>>> VARIABLES["atmosphere"]["u"].standard_name
'eastward_wind'
>>> float(units.Quantity(1, VARIABLES["tsunami"]["eta"].units).to("cm").magnitude)
100.0
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
import xarray as xr
from cf_xarray.units import units  # the one pint registry of the package

from .errors import UnitsError, expected_found

__all__ = [
    "units",
    "VariableInfo",
    "VARIABLES",
    "COORDINATES",
    "RUN_DIM",
    "MEMBER_DIM",
    "STATION_DIM",
    "TIME_DIM",
    "variable_attrs",
    "coordinate_attrs",
    "parse_units",
    "station_dim",
]

RUN_DIM = "run"
MEMBER_DIM = "member"
STATION_DIM = "station"
TIME_DIM = "time"


@dataclass(frozen=True)
class VariableInfo:
    """CF metadata of one variable.

    Parameters
    ----------
    units
        UDUNITS/CF unit string, parseable by :data:`units`.
    long_name
        Human-readable name.
    standard_name
        CF standard name, or ``None`` where none applies (nondimensional models).
    """

    units: str
    long_name: str
    standard_name: str | None = None

    def attrs(self) -> dict[str, str]:
        """The attribute dictionary to put on a DataArray."""
        out = {"units": self.units, "long_name": self.long_name}
        if self.standard_name:
            out["standard_name"] = self.standard_name
        return out


#: Variables of each case: ``VARIABLES[case][name]``.
VARIABLES: dict[str, dict[str, VariableInfo]] = {
    "tsunami": {
        "u": VariableInfo("m s-1", "eastward water velocity", "sea_water_x_velocity"),
        "v": VariableInfo("m s-1", "northward water velocity", "sea_water_y_velocity"),
        "eta": VariableInfo(
            "m", "sea surface elevation", "sea_surface_height_above_mean_sea_level"
        ),
        "depth": VariableInfo("m", "still-water depth", "sea_floor_depth_below_mean_sea_level"),
    },
    "atmosphere": {
        "h": VariableInfo("m", "fluid layer thickness", "geopotential_height"),
        "u": VariableInfo("m s-1", "eastward wind", "eastward_wind"),
        "v": VariableInfo("m s-1", "northward wind", "northward_wind"),
        "vorticity": VariableInfo("s-1", "relative vorticity", "atmosphere_relative_vorticity"),
        "orography": VariableInfo("m", "surface height", "surface_altitude"),
    },
    "kolmogorov": {
        "u": VariableInfo("1", "nondimensional x velocity"),
        "v": VariableInfo("1", "nondimensional y velocity"),
        "vorticity": VariableInfo("1", "nondimensional vorticity"),
    },
    "lorenz96": {
        "x": VariableInfo("1", "Lorenz-96 state variable"),
    },
}

#: Coordinate metadata by coordinate name (shared across cases unless overridden).
COORDINATES: dict[str, dict[str, str]] = {
    "x": {
        "units": "m",
        "standard_name": "projection_x_coordinate",
        "long_name": "x coordinate (eastward distance from the domain centre)",
        "axis": "X",
    },
    "y": {
        "units": "m",
        "standard_name": "projection_y_coordinate",
        "long_name": "y coordinate (northward distance from the domain centre)",
        "axis": "Y",
    },
    "lat": {
        "units": "degrees_north",
        "standard_name": "latitude",
        "long_name": "latitude",
        "axis": "Y",
    },
    "lon": {
        "units": "degrees_east",
        "standard_name": "longitude",
        "long_name": "longitude",
        "axis": "X",
    },
    "k": {"units": "1", "long_name": "Lorenz-96 site index (periodic)", "axis": "X"},
    "time": {"units": "s", "standard_name": "time", "long_name": "time since start", "axis": "T"},
    RUN_DIM: {"long_name": "simulation run index"},
    MEMBER_DIM: {"long_name": "ensemble member", "standard_name": "realization"},
}


def variable_attrs(case: str, name: str) -> dict[str, str]:
    """CF attributes of variable ``name`` of ``case`` from :data:`VARIABLES`.

    Examples
    --------
    >>> variable_attrs("lorenz96", "x")["units"]
    '1'
    """
    return VARIABLES[case][name].attrs()


def coordinate_attrs(name: str, **overrides: str) -> dict[str, str]:
    """CF attributes of coordinate ``name`` from :data:`COORDINATES`, with overrides.

    Examples
    --------
    >>> coordinate_attrs("time", units="1")["axis"]
    'T'
    """
    out = dict(COORDINATES[name])
    out.update(overrides)
    return out


def parse_units(text: str | None, what: str = "units"):
    """Parse a unit string with the package registry; raise :class:`UnitsError` if it fails.

    Examples
    --------
    >>> parse_units("degrees_north")
    <Unit('degrees_north')>
    """
    if text is None:
        raise UnitsError(expected_found(what, "a CF unit string", None))
    try:
        return units.Unit(text)
    except Exception as err:  # pint raises several unrelated types
        raise UnitsError(expected_found(what, "a unit string pint can parse", text)) from err


def convert_values(values: np.ndarray, from_units: str, to_units: str, what: str = "units"):
    """Convert ``values`` between unit strings; raise :class:`UnitsError` if incompatible.

    Examples
    --------
    >>> float(convert_values(np.array(1.0), "m s-1", "km h-1"))
    3.6
    """
    source, target = parse_units(from_units, what), parse_units(to_units, what)
    try:
        return units.Quantity(np.asarray(values), source).to(target).magnitude
    except Exception as err:
        raise UnitsError(
            expected_found(what, f"units convertible to {to_units!r}", from_units)
        ) from err


def station_dim(obj: xr.Dataset | xr.DataArray) -> Hashable | None:
    """The station (CF timeSeries instance) dim of ``obj``, or ``None`` if it has none.

    The dim of a variable with ``cf_role: timeseries_id`` (the CF way of marking the
    instance dimension, whatever its name); otherwise the dim named :data:`STATION_DIM`.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset(coords={"id": ("site", np.arange(3), {"cf_role": "timeseries_id"})})
    >>> station_dim(ds)
    'site'
    >>> station_dim(xr.Dataset(coords={"station": np.arange(2)}))
    'station'
    """
    variables = obj.coords if isinstance(obj, xr.DataArray) else obj.variables
    for variable in variables.values():
        if variable.attrs.get("cf_role") == "timeseries_id" and variable.ndim >= 1:
            return variable.dims[0]
    return STATION_DIM if STATION_DIM in obj.dims else None


def with_attrs(array: xr.DataArray, attrs: dict[str, str]) -> xr.DataArray:
    """Return ``array`` with ``attrs`` merged in (no copy of the data)."""
    array.attrs.update(attrs)
    return array
