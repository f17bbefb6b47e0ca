"""Spiking layers that DP-SGD can train: a LIF neuron with explicit state and surrogate gradient.

The leaky integrate-and-fire (LIF) neuron of the Fully Spiking VAE (Kamata et al., AAAI 2022)::

    u_t = tau * m_{t-1} + x_t          (membrane potential; m is the membrane after reset)
    o_t = H(u_t - threshold)           (spike; Heaviside step)
    m_t = u_t * (1 - o_t)              (hard reset)

which is the published ``u_t = tau * u_{t-1} * (1 - o_{t-1}) + x_t`` with the reset folded into the
carried state. The Heaviside step has no useful derivative, so the backward pass uses the
rectangular surrogate ``dH/du ~ 1[|u - threshold| < width / 2] / width`` (width 1 by default, i.e. a
box of height 1 as in FSVAE).

:class:`LIFStep` is a new-style :class:`torch.autograd.Function` (``setup_context``,
``generate_vmap_rule = True``), so it works under ``torch.func.vmap`` / ``grad`` (Opacus'
``functorch`` grad-sample mode and its functorch fallback for layers without a hand-written grad
sampler) as well as with ordinary autograd (Opacus' ``hooks`` mode). The state is explicit::

    spk, mem = lif(x, mem)                 # one time step
    spikes = LIFNeuron()(x)                # x of shape (N, ..., T): all T steps, T last

>>> import torch
>>> x = torch.tensor([[0.3, 0.0, 0.1]])
>>> spk, mem = lif(x, torch.zeros_like(x))
>>> spk.tolist(), mem.tolist()
([[1.0, 0.0, 0.0]], [[0.0, 0.0, 0.10000000149011612]])
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "DEFAULT_TAU",
    "DEFAULT_THRESHOLD",
    "LIFNeuron",
    "LIFStep",
    "MembraneOutput",
    "TimeConvTranspose3d",
    "lif",
    "register_grad_samplers",
]

DEFAULT_TAU = 0.25
DEFAULT_THRESHOLD = 0.2


class LIFStep(torch.autograd.Function):
    """One LIF time step: ``(x, mem, tau, threshold, width) -> (spike, mem_after_reset)``.

    ``tau`` is a tensor broadcastable to ``x`` (a scalar or per-channel learnable time constant);
    ``threshold`` and ``width`` are Python floats. The backward is written in torch operations only,
    so ``generate_vmap_rule = True`` lets vmap batch it (per-sample gradients under functorch).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, mem, tau, threshold, width):  # type: ignore[override]
        u = tau * mem + x
        spk = (u >= threshold).to(x.dtype)
        return spk, u * (1.0 - spk)

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[override]
        x, mem, tau, threshold, width = inputs
        spk, _ = output
        u = tau * mem + x
        ctx.save_for_backward(u, mem, tau, spk)
        ctx.threshold = float(threshold)
        ctx.width = float(width)

    @staticmethod
    def backward(ctx, g_spk, g_mem):  # type: ignore[override]
        u, mem, tau, spk = ctx.saved_tensors
        sg = ((u - ctx.threshold).abs() < ctx.width / 2).to(u.dtype) / ctx.width
        g_u = torch.zeros_like(u)
        if g_spk is not None:
            g_u = g_u + g_spk * sg
        if g_mem is not None:
            # m = u * (1 - s(u)):  dm/du = (1 - s) - u * s'(u)
            g_u = g_u + g_mem * ((1.0 - spk) - u * sg)
        g_x = g_u
        g_prev = g_u * tau
        g_tau = (g_u * mem).sum_to_size(tau.shape) if ctx.needs_input_grad[2] else None
        return g_x, g_prev, g_tau, None, None


