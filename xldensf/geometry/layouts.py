"""Station layouts as Datasets: random and regular, ready for ``observe(stations=...)``.

Examples
--------
>>> import xldensf as xl
>>> truth = xl.simulate("tsunami", runs=1, seed=0, preset="small", n_outputs=2)
>>> regular_layout(truth, 4, 4).sizes["station"]
16
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .grid import GridGeometry

__all__ = ["random_layout", "regular_layout"]


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

    ``regular_layout(ds, 10, 10)`` is the LD-EnSF 10 x 10 layout (100 stations, 0.44% of
    a 150 x 150 grid). Stations sit on grid points (see
    :func:`xldensf.geometry.stations.regular_indices`, the one regular layout): the same
    as ``observe(stations="10x10")`` and as the encoder stations of ``fit(stations=100)``.

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
