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

import datetime
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from cf_xarray.units import units  # the one pint registry of the package

from .errors import DataError, ParameterError, UnitsError, expected_found

try:  # cftime comes with xarray's netCDF stack; without it only datetime64 is supported
    import cftime
except ImportError:  # pragma: no cover
    cftime = None

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
    "convert_values",
    "convert_differences",
    "quantity_magnitude",
    "is_quantity",
    "dequantify",
    "TIME_NAMES",
    "find_time_name",
    "time_coordinate",
    "is_datetime_like",
    "parse_datetime",
    "duration_seconds",
    "elapsed_seconds",
    "datetimes_after",
    "time_encoding",
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


# ---------------------------------------------------------------------------- differences
def _delta(unit: Any) -> Any:
    """The unit of a difference of two values in ``unit`` (``delta_degC`` for ``degC``)."""
    return (units.Quantity(1.0, unit) - units.Quantity(0.0, unit)).units


def convert_differences(values: Any, from_units: str, to_units: str, what: str = "units"):
    """Convert differences (standard deviations, errors, spreads) between unit strings.

    A difference converts with the scale of the units only: 1 K of error on a ``degC``
    field is 1 degC, not -272.15 degC (pint's ``delta_degC`` and friends).

    Raises
    ------
    UnitsError
        Units that pint cannot parse or that are not convertible.

    Examples
    --------
    >>> float(convert_differences(1.0, "K", "degC"))
    1.0
    >>> float(convert_differences(2.0, "m s-1", "km h-1"))
    7.2
    """
    source, target = parse_units(from_units, what), parse_units(to_units, what)
    try:
        factor = units.Quantity(1.0, _delta(source)).to(_delta(target)).magnitude
    except Exception as err:
        raise UnitsError(
            expected_found(what, f"units convertible to {to_units!r}", from_units)
        ) from err
    return np.asarray(values, dtype=np.float64) * float(factor)


def is_quantity(value: Any) -> bool:
    """Whether ``value`` is a pint Quantity (of any registry).

    Examples
    --------
    >>> is_quantity(units.Quantity(150, "km")), is_quantity(150.0)
    (True, False)
    """
    return hasattr(value, "magnitude") and hasattr(value, "units") and hasattr(value, "to")


def _unit_text(unit: Any) -> str:
    try:
        text = format(unit, "cf")
    except (ValueError, KeyError, TypeError):
        text = str(unit)
    return text or "1"


def quantity_magnitude(value: Any, to_units: str, what: str, *, difference: bool = False):
    """The magnitude of Quantity ``value`` in ``to_units`` (a difference if ``difference``).

    Raises
    ------
    UnitsError
        Naming the expected and the found units when they are not convertible.

    Examples
    --------
    >>> float(quantity_magnitude(units.Quantity(150, "km"), "m", "localization"))
    150000.0
    >>> float(quantity_magnitude(units.Quantity(1, "K"), "degC", "noise", difference=True))
    1.0
    """
    found = _unit_text(value.units)
    convert = convert_differences if difference else convert_values
    try:
        return convert(np.asarray(value.magnitude, dtype=np.float64), str(value.units),
                       to_units, what)
    except UnitsError as err:
        raise UnitsError(expected_found(f"units of {what}",
                                        f"units convertible to {to_units!r}", found)) from err


def dequantify(obj: Any) -> Any:
    """Replace pint Quantity data (as made by pint-xarray's ``ds.pint.quantify()``) by
    its magnitude with a ``units`` attribute; other objects are returned unchanged.

    Examples
    --------
    >>> da = xr.DataArray(units.Quantity(np.array([1.0, 2.0]), "degC"), dims="x")
    >>> out = dequantify(da)
    >>> type(out.data).__name__, out.attrs["units"]
    ('ndarray', '°C')
    """
    if isinstance(obj, xr.DataArray):
        return dequantify(obj.to_dataset(name="__data__"))["__data__"].rename(obj.name)
    if not isinstance(obj, xr.Dataset):
        return obj
    quantified = [name for name, variable in obj.variables.items()
                  if is_quantity(variable.data)]
    if not quantified:
        return obj
    out = obj.copy(deep=False)
    for name in quantified:
        variable = obj.variables[name]
        attrs = {**variable.attrs, "units": _unit_text(variable.data.units)}
        replaced = xr.Variable(variable.dims, np.asarray(variable.data.magnitude), attrs,
                               variable.encoding)
        if name in obj.dims:
            out = out.assign_coords({name: replaced})
        else:
            out[name] = replaced
    return out


