"""Filters around filters: standardised, bounded and split analyses, and a regression update.

Each wrapper has the ``analysis(ensemble, observations, operator, obs_std, generator,
**positions)`` method of :class:`~xldensf.filters.base.EnsembleFilter` and can be cycled by
:func:`~xldensf.filters.cycling.cycle` like a kernel:

- :class:`StandardizedAnalysis` runs a kernel on ``z = (x - shift) / scale`` (the forecast
  ensemble's mean and spread, per component or per block), with each scale capped so that
  the observations stay resolvable by an explicit sampler; the operator and observations
  are transformed to match, so the same problem is analysed;
- :class:`BoundedAnalysis` keeps the leading components of the analysis in a box;
- :class:`SplitGlobalAnalysis` analyses the leading components with a (local) kernel and
  the trailing ones (global parameters) with another;
- :func:`regress_unobserved` updates components without a likelihood gradient by regression
  on the analysis increments of the others.

Examples
--------
>>> import torch
>>> from xldensf.filters import get_filter
>>> generator = torch.Generator().manual_seed(0)
>>> prior = 100.0 + 10.0 * torch.randn(40, 2, generator=generator, dtype=torch.float64)
>>> wrapped = StandardizedAnalysis(get_filter("etkf"))
>>> analysis = wrapped.analysis(prior, torch.tensor([100.0]),
...                             torch.tensor([[1.0, 0.0]], dtype=torch.float64), 1.0)
>>> bool(analysis[:, 0].std() < prior[:, 0].std())
True
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import DataError, expected_found
from .base import ObservationOperator

__all__ = [
    "StandardizedAnalysis",
    "BoundedAnalysis",
    "SplitGlobalAnalysis",
    "regress_unobserved",
    "ensemble_linearization",
    "sigma_point_linearization",
    "cheaper_linearization",
    "LINEARIZATIONS",
    "DEFAULT_SCALE_CAP",
]

#: Cap of a standardised component's scale: the diagonal of ``J^T R^-1 J`` (J at the
#: forecast mean) is at most ``DEFAULT_SCALE_CAP ** 2`` in standardised units, which the
#: default 100 Euler-Maruyama steps of the EnSF integrate stably (``dt max sigma^2 h`` is
#: then about 0.04).
DEFAULT_SCALE_CAP = 3.0
#: Names of :class:`StandardizedAnalysis`'s ``linearize`` modes (``True`` is ``"tangent"``).
LINEARIZATIONS = ("tangent", "ensemble", "sigma-points")
#: Step of :func:`sigma_point_linearization` along each principal axis, in standard
#: deviations: ``sqrt(3)``, the nodes of the three-point Gauss-Hermite rule (the
#: divided-difference filter's choice for a Gaussian), which makes the central difference
#: of a cubic along the axis equal its Gaussian expectation of the slope.
SIGMA_POINT_STEP = 3.0 ** 0.5
#: Scale given to a component or block without spread (e.g. velocities that all start at
#: rest): the ensemble cannot update it, and a tiny scale keeps a sampler's unit noise out.
_NO_SPREAD_SCALE = 1e-8


def _block_moments(ensemble: torch.Tensor, blocks: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation ``(n_state,)`` over members and the components of each
    block (``blocks[i]``: block index of component ``i``)."""
    n_blocks = int(blocks.max()) + 1
    counts = torch.bincount(blocks, minlength=n_blocks).to(ensemble) * ensemble.shape[0]
    sums = torch.zeros(n_blocks, dtype=ensemble.dtype, device=ensemble.device)
    mean = sums.index_add(0, blocks, ensemble.sum(dim=0)) / counts
    squares = (ensemble - mean[blocks]).square().sum(dim=0)
    variance = sums.index_add(0, blocks, squares) / (counts - 1).clamp(min=1)
    return mean[blocks], variance.sqrt()[blocks]


