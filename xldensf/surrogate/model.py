"""The trained latent surrogate: :class:`LatentModel` (LDNet + optional observation encoder).

A :class:`LatentModel` holds the networks, the normalisation of fields, parameters and
coordinates, and the metadata that ties the nondimensional tensors back to the training
data (variable names with units and CF attributes, grid coordinates, times, parameter names
and training ranges). Its tensor methods are batched, differentiable and run on the model's
device and dtype (float32 unless converted with ``model.double()``):

===============================  ==========================================================
``encode(observations)``         observation history -> latent state s and normalised u
``advance(s, u, steps=1)``       forward-Euler steps of the latent dynamics (one per frame)
``decode(s, coords=None)``       latent state -> fields in physical units
``unroll(u, n_steps=None)``      latent trajectory from the (shifted) start
===============================  ==========================================================

Parameters ``u`` are always *normalised* (training range mapped to [-1, 1]); use
:meth:`LatentModel.normalize_parameters` to convert physical values. Fields and coordinates
are in the units of the training data.

The model file
    :meth:`LatentModel.save` (or :func:`save_model`) writes ONE file in the `safetensors
    <https://huggingface.co/docs/safetensors>`_ format (any file name; ``.ldensf`` or
    ``.safetensors`` are customary): the weights and normalisation buffers as tensors, and
    in the header's ``__metadata__`` the JSON strings ``config``, ``encoder_config``,
    ``metadata`` (variables with units, coordinates, times, parameter names and ranges,
    stations), ``seed``, the format name ``xldensf-latent-model`` and version, and the
    xldensf and torch versions. :meth:`LatentModel.from_file` (or :func:`load_model`)
    never unpickles: a missing, truncated, corrupt, foreign or incompatible file raises
    :class:`~xldensf.errors.DataError`. Writes are atomic (see :mod:`xldensf.io`).

Examples
--------
>>> import torch
>>> from xldensf.surrogate import LatentModel, LDNetConfig
>>> model = LatentModel.untrained(LDNetConfig.small().replace(latent_dim=4),
...                               coordinates=torch.rand(30, 2), n_variables=2,
...                               parameter_ranges=[(0.0, 1.0)])
>>> u = model.normalize_parameters(torch.tensor([[0.25], [0.75]]))
>>> s = model.unroll(u, n_steps=5)            # (batch, time, latent)
>>> model.decode(s).shape                     # (batch, time, variables, points)
torch.Size([2, 5, 2, 30])
>>> model.decode(model.advance(s[:, 0], u)).shape
torch.Size([2, 2, 30])
>>> import tempfile
>>> from pathlib import Path
>>> path = Path(tempfile.mkdtemp()) / "model.ldensf"
>>> model.save(path)
>>> loaded = LatentModel.from_file(path)
>>> torch.equal(loaded.decode(loaded.unroll(u, 4)), model.decode(model.unroll(u, 4)))
True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigurationError, expected_found
from ..io import (
    metadata_json,
    model_contents,
    model_file_header,
    read_model_file,
    write_safetensors,
)
from ..options import resolve_device
from .config import EncoderConfig, LDNetConfig
from .dataset import forecast
from .decoder import DecoderAtPoints, activation_name
from .encoder import ObservationEncoder
from .metadata import SurrogateMetadata
from .networks import LDNet, MLPBody, ModulatedReconstructionNetwork, ReconstructionNetwork
from .normalization import AffineNormalizer

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["LatentModel", "load_model", "save_model", "FORMAT_NAME", "FORMAT_VERSION"]

#: Format name and newest version of model files.
FORMAT_NAME = "xldensf-latent-model"
FORMAT_VERSION = 1


class LatentModel(nn.Module):
    """LDNet latent surrogate with optional LSTM observation encoder (see module docstring).

    Build one with :func:`~xldensf.surrogate.fit` (xarray) or
    :func:`~xldensf.surrogate.fit_tensors` (tensors); load one with
    :func:`~xldensf.surrogate.load_model`.

    Parameters
    ----------
    config
        LDNet architecture.
    metadata
        Names, units, coordinates and ranges (:class:`SurrogateMetadata`).
    coordinates
        Training points ``(n_points, dim)`` in physical units.
    encoder_config
        Builds an (untrained) encoder for ``metadata.stations`` when given.
    seed
        Seed of the weight initialisation and of the Fourier frequencies.
    """

    def __init__(self, config: LDNetConfig, metadata: SurrogateMetadata,
                 coordinates: torch.Tensor, encoder_config: EncoderConfig | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        coordinates = torch.as_tensor(coordinates, dtype=torch.float32)
        if coordinates.ndim != 2 or not 1 <= coordinates.shape[1] <= 3:
            raise ConfigurationError(
                expected_found("coordinates shape", "(n_points, dim) with dim 1-3",
                               tuple(coordinates.shape))
            )
        self.config = config
        self.encoder_config = encoder_config
        self.metadata = metadata
        self.seed = int(seed)
        n_variables, n_parameters = len(metadata.variables), len(metadata.parameters)
        dim = coordinates.shape[1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            generator = torch.Generator().manual_seed(self.seed)
            self.ldnet = LDNet(config, n_parameters, n_variables, dim, generator)
            self.encoder = None
            if encoder_config is not None:
                if metadata.stations is None:
                    raise ConfigurationError(
                        expected_found("metadata.stations", "station coordinates", None)
                    )
                self.encoder = ObservationEncoder(len(metadata.stations), n_variables,
                                                  config.latent_dim, n_parameters,
                                                  encoder_config)
        self.register_buffer("coordinates", coordinates.clone())
        self.field_normalizer = AffineNormalizer.empty(n_variables)
        self.coordinate_normalizer = AffineNormalizer.from_range(coordinates, dim=-1)
        ranges = torch.tensor(metadata.parameter_ranges, dtype=torch.float64).reshape(-1, 2)
        self.parameter_normalizer = AffineNormalizer.from_range(ranges.T, dim=-1)

    @classmethod
    def untrained(cls, config: LDNetConfig, coordinates: torch.Tensor, n_variables: int,
                  parameter_ranges: Sequence[tuple[float, float]], seed: int = 0) -> LatentModel:
        """A freshly initialised model with generic names (for tests and experiments)."""
        metadata = SurrogateMetadata(
            variables=tuple(f"field{i}" for i in range(n_variables)),
            coordinate_names=tuple(f"x{i}" for i in range(coordinates.shape[1])),
            parameters=tuple(f"p{i}" for i in range(len(parameter_ranges))),
            parameter_ranges=tuple(tuple(map(float, pair)) for pair in parameter_ranges),
        )
        return cls(config, metadata, coordinates, seed=seed)

    # ------------------------------------------------------------------ description
    @property
    def dtype(self) -> torch.dtype:
        return self.coordinates.dtype

    @property
    def device(self) -> torch.device:
        return self.coordinates.device

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def n_variables(self) -> int:
        return len(self.metadata.variables)

    @property
    def n_parameters(self) -> int:
        return len(self.metadata.parameters)

    @property
    def dt(self) -> float:
        """Interval between two latent steps (the training frames), in the time units."""
        times = self.metadata.times
        if len(times) < 2:
            raise ConfigurationError(expected_found("training times", ">= 2 frames", times))
        return float(times[1] - times[0])

    def __repr__(self) -> str:
        variant = "original LDNet" if self.config.original else "improved LDNet"
        stations = self.metadata.stations
        encoder = "" if self.encoder is None else f", encoder on {len(stations)} stations"
        return (f"LatentModel({variant}, latent={self.latent_dim}, "
                f"variables={list(self.metadata.variables)}, "
                f"parameters={list(self.metadata.parameters)}, points={len(self.coordinates)}"
                f"{encoder}, dtype={self.dtype}, device={self.device})")

    # ------------------------------------------------------------------ helpers
    def _tensor(self, values: Any) -> torch.Tensor:
        return torch.as_tensor(values, dtype=self.dtype, device=self.device)

    def _check_last(self, tensor: torch.Tensor, size: int, what: str) -> None:
        if tensor.ndim < 1 or tensor.shape[-1] != size:
            raise ConfigurationError(expected_found(f"{what} shape", f"(..., {size})",
                                                    tuple(tensor.shape)))

    def normalize_parameters(self, parameters: torch.Tensor) -> torch.Tensor:
        """Physical parameters ``(..., n_parameters)`` -> normalised u (training range ->
        [-1, 1])."""
        parameters = self._tensor(parameters)
        self._check_last(parameters, self.n_parameters, "parameters")
        return self.parameter_normalizer.normalize(parameters)

    def denormalize_parameters(self, normalized: torch.Tensor) -> torch.Tensor:
        """Normalised u -> physical parameters."""
        normalized = self._tensor(normalized)
        self._check_last(normalized, self.n_parameters, "normalised parameters")
        return self.parameter_normalizer.denormalize(normalized)

    # ------------------------------------------------------------------ tensor methods
    def unroll(self, parameters: torch.Tensor, n_steps: int | None = None) -> torch.Tensor:
        """Latent trajectory from the start for normalised parameters ``(..., n_parameters)``.

        Returns
        -------
        torch.Tensor
            ``(..., n_steps, latent_dim)``: s at the training frames 0, 1, ...;
            ``n_steps`` defaults to the number of training frames.
        """
        parameters = self._tensor(parameters)
        self._check_last(parameters, self.n_parameters, "normalised parameters")
        n_steps = len(self.metadata.times) if n_steps is None else int(n_steps)
        if n_steps < 1:
            raise ConfigurationError(expected_found("n_steps", ">= 1", n_steps))
        return self.ldnet.unroll(parameters, n_steps)

    def advance(self, latent: torch.Tensor, parameters: torch.Tensor,
                steps: int = 1) -> torch.Tensor:
        """Advance latent states ``(..., latent_dim)`` by ``steps`` frames with normalised
        parameters ``(..., n_parameters)`` (forward Euler; one step per training frame)."""
        latent, parameters = self._tensor(latent), self._tensor(parameters)
        self._check_last(latent, self.latent_dim, "latent")
        self._check_last(parameters, self.n_parameters, "normalised parameters")
        if steps < 0:
            raise ConfigurationError(expected_found("steps", ">= 0", steps))
        if steps == 0:
            return latent
        return self.ldnet.advance(latent, parameters, int(steps))[..., -1, :]

    def decode(self, latent: torch.Tensor, coords: torch.Tensor | None = None,
               normalized: bool = False) -> torch.Tensor:
        """Fields from latent states ``(..., latent_dim)``.

        Parameters
        ----------
        latent
            Latent states; any leading batch dims.
        coords
            Points ``(n_points, dim)`` (shared) or ``(..., n_points, dim)`` in the units of
            the training coordinates. ``None``: the training points.
        normalized
            Return normalised fields instead of physical units.

        Returns
        -------
        torch.Tensor
            ``(..., n_variables, *grid_shape)`` on the training grid, else
            ``(..., n_variables, n_points)``; differentiable in ``latent`` and ``coords``.
        """
        latent = self._tensor(latent)
        self._check_last(latent, self.latent_dim, "latent")
        on_training_grid = coords is None
        points = self.coordinates if on_training_grid else self._tensor(coords)
        self._check_last(points, self.coordinates.shape[1], "coords")
        decoder = None
        if not torch.is_grad_enabled() and points.ndim == 2:
            decoder = self.decoder_at(None if on_training_grid else points,
                                      normalized=normalized)
        if decoder is not None:  # inference: chunked, in place, first layer shared
            flat = decoder.fields(latent.reshape(-1, self.latent_dim))
            fields = flat.reshape(*latent.shape[:-1], *flat.shape[1:])
        else:
            fields = self.ldnet.reconstruct(latent,
                                            self.coordinate_normalizer.normalize(points))
            if not normalized:
                fields = self.field_normalizer.denormalize(fields)
            fields = fields.transpose(-1, -2)
        grid_shape = self.metadata.grid_shape
        if on_training_grid and grid_shape is not None:
            fields = fields.reshape(*fields.shape[:-1], *grid_shape)
        return fields

    def decoder_at(self, coords: torch.Tensor | None = None,
                   variables: Sequence[int] | None = None,
                   normalized: bool = False) -> DecoderAtPoints | None:
        """:class:`DecoderAtPoints`: the decoder at fixed points, without autograd overhead.

        Parameters
        ----------
        coords
            Points ``(n_points, dim)`` in the units of the training coordinates; ``None``:
            the training points.
        variables
            Indices of the variables to keep (default all).
        normalized
            Normalised fields instead of physical units.

        Returns
        -------
        DecoderAtPoints or None
            ``None`` when it would not reproduce :meth:`decode`: a subclass that overrides
            ``decode``, or a reconstruction network of another structure.
        """
        network = self.ldnet.reconstruction
        activation = activation_name(network.activation)
        modulated = type(network) is ModulatedReconstructionNetwork
        if (type(self).decode is not LatentModel.decode or activation is None
                or not (modulated or type(network) is ReconstructionNetwork)
                or type(network.body) is not MLPBody
                or activation_name(network.body.activation) != activation):
            return None
        points = self.coordinates if coords is None else self._tensor(coords)
        self._check_last(points, self.coordinates.shape[1], "coords")
        chosen = list(range(self.n_variables)) if variables is None else list(variables)
        output = network.body.output
        weight, bias = output.weight[chosen], output.bias[chosen]
        if not normalized:
            center = self.field_normalizer.center.to(weight)[chosen]
            scale = self.field_normalizer.scale.to(weight)[chosen]
            weight, bias = weight * scale[:, None], bias * scale + center
        with torch.no_grad():
            coordinate_term = network.coordinate_input(
                network.features(self.coordinate_normalizer.normalize(points)))
            return DecoderAtPoints(
                coordinate_term=coordinate_term,
                latent_weight=network.latent_input.weight.detach(),
                hidden=tuple((layer.weight.detach(), layer.bias.detach())
                             for layer in network.body.hidden),
                output_weight=weight.detach(), output_bias=bias.detach(),
                activation=activation, residual=bool(network.body.residual),
                modulation=(network.modulation.weight.detach(),
                            network.modulation.bias.detach()) if modulated else None)

    def encode(self, observations: torch.Tensor,
               all_times: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent state and normalised parameters from an observation history.

        Parameters
        ----------
        observations
            ``(batch, time, n_stations, n_variables)`` in physical units at
            ``metadata.stations``, one row per training frame from the first; NaN where
            missing.
        all_times
            Return the estimates after every time instead of only the last.

        Returns
        -------
        (latent, parameters)
            ``(batch, latent_dim)`` and ``(batch, n_parameters)`` (with ``all_times``:
            ``(batch, time, ...)``).
        """
        if self.encoder is None:
            raise ConfigurationError(
                expected_found("encoder", "a model trained with stations", "no encoder")
            )
        observations = self._tensor(observations)
        expected = (len(self.metadata.stations), self.n_variables)
        if observations.ndim != 4 or tuple(observations.shape[2:]) != expected:
            raise ConfigurationError(
                expected_found("observations shape", f"(batch, time, {expected[0]}, "
                               f"{expected[1]})", tuple(observations.shape))
            )
        latent, parameters = self.encoder(self.field_normalizer.normalize(observations))
        if all_times:
            return latent, parameters
        return latent[:, -1], parameters[:, -1]

    # ------------------------------------------------------------------ xarray / files
    def forecast(self, parameters: Any, times: Any = None, coords: Any = None) -> xr.Dataset:
        """Surrogate forecast as an :class:`xarray.Dataset` like the training data.

        See :func:`xldensf.surrogate.forecast` (parameters, times and points, units,
        warnings).

        Examples
        --------
        >>> from xldensf.surrogate import load_model
        >>> from importlib import resources
        >>> SHIPPED = resources.files("xldensf") / "data" / "models" / "tsunami_small.ldensf"
        >>> model = load_model(str(SHIPPED))
        >>> model.forecast({"x0": -2e5, "y0": -2e5}, times=[0.0])["eta"].dims
        ('run', 'time', 'y', 'x')
        """
        return forecast(self, parameters, times=times, coords=coords, _stacklevel=3)

    def save(self, path: str | os.PathLike) -> None:
        """Write the model to one safetensors file, atomically (see the module docstring).

        Parameters
        ----------
        path
            Target file (overwritten atomically); the tensors keep their current dtype.

        Examples
        --------
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from xldensf.surrogate import LatentModel, LDNetConfig
        >>> model = LatentModel.untrained(LDNetConfig.small().replace(latent_dim=3),
        ...                               torch.rand(10, 1), n_variables=1,
        ...                               parameter_ranges=[(0.0, 2.0)])
        >>> path = Path(tempfile.mkdtemp()) / "model.ldensf"
        >>> model.save(path)
        >>> LatentModel.from_file(path).latent_dim
        3
        """
        tensors = {key: value.detach().cpu().contiguous()
                   for key, value in self.state_dict().items()}
        encoder_config = None if self.encoder_config is None else self.encoder_config.to_dict()
        header = model_file_header(FORMAT_NAME, FORMAT_VERSION, config=self.config.to_dict(),
                                   metadata=self.metadata.to_dict(), seed=self.seed,
                                   encoder_config=encoder_config)
        write_safetensors(path, tensors, header)

    @classmethod
    def from_file(cls, path: str | os.PathLike,
                  device: torch.device | str | None = None) -> LatentModel:
        """Read a model written by :meth:`save` (never unpickles).

        Parameters
        ----------
        path
            The model file.
        device
            Device to put the model on (default CPU).

        Returns
        -------
        LatentModel
            In evaluation mode, with the dtype of the saved tensors.

        Raises
        ------
        DataError
            Missing, truncated, corrupt, foreign or incompatible file.

        Examples
        --------
        >>> from importlib import resources
        >>> SHIPPED = resources.files("xldensf") / "data" / "models" / "tsunami_small.ldensf"
        >>> LatentModel.from_file(str(SHIPPED)).metadata.parameters
        ('x0', 'y0')
        """
        contents = read_model_file(path, "model file", FORMAT_NAME, FORMAT_VERSION)
        tensors = contents.tensors
        with model_contents(path, "a model this xldensf version can build"):
            config = LDNetConfig.from_dict(contents.config)
            encoder_values = metadata_json(contents.header, "encoder_config", path)
            encoder_config = None if encoder_values is None else EncoderConfig.from_dict(
                encoder_values)
            metadata = SurrogateMetadata.from_dict(contents.metadata)
            model = cls(config, metadata, tensors["coordinates"].float(), encoder_config,
                        seed=contents.seed)
            model = model.to(tensors["coordinates"].dtype)
            model.load_state_dict(tensors, strict=True)
        return model.to(resolve_device(device)).eval()

    def grid_points(self) -> np.ndarray:
        """Training points ``(n_points, dim)`` as a float64 numpy array."""
        return self.coordinates.detach().cpu().numpy().astype(np.float64)


