"""Fast DP-SGD clipping: per-sample gradient norms without storing per-sample gradients.

DP-SGD needs, per step, (1) each sample's gradient norm, to clip it, and (2) the sum of the
clipped gradients, to which the noise is added. Opacus' hooks mode materialises every per-sample
gradient (``batch x parameters`` numbers) and then reads it several times (accumulate, norm,
weighted sum). For conv and linear layers both quantities can be had far more cheaply from what
backpropagation already has at hand, each layer's input ``a`` and output gradient ``g``:

* **norms, "ghost" or direct, per layer** (the mixed ghost clipping of Bu et al., 2022). A layer's
  per-sample weight gradient is ``G_n = sum_p g_{n,p} a_{n,p}^T`` over positions ``p`` (time
  steps, pixels; for convs ``a_{n,p}`` is the input patch). Its squared norm is either
  ``sum_{p,q} (g_p . g_q)(a_p . a_q)`` (the ghost norm: ``P^2`` numbers per sample, no
  ``out x in`` matrix) or computed from ``G_n`` itself, one layer at a time and discarded at once.
  Each layer takes whichever costs fewer operations.
* **clipped sums by book-keeping** (Bu et al., 2023): with the clip factors ``c_n`` known, the
  clipped sum ``sum_n c_n G_n`` is the ordinary batch weight gradient of the output gradient
  ``c_n g_n``: one GEMM / one convolution-backward call per layer, no second backward pass.

The mechanism is exactly Opacus' (same clip rule ``c_n = min(1, C / (||G_n|| + 1e-6))``, same
Gaussian noise of standard deviation ``noise_multiplier * C`` on the clipped sum, same scaling,
same accountant hook), so the privacy accounting is unchanged; only the arithmetic is reorganised.
Tests check that the update equals the one of Opacus' hooks mode to float rounding.

Layers handled this way: ``nn.Linear`` (and :class:`~privkit.dp.grad_samplers.StepLinear`, also
when called many times per pass), ``nn.Conv1d/2d/3d`` (any padding and padding mode) and
``nn.ConvTranspose1d/2d/3d``. Every other layer with trainable parameters (norms, embeddings,
custom layers such as a learnable LIF time constant) keeps Opacus' per-sample path; its
per-sample gradients are small and join the same per-sample norm.

Use it through :func:`privkit.dp.make_private` with ``grad_sample_mode="fast"``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
from opacus.grad_sample import GradSampleModule
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _generate_noise
from torch import nn

from .grad_samplers import StepLinear, _per_offset, offset_slices, weight_grad_operands

__all__ = ["FastClipModule", "FastClipOptimizer"]

_LINEAR = (nn.Linear, StepLinear)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVT = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
# the largest Gram block (samples x positions^2) a ghost norm may allocate
_GHOST_MAX_ELEMENTS = 1 << 26
# per-sample weight gradients formed for a norm are kept for the clipped sum (one weighted sum,
# cheaper than a convolution backward) up to this many elements, and recomputed above it
_KEEP_MAX_ELEMENTS = 1 << 26


@dataclass
class _Record:
    """What one layer's backward left for the optimizer: per-sample squared norms and, for the
    clipped sum, its inputs and output gradients (one entry per call of the layer)."""

    module: nn.Module
    kind: str  # "linear" | "conv" | "convt"
    norm2: torch.Tensor  # (N,)
    calls: list = field(default_factory=list)  # [(input, output gradient)]
    weight_samples: torch.Tensor | None = None  # per-sample weight gradients, when kept


def _gram_norm2(g: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``sum_{p,q} (g_p . g_q)(a_p . a_q)`` per batch row: ``g`` (B, P, O), ``a`` (B, P, I)."""
    return (torch.bmm(g, g.transpose(1, 2)) * torch.bmm(a, a.transpose(1, 2))).sum((1, 2))


def _use_ghost(n: int, p: int, d_in: int, d_out: int) -> bool:
    """Ghost norm when its ``P^2 (in + out)`` work beats forming the ``out x in`` gradient."""
    return p * (d_in + d_out) < d_in * d_out and n * p * p <= _GHOST_MAX_ELEMENTS


