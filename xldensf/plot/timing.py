"""Times of the figures: a readable title of one time, and one frame chosen by label or
position.

Examples
--------
>>> import numpy as np, xarray as xr
>>> axis = xr.DataArray(np.array([0.0, 3600.0, 7200.0]), dims="time", name="time",
...                     attrs={"units": "s"})
>>> frame_index(axis, time="1 hour")
1
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import xarray as xr

from ..conventions import (
    convert_values,
    duration_seconds,
    elapsed_seconds,
    is_datetime_like,
    parse_datetime,
    parse_units,
    units,
)
from ..errors import ParameterError, UnitsError, expected_found

__all__ = ["time_title", "frame_index"]


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
            moment = value.item()
            spec = "minutes" if moment.second == 0 and moment.microsecond == 0 else "seconds"
            text = moment.isoformat(sep=" ", timespec=spec)
        return f"{time.name} = {text}"
    if np.issubdtype(value.dtype, np.timedelta64):
        value, unit_text = value / np.timedelta64(1, "s"), "s"
    else:
        unit_text = str(time.attrs.get("units", ""))
    number = float(value)
    if _is_time_unit(unit_text):
        seconds = float(convert_values(number, unit_text, "s"))
        if abs(seconds) >= 3600:
            return f"{time.name} = {seconds / 3600:.4g} h"
        return f"{time.name} = {seconds:.4g} s"
    suffix = f" {unit_text}" if unit_text and unit_text != "1" else ""
    return f"{time.name} = {number:g}{suffix}"


def _is_time_unit(text: str) -> bool:
    try:
        return bool(text) and parse_units(text).dimensionality == units.s.dimensionality
    except UnitsError:
        return False


def _distances(axis: xr.DataArray, time: Any) -> np.ndarray:
    """Distance of each frame of ``axis`` from the label ``time`` (seconds, or axis units)."""
    values = np.asarray(axis.values)
    what = f"time label for the {axis.name!r} axis"
    if is_datetime_like(values):
        if isinstance(time, numbers.Number):
            raise ParameterError(expected_found(what, "a datetime (ISO string, "
                                                "numpy.datetime64 or cftime)", time))
        if np.issubdtype(values.dtype, np.datetime64):
            if hasattr(time, "calendar"):  # a cftime datetime on a datetime64 axis
                time = time.isoformat()
            target = parse_datetime(time, what)
        else:
            calendar = values.flat[0].calendar
            text = str(time) if isinstance(time, np.datetime64) else time
            target = parse_datetime(text, what, calendar=calendar if isinstance(text, str)
                                    else None)
        try:
            return np.abs(elapsed_seconds(values, target))
        except TypeError as err:  # cftime datetimes of another calendar
            raise ParameterError(expected_found(what, f"a datetime in the axis' calendar "
                                                f"{values.flat[0].calendar!r}", time)) from err
    if np.issubdtype(values.dtype, np.timedelta64):
        seconds = values / np.timedelta64(1, "s")
        target = time if isinstance(time, numbers.Real) else duration_seconds(time, what)
        return np.abs(seconds - float(target))
    unit_text = str(axis.attrs.get("units", ""))
    if isinstance(time, numbers.Real) and not isinstance(time, bool):
        target = float(time)
    elif _is_time_unit(unit_text) and isinstance(time, str | np.timedelta64):
        target = float(convert_values(duration_seconds(time, what), "s", unit_text))
    else:
        raise ParameterError(expected_found(what, f"a number in {unit_text or 'axis units'}"
                                            " (or a duration such as '6 hours')", time))
    return np.abs(values.astype(np.float64) - target)


def frame_index(axis: xr.DataArray, time: Any = None, frame: int | None = None,
                default: int = -1) -> int:
    """The position of one frame of a 1-D time ``axis``, by label or by position.

    Parameters
    ----------
    axis
        The time coordinate (datetime64, cftime, timedelta64 or numbers).
    time
        A time label: an ISO datetime string, ``numpy.datetime64`` or cftime datetime on a
        datetime axis; a number in the axis' units (or a duration string such as
        ``"6 hours"`` when the units are a time unit) on a numeric axis. The nearest frame
        is taken; a label farther than half the largest frame spacing from every frame is
        refused. A small Python ``int`` that is a valid position but not a label of the
        axis is refused as ambiguous (pass ``frame=`` for a position).
    frame
        An integer position (negative counts from the end). Give ``time`` or ``frame``.
    default
        The position when neither is given.

    Returns
    -------
    int
        A non-negative position along ``axis``.

    Raises
    ------
    ParameterError
        Both given, a position out of range, a label of the wrong kind or far from every
        frame.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> axis = xr.DataArray(np.array(["2011-03-11T00:00", "2011-03-11T06:00"],
    ...                              dtype="datetime64[ns]"), dims="time", name="time")
    >>> frame_index(axis, time="2011-03-11T05:00")
    1
    >>> frame_index(axis, frame=-2)
    0
    """
    size = axis.size
    if time is not None and frame is not None:
        raise ParameterError(expected_found("time selection", "time= (a label) or frame= "
                                            "(a position), not both", (time, frame)))
    if time is None:
        position = default if frame is None else frame
        if isinstance(position, bool) or not isinstance(position, numbers.Integral) or \
                not -size <= int(position) < size:
            raise ParameterError(expected_found(f"frame of the {axis.name!r} axis",
                                                f"an integer in [{-size}, {size - 1}]",
                                                position))
        return int(position) % size
    distance = _distances(axis, time)
    position = int(np.argmin(distance))
    if type(time) is int and -size <= time < size and distance[position] != 0:
        raise ParameterError(expected_found(
            "time", f"a label of the {axis.name!r} axis (time= selects by label; pass "
            f"frame={time} for the position, or time={float(time)} for the label)", time))
    steps = np.diff(np.sort(_distances(axis, axis.values[0]))) if size > 1 else np.zeros(1)
    tolerance = 0.5 * float(np.max(steps))
    if distance[position] > tolerance:
        first, last = (time_title(axis[i]).split(" = ", 1)[-1] for i in (0, -1))
        raise ParameterError(expected_found(
            "time", f"a time within half a frame spacing of the axis ({first} ... {last})",
            time))
    return position
