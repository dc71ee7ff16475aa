"""What ties the surrogate's tensors to the training data: :class:`SurrogateMetadata`.

Examples
--------
>>> from xldensf.surrogate import SurrogateMetadata
>>> meta = SurrogateMetadata(variables=("h",), parameters=("a",),
...                          parameter_ranges=((0.0, 1.0),))
>>> SurrogateMetadata.from_dict(meta.to_dict()) == meta
True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SurrogateMetadata"]


@dataclass(frozen=True)
class SurrogateMetadata:
    """What ties the surrogate's tensors to the training data (all JSON-serialisable).

    Parameters
    ----------
    variables
        Output variable names, in the order of the variable axis.
    variable_attrs
        CF attributes (``units``, ``long_name``, ``standard_name``) by variable name.
    coordinate_names
        Names of the coordinate columns of ``coordinates`` (the grid dims).
    coordinate_attrs
        CF attributes by coordinate name.
    grid_shape
        Shape of the training grid when the points are a full grid (``ij`` order), else
        ``None`` (scattered points).
    grid_values
        1-D coordinate values by grid dim name (for a full grid).
    times
        Times of the training frames.
    time_attrs
        CF attributes of the time coordinate.
    parameters
        Parameter names, in the order of the parameter axis.
    parameter_attrs
        CF attributes by parameter name.
    parameter_ranges
        ``(low, high)`` of each parameter over the training runs.
    stations
        Encoder station coordinates ``(n_stations, dim)`` (physical), or ``None``.
    attrs
        Global attributes copied from the training data (case, preset, ...).
    """

    variables: tuple[str, ...]
    variable_attrs: dict[str, dict[str, Any]] = field(default_factory=dict)
    coordinate_names: tuple[str, ...] = ()
    coordinate_attrs: dict[str, dict[str, Any]] = field(default_factory=dict)
    grid_shape: tuple[int, ...] | None = None
    grid_values: dict[str, list[float]] = field(default_factory=dict)
    times: tuple[float, ...] = ()
    time_attrs: dict[str, Any] = field(default_factory=dict)
    parameters: tuple[str, ...] = ()
    parameter_attrs: dict[str, dict[str, Any]] = field(default_factory=dict)
    parameter_ranges: tuple[tuple[float, float], ...] = ()
    stations: tuple[tuple[float, ...], ...] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dictionary (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SurrogateMetadata:
        """Inverse of :meth:`to_dict`."""
        values = dict(values)
        for name in ("variables", "coordinate_names", "times", "parameters"):
            values[name] = tuple(values.get(name, ()))
        values["parameter_ranges"] = tuple(tuple(pair) for pair in values["parameter_ranges"])
        if values.get("grid_shape") is not None:
            values["grid_shape"] = tuple(values["grid_shape"])
        if values.get("stations") is not None:
            values["stations"] = tuple(tuple(row) for row in values["stations"])
        return cls(**values)