def _patches(t: torch.Tensor, kernel, stride, dilation, out_size) -> torch.Tensor:
    """im2col by strided views: ``(N, C, *padded) -> (N, C * prod(kernel), P)``."""
    views = [t[(slice(None), slice(None), *offset_slices(off, stride, dilation, out_size))]
             for off in itertools.product(*(range(k) for k in kernel))]
    st = torch.stack(views, 2)  # (N, C, K, *out)
    return st.reshape(t.shape[0], -1, st[0, 0, 0].numel())


def _linear_norm2(layer: nn.Module, calls: list) -> torch.Tensor:
    a = torch.cat([x.reshape(x.shape[0], -1, x.shape[-1]) for x, _ in calls], 1)
    g = torch.cat([y.reshape(y.shape[0], -1, y.shape[-1]) for _, y in calls], 1)
    n, p, i = a.shape
    o = g.shape[-1]
    norm2 = torch.zeros(n, dtype=g.dtype, device=g.device)
    if layer.weight.requires_grad:
        if p == 1:
            norm2 = norm2 + a.square().sum((1, 2)) * g.square().sum((1, 2))
        elif _use_ghost(n, p, i, o):
            norm2 = norm2 + _gram_norm2(g, a)
        else:
            norm2 = norm2 + torch.bmm(g.transpose(1, 2), a).square().sum((1, 2))
    if layer.bias is not None and layer.bias.requires_grad:
        norm2 = norm2 + g.sum(1).square().sum(1)
    return norm2


