"""The local ensemble transform Kalman filter (LETKF).

Hunt, Kostelich & Szunyogh (2007): one ETKF analysis per state variable, each with the
observations weighted by a Gaspari-Cohn taper of their distance to that variable
(R-localisation, the taper multiplies ``R^-1``). With ``rho_ik`` the taper between state
variable ``i`` and observation ``k``, the local Gram matrix and projected innovation are

    C_i = sum_k rho_ik S_k S_k^T + (M - 1) I,     b_i = sum_k rho_ik S_k d_k,

(``S_k`` the column of scaled observation anomalies of observation ``k``), and the local
weights ``W_i`` follow from the ETKF transform (:func:`~xldensf.filters.etkf.transform_weights`).
Every ``C_i`` is built at once by one matrix product ``rho @ (S_k S_k^T)_k`` and all the
local ``M x M`` eigendecompositions run as one batched ``torch.linalg.eigh``, in chunks of
state variables to bound memory. An infinite radius gives the ETKF.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ConfigurationError, ParameterError, check_name, expected_found
from .base import EnsembleFilter, Problem, mean_and_scaled_anomalies
from .etkf import inflated_transform_weights
from .localization import DISTANCES, localization_weights

__all__ = ["LETKF"]

#: Largest taper ``(n_state, n_obs)`` kept between analyses for positions that do not change.
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
        Upper bound on the elements of one chunk of local ``M x M`` matrices (memory).

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

    def _taper(self, state_positions: torch.Tensor | None,
               observation_positions: torch.Tensor | None, n_state: int, n_obs: int,
               like: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """The whole taper ``(n_state, n_obs)`` (or ``None`` if too large) and the positions.

        A cycled filter gets the same position tensors every cycle: the taper computed for
        them is kept (with references to them and their version counters, so an in-place
        change or other tensors recompute it) and reused while it is small enough.
        """
        positions = (state_positions, observation_positions)
        key = (getattr(state_positions, "_version", None),
               getattr(observation_positions, "_version", None),
               n_state, n_obs, like.dtype, like.device)
        cached = self.__dict__.get("_taper_cache")
        if (cached is not None and cached[0][0] is positions[0]
                and cached[0][1] is positions[1] and cached[1] == key):
            return cached[2:]
        if math.isinf(self.localization):
            state_positions = torch.zeros(n_state, dtype=like.dtype)
            observation_positions = torch.zeros(n_obs, dtype=like.dtype)
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
        whole = None
        if n_state * n_obs <= TAPER_CACHE_ELEMENTS:
            whole = self._local_taper(state_positions, observation_positions, like)
            object.__setattr__(self, "_taper_cache",
                               (positions, key, whole, state_positions, observation_positions))
        return whole, state_positions, observation_positions

    def _local_taper(self, state_positions: torch.Tensor, observation_positions: torch.Tensor,
                     like: torch.Tensor) -> torch.Tensor:
        return localization_weights(state_positions, observation_positions, self.localization,
                                    self.distance, self.period, self.sphere_radius).to(like)

    def _analysis(self, problem: Problem, generator, state_positions, observation_positions):
        mean, anomalies, scaled, innovation = mean_and_scaled_anomalies(problem)
        batch, members, n_state = anomalies.shape
        n_obs = scaled.shape[-1]
        whole_taper, state_positions, observation_positions = self._taper(
            state_positions, observation_positions, n_state, n_obs, anomalies)
        # Outer products of the observation anomaly columns: (batch, n_obs, M * M).
        columns = scaled.transpose(1, 2)
        outer = (columns[..., :, None] * columns[..., None, :]).reshape(batch, n_obs,
                                                                        members * members)
        weighted_innovation = scaled * innovation[:, None, :]          # (batch, M, n_obs)
        chunk = max(1, self.chunk_elements // max(1, batch * members * members))
        pieces = []
        for start in range(0, n_state, chunk):
            stop = min(n_state, start + chunk)
            taper = (whole_taper[start:stop] if whole_taper is not None else
                     self._local_taper(state_positions[start:stop], observation_positions,
                                       anomalies))                     # (chunk, n_obs)
            gram = (taper @ outer).reshape(batch, stop - start, members, members)
            projected = (weighted_innovation @ taper.T).transpose(1, 2)    # (batch, chunk, M)
            weights = inflated_transform_weights(gram, projected, self.inflation)
            local = anomalies[:, :, start:stop].transpose(1, 2)[..., None]  # (b, chunk, M, 1)
            increments = (weights.transpose(-1, -2) @ local)[..., 0]        # (b, chunk, M)
            pieces.append(increments.transpose(1, 2))
        increments = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2)
        return mean + increments
