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
import math
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
from .networks import LDNet, MLPBody, ModulatedReconstructionNetwork, ReconstructionNetwork
from .normalization import AffineNormalizer

__all__ = ["LatentModel", "SurrogateMetadata", "DecoderAtPoints"]

#: Rows ``(latent state, point)`` decoded at once by the inference path of
#: :meth:`LatentModel.decode`: activations of ``rows x width`` floats stay a few MB (in cache,
#: no fresh page-faulted memory per layer), the matrix products stay large enough to be fast.
_DECODE_ROWS = 4096


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


_ACTIVATION_NAMES = {nn.Tanh: "tanh", nn.SiLU: "silu"}


def _activation_name(module: nn.Module) -> str | None:
    """``"tanh"``, ``"silu"`` or ``"gelu"`` (exact) for the activations of the networks."""
    if isinstance(module, nn.GELU):
        return "gelu" if module.approximate == "none" else None
    return _ACTIVATION_NAMES.get(type(module))


def _activate(pre: torch.Tensor, name: str, inplace: bool = False) -> torch.Tensor:
    if name == "tanh":
        return pre.tanh_() if inplace else torch.tanh(pre)
    if name == "silu":
        return nn.functional.silu(pre, inplace=inplace)
    return nn.functional.gelu(pre)


def _activation_slope(pre: torch.Tensor, post: torch.Tensor, name: str) -> torch.Tensor:
    """Derivative of the activation at ``pre`` (``post`` is its value)."""
    if name == "tanh":
        return 1.0 - post.square()
    if name == "silu":
        sigmoid = torch.sigmoid(pre)
        return sigmoid * (1.0 + pre * (1.0 - sigmoid))
    return (0.5 * (1.0 + torch.erf(pre / math.sqrt(2.0)))
            + pre * torch.exp(-0.5 * pre.square()) / math.sqrt(2.0 * math.pi))


