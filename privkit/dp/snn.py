"""Spiking layers that DP-SGD can train: a LIF neuron with explicit state and surrogate gradient,
the time-major transposed conv and :class:`StepLinear` (a linear layer called once per time step).
Their per-sample gradients are registered with Opacus in :mod:`privkit.dp.grad_samplers`.

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
    "StepLinear",
    "TimeConvTranspose3d",
    "lif",
    "register_grad_samplers",  # noqa: F822  (resolved by __getattr__ below)
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


# --------------------------------------------------------------------------- layers with privkit grad samplers
#
# Spiking convs keep time as the last axis and use kernels (kh, kw, 1): a 2-D conv per time step.
# Their per-sample gradients come from privkit.dp.grad_samplers (one batched product per kernel
# offset, no im2col buffer), which also covers the transposed convs Opacus has no sampler for,
# and StepLinear's once-per-pass sampler.


class TimeConvTranspose3d(nn.ConvTranspose3d):
    """``ConvTranspose3d`` with kernel ``(k, k, 1)``: a 2-D transposed conv applied at every time
    step of ``(N, C, H, W, T)``. Opacus has no grad sampler for transposed convs; :func:`privkit.dp.make_private`
    (or :func:`privkit.dp.register_grad_samplers`) registers one for this class and for every ``nn.ConvTranspose1d/2d/3d``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 2,
                 padding: int = 1, output_padding: int = 1, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, (kernel_size, kernel_size, 1),
                         stride=(stride, stride, 1), padding=(padding, padding, 0),
                         output_padding=(output_padding, output_padding, 0), bias=bias)


class StepLinear(nn.Linear):
    """An ``nn.Linear`` meant to be called many times per forward pass (once per time step of a
    recurrent or spiking network), whose per-sample gradient Opacus computes once per pass.

    Opacus computes a layer's per-sample gradient at every call and adds it into a
    ``(batch, out, in)`` buffer, so a layer called T times writes that buffer T times; for the
    spiking VAE's posterior / prior MLPs (called once per time step, up to 1.3 M weights each)
    that traffic dominated a DP step. :func:`privkit.dp.grad_samplers.step_linear_grad_sample` instead keeps each call's
    input and output gradient until the pass's last backward call and then contracts them all in
    one batched product: the same sum, one write. Outside DP training it is a plain ``nn.Linear``
    (same parameters, same state dict).

    >>> import torch
    >>> layer = StepLinear(3, 2)
    >>> layer(torch.ones(4, 3)).shape
    torch.Size([4, 2])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stash = self.__dict__.get("_privkit_stash")
        if stash:
            # a forward while backward calls are stashed: that backward was abandoned (an
            # exception, or a graph dropped half-way); its partial gradients must not leak
            stash.clear()
        return super().forward(x)


def __getattr__(name: str) -> object:
    # ``snn.register_grad_samplers`` is privkit.dp.grad_samplers.register_grad_samplers, the one
    # place grad samplers are registered; looked up lazily because grad_samplers imports snn
    if name == "register_grad_samplers":
        from .grad_samplers import register_grad_samplers

        return register_grad_samplers
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
