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

Layers handled this way: ``nn.Linear`` (and :class:`~privkit.dp.snn.StepLinear`, also
when called many times per pass), ``nn.Conv1d/2d/3d`` (any padding and padding mode) and
``nn.ConvTranspose1d/2d/3d``; ``nn.GroupNorm`` and ``nn.LayerNorm`` form their (small) per-sample
affine gradients directly. Every other layer with trainable parameters (embeddings, custom layers
such as a learnable LIF time constant) keeps Opacus' per-sample path; its per-sample gradients
join the same per-sample norm.

Fixed per-step costs are kept low for small models: gradient hooks on layer outputs instead of
module-level full backward hooks, the loss-reduction factor applied to the N-vector of norms and
clip factors instead of to every output gradient, and one flat buffer for the clipped sums (one
noise draw, one scaling; each ``p.grad`` is a view into it).

Use it through :func:`privkit.dp.make_private` with ``grad_sample_mode="fast"``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from opacus.grad_sample import GradSampleModule
from opacus.grad_sample.functorch import prepare_layer
from opacus.layers.dp_rnn import DPGRU, DPLSTM, DPRNN
from opacus.optimizers import DPOptimizer
from opacus.utils.module_utils import trainable_parameters
from torch import nn

from ._opacus import generate_noise, inner_module, uncount_forward
from .grad_samplers import (
    offset_slices,
    per_sample_weight_grad,
    register_grad_samplers,
    weight_grad_operands,
)
from .snn import StepLinear

__all__ = ["FastClipModule", "FastClipOptimizer"]

_LINEAR = (nn.Linear, StepLinear)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVT = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORM = (nn.GroupNorm, nn.LayerNorm)
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
    kind: str  # "linear" | "conv" | "convt" | "norm"
    norm2: torch.Tensor  # (N,)
    calls: list = field(default_factory=list)  # [(input, output gradient)]
    weight_samples: torch.Tensor | None = None  # per-sample weight gradients, when kept
    samples: dict | None = None  # "norm": every parameter's per-sample gradients
    scale: float = 1.0  # the loss-reduction factor the output gradients still lack


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