@dataclass(eq=False)
class DecoderAtPoints:
    """The reconstruction ``R(s, x)`` at fixed points, as plain tensors.

    Built by :meth:`LatentModel.decoder_at`. The coordinate half of the first layer (Fourier
    features of the points and their linear map) is computed once; the output layer keeps
    the chosen variables, with the physical units folded in. Two uses:

    - :meth:`fields`: chunked, in-place evaluation without autograd (the inference path of
      :meth:`LatentModel.decode`);
    - :meth:`fields_and_saved` then :meth:`pullback`: the vector-Jacobian product
      ``v -> (dR/ds)^T v`` by hand (no autograd graph), e.g. for the gradient of a
      likelihood at observation stations, called many times per analysis.

    Both reuse buffers kept in ``workspace`` between calls (:meth:`release` frees them).

    Attributes
    ----------
    coordinate_term
        ``(n_points, width)``: first-layer coordinate term plus bias.
    latent_weight
        ``(width, latent_dim)``: first-layer latent weights.
    hidden
        ``(weight, bias)`` of each hidden layer.
    output_weight, output_bias
        ``(n_variables, width)`` and ``(n_variables,)`` of the chosen variables.
    activation
        ``"tanh"``, ``"silu"`` or ``"gelu"``.
    residual
        Whether the hidden layers are residual.
    modulation
        ``(weight, bias)`` of the FiLM map ``s -> (scale, shift)`` of each hidden layer
        (``act((W h + b) * (1 + scale) + shift)``), or ``None``.
    workspace
        Reusable activation buffers by use.

    Examples
    --------
    >>> import torch
    >>> from xldensf.surrogate import LatentModel, LDNetConfig
    >>> model = LatentModel.untrained(LDNetConfig.small().replace(latent_dim=3),
    ...     coordinates=torch.rand(20, 2), n_variables=2, parameter_ranges=[(0.0, 1.0)])
    >>> stations = torch.rand(5, 2)
    >>> decoder = model.decoder_at(stations, variables=[1])
    >>> latent = torch.randn(4, 3)
    >>> fields, saved = decoder.fields_and_saved(latent)        # (members, points, variables)
    >>> torch.allclose(fields, model.decode(latent, stations)[:, 1:].transpose(-1, -2),
    ...                atol=1e-5)
    True
    >>> decoder.pullback(saved, torch.ones_like(fields)).shape  # (members, latent_dim)
    torch.Size([4, 3])
    """

    coordinate_term: torch.Tensor
    latent_weight: torch.Tensor
    hidden: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    output_weight: torch.Tensor
    output_bias: torch.Tensor
    activation: str
    residual: bool
    modulation: tuple[torch.Tensor, torch.Tensor] | None = None
    workspace: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_points(self) -> int:
        return self.coordinate_term.shape[0]

    @property
    def width(self) -> int:
        return self.coordinate_term.shape[1]

    def _buffers(self, key: str, rows: int, count: int, like: torch.Tensor) -> list:
        """``count`` reusable ``(rows, width)`` buffers: the sampler calls the decoder
        hundreds of times with the same shapes, and fresh activations each time cost more
        (page faults of newly mapped memory) than the small products themselves."""
        buffers = self.workspace.get(key)
        if buffers is None or buffers[0].shape[0] < rows or buffers[0].dtype != like.dtype:
            buffers = [like.new_empty(rows, self.width) for _ in range(count)]
            self.workspace[key] = buffers
        return [buffer[:rows] for buffer in buffers]

    def release(self) -> None:
        """Free the reusable buffers (they are rebuilt on the next call)."""
        self.workspace.clear()

    def _activate_into(self, pre: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if self.activation == "tanh":
            return torch.tanh(pre, out=out)
        return out.copy_(_activate(pre, self.activation))

    def _film(self, latent: torch.Tensor) -> torch.Tensor | None:
        """FiLM ``(members, hidden layers, 2, width)`` (``1 + scale``, shift), or ``None``."""
        if self.modulation is None:
            return None
        weight, bias = self.modulation
        film = torch.addmm(bias, latent, weight.T).view(len(latent), len(self.hidden), 2, -1)
        film[:, :, 0].add_(1.0)
        return film

    def fields(self, latent: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Fields ``(members, n_variables, n_points)`` of latent states ``(members,
        latent_dim)``, in chunks of about ``_DECODE_ROWS`` rows, without autograd.

        ``out``: a tensor of that shape to write into (else a new one).
        """
        n_states, n_points = latent.shape[0], self.n_points
        if out is None:
            out = latent.new_empty(n_states, self.output_weight.shape[0], n_points)
        point_chunk = min(n_points, _DECODE_ROWS)
        state_chunk = max(1, _DECODE_ROWS // n_points)
        hidden_buffer, update_buffer = self._buffers("fields", state_chunk * point_chunk, 2,
                                                     latent)
        with torch.no_grad():
            latent_term = latent @ self.latent_weight.T
            film = self._film(latent)
            for first_state in range(0, n_states, state_chunk):
                chosen = slice(first_state, first_state + state_chunk)
                states = latent_term[chosen, None, :]
                for first_point in range(0, n_points, point_chunk):
                    points = self.coordinate_term[first_point:first_point + point_chunk]
                    shape = (len(states), len(points), -1)
                    rows = len(states) * len(points)
                    hidden, update = hidden_buffer[:rows], update_buffer[:rows]
                    torch.add(points, states, out=hidden.view(shape))
                    self._activate_into(hidden, hidden)
                    for index, (weight, bias) in enumerate(self.hidden):
                        torch.addmm(bias, hidden, weight.T, out=update)
                        if film is not None:
                            update.view(shape).mul_(film[chosen, index, 0, None]).add_(
                                film[chosen, index, 1, None])
                        self._activate_into(update, update)
                        if self.residual:
                            hidden.add_(update)
                        else:
                            hidden, update = update, hidden
                    values = torch.addmm(self.output_bias, hidden, self.output_weight.T)
                    out[chosen, :, first_point:first_point + len(points)] = values.view(
                        shape).transpose(1, 2)
        return out

    def fields_and_saved(self, latent: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """Fields ``(members, n_points, n_variables)`` and what :meth:`pullback` needs.

        Without autograd; the saved activations live in reusable buffers, valid until the
        next call.
        """
        n_states = latent.shape[0]
        rows = n_states * self.n_points
        layers = 1 + len(self.hidden)
        kept = 3 if self.modulation is not None else 2   # FiLM: also the layers' W h + b
        buffers = self._buffers("saved", rows, kept * layers + 1, latent)
        pres, posts, hidden = buffers[:layers], buffers[layers:2 * layers], buffers[-1]
        linears = buffers[2 * layers:3 * layers] if kept == 3 else [None] * layers
        shape = (n_states, self.n_points, -1)
        with torch.no_grad():
            film = self._film(latent)
            torch.add(self.coordinate_term, (latent @ self.latent_weight.T)[:, None, :],
                      out=pres[0].view(shape))
            first = self._activate_into(pres[0], posts[0])
            hidden = hidden.copy_(first) if self.residual else first
            for index, (weight, bias) in enumerate(self.hidden):
                pre, post = pres[index + 1], posts[index + 1]
                if film is None:
                    torch.addmm(bias, hidden, weight.T, out=pre)
                else:
                    linear = torch.addmm(bias, hidden, weight.T, out=linears[index + 1])
                    torch.addcmul(film[:, index, 1, None], linear.view(shape),
                                  film[:, index, 0, None], out=pre.view(shape))
                update = self._activate_into(pre, post)
                hidden = hidden.add_(update) if self.residual else update
            fields = torch.addmm(self.output_bias, hidden, self.output_weight.T)
        return fields.view(shape), (list(zip(pres, posts, linears)), film)

    def _slope_into(self, pre: torch.Tensor, post: torch.Tensor,
                    out: torch.Tensor) -> torch.Tensor:
        if self.activation == "tanh":
            return torch.mul(post, post, out=out).mul_(-1.0).add_(1.0)
        return out.copy_(_activation_slope(pre, post, self.activation))

    def pullback(self, saved: tuple, cotangent: torch.Tensor) -> torch.Tensor:
        """``(dR/ds)^T cotangent``: ``(members, latent_dim)`` from a cotangent of the fields
        ``(members, n_points, n_variables)`` (the reverse pass of :meth:`fields_and_saved`,
        with its saved activations)."""
        layers, film = saved
        n_states = cotangent.shape[0]
        rows = n_states * self.n_points
        shape = (n_states, self.n_points, -1)
        gradient, slope, spare = self._buffers("pullback", rows, 3, cotangent)
        film_gradient = None if film is None else torch.empty_like(film)
        with torch.no_grad():
            torch.mm(cotangent.reshape(rows, -1), self.output_weight, out=gradient)
            for index in reversed(range(len(self.hidden))):
                pre, post, linear = layers[index + 1]
                self._slope_into(pre, post, slope).mul_(gradient)   # d/d(pre-activation)
                if film_gradient is not None:
                    film_gradient[:, index, 0] = (slope.view(shape) * linear.view(shape)).sum(1)
                    film_gradient[:, index, 1] = slope.view(shape).sum(dim=1)
                    slope.view(shape).mul_(film[:, index, 0, None])  # d/d(W h + b)
                weight = self.hidden[index][0]
                if self.residual:
                    gradient.addmm_(slope, weight)
                else:
                    gradient, spare = torch.mm(slope, weight, out=spare), gradient
            self._slope_into(*layers[0][:2], slope).mul_(gradient)
            result = slope.view(shape).sum(dim=1) @ self.latent_weight
            if film_gradient is not None:
                result.addmm_(film_gradient.flatten(1), self.modulation[0])
            return result


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
        activation = _activation_name(network.activation)
        modulated = type(network) is ModulatedReconstructionNetwork
        if (type(self).decode is not LatentModel.decode or activation is None
                or not (modulated or type(network) is ReconstructionNetwork)
                or type(network.body) is not MLPBody
                or _activation_name(network.body.activation) != activation):
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