def lif(
    x: torch.Tensor,
    mem: torch.Tensor | None = None,
    tau: float | torch.Tensor = DEFAULT_TAU,
    threshold: float = DEFAULT_THRESHOLD,
    width: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LIF step with explicit state: ``spk, mem = lif(x, mem)`` (``mem=None`` starts at 0)."""
    if mem is None:
        mem = torch.zeros_like(x)
    if not isinstance(tau, torch.Tensor):
        tau = torch.tensor(float(tau), dtype=x.dtype, device=x.device)
    return LIFStep.apply(x, mem, tau, threshold, width)


class LIFNeuron(nn.Module):
    """LIF neurons over a time axis: input ``(N, ..., T)`` -> spikes ``(N, ..., T)``.

    ``learnable_tau=True`` makes the time constant a parameter (one per neuron group: a scalar by
    default, or one per channel with ``channels=C`` for inputs ``(N, C, ..., T)``), kept in (0, 1)
    through a sigmoid. Without a learnable tau the module has no parameters and no buffers, so
    Opacus needs nothing from it; with one, Opacus computes its per-sample gradient through its
    functorch fallback (this module holds no buffers, as that fallback requires).
    """

    def __init__(
        self,
        tau: float = DEFAULT_TAU,
        threshold: float = DEFAULT_THRESHOLD,
        width: float = 1.0,
        learnable_tau: bool = False,
        channels: int | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 < tau < 1.0:
            raise ValueError(f"LIF tau must lie in (0, 1), got {tau}")
        self.threshold = float(threshold)
        self.width = float(width)
        self.learnable_tau = bool(learnable_tau)
        self.channels = channels
        self.tau0 = float(tau)
        if learnable_tau:
            shape = (channels,) if channels else ()
            self.tau_logit = nn.Parameter(torch.full(shape, math.log(tau / (1.0 - tau))))

    def tau(self, x: torch.Tensor) -> torch.Tensor:
        """The time constant as a tensor broadcastable to one time step of ``x`` (``(N, ...)``)."""
        if not self.learnable_tau:
            return torch.tensor(self.tau0, dtype=x.dtype, device=x.device)
        t = torch.sigmoid(self.tau_logit)
        if self.channels:
            t = t.view((self.channels,) + (1,) * (x.dim() - 3))  # x is (N, C, ..., T)
        return t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tau = self.tau(x)
        steps = x.unbind(-1)  # one backward node for all steps (x[..., t] would zero-fill T times)
        mem = torch.zeros_like(steps[0])
        out = []
        for xt in steps:
            spk, mem = LIFStep.apply(xt, mem, tau, self.threshold, self.width)
            out.append(spk)
        return torch.stack(out, dim=-1)

    def extra_repr(self) -> str:
        return (
            f"tau={self.tau0}, threshold={self.threshold}, width={self.width}, "
            f"learnable_tau={self.learnable_tau}"
        )


class MembraneOutput(nn.Module):
    """Non-firing output neuron: ``sum_t decay^(T-1-t) * x_t`` over the last (time) axis.

    This is FSVAE's ``MembraneOutputLayer`` (decay 0.8): the membrane potential of a neuron that
    integrates its input and never fires. No parameters.
    """

    def __init__(self, decay: float = 0.8) -> None:
        super().__init__()
        self.decay = float(decay)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[-1]
        coef = self.decay ** torch.arange(T - 1, -1, -1, dtype=x.dtype, device=x.device)
        return (x * coef).sum(-1)


# --------------------------------------------------------------------------- fast grad samplers
#
# Spiking convs keep time as the last axis and use kernels (kh, kw, 1): a 2-D conv per time step.
# Opacus' generic Conv3d grad sampler unfolds in 3-D (slow: most of a DP step's cost here) and
# ConvTranspose3d has none (its functorch fallback re-runs the layer under vmap). These samplers
# fold T into the batch and use 2-D unfolding; any other configuration goes to Opacus' own path.


def _time_sliced(layer: nn.Module) -> bool:
    k, s, p, d = layer.kernel_size, layer.stride, layer.padding, layer.dilation
    return (
        isinstance(p, tuple) and k[2] == 1 and s[2] == 1 and p[2] == 0 and d[2] == 1
        and layer.groups == 1
    )


def _unfold_steps(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """(N, C, H, W, T) -> (N, T, C*kh*kw, L): 2-D patches of every time step."""
    import torch.nn.functional as F

    n, c, h, w, t = x.shape
    x2 = x.permute(0, 4, 1, 2, 3).reshape(n * t, c, h, w)
    u = F.unfold(x2, layer.kernel_size[:2], dilation=layer.dilation[:2],
                 padding=layer.padding[:2], stride=layer.stride[:2])
    return u.view(n, t, u.shape[1], u.shape[2])


def _conv3d_grad_sample(layer: nn.Conv3d, activations: list, backprops: torch.Tensor):
    from opacus.grad_sample.conv import compute_conv_grad_sample

    if not _time_sliced(layer):
        return compute_conv_grad_sample(layer, activations, backprops)
    a = activations[0]
    n, t = a.shape[0], a.shape[-1]
    u = _unfold_steps(a, layer)  # (N, T, Cin*k, L)
    b = backprops.permute(0, 4, 1, 2, 3).reshape(n, t, backprops.shape[1], -1)  # (N, T, Cout, L)
    ret = {}
    if layer.weight.requires_grad:
        gs = torch.einsum("ntol,ntkl->nok", b, u)
        ret[layer.weight] = gs.reshape(n, *layer.weight.shape)
    if layer.bias is not None and layer.bias.requires_grad:
        ret[layer.bias] = backprops.sum(dim=(2, 3, 4))
    return ret


def _conv_transpose3d_grad_sample(layer: nn.ConvTranspose3d, activations: list,
                                  backprops: torch.Tensor):
    # y = conv_transpose(x, W) is the adjoint of x' = conv(y', W), so dL/dW = the weight gradient
    # of that conv with input dL/dy and output gradient x: correlate x with patches of dL/dy.
    a = activations[0]  # (N, Cin, H, W, T)
    n, t = a.shape[0], a.shape[-1]
    ret = {}
    if layer.weight.requires_grad:
        u = _unfold_steps(backprops, layer)  # (N, T, Cout*k, L), L = H*W of the input
        x = a.permute(0, 4, 1, 2, 3).reshape(n, t, a.shape[1], -1)  # (N, T, Cin, L)
        if u.shape[-1] != x.shape[-1]:
            raise RuntimeError("ConvTranspose3d grad sampler: output padding mismatch")
        gs = torch.einsum("ntil,ntkl->nik", x, u)
        ret[layer.weight] = gs.reshape(n, *layer.weight.shape)
    if layer.bias is not None and layer.bias.requires_grad:
        ret[layer.bias] = backprops.sum(dim=(2, 3, 4))
    return ret


class TimeConvTranspose3d(nn.ConvTranspose3d):
    """``ConvTranspose3d`` with kernel ``(k, k, 1)``: a 2-D transposed conv applied at every time
    step of ``(N, C, H, W, T)``. Opacus has no grad sampler for transposed convs; privkit registers
    a fast one for this class (plain ``ConvTranspose3d`` keeps Opacus' functorch fallback)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 2,
                 padding: int = 1, output_padding: int = 1, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, (kernel_size, kernel_size, 1),
                         stride=(stride, stride, 1), padding=(padding, padding, 0),
                         output_padding=(output_padding, output_padding, 0), bias=bias)


def register_grad_samplers() -> None:
    """Install the fast samplers above into Opacus (idempotent; done on ``import privkit.dp``).

    The Conv3d sampler handles only time-sliced kernels ``(kh, kw, 1)`` itself and hands every
    other Conv3d to Opacus' original sampler; :class:`TimeConvTranspose3d` gets its own sampler.
    """
    from opacus.grad_sample import GradSampleModule

    samplers = GradSampleModule.GRAD_SAMPLERS
    samplers[nn.Conv3d] = _conv3d_grad_sample
    samplers[TimeConvTranspose3d] = _conv_transpose3d_grad_sample
