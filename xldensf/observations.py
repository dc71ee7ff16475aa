"""Station observations: grid geometry, station layouts, interpolation and noise.

Three layers, as everywhere in xldensf:

1. :class:`InterpolationOperator` -- a sparse linear map (torch) from gridded fields
   ``(batch, *grid)`` to station values ``(batch, n_stations)``: bilinear in the grid
   coordinates (linear in 1-D), periodic where the domain is periodic, differentiable and
   device-agnostic. The filters use it as the observation operator ``H``.
2. :class:`GridGeometry` -- the axes of a gridded Dataset found by CF meaning (cf-xarray),
   their units and periodicity, station layouts in the grid's units and distances between
   points (for localisation).
3. :func:`observe` -- the xarray wrapper behind ``ds.ldensf.observe``: a CF discrete
   sampling geometry Dataset (``featureType = "timeSeries"``, dims ``(time, station)``)
   with the observation error standard deviation as an ancillary variable.

Periodicity rule
----------------
An axis is periodic, with period ``n * spacing`` (uniform spacing required), when

1. the Dataset attribute ``xldensf_periodic`` lists it (axis letters ``X``/``Y`` or
   coordinate names, separated by spaces; ``"none"`` marks no periodic axis); otherwise
2. the Dataset is an xldensf simulation (attribute ``xldensf_case``): ``lorenz96`` is
   periodic in ``k``, ``kolmogorov`` in ``x`` and ``y``, ``atmosphere`` in longitude,
   ``tsunami`` nowhere (walls); otherwise
3. the coordinates span a full period: a longitude whose ``n * spacing`` is 360 degrees,
   or a dimensionless coordinate whose ``n * spacing`` is ``2 pi`` (e.g. Kolmogorov flow
   on ``[0, 2 pi)``).

Examples
--------
>>> import xldensf as xl
>>> truth = xl.simulate("lorenz96", runs=1, seed=0, preset="small").isel(run=0)
>>> obs = observe(truth, 8, noise=0.1, seed=0)
>>> obs["x"].dims, obs.attrs["featureType"]
(('time', 'station'), 'timeSeries')
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr

from ._version import __version__
from .conventions import STATION_DIM, convert_values, parse_units, units
from .errors import DataError, ParameterError, UnitsError, UnknownNameError, expected_found
from .options import resolve_seed

__all__ = [
    "EARTH_RADIUS",
    "GridAxis",
    "GridGeometry",
    "InterpolationOperator",
    "StationPositions",
    "observe",
    "random_layout",
    "regular_layout",
]

#: Radius of the sphere used for great-circle distances, in metres (Williamson et al. 1992).
EARTH_RADIUS = 6.37122e6

#: Periodic axes (roles) of xldensf's own cases, read from the ``xldensf_case`` attribute.
CASE_PERIODIC_ROLES: dict[str, tuple[str, ...]] = {
    "lorenz96": ("X",),
    "kolmogorov": ("X", "Y"),
    "atmosphere": ("longitude",),
    "tsunami": (),
}

_ROLES = ("longitude", "latitude", "X", "Y", "T")
_FULL_TURN_DEGREES = 360.0
_RELATIVE_TOLERANCE = 1e-9  # round-off allowance when comparing coordinates and periods


# ---------------------------------------------------------------------------- CF lookup
def _roles(obj: xr.Dataset) -> dict[str, str]:
    """Map CF roles (``longitude``, ``latitude``, ``X``, ``Y``, ``T``) to variable names.

    Uses cf-xarray's attribute criteria; where they find no spatial axis, cf-xarray's
    name-based guess (``guess_coord_axis``) is tried on a copy.
    """

    def lookup(dataset: xr.Dataset) -> dict[str, str]:
        found: dict[str, str] = {}
        for key, names in {**dataset.cf.axes, **dataset.cf.coordinates}.items():
            if key in _ROLES and names:
                found.setdefault(key, names[0])
        if "T" not in found and "time" in dataset.cf.coordinates:
            found["T"] = dataset.cf.coordinates["time"][0]
        return found

    found = lookup(obj)
    if not {"X", "longitude", "latitude"} & set(found):
        guessed = lookup(obj.cf.guess_coord_axis(verbose=False))
        found = {**guessed, **found}
    return found


def _describe_coordinates(obj: xr.Dataset) -> dict[str, dict[str, Any]]:
    keys = ("standard_name", "units", "axis")
    return {
        str(name): {key: var.attrs[key] for key in keys if key in var.attrs}
        for name, var in obj.variables.items()
        if name not in getattr(obj, "data_vars", {})
    }


def _is_quantity(value: Any) -> bool:
    return hasattr(value, "magnitude") and hasattr(value, "units")


# ---------------------------------------------------------------------------- geometry
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
        return len(self.values)

    @property
    def low(self) -> float:
        return float(np.min(self.values))

    @property
    def high(self) -> float:
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
            _FULL_TURN_DEGREES if self.role == "longitude" else None)
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


@dataclass(frozen=True, eq=False)
class StationPositions:
    """Station positions in a grid's units.

    Parameters
    ----------
    values
        ``(n_stations, n_axes)`` for fixed stations or ``(n_times, n_stations, n_axes)``
        for moving ones; NaN marks a missing position.
    station
        Station identifiers, ``(n_stations,)``.
    kind
        Layout kind recorded in the attributes (``"random"``, ``"regular 10x10"``,
        ``"custom"``).
    """

    values: np.ndarray
    station: np.ndarray
    kind: str

    @property
    def moving(self) -> bool:
        return self.values.ndim == 3

    @property
    def n_stations(self) -> int:
        return self.values.shape[-2]


@dataclass(frozen=True, eq=False)
class GridGeometry:
    """Geometry of a rectilinear grid: axes, units, periodicity and distances.

    Build it with :meth:`from_dataset` (axes found by CF meaning) or
    :meth:`from_simulator`. The order of :attr:`axes` is the order of the grid
    dimensions in the Dataset's variables, which is also the order in which
    :class:`InterpolationOperator` flattens a field (C order).

    Parameters
    ----------
    axes
        One :class:`GridAxis` per spatial dimension (one or two).
    sphere
        ``True`` for latitude/longitude grids (distances are great-circle distances).
    radius
        Sphere radius in metres.

    Examples
    --------
    >>> import xldensf as xl
    >>> truth = xl.simulate("lorenz96", runs=1, seed=0, preset="small")
    >>> geometry = GridGeometry.from_dataset(truth)
    >>> geometry.dims, geometry.axes[0].period
    (('k',), 40.0)
    >>> geometry.distances([[0.0]], [[1.0], [39.0]]).tolist()  # periodic: 39 is next to 0
    [[1.0, 1.0]]
    """

    axes: tuple[GridAxis, ...]
    sphere: bool = False
    radius: float = EARTH_RADIUS

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dataset(cls, dataset: xr.Dataset | xr.DataArray) -> GridGeometry:
        """Find the spatial axes of ``dataset`` by CF meaning and decide periodicity.

        Raises
        ------
        DataError
            If no latitude/longitude pair or X (and Y) axis is recognisable, or an axis
            is not a 1-D coordinate with at least two distinct values.
        """
        if isinstance(dataset, xr.DataArray):
            dataset = dataset.to_dataset(name=dataset.name or "field")
        roles = _roles(dataset)
        if "latitude" in roles and "longitude" in roles:
            wanted, sphere = ("latitude", "longitude"), True
        elif "X" in roles:
            wanted, sphere = (("X", "Y") if "Y" in roles else ("X",)), False
        else:
            raise DataError(
                expected_found(
                    "grid axes",
                    "latitude and longitude coordinates, or an X (and Y) axis, recognisable by "
                    "cf-xarray (standard_name, units such as degrees_north, or axis attribute)",
                    _describe_coordinates(dataset),
                )
            )
        axes = {role: cls._axis(dataset, roles[role], role) for role in wanted}
        periodic = cls._periodic_roles(dataset, axes)
        axes = {
            role: cls._with_period(axis, role in periodic) for role, axis in axes.items()
        }
        order = _grid_dim_order(dataset, [axis.dim for axis in axes.values()])
        by_dim = {axis.dim: axis for axis in axes.values()}
        return cls(axes=tuple(by_dim[dim] for dim in order), sphere=sphere)

    @classmethod
    def from_simulator(cls, model: Any) -> GridGeometry:
        """Geometry of an xldensf simulator's grid (its case decides periodicity).

        Examples
        --------
        >>> import xldensf as xl
        >>> GridGeometry.from_simulator(xl.simulator("lorenz96", preset="small")).shape
        (40,)
        """
        coords = {c.name: (c.name, np.asarray(c.values), c.attrs) for c in model.grid_coordinates}
        layout = {"grid": (model.grid_dims, np.broadcast_to(0.0, model.grid_shape))}  # dim order
        return cls.from_dataset(xr.Dataset(layout, coords=coords,
                                           attrs={"xldensf_case": model.case}))

    @staticmethod
    def _axis(dataset: xr.Dataset, name: str, role: str) -> GridAxis:
        coord = dataset[name]
        if coord.ndim != 1:
            raise DataError(
                expected_found(f"{role} coordinate {name!r}", "1-D (rectilinear grid)",
                               f"dims {coord.dims}")
            )
        values = np.asarray(coord.values, dtype=np.float64)
        if len(values) < 2 or len(np.unique(values)) != len(values):
            raise DataError(
                expected_found(f"{role} coordinate {name!r}", "at least 2 distinct values",
                               values.tolist()[:5])
            )
        return GridAxis(name=str(name), dim=str(coord.dims[0]), role=role, values=values,
                        units=coord.attrs.get("units"), attrs=dict(coord.attrs))

    @staticmethod
    def _periodic_roles(dataset: xr.Dataset, axes: Mapping[str, GridAxis]) -> set[str]:
        declared = dataset.attrs.get("xldensf_periodic")
        if declared is not None:
            tokens = set(str(declared).replace(",", " ").split()) - {"none"}
            known = {name for role, axis in axes.items() for name in (role, axis.name)}
            if tokens - known:
                raise DataError(
                    expected_found("attribute xldensf_periodic", sorted(known) + ["none"],
                                   declared)
                )
            return {role for role, axis in axes.items() if {role, axis.name} & tokens}
        case = dataset.attrs.get("xldensf_case")
        if case in CASE_PERIODIC_ROLES:
            return set(CASE_PERIODIC_ROLES[case]) & set(axes)
        periodic = set()
        for role, axis in axes.items():
            spacing = axis.uniform_spacing()
            if spacing is None:
                continue
            span = spacing * axis.size
            if role == "longitude":
                full_turn = _FULL_TURN_DEGREES
            elif axis.units is None or parse_units(axis.units).dimensionless:
                full_turn = 2 * math.pi
            else:
                continue
            if math.isclose(span, full_turn, rel_tol=1e-6):
                periodic.add(role)
        return periodic

    @staticmethod
    def _with_period(axis: GridAxis, periodic: bool) -> GridAxis:
        if not periodic:
            return axis
        spacing = axis.uniform_spacing()
        if spacing is None:
            raise DataError(
                expected_found(f"periodic axis {axis.name!r}", "uniformly spaced values",
                               axis.values.tolist()[:5])
            )
        return GridAxis(axis.name, axis.dim, axis.role, axis.values, axis.units,
                        spacing * axis.size, axis.attrs)

    # ------------------------------------------------------------------ description
    @property
    def dims(self) -> tuple[str, ...]:
        """Grid dimension names, in field order."""
        return tuple(axis.dim for axis in self.axes)

    @property
    def shape(self) -> tuple[int, ...]:
        """Grid shape, in field order."""
        return tuple(axis.size for axis in self.axes)

    @property
    def size(self) -> int:
        """Number of grid points."""
        return int(np.prod(self.shape))

    def axis(self, role: str) -> GridAxis:
        """The axis with CF role ``role`` (``X``, ``Y``, ``longitude``, ``latitude``)."""
        for axis in self.axes:
            if axis.role == role:
                return axis
        raise UnknownNameError(expected_found("axis role", [a.role for a in self.axes], role))

    @property
    def horizontal_axes(self) -> tuple[GridAxis, ...]:
        """Axes in (X, Y) order: longitude before latitude."""
        rank = {"X": 0, "longitude": 0, "Y": 1, "latitude": 1}
        return tuple(sorted(self.axes, key=lambda axis: rank[axis.role]))

    def grid_points(self) -> np.ndarray:
        """Coordinates of every grid point, ``(size, n_axes)``, in field (C) order."""
        mesh = np.meshgrid(*[axis.values for axis in self.axes], indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=-1)

    # ------------------------------------------------------------------ distances
    @property
    def distance_units(self) -> str:
        """Units of :meth:`distances`: metres for physical grids, else the grid's units."""
        if self.sphere:
            return "m"
        first = self.axes[0].units
        if first is not None and parse_units(first).dimensionality == units.m.dimensionality:
            return "m"
        return first or "1"

    def distances(self, points_a: Any, points_b: Any) -> torch.Tensor:
        """Pairwise distances between points ``(n_a, n_axes)`` and ``(n_b, n_axes)``.

        Positions are in the grid's units and axis order. On the sphere the distance is
        the great-circle distance on :attr:`radius` (metres); on planar grids it is the
        Euclidean distance with the minimum-image convention on periodic axes, converted
        to metres when the axes have length units (see :attr:`distance_units`).

        Returns
        -------
        torch.Tensor
            ``(n_a, n_b)``, float64 (on the device of ``points_a`` if it is a tensor).
        """
        a = torch.as_tensor(np.asarray(points_a, dtype=np.float64) if not isinstance(
            points_a, torch.Tensor) else points_a, dtype=torch.float64)
        b = torch.as_tensor(np.asarray(points_b, dtype=np.float64) if not isinstance(
            points_b, torch.Tensor) else points_b, dtype=torch.float64, device=a.device)
        if self.sphere:
            lat_index = [axis.role for axis in self.axes].index("latitude")
            lon_index = 1 - lat_index
            lat_a = torch.deg2rad(a[:, lat_index, None])
            lon_a = torch.deg2rad(a[:, lon_index, None])
            lat_b = torch.deg2rad(b[None, :, lat_index])
            lon_b = torch.deg2rad(b[None, :, lon_index])
            haversine = torch.sin((lat_b - lat_a) / 2) ** 2 + (
                torch.cos(lat_a) * torch.cos(lat_b) * torch.sin((lon_b - lon_a) / 2) ** 2)
            return 2 * self.radius * torch.asin(torch.sqrt(haversine.clamp(0.0, 1.0)))
        squared = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64, device=a.device)
        for i, axis in enumerate(self.axes):
            difference = b[None, :, i] - a[:, i, None]
            if axis.period is not None:
                difference = difference - axis.period * torch.round(difference / axis.period)
            if self.distance_units == "m" and axis.units is not None:
                difference = difference * float(convert_values(np.array(1.0), axis.units, "m"))
            squared = squared + difference**2
        return torch.sqrt(squared)

    # ------------------------------------------------------------------ layouts
    def random_positions(self, n_stations: int, rng: np.random.Generator) -> np.ndarray:
        """``n_stations`` positions drawn uniformly over the domain, ``(n, n_axes)``.

        Uniform in area on the sphere (uniform in sin(latitude) between the grid's
        extreme latitudes), uniform in each coordinate otherwise; periodic axes draw over
        a full period, bounded axes between the first and last grid coordinate.
        """
        n_stations = _positive_int("stations", n_stations)
        columns = []
        for axis in self.axes:
            low, high = axis.extent
            uniform = rng.random(n_stations)
            if axis.role == "latitude":
                sin_low, sin_high = np.sin(np.deg2rad([low, high]))
                columns.append(np.rad2deg(np.arcsin(sin_low + (sin_high - sin_low) * uniform)))
            else:
                columns.append(low + (high - low) * uniform)
        return np.stack(columns, axis=-1)

    def regular_positions(self, counts: Sequence[int]) -> np.ndarray:
        """A regular layout with ``counts`` stations per axis, in (X, Y) order.

        Stations sit at the centres of ``counts[i]`` equal cells spanning each axis
        (a full period on periodic axes), as in the LD-EnSF 10 x 10 layouts.
        Returns ``(prod(counts), n_axes)`` in field axis order, X varying fastest.
        """
        horizontal = self.horizontal_axes
        if len(counts) != len(horizontal):
            raise ParameterError(
                expected_found("regular layout counts",
                               f"{len(horizontal)} count(s), one per axis "
                               f"{[axis.role for axis in horizontal]}", list(counts))
            )
        centres = {}
        for axis, count in zip(horizontal, counts):
            count = _positive_int(f"stations along {axis.name!r}", count)
            low, high = axis.extent
            centres[axis.role] = low + (np.arange(count) + 0.5) * (high - low) / count
        grids = np.meshgrid(*[centres[axis.role] for axis in reversed(horizontal)], indexing="ij")
        by_role = {axis.role: g.ravel() for axis, g in zip(reversed(horizontal), grids)}
        return np.stack([by_role[axis.role] for axis in self.axes], axis=-1)

    def layout_dataset(self, positions: np.ndarray, kind: str) -> xr.Dataset:
        """Station layout Dataset: one coordinate per axis along ``station``, with the
        grid coordinate's name and attributes, and a ``station`` id coordinate."""
        station = np.arange(positions.shape[-2])
        return xr.Dataset(
            coords=self.position_coordinates(StationPositions(positions, station, kind)),
            attrs={"xldensf_layout": kind},
        )

    def position_coordinates(
        self, positions: StationPositions, time_dim: str = "time"
    ) -> dict[str, Any]:
        """Coordinates describing ``positions`` (CF discrete sampling geometry)."""
        dims = (time_dim, STATION_DIM) if positions.moving else (STATION_DIM,)
        coords: dict[str, Any] = {
            STATION_DIM: (STATION_DIM, positions.station,
                          {"cf_role": "timeseries_id", "long_name": "station identifier"}),
        }
        for i, axis in enumerate(self.axes):
            attrs = {k: v for k, v in axis.attrs.items() if k in ("units", "standard_name",
                                                                  "long_name", "axis")}
            coords[axis.name] = (dims, positions.values[..., i], attrs)
        return coords

    def station_positions(self, layout: Any, times: xr.DataArray | None = None) -> StationPositions:
        """Read station positions from a layout, converted to the grid's units and wrapped.

        Parameters
        ----------
        layout
            A Dataset, a DataArray or a sequence/mapping of DataArrays holding one
            position variable per grid axis, found by CF meaning (as for the grid), else
            by the grid coordinate's name. Positions without a ``units`` attribute are
            taken to be in the grid's units. Dims ``(station,)`` or, for moving stations,
            ``(time, station)``.
        times
            The observation times: moving positions are selected at these times (by
            coordinate value if the layout has a time coordinate, else by position, in
            which case the lengths must agree).

        Raises
        ------
        DataError
            A position variable is missing, has unusable dims, or lies outside the domain
            on a bounded axis.
        UnitsError
            Position units do not convert to the grid's.
        """
        layout = _as_layout_dataset(layout)
        roles = _roles(layout)
        time_dim = times.dims[0] if times is not None else None
        arrays = []
        for axis in self.axes:
            name = roles.get(axis.role, axis.name if axis.name in layout.variables else None)
            if name is None:
                raise DataError(
                    expected_found(f"station positions for grid axis {axis.name!r} ({axis.role})",
                                   "a variable recognisable by cf-xarray or named like the grid "
                                   "coordinate", _describe_coordinates(layout) | {
                                       str(k): {} for k in layout.data_vars})
                )
            arrays.append(self._convert_position(layout[name], axis))
        try:
            arrays = list(xr.broadcast(*arrays))
        except ValueError as err:
            raise DataError(expected_found("station position dims", "compatible dims",
                                           [a.dims for a in arrays])) from err
        first = arrays[0]
        time_names = {time_dim, "time"}
        if "T" in roles and layout[roles["T"]].ndim == 1:
            time_names.add(layout[roles["T"]].dims[0])
        time_dims = [d for d in first.dims if d in time_names]
        station_dims = [d for d in first.dims if d not in time_dims]
        if len(station_dims) != 1 or len(time_dims) > 1:
            raise DataError(expected_found("station position dims",
                                           "(station,) or (time, station)", first.dims))
        station_dim = station_dims[0]
        if time_dims:
            (moving_time_dim,) = time_dims
            arrays = [self._at_times(a, moving_time_dim, times) for a in arrays]
            arrays = [a.transpose(moving_time_dim, station_dim) for a in arrays]
        values = np.stack([np.asarray(a.values, dtype=np.float64) for a in arrays], axis=-1)
        for i, axis in enumerate(self.axes):
            values[..., i] = axis.wrap(values[..., i])
            self._check_inside(values[..., i], axis)
        if station_dim in layout.coords and layout[station_dim].ndim == 1:
            station = np.asarray(layout[station_dim].values)
        else:
            station = np.arange(first.sizes[station_dim])
        kind = str(layout.attrs.get("xldensf_layout", "custom"))
        if values.ndim == 3 and "moving" not in kind:
            kind = f"{kind} moving"
        return StationPositions(values, station, kind)

    @staticmethod
    def _convert_position(position: xr.DataArray, axis: GridAxis) -> xr.DataArray:
        given = position.attrs.get("units")
        if given is None or axis.units is None or given == axis.units:
            return position.astype(np.float64)
        converted = convert_values(position.values, given, axis.units,
                                   f"units of station positions {position.name!r}")
        return position.copy(data=np.asarray(converted, dtype=np.float64))

    @staticmethod
    def _at_times(position: xr.DataArray, dim: str, times: xr.DataArray | None) -> xr.DataArray:
        if times is None:
            return position
        if dim in position.coords:
            try:
                return position.sel({dim: times.values})
            except KeyError as err:
                raise DataError(
                    expected_found("times of moving station positions",
                                   f"every observation time ({times.size})",
                                   f"{position.sizes[dim]} times missing some of them")
                ) from err
        if position.sizes[dim] != times.size:
            raise DataError(expected_found("number of times of moving station positions",
                                           times.size, position.sizes[dim]))
        return position

    @staticmethod
    def _check_inside(values: np.ndarray, axis: GridAxis) -> None:
        if axis.period is not None:
            return
        low, high = axis.extent
        slack = _RELATIVE_TOLERANCE * (high - low)
        outside = (values < low - slack) | (values > high + slack)  # NaN compares False
        if outside.any():
            raise DataError(
                expected_found(f"station {axis.name} [{axis.units}]",
                               f"values in [{low:g}, {high:g}] (the grid's range; the axis is "
                               "not periodic)", float(values[outside][0]))
            )


