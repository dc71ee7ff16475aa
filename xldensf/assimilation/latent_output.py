"""Writing latent ensembles as an analysis Dataset: decoded lazily, now, or as moments.

:func:`latent_ensemble_dataset` decodes latent ensembles ``(n_cycles, members, latent_dim
+ n_parameters)`` of a :class:`~xldensf.surrogate.LatentModel` on its grid (or at given
points) frame by frame: as a dask array computed on access (``output="lazy"``, when dask
is installed), every member now (``"members"``), or the ensemble mean and spread of the
decoded members (``"mean"``). Used by :func:`~xldensf.assimilation.latent.assimilate_latent`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import xarray as xr

from ..conventions import MEMBER_DIM, convert_values
from ..surrogate import LatentModel
from ..surrogate.dataset import forecast_points
from .output import EnsembleFields, analysis_dataset

__all__ = ["latent_ensemble_dataset", "OUTPUTS"]

#: How the analysis fields are returned (``output=``): ``"lazy"`` (every member, decoded on
#: access; dask-backed if dask is installed, else decoded now), ``"members"`` (every
#: member decoded now), ``"mean"`` (the ensemble mean and spread of the decoded members,
#: no member dim on the fields).
OUTPUTS = ("lazy", "members", "mean")

def _frame_decoder(model: LatentModel, problem: Any, at: torch.Tensor | None
                   ) -> tuple[Any, tuple[int, ...]]:
    """``decode(frame (members, latent_dim + n_parameters)) -> (members, n_variables,
    *space)`` float64 numpy, observed variables in the observations' units, and the shape
    ``(n_variables, *space)`` of one member's fields."""
    meta = model.metadata
    on_grid = at is None and meta.grid_shape is not None
    space = tuple(meta.grid_shape) if on_grid else (
        (model.coordinates if at is None else at).shape[0],)
    conversions = []
    for name in meta.variables:
        source = meta.variable_attrs.get(name, {}).get("units")
        target = problem.observation_units.get(name)
        conversions.append(None if source is None or target is None or source == target
                           else (source, target))

    def decode(frame: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            fields = model.decode(frame[:, :model.latent_dim].to(model.device), at)
        fields = fields.cpu().numpy().astype(np.float64)
        for index, conversion in enumerate(conversions):
            if conversion is not None:
                fields[:, index] = convert_values(fields[:, index], *conversion)
        return fields

    return decode, (model.n_variables, *space)


def _decode_block(decode: Any, frame: torch.Tensor) -> np.ndarray:
    """One frame's block ``(1, members, n_variables, *space)`` of the lazy fields."""
    return decode(frame)[None]


def _decoded_fields(decode: Any, shape: tuple[int, ...], ensemble: torch.Tensor, output: str
                    ) -> tuple[str, list[Any]]:
    """The fields of ``ensemble`` ``(time, members, ...)`` per variable, as ``output``
    asks: ``("members", [(time, member, *space)])``, dask-backed for ``"lazy"`` when dask is
    installed, or ``("mean", [(mean, spread) (time, *space)])``; ``shape`` is that of one
    member's fields, ``(n_variables, *space)``."""
    frames = [frame.detach().cpu() for frame in ensemble]
    if output == "lazy":
        try:
            import dask.array as da
        except ImportError:  # without dask: decode now
            output = "members"
        else:
            # one task per frame in a graph written out, all referring to one key that
            # holds ``decode`` (the whole model: serialised once, and never tokenised;
            # cheaper than one ``from_delayed`` per frame, docs/ldensf.md "Speed")
            name = f"xldensf-decode-{uuid.uuid4().hex}"
            decoder_key, origin = f"{name}-decoder", (0,) * len(shape)
            graph: dict[Any, Any] = {decoder_key: decode}
            graph.update({(name, index, 0, *origin): (_decode_block, decoder_key, frame)
                          for index, frame in enumerate(frames)})
            chunks = ((1,) * len(frames), (frames[0].shape[0],), *((size,) for size in shape))
            stacked = da.Array(graph, name, chunks, dtype=np.float64)
            return "members", [stacked[:, :, index] for index in range(shape[0])]
    if output == "members":  # frame by frame: bounded working memory on any grid
        decoded = np.stack([decode(frame) for frame in frames])
        return "members", [decoded[:, :, index] for index in range(decoded.shape[2])]
    moments = []
    for frame in frames:
        fields = decode(frame)
        moments.append((fields.mean(axis=0), fields.std(axis=0, ddof=1)))
    means, spreads = np.stack([m for m, _ in moments]), np.stack([s for _, s in moments])
    return "mean", [(means[:, index], spreads[:, index]) for index in range(means.shape[1])]


def latent_ensemble_dataset(model: LatentModel, problem: Any,
                            ensembles: Mapping[str, torch.Tensor], attrs: Mapping[str, Any],
                            coords: Any = None, return_latent: bool = False,
                            output: str = "members") -> xr.Dataset:
    """Decode latent ensembles ``(n_cycles, members, latent_dim + n_parameters)`` as a
    Dataset; keys of ``ensembles`` are suffixes of the variable names (``""`` for the
    analysis).

    ``output`` is one of :data:`OUTPUTS` (see :func:`assimilate_latent`); the mode written
    is recorded in the attr ``xldensf_output``.

    Examples
    --------
    >>> import numpy as np, torch, xarray as xr
    >>> from xldensf.assimilation.setup import ObservationProblem
    >>> from xldensf.surrogate import LDNetConfig, SurrogateMetadata
    >>> meta = SurrogateMetadata(variables=("h",), coordinate_names=("x",),
    ...     coordinate_attrs={"x": {"units": "m", "axis": "X"}}, grid_shape=(5,),
    ...     grid_values={"x": [0.0, 1.0, 2.0, 3.0, 4.0]}, parameters=("c",),
    ...     parameter_ranges=((0.0, 1.0),))
    >>> model = LatentModel(LDNetConfig.small(), meta, torch.arange(5.0)[:, None])
    >>> problem = ObservationProblem(
    ...     variables=("h",), times=np.array([0.0, 1.0]), values=None, obs_std=None,
    ...     positions=None, observation_units={},
    ...     time_coordinate=xr.DataArray([0.0, 1.0], dims="time", name="time"))
    >>> latent = torch.zeros(2, 3, model.latent_dim + model.n_parameters, dtype=model.dtype)
    >>> ds = latent_ensemble_dataset(model, problem, {"": latent}, {}, output="mean")
    >>> ds["h"].dims, ds["h_spread"].dims, ds["c"].dims, ds.attrs["xldensf_output"]
    (('time', 'x'), ('time', 'x'), ('time', 'member'), 'mean')
    """
    meta = model.metadata
    n_latent = model.latent_dim
    if coords is None:
        points, space_dims = None, tuple(meta.coordinate_names)
        space_coords = {name: (name, np.asarray(meta.grid_values[name]),
                               meta.coordinate_attrs.get(name, {})) for name in space_dims}
    else:
        points, point_dim = forecast_points(model, coords)
        space_dims = (point_dim,)
        space_coords = {name: (point_dim, points[:, index], meta.coordinate_attrs.get(name, {}))
                        for index, name in enumerate(meta.coordinate_names)}
    at = None if points is None else torch.as_tensor(points)
    decode, shape = _frame_decoder(model, problem, at)
    written, fields, written_mode = {}, {}, output
    for suffix, ensemble in ensembles.items():
        physical = model.denormalize_parameters(ensemble[..., n_latent:].to(model.device))
        physical = physical.detach().cpu().numpy().astype(np.float64)
        extra = {}
        if return_latent:
            extra["latent"] = (("latent",),
                               ensemble[..., :n_latent].detach().cpu().numpy().astype(np.float64),
                               {"long_name": "latent state of the surrogate", "units": "1"})
        written[suffix] = EnsembleFields(
            fields={},
            parameters={name: (physical[..., index], dict(meta.parameter_attrs.get(name, {})))
                        for index, name in enumerate(meta.parameters)},
            extra=extra)
        written_mode, fields[suffix] = _decoded_fields(decode, shape, ensemble, output)
    dataset = analysis_dataset(problem, space_coords, space_dims, written, attrs)
    time_name = problem.time_coordinate.name
    for suffix, values in fields.items():
        label = f" ({suffix.strip('_')})" if suffix else ""
        for name, value in zip(meta.variables, values, strict=True):
            field_attrs = dict(meta.variable_attrs.get(name, {}))
            field_attrs["long_name"] = field_attrs.get("long_name", name) + label
            if name in problem.observation_units and "units" in field_attrs:
                field_attrs["units"] = problem.observation_units[name]
            if written_mode == "mean":
                mean, spread = value
                dataset[name + suffix] = ((time_name, *space_dims), mean, field_attrs)
                spread_attrs = {**field_attrs, "long_name": field_attrs["long_name"]
                                + " ensemble spread (standard deviation)"}
                dataset[name + suffix + "_spread"] = ((time_name, *space_dims), spread,
                                                      spread_attrs)
            else:
                dataset[name + suffix] = ((time_name, MEMBER_DIM, *space_dims), value,
                                          field_attrs)
    dataset.attrs["xldensf_output"] = "lazy" if output == "lazy" and written_mode == "members" \
        and not isinstance(next(iter(fields.values()))[0], np.ndarray) else written_mode
    return dataset
