"""Covariance localisation: distances and the Gaspari-Cohn taper.

Gaspari & Cohn (1999, QJRMS 125, eq. 4.10): a compactly supported fifth-order piecewise
rational function of ``r = distance / c``, 1 at ``r = 0`` and zero for ``r >= 2``.

Radius convention (DAPPER's, Sakov & Bertino 2011): the ``radius`` ``L`` of the filters is
the distance at which the taper equals ``exp(-1/2)`` for a Gaussian of standard deviation
``L`` with the same curvature at 0, i.e. ``c = sqrt(10/3) L`` (DAPPER rounds it to 1.82);
the taper reaches zero at ``2 c = 3.65 L``.

Distances:

- ``"planar"``: Euclidean, positions ``(n,)`` or ``(n, k)``;
- ``"periodic"``: Euclidean with each axis wrapped by ``period`` (scalar or per axis),
  e.g. the Lorenz-96 ring with ``period = 40``;
- ``"sphere"``: great circle, positions ``(n, 2)`` as (latitude, longitude) in radians;
  the distance is the angle times ``sphere_radius`` (1 = radians, 6.371e6 = metres).
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigurationError, ParameterError, check_name, expected_found

__all__ = [
    "DISTANCES",
    "GC_HALF_WIDTH_PER_RADIUS",
    "gaspari_cohn",
    "pairwise_distance",
    "localization_weights",
]

DISTANCES = ("planar", "periodic", "sphere")
#: Gaspari-Cohn half-width ``c`` per localisation radius ``L`` (``c = sqrt(10/3) L``).
GC_HALF_WIDTH_PER_RADIUS = math.sqrt(10.0 / 3.0)


def gaspari_cohn(distance: torch.Tensor, half_width: float) -> torch.Tensor:
    """The Gaspari-Cohn taper (eq. 4.10 of Gaspari & Cohn 1999) of ``distance / half_width``.

    Parameters
    ----------
    distance
        Non-negative distances, any shape.
    half_width
        ``c``: the taper is 1 at 0, about 0.208 at ``c`` and 0 from ``2 c`` on.

    Examples
    --------
    >>> gaspari_cohn(torch.tensor([0.0, 1.0, 2.0, 3.0]), 1.0)
    tensor([1.0000, 0.2083, 0.0000, 0.0000])
    """
    if not half_width > 0:
        raise ParameterError(expected_found("Gaspari-Cohn half-width", "> 0", half_width))
    if math.isinf(half_width):
        return torch.ones_like(distance)
    r = distance / half_width
    inner = 1 - 5 / 3 * r**2 + 5 / 8 * r**3 + 1 / 2 * r**4 - 1 / 4 * r**5
    outer = 4 - 5 * r + 5 / 3 * r**2 + 5 / 8 * r**3 - 1 / 2 * r**4 + 1 / 12 * r**5 \
        - 2 / 3 / r.clamp(min=1.0)
    taper = torch.where(r <= 1, inner, torch.where(r < 2, outer, torch.zeros_like(r)))
    return taper.clamp(min=0.0)


def _as_points(positions: torch.Tensor, what: str) -> torch.Tensor:
    positions = torch.as_tensor(positions)
    if positions.ndim == 1:
        positions = positions[:, None]
    if positions.ndim != 2:
        raise ConfigurationError(expected_found(f"{what} shape", "(n,) or (n, k)",
                                                tuple(positions.shape)))
    return positions


def pairwise_distance(first: torch.Tensor, second: torch.Tensor, kind: str = "planar",
                      period: float | torch.Tensor | None = None,
                      sphere_radius: float = 1.0) -> torch.Tensor:
    """Distances ``(n_first, n_second)`` between two sets of positions.

    Examples
    --------
    >>> pairwise_distance(torch.tensor([0.0, 1.0]), torch.tensor([39.0]), "periodic", 40)
    tensor([[1.],
            [2.]])
    >>> north_pole, equator = torch.tensor([[math.pi / 2, 0.0]]), torch.tensor([[0.0, 1.0]])
    >>> round(float(pairwise_distance(north_pole, equator, "sphere")), 4)  # pi/2 rad
    1.5708
    """
    check_name("distance kind", kind, DISTANCES)
    first, second = _as_points(first, "positions"), _as_points(second, "positions")
    second = second.to(first)
    if first.shape[1] != second.shape[1]:
        raise ConfigurationError(expected_found("position dimensions", first.shape[1],
                                                second.shape[1]))
    if kind == "sphere":
        if first.shape[1] != 2:
            raise ConfigurationError(expected_found(
                "sphere positions", "(n, 2) latitude, longitude in radians",
                tuple(first.shape)))
        lat1, lon1 = first[:, None, 0], first[:, None, 1]
        lat2, lon2 = second[None, :, 0], second[None, :, 1]
        haversine = (torch.sin((lat2 - lat1) / 2) ** 2
                     + torch.cos(lat1) * torch.cos(lat2) * torch.sin((lon2 - lon1) / 2) ** 2)
        return 2 * sphere_radius * torch.asin(haversine.clamp(0, 1).sqrt())
    difference = (first[:, None, :] - second[None, :, :]).abs()
    if kind == "periodic":
        if period is None:
            raise ConfigurationError(expected_found("period", "a positive period for "
                                                    "periodic distances", None))
        period = torch.as_tensor(period).to(first)
        difference = torch.remainder(difference, period)
        difference = torch.minimum(difference, period - difference)
    return difference.square().sum(-1).sqrt()


def localization_weights(state_positions: torch.Tensor, observation_positions: torch.Tensor,
                         radius: float, kind: str = "planar",
                         period: float | torch.Tensor | None = None,
                         sphere_radius: float = 1.0) -> torch.Tensor:
    """Gaspari-Cohn weights ``(n_state, n_obs)`` for localisation radius ``radius``.

    The weight multiplies the inverse observation error variance in each local analysis
    (R-localisation, Hunt et al. 2007 section 2.3).

    Examples
    --------
    >>> weights = localization_weights(torch.arange(40.0), torch.arange(40.0), 4.0,
    ...                                "periodic", 40)
    >>> int((weights[0] > 0).sum())  # 2 c = 14.6: sites 0 +- 14
    29
    """
    if not radius > 0:
        raise ParameterError(expected_found("localization radius", "> 0", radius))
    distance = pairwise_distance(state_positions, observation_positions, kind, period,
                                 sphere_radius)
    return gaspari_cohn(distance, GC_HALF_WIDTH_PER_RADIUS * radius)
