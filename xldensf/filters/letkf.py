"""The local ensemble transform Kalman filter (LETKF).

Hunt, Kostelich & Szunyogh (2007): one ETKF analysis per state variable, each with the
observations weighted by a Gaspari-Cohn taper of their distance to that variable
(R-localisation, the taper multiplies ``R^-1``). With ``rho_ik`` the taper between state
variable ``i`` and observation ``k``, the local Gram matrix and projected innovation are

    C_i = sum_k rho_ik S_k S_k^T + (M - 1) I,     b_i = sum_k rho_ik S_k d_k,

(``S_k`` the column of scaled observation anomalies of observation ``k``), and the local
weights ``W_i`` follow from the ETKF transform (:func:`~xldensf.filters.etkf.transform_weights`).
The ``C_i`` of a chunk of state variables are built at once by one matrix product
``rho @ (S_k S_k^T)_k`` and their ``M x M`` eigendecompositions run as one batched
``torch.linalg.eigh``; chunks bound the memory. Up to :data:`TAPER_CACHE_ELEMENTS` pairs
``rho`` is one dense matrix kept between analyses; beyond, each chunk's ``rho`` is a sparse
matrix holding only the observations within the Gaspari-Cohn cut-off ``2 c`` of its
variables (found by a sorted search, :class:`~xldensf.filters.localization.NeighbourSearch`),
so memory and work grow linearly with the dimension for a fixed radius, with the same
weights. An infinite radius gives the ETKF (one transform for every variable).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..errors import ConfigurationError, ParameterError, check_name, expected_found
from .base import EnsembleFilter, Problem, mean_and_scaled_anomalies
from .etkf import inflated_transform_weights
from .localization import (
    DISTANCES,
    NeighbourSearch,
    candidate_blocks,
    localization_points,
    localization_weights,
)

__all__ = ["LETKF"]

#: Largest dense taper ``(n_state, n_obs)``, kept between analyses for positions that do not
#: change; larger problems use sparse blocks of the observations within reach.
TAPER_CACHE_ELEMENTS = 2**22


@dataclass(frozen=True)
class LETKF(EnsembleFilter):
    """Local ETKF with Gaspari-Cohn R-localisation.

    Parameters
    ----------
    inflation
        Multiplicative inflation of the analysis anomalies (DAPPER's ``infl``).
    localization
        Localisation radius ``L`` in the units of the positions (DAPPER's ``loc_rad``):
        the Gaspari-Cohn half-width is ``c = sqrt(10/3) L`` and the taper vanishes beyond
        ``2 c``. ``math.inf`` switches localisation off (the ETKF).
    distance
        ``"planar"``, ``"periodic"`` or ``"sphere"`` (see :mod:`.localization`).
    period
        Period of ``"periodic"`` distances (scalar or per axis).
    sphere_radius
        Radius multiplying great-circle angles (1: radians; 6.371e6: metres).
    chunk_elements
        Upper bound on the elements of one chunk of local ``M x M`` matrices (memory; an
        eighth of it bounds the candidate pairs examined at once by the neighbour search).

    Examples
    --------
    >>> import torch
    >>> prior = torch.randn(10, 40, generator=torch.Generator().manual_seed(0),
    ...                     dtype=torch.float64)
    >>> sites = torch.arange(40.0, dtype=torch.float64)
    >>> letkf = LETKF(localization=4.0, distance="periodic", period=40.0)
    >>> letkf.analysis(prior, torch.zeros(40), torch.eye(40, dtype=torch.float64), 1.0,
    ...                state_positions=sites, observation_positions=sites).shape
    torch.Size([10, 40])
    """

    name = "letkf"
    needs_positions = True
    localization: float = math.inf
    distance: str = "planar"
    period: float | None = None
    sphere_radius: float = 1.0
    chunk_elements: int = 2**24

    def __post_init__(self) -> None:
        super().__post_init__()
        check_name("distance", self.distance, DISTANCES)
        if not self.localization > 0:
            raise ParameterError(expected_found("localization", "a radius > 0",
                                                self.localization))
        if self.distance == "periodic" and self.period is None:
            raise ConfigurationError(expected_found("period", "a period for distance="
                                                    "'periodic'", None))

    inflates_in_analysis = True

    def _positions(self, state_positions: torch.Tensor | None,
                   observation_positions: torch.Tensor | None, n_state: int, n_obs: int,
                   like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both position sets as checked ``(n, k)`` tensors on the device of ``like``."""
        if state_positions is None or observation_positions is None:
            raise ConfigurationError(expected_found(
                "LETKF positions", "state_positions and observation_positions",
                "None (both are needed for a finite localization radius)"))
        state_positions = torch.as_tensor(state_positions).to(like.device)
        observation_positions = torch.as_tensor(observation_positions).to(like.device)
        if state_positions.shape[0] != n_state or observation_positions.shape[0] != n_obs:
            raise ConfigurationError(expected_found(
                "positions length (state, obs)", (n_state, n_obs),
                (state_positions.shape[0], observation_positions.shape[0])))
        return localization_points(state_positions, observation_positions, self.distance,
                                   self.period)

    def _taper_blocks(self, state_positions: torch.Tensor | None,
                      observation_positions: torch.Tensor | None, n_state: int, n_obs: int,
                      max_rows: int, like: torch.Tensor
                      ) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Row blocks ``(start, stop, taper)`` of the taper ``(stop - start, n_obs)``.

        Up to :data:`TAPER_CACHE_ELEMENTS` pairs the taper is one dense matrix, kept between
        analyses: a cycled filter gets the same position tensors every cycle, so the taper
        is reused while they stay the same objects (with the same version counters: an
        in-place change or other tensors recompute it). Beyond, each block is a sparse
        matrix of the observations within the cut-off of its state variables
        (:class:`.NeighbourSearch`), so memory stays linear in the dimension.
        """
        positions = (state_positions, observation_positions)
        key = (getattr(state_positions, "_version", None),
               getattr(observation_positions, "_version", None),
               n_state, n_obs, like.dtype, like.device)
        cached = self.__dict__.get("_taper_cache")
        if not (cached is not None and cached[0][0] is positions[0]
                and cached[0][1] is positions[1] and cached[1] == key):
            state, observations = self._positions(state_positions, observation_positions,
                                                  n_state, n_obs, like)
            if n_state * n_obs > TAPER_CACHE_ELEMENTS:
                search = NeighbourSearch(observations, self.localization, self.distance,
                                         self.period, self.sphere_radius)
                lo, hi = search.windows(state)
                for start, stop in candidate_blocks(hi - lo, max_rows, self.chunk_elements // 8):
                    rows, columns, weights = search.neighbours(state[start:stop],
                                                               lo[start:stop], hi[start:stop])
                    yield start, stop, _sparse_rows(rows, columns, weights.to(like),
                                                    stop - start, n_obs)
                return
            whole = localization_weights(state, observations, self.localization, self.distance,
                                         self.period, self.sphere_radius).to(like)
            cached = (positions, key, whole)
            object.__setattr__(self, "_taper_cache", cached)
        for start in range(0, n_state, max_rows):
            stop = min(n_state, start + max_rows)
            yield start, stop, cached[2][start:stop]

    def _analysis(self, problem: Problem, generator, state_positions, observation_positions):
        mean, anomalies, scaled, innovation = mean_and_scaled_anomalies(problem)
        batch, members, n_state = anomalies.shape
        n_obs = scaled.shape[-1]
        if math.isinf(self.localization):  # every taper is 1: one ETKF transform
            gram = scaled @ scaled.transpose(1, 2)
            projected = (scaled @ innovation[..., None])[..., 0]
            weights = inflated_transform_weights(gram, projected, self.inflation)
            return mean + weights.transpose(-1, -2) @ anomalies
        columns = scaled.transpose(1, 2)                                   # (batch, n_obs, M)
        weighted_innovation = scaled * innovation[:, None, :]          # (batch, M, n_obs)
        outer = features = None
        max_rows = max(1, self.chunk_elements // max(1, batch * members * members))
        pieces = []
        for start, stop, taper in self._taper_blocks(
                state_positions, observation_positions, n_state, n_obs, max_rows, anomalies):
            if taper.is_sparse:
                if features is None:
                    features = _observation_features(columns, weighted_innovation)
                local_features = torch.sparse.mm(taper, features).reshape(
                    stop - start, batch, -1).transpose(0, 1)              # (batch, chunk, F)
                gram = local_features[..., :members * members].reshape(
                    batch, stop - start, members, members)
                projected = local_features[..., members * members:]        # (batch, chunk, M)
            else:
                if outer is None:  # the anomaly columns' outer products (batch, n_obs, M * M)
                    outer = (columns[..., :, None] * columns[..., None, :]).reshape(
                        batch, n_obs, members * members)
                gram = (taper @ outer).reshape(batch, stop - start, members, members)
                projected = (weighted_innovation @ taper.T).transpose(1, 2)  # (batch, chunk, M)
            weights = inflated_transform_weights(gram, projected, self.inflation)
            local = anomalies[:, :, start:stop].transpose(1, 2)[..., None]  # (b, chunk, M, 1)
            increments = (weights.transpose(-1, -2) @ local)[..., 0]        # (b, chunk, M)
            pieces.append(increments.transpose(1, 2))
        increments = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2)
        return mean + increments


def _observation_features(columns: torch.Tensor, weighted_innovation: torch.Tensor
                          ) -> torch.Tensor:
    """One row per observation ``k``: ``S_k S_k^T`` then ``S_k d_k`` of every batch problem.

    ``columns`` ``(batch, n_obs, M)``, ``weighted_innovation`` ``(batch, M, n_obs)``; the
    result ``(n_obs, batch * (M * M + M))`` is written in place (no separate outer-product
    tensor), so that one sparse product with the taper gives every ``C_i`` and ``b_i``.
    """
    batch, n_obs, members = columns.shape
    features = columns.new_empty(n_obs, batch, members * members + members)
    torch.mul(columns.transpose(0, 1)[..., :, None], columns.transpose(0, 1)[..., None, :],
              out=features[..., :members * members].view(n_obs, batch, members, members))
    features[..., members * members:] = weighted_innovation.permute(2, 0, 1)
    return features.reshape(n_obs, -1)


def _sparse_rows(rows: torch.Tensor, columns: torch.Tensor, weights: torch.Tensor,
                 n_rows: int, n_columns: int) -> torch.Tensor:
    """A sparse COO ``(n_rows, n_columns)`` taper from its non-zero entries."""
    return torch.sparse_coo_tensor(torch.stack([rows, columns]), weights, (n_rows, n_columns),
                                   check_invariants=False)
