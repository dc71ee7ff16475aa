"""Geometry of a rectilinear grid: axes found by CF meaning, units, periodicity, distances.

Periodicity rule
----------------
An axis is periodic, with period ``n * spacing`` (uniform spacing required), when

1. it is declared periodic: the ``periodic`` argument of
   :meth:`GridGeometry.from_coordinates`, or the Dataset attribute ``xldensf_periodic``
   (axis letters ``X``/``Y``, roles or coordinate names, separated by spaces; ``"none"``
   marks no periodic axis), which xldensf's simulators write from their
   :attr:`~xldensf.simulators.base.Simulator.periodic_dims`; otherwise
2. the Dataset is an xldensf simulation (attribute ``xldensf_case``, e.g. an older file or
   a surrogate's metadata): the case's simulator declares it
   (:func:`periodic_declaration`); otherwise
3. the coordinates span a full period: a longitude whose ``n * spacing`` is 360 degrees,
   or a dimensionless coordinate whose ``n * spacing`` is ``2 pi`` (e.g. Kolmogorov flow
   on ``[0, 2 pi)``).

Examples
--------
>>> geometry = GridGeometry.from_coordinates({"k": np.arange(40.0)}, {"k": {"axis": "X"}},
...                                          periodic=["k"])
>>> geometry.axes[0].period
40.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr

from ..conventions import STATION_DIM, convert_values, parse_units, units
from ..errors import DataError, ParameterError, UnknownNameError, check_positive_int, expected_found
from ..filters.localization import pairwise_distance
from ..simulators import CASES
from ..simulators.sphere import EARTH_RADIUS
from .axis import FULL_TURN_DEGREES, GridAxis, cf_roles, describe_coordinates
from .stations import StationPositions, random_positions, regular_indices

__all__ = ["GridGeometry", "periodic_declaration"]


def periodic_declaration(attrs: Mapping[str, Any]) -> tuple[str, ...] | None:
    """Periodic axes declared by a Dataset's (or a surrogate's) attributes.

    ``xldensf_periodic`` if present (``()`` for ``"none"``); else, for an xldensf
    simulation (``xldensf_case``), the case simulator's
    :attr:`~xldensf.simulators.base.Simulator.periodic_dims`; else ``None`` (nothing
    declared: the full-period rule decides).

    Examples
    --------
    >>> periodic_declaration({"xldensf_case": "kolmogorov"})
    ('x', 'y')
    >>> periodic_declaration({"xldensf_periodic": "none"}), periodic_declaration({})
    ((), None)
    """
    declared = attrs.get("xldensf_periodic")
    if declared is not None:
        return _tokens(declared)
    case = attrs.get("xldensf_case")
    if isinstance(case, str) and case in CASES:
        return tuple(CASES[case].periodic_dims)
    return None


def _tokens(declared: Any) -> tuple[str, ...]:
    words = declared.replace(",", " ").split() if isinstance(declared, str) else [
        str(word) for word in declared]
    return tuple(word for word in words if word != "none")


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

        Periodicity follows the rule of :mod:`xldensf.geometry.grid`: the
        ``xldensf_periodic`` attribute, else the declaration of the ``xldensf_case``'s
        simulator, else the full-period rule.

        Raises
        ------
        DataError
            If no latitude/longitude pair or X (and Y) axis is recognisable, or an axis
            is not a 1-D coordinate with at least two distinct values.

        Examples
        --------
        >>> import xldensf as xl
        >>> truth = xl.simulate("kolmogorov", runs=1, seed=0, preset="small", n_outputs=2)
        >>> GridGeometry.from_dataset(truth).dims, truth.attrs["xldensf_periodic"]
        (('y', 'x'), 'x y')
        """
        if isinstance(dataset, xr.DataArray):
            dataset = dataset.to_dataset(name=dataset.name or "field")
        strict = "xldensf_periodic" in dataset.attrs
        return cls._build(dataset, None, periodic_declaration(dataset.attrs), strict)

    @classmethod
    def from_coordinates(
        cls,
        coordinates: Mapping[str, Any],
        attrs: Mapping[str, Mapping[str, Any]] | None = None,
        periodic: Sequence[str] | str | None = None,
    ) -> GridGeometry:
        """Geometry of the grid spanned by 1-D coordinate arrays (no Dataset needed).

        Parameters
        ----------
        coordinates
            Coordinate name -> 1-D values, one per grid dimension, in field order (the
            order in which a field's grid axes are stored); each coordinate lies along the
            dimension of its name.
        attrs
            CF attributes per coordinate name (``units``, ``standard_name``, ``axis``),
            from which the axes are recognised as for :meth:`from_dataset`.
        periodic
            Periodic axes (coordinate names or roles such as ``"X"``; ``()`` or ``"none"``
            for none), e.g. a simulator's
            :attr:`~xldensf.simulators.base.Simulator.periodic_dims` or
            :func:`periodic_declaration` of stored attributes. ``None``: the full-period
            rule decides.

        Raises
        ------
        DataError
            Unrecognisable axes, or a declared periodic axis that is not one of them.

        Examples
        --------
        >>> geometry = GridGeometry.from_coordinates(
        ...     {"y": [0.0, 1.0, 2.0], "x": [0.0, 1.0]},
        ...     {"y": {"axis": "Y", "units": "m"}, "x": {"axis": "X", "units": "m"}})
        >>> geometry.dims, geometry.shape, [axis.period for axis in geometry.axes]
        (('y', 'x'), (3, 2), [None, None])
        """
        attrs = attrs or {}
        names = [str(name) for name in coordinates]
        grid = xr.Dataset(coords={name: (name, np.asarray(values), dict(attrs.get(name, {})))
                                  for name, values in coordinates.items()})
        declared = None if periodic is None else _tokens(periodic)
        return cls._build(grid, names, declared, True)

    @classmethod
    def from_simulator(cls, model: Any) -> GridGeometry:
        """Geometry of an xldensf simulator's grid (the simulator declares periodicity).

        Examples
        --------
        >>> import xldensf as xl
        >>> geometry = GridGeometry.from_simulator(xl.simulator("lorenz96", preset="small"))
        >>> geometry.shape, geometry.axes[0].period
        ((40,), 40.0)
        """
        return cls.from_coordinates({c.name: c.values for c in model.grid_coordinates},
                                    {c.name: c.attrs for c in model.grid_coordinates},
                                    periodic=tuple(model.periodic_dims))

    @classmethod
    def _build(cls, dataset: xr.Dataset, order: list[str] | None,
               declared: tuple[str, ...] | None, strict: bool) -> GridGeometry:
        """Axes of ``dataset`` (in ``order`` of dims, else the data variables' order)."""
        roles = cf_roles(dataset)
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
                    describe_coordinates(dataset),
                )
            )
        axes = {role: cls._axis(dataset, roles[role], role) for role in wanted}
        periodic = cls._periodic_roles(axes, declared, strict)
        axes = {
            role: cls._with_period(axis, role in periodic) for role, axis in axes.items()
        }
        dims = [axis.dim for axis in axes.values()]
        if order is None:
            order = _grid_dim_order(dataset, dims)
        else:
            order = [dim for dim in order if dim in dims]
        by_dim = {axis.dim: axis for axis in axes.values()}
        return cls(axes=tuple(by_dim[dim] for dim in order), sphere=sphere)

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
    def _periodic_roles(axes: Mapping[str, GridAxis], declared: tuple[str, ...] | None,
                        strict: bool) -> set[str]:
        """Roles of the periodic axes: declared ones (``strict``: each must be an axis),
        else those spanning a full period."""
        if declared is not None:
            tokens = set(declared)
            known = {name for role, axis in axes.items() for name in (role, axis.name)}
            if strict and tokens - known:
                raise DataError(
                    expected_found("declared periodic axes (xldensf_periodic)",
                                   sorted(known) + ["none"], " ".join(declared) or "none")
                )
            return {role for role, axis in axes.items() if {role, axis.name} & tokens}
        periodic = set()
        for role, axis in axes.items():
            spacing = axis.uniform_spacing()
            if spacing is None:
                continue
            span = spacing * axis.size
            if role == "longitude":
                full_turn = FULL_TURN_DEGREES
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
            lat_lon = [lat_index, 1 - lat_index]
            return pairwise_distance(torch.deg2rad(a[:, lat_lon]), torch.deg2rad(b[:, lat_lon]),
                                     "sphere", sphere_radius=self.radius)
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
        return random_positions([axis.extent for axis in self.axes],
                                [axis.role == "latitude" for axis in self.axes], n_stations, rng)

    def regular_positions(self, counts: Sequence[int]) -> np.ndarray:
        """A regular layout with ``counts`` stations per axis, in (X, Y) order.

        Stations sit on the grid points chosen by
        :func:`xldensf.geometry.stations.regular_indices` (the one regular layout, also that
        of ``fit(stations=...)``'s encoder): interior points of equal gaps on bounded
        axes, cell centres of the full period on periodic ones. Returns
        ``(prod(counts), n_axes)`` in field axis order, the last field axis varying
        fastest.

        Examples
        --------
        >>> geometry = GridGeometry.from_coordinates({"k": np.arange(40.0)},
        ...                                          {"k": {"axis": "X"}}, periodic="k")
        >>> geometry.regular_positions([4]).ravel().tolist()
        [5.0, 15.0, 25.0, 35.0]
        """
        horizontal = self.horizontal_axes
        if len(counts) != len(horizontal):
            raise ParameterError(
                expected_found("regular layout counts",
                               f"{len(horizontal)} count(s), one per axis "
                               f"{[axis.role for axis in horizontal]}", list(counts))
            )
        by_dim = {axis.dim: check_positive_int(f"stations along {axis.name!r}", count)
                  for axis, count in zip(horizontal, counts)}
        indices = regular_indices(self.shape, [by_dim[axis.dim] for axis in self.axes],
                                  [axis.period is not None for axis in self.axes])
        return np.stack([axis.values[indices[:, i]] for i, axis in enumerate(self.axes)],
                        axis=-1)

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
        roles = cf_roles(layout)
        time_dim = times.dims[0] if times is not None else None
        arrays = []
        for axis in self.axes:
            name = roles.get(axis.role, axis.name if axis.name in layout.variables else None)
            if name is None:
                raise DataError(
                    expected_found(f"station positions for grid axis {axis.name!r} ({axis.role})",
                                   "a variable recognisable by cf-xarray or named like the grid "
                                   "coordinate", describe_coordinates(layout) | {
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
            axis.check_inside(values[..., i])
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
