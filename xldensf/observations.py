"""Station observations: :func:`observe`, the xarray wrapper behind ``ds.ldensf.observe``.

It samples gridded fields at stations (the grid's axes, periodicity and station layouts
come from :mod:`xldensf.geometry`, the interpolation from
:class:`~xldensf.geometry.InterpolationOperator`), adds Gaussian noise and returns a CF
discrete sampling geometry Dataset (``featureType = "timeSeries"``, dims
``(time, station)``) with the observation error standard deviation as an ancillary
variable.

The geometry names (``GridGeometry``, ``InterpolationOperator``, ``StationPositions``,
``GridAxis``, ``random_layout``, ``regular_layout``, ``EARTH_RADIUS``) moved to
:mod:`xldensf.geometry`; they are re-exported here so that old imports keep working.

Examples
--------
>>> import xldensf as xl
>>> truth = xl.simulate("lorenz96", runs=1, seed=0, preset="small").isel(run=0)
>>> obs = observe(truth, 8, noise=0.1, seed=0)
>>> obs["x"].dims, obs.attrs["featureType"]
(('time', 'station'), 'timeSeries')
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

from ._version import __version__
from .conventions import (
    STATION_DIM,
    dequantify,
    is_quantity,
    quantity_magnitude,
    time_coordinate,
)
from .errors import (
    DataError,
    ParameterError,
    UnitsError,
    UnknownNameError,
    check_names,
    check_positive_int,
    expected_found,
)
from .geometry import (
    EARTH_RADIUS,
    GridAxis,
    GridGeometry,
    InterpolationOperator,
    StationPositions,
    random_layout,
    regular_layout,
)
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
def _is_lazy(values: Any) -> bool:
    """Whether ``values`` is a dask array (checked without importing dask)."""
    return not isinstance(values, np.ndarray) and hasattr(values, "dask")


def _relative_spread(values: Any) -> Any:
    """Standard deviation of ``values`` over all points and times (NaN ignored, 0 when
    nothing is finite): a float for numpy input, a lazy 0-d dask array for dask input."""
    if not _is_lazy(values):
        return float(np.nanstd(values)) if np.isfinite(values).any() else 0.0
    import dask.array as da

    return da.where(da.isfinite(values).any(), da.nanstd(values), 0.0)


def _noise_std(noise: Any, name: str, field_values: Any, field_units: str | None,
               ) -> tuple[Any, str]:
    """Standard deviation of the observation error of one variable, and its description.

    The standard deviation is a float, or a lazy 0-d dask array for a relative noise on
    dask-backed ``field_values``."""
    if isinstance(noise, Mapping):
        if name not in noise:
            raise UnknownNameError(expected_found("noise entries", sorted(noise), name))
        noise = noise[name]
    if is_quantity(noise):
        magnitude = float(np.asarray(noise.magnitude))
        if field_units is None:
            raise UnitsError(expected_found(f"units attribute of variable {name!r}",
                                            "a unit string (noise given as a Quantity)", None))
        # a standard deviation is a difference: 1 K of noise on a degC field is 1 degC
        std: Any = float(quantity_magnitude(noise, field_units, f"noise for {name!r}",
                                            difference=True))
        description = f"{magnitude:g} {noise.units:~}"
        value = magnitude
    else:
        try:
            value = float(noise)
        except (TypeError, ValueError) as err:
            raise ParameterError(expected_found("noise", "a float (relative) or a pint "
                                                "Quantity (absolute)", noise)) from err
        std = value * _relative_spread(field_values)
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


# ---------------------------------------------------------------------------- sampling
class _StationSampler:
    """Frames ``(time, *grid)`` -> station values ``(time, station)`` float64, eagerly
    (numpy) or lazily (dask, block by block over time chunks; the same numbers)."""

    def __init__(self, operators: list[InterpolationOperator], moving: bool) -> None:
        self.operators = operators
        self.moving = moving

    def __call__(self, values: np.ndarray, start: int = 0) -> np.ndarray:
        frames = torch.as_tensor(np.asarray(values).astype(np.float64))
        if self.moving:
            sampled = torch.stack([op(frame) for op, frame in
                                   zip(self.operators[start:start + len(frames)], frames)])
        else:
            sampled = self.operators[0](frames)
        return sampled.numpy()

    def lazy(self, values: Any) -> Any:
        """Map over the time chunks of the dask array ``values`` (the grid dims are
        joined into one chunk)."""
        values = values.rechunk({axis: -1 for axis in range(1, values.ndim)})
        n_stations = self.operators[0].n_stations

        def block(frames: np.ndarray, block_info: Any = None) -> np.ndarray:
            return self(frames, block_info[0]["array-location"][0][0])

        return values.map_blocks(block, drop_axis=list(range(2, values.ndim)),
                                 chunks=(values.chunks[0], (n_stations,)),
                                 dtype=np.float64, meta=np.empty((0, 0), np.float64))


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
        :func:`~xldensf.geometry.random_layout`); ``"NxM"`` (or ``"N"`` in 1-D): the
        regular layout (:func:`~xldensf.geometry.regular_layout`, on grid points, the same
        stations as ``fit(stations=N*M)``'s encoder); or a Dataset / DataArrays of
        station coordinates with dims ``(station,)`` or ``(time, station)`` for moving
        stations, in any units that convert to the grid's.
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
        field or a NaN position). On a dask-backed ``dataset`` (``ds.chunk({"time": 5})``)
        the station values and ``v_error_std`` are dask arrays, computed on access,
        chunked like the input in time: see Notes.

    Raises
    ------
    DataError, ParameterError, UnitsError, UnknownNameError
        Unrecognisable axes, stations outside the domain, a bad count or noise, unknown
        variables, inconvertible units.

    Notes
    -----
    Dask input stays lazy: each time chunk is sampled on its own (the grid dims are joined
    into one chunk); the Gaussian draws (times x stations, small) are made when
    ``observe`` is called, from the same seeds as for numpy input, and added lazily. The
    result is therefore the numbers of the eager call, bit for bit, with an absolute noise
    (a Quantity). A relative noise needs the field's standard deviation over all points
    and times, which dask reduces chunk by chunk (lazily, in the same graph): it can differ
    from numpy's in the last bit, and so the observations by rounding of the noise term.
    Dask is imported only for dask input.

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
    dataset = dequantify(dataset)
    geometry = GridGeometry.from_dataset(dataset)
    time_dim = time_coordinate(dataset, "time axis").dims[0]
    names = _observed_variables(dataset, variables, (time_dim, *geometry.dims))
    every = check_positive_int("every", every)
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
        lazy = variable.chunks is not None
        values = variable.data if lazy else np.asarray(variable.values)
        std, description = _noise_std(noise, name, values, variable.attrs.get("units"))
        descriptions.append(f"{name}: {description}")
        sampler = _StationSampler(operators, positions.moving)
        sampled = sampler.lazy(values[::every]) if lazy else sampler(values[::every])
        # the draws are made now (stations x times, small) and added lazily to dask input:
        # the same numbers as eager input with the same seed
        draws = rng.standard_normal(tuple(sampled.shape))
        if lazy:
            import dask.array as da

            draws = da.from_array(draws, chunks=sampled.chunks)
        observed = sampled + std * draws
        out_dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64
        error_name = f"{name}_error_std"
        attrs = {k: v for k, v in variable.attrs.items() if k != "ancillary_variables"}
        attrs["ancillary_variables"] = error_name
        data_vars[name] = ((time_dim, STATION_DIM), observed.astype(out_dtype), attrs)
        error_std = std.astype(np.float64) if _is_lazy(std) else np.asarray(std, np.float64)
        data_vars[error_name] = ((), error_std, _error_attrs(name, variable.attrs, description))

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
    check_names("variable", [name for name in names if name not in dataset.data_vars], on_grid)
    for name in names:
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
