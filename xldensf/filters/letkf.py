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
from .base import EnsembleFilter, Problem, scaled_observation_anomalies
from .etkf import transform_weights
from .localization import DISTANCES, localization_weights

__all__ = ["LETKF"]


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

    def _analysis(self, problem: Problem, generator, state_positions, observation_positions):
        anomalies, scaled, innovation = scaled_observation_anomalies(problem)
        batch, members, n_state = anomalies.shape
        n_obs = scaled.shape[-1]
        if math.isinf(self.localization):
            state_positions = torch.zeros(n_state, dtype=anomalies.dtype)
            observation_positions = torch.zeros(n_obs, dtype=anomalies.dtype)
        if state_positions is None or observation_positions is None:
            raise ConfigurationError(expected_found(
                "LETKF positions", "state_positions and observation_positions",
                "None (both are needed for a finite localization radius)"))
        state_positions = torch.as_tensor(state_positions).to(anomalies.device)
        observation_positions = torch.as_tensor(observation_positions).to(anomalies.device)
        if state_positions.shape[0] != n_state or observation_positions.shape[0] != n_obs:
            raise ConfigurationError(expected_found(
                "positions length (state, obs)", (n_state, n_obs),
                (state_positions.shape[0], observation_positions.shape[0])))
        # Outer products of the observation anomaly columns: (batch, n_obs, M * M).
        outer = (scaled.transpose(1, 2)[..., :, None] * scaled.transpose(1, 2)[..., None, :])
        outer = outer.reshape(batch, n_obs, members * members)
        weighted_innovation = scaled * innovation[:, None, :]          # (batch, M, n_obs)
        mean = problem.ensemble.mean(dim=1, keepdim=True)
        analysis = torch.empty_like(problem.ensemble)
        chunk = max(1, self.chunk_elements // max(1, batch * members * members))
        for start in range(0, n_state, chunk):
            stop = min(n_state, start + chunk)
            taper = localization_weights(state_positions[start:stop], observation_positions,
                                         self.localization, self.distance, self.period,
                                         self.sphere_radius).to(anomalies)  # (chunk, n_obs)
            gram = (taper @ outer).reshape(batch, stop - start, members, members)
            projected = (weighted_innovation @ taper.T).transpose(1, 2)    # (batch, chunk, M)
            weights = transform_weights(gram, projected)               # (batch, chunk, M, M)
            local = anomalies[:, :, start:stop].permute(0, 2, 1)[..., None]  # (b, chunk, M, 1)
            increments = (weights.transpose(-1, -2) @ local)[..., 0]        # (b, chunk, M)
            analysis[:, :, start:stop] = mean[:, :, start:stop] + increments.transpose(1, 2)
        return analysis