def _conv_weight_norm2(layer: nn.Module, x: torch.Tensor, g: torch.Tensor,
                       transposed: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Ghost norm² of one call's per-sample weight gradient, or (None, the gradient)."""
    kernel, stride, dil, groups = (tuple(layer.kernel_size), tuple(layer.stride),
                                   tuple(layer.dilation), layer.groups)
    n = x.shape[0]
    left, right, size = weight_grad_operands(layer, x, g, transposed)
    p = int(torch.Size(size).numel())
    c_left = left.shape[1] // groups
    c_right = right.shape[1] // groups * int(torch.Size(kernel).numel())
    if _use_ghost(n * groups, p, c_right, c_left):
        pr = _patches(right, kernel, stride, dil, size)  # (N, C_right * K, P)
        pr = pr.reshape(n * groups, c_right, p).transpose(1, 2)
        pl = left.reshape(n * groups, c_left, p).transpose(1, 2)
        return _gram_norm2(pl, pr).view(n, groups).sum(1), None
    gs = _per_offset(left, right, kernel, stride, dil, size, groups)
    return None, gs


def _conv_norm2(layer: nn.Module, calls: list,
                transposed: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-sample squared norms, and the per-sample weight gradients if they were formed."""
    g0 = calls[0][1]
    n = g0.shape[0]
    norm2 = torch.zeros(n, dtype=g0.dtype, device=g0.device)
    total = None
    if layer.weight.requires_grad:
        if len(calls) == 1:
            ghost, total = _conv_weight_norm2(layer, calls[0][0], calls[0][1], transposed)
            norm2 = norm2 + (ghost if ghost is not None else total.flatten(1).square().sum(1))
        else:  # a conv called several times per pass: add the calls' gradients, then the norm
            total = None
            for x, g in calls:
                left, right, size = weight_grad_operands(layer, x, g, transposed)
                gs = _per_offset(left, right, tuple(layer.kernel_size), tuple(layer.stride),
                                 tuple(layer.dilation), size, layer.groups)
                total = gs if total is None else total + gs
            norm2 = norm2 + total.flatten(1).square().sum(1)
    if layer.bias is not None and layer.bias.requires_grad:
        bsum = sum(g.flatten(2).sum(2) for _, g in calls)
        norm2 = norm2 + bsum.square().sum(1)
    if total is not None and total.numel() > _KEEP_MAX_ELEMENTS:
        total = None
    return norm2, total


class FastClipModule(GradSampleModule):
    """Opacus' ``GradSampleModule`` whose linear and conv layers keep their inputs and output
    gradients and per-sample gradient norms instead of per-sample gradients.

    Other layers go through Opacus' usual per-sample path (``p.grad_sample``). The optimizer that
    consumes the records is :class:`FastClipOptimizer`.
    """

    FAST_TYPES = _LINEAR + _CONV + _CONVT

    def __init__(self, m: nn.Module, **kwargs) -> None:
        self._records: list[_Record] = []
        self._pending: dict[int, list] = {}
        super().__init__(m, **kwargs)

    def _fast(self, module: nn.Module) -> bool:
        return not self.force_functorch and isinstance(module, self.FAST_TYPES) and (
            type(module) in self.GRAD_SAMPLERS)

    @torch.no_grad()
    def capture_backprops_hook(self, module, _forward_input, forward_output, loss_reduction,
                               batch_first):
        if not self.hooks_enabled:
            return
        if not self._fast(module):
            return super().capture_backprops_hook(module, _forward_input, forward_output,
                                                  loss_reduction, batch_first)
        backprops = forward_output[0].detach()
        activations, backprops = self.rearrange_grad_samples(
            module=module, backprops=backprops, loss_reduction=loss_reduction,
            batch_first=batch_first,
        )
        calls = self._pending.setdefault(id(module), [])
        calls.append((activations[0], backprops))
        for _, p in _trainable(module):
            p._forward_counter -= 1
        if module.activations:  # more calls of this layer in this pass: wait for the last
            return
        del self._pending[id(module)]
        if hasattr(module, "max_batch_len"):
            del module.max_batch_len
        if any(r.module is module for r in self._records):
            self.clear_records()
            raise ValueError(
                "grad_sample_mode='fast' keeps one backward pass per optimizer step: call "
                "optimizer.step() (or zero_grad()) after every backward pass (gradient "
                "accumulation over several batches needs grad_sample_mode='hooks')"
            )
        kept = None
        if isinstance(module, _LINEAR):
            kind, norm2 = "linear", _linear_norm2(module, calls)
        elif isinstance(module, _CONVT):
            kind, (norm2, kept) = "convt", _conv_norm2(module, calls, True)
        else:
            kind, (norm2, kept) = "conv", _conv_norm2(module, calls, False)
        self._records.append(_Record(module, kind, norm2, calls, kept))

    def clear_records(self) -> None:
        self._records.clear()
        self._pending.clear()


def _trainable(module: nn.Module):
    return [(n, p) for n, p in module.named_parameters(recurse=False) if p.requires_grad]


def _clipped_sum(rec: _Record, c: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """``sum_n c_n G_n`` for the record's parameters, as one ordinary batch gradient."""
    layer, out = rec.module, {}
    if rec.weight_samples is not None:
        out[layer.weight] = torch.einsum("n,n...->...", c.to(rec.weight_samples.dtype),
                                         rec.weight_samples)
    for x, g in rec.calls:
        cg = g * c.view(-1, *([1] * (g.dim() - 1))).to(g.dtype)
        if rec.kind == "linear":
            if layer.weight.requires_grad:
                w = cg.reshape(-1, cg.shape[-1]).t() @ x.reshape(-1, x.shape[-1])
                out[layer.weight] = out.get(layer.weight, 0) + w
            if layer.bias is not None and layer.bias.requires_grad:
                out[layer.bias] = out.get(layer.bias, 0) + cg.reshape(-1, cg.shape[-1]).sum(0)
            continue
        bias = layer.bias is not None and layer.bias.requires_grad
        if rec.weight_samples is not None or not layer.weight.requires_grad:
            if bias:
                out[layer.bias] = out.get(layer.bias, 0) + cg.flatten(2).sum((0, 2))
            continue
        if rec.kind == "conv":
            xin = weight_grad_operands(layer, x, g, False)[1]
            padding = [0] * (x.dim() - 2)
            out_pad = [0] * (x.dim() - 2)
            transposed = False
        else:
            xin, padding, transposed = x, list(layer.padding), True
            # the output padding actually used (an output_size at call time may differ)
            out_pad = [
                go - ((xi - 1) * s - 2 * p + d * (k - 1) + 1)
                for go, xi, s, p, d, k in zip(g.shape[2:], x.shape[2:], layer.stride,
                                              layer.padding, layer.dilation, layer.kernel_size,
                                              strict=True)
            ]
        _, gw, gb = torch.ops.aten.convolution_backward(
            cg, xin, layer.weight, [layer.weight.shape[1] * layer.groups if transposed
                                    else layer.weight.shape[0]] if bias else None,
            list(layer.stride), padding, list(layer.dilation), transposed, out_pad,
            layer.groups, [False, layer.weight.requires_grad, bias],
        )
        if layer.weight.requires_grad:
            out[layer.weight] = out.get(layer.weight, 0) + gw
        if bias:
            out[layer.bias] = out.get(layer.bias, 0) + gb
    return out


class FastClipOptimizer(DPOptimizer):
    """Opacus' ``DPOptimizer`` fed by :class:`FastClipModule`'s records.

    Clip rule, noise, scaling and the accountant's step hook are Opacus' own; per-sample norms
    come from the records (plus ``p.grad_sample`` for the layers Opacus handles), and clipped sums
    from :func:`_clipped_sum`.
    """

    def __init__(self, *args, module: FastClipModule, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fast_module = module

    @property
    def accumulated_iterations(self) -> int:
        return 1  # FastClipModule refuses a second backward pass before the step

    def _materialised(self) -> list[nn.Parameter]:
        return [p for p in self.params if getattr(p, "grad_sample", None) is not None]

    @torch.no_grad()
    def clip_and_accumulate(self) -> None:
        recs = self.fast_module._records
        fast_params = {id(p) for r in recs for _, p in _trainable(r.module)}
        mats = [p for p in self._materialised() if id(p) not in fast_params]
        have = fast_params | {id(p) for p in mats}
        missing = [p for p in self.params if id(p) not in have]
        if missing:
            raise ValueError(
                f"{len(missing)} trainable parameter(s) got no per-sample gradient in the last "
                "backward pass (unused in the forward pass, or the forward ran without hooks): "
                "freeze them (requires_grad=False) or use them"
            )
        norm2 = None
        for r in recs:
            norm2 = r.norm2 if norm2 is None else norm2 + r.norm2
        for p in mats:
            gs = self._get_flat_grad_sample(p)
            part = gs.reshape(len(gs), -1).to(p.dtype).square().sum(1)
            norm2 = part if norm2 is None else norm2 + part
        if norm2 is None:
            raise ValueError("no per-sample gradients: run a backward pass before step()")
        per_sample_clip = (self.max_grad_norm / (norm2.sqrt() + 1e-6)).clamp(max=1.0)
        sums: dict[nn.Parameter, torch.Tensor] = {}
        for r in recs:
            sums.update(_clipped_sum(r, per_sample_clip))
        for p in mats:
            gs = self._get_flat_grad_sample(p).to(p.dtype)
            sums[p] = torch.einsum("i,i...", per_sample_clip.to(p.dtype), gs)
        for p in self.params:
            grad = sums[p].view_as(p)
            p.summed_grad = grad if p.summed_grad is None else p.summed_grad + grad
        self.fast_module.clear_records()
        for p in mats:
            p.grad_sample = None

    def pre_step(self, closure=None):
        if not self.params:
            return True
        self.clip_and_accumulate()
        if self._check_skip_next_step():
            self._is_last_step_skipped = True
            return False
        self.add_noise()
        self.scale_grad()
        if self.step_hook:
            self.step_hook(self)
        self._is_last_step_skipped = False
        return True

    @torch.no_grad()
    def add_noise(self) -> None:
        for p in self.params:
            noise = _generate_noise(std=self.noise_multiplier * self.max_grad_norm,
                                    reference=p.summed_grad, generator=self.generator,
                                    secure_mode=self.secure_mode)
            p.grad = (p.summed_grad + noise).view_as(p)

    def zero_grad(self, set_to_none: bool = False) -> None:
        self.fast_module.clear_records()
        super().zero_grad(set_to_none)
