"""The coupled VAE of Latent-EnSF as a model object: :func:`fit_vae` and :class:`VAEModel`.

:func:`fit_vae` trains a :class:`~xldensf.surrogate.vae_networks.CoupledVAE` (state encoder,
observation encoder for one station layout, shared decoder) on the frames of a
``simulate()``-style Dataset, dims ``(run, time, *grid)``; the station values it learns to
encode are the fields interpolated at the layout's stations (as
:func:`xldensf.observations.observe` samples them). :class:`VAEModel` keeps the network with
what ties it to the data: variable names and units, grid dims and shape, the observed
variables and the station positions (in the grid's units, axes in
:attr:`VAEMetadata.axis_names` order).

The model file
    :meth:`VAEModel.save` writes ONE safetensors file, like
    :meth:`~xldensf.surrogate.LatentModel.save`: the weights and normalisation buffers as
    tensors, and in the header the JSON strings ``config`` (network sizes) and ``metadata``,
    the format name ``xldensf-vae-model`` and its version, and the xldensf and torch
    versions. :meth:`VAEModel.from_file` never unpickles; a missing, corrupt, foreign
    (e.g. a LatentModel file) or incompatible file raises :class:`~xldensf.errors.DataError`.

Examples
--------
>>> import xldensf as xl
>>> from xldensf.geometry import regular_layout
>>> train = xl.simulate("lorenz96", runs=3, seed=0, preset="small", n_outputs=6)
>>> vae = fit_vae(train, stations=regular_layout(train, 8), seed=0, steps=3, width=16)
>>> vae.latent_dim, vae.metadata.observed
(16, ('x',))
"""

from __future__ import annotations

import dataclasses
import os
import time as wallclock
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr

from ..conventions import RUN_DIM, find_time_name
from ..errors import ConfigurationError, DataError, check_names, expected_found
from ..geometry import GridGeometry, InterpolationOperator
from ..io import json_safe, model_contents, model_file_header, read_model_file, write_safetensors
from ..options import resolve_device, resolve_seed
from .vae_networks import CoupledVAE, train_vae

__all__ = ["VAEModel", "VAEMetadata", "fit_vae", "VAE_FORMAT_NAME", "VAE_FORMAT_VERSION"]

#: Format name and newest version of a VAE model file.
VAE_FORMAT_NAME = "xldensf-vae-model"
VAE_FORMAT_VERSION = 1


@dataclass
class VAEMetadata:
    """What ties a coupled VAE to its training data.

    Attributes
    ----------
    variables, units
        Field variables (the decoder's channels, in order) and their units.
    grid_dims, grid_shape
        The grid's dims and sizes (of one variable).
    observed
        Variables of the observation vector, in its (variable-major) order.
    axis_names, stations
        The grid axes, and the station positions ``(n_stations, n_axes)`` in the grid's
        units along them.
    case
        The simulated case of the training data (``""`` if not known).
    training
        Settings and measurements of the fit (steps, losses, seconds, ...).
    """

    variables: tuple[str, ...]
    units: dict[str, str]
    grid_dims: tuple[str, ...]
    grid_shape: tuple[int, ...]
    observed: tuple[str, ...]
    axis_names: tuple[str, ...]
    stations: list[list[float]]
    case: str = ""
    training: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> VAEMetadata:
        values = dict(values)
        for name in ("variables", "grid_dims", "observed", "axis_names"):
            values[name] = tuple(values[name])
        values["grid_shape"] = tuple(int(size) for size in values["grid_shape"])
        return cls(**values)


