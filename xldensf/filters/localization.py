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

import bisect
import math

import torch

from ..errors import ConfigurationError, ParameterError, check_name, expected_found

__all__ = [
    "DISTANCES",
    "GC_HALF_WIDTH_PER_RADIUS",
    "gaspari_cohn",
    "pairwise_distance",
    "localization_weights",
    "localization_neighbours",
    "NeighbourSearch",
    "localization_points",
    "candidate_blocks",
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


def _distance(first: torch.Tensor, second: torch.Tensor, kind: str,
              period: float | torch.Tensor | None, sphere_radius: float) -> torch.Tensor:
    """Distances between broadcastable ``(..., k)`` positions (elementwise, no checks)."""
    if kind == "sphere":
        lat1, lon1 = first[..., 0], first[..., 1]
        lat2, lon2 = second[..., 0], second[..., 1]
        haversine = (torch.sin((lat2 - lat1) / 2) ** 2
                     + torch.cos(lat1) * torch.cos(lat2) * torch.sin((lon2 - lon1) / 2) ** 2)
        return 2 * sphere_radius * torch.asin(haversine.clamp(0, 1).sqrt())
    difference = (first - second).abs()
    if kind == "periodic":
        period = torch.as_tensor(period).to(first)
        difference = torch.remainder(difference, period)
        difference = torch.minimum(difference, period - difference)
    return difference.square().sum(-1).sqrt()


def localization_points(first: torch.Tensor, second: torch.Tensor, kind: str = "planar",
                        period: float | torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Both position sets as ``(n, k)`` of the first one's dtype, checked for ``kind``.

    Examples
    --------
    >>> first, second = localization_points(torch.arange(3.0), torch.tensor([1, 2]), "planar")
    >>> tuple(first.shape), second.dtype
    ((3, 1), torch.float32)
    """
    check_name("distance kind", kind, DISTANCES)
    first, second = _as_points(first, "positions"), _as_points(second, "positions")
    second = second.to(first)
    if first.shape[1] != second.shape[1]:
        raise ConfigurationError(expected_found("position dimensions", first.shape[1],
                                                second.shape[1]))
    if kind == "sphere" and first.shape[1] != 2:
        raise ConfigurationError(expected_found(
            "sphere positions", "(n, 2) latitude, longitude in radians", tuple(first.shape)))
    if kind == "periodic" and period is None:
        raise ConfigurationError(expected_found("period", "a positive period for "
                                                "periodic distances", None))
    return first, second


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
    first, second = localization_points(first, second, kind, period)
    return _distance(first[:, None, :], second[None, :, :], kind, period, sphere_radius)


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


#: Relative widening of the search window beyond the cut-off ``2 c`` (round-off safety:
#: the exact Gaspari-Cohn weights decide which candidates are kept).
WINDOW_MARGIN = 1e-3


class NeighbourSearch:
    """The observations within the Gaspari-Cohn cut-off ``2 c`` of given state positions.

    The observations are sorted along one coordinate (the first axis; the latitude on the
    sphere), so the candidates of a state position are one window of that order, found by
    binary search; a window wider than the period (or latitudes outside ``[-pi/2, pi/2]``)
    takes every observation. The candidates' exact distances and weights follow, the
    pairs of zero weight are dropped: the weights are those of :func:`localization_weights`
    (to the last bit or so), in memory linear in the number of pairs within reach.

    Parameters
    ----------
    observation_positions
        ``(n_obs,)`` or ``(n_obs, k)``, in the dtype of the state positions to be searched.
    radius, kind, period, sphere_radius
        As in :func:`localization_weights`.

    Examples
    --------
    >>> search = NeighbourSearch(torch.arange(40.0), 4.0, "periodic", 40)
    >>> lo, hi = search.windows(torch.tensor([[0.0]]))
    >>> rows, columns, weights = search.neighbours(torch.tensor([[0.0]]), lo, hi)
    >>> sorted(columns.tolist()) == list(range(15)) + list(range(26, 40))  # 0 +- 14
    True
    """

    def __init__(self, observation_positions: torch.Tensor, radius: float,
                 kind: str = "planar", period: float | torch.Tensor | None = None,
                 sphere_radius: float = 1.0) -> None:
        if not radius > 0:
            raise ParameterError(expected_found("localization radius", "> 0", radius))
        observations = _as_points(observation_positions, "positions")
        self.observations, _ = localization_points(observations, observations, kind, period)
        self.kind, self.period, self.sphere_radius = kind, period, sphere_radius
        self.half_width = GC_HALF_WIDTH_PER_RADIUS * radius
        reach = 2 * self.half_width * (1 + WINDOW_MARGIN)
        key = self.observations[:, 0]
        self.key_period: float | None = None
        self.everything = not math.isfinite(reach)
        if kind == "sphere":
            reach = reach / sphere_radius
            self.everything |= bool((key.abs() > math.pi / 2 + 1e-6).any())
        elif kind == "periodic":
            self.key_period = float(torch.as_tensor(period).reshape(-1)[0])
            self.everything |= 2 * reach >= self.key_period
            key = torch.remainder(key, self.key_period)
        self.reach = reach
        self.sorted_keys, self.order = torch.sort(key)
        if self.key_period is not None and not self.everything:
            # One copy a period below and one above: a window never wraps.
            self.sorted_keys = torch.cat([self.sorted_keys - self.key_period, self.sorted_keys,
                                          self.sorted_keys + self.key_period])
            self.order = self.order.repeat(3)

    def windows(self, state_points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``lo, hi``: the candidates of state point ``i`` are ``order[lo[i]:hi[i]]``."""
        n = len(state_points)
        if self.everything:
            lo = torch.zeros(n, dtype=torch.long, device=state_points.device)
            return lo, lo + len(self.observations)
        key = state_points[:, 0].to(self.sorted_keys)
        if self.key_period is not None:
            key = torch.remainder(key, self.key_period)
        lo = torch.searchsorted(self.sorted_keys, (key - self.reach).contiguous())
        hi = torch.searchsorted(self.sorted_keys, (key + self.reach).contiguous(), right=True)
        return lo, hi

    def neighbours(self, state_points: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``rows, columns, weights`` of the pairs of non-zero weight, sorted by row.

        ``state_points`` are ``(n, k)`` positions in the observations' dtype, ``lo, hi``
        their :meth:`windows`; ``rows`` index ``state_points``, ``columns`` observations.
        """
        counts = hi - lo
        rows = torch.repeat_interleave(torch.arange(len(state_points), device=lo.device),
                                       counts)
        starts = torch.cumsum(counts, 0) - counts
        slots = torch.arange(len(rows), device=lo.device) - starts[rows] + lo[rows]
        columns = self.order[slots]
        distance = _distance(state_points[rows], self.observations[columns], self.kind,
                             self.period, self.sphere_radius)
        weights = gaspari_cohn(distance, self.half_width)
        keep = weights > 0
        return rows[keep], columns[keep], weights[keep]


def localization_neighbours(state_positions: torch.Tensor,
                            observation_positions: torch.Tensor, radius: float,
                            kind: str = "planar", period: float | torch.Tensor | None = None,
                            sphere_radius: float = 1.0, block_pairs: int = 2**22
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The non-zero entries of :func:`localization_weights` in compressed-row form.

    Returns ``offsets`` ``(n_state + 1,)``, ``columns`` and ``weights``: the observations of
    state variable ``i`` within the cut-off are ``columns[offsets[i]:offsets[i + 1]]``
    with those weights. Memory grows with the number of pairs within reach (linear in the
    dimension for a fixed radius), candidates examined ``block_pairs`` at a time.

    Examples
    --------
    >>> sites = torch.arange(40.0)
    >>> offsets, columns, weights = localization_neighbours(sites, sites, 4.0, "periodic", 40)
    >>> dense = localization_weights(sites, sites, 4.0, "periodic", 40)
    >>> int(offsets[1] - offsets[0]), torch.allclose(dense[0, columns[:29]], weights[:29])
    (29, True)
    """
    state, observations = localization_points(state_positions, observation_positions, kind,
                                          period)
    search = NeighbourSearch(observations, radius, kind, period, sphere_radius)
    lo, hi = search.windows(state)
    pieces = [(rows + start, columns, weights) for start, stop in
              candidate_blocks(hi - lo, len(state), block_pairs)
              for rows, columns, weights in [search.neighbours(state[start:stop],
                                                               lo[start:stop], hi[start:stop])]]
    rows, columns, weights = (torch.cat(part) for part in zip(*pieces, strict=True)) \
        if pieces else (torch.zeros(0, dtype=torch.long),) * 2 + (state.new_zeros(0),)
    offsets = torch.zeros(len(state) + 1, dtype=torch.long, device=state.device)
    offsets[1:] = torch.cumsum(torch.bincount(rows, minlength=len(state)), 0)
    return offsets, columns, weights


def candidate_blocks(counts: torch.Tensor, max_rows: int, max_pairs: int
                     ) -> list[tuple[int, int]]:
    """Consecutive ``(start, stop)`` row blocks of at most ``max_rows`` rows and (but for
    single rows) at most ``max_pairs`` candidates, ``counts`` the candidates per row.

    Examples
    --------
    >>> candidate_blocks(torch.tensor([3, 3, 3, 10, 1]), 4, 6)
    [(0, 2), (2, 3), (3, 4), (4, 5)]
    """
    total = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)]).tolist()
    blocks, start, n = [], 0, len(counts)
    while start < n:
        stop = min(n, start + max(1, max_rows),
                   bisect.bisect_right(total, total[start] + max_pairs) - 1)
        stop = max(stop, start + 1)
        blocks.append((start, stop))
        start = stop
    return blocks