def _grid_dim_order(dataset: xr.Dataset, dims: Sequence[str]) -> list[str]:
    """Grid dims in the order the data variables use (the first one that has them all)."""
    for var in dataset.data_vars.values():
        if set(dims) <= set(var.dims):
            return [d for d in var.dims if d in dims]
    return list(dims)[::-1] if len(dims) == 2 else list(dims)


def _as_layout_dataset(layout: Any) -> xr.Dataset:
    if isinstance(layout, xr.Dataset):
        return layout
    if isinstance(layout, xr.DataArray):
        layout = [layout]
    if isinstance(layout, Mapping):
        layout = [xr.DataArray(v).rename(str(k)) for k, v in layout.items()]
    if isinstance(layout, Sequence) and layout and all(
            isinstance(item, xr.DataArray) for item in layout):
        unnamed = [i for i, item in enumerate(layout) if item.name is None]
        if unnamed:
            raise DataError(expected_found("station position DataArrays", "named DataArrays",
                                           f"unnamed DataArray(s) at {unnamed}"))
        return xr.merge([item.reset_coords(drop=True) for item in layout],
                        compat="override", join="exact")
    raise DataError(
        expected_found("stations", "an int (random), 'NxM' (regular), or a Dataset / "
                       "DataArrays of station coordinates", type(layout).__name__)
    )


