"""The ensemble transform Kalman filter (ETKF), symmetric square root.

Bishop, Etherton & Majumdar (2001); the symmetric square-root form of Hunt, Kostelich &
Szunyogh (2007, eqs. 20-25) and Sakov & Oke (2008). With ``S = (H(E) - mean) R^-1/2``
(members x n_obs) and the scaled mean innovation ``d = (y - mean H(E)) R^-1/2``:

    C   = S S^T + (M - 1) I          (M x M, eigendecomposed C = V diag(lambda) V^T)
    w   = C^-1 S d                    (mean update weights)
    T   = sqrt(M - 1) C^-1/2          (symmetric, so the analysis mean is mean + w^T A)
    E_a = mean + (w 1^T + T)^T A

A random mean-preserving rotation ``Q`` (``Q 1 = 1``) can follow (``rotate=True``), as
DAPPER's ``rot=True``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from .base import EnsembleFilter, Problem, add_to_diagonal, mean_and_scaled_anomalies

__all__ = [
    "ETKF", "transform_weights", "inflated_transform_weights", "random_mean_preserving_rotation",
]


def transform_weights(gram: torch.Tensor, projected_innovation: torch.Tensor
                      ) -> torch.Tensor:
    """The ETKF weight matrix ``W = w 1^T + T`` from the batched Gram matrices.

    Parameters
    ----------
    gram
        ``S S^T`` of shape ``(..., M, M)`` (the scaled observation anomalies' Gram matrix,
        localised or not).
    projected_innovation
        ``S d`` of shape ``(..., M)``.

    Returns
    -------
    torch.Tensor
        ``(..., M, M)`` with ``W[..., m, n]`` the weight of prior anomaly ``m`` in analysis
        member ``n``.

    Examples
    --------
    >>> W = transform_weights(torch.zeros(3, 3), torch.zeros(3))  # no information
    >>> torch.allclose(W, torch.eye(3))
    True
    """
    return inflated_transform_weights(gram, projected_innovation, 1.0)


def inflated_transform_weights(gram: torch.Tensor, projected_innovation: torch.Tensor,
                               inflation: float) -> torch.Tensor:
    """:func:`transform_weights` with the transform ``T`` multiplied by ``inflation``.

    ``T 1 = 1`` (the anomalies' Gram matrix annihilates ``1``), so ``w 1^T + inflation T``
    gives the analysis mean of ``w`` and anomalies inflated by ``inflation``: DAPPER's
    multiplicative inflation, without a separate pass over the analysis ensemble.

    Examples
    --------
    >>> W = inflated_transform_weights(torch.zeros(2, 2), torch.zeros(2), 1.5)
    >>> W.diagonal().tolist()
    [1.5, 1.5]
    """
    members = gram.shape[-1]
    eigenvalues, vectors = torch.linalg.eigh(add_to_diagonal(gram, members - 1))
    # W = V [diag(sqrt((M-1)/lambda)) V^T + (V^T b / lambda) 1^T]: T and w in one product.
    coordinates = (projected_innovation[..., None, :] @ vectors)[..., 0, :] / eigenvalues
    scale = ((members - 1) / eigenvalues).sqrt()
    if inflation != 1.0:
        scale = scale * inflation
    return vectors @ torch.addcmul(coordinates[..., :, None], scale[..., :, None],
                                   vectors.transpose(-1, -2))


@functools.lru_cache(maxsize=16)
def _ones_and_complement(members: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``1/sqrt(M)`` as a column and an orthonormal basis of its complement (float64)."""
    ones = torch.full((members, 1), members ** -0.5, dtype=torch.float64)
    basis, _ = torch.linalg.qr(torch.cat([ones, torch.eye(members, dtype=torch.float64)[:, 1:]],
                                         dim=1))
    return ones, basis[:, 1:]


@functools.lru_cache(maxsize=16)
def _mean_projector_and_complement(members: int) -> tuple[torch.Tensor, torch.Tensor,
                                                          torch.Tensor]:
    """``1 1^T / M``, the complement basis of :func:`_ones_and_complement` and its transpose."""
    ones, complement = _ones_and_complement(members)
    return ones @ ones.T, complement, complement.T.contiguous()


def random_mean_preserving_rotation(members: int, batch: int, generator: torch.Generator | None,
                                    dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Random orthogonal matrices ``(batch, M, M)`` that map the vector of ones to itself.

    Haar-distributed on the orthogonal complement of ``1``, identity along ``1``.

    Examples
    --------
    >>> Q = random_mean_preserving_rotation(4, 1, torch.Generator().manual_seed(0),
    ...                                     torch.float64, torch.device("cpu"))[0]
    >>> bool(torch.allclose(Q @ torch.ones(4, dtype=torch.float64), torch.ones(4,
    ...      dtype=torch.float64)) and torch.allclose(Q @ Q.T, torch.eye(4, dtype=Q.dtype)))
    True
    """
    projector, complement, complement_t = _mean_projector_and_complement(members)
    gaussian = torch.randn(batch, members - 1, members - 1, generator=generator,
                           dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[..., None, :]  # Haar measure
    rotation = torch.baddbmm(projector, complement @ q, complement_t.expand(batch, -1, -1))
    if rotation.dtype != dtype or rotation.device != device:
        rotation = rotation.to(dtype=dtype, device=device)
    return rotation


@dataclass(frozen=True)
class ETKF(EnsembleFilter):
    """Ensemble transform Kalman filter with the symmetric square root.

    Parameters
    ----------
    inflation
        Multiplicative inflation of the analysis anomalies (DAPPER's ``infl``).
    rotate
        Apply a random mean-preserving rotation to the analysis anomalies (DAPPER's
        ``rot=True``); needs ``generator`` for reproducibility.

    Examples
    --------
    >>> import torch
    >>> prior = torch.randn(20, 3, generator=torch.Generator().manual_seed(0),
    ...                     dtype=torch.float64)
    >>> analysis = ETKF().analysis(prior, torch.zeros(3), torch.eye(3), 1e-6)
    >>> bool(analysis.abs().max() < 1e-2)  # near-perfect observations of 0
    True
    """

    name = "etkf"
    rotate: bool = False

    inflates_in_analysis = True

    def _analysis(self, problem: Problem, generator, state_positions, observation_positions):
        mean, anomalies, scaled, innovation = mean_and_scaled_anomalies(problem)
        gram = scaled @ scaled.transpose(-1, -2)
        projected = (scaled @ innovation[..., None])[..., 0]
        weights = inflated_transform_weights(gram, projected, self.inflation)
        if self.rotate:
            batch, members = weights.shape[:2]
            rotation = random_mean_preserving_rotation(members, batch, generator, weights.dtype,
                                                       weights.device)
            weights = weights @ rotation.transpose(-1, -2)
        return torch.baddbmm(mean, weights.transpose(-1, -2), anomalies)
