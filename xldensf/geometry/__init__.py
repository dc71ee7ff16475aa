"""Grid geometry, station layouts and the interpolation operator.

- :mod:`~xldensf.geometry.axis`: :class:`GridAxis` and the CF lookup of a Dataset's axes;
- :mod:`~xldensf.geometry.grid`: :class:`GridGeometry` (``from_dataset``,
  ``from_coordinates``, ``from_simulator``), periodicity and distances;
- :mod:`~xldensf.geometry.stations`: :class:`StationPositions` and the one regular and one
  random layout (:func:`regular_indices`, :func:`random_positions`);
- :mod:`~xldensf.geometry.layouts`: those layouts as Datasets (:func:`regular_layout`,
  :func:`random_layout`);
- :mod:`~xldensf.geometry.interpolation`: :class:`InterpolationOperator`, the sparse
  bilinear observation operator.

Examples
--------
>>> import xldensf as xl
>>> from xldensf.geometry import GridGeometry
>>> GridGeometry.from_simulator(xl.simulator("tsunami", preset="small")).shape
(64, 64)
"""

from ..simulators.sphere import EARTH_RADIUS
from .axis import GridAxis, cf_roles, describe_coordinates
from .grid import GridGeometry, periodic_declaration
from .interpolation import InterpolationOperator
from .layouts import random_layout, regular_layout
from .stations import StationPositions, random_positions, regular_indices

__all__ = [
    "EARTH_RADIUS",
    "GridAxis",
    "GridGeometry",
    "InterpolationOperator",
    "StationPositions",
    "cf_roles",
    "describe_coordinates",
    "periodic_declaration",
    "random_layout",
    "random_positions",
    "regular_indices",
    "regular_layout",
]
