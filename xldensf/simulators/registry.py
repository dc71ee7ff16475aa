"""The registry of full-order simulators: case name -> :class:`~xldensf.simulators.base.Simulator`.

Each case module registers its class with :func:`register`; :mod:`xldensf.simulators`
imports every case module, so :data:`CASES` is complete once the package is imported.

Examples
--------
>>> import xldensf.simulators
>>> sorted(CASES)
['atmosphere', 'kolmogorov', 'lorenz96', 'tsunami']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Simulator

__all__ = ["CASES", "PRESETS", "register"]

#: Case name -> Simulator subclass. Filled by :func:`register`.
CASES: dict[str, type[Simulator]] = {}
#: Configuration presets every case offers.
PRESETS = ("paper", "small")


def register(cls: type[Simulator]) -> type[Simulator]:
    """Class decorator adding a simulator to :data:`CASES` under ``cls.case``."""
    CASES[cls.case] = cls
    return cls
