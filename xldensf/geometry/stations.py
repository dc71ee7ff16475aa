"""Station positions and the two station layouts: regular and random.

This is the one definition of each layout; :meth:`GridGeometry.regular_positions`,
``observe(stations="4x4")`` and ``fit(stations=16)`` all use :func:`regular_indices`, so
they put stations at the same grid points, and :meth:`GridGeometry.random_positions` /
``observe(stations=100)`` use :func:`random_positions`.

Examples
--------
>>> regular_indices((64,), [4]).ravel().tolist()     # bounded: 4 of 5 equal gaps
[13, 25, 38, 50]
>>> regular_indices((40,), [4], periodic=[True]).ravel().tolist()   # ring: cell centres
[5, 15, 25, 35]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError, check_positive_int, expected_found

__all__ = ["StationPositions", "regular_indices", "random_positions"]


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

    Examples
    --------
    >>> positions = StationPositions(np.zeros((3, 2)), np.arange(3), "custom")
    >>> positions.n_stations, positions.moving
    (3, False)
    """

    values: np.ndarray
    station: np.ndarray
    kind: str

    @property
    def moving(self) -> bool:
        """Whether the positions change with time (``values`` is 3-D)."""
        return self.values.ndim == 3

    @property
    def n_stations(self) -> int:
        """Number of stations."""
        return self.values.shape[-2]


def regular_indices(shape: Sequence[int], counts: Sequence[int],
                    periodic: Sequence[bool] | None = None) -> np.ndarray:
    """Grid indices of a regular layout: ``counts[i]`` stations along grid axis ``i``.

    The regular layout of xldensf (``observe(stations="NxM")``, ``regular_layout`` and the
    encoder stations of ``fit(stations=N*M)``). Stations sit on grid points, so an
    observation encoder trained on the grid sees exactly the observed values:

    - on a bounded axis of ``n`` points, at the ``count`` interior points of ``count + 2``
      equally spaced indices from ``0`` to ``n - 1``, rounded to the nearest index (the
      ends, on the domain's boundary, are left out);
    - on a periodic axis, at the centres of ``count`` equal cells of the full period,
      rounded down to a grid index (the ring has no ends).

    Parameters
    ----------
    shape
        Grid shape, in field (dimension) order.
    counts
        Stations per axis, in the same order.
    periodic
        Whether each axis is periodic (default: none).

    Returns
    -------
    numpy.ndarray
        Integer indices ``(prod(counts), len(shape))``, in C order (the last axis varies
        fastest), as ``numpy.ravel_multi_index`` expects them transposed.

    Raises
    ------
    ParameterError
        A count is not a positive integer, or so large that two stations would share a
        grid point.

    Examples
    --------
    >>> regular_indices((5, 6), [1, 2]).tolist()
    [[2, 2], [2, 3]]
    """
    shape = [check_positive_int("grid size", size) for size in shape]
    periodic = [False] * len(shape) if periodic is None else [bool(p) for p in periodic]
    if len(counts) != len(shape) or len(periodic) != len(shape):
        raise ParameterError(expected_found("regular layout counts", f"{len(shape)} (one per "
                                            "grid axis)", list(counts)))
    per_axis = []
    for size, count, wraps in zip(shape, counts, periodic):
        count = check_positive_int("stations per axis", count)
        if wraps:
            indices = np.floor((np.arange(count) + 0.5) * size / count).astype(int)
        else:
            indices = np.linspace(0, size - 1, count + 2)[1:-1].round().astype(int)
        if len(np.unique(indices)) != count:
            limit = size if wraps else max(size - 2, 1)
            raise ParameterError(expected_found(
                "stations per axis", f"at most {limit} on a {'periodic' if wraps else 'bounded'}"
                f" axis of {size} points (one station per grid point)", count))
        per_axis.append(indices)
    mesh = np.meshgrid(*per_axis, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=-1)


def random_positions(extents: Sequence[tuple[float, float]], latitude: Sequence[bool],
                     n_stations: int, rng: np.random.Generator) -> np.ndarray:
    """``n_stations`` positions drawn uniformly over a box, ``(n_stations, n_axes)``.

    The random layout of xldensf (``observe(stations=100)``, ``random_layout``): uniform
    in each coordinate between ``extents[i] = (low, high)``, except on latitude axes
    (degrees), which are uniform in ``sin(latitude)``, i.e. uniform in area on the sphere.
    Axes are drawn in order, one ``rng.random(n_stations)`` each.

    Examples
    --------
    >>> points = random_positions([(0.0, 40.0)], [False], 3, np.random.default_rng(0))
    >>> points.shape, bool(((points >= 0) & (points < 40)).all())
    ((3, 1), True)
    """
    n_stations = check_positive_int("stations", n_stations)
    columns = []
    for (low, high), is_latitude in zip(extents, latitude):
        uniform = rng.random(n_stations)
        if is_latitude:
            sin_low, sin_high = np.sin(np.deg2rad([low, high]))
            columns.append(np.rad2deg(np.arcsin(sin_low + (sin_high - sin_low) * uniform)))
        else:
            columns.append(low + (high - low) * uniform)
    return np.stack(columns, axis=-1)
