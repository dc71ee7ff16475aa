"""One axis of a rectilinear grid, and the CF lookup that finds the axes of a Dataset.

:func:`cf_roles` maps CF roles (``longitude``, ``latitude``, ``X``, ``Y``, ``T``) to the
names of a Dataset's coordinates (cf-xarray's criteria, then its name-based guess);
:class:`GridAxis` holds one axis' values, units and period, and the per-axis operations of
the interpolation (wrapping, the linear stencil, the range check).

Examples
--------
>>> axis = GridAxis("k", "k", "X", np.arange(4.0), "1", period=4.0)
>>> axis.wrap(np.array([-0.5, 4.25])).tolist()
[3.5, 0.25]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cf_xarray  # noqa: F401 - registers the .cf accessor
import numpy as np
import xarray as xr

from ..errors import DataError, expected_found

__all__ = ["GridAxis", "cf_roles", "describe_coordinates", "ROLES", "FULL_TURN_DEGREES",
           "RELATIVE_TOLERANCE"]

#: CF roles of grid and time axes that :func:`cf_roles` looks up.
ROLES = ("longitude", "latitude", "X", "Y", "T")
#: A full turn of longitude, in degrees.
FULL_TURN_DEGREES = 360.0
#: Round-off allowance when comparing coordinates and periods.
RELATIVE_TOLERANCE = 1e-9


# ---------------------------------------------------------------------------- CF lookup
def cf_roles(obj: xr.Dataset) -> dict[str, str]:
    """Map CF roles (``longitude``, ``latitude``, ``X``, ``Y``, ``T``) to variable names.

    Uses cf-xarray's attribute criteria; where they find no spatial axis, cf-xarray's
    name-based guess (``guess_coord_axis``) is tried on a copy.

    Examples
    --------
    >>> ds = xr.Dataset(coords={"lon": ("lon", [0.0, 90.0], {"units": "degrees_east"})})
    >>> cf_roles(ds)
    {'longitude': 'lon'}
    """

    def lookup(dataset: xr.Dataset) -> dict[str, str]:
        found: dict[str, str] = {}
        for key, names in {**dataset.cf.axes, **dataset.cf.coordinates}.items():
            if key in ROLES and names:
                found.setdefault(key, names[0])
        if "T" not in found and "time" in dataset.cf.coordinates:
            found["T"] = dataset.cf.coordinates["time"][0]
        return found

    found = lookup(obj)
    if not {"X", "longitude", "latitude"} & set(found):
        guessed = lookup(obj.cf.guess_coord_axis(verbose=False))
        found = {**guessed, **found}
    return found


def describe_coordinates(obj: xr.Dataset) -> dict[str, dict[str, Any]]:
    """The CF attributes (standard_name, units, axis) of each coordinate, for messages.

    Examples
    --------
    >>> describe_coordinates(xr.Dataset(coords={"k": ("k", [0, 1], {"axis": "X"})}))
    {'k': {'axis': 'X'}}
    """
    keys = ("standard_name", "units", "axis")
    return {
        str(name): {key: var.attrs[key] for key in keys if key in var.attrs}
        for name, var in obj.variables.items()
        if name not in getattr(obj, "data_vars", {})
    }


# ---------------------------------------------------------------------------- axis
@dataclass(frozen=True, eq=False)
class GridAxis:
    """One spatial axis of a rectilinear grid.

    Parameters
    ----------
    name
        Coordinate name in the Dataset (e.g. ``"x"``, ``"latitude"``, ``"k"``).
    dim
        Dimension the coordinate lies along.
    role
        CF role: ``"X"``, ``"Y"``, ``"longitude"`` or ``"latitude"``.
    values
        Coordinate values in the grid's units, in the Dataset's order (ascending or
        descending, not necessarily uniform).
    units
        Unit string of the values (``None`` if the coordinate has none).
    period
        Period in the grid's units, or ``None`` for a bounded axis.
    attrs
        CF attributes of the coordinate (copied onto station positions).
    """

    name: str
    dim: str
    role: str
    values: np.ndarray
    units: str | None
    period: float | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Number of grid points along the axis."""
        return len(self.values)

    @property
    def low(self) -> float:
        """Smallest coordinate value."""
        return float(np.min(self.values))

    @property
    def high(self) -> float:
        """Largest coordinate value."""
        return float(np.max(self.values))

    @property
    def extent(self) -> tuple[float, float]:
        """Interval a position may take: ``[low, low + period)`` if periodic."""
        if self.period is not None:
            return self.low, self.low + self.period
        return self.low, self.high

    def uniform_spacing(self) -> float | None:
        """The spacing if the values are uniformly spaced, else ``None``."""
        steps = np.diff(np.sort(self.values))
        if len(steps) == 0 or steps[0] <= 0:
            return None
        if np.allclose(steps, steps[0], rtol=1e-6, atol=0):
            return float(steps[0])
        return None

    def wrap(self, positions: np.ndarray) -> np.ndarray:
        """Bring positions into :attr:`extent` on periodic axes and into the grid's
        360-degree window on longitudes; positions already inside are left untouched."""
        turn = self.period if self.period is not None else (
            FULL_TURN_DEGREES if self.role == "longitude" else None)
        if turn is None:
            return positions
        low = self.low
        outside = (positions < low) | (positions >= low + turn)
        return np.where(outside, low + np.mod(positions - low, turn), positions)

    def stencil(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Linear interpolation stencil of (wrapped, in-range) ``positions``.

        Returns
        -------
        lower, upper, weight_upper
            Indices of the two neighbouring grid points (in the Dataset's order) and the
            weight of the upper one; the lower one has ``1 - weight_upper``.
        """
        order = np.argsort(self.values, kind="stable")
        ascending = self.values[order].astype(np.float64)
        n = len(ascending)
        if self.period is not None:
            nodes = np.append(ascending, ascending[0] + self.period)
            interval = np.clip(np.searchsorted(nodes, positions, side="right") - 1, 0, n - 1)
            upper = order[(interval + 1) % n]
        else:
            nodes = ascending
            interval = np.clip(np.searchsorted(nodes, positions, side="right") - 1, 0, n - 2)
            upper = order[interval + 1]
        weight = (positions - nodes[interval]) / (nodes[interval + 1] - nodes[interval])
        return order[interval], upper, np.clip(weight, 0.0, 1.0)

    def check_inside(self, positions: np.ndarray) -> None:
        """Raise :class:`~xldensf.errors.DataError` if a (wrapped) position lies outside a
        bounded axis (a round-off allowance of the range is accepted; NaN passes).

        Examples
        --------
        >>> axis = GridAxis("x", "x", "X", np.array([0.0, 10.0]), "m")
        >>> axis.check_inside(np.array([0.0, 10.0, np.nan]))
        >>> axis.check_inside(np.array([11.0]))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        xldensf.errors.DataError: station x [m]: expected values in [0, 10] ..., found 11.0
        """
        if self.period is not None:
            return
        low, high = self.extent
        slack = RELATIVE_TOLERANCE * (high - low)
        outside = (positions < low - slack) | (positions > high + slack)  # NaN compares False
        if outside.any():
            raise DataError(
                expected_found(f"station {self.name} [{self.units}]",
                               f"values in [{low:g}, {high:g}] (the grid's range; the axis is "
                               "not periodic)", float(positions[outside][0]))
            )