def save_model(model: LatentModel, path: str | os.PathLike) -> None:
    """Write ``model`` to one safetensors file (the same as ``model.save(path)``).

    Parameters
    ----------
    model
        The model; its tensors are saved in their current dtype.
    path
        Target file (overwritten atomically).

    Examples
    --------
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from xldensf.surrogate import LatentModel, LDNetConfig, load_model, save_model
    >>> model = LatentModel.untrained(LDNetConfig.small().replace(latent_dim=3),
    ...                               torch.rand(10, 1), n_variables=1,
    ...                               parameter_ranges=[(0.0, 2.0)])
    >>> path = Path(tempfile.mkdtemp()) / "model.ldensf"
    >>> save_model(model, path)
    >>> load_model(path).n_variables
    1
    """
    model.save(path)


def load_model(path: str | os.PathLike, device: torch.device | str | None = None) -> LatentModel:
    """Read a model file written by :meth:`LatentModel.save` or :func:`save_model` (never
    unpickles; the same as :meth:`LatentModel.from_file`).

    Parameters
    ----------
    path
        The model file.
    device
        Device to put the model on (default CPU).

    Returns
    -------
    LatentModel
        In evaluation mode, with the dtype of the saved tensors.

    Raises
    ------
    DataError
        Missing, truncated, corrupt, foreign or incompatible file.

    Examples
    --------
    >>> from xldensf.surrogate import load_model
    >>> from importlib import resources
    >>> SHIPPED = resources.files("xldensf") / "data" / "models" / "tsunami_small.ldensf"
    >>> load_model(str(SHIPPED)).metadata.variables
    ('u', 'v', 'eta')
    """
    return LatentModel.from_file(path, device=device)