# ---------------------------------------------------------------------------- time axes
#: Names of a time coordinate without CF attributes (as cf-xarray's ``guess_coord_axis``).
TIME_NAMES = ("time", "t", "times", "date", "datetime")


def is_datetime_like(values: Any) -> bool:
    """Whether ``values`` are datetimes: ``datetime64`` or cftime objects.

    Examples
    --------
    >>> is_datetime_like(np.array(["2011-03-11"], dtype="datetime64[ns]"))
    True
    >>> is_datetime_like(np.arange(3.0))
    False
    """
    array = np.asarray(getattr(values, "values", values))
    if np.issubdtype(array.dtype, np.datetime64):
        return True
    return (array.dtype == object and array.size > 0 and cftime is not None
            and isinstance(array.flat[0], cftime.datetime))


def find_time_name(obj: Any) -> str | None:
    """The name of the time coordinate of ``obj``, or ``None``.

    The one lookup of a time axis in xldensf, in this order: a coordinate with CF
    ``axis: T`` or ``standard_name: time`` (cf-xarray's criteria); else a datetime64,
    cftime or timedelta64 coordinate; else one whose ``units`` contain ``since``; else one
    named ``time`` or ``t`` (as cf-xarray's ``guess_coord_axis`` would guess).

    Examples
    --------
    >>> ds = xr.Dataset(coords={"k": ("k", [0, 1], {"axis": "X"}), "time": [0.0, 0.1]})
    >>> find_time_name(ds)
    'time'
    """
    coords = getattr(obj, "coords", {})
    for key in ("T", "time"):
        found = obj.cf.axes.get(key, []) if key == "T" else obj.cf.coordinates.get(key, [])
        found = [name for name in found if name in coords]
        if found:
            return str(found[0])
    one_d = [(str(name), coord) for name, coord in coords.items() if coord.ndim == 1]
    for name, coord in one_d:
        if is_datetime_like(coord) or np.issubdtype(coord.dtype, np.timedelta64):
            return name
    for name, coord in one_d:
        if " since " in str(coord.attrs.get("units", "")):
            return name
    for name, _ in one_d:
        if name.lower() in TIME_NAMES:
            return name
    return None


def time_coordinate(obj: Any, what: str = "time axis") -> xr.DataArray:
    """The 1-D time coordinate of ``obj`` (see :func:`find_time_name`).

    Raises
    ------
    DataError
        No time coordinate, or one that is not 1-D.

    Examples
    --------
    >>> ds = xr.Dataset(coords={"t": ("t", [0.0, 1.0])})
    >>> time_coordinate(ds).name
    't'
    """
    name = find_time_name(obj)
    if name is None:
        found = {str(k): dict(v.attrs) for k, v in getattr(obj, "coords", {}).items()}
        raise DataError(expected_found(
            what, "a time coordinate (CF axis T or standard_name time, datetimes, units "
            "'... since ...', or a coordinate named 'time' or 't')", found))
    coordinate = obj[name]
    if coordinate.ndim != 1:
        raise DataError(expected_found(f"time coordinate {name!r}", "1-D", coordinate.dims))
    return coordinate


def parse_datetime(value: Any, what: str = "start", calendar: str | None = None) -> Any:
    """``value`` (ISO string, ``datetime``, ``numpy.datetime64``, cftime) as one datetime:
    ``numpy.datetime64[ns]``, or a cftime object (given, or a string with a ``calendar``).

    Examples
    --------
    >>> parse_datetime("2011-03-11T05:46:00")
    np.datetime64('2011-03-11T05:46:00.000000000')
    >>> parse_datetime("2000-02-30", calendar="360_day").calendar
    '360_day'
    """
    if cftime is not None and isinstance(value, cftime.datetime):
        return value
    if calendar is not None and cftime is not None and isinstance(value, str):
        try:
            return cftime.num2date(0, f"seconds since {value}", calendar)
        except (TypeError, ValueError) as err:
            raise ParameterError(expected_found(what, f"a datetime in calendar {calendar!r}",
                                                value)) from err
    try:
        parsed = np.datetime64(value, "ns")
    except (TypeError, ValueError) as err:
        raise ParameterError(expected_found(what, "an ISO datetime string, datetime or "
                                            "numpy.datetime64", value)) from err
    if np.isnat(parsed):
        raise ParameterError(expected_found(what, "a datetime", value))
    return parsed


