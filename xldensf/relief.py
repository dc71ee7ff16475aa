"""Moved: the ETOPO relief helpers now live in :mod:`xldensf.simulators.relief`.

This module re-exports them so that ``from xldensf.relief import regional_depth`` keeps
working; new code should import from :mod:`xldensf.simulators.relief`.

Examples
--------
>>> from xldensf import relief
>>> from xldensf.simulators import relief as moved
>>> relief.regional_depth is moved.regional_depth
True
"""

from __future__ import annotations

from .simulators.relief import (
    EARTH_RADIUS,
    ETOPO_DIR_VARIABLE,
    ETOPO_RESOLUTIONS,
    PAPER_LENGTH,
    PAPER_SHAPE,
    depth_on_grid,
    etopo_path,
    load_relief,
    regional_depth,
)

__all__ = [
    "EARTH_RADIUS",
    "ETOPO_RESOLUTIONS",
    "ETOPO_DIR_VARIABLE",
    "PAPER_LENGTH",
    "PAPER_SHAPE",
    "depth_on_grid",
    "etopo_path",
    "load_relief",
    "regional_depth",
]