def _positive_int(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ParameterError(expected_found(what, "a positive integer", value))
    return int(value)


# ---------------------------------------------------------------------------- operator
class InterpolationOperator:
    """Sparse linear observation operator: gridded fields -> station values.

    Bilinear interpolation in the grid coordinates (linear on a 1-D grid), periodic on
    periodic axes. The matrix is a torch sparse COO tensor of shape
    ``(n_stations, n_grid_points)`` with at most ``2 ** n_axes`` entries per row (exact
    zeros are dropped, so a NaN grid value reaches only the stations whose stencil uses
    it). Stations with a NaN position have an empty row and observe NaN.

    Parameters
    ----------
    matrix
        Sparse ``(n_stations, n_grid_points)`` tensor (float64).
    grid_shape
        Shape of one field.
    missing
        Boolean ``(n_stations,)``: stations that observe NaN.

    Examples
    --------
    >>> import torch, xarray as xr
    >>> grid = xr.Dataset(coords={"k": ("k", [0, 1, 2, 3], {"axis": "X", "units": "1"})},
    ...                   attrs={"xldensf_periodic": "X"})
    >>> H = InterpolationOperator.from_grid(GridGeometry.from_dataset(grid), [[0.25], [3.5]])
    >>> H(torch.tensor([[0.0, 4.0, 8.0, 12.0]])).tolist()  # 3.5 wraps between 12 and 0
    [[1.0, 6.0]]
    """

    def __init__(self, matrix: torch.Tensor, grid_shape: tuple[int, ...],
                 missing: torch.Tensor | None = None) -> None:
        self.matrix = matrix.coalesce()
        self.grid_shape = tuple(grid_shape)
        n_stations = self.matrix.shape[0]
        self.missing = (torch.zeros(n_stations, dtype=torch.bool) if missing is None
                        else missing.to(torch.bool))
        self._cache: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_grid(cls, geometry: GridGeometry, station_positions: Any) -> InterpolationOperator:
        """Build the operator for positions ``(n_stations, n_axes)`` in the grid's units
        and axis order (as :meth:`GridGeometry.station_positions` returns them).

        Positions are wrapped on periodic axes; on bounded axes they must lie inside the
        grid (:class:`~xldensf.errors.DataError` otherwise).
        """
        positions = np.array(station_positions, dtype=np.float64, ndmin=2)
        if positions.ndim != 2 or positions.shape[1] != len(geometry.axes):
            raise DataError(expected_found("station positions shape",
                                           f"(n_stations, {len(geometry.axes)})",
                                           positions.shape))
        missing = np.isnan(positions).any(axis=1)
        filled = np.where(missing[:, None], np.array([a.low for a in geometry.axes]), positions)
        stencils = []
        for i, axis in enumerate(geometry.axes):
            wrapped = axis.wrap(filled[:, i])
            GridGeometry._check_inside(wrapped, axis)
            lower, upper, weight = axis.stencil(wrapped)
            stencils.append(((lower, 1.0 - weight), (upper, weight)))
        rows, columns, values = [], [], []
        station_index = np.arange(len(positions))
        for corner in itertools.product(*stencils):
            index = np.ravel_multi_index(tuple(c[0] for c in corner), geometry.shape)
            weight = np.prod([c[1] for c in corner], axis=0)
            keep = (weight != 0.0) & ~missing
            rows.append(station_index[keep])
            columns.append(index[keep])
            values.append(weight[keep])
        indices = torch.as_tensor(np.stack([np.concatenate(rows), np.concatenate(columns)]))
        matrix = torch.sparse_coo_tensor(indices, torch.as_tensor(np.concatenate(values)),
                                         (len(positions), geometry.size), dtype=torch.float64,
                                         check_invariants=True)
        return cls(matrix, geometry.shape, torch.as_tensor(missing))

    @property
    def n_stations(self) -> int:
        return self.matrix.shape[0]

    def to_dense(self) -> torch.Tensor:
        """The matrix as a dense ``(n_stations, n_grid_points)`` tensor."""
        return self.matrix.to_dense()

    def _on(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (dtype, device)
        if key not in self._cache:
            self._cache[key] = (self.matrix.to(dtype=dtype, device=device),
                                self.missing.to(device=device))
        return self._cache[key]

    def __call__(self, fields: torch.Tensor) -> torch.Tensor:
        """Apply to fields ``(..., *grid_shape)``; returns ``(..., n_stations)``.

        Any leading dims (batch, members, variables) are kept, so a state
        ``(batch, n_variables, *grid)`` gives ``(batch, n_variables, n_stations)``.
        Differentiable with respect to ``fields``; runs on their dtype and device.
        """
        n_grid = len(self.grid_shape)
        if tuple(fields.shape[fields.ndim - n_grid:]) != self.grid_shape:
            raise DataError(expected_found("field shape", f"(..., *{self.grid_shape})",
                                           tuple(fields.shape)))
        leading = fields.shape[: fields.ndim - n_grid]
        matrix, missing = self._on(fields.dtype, fields.device)
        flat = fields.reshape(-1, int(np.prod(self.grid_shape)))
        sampled = torch.sparse.mm(matrix, flat.T).T
        sampled = torch.where(missing, torch.full_like(sampled, float("nan")), sampled)
        return sampled.reshape(*leading, self.n_stations)

    def block_diagonal(self, n_variables: int) -> torch.Tensor:
        """Sparse ``(n_variables * n_stations, n_variables * n_grid_points)`` matrix that
        observes a stacked state of ``n_variables`` fields (variable-major order)."""
        n_variables = _positive_int("n_variables", n_variables)
        indices, values = self.matrix.indices(), self.matrix.values()
        shift = torch.tensor(self.matrix.shape).reshape(2, 1)
        blocks = [indices + v * shift for v in range(n_variables)]
        size = (n_variables * self.matrix.shape[0], n_variables * self.matrix.shape[1])
        return torch.sparse_coo_tensor(torch.cat(blocks, dim=1), values.repeat(n_variables),
                                       size, check_invariants=True).coalesce()

    def __repr__(self) -> str:
        return (f"InterpolationOperator(n_stations={self.n_stations}, "
                f"grid_shape={self.grid_shape}, nnz={self.matrix._nnz()})")


# ---------------------------------------------------------------------------- layouts
def random_layout(dataset: xr.Dataset, n_stations: int, seed: int | None = None) -> xr.Dataset:
    """``n_stations`` stations drawn uniformly over the domain of ``dataset``.

    See :meth:`GridGeometry.random_positions`. The result can be passed to
    :func:`observe` as ``stations``.

    Examples
    --------
    >>> import xldensf as xl
    >>> truth = xl.simulate("lorenz96", runs=1, seed=0, preset="small")
    >>> random_layout(truth, 5, seed=0).sizes["station"]
    5
    """
    geometry = GridGeometry.from_dataset(dataset)
    positions = geometry.random_positions(n_stations, np.random.default_rng(seed))
    return geometry.layout_dataset(positions, "random")


def regular_layout(dataset: xr.Dataset, *counts: int) -> xr.Dataset:
    """A regular layout with ``counts`` stations per axis, in (X, Y) order.

    ``regular_layout(ds, 10, 10)`` is the LD-EnSF 10 x 10 layout (100 stations at the
    centres of 10 x 10 equal cells, 0.44% of a 150 x 150 grid). The string
    ``stations="10x10"`` of :func:`observe` does the same.

    Examples
    --------
    >>> import xldensf as xl
    >>> truth = xl.simulate("lorenz96", runs=1, seed=0, preset="small")
    >>> regular_layout(truth, 4)["k"].values.tolist()  # cell centres over the period 40
    [5.0, 15.0, 25.0, 35.0]
    """
    geometry = GridGeometry.from_dataset(dataset)
    positions = geometry.regular_positions(counts)
    return geometry.layout_dataset(positions, "regular " + "x".join(str(c) for c in counts))


_REGULAR = re.compile(r"^\s*(\d+)\s*(?:x\s*(\d+)\s*)?$")


def _positions_for(geometry: GridGeometry, stations: Any, rng: np.random.Generator,
                   times: xr.DataArray) -> StationPositions:
    if isinstance(stations, (int, np.integer)) and not isinstance(stations, bool):
        values = geometry.random_positions(stations, rng)
        return StationPositions(values, np.arange(len(values)), "random")
    if isinstance(stations, str):
        match = _REGULAR.match(stations)
        if match is None:
            raise ParameterError(expected_found("stations layout string", "'N' or 'NxM'",
                                                stations))
        counts = [int(group) for group in match.groups() if group is not None]
        values = geometry.regular_positions(counts)
        return StationPositions(values, np.arange(len(values)), "regular " + "x".join(
            str(c) for c in counts))
    if isinstance(stations, bool) or isinstance(stations, (float, np.floating)):
        raise ParameterError(expected_found("stations", "a positive integer", stations))
    return geometry.station_positions(stations, times)


# ---------------------------------------------------------------------------- noise
def _noise_std(noise: Any, name: str, field_values: np.ndarray, field_units: str | None,
               ) -> tuple[float, str]:
    """Standard deviation of the observation error of one variable, and its description."""
    if isinstance(noise, Mapping):
        if name not in noise:
            raise UnknownNameError(expected_found("noise entries", sorted(noise), name))
        noise = noise[name]
    if _is_quantity(noise):
        magnitude = float(np.asarray(noise.magnitude))
        if field_units is None:
            raise UnitsError(expected_found(f"units attribute of variable {name!r}",
                                            "a unit string (noise given as a Quantity)", None))
        try:
            std = float(noise.to(parse_units(field_units, f"units of {name!r}")).magnitude)
        except Exception as err:  # pint raises DimensionalityError and friends
            raise UnitsError(expected_found(f"units of noise for {name!r}",
                                            f"units convertible to {field_units!r}",
                                            str(noise.units))) from err
        description = f"{magnitude:g} {noise.units:~}"
        value = magnitude
    else:
        try:
            value = float(noise)
        except (TypeError, ValueError) as err:
            raise ParameterError(expected_found("noise", "a float (relative) or a pint "
                                                "Quantity (absolute)", noise)) from err
        spread = float(np.nanstd(field_values)) if np.isfinite(field_values).any() else 0.0
        std = value * spread
        description = f"{value:g} x spatio-temporal standard deviation"
    if not (np.isfinite(value) and value >= 0):
        raise ParameterError(expected_found(f"noise for {name!r}", "a finite value >= 0", value))
    return std, description


def _error_attrs(name: str, attrs: Mapping[str, Any], description: str) -> dict[str, Any]:
    out = {"long_name": f"standard deviation of the observation error of {name}",
           "xldensf_noise": description}
    if "units" in attrs:
        out["units"] = attrs["units"]
    if "standard_name" in attrs:
        out["standard_name"] = f"{attrs['standard_name']} standard_error"
    return out


# ---------------------------------------------------------------------------- observe
def observe(
    dataset: xr.Dataset,
    stations: Any,
    *,
    noise: Any = 0.1,
    variables: Sequence[str] | str | None = None,
    every: int = 1,
    seed: int | None = None,
) -> xr.Dataset:
    """Sample noisy station observations of gridded fields.

    Parameters
    ----------
    dataset
        Gridded fields with a time axis (one truth run), axes found by CF meaning:
        planar X/Y (any length unit), latitude/longitude, or a 1-D X axis (Lorenz-96 ``k``).
    stations
        ``int``: that many stations drawn uniformly over the domain (see
        :func:`random_layout`); ``"NxM"`` (or ``"N"`` in 1-D): a regular layout
        (:func:`regular_layout`); or a Dataset / DataArrays of station coordinates with
        dims ``(station,)`` or ``(time, station)`` for moving stations, in any units that
        convert to the grid's.
    noise
        Standard deviation of the Gaussian observation error. A float is relative: the
        fraction of each variable's standard deviation over all grid points and all times
        of ``dataset`` (NaN ignored). A pint Quantity (:data:`xldensf.conventions.units`)
        is absolute and is converted to each variable's units. A mapping gives one value
        per variable.
    variables
        Variables to observe; default all data variables with dims ``(time, *grid)``.
    every
        Observe every ``every``-th time.
    seed
        Seed of the random layout and of the noise (``None``: a fresh seed, recorded).

    Returns
    -------
    xarray.Dataset
        Dims ``(time, station)``, ``featureType = "timeSeries"``; station positions as
        coordinates named like the grid's; each variable ``v`` with its units and an
        ancillary variable ``v_error_std``. NaN marks missing observations (NaN in the
        field or a NaN position).

    Raises
    ------
    DataError, ParameterError, UnitsError, UnknownNameError
        Unrecognisable axes, stations outside the domain, a bad count or noise, unknown
        variables, inconvertible units.

    Examples
    --------
    >>> import xldensf as xl
    >>> truth = xl.simulate("lorenz96", runs=1, seed=0, preset="small").isel(run=0)
    >>> obs = observe(truth, "10", noise=0.0, every=50)
    >>> obs.sizes["time"], obs.sizes["station"], obs.attrs["xldensf_layout"]
    (5, 10, 'regular 10')
    >>> obs.x.ancillary_variables
    'x_error_std'
    """
    if isinstance(dataset, xr.DataArray):
        dataset = dataset.to_dataset(name=dataset.name or "field")
    geometry = GridGeometry.from_dataset(dataset)
    roles = _roles(dataset)
    if "T" not in roles:
        raise DataError(expected_found("time axis", "a time coordinate recognisable by "
                                       "cf-xarray (standard_name time, axis T or datetime)",
                                       _describe_coordinates(dataset)))
    time = dataset[roles["T"]]
    if time.ndim != 1:
        raise DataError(expected_found(f"time coordinate {roles['T']!r}", "1-D", time.dims))
    time_dim = time.dims[0]
    names = _observed_variables(dataset, variables, (time_dim, *geometry.dims))
    every = _positive_int("every", every)
    seed = resolve_seed(seed)
    station_seed, noise_seed = np.random.SeedSequence(int(seed)).spawn(2)
    obs_times = dataset[time_dim].isel({time_dim: slice(None, None, every)})
    positions = _positions_for(geometry, stations, np.random.default_rng(station_seed), obs_times)
    if positions.moving:
        operators = [InterpolationOperator.from_grid(geometry, p) for p in positions.values]
    else:
        operators = [InterpolationOperator.from_grid(geometry, positions.values)]

    noise_rngs = [np.random.default_rng(s) for s in noise_seed.spawn(len(names))]
    data_vars: dict[str, Any] = {}
    descriptions = []
    for name, rng in zip(names, noise_rngs):
        variable = dataset[name].transpose(time_dim, *geometry.dims)
        values = np.asarray(variable.values)
        std, description = _noise_std(noise, name, values, variable.attrs.get("units"))
        descriptions.append(f"{name}: {description}")
        frames = torch.as_tensor(values[::every].astype(np.float64))
        if positions.moving:
            sampled = torch.stack([op(frame) for op, frame in zip(operators, frames)])
        else:
            sampled = operators[0](frames)
        observed = sampled.numpy() + std * rng.standard_normal(tuple(sampled.shape))
        out_dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64
        error_name = f"{name}_error_std"
        attrs = {k: v for k, v in variable.attrs.items() if k != "ancillary_variables"}
        attrs["ancillary_variables"] = error_name
        data_vars[name] = ((time_dim, STATION_DIM), observed.astype(out_dtype), attrs)
        data_vars[error_name] = ((), np.asarray(std, dtype=np.float64),
                                 _error_attrs(name, variable.attrs, description))

    coords = {time_dim: obs_times.variable,
              **geometry.position_coordinates(positions, time_dim=time_dim)}
    attrs = _observation_attrs(dataset, positions.kind, "; ".join(descriptions), seed, every)
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _observed_variables(dataset: xr.Dataset, variables: Sequence[str] | str | None,
                        dims: tuple[str, ...]) -> list[str]:
    on_grid = [str(name) for name, var in dataset.data_vars.items() if set(var.dims) == set(dims)]
    if variables is None:
        if not on_grid:
            raise DataError(expected_found("variables to observe", f"data variables with dims "
                                           f"{dims}", {str(k): v.dims for k, v in
                                                       dataset.data_vars.items()}))
        return on_grid
    names = [variables] if isinstance(variables, str) else list(variables)
    for name in names:
        if name not in dataset.data_vars:
            raise UnknownNameError(expected_found("variable", on_grid, name))
        if set(dataset[name].dims) != set(dims):
            raise DataError(expected_found(f"dims of variable {name!r}", f"{dims} in any order"
                                           " (select one run/member first)", dataset[name].dims))
    if len(set(names)) != len(names) or not names:
        raise ParameterError(expected_found("variables", "distinct names, at least one", names))
    return names


def _observation_attrs(dataset: xr.Dataset, layout: str, noise: str, seed: int,
                       every: int) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "Conventions": "CF-1.10",
        "featureType": "timeSeries",
        "title": "xldensf station observations",
        "source": f"xldensf {__version__} observations.observe",
        "xldensf_layout": layout,
        "xldensf_noise": noise,
        "xldensf_noise_definition": (
            "Gaussian error; a relative noise is the fraction of the standard deviation of "
            "the truth field over all grid points and times"),
        "xldensf_seed": int(seed),
        "xldensf_every": int(every),
        "xldensf_version": __version__,
    }
    for key in ("xldensf_case", "xldensf_preset", "xldensf_config"):
        if key in dataset.attrs:
            attrs[key] = dataset.attrs[key]
    if "xldensf_seed" in dataset.attrs:
        attrs["xldensf_truth_seed"] = dataset.attrs["xldensf_seed"]
    return attrs