def duration_seconds(duration: Any, what: str = "duration") -> float:
    """A duration (``"5 days"``, a pint Quantity, a ``timedelta64``) in seconds.

    Examples
    --------
    >>> duration_seconds("6 hours")
    21600.0
    """
    if isinstance(duration, np.timedelta64):
        return float(duration / np.timedelta64(1, "ns")) * 1e-9
    quantity = duration if is_quantity(duration) else None
    if quantity is None:
        try:
            quantity = units.Quantity(duration)
        except Exception as err:
            raise UnitsError(expected_found(what, "a duration such as '6 hours'",
                                            duration)) from err
    return float(quantity_magnitude(quantity, "s", what))


def elapsed_seconds(times: Any, origin: Any) -> np.ndarray:
    """Seconds from ``origin`` to each datetime of ``times`` (datetime64 or cftime).

    Examples
    --------
    >>> times = np.array(["2011-03-11T06:00", "2011-03-11T07:00"], dtype="datetime64[ns]")
    >>> elapsed_seconds(times, parse_datetime("2011-03-11T06:00")).tolist()
    [0.0, 3600.0]
    """
    values = np.asarray(getattr(times, "values", times))
    if np.issubdtype(values.dtype, np.datetime64):
        origin = np.datetime64(origin, "ns")
        return (values.astype("datetime64[ns]") - origin) / np.timedelta64(1, "ns") * 1e-9
    return np.array([(value - origin).total_seconds() for value in values.ravel()],
                    dtype=np.float64).reshape(values.shape)


def datetimes_after(origin: Any, seconds: Any) -> np.ndarray:
    """The datetimes ``origin + seconds`` (datetime64[ns], or cftime for a cftime origin).

    Examples
    --------
    >>> datetimes_after(parse_datetime("2011-03-11"), [0.0, 1800.0])[1]
    np.datetime64('2011-03-11T00:30:00.000000000')
    """
    seconds = np.asarray(seconds, dtype=np.float64)
    if cftime is not None and isinstance(origin, cftime.datetime):
        return np.array([origin + datetime.timedelta(seconds=float(s)) for s in seconds.ravel()],
                        dtype=object).reshape(seconds.shape)
    steps = np.round(seconds * 1e9).astype("int64").astype("timedelta64[ns]")
    return np.datetime64(origin, "ns") + steps


def time_encoding(origin: Any, times: Any = None) -> dict[str, str]:
    """CF netCDF encoding of datetimes: ``<unit> since <origin>`` in the standard calendar
    (or the cftime calendar of ``origin``), the unit the coarsest of seconds, milliseconds,
    microseconds and nanoseconds in which every one of ``times`` is a whole number (so the
    times are written as integers, exactly).

    Examples
    --------
    >>> time_encoding(parse_datetime("2011-03-11T05:46:00"))["units"]
    'seconds since 2011-03-11T05:46:00'
    >>> start = np.datetime64("2011-03-11T05:46:00", "ns")
    >>> time_encoding(start, start + np.timedelta64(200, "ms") * np.arange(3))["units"]
    'milliseconds since 2011-03-11T05:46:00'
    """
    if cftime is not None and isinstance(origin, cftime.datetime):
        return {"units": f"seconds since {origin.isoformat()}", "calendar": origin.calendar}
    whole_seconds = np.datetime64(origin, "s")
    text = str(np.datetime_as_string(whole_seconds))
    unit = "seconds"
    if times is not None:
        values = np.asarray(times)
        if np.issubdtype(values.dtype, np.datetime64):
            values = values[~np.isnat(values)]
            offsets = (values.astype("datetime64[ns]")
                       - whole_seconds.astype("datetime64[ns]")).astype(np.int64)
            units = (("seconds", 10**9), ("milliseconds", 10**6), ("microseconds", 10**3),
                     ("nanoseconds", 1))
            unit = next(name for name, nanoseconds in units
                        if not (offsets % nanoseconds).any())
    return {"units": f"{unit} since {text}", "calendar": "proleptic_gregorian"}
