"""The one writer of analysis Datasets, for every forecast model.

An adapter hands over its ensembles as :class:`EnsembleFields` (fields in the model's units,
parameters, extra variables) keyed by a name suffix (``""`` for the analysis,
``"_forecast"`` for the forecasts); :func:`analysis_dataset` converts observed variables to
the observations' units, labels the suffixed variables, adds the ``member`` coordinate
(standard_name ``realization``) and the attrs.

Examples
--------
>>> import numpy as np, xarray as xr
>>> from xldensf.assimilation.setup import ObservationProblem
>>> problem = ObservationProblem(
...     variables=("h",), times=np.array([0.0, 1.0]), values=None, obs_std=None,
...     positions=None, observation_units={"h": "cm"},
...     time_coordinate=xr.DataArray([0.0, 1.0], dims="time", name="time"))
>>> ensemble = EnsembleFields(fields={"h": (np.ones((2, 3, 4)), {"units": "m"})},
...                           parameters={"c": (np.zeros((2, 3)), {"units": "1"})})
>>> ds = analysis_dataset(problem, {"x": ("x", np.arange(4.0), {})}, ("x",),
...                       {"": ensemble}, {"title": "demo"})
>>> float(ds["h"][0, 0, 0]), ds["h"].attrs["units"], ds["h"].dims
(100.0, 'cm', ('time', 'member', 'x'))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from ..conventions import MEMBER_DIM, convert_values, coordinate_attrs

__all__ = ["EnsembleFields", "analysis_dataset"]


@dataclass
class EnsembleFields:
    """One ensemble over the cycles, ready to be written.

    Attributes
    ----------
    fields
        Variable name -> ``(values (time, member, *space), attrs)`` in the model's units
        (``attrs["units"]``).
    parameters
        Parameter name -> ``(values (time, member), attrs)``.
    extra
        Further variables: name -> ``(dims, values, attrs)``.
    """

    fields: dict[str, tuple[np.ndarray, dict[str, Any]]]
    parameters: dict[str, tuple[np.ndarray, dict[str, Any]]]
    extra: dict[str, tuple[tuple[str, ...], np.ndarray, dict[str, Any]]] = field(
        default_factory=dict)


def _labelled(attrs: Mapping[str, Any], name: str, label: str) -> dict[str, Any]:
    attrs = dict(attrs)
    if label:
        attrs["long_name"] = attrs.get("long_name", name) + label
    return attrs


def analysis_dataset(problem: Any, space_coords: Mapping[str, Any], space_dims: tuple[str, ...],
                     ensembles: Mapping[str, EnsembleFields],
                     attrs: Mapping[str, Any]) -> xr.Dataset:
    """Write ensembles as an analysis Dataset ``(time, member, *space_dims)``.

    Parameters
    ----------
    problem
        The :class:`~xldensf.assimilation.setup.ObservationProblem` (its time coordinate
        and the observations' units of the observed variables).
    space_coords
        Spatial coordinates, name -> ``(dims, values, attrs)``.
    space_dims
        The spatial dims of the fields.
    ensembles
        Name suffix (``""`` for the analysis) -> :class:`EnsembleFields`.
    attrs
        Dataset attrs (method, settings, seed, version, ...).
    """
    time_name = problem.time_coordinate.name
    members = next(iter(ensembles.values()))
    n_members = next(iter({**members.fields, **members.parameters}.values()))[0].shape[1]
    coords: dict[str, Any] = {
        time_name: problem.time_coordinate.variable,
        MEMBER_DIM: (MEMBER_DIM, np.arange(n_members), coordinate_attrs(MEMBER_DIM)),
        **space_coords,
    }
    dims = (time_name, MEMBER_DIM, *space_dims)
    data_vars: dict[str, Any] = {}
    for suffix, ensemble in ensembles.items():
        label = f" ({suffix.strip('_')})" if suffix else ""
        for name, (values, field_attrs) in ensemble.fields.items():
            field_attrs = _labelled(field_attrs, name, label)
            if name in problem.observation_units and "units" in field_attrs:
                target = problem.observation_units[name]
                values = convert_values(values, field_attrs["units"], target)
                field_attrs["units"] = target
            data_vars[name + suffix] = (dims, values, field_attrs)
        for name, (values, parameter_attrs) in ensemble.parameters.items():
            data_vars[name + suffix] = ((time_name, MEMBER_DIM), values,
                                        _labelled(parameter_attrs, name, label))
        for name, (extra_dims, values, extra_attrs) in ensemble.extra.items():
            data_vars[name + suffix] = ((time_name, MEMBER_DIM, *extra_dims), values,
                                        _labelled(extra_attrs, name, label))
    return xr.Dataset(data_vars, coords=coords, attrs=dict(attrs))
