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
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigurationError, expected_found
from .config import EncoderConfig, LDNetConfig
from .encoder import ObservationEncoder
from .networks import LDNet
from .normalization import AffineNormalizer

__all__ = ["LatentModel", "SurrogateMetadata"]


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
        for _ in range(int(steps)):
            latent = self.ldnet.step(latent, parameters)
        return latent

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
        fields = self.ldnet.reconstruct(latent, self.coordinate_normalizer.normalize(points))
        if not normalized:
            fields = self.field_normalizer.denormalize(fields)
        fields = fields.transpose(-1, -2)
        grid_shape = self.metadata.grid_shape
        if on_training_grid and grid_shape is not None:
            fields = fields.reshape(*fields.shape[:-1], *grid_shape)
        return fields

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
    def forecast(self, parameters: Any, times: Any = None, coords: Any = None):
        """Surrogate forecast as an :class:`xarray.Dataset` like the training data.

        See :func:`xldensf.surrogate.api.forecast`.
        """
        from .api import forecast

        return forecast(self, parameters, times=times, coords=coords, _stacklevel=3)

    def save(self, path: str | os.PathLike) -> None:
        """Write the model to one ``.safetensors`` file (atomically); see
        :func:`xldensf.surrogate.checkpoint.save_model`."""
        from .checkpoint import save_model

        save_model(self, path)

    def grid_points(self) -> np.ndarray:
        """Training points ``(n_points, dim)`` as a float64 numpy array."""
        return self.coordinates.detach().cpu().numpy().astype(np.float64)
