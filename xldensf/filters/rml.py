"""Randomised maximum likelihood: the perturbed problems of an ensemble of minimisations.

Each member minimises the variational cost with its own background, drawn from the
background error ``N(xb, B)``, and its own observations, drawn from ``N(y, R)``; for a
linear model and observation operator each minimiser is an exact draw of the smoother's
posterior (Kitanidis 1995; Oliver, He & Reynolds 1996), otherwise an approximation whose
members stay consistent with the dynamics.

Examples
--------
>>> import torch
>>> gen = torch.Generator().manual_seed(0)
>>> xb, pb, y = perturbed_members(torch.zeros(3), torch.zeros(1), torch.eye(3),
...                               torch.ones(1), torch.zeros(4, 2), torch.ones(4, 2), 8, gen)
>>> tuple(xb.shape), tuple(y.shape)
((8, 3), (4, 8, 2))
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["Initial", "perturbed_members"]

#: ``initial(params (batch, n_params)) -> (batch, n_state)``: the initial state the
#: parameters set (e.g. a source position).
Initial = Callable[[torch.Tensor], torch.Tensor]


def perturbed_members(state_b: torch.Tensor, params_b: torch.Tensor, root: torch.Tensor,
                      param_std: torch.Tensor, values: torch.Tensor, obs_std: torch.Tensor,
                      members: int, generator: torch.Generator | None = None,
                      initial: Initial | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backgrounds and observations of a randomised-maximum-likelihood ensemble.

    Member ``i`` has the background ``xb + L xi_i``, ``pb + sigma_p eta_i`` (``xi, eta``
    standard normal; where the parameters set the initial state, the state also moves by
    ``initial(p_i) - initial(pb)``) and the observations ``y + R^{1/2} eps_i``; each member's
    minimiser is then a draw of the posterior when the model and ``H`` are linear. With
    one member nothing is perturbed (the plain analysis).

    Parameters
    ----------
    state_b, params_b
        Background ``(n_state,)`` and parameters ``(n_params,)``.
    root, param_std
        ``L`` ``(n_state, r)`` and the parameters' standard deviations ``(n_params,)``.
    values, obs_std
        Observations ``(n_times, m)`` (NaN kept) and their standard deviations (same shape).
    members
        Ensemble size (1: no perturbation).
    generator
        Random generator (CPU).
    initial
        ``initial(params (batch, n_params)) -> (batch, n_state)`` or ``None``.

    Returns
    -------
    tuple of torch.Tensor
        Backgrounds ``(members, n_state)``, parameters ``(members, n_params)`` and
        observations ``(n_times, members, m)``.

    Examples
    --------
    >>> gen = torch.Generator().manual_seed(0)
    >>> xb, pb, y = perturbed_members(torch.zeros(3), torch.zeros(0), torch.eye(3),
    ...                               torch.zeros(0), torch.zeros(4, 2), torch.ones(4, 2),
    ...                               5, gen)
    >>> tuple(xb.shape), tuple(pb.shape), tuple(y.shape)
    ((5, 3), (5, 0), (4, 5, 2))
    """
    if members == 1:
        return state_b[None], params_b[None], values[:, None]

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64).to(state_b)

    params = params_b + param_std * normal(members, len(params_b))
    states = state_b + normal(members, root.shape[1]) @ root.T
    if initial is not None:
        states = states + initial(params) - initial(params_b[None])
    noise = normal(members, *values.shape).transpose(0, 1)
    return states, params, values[:, None] + obs_std[:, None] * noise