def _block_minimum(values: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """The minimum of ``values`` over each block, broadcast back to the components."""
    n_blocks = int(blocks.max()) + 1
    start = torch.full((n_blocks,), torch.inf, dtype=values.dtype, device=values.device)
    return start.scatter_reduce(0, blocks, values, reduce="amin")[blocks]


class StandardizedAnalysis:
    """A kernel run on ``z = (x - shift) / scale``, one shift and scale per component (or
    per block of components) from the forecast ensemble.

    The score filter is not invariant to the state's scaling: its reverse diffusion adds
    unit noise, and its explicit steps become unstable when the likelihood is stiff. Each
    scale is therefore capped so that ``diag(J^T R^-1 J) <= cap ** 2`` in ``z`` (J at the
    forecast mean; per block: the block's largest), which keeps the likelihood resolvable.

    Parameters
    ----------
    kernel
        The filter to run on the standardised problem.
    blocks
        ``(n_state,)`` integer block index of each component (one mean and standard
        deviation per block: e.g. one per variable of a gridded state and one per
        parameter), or ``None``: per component.
    cap
        The cap above; ``None``: no cap.
    fixed_scale
        Instead of the ensemble's moments, ``z = x / fixed_scale`` for every component (no
        shift, no cap): e.g. ``1.0`` runs the kernel on the state itself, ``0.01`` on the
        state times 100 (the LD-EnSF reference code's latent scaling).
    n_regressed
        Trailing components updated by :func:`regress_unobserved` afterwards (components
        that receive no likelihood gradient, e.g. parameters under a decoder likelihood).
    linearize
        ``True`` (or ``"tangent"``): replace the operator by its tangent at the forecast mean
        (one Jacobian per analysis instead of an operator evaluation per sampler step);
        ``"ensemble"``: by its statistical linearisation over the forecast ensemble
        (:func:`ensemble_linearization`, one operator pass per analysis);
        ``"sigma-points"``: by that of a Gaussian with the ensemble's mean and covariance
        (:func:`sigma_point_linearization`, ``2 r + 1`` operator evaluations for an
        ensemble of rank ``r``, at most ``2 n_state + 1``, whatever the member count).
    linearize_members
        ``"ensemble"`` only: fit the linearisation on the first this many members (an
        operator pass over fewer members; the forecast members are exchangeable), or
        ``None``: on all of them.

    Examples
    --------
    >>> import torch
    >>> from xldensf.filters import get_filter
    >>> prior = torch.randn(30, 3, generator=torch.Generator().manual_seed(1),
    ...                     dtype=torch.float64)
    >>> ensf = StandardizedAnalysis(get_filter("ensf"), blocks=torch.tensor([0, 0, 1]))
    >>> ensf.analysis(prior, torch.tensor([0.5]),
    ...               torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64), 0.1).shape
    torch.Size([30, 3])
    """

    def __init__(self, kernel: Any, *, blocks: torch.Tensor | None = None,
                 cap: float | None = DEFAULT_SCALE_CAP, fixed_scale: float | None = None,
                 n_regressed: int = 0, linearize: bool | str = False,
                 linearize_members: int | None = None) -> None:
        if fixed_scale is not None and not 0 < fixed_scale < float("inf"):
            raise DataError(expected_found("fixed_scale", "a positive number or None",
                                           fixed_scale))
        self.kernel, self.name, self.blocks, self.cap = kernel, kernel.name, blocks, cap
        self.fixed_scale = fixed_scale
        if linearize not in (True, False, *LINEARIZATIONS):
            raise DataError(expected_found("linearize", f"True, False or one of "
                                           f"{list(LINEARIZATIONS)}", linearize))
        if linearize_members is not None and not (isinstance(linearize_members, int)
                                                  and linearize_members >= 2):
            raise DataError(expected_found("linearize_members", "an integer >= 2 or None",
                                           linearize_members))
        self.n_regressed, self.linearize = n_regressed, linearize
        self.linearize_members = linearize_members

    def standardization(self, ensemble: torch.Tensor, operator: ObservationOperator,
                        inverse_std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(shift, scale)``, each ``(n_state,)``, for the forecast ``ensemble``."""
        if self.fixed_scale is not None:
            return (torch.zeros_like(ensemble[0]),
                    torch.full_like(ensemble[0], float(self.fixed_scale)))
        if self.blocks is None:
            shift, scale = ensemble.mean(dim=0), ensemble.std(dim=0)
        else:
            if self.blocks.shape != ensemble.shape[-1:]:
                raise DataError(expected_found("standardisation blocks", ensemble.shape[-1],
                                               tuple(self.blocks.shape)))
            shift, scale = _block_moments(ensemble, self.blocks.to(ensemble.device))
        scale = torch.where(scale > 0, scale, torch.full_like(scale, _NO_SPREAD_SCALE))
        if self.cap is None:
            return shift, scale
        limit = self.cap / operator.precision_diagonal(shift, inverse_std).sqrt().clamp(
            min=1e-30)
        if self.blocks is not None:
            limit = _block_minimum(limit, self.blocks.to(ensemble.device))
        return shift, torch.minimum(scale, limit)

    def analysis(self, ensemble, observations, operator, obs_std, generator=None, **positions):
        operator = ObservationOperator.wrap(operator)
        obs_std = torch.as_tensor(obs_std).to(ensemble).expand(observations.shape)
        inverse_std = torch.where(torch.isnan(observations), 0.0, 1.0 / obs_std)
        shift, scale = self.standardization(ensemble, operator, inverse_std)
        observed = operator
        offset: torch.Tensor | float = 0.0
        if self.linearize == "ensemble":
            fitted = ensemble if self.linearize_members is None else ensemble[
                :self.linearize_members]
            observed, offset = ensemble_linearization(operator, fitted)
        elif self.linearize == "sigma-points":
            observed, offset = sigma_point_linearization(operator, ensemble)
        elif self.linearize:  # the tangent at the forecast mean
            observed, offset = operator.linearized(
                shift if self.fixed_scale is None else ensemble.mean(dim=0))
        z_operator, z_offset = observed.standardized(scale, shift)
        z = self.kernel.analysis((ensemble - shift) / scale, observations - offset - z_offset,
                                 z_operator, obs_std, generator)
        operator.release()  # bounded memory with one operator per cycle
        analysis = z * scale + shift
        if self.n_regressed:
            analysis = regress_unobserved(ensemble, analysis, self.n_regressed)
        return analysis


class BoundedAnalysis:
    """A filter whose analysis keeps its leading ``len(lower)`` components in the box
    ``[lower, upper]`` (component-wise clamp).

    Examples
    --------
    >>> import torch
    >>> from xldensf.filters import get_filter
    >>> prior = torch.randn(20, 2, generator=torch.Generator().manual_seed(0),
    ...                     dtype=torch.float64)
    >>> box = torch.tensor([-0.1], dtype=torch.float64), torch.tensor([0.1], dtype=torch.float64)
    >>> bounded = BoundedAnalysis(get_filter("etkf"), *box)
    >>> out = bounded.analysis(prior, torch.tensor([5.0]),
    ...                        torch.tensor([[1.0, 0.0]], dtype=torch.float64), 0.1)
    >>> float(out[:, 0].max()) <= 0.1
    True
    """

    def __init__(self, kernel: Any, lower: torch.Tensor, upper: torch.Tensor) -> None:
        self.kernel, self.name, self.lower, self.upper = kernel, kernel.name, lower, upper

    def analysis(self, ensemble, observations, operator, obs_std, generator=None, **positions):
        analysis = self.kernel.analysis(ensemble, observations, operator, obs_std, generator,
                                        **positions)
        n_bounded = len(self.lower)
        bounded = analysis[:, :n_bounded].clamp(self.lower.to(analysis),
                                                self.upper.to(analysis))
        return torch.cat([bounded, analysis[:, n_bounded:]], dim=1)


class SplitGlobalAnalysis:
    """The leading ``n_local`` components analysed by ``local`` (e.g. the LETKF on a grid),
    the trailing ones (global parameters, which have no position) by ``global_kernel``
    (e.g. the ETKF).

    Examples
    --------
    >>> import torch
    >>> from xldensf.filters import get_filter
    >>> prior = torch.randn(20, 3, generator=torch.Generator().manual_seed(0),
    ...                     dtype=torch.float64)
    >>> split = SplitGlobalAnalysis(get_filter("etkf"), get_filter("etkf"), n_local=2)
    >>> split.analysis(prior, torch.tensor([0.0]),
    ...                torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64), 0.5).shape
    torch.Size([20, 3])
    """

    def __init__(self, local: Any, global_kernel: Any, n_local: int) -> None:
        self.local, self.global_kernel, self.n_local = local, global_kernel, n_local
        self.name = local.name

    def analysis(self, ensemble, observations, operator, obs_std, generator=None, **positions):
        local = self.local.analysis(ensemble, observations, operator, obs_std, generator,
                                    **positions)
        if ensemble.shape[-1] == self.n_local:
            return local
        trailing = self.global_kernel.analysis(ensemble, observations, operator, obs_std,
                                               generator)
        return torch.cat([local[..., : self.n_local], trailing[..., self.n_local:]], dim=-1)


def regress_unobserved(forecast: torch.Tensor, analysis: torch.Tensor,
                       n_regressed: int) -> torch.Tensor:
    """Update the last ``n_regressed`` columns by regression on the analysis increments of
    the others (the two-step ensemble update of Anderson 2003).

    ``u_a = u_f + (s_a - s_f) C_ss^+ C_su`` with the forecast ensemble's covariances. A
    score filter with a member-paired prior score carries no cross-covariance, so it cannot
    move components without a likelihood gradient itself; in the linear-Gaussian case this
    makes the joint update exact given an exact update of ``s``.

    Examples
    --------
    >>> import torch
    >>> forecast = torch.tensor([[0.0, 0.0], [1.0, 2.0], [2.0, 4.0]], dtype=torch.float64)
    >>> analysis = forecast.clone(); analysis[:, 0] += 1.0
    >>> regress_unobserved(forecast, analysis, 1)[:, 1].round(decimals=6).tolist()
    [2.0, 4.0, 6.0]
    """
    observed = forecast[:, :-n_regressed]
    anomalies = forecast - forecast.mean(dim=0)
    gain = torch.linalg.pinv(anomalies[:, :-n_regressed], rtol=1e-10) @ anomalies[
        :, -n_regressed:]
    increments = analysis[:, :-n_regressed] - observed
    return torch.cat([analysis[:, :-n_regressed], forecast[:, -n_regressed:]
                      + increments @ gain], dim=1)


def ensemble_linearization(operator: ObservationOperator, ensemble: torch.Tensor
                           ) -> tuple[ObservationOperator, torch.Tensor]:
    """The least-squares linear fit of ``operator`` over the ``ensemble`` ``(members,
    n_state)``: ``H(x) ~ G x + offset`` with ``G = Y^T (A^T)^+`` from the anomalies ``A`` of
    the members and ``Y`` of their observations (the linearisation an ensemble Kalman
    filter uses implicitly), ``offset = mean H(x_j) - G mean x_j``. One operator pass.

    Examples
    --------
    >>> import torch
    >>> ensemble = torch.randn(50, 2, generator=torch.Generator().manual_seed(0),
    ...                        dtype=torch.float64)
    >>> fit, offset = ensemble_linearization(
    ...     ObservationOperator.wrap(lambda x: 3.0 * x[..., :1] + 1.0), ensemble)
    >>> (fit.matrix.round(decimals=6) + 0.0).tolist(), offset.round(decimals=6).tolist()
    ([[3.0, 0.0]], [1.0])
    """
    operator = ObservationOperator.wrap(operator)
    with torch.no_grad():
        observed = operator(ensemble).to(torch.float64)
    wide = ensemble.to(torch.float64)  # the fit in float64 whatever the model's dtype
    mean, observed_mean = wide.mean(dim=0), observed.mean(dim=0)
    gain = torch.linalg.pinv(wide - mean, rtol=1e-10) @ (observed - observed_mean)
    matrix = gain.T.contiguous()
    offset = observed_mean - matrix @ mean
    return ObservationOperator(matrix=matrix.to(ensemble.dtype)), offset.to(ensemble.dtype)


def cheaper_linearization(n_state: int, members: int, fit_members: int | None = None) -> str:
    """``"sigma-points"`` where its ``2 n_state + 1`` operator evaluations are fewer than the
    ``min(members, fit_members)`` of ``"ensemble"`` (the fit over the first ``fit_members``
    members; ``None``: all of them), else ``"ensemble"``.

    Examples
    --------
    >>> cheaper_linearization(12, 200, 100), cheaper_linearization(60, 200, 100)
    ('sigma-points', 'ensemble')
    """
    fitted = members if fit_members is None else min(members, fit_members)
    return "sigma-points" if 2 * n_state + 1 < fitted else "ensemble"


def sigma_point_linearization(operator: ObservationOperator, ensemble: torch.Tensor,
                              step: float = SIGMA_POINT_STEP
                              ) -> tuple[ObservationOperator, torch.Tensor]:
    """The statistical linearisation of ``operator`` for a Gaussian with the mean ``m`` and
    covariance ``P = sum_i s_i s_i^T`` of the ``ensemble`` ``(members, n_state)``, by
    central differences along its principal axes ``s_i``: ``H(x) ~ G x + offset`` with

        G P = sum_i d_i s_i^T,   d_i = (H(m + c s_i) - H(m - c s_i)) / (2 c),
        offset = H(m) + sum_i (H(m + c s_i) + H(m - c s_i) - 2 H(m)) / (2 c^2) - G m,

    ``c = step`` (the divided-difference filter of Norgaard, Poulsen & Ravn, 2000). Exact
    for linear and quadratic operators (``G`` is then the Gaussian expectation of the
    Jacobian and ``offset + G m`` that of ``H``); ``2 r + 1`` operator evaluations for an
    ensemble of rank ``r`` (the axes with a singular value above ``1e-10`` of the largest),
    against one per member for :func:`ensemble_linearization`.

    Examples
    --------
    >>> import torch
    >>> ensemble = torch.randn(200, 2, generator=torch.Generator().manual_seed(0),
    ...                        dtype=torch.float64)
    >>> fit, offset = sigma_point_linearization(
    ...     ObservationOperator.wrap(lambda x: x[..., :1] ** 2 + 3.0 * x[..., 1:]), ensemble)
    >>> mean = ensemble.mean(dim=0)
    >>> torch.allclose(fit.matrix, torch.stack([2 * mean[0], torch.tensor(3.0).double()])[None])
    True
    >>> expected = (ensemble[:, 0].var() - mean[0] ** 2).item()  # E[x0^2] - G m
    >>> round(offset.item() - expected, 12) + 0.0
    0.0
    """
    operator = ObservationOperator.wrap(operator)
    wide = ensemble.to(torch.float64)  # the fit in float64 whatever the model's dtype
    mean = wide.mean(dim=0)
    _, singular, axes_t = torch.linalg.svd((wide - mean) / max(len(wide) - 1, 1) ** 0.5,
                                           full_matrices=False)
    kept = singular > singular[0] * 1e-10
    singular, directions = singular[kept], axes_t[kept]
    axes = singular[:, None] * directions            # (rank, n_state): P = axes^T axes
    points = torch.cat([mean[None], mean + step * axes, mean - step * axes])
    with torch.no_grad():
        observed = operator(points.to(ensemble.dtype)).to(torch.float64)
    rank = len(axes)
    centre, plus, minus = observed[0], observed[1:1 + rank], observed[1 + rank:]
    slopes = (plus - minus) / (2.0 * step)          # (rank, n_obs): d_i
    # G = (sum_i d_i s_i^T) P^+ with P^+ = V diag(singular^-2) V^T, so G = sum d_i v_i^T / sv_i
    matrix = (slopes / singular[:, None]).T @ directions
    observed_mean = centre + ((plus + minus - 2.0 * centre) / (2.0 * step ** 2)).sum(dim=0)
    offset = observed_mean - matrix @ mean
    return (ObservationOperator(matrix=matrix.contiguous().to(ensemble.dtype)),
            offset.to(ensemble.dtype))