def _sq_norm(t: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm of each batch row of ``t`` (one reduction kernel, no squared copy)."""
    return torch.linalg.vector_norm(t, dim=tuple(range(1, t.dim()))).square()


def _add(total: torch.Tensor | None, part: torch.Tensor) -> torch.Tensor:
    return part if total is None else total + part


def _linear_norm2(layer: nn.Module, calls: list) -> torch.Tensor:
    if len(calls) == 1:
        a, g = calls[0]
        a, g = a.reshape(a.shape[0], -1, a.shape[-1]), g.reshape(g.shape[0], -1, g.shape[-1])
    else:
        a = torch.cat([x.reshape(x.shape[0], -1, x.shape[-1]) for x, _ in calls], 1)
        g = torch.cat([y.reshape(y.shape[0], -1, y.shape[-1]) for _, y in calls], 1)
    n, p, i = a.shape
    o = g.shape[-1]
    norm2 = None
    if layer.weight.requires_grad:
        if p == 1:
            norm2 = _sq_norm(a) * _sq_norm(g)
        elif _use_ghost(n, p, i, o):
            norm2 = _gram_norm2(g, a)
        else:
            norm2 = _sq_norm(torch.bmm(g.transpose(1, 2), a))
    if layer.bias is not None and layer.bias.requires_grad:
        norm2 = _add(norm2, _sq_norm(g.sum(1)))
    return norm2


def _conv_weight_norm2(layer: nn.Module, x: torch.Tensor, g: torch.Tensor,
                       transposed: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Ghost norm² of one call's per-sample weight gradient, or (None, the gradient)."""
    kernel, stride, dil, groups = (tuple(layer.kernel_size), tuple(layer.stride),
                                   tuple(layer.dilation), layer.groups)
    n = x.shape[0]
    left, right = (x, g) if transposed else (g, x)
    size = tuple(left.shape[2:])
    p = int(torch.Size(size).numel())
    c_left = left.shape[1] // groups
    c_right = right.shape[1] // groups * int(torch.Size(kernel).numel())
    if _use_ghost(n * groups, p, c_right, c_left):
        left, right, size = weight_grad_operands(layer, x, g, transposed)
        pr = _patches(right, kernel, stride, dil, size)  # (N, C_right * K, P)
        pr = pr.reshape(n * groups, c_right, p).transpose(1, 2)
        pl = left.reshape(n * groups, c_left, p).transpose(1, 2)
        return _gram_norm2(pl, pr).view(n, groups).sum(1), None
    return None, per_sample_weight_grad(layer, x, g, transposed)


def _conv_norm2(layer: nn.Module, calls: list,
                transposed: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-sample squared norms, and the per-sample weight gradients if they were formed."""
    norm2 = total = None
    if layer.weight.requires_grad:
        if len(calls) == 1:
            ghost, total = _conv_weight_norm2(layer, calls[0][0], calls[0][1], transposed)
            norm2 = ghost if ghost is not None else _sq_norm(total)
        else:  # a conv called several times per pass: add the calls' gradients, then the norm
            for x, g in calls:
                gs = per_sample_weight_grad(layer, x, g, transposed)
                total = gs if total is None else total + gs
            norm2 = _sq_norm(total)
    if layer.bias is not None and layer.bias.requires_grad:
        bsum = None
        for _, g in calls:
            bsum = _add(bsum, g.flatten(2).sum(2))
        norm2 = _add(norm2, _sq_norm(bsum))
    if total is not None and total.numel() > _KEEP_MAX_ELEMENTS:
        total = None
    return norm2, total


def _norm_samples(layer: nn.Module, calls: list) -> dict[nn.Parameter, torch.Tensor]:
    """Per-sample gradients of a GroupNorm / LayerNorm's affine parameters (summed over calls):
    the output gradient times the normalised input, summed over the positions each parameter
    entry scales."""
    out: dict[nn.Parameter, torch.Tensor] = {}
    for x, g in calls:
        if isinstance(layer, nn.GroupNorm):
            xhat = F.group_norm(x, layer.num_groups, eps=layer.eps)
            # (N, C, positions): one batched product per sample, no g * xhat temporary
            gf, xf = g.reshape(g.shape[0], g.shape[1], -1), xhat.reshape(g.shape[0], g.shape[1], -1)
        else:
            xhat = F.layer_norm(x, layer.normalized_shape, eps=layer.eps)
            # (N, positions, normalised entries)
            k = len(layer.normalized_shape)
            gf = g.reshape(g.shape[0], -1, *g.shape[g.dim() - k:]).flatten(2)
            xf = xhat.reshape(gf.shape)
            gf, xf = gf.transpose(1, 2), xf.transpose(1, 2)
        parts = []
        if layer.weight is not None and layer.weight.requires_grad:
            gw = torch.einsum("ncp,ncp->nc", gf, xf).view(g.shape[0], *layer.weight.shape)
            parts.append((layer.weight, gw))
        if layer.bias is not None and layer.bias.requires_grad:
            parts.append((layer.bias, gf.sum(2).view(g.shape[0], *layer.bias.shape)))
        for p, gs in parts:
            out[p] = gs if p not in out else out[p] + gs
    return out


class FastClipModule(GradSampleModule):
    """Opacus' ``GradSampleModule`` whose linear and conv layers keep their inputs and output
    gradients and per-sample gradient norms instead of per-sample gradients (GroupNorm and
    LayerNorm keep their small per-sample gradients directly).

    Other layers go through Opacus' usual per-sample path (``p.grad_sample``). The optimizer that
    consumes the records is :class:`FastClipOptimizer`.

    Hooks: a forward hook per layer registers a gradient hook on that call's output tensor
    (rather than Opacus' module-level full backward hook, which wraps every layer's inputs and
    outputs in extra autograd nodes). The fast layers' (input, output gradient) pairs are
    collected during the backward pass and turned into records by a callback the autograd engine
    runs once that pass has finished, so a layer called several times per pass is handled
    whatever the call order, and a second backward pass before ``step()`` is detected.
    """

    FAST_TYPES = _LINEAR + _CONV + _CONVT + _NORM

    def __init__(self, m: nn.Module, **kwargs) -> None:
        self._records: list[_Record] = []
        self._recorded: set[int] = set()
        self._pending: dict[nn.Module, list] = {}
        self._empty_batch = False
        self._finalise_queued = False
        register_grad_samplers()  # privkit's conv samplers (explicit here, never on import)
        super().__init__(m, **kwargs)

    def _fast(self, module: nn.Module) -> bool:
        return not self.force_functorch and isinstance(module, self.FAST_TYPES) and (
            type(module) in self.GRAD_SAMPLERS)

    def add_hooks(self, *, loss_reduction: str = "mean", batch_first: bool = True,
                  force_functorch: bool = False) -> None:
        if hasattr(inner_module(self), "autograd_grad_sample_hooks"):
            raise ValueError("Trying to add hooks twice to the same model")
        if loss_reduction not in ("mean", "sum"):
            raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")
        inner_module(self).autograd_grad_sample_hooks = []
        self.autograd_grad_sample_hooks = inner_module(self).autograd_grad_sample_hooks
        self.force_functorch = force_functorch
        for module in self.iterate_submodules(inner_module(self)):
            if type(module) in (DPRNN, DPLSTM, DPGRU):  # their RNNLinear cells carry the hooks
                continue
            fast = self._fast(module)
            if not fast and (force_functorch or type(module) not in self.GRAD_SAMPLERS):
                prepare_layer(module, batch_first=batch_first)
            self.autograd_grad_sample_hooks.append(module.register_forward_hook(
                self._fast_forward_hook if fast else self._opacus_forward_hook))
        self.enable_hooks()

    def _fast_forward_hook(self, module, inputs, output):
        if not (self.hooks_enabled and module.training and torch.is_grad_enabled()):
            return
        if not isinstance(output, torch.Tensor) or not output.requires_grad:
            return
        x = inputs[0].detach()
        output.register_hook(partial(self._fast_backward, module, x))

    @torch.no_grad()
    def _fast_backward(self, module, x, grad):
        if not self.hooks_enabled:
            return
        g = grad.detach()
        if not self.batch_first:
            x, g = x.movedim(1, 0), g.movedim(1, 0)
        self._pending.setdefault(module, []).append((x, g))
        if not self._finalise_queued:
            self._finalise_queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._finalise)

    def _opacus_forward_hook(self, module, inputs, output):
        """Opacus' activation capture, with its backward hook on the output tensor."""
        before = len(getattr(module, "activations", ()))
        self.capture_activations_hook(module, inputs, output)
        if len(getattr(module, "activations", ())) == before:
            return  # not captured (eval mode, no grad, hooks off, frozen)
        out = output if isinstance(output, torch.Tensor) else next(
            (t for t in output if isinstance(t, torch.Tensor)), None)
        if out is None or not out.requires_grad:
            module.activations.pop()
            for _, p in trainable_parameters(module):
                uncount_forward(p)
            return
        out.register_hook(lambda g: self.capture_backprops_hook(
            module, None, (g,), loss_reduction=self.loss_reduction, batch_first=self.batch_first))

    @torch.no_grad()
    def _finalise(self) -> None:
        """End of a backward pass: per-sample norms (and kept gradients) of each fast layer."""
        self._finalise_queued = False
        pending, self._pending = self._pending, {}
        if pending and all(x.shape[0] == 0 for calls in pending.values() for x, _ in calls):
            # an empty (Poisson) batch: every clipped sum is zero; the step still adds noise
            self._empty_batch = True
            return
        for module, calls in pending.items():
            if id(module) in self._recorded:
                self.clear_records()
                raise ValueError(
                    "grad_sample_mode='fast' keeps one backward pass per optimizer step: call "
                    "optimizer.step() (or zero_grad()) after every backward pass (gradient "
                    "accumulation over several batches needs grad_sample_mode='hooks')"
                )
            # loss_reduction="mean": Opacus multiplies the output gradients by the batch size
            # to undo the 1/N; the same factor is applied to the norms and the clip factors
            # instead (an N-vector, not every output gradient)
            scale = (float(max(x.shape[0] for x, _ in calls)) if self.loss_reduction == "mean"
                     else 1.0)
            kept = None
            if isinstance(module, _NORM):
                samples = _norm_samples(module, calls)
                norm2 = None
                for gs in samples.values():
                    norm2 = _add(norm2, _sq_norm(gs))
                self._records.append(_Record(module, "norm", norm2 * scale ** 2, [],
                                             samples=samples, scale=scale))
                self._recorded.add(id(module))
                continue
            if isinstance(module, _LINEAR):
                kind, norm2 = "linear", _linear_norm2(module, calls)
            elif isinstance(module, _CONVT):
                kind, (norm2, kept) = "convt", _conv_norm2(module, calls, True)
            else:
                kind, (norm2, kept) = "conv", _conv_norm2(module, calls, False)
            self._records.append(_Record(module, kind, norm2 * scale ** 2, calls, kept,
                                         scale=scale))
            self._recorded.add(id(module))

    def clear_records(self) -> None:
        self._empty_batch = False
        self._records.clear()
        self._recorded.clear()
        self._pending.clear()
        self._finalise_queued = False


def _trainable(module: nn.Module):
    return [(n, p) for n, p in module.named_parameters(recurse=False) if p.requires_grad]


def _clipped_sum(rec: _Record, c: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """``sum_n c_n G_n`` for the record's parameters, as one ordinary batch gradient."""
    layer, out = rec.module, {}
    if rec.scale != 1.0:
        c = c * rec.scale
    if rec.samples is not None:
        return {p: torch.einsum("n,n...->...", c.to(gs.dtype), gs) for p, gs in rec.samples.items()}
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
            if layer.padding_mode == "zeros" and not isinstance(layer.padding, str):
                xin, padding = x, list(layer.padding)  # the convolution pads, no padded copy
            else:
                xin, padding = weight_grad_operands(layer, x, g, False)[1], [0] * (x.dim() - 2)
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
        ps = self.params
        # one flat gradient buffer when every parameter shares a dtype and device
        self._uniform = all(p.dtype == ps[0].dtype and p.device == ps[0].device for p in ps)
        self._summed: torch.Tensor | None = None  # clipped sums so far (flat), before noise
        self._flat_grad: torch.Tensor | None = None

    @property
    def accumulated_iterations(self) -> int:
        return 1  # FastClipModule refuses a second backward pass before the step

    def _materialised(self) -> list[nn.Parameter]:
        return [p for p in self.params if getattr(p, "grad_sample", None) is not None]

    @torch.no_grad()
    def clip_and_accumulate(self) -> None:
        if self.fast_module._pending:  # a backward pass whose end-of-pass callback did not run
            self.fast_module._finalise()
        if self.fast_module._empty_batch:
            self._accumulate_zero()
            return
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
            norm2 = _add(norm2, r.norm2)
        for p in mats:
            gs = self._get_flat_grad_sample(p)
            norm2 = _add(norm2, _sq_norm(gs.to(p.dtype)))
        if norm2 is None:
            raise ValueError("no per-sample gradients: run a backward pass before step()")
        per_sample_clip = (self.max_grad_norm / (norm2.sqrt() + 1e-6)).clamp(max=1.0)
        sums: dict[nn.Parameter, torch.Tensor] = {}
        for r in recs:
            sums.update(_clipped_sum(r, per_sample_clip))
        for p in mats:
            gs = self._get_flat_grad_sample(p).to(p.dtype)
            sums[p] = torch.einsum("i,i...", per_sample_clip.to(p.dtype), gs)
        params = self.params
        if self._uniform:
            flat = torch.cat([sums[p].reshape(-1) for p in params])
            self._summed = flat if self._summed is None else self._summed + flat
        else:
            for p in params:
                grad = sums[p].view_as(p)
                p.summed_grad = grad if p.summed_grad is None else p.summed_grad + grad
        self.fast_module.clear_records()
        for p in mats:
            p.grad_sample = None

    def _accumulate_zero(self) -> None:
        """An empty batch: zero clipped sums (the noise of the step is still added)."""
        self.fast_module.clear_records()
        for p in self.params:
            p.grad_sample = None
        if self._uniform:
            zero = torch.zeros(sum(p.numel() for p in self.params), dtype=self.params[0].dtype,
                               device=self.params[0].device)
            self._summed = zero if self._summed is None else self._summed
        else:
            for p in self.params:
                if p.summed_grad is None:
                    p.summed_grad = torch.zeros_like(p)

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

    def _noise_std(self) -> float:
        return self.noise_multiplier * self.max_grad_norm

    @torch.no_grad()
    def add_noise(self) -> None:
        std = self._noise_std()
        if not self._uniform:
            for p in self.params:
                noise = generate_noise(std=std, reference=p.summed_grad, generator=self.generator,
                                        secure_mode=self.secure_mode)
                p.grad = (p.summed_grad + noise).view_as(p)
            self._flat_grad = None
            return
        # one noise draw for all parameters; the gradients are views of one flat buffer
        flat, self._summed = self._summed, None
        flat = flat + generate_noise(std=std, reference=flat, generator=self.generator,
                                      secure_mode=self.secure_mode)
        offset = 0
        for p in self.params:
            k = p.numel()
            p.grad = flat[offset:offset + k].view_as(p)
            offset += k
        self._flat_grad = flat

    @torch.no_grad()
    def scale_grad(self) -> None:
        if self.loss_reduction != "mean":
            return
        if self._flat_grad is None:
            return super().scale_grad()
        self._flat_grad.div_(self.expected_batch_size * self.accumulated_iterations)

    def zero_grad(self, set_to_none: bool = False) -> None:
        self.fast_module.clear_records()
        if not self._is_last_step_skipped:
            self._summed = None
        super().zero_grad(set_to_none)


class DistributedFastClipOptimizer(FastClipOptimizer):
    """:class:`FastClipOptimizer` across ``torch.distributed`` ranks (Opacus' distributed rule).

    Each rank clips its own Poisson sample; only rank 0 adds the Gaussian noise (so the summed
    gradient carries one draw of ``N(0, (sigma * C)^2)``, not one per rank); the clipped-and-noised
    sums are then all-reduced (one call on the flat buffer) and, for a mean loss, divided by the
    expected *global* batch (per-rank expected batch times the world size).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rank = torch.distributed.get_rank()
        self.world_size = torch.distributed.get_world_size()

    def _noise_std(self) -> float:
        return super()._noise_std() if self.rank == 0 else 0.0

    @torch.no_grad()
    def reduce_gradients(self) -> None:
        op = torch.distributed.ReduceOp.SUM
        if self._flat_grad is not None:
            torch.distributed.all_reduce(self._flat_grad, op=op)
            if self.loss_reduction == "mean":
                self._flat_grad.div_(self.world_size)
            return
        for p in self.params:
            torch.distributed.all_reduce(p.grad, op=op)
            if self.loss_reduction == "mean":
                p.grad /= self.world_size

    def step(self, closure=None):
        if closure is not None:
            with torch.enable_grad():
                closure()
        if self.pre_step():
            self.reduce_gradients()
            return self.original_optimizer.step()
        return None
