"""History-aware LSTM observation encoder of LD-EnSF (Xiao, Si & Chen, ICLR 2026).

The encoder maps the history of sparse observations ``y_{1:t}`` to an estimate of the
latent state and the normalised parameters, ``(s_hat_t, u_hat_t) = LSTM(y_{1:t})``. Inputs
are normalised observations ``(batch, time, n_stations, n_variables)``; missing values (NaN)
are replaced by 0 and flagged in a second channel, so gaps in the record are allowed.
The latent output is scaled by the spread of the LDNet latent trajectories it is trained
against (a buffer set at training time).

Examples
--------
>>> import torch
>>> encoder = ObservationEncoder(n_stations=3, n_variables=2, latent_dim=4, n_parameters=1)
>>> latent, parameters = encoder(torch.randn(5, 7, 3, 2))
>>> latent.shape, parameters.shape
(torch.Size([5, 7, 4]), torch.Size([5, 7, 1]))
"""

from __future__ import annotations

import torch
from torch import nn

from .config import EncoderConfig
from .normalization import AffineNormalizer

__all__ = ["ObservationEncoder"]


class ObservationEncoder(nn.Module):
    """LSTM from observation histories to ``(latent, normalised parameters)`` at every time.

    Parameters
    ----------
    n_stations, n_variables
        Layout of one observation time (fixed at training time).
    latent_dim, n_parameters
        Sizes of s and u.
    config
        LSTM sizes (:class:`~xldensf.surrogate.EncoderConfig`); default ``small()``.
    """

    def __init__(self, n_stations: int, n_variables: int, latent_dim: int, n_parameters: int,
                 config: EncoderConfig | None = None) -> None:
        super().__init__()
        config = config or EncoderConfig.small()
        self.n_stations, self.n_variables = n_stations, n_variables
        self.latent_dim, self.n_parameters = latent_dim, n_parameters
        self.lstm = nn.LSTM(2 * n_stations * n_variables, config.hidden_size,
                            num_layers=config.layers, batch_first=True)
        self.head = nn.Linear(config.hidden_size, latent_dim + n_parameters)
        self.latent_normalizer = AffineNormalizer.empty(latent_dim)

    def forward(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode normalised observations ``(batch, time, n_stations, n_variables)``.

        Returns
        -------
        latent : torch.Tensor
            ``(batch, time, latent_dim)``, the estimate of s_t given ``y_{1:t}``.
        parameters : torch.Tensor
            ``(batch, time, n_parameters)``, normalised parameter estimates.
        """
        observed = torch.isfinite(observations)
        values = torch.where(observed, observations, torch.zeros_like(observations))
        flat = torch.cat([values, observed.to(values.dtype)], dim=-1).flatten(-2)
        hidden, _ = self.lstm(flat)
        output = self.head(hidden)
        latent = self.latent_normalizer.denormalize(output[..., : self.latent_dim])
        return latent, output[..., self.latent_dim:]
