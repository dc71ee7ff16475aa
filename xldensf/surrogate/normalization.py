"""Affine normalisation stored inside the model: ``x_normalised = (x - center) / scale``.

Two constructors cover the surrogate's needs:

- :meth:`AffineNormalizer.from_spread` — mean and standard deviation (field values; scaling
  by the spread, not the maximum, is what lets LDNet learn localised fields, docs/surrogate.md);
- :meth:`AffineNormalizer.from_range` — midpoint and half range, mapping the data to
  [-1, 1] (parameters and coordinates, as in LDNet).

Examples
--------
>>> import torch
>>> data = torch.tensor([[0.0, 10.0], [2.0, 30.0]])
>>> norm = AffineNormalizer.from_range(data, dim=-1)
>>> norm.normalize(data, dim=-1)
tensor([[-1., -1.],
        [ 1.,  1.]])
>>> torch.equal(norm.denormalize(norm.normalize(data, dim=-1), dim=-1), data)
True
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["AffineNormalizer"]

#: Smallest scale used, relative to 1 + |center|, so that constant data do not divide by 0.
_SCALE_FLOOR = 1e-6


class AffineNormalizer(nn.Module):
    """Per-channel affine map; ``center`` and ``scale`` are buffers of shape ``(channels,)``.

    Parameters
    ----------
    center, scale
        1-D tensors of equal length; ``scale`` must be positive.
    """

    def __init__(self, center: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("center", center.detach().clone())
        self.register_buffer("scale", scale.detach().clone())

    @classmethod
    def empty(cls, channels: int) -> AffineNormalizer:
        """Identity normaliser with ``channels`` channels (weights loaded later)."""
        return cls(torch.zeros(channels), torch.ones(channels))

    @staticmethod
    def _reduce(data: torch.Tensor, dim: int) -> tuple[torch.Tensor, list[int]]:
        data = data.detach().to(torch.float64)
        channel_dim = dim % data.ndim
        others = [axis for axis in range(data.ndim) if axis != channel_dim]
        return data, others

    @classmethod
    def from_spread(cls, data: torch.Tensor, dim: int) -> AffineNormalizer:
        """Mean and standard deviation of each channel along axis ``dim`` of ``data``."""
        data, others = cls._reduce(data, dim)
        center = data.mean(dim=others)
        scale = data.std(dim=others, unbiased=False)
        return cls(center.to(torch.float32), cls._floor(center, scale))

    @classmethod
    def from_range(cls, data: torch.Tensor, dim: int) -> AffineNormalizer:
        """Midpoint and half range of each channel (maps the data onto [-1, 1])."""
        data, others = cls._reduce(data, dim)
        low = data.amin(dim=others)
        high = data.amax(dim=others)
        center = 0.5 * (low + high)
        return cls(center.to(torch.float32), cls._floor(center, 0.5 * (high - low)))

    @staticmethod
    def _floor(center: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return torch.maximum(scale, _SCALE_FLOOR * (1.0 + center.abs())).to(torch.float32)

    def _shaped(self, x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        shape = [1] * x.ndim
        shape[dim % x.ndim] = -1
        center = self.center.to(dtype=x.dtype, device=x.device).reshape(shape)
        scale = self.scale.to(dtype=x.dtype, device=x.device).reshape(shape)
        return center, scale

    def normalize(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """``(x - center) / scale`` with the channels on axis ``dim``."""
        center, scale = self._shaped(x, dim)
        return (x - center) / scale

    def denormalize(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """``x * scale + center`` with the channels on axis ``dim``."""
        center, scale = self._shaped(x, dim)
        return x * scale + center

    def extra_repr(self) -> str:
        return f"channels={self.center.numel()}"
