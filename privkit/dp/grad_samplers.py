"""Fast per-sample gradients for convolutions and transposed convolutions, registered with Opacus.

Opacus (hooks mode) computes a conv layer's per-sample weight gradient by unfolding the input into
patches (``im2col``) and contracting them with the output gradient. For ``C_in * prod(kernel)``
patch rows over every output position, the unfolded buffer is ``prod(kernel)`` times the input;
for the spiking VAE's time-major 5-D activations that buffer (and the copies around it) made up
most of a DP step. Transposed convolutions have no Opacus sampler at all, so Opacus re-runs those
layers under ``torch.func.vmap``.

Here the weight gradient is computed one kernel offset at a time. For a convolution
``y[o, p] = sum_{i, a} W[o, i, a] * x_pad[i, s * p + d * a]`` (``p`` an output position, ``a`` a
kernel offset, ``s`` the stride, ``d`` the dilation), the per-sample gradient is

    dW[n, o, i, a] = sum_p g[n, o, p] * x_pad[n, i, s * p + d * a]

i.e. for each offset ``a`` one batched matrix product of ``g`` with a strided view of the padded
input: no patch buffer, ``prod(kernel)`` products. A transposed convolution is the adjoint, so its
gradient is the same sum with the roles swapped (``x`` against strided views of the padded output
gradient). Groups split the channel axes; any number of spatial dimensions works.

:func:`register_grad_samplers` installs these for ``nn.Conv1d/2d/3d`` (any padding, including
``'same'`` and the ``'reflect'`` / ``'replicate'`` / ``'circular'`` modes, which the input is
padded with exactly as the layer's forward pads it: Opacus 1.6's own conv sampler zero-pads
whatever the mode and so returns wrong per-sample gradients for them), for
``nn.ConvTranspose1d/2d/3d`` and :class:`privkit.dp.snn.TimeConvTranspose3d`, and for
:class:`privkit.dp.snn.StepLinear` (the DP layers live in :mod:`privkit.dp.snn`).
:func:`privkit.dp.make_private` calls it (``import privkit.dp`` does not); the change is process-wide (every Opacus ``GradSampleModule``
created afterwards uses these samplers) and is exact up to float rounding: tests compare it with a
batch-of-1 oracle in float64 over random shapes, strides, paddings, dilations and groups.

>>> import torch
>>> from torch import nn
>>> conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
>>> x = torch.randn(4, 2, 8, 8)
>>> g = torch.randn_like(conv(x))
>>> gs = conv_grad_sample(conv, [x], g)
>>> gs[conv.weight].shape, gs[conv.bias].shape
(torch.Size([4, 3, 2, 3, 3]), torch.Size([4, 3]))
>>> conv.zero_grad(); (conv(x[:1]) * g[:1]).sum().backward()
>>> first = gs[conv.weight]
>>> torch.allclose(first[0], conv.weight.grad, atol=1e-5)
True
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from ._opacus import grad_sampler_table
from .snn import StepLinear, TimeConvTranspose3d

__all__ = [
    "StepLinear",
    "conv_grad_sample",
    "conv_transpose_grad_sample",
    "register_grad_samplers",
    "step_linear_grad_sample",
]

_ORIGINAL: dict[type, object] = {}


def offset_slices(off: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...],
                  out_size: tuple[int, ...]) -> tuple[slice, ...]:
    """The positions ``s * p + d * off`` (``p`` over ``out_size``) as one slice per dimension."""
    return tuple(slice(d * o, d * o + s * (m - 1) + 1, s)
                 for o, s, d, m in zip(off, stride, dilation, out_size, strict=True))


def weight_grad_operands(layer: nn.Module, x: torch.Tensor, g: torch.Tensor, transposed: bool
                         ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """``(left, right_padded, size)`` with ``dW[n, l, r, off] = sum_p left[n, l, p] *
    right_padded[n, r, s * p + d * off]`` over the ``size`` positions ``p``.

    A convolution correlates its output gradient (left) with its input, padded exactly as the
    layer's forward pads it: per-side amounts (``'same'`` may be asymmetric) and its padding mode
    (Opacus 1.6's own sampler zero-pads whatever the mode). A transposed convolution is the
    adjoint: its input (left) against the output gradient zero-padded by ``padding``.
    """
    if transposed:
        spec = [q for p in reversed(layer.padding) for q in (p, p)]
        return x, (F.pad(g, spec) if any(spec) else g), tuple(x.shape[2:])
    spec = list(layer._reversed_padding_repeated_twice)
    mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
    return g, (F.pad(x, spec, mode=mode) if any(spec) else x), tuple(g.shape[2:])


# with few channels on either side, the per-offset products are thin and copy-bound; one grouped
# convolution over all offsets (samples as groups) is then faster (measured: 1.7 ms against 8.9 ms
# for a 32 -> 1 channel 3x3 conv on 64 samples of 32x32)
_GCONV_MAX_CHANNELS = 4
# with small per-group channel counts on both sides, one weight-gradient call of a convolution
# whose groups are the samples beats the per-offset products too (measured on a 2-core x86 CPU,
# one thread, 64 samples, 3x3 kernels, 4x4 to 32x32 maps: 0.16-0.6x the time of the per-offset
# products up to 32 x 32 channels and 8 x 128, 0.3-0.8x at 32 x 64 and 32 x 128 from 16x16 maps;
# up to 2.4x slower at 128 x 128), so it is used up to this many (A / groups) * (B / groups)
# channel pairs
_BATCH_GROUPS_MAX_PAIRS = 2048
# tests force one way: None (choose by the rules above), "offset", "gconv" or "batch-groups"
_FORCE: str | None = None
_CONVND = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _per_sample_by_conv(a: torch.Tensor, b_pad: torch.Tensor, kernel: tuple[int, ...],
                        stride: tuple[int, ...], dilation: tuple[int, ...],
                        out_size: tuple[int, ...]) -> torch.Tensor:
    """:func:`_per_offset` for ``groups == 1`` as one convolution: ``b_pad`` with its channels as
    the batch and its samples as channels, correlated with each sample's ``a`` as a kernel dilated
    by the stride (``groups`` = samples). Returns ``(N, A, B, *kernel)``."""
    n, ca = a.shape[:2]
    cb = b_pad.shape[1]
    inp = b_pad.transpose(0, 1)  # (B, N, *padded)
    w = a.reshape(n * ca, 1, *out_size)
    out = _CONVND[len(kernel)](inp, w, stride=dilation, dilation=stride, groups=n)
    out = out[(slice(None), slice(None), *(slice(0, k) for k in kernel))]  # (B, N*A, *kernel)
    out = out.reshape(cb, n, ca, *kernel)
    return out.permute(1, 2, 0, *range(3, 3 + len(kernel))).contiguous()


def _per_sample_by_batch_groups(a: torch.Tensor, b: torch.Tensor, kernel: tuple[int, ...],
                                stride: tuple[int, ...], dilation: tuple[int, ...],
                                out_size: tuple[int, ...], groups: int,
                                padding: tuple[int, ...] | None = None) -> torch.Tensor:
    """:func:`_per_offset` as the weight gradient of one convolution with ``N * groups`` groups:
    ``b`` is its input, ``a`` its output gradient, so each sample's channels form their own
    groups. ``b`` is either already padded (``padding`` None; cut to the extent the ``out_size``
    positions reach) or zero-padded by the convolution itself (``padding``; no padded copy), in
    which case the caller has checked that the convolution has exactly ``out_size`` positions.
    Returns ``(N, A, B/groups, *kernel)``."""
    n, ca = a.shape[:2]
    cb = b.shape[1]
    nd = len(kernel)
    if padding is None:
        reach = tuple(s * (m - 1) + d * (k - 1) + 1
                      for s, d, k, m in zip(stride, dilation, kernel, out_size, strict=True))
        b = b[(slice(None), slice(None), *(slice(0, r) for r in reach))]
        padding = (0,) * nd
    inp = b.reshape(1, n * cb, *b.shape[2:])
    grad_out = a.reshape(1, n * ca, *out_size)
    weight = a.new_empty(1).expand(n * ca, cb // groups, *kernel)  # shape only, never read
    _, gw, _ = torch.ops.aten.convolution_backward(
        grad_out, inp, weight, None, list(stride), list(padding), list(dilation), False, [0] * nd,
        n * groups, [False, True, False],
    )
    return gw.view(n, ca, cb // groups, *kernel)


def _choose_way(ca: int, cb: int, groups: int, nd: int) -> str:
    """How to form per-sample conv weight gradients (see the thresholds above)."""
    if _FORCE is not None:
        return _FORCE
    if not 1 <= nd <= 3:
        return "offset"
    if groups == 1 and min(ca, cb) <= _GCONV_MAX_CHANNELS:
        return "gconv"
    if (ca // groups) * (cb // groups) <= _BATCH_GROUPS_MAX_PAIRS:
        return "batch-groups"
    return "offset"


def per_sample_weight_grad(layer: nn.Module, x: torch.Tensor, g: torch.Tensor,
                           transposed: bool) -> torch.Tensor:
    """Per-sample weight gradients ``(N, *layer.weight.shape)`` of one call of a conv
    (``transposed`` False) or transposed conv layer with input ``x`` and output gradient ``g``.

    Zero padding is left to the convolution when the batch-groups way is taken (no padded copy
    of the input or of the output gradient); otherwise the operands of
    :func:`weight_grad_operands` are formed.
    """
    kernel, stride, dil = tuple(layer.kernel_size), tuple(layer.stride), tuple(layer.dilation)
    groups = layer.groups
    if transposed:
        a, b, pad = x, g, tuple(layer.padding)
    else:
        a, b = g, x
        pad = tuple(layer.padding) if (layer.padding_mode == "zeros"
                                       and not isinstance(layer.padding, str)) else None
    size = tuple(a.shape[2:])
    way = _choose_way(a.shape[1], b.shape[1], groups, len(kernel))
    if way == "batch-groups" and pad is not None:
        positions = tuple((bi + 2 * p - d * (k - 1) - 1) // s + 1 for bi, p, d, k, s in
                          zip(b.shape[2:], pad, dil, kernel, stride, strict=True))
        if positions == size:
            return _per_sample_by_batch_groups(a, b, kernel, stride, dil, size, groups, pad)
    left, right, size = weight_grad_operands(layer, x, g, transposed)
    return _per_offset(left, right, kernel, stride, dil, size, groups, way)


def _per_offset(a: torch.Tensor, b_pad: torch.Tensor, kernel: tuple[int, ...],
                stride: tuple[int, ...], dilation: tuple[int, ...], out_size: tuple[int, ...],
                groups: int, way: str | None = None) -> torch.Tensor:
    """``R[n, g, i, j, offset] = sum_p a[n, g*i, p] * b_pad[n, g*j, s*p + d*offset]``.

    ``a``: ``(N, A, *out_size)``; ``b_pad``: ``(N, B, *padded)``. Returns ``(N, A, B/groups,
    *kernel)`` with the group structure folded as Opacus / torch lay out conv weights.
    """
    n, ca = a.shape[:2]
    cb = b_pad.shape[1]
    ga, gb = ca // groups, cb // groups
    if way is None:
        way = _choose_way(ca, cb, groups, len(kernel))
    if way == "gconv" and groups == 1 and 1 <= len(kernel) <= 3:
        return _per_sample_by_conv(a, b_pad, kernel, stride, dilation, out_size)
    if way == "batch-groups" and 1 <= len(kernel) <= 3:
        return _per_sample_by_batch_groups(a, b_pad, kernel, stride, dilation, out_size, groups)
    a2 = a.reshape(n * groups, ga, -1)  # (N*G, A/G, P)
    offsets = list(itertools.product(*(range(k) for k in kernel)))
    # one contiguous (N*G, A/G, B/G) block per offset, written in place by bmm; the blocks are
    # then interleaved into the weight layout (offset last) by a single copy
    out = a.new_empty(len(offsets), n * groups, ga, gb)
    for i, off in enumerate(offsets):
        sl = offset_slices(off, stride, dilation, out_size)
        view = b_pad[(slice(None), slice(None), *sl)]  # (N, B, *out_size)
        bv = view.reshape(n * groups, gb, -1)
        torch.bmm(a2, bv.transpose(1, 2), out=out[i])
    return out.permute(1, 2, 3, 0).reshape(n, ca, gb, *kernel)


def conv_grad_sample(layer: nn.Module, activations: list, backprops: torch.Tensor) -> dict:
    """Per-sample gradients of an ``nn.Conv{1,2,3}d`` (Opacus grad-sampler signature).

    ``activations[0]`` is the layer input ``(N, C_in, *S)``, ``backprops`` the gradient of the
    (already reduction-scaled) loss with respect to the output ``(N, C_out, *S_out)``.
    """
    return _conv_samples(layer, activations[0], backprops, False)


def conv_transpose_grad_sample(layer: nn.Module, activations: list,
                               backprops: torch.Tensor) -> dict:
    """Per-sample gradients of an ``nn.ConvTranspose{1,2,3}d`` (Opacus grad-sampler signature).

    The layer's weight is ``(C_in, C_out/groups, *kernel)``; output padding, or an ``output_size``
    given at call time, only lengthens the output gradient, which the strided views never reach.
    """
    return _conv_samples(layer, activations[0], backprops, True)


def _conv_samples(layer: nn.Module, x: torch.Tensor, g: torch.Tensor, transposed: bool) -> dict:
    ret = {}
    if layer.weight.requires_grad:
        ret[layer.weight] = per_sample_weight_grad(layer, x, g, transposed)
    if layer.bias is not None and layer.bias.requires_grad:
        ret[layer.bias] = g.flatten(2).sum(2)
    return ret


def step_linear_grad_sample(layer: nn.Linear, activations: list, backprops: torch.Tensor) -> dict:
    """Opacus grad sampler for :class:`StepLinear`: defers the work to the last call of a pass.

    Opacus pops one stored input per backward call (``layer.activations`` holds the inputs of calls
    whose backward has not run yet), so an empty list means this is the last call of the pass.
    Each stashed entry records how many calls were still pending; a count that does not fall
    means a new pass began, and the stale entries are dropped (so does the layer's next forward:
    within one pass every forward call comes before the first backward call).
    """
    pending = len(getattr(layer, "activations", None) or [])
    stash = layer.__dict__.setdefault("_privkit_stash", [])
    if stash and pending >= stash[-1][0]:
        stash.clear()  # a new pass: what is left over belongs to an abandoned one
    a = activations[0]
    stash.append((pending, a.reshape(a.shape[0], -1, a.shape[-1]),
                  backprops.reshape(backprops.shape[0], -1, backprops.shape[-1])))
    if pending:
        return {}
    acts = torch.cat([e[1] for e in stash], 1)  # (N, calls * positions, in)
    grads = torch.cat([e[2] for e in stash], 1)  # (N, calls * positions, out)
    stash.clear()
    ret = {}
    if layer.weight.requires_grad:
        ret[layer.weight] = torch.bmm(grads.transpose(1, 2), acts)
    if layer.bias is not None and layer.bias.requires_grad:
        ret[layer.bias] = grads.sum(1)
    return ret


def _privkit_samplers() -> dict[type, object]:
    """Every grad sampler privkit installs into Opacus, in one table: layer class -> sampler."""
    return {
        nn.Conv1d: conv_grad_sample,
        nn.Conv2d: conv_grad_sample,
        nn.Conv3d: conv_grad_sample,
        nn.ConvTranspose1d: conv_transpose_grad_sample,
        nn.ConvTranspose2d: conv_transpose_grad_sample,
        nn.ConvTranspose3d: conv_transpose_grad_sample,
        TimeConvTranspose3d: conv_transpose_grad_sample,
        StepLinear: step_linear_grad_sample,
    }


def register_grad_samplers() -> None:
    """Install the samplers of :func:`_privkit_samplers` into Opacus' ``GradSampleModule``
    (idempotent). This is the only place privkit registers grad samplers; it runs from
    :func:`privkit.dp.make_private` and :class:`privkit.dp.fastclip.FastClipModule`, never on import.

    Opacus' own samplers stay available through :func:`original_sampler`.
    """
    samplers = grad_sampler_table()
    for cls, fn in _privkit_samplers().items():
        if samplers.get(cls) is not fn:
            _ORIGINAL.setdefault(cls, samplers.get(cls))
        samplers[cls] = fn


def original_sampler(cls: type) -> object:
    """Opacus' own grad sampler for ``cls`` as it was before :func:`register_grad_samplers`."""
    return _ORIGINAL.get(cls)
