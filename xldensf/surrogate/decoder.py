"""The fast decoder at fixed points: :class:`DecoderAtPoints` (the reconstruction
``R(s, x)`` as plain tensors, with a hand-written vector-Jacobian product) and the
activation helpers it needs.

Built by :meth:`~xldensf.surrogate.LatentModel.decoder_at`; see the example of
:class:`DecoderAtPoints`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["DecoderAtPoints", "activation_name"]

#: Rows ``(latent state, point)`` decoded at once by the inference path of
#: :meth:`~xldensf.surrogate.LatentModel.decode`: activations of ``rows x width`` floats
#: stay a few MB (in cache, no fresh page-faulted memory per layer), the matrix products
#: stay large enough to be fast.
_DECODE_ROWS = 4096


_ACTIVATION_NAMES = {nn.Tanh: "tanh", nn.SiLU: "silu"}

#: Environment variable that opts in to oneDNN's linear for the hidden layers.
ONEDNN_LINEAR_VARIABLE = "XLDENSF_ONEDNN_LINEAR"
#: Whether oneDNN's linear (``torch.ops.mkldnn._linear_pointwise``) is used for the hidden
#: layers of :meth:`DecoderAtPoints.fields` on float32 CPU tensors: off (``False``: MKL's
#: ``torch.addmm``) unless the environment variable ``XLDENSF_ONEDNN_LINEAR=1`` is set
#: when xldensf is imported (then ``None`` until first tried, ``False`` once it failed).
#: On an AMD EPYC machine oneDNN ran these layers about 1.8x faster than MKL (MKL's AVX2
#: path on AMD), on an Intel Xeon no faster; but with it the same seeded call gave a
#: different analysis in some fresh processes (MKL never did), so it is off by default
#: (docs/ldensf.md "Speed").
_ONEDNN_LINEAR: list[bool | None] = [None if os.environ.get(ONEDNN_LINEAR_VARIABLE) == "1"
                                     else False]


def _linear(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
            out: torch.Tensor) -> torch.Tensor:
    """``hidden @ weight.T + bias``: ``torch.addmm`` into ``out``, or (opted in with
    ``XLDENSF_ONEDNN_LINEAR=1``) oneDNN's linear on float32 CPU tensors where it runs (a new
    tensor).

    Examples
    --------
    >>> hidden, weight = torch.ones(3, 2), torch.full((4, 2), 0.5)
    >>> _linear(hidden, weight, torch.zeros(4), torch.empty(3, 4)).tolist()[0]
    [1.0, 1.0, 1.0, 1.0]
    """
    if (_ONEDNN_LINEAR[0] is not False and hidden.dtype == torch.float32
            and hidden.device.type == "cpu" and weight.dtype == torch.float32):
        try:
            if _ONEDNN_LINEAR[0] is None:
                # the first oneDNN linear of a process differed in rounding from later
                # ones (measured: a fresh process's first assimilate call then differed
                # from its later calls and from addmm); it is computed and discarded
                torch.ops.mkldnn._linear_pointwise(hidden, weight, bias, "none", [], "")
            result = torch.ops.mkldnn._linear_pointwise(hidden, weight, bias, "none", [], "")
        except (AttributeError, RuntimeError, NotImplementedError):
            _ONEDNN_LINEAR[0] = False
        else:
            _ONEDNN_LINEAR[0] = True
            return result
    return torch.addmm(bias, hidden, weight.T, out=out)


def activation_name(module: nn.Module) -> str | None:
    """``"tanh"``, ``"silu"`` or ``"gelu"`` (exact) for the activations of the networks;
    ``None`` for any other module (then :class:`DecoderAtPoints` does not apply).

    Examples
    --------
    >>> activation_name(nn.Tanh()), activation_name(nn.GELU(approximate="tanh"))
    ('tanh', None)
    """
    if isinstance(module, nn.GELU):
        return "gelu" if module.approximate == "none" else None
    return _ACTIVATION_NAMES.get(type(module))


def _activate(pre: torch.Tensor, name: str, inplace: bool = False) -> torch.Tensor:
    if name == "tanh":
        return pre.tanh_() if inplace else torch.tanh(pre)
    if name == "silu":
        return nn.functional.silu(pre, inplace=inplace)
    return nn.functional.gelu(pre)


def _activation_slope(pre: torch.Tensor, post: torch.Tensor, name: str) -> torch.Tensor:
    """Derivative of the activation at ``pre`` (``post`` is its value)."""
    if name == "tanh":
        return 1.0 - post.square()
    if name == "silu":
        sigmoid = torch.sigmoid(pre)
        return sigmoid * (1.0 + pre * (1.0 - sigmoid))
    return (0.5 * (1.0 + torch.erf(pre / math.sqrt(2.0)))
            + pre * torch.exp(-0.5 * pre.square()) / math.sqrt(2.0 * math.pi))


@dataclass(eq=False)
class DecoderAtPoints:
    """The reconstruction ``R(s, x)`` at fixed points, as plain tensors.

    Built by :meth:`~xldensf.surrogate.LatentModel.decoder_at`. The coordinate half of the
    first layer (Fourier features of the points and their linear map) is computed once;
    the output layer keeps the chosen variables, with the physical units folded in. Two
    uses:

    - :meth:`fields`: chunked, in-place evaluation without autograd (the inference path of
      :meth:`LatentModel.decode`);
    - :meth:`fields_and_saved` then :meth:`pullback`: the vector-Jacobian product
      ``v -> (dR/ds)^T v`` by hand (no autograd graph), e.g. for the gradient of a
      likelihood at observation stations, called many times per analysis.

    Both reuse buffers kept in ``workspace`` between calls (:meth:`release` frees them).

    Attributes
    ----------
    coordinate_term
        ``(n_points, width)``: first-layer coordinate term plus bias.
    latent_weight
        ``(width, latent_dim)``: first-layer latent weights.
    hidden
        ``(weight, bias)`` of each hidden layer.
    output_weight, output_bias
        ``(n_variables, width)`` and ``(n_variables,)`` of the chosen variables.
    activation
        ``"tanh"``, ``"silu"`` or ``"gelu"``.
    residual
        Whether the hidden layers are residual.
    modulation
        ``(weight, bias)`` of the FiLM map ``s -> (scale, shift)`` of each hidden layer
        (``act((W h + b) * (1 + scale) + shift)``), or ``None``.
    workspace
        Reusable activation buffers by use.

    Examples
    --------
    >>> import torch
    >>> from xldensf.surrogate import LatentModel, LDNetConfig
    >>> model = LatentModel.untrained(LDNetConfig.small().replace(latent_dim=3),
    ...     coordinates=torch.rand(20, 2), n_variables=2, parameter_ranges=[(0.0, 1.0)])
    >>> stations = torch.rand(5, 2)
    >>> decoder = model.decoder_at(stations, variables=[1])
    >>> latent = torch.randn(4, 3)
    >>> fields, saved = decoder.fields_and_saved(latent)        # (members, points, variables)
    >>> torch.allclose(fields, model.decode(latent, stations)[:, 1:].transpose(-1, -2),
    ...                atol=1e-5)
    True
    >>> decoder.pullback(saved, torch.ones_like(fields)).shape  # (members, latent_dim)
    torch.Size([4, 3])
    """

    coordinate_term: torch.Tensor
    latent_weight: torch.Tensor
    hidden: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    output_weight: torch.Tensor
    output_bias: torch.Tensor
    activation: str
    residual: bool
    modulation: tuple[torch.Tensor, torch.Tensor] | None = None
    workspace: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_points(self) -> int:
        return self.coordinate_term.shape[0]

    @property
    def width(self) -> int:
        return self.coordinate_term.shape[1]

    def _buffers(self, key: str, rows: int, count: int, like: torch.Tensor) -> list:
        """``count`` reusable ``(rows, width)`` buffers: the sampler calls the decoder
        hundreds of times with the same shapes, and fresh activations each time cost more
        (page faults of newly mapped memory) than the small products themselves."""
        buffers = self.workspace.get(key)
        if buffers is None or buffers[0].shape[0] < rows or buffers[0].dtype != like.dtype:
            buffers = [like.new_empty(rows, self.width) for _ in range(count)]
            self.workspace[key] = buffers
        return [buffer[:rows] for buffer in buffers]

    def release(self) -> None:
        """Free the reusable buffers (they are rebuilt on the next call)."""
        self.workspace.clear()

    def _activate_into(self, pre: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if self.activation == "tanh":
            return torch.tanh(pre, out=out)
        if self.activation == "silu" and pre.data_ptr() == out.data_ptr():
            return nn.functional.silu(out, inplace=True)  # no temporary, no copy
        return out.copy_(_activate(pre, self.activation))

    def _film(self, latent: torch.Tensor) -> torch.Tensor | None:
        """FiLM ``(members, hidden layers, 2, width)`` (``1 + scale``, shift), or ``None``."""
        if self.modulation is None:
            return None
        weight, bias = self.modulation
        film = torch.addmm(bias, latent, weight.T).view(len(latent), len(self.hidden), 2, -1)
        film[:, :, 0].add_(1.0)
        return film

    def fields(self, latent: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Fields ``(members, n_variables, n_points)`` of latent states ``(members,
        latent_dim)``, in chunks of about ``_DECODE_ROWS`` rows, without autograd.

        ``out``: a tensor of that shape to write into (else a new one).
        """
        n_states, n_points = latent.shape[0], self.n_points
        if out is None:
            out = latent.new_empty(n_states, self.output_weight.shape[0], n_points)
        point_chunk = min(n_points, _DECODE_ROWS)
        state_chunk = max(1, _DECODE_ROWS // n_points)
        hidden_buffer, update_buffer = self._buffers("fields", state_chunk * point_chunk, 2,
                                                     latent)
        with torch.no_grad():
            latent_term = latent @ self.latent_weight.T
            film = self._film(latent)
            for first_state in range(0, n_states, state_chunk):
                chosen = slice(first_state, first_state + state_chunk)
                states = latent_term[chosen, None, :]
                for first_point in range(0, n_points, point_chunk):
                    points = self.coordinate_term[first_point:first_point + point_chunk]
                    shape = (len(states), len(points), -1)
                    rows = len(states) * len(points)
                    hidden, update = hidden_buffer[:rows], update_buffer[:rows]
                    torch.add(points, states, out=hidden.view(shape))
                    self._activate_into(hidden, hidden)
                    for index, (weight, bias) in enumerate(self.hidden):
                        update = _linear(hidden, weight, bias, update)
                        if film is not None:
                            update.view(shape).mul_(film[chosen, index, 0, None]).add_(
                                film[chosen, index, 1, None])
                        self._activate_into(update, update)
                        if self.residual:
                            hidden.add_(update)
                        else:
                            hidden, update = update, hidden
                    values = torch.addmm(self.output_bias, hidden, self.output_weight.T)
                    out[chosen, :, first_point:first_point + len(points)] = values.view(
                        shape).transpose(1, 2)
        return out

    def fields_and_saved(self, latent: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """Fields ``(members, n_points, n_variables)`` and what :meth:`pullback` needs.

        Without autograd; the saved activations live in reusable buffers, valid until the
        next call.
        """
        n_states = latent.shape[0]
        rows = n_states * self.n_points
        layers = 1 + len(self.hidden)
        kept = 3 if self.modulation is not None else 2   # FiLM: also the layers' W h + b
        buffers = self._buffers("saved", rows, kept * layers + 1, latent)
        pres, posts, hidden = buffers[:layers], buffers[layers:2 * layers], buffers[-1]
        linears = buffers[2 * layers:3 * layers] if kept == 3 else [None] * layers
        shape = (n_states, self.n_points, -1)
        with torch.no_grad():
            film = self._film(latent)
            torch.add(self.coordinate_term, (latent @ self.latent_weight.T)[:, None, :],
                      out=pres[0].view(shape))
            first = self._activate_into(pres[0], posts[0])
            hidden = hidden.copy_(first) if self.residual else first
            for index, (weight, bias) in enumerate(self.hidden):
                pre, post = pres[index + 1], posts[index + 1]
                if film is None:
                    torch.addmm(bias, hidden, weight.T, out=pre)
                else:
                    linear = torch.addmm(bias, hidden, weight.T, out=linears[index + 1])
                    torch.addcmul(film[:, index, 1, None], linear.view(shape),
                                  film[:, index, 0, None], out=pre.view(shape))
                update = self._activate_into(pre, post)
                hidden = hidden.add_(update) if self.residual else update
            fields = torch.addmm(self.output_bias, hidden, self.output_weight.T)
        return fields.view(shape), (list(zip(pres, posts, linears)), film)

    def _slope_into(self, pre: torch.Tensor, post: torch.Tensor,
                    out: torch.Tensor) -> torch.Tensor:
        if self.activation == "tanh":
            return torch.mul(post, post, out=out).mul_(-1.0).add_(1.0)
        return out.copy_(_activation_slope(pre, post, self.activation))

    def pullback(self, saved: tuple, cotangent: torch.Tensor) -> torch.Tensor:
        """``(dR/ds)^T cotangent``: ``(members, latent_dim)`` from a cotangent of the fields
        ``(members, n_points, n_variables)`` (the reverse pass of :meth:`fields_and_saved`,
        with its saved activations)."""
        layers, film = saved
        n_states = cotangent.shape[0]
        rows = n_states * self.n_points
        shape = (n_states, self.n_points, -1)
        gradient, slope, spare = self._buffers("pullback", rows, 3, cotangent)
        film_gradient = None if film is None else torch.empty_like(film)
        with torch.no_grad():
            torch.mm(cotangent.reshape(rows, -1), self.output_weight, out=gradient)
            for index in reversed(range(len(self.hidden))):
                pre, post, linear = layers[index + 1]
                self._slope_into(pre, post, slope).mul_(gradient)   # d/d(pre-activation)
                if film_gradient is not None:
                    film_gradient[:, index, 0] = (slope.view(shape) * linear.view(shape)).sum(1)
                    film_gradient[:, index, 1] = slope.view(shape).sum(dim=1)
                    slope.view(shape).mul_(film[:, index, 0, None])  # d/d(W h + b)
                weight = self.hidden[index][0]
                if self.residual:
                    gradient.addmm_(slope, weight)
                else:
                    gradient, spare = torch.mm(slope, weight, out=spare), gradient
            self._slope_into(*layers[0][:2], slope).mul_(gradient)
            result = slope.view(shape).sum(dim=1) @ self.latent_weight
            if film_gradient is not None:
                result.addmm_(film_gradient.flatten(1), self.modulation[0])
            return result