class VAEModel:
    """A trained coupled VAE (Latent-EnSF): tensors in and out, plus its model file.

    Parameters
    ----------
    network
        The :class:`~xldensf.surrogate.vae_networks.CoupledVAE`.
    metadata
        Its :class:`VAEMetadata`.
    seed
        Seed of the fit (recorded).

    Examples
    --------
    >>> import torch
    >>> from xldensf.surrogate.vae_networks import CoupledVAE
    >>> metadata = VAEMetadata(("x",), {"x": "1"}, ("k",), (6,), ("x",), ("k",),
    ...                        [[0.0], [3.0]])
    >>> vae = VAEModel(CoupledVAE(1, (6,), 2, latent_dim=3, width=8), metadata)
    >>> tuple(vae.decode(vae.encode_state(torch.zeros(2, 1, 6))[0]).shape)
    (2, 1, 6)
    """

    def __init__(self, network: CoupledVAE, metadata: VAEMetadata, seed: int = 0) -> None:
        self.network = network.eval()
        self.metadata = metadata
        self.seed = int(seed)

    @property
    def latent_dim(self) -> int:
        return self.network.latent_dim

    @property
    def stations(self) -> np.ndarray:
        """Station positions ``(n_stations, n_axes)`` of the observation encoder."""
        return np.asarray(self.metadata.stations, dtype=np.float64)

    def __repr__(self) -> str:
        return (f"VAEModel(variables={self.metadata.variables}, grid={self.metadata.grid_shape}, "
                f"latent_dim={self.latent_dim}, observed={self.metadata.observed}, "
                f"stations={len(self.metadata.stations)})")

    def _in(self, values: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(values).to(self.network.field_center)

    def encode_state(self, fields: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent mean and log-variance ``(batch, latent_dim)`` of fields
        ``(batch, n_variables, *grid)`` (no gradient)."""
        with torch.no_grad():
            return self.network.encode_state(self._in(fields))

    def encode_observations(self, observations: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent mean and log-variance ``(batch, latent_dim)`` of station values
        ``(batch, n_obs)``, variable-major in :attr:`VAEMetadata.observed` order (no
        gradient; NaN = missing)."""
        with torch.no_grad():
            return self.network.encode_observations(self._in(observations))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Fields ``(batch, n_variables, *grid)`` of latents ``(batch, latent_dim)`` (no
        gradient)."""
        with torch.no_grad():
            return self.network.decode(self._in(latent))

    def layout(self) -> xr.Dataset:
        """The observation encoder's station layout, ready for ``observe(stations=...)``.

        Examples
        --------
        >>> import torch
        >>> from xldensf.surrogate.vae_networks import CoupledVAE
        >>> metadata = VAEMetadata(("x",), {"x": "1"}, ("k",), (6,), ("x",), ("k",),
        ...                        [[0.0], [3.0]])
        >>> VAEModel(CoupledVAE(1, (6,), 2, latent_dim=3, width=8), metadata).layout()["k"].values
        array([0., 3.])
        """
        station = np.arange(len(self.metadata.stations))
        coords: dict[str, Any] = {"station": ("station", station, {"cf_role": "timeseries_id"})}
        for i, name in enumerate(self.metadata.axis_names):
            coords[name] = ("station", self.stations[:, i])
        return xr.Dataset(coords=coords, attrs={"xldensf_layout": "vae"})

    def save(self, path: str | os.PathLike) -> None:
        """Write the model to one safetensors file, atomically (see the module docstring).

        Examples
        --------
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from xldensf.surrogate.vae_networks import CoupledVAE
        >>> metadata = VAEMetadata(("x",), {"x": "1"}, ("k",), (6,), ("x",), ("k",),
        ...                        [[0.0], [3.0]])
        >>> path = Path(tempfile.mkdtemp()) / "model.vae"
        >>> VAEModel(CoupledVAE(1, (6,), 2, latent_dim=3, width=8), metadata).save(path)
        >>> VAEModel.from_file(path).latent_dim
        3
        """
        network = self.network
        tensors = {key: value.detach().cpu().contiguous()
                   for key, value in network.state_dict().items()}
        config = {"n_variables": network.n_variables, "grid_shape": list(network.grid_shape),
                  "n_obs": network.n_obs, "latent_dim": network.latent_dim,
                  "width": network.width, "depth": network.depth, "n_modes": network.n_modes}
        header = model_file_header(VAE_FORMAT_NAME, VAE_FORMAT_VERSION, config=config,
                                   metadata=self.metadata.to_dict(), seed=self.seed)
        write_safetensors(path, tensors, header)

    @classmethod
    def from_file(cls, path: str | os.PathLike,
                  device: torch.device | str | None = None) -> VAEModel:
        """Read a model written by :meth:`save` (never unpickles).

        Raises
        ------
        DataError
            Missing, truncated, corrupt, foreign (another format) or incompatible file.

        Examples
        --------
        >>> import tempfile
        >>> from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "broken.vae"
        >>> _ = path.write_bytes(b"not a model")
        >>> VAEModel.from_file(path)
        Traceback (most recent call last):
        ...
        xldensf.errors.DataError: VAE model file: expected a safetensors file, found ...
        """
        contents = read_model_file(path, "VAE model file", VAE_FORMAT_NAME, VAE_FORMAT_VERSION)
        with model_contents(path, "a VAE model this xldensf version can build"):
            config = contents.config
            metadata = VAEMetadata.from_dict(contents.metadata)
            network = CoupledVAE(config["n_variables"], tuple(config["grid_shape"]),
                                 config["n_obs"], config["latent_dim"], config["width"],
                                 config["depth"], config["n_modes"])
            network = network.to(contents.tensors["field_center"].dtype)
            network.load_state_dict(contents.tensors, strict=True)
        return cls(network.to(resolve_device(device)), metadata, seed=contents.seed)


def _field_variables(dataset: xr.Dataset, grid_dims: tuple[str, ...],
                     variables: Sequence[str] | str | None) -> tuple[str, ...]:
    candidates = [name for name, variable in dataset.data_vars.items()
                  if set(variable.dims) >= {RUN_DIM, *grid_dims} and variable.ndim
                  == len(grid_dims) + 2]
    if variables is None:
        if not candidates:
            raise DataError(expected_found("training variables", f"variables with dims "
                                           f"(run, time, {', '.join(grid_dims)})",
                                           sorted(dataset.data_vars)))
        return tuple(candidates)
    variables = (variables,) if isinstance(variables, str) else tuple(variables)
    check_names("variable", variables, candidates)
    return variables


def fit_vae(
    dataset: xr.Dataset,
    stations: Any,
    variables: Sequence[str] | str | None = None,
    observed: Sequence[str] | str | None = None,
    *,
    seed: int | None = None,
    steps: int = 4000,
    latent_dim: int = 16,
    width: int = 256,
    depth: int = 3,
    modes: int = 256,
    beta: float = 1e-4,
    matching: float = 1.0,
    noise: float = 0.1,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    device: Any = None,
) -> VAEModel:
    """Train the coupled VAE of Latent-EnSF on simulation runs.

    Parameters
    ----------
    dataset
        Training runs, dims ``(run, time, *grid)`` (as made by :func:`xldensf.simulate`);
        every frame of every run is a training sample.
    stations
        The station layout of the observation encoder: a layout Dataset
        (:func:`xldensf.geometry.regular_layout`, :func:`~xldensf.geometry.random_layout`)
        or an observation Dataset whose station positions are used. Filters with this VAE
        need observations at exactly these stations, in this order.
    variables
        Field variables encoded and decoded (default: every variable with dims
        ``(run, time, *grid)``); a full-order model filtered with the VAE must have these.
    observed
        Variables observed at the stations (default: ``variables``).
    seed
        Seed of the initial weights, the batches and the noise (``None``: a fresh one).
    steps, batch_size, learning_rate
        Adam steps, frames per step, initial learning rate (cosine-decayed).
    latent_dim, width, depth
        Latent size; width and number of hidden layers of each MLP.
    modes
        Number of principal components of the training fields that represent a field
        (the fixed first layer of the state encoder and last layer of the decoder).
    beta, matching
        Weights of the KL and latent-matching terms of the loss.
    noise
        Standard deviation of the noise added to the station values in training, as a
        fraction of each station value's spread over the training frames (the relative
        ``noise`` of :func:`~xldensf.observations.observe` is a fraction of the field's
        spread: similar, not identical).
    device
        Training device (``None``: :func:`xldensf.set_options`' device).

    Returns
    -------
    VAEModel
        On CPU, float32, in evaluation mode; ``metadata.training`` records the settings,
        the final losses and the training time.

    Raises
    ------
    UnknownNameError
        An unknown variable or observed variable.
    DataError
        No run dim, no training variables, stations outside the grid.

    Examples
    --------
    >>> import xldensf as xl
    >>> from xldensf.geometry import regular_layout
    >>> train = xl.simulate("lorenz96", runs=3, seed=0, preset="small", n_outputs=6)
    >>> vae = fit_vae(train, stations=regular_layout(train, 8), seed=0, steps=3, width=16)
    >>> tuple(vae.stations.shape)
    (8, 1)
    """
    if RUN_DIM not in dataset.dims:
        raise DataError(expected_found("training dims", f"({RUN_DIM}, time, *grid)",
                                       tuple(map(str, dataset.dims))))
    seed = resolve_seed(seed)
    geometry = GridGeometry.from_dataset(dataset)
    grid_dims = tuple(geometry.dims)
    variables = _field_variables(dataset, grid_dims, variables)
    observed = variables if observed is None else (
        (observed,) if isinstance(observed, str) else tuple(observed))
    check_names("observed variable", observed, variables)
    time_name = find_time_name(dataset[variables[0]])
    positions = geometry.station_positions(stations)
    if positions.moving:
        raise ConfigurationError(expected_found("stations", "fixed positions", "moving stations"))
    stacked = np.stack([dataset[name].transpose(RUN_DIM, time_name, *grid_dims).values
                        for name in variables], axis=2)
    fields = torch.as_tensor(stacked.reshape(-1, *stacked.shape[2:]), dtype=torch.float32)
    interpolation = InterpolationOperator.from_grid(geometry, positions.values)
    observed_indices = [variables.index(name) for name in observed]
    observations = torch.cat([interpolation(fields[:, i]) for i in observed_indices], dim=-1)

    torch.manual_seed(seed)
    network = CoupledVAE(len(variables), tuple(geometry.shape), observations.shape[1],
                         latent_dim, width, depth, modes)
    target = resolve_device(device)
    network, fields, observations = network.to(target), fields.to(target), observations.to(target)
    generator = torch.Generator().manual_seed(seed)
    start = wallclock.perf_counter()
    losses = train_vae(network, fields, observations, steps=steps, batch_size=batch_size,
                       learning_rate=learning_rate, beta=beta, matching=matching, noise=noise,
                       generator=generator)
    seconds = wallclock.perf_counter() - start
    training = {"steps": steps, "modes": network.n_modes, "batch_size": batch_size,
                "learning_rate": learning_rate,
                "beta": beta, "matching": matching, "noise": noise, "samples": len(fields),
                "seconds": round(seconds, 3),
                "losses": {name: float(getattr(losses, name)) for name in
                           ("total", "state_reconstruction", "observation_reconstruction",
                            "kl", "matching")}}
    metadata = VAEMetadata(
        variables=variables,
        units={name: str(dataset[name].attrs.get("units", "1")) for name in variables},
        grid_dims=grid_dims, grid_shape=tuple(geometry.shape), observed=observed,
        axis_names=tuple(axis.name for axis in geometry.axes),
        stations=positions.values.tolist(), case=str(dataset.attrs.get("xldensf_case", "")),
        training=training)
    return VAEModel(network.cpu(), metadata, seed=seed)
