"""Rotation-based spatial convolution (1-D, 2-D, 3-D): the baseline every convolution is compared to.

Convention (PyTorch's ``conv1d``/``conv2d``/``conv3d``, i.e. cross-correlation, no kernel flip)::

    out[o, i] = bias[o] + sum_c sum_k x[c, i*stride + k - pad_left] * kernel[o, c, k]

with zero padding; the output length per axis is ``(n + pad_left + pad_right - K) // stride + 1``.
``mode`` picks the padding: ``"valid"`` (none), ``"full"`` (``K-1`` both sides), ``"same"``
(PyTorch's: ``K-1`` in total, ``(K-1)//2`` on the left); ``padding=`` overrides it.

Packing. A 1-D signal sits in slots ``[0, n)``; an image ``(H, W)`` / volume ``(D, H, W)`` in
row-major order in slots ``[0, H*W)`` / ``[0, D*H*W)``. Several channels either come as a list
of ciphertexts (one per channel; the result is a list, one per output channel) or packed in one
ciphertext, channel ``c`` starting at slot ``c * channel_stride`` (from the argument or the
ciphertext's ``Layout``); then the result is packed too.

Method. Every tap ``k`` of every channel pair contributes ``rot(x, offset(c, o, k))`` times a
plaintext vector holding the weight at the output positions where the tap reads inside the input
(zero padding and row/plane boundaries are handled by these masks, at no extra cost). Taps with
equal offsets share their rotation; with packed channels the offsets ``(c-o)*channel_stride +
tap`` are split baby-step giant-step (``K + C_in + C_out`` rotations instead of their product).
All products are parallel: **one level**. The strided / cropped output first lies on the input's
grid (output ``(i, j)`` at slot ``i*s*W + j*s``) and is compacted row-major with
:func:`~privkit.fhe.ops.rotate_sum.remove_holes` (1-D) or
:func:`~privkit.fhe.ops.rotate_sum.gather` (2-D/3-D, or 1-D packed channels whose stride is not a
multiple of ``stride``), which costs the levels those functions document; ``compact=False``
keeps the gapped grid (no extra level; 1-D records ``Layout(gap=stride)``).

The Backend API has no hoisted key switching, so each distinct rotation is a full key switch.

>>> import numpy as np
>>> from privkit.fhe import KeySet
>>> keys = KeySet.generate("n8192", backend="sim")
>>> ct = keys.encrypt(np.arange(8.0))
>>> keys.decrypt(conv1d_spatial(keys.backend, ct, np.array([1.0, -1.0]), 8)).round(6).tolist()
[-1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0]
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from ...errors import ParameterError, ShapeError, SlotOverflowError
from ..backend import Backend, Ciphertext, Layout
from .compaction import (
    gather,
    gather_depth,
    remove_holes,
    remove_holes_depth,
    required_rotations_gather,
    required_rotations_remove_holes,
)
from .diagonal import diagonal_matvec, mul_plain_sum, required_rotations_diagonal

__all__ = [
    "conv1d_spatial",
    "conv1d_spatial_ref",
    "conv2d_spatial",
    "conv2d_spatial_ref",
    "conv3d_spatial",
    "conv3d_spatial_ref",
    "conv_output_shape",
    "conv_padding",
    "conv_spatial_depth",
    "required_rotations_conv_spatial",
]

Pads = tuple[tuple[int, int], ...]


# -- geometry ----------------------------------------------------------------------------------
def conv_padding(
    kernel_shape: Sequence[int], mode: str = "valid", padding: int | Sequence | None = None
) -> Pads:
    """Per-axis ``(left, right)`` zero padding for ``mode`` or an explicit ``padding``.

    ``padding`` may be an int (all axes, both sides), a per-axis sequence of ints, or of
    ``(left, right)`` pairs.
    """
    d = len(kernel_shape)
    if padding is not None:
        if np.isscalar(padding):
            p = int(padding)  # type: ignore[arg-type]
            pads = tuple((p, p) for _ in range(d))
        else:
            items = list(padding)  # type: ignore[arg-type]
            if len(items) != d:
                raise ShapeError(f"padding has {len(items)} entries for a {d}-D kernel")
            pads = tuple(
                (int(it), int(it)) if np.isscalar(it) else (int(it[0]), int(it[1])) for it in items
            )
        if any(a < 0 or b < 0 for a, b in pads):
            raise ParameterError(f"padding must be non-negative, got {pads}")
        return pads
    if mode == "valid":
        return tuple((0, 0) for _ in range(d))
    if mode == "full":
        return tuple((k - 1, k - 1) for k in kernel_shape)
    if mode == "same":
        return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel_shape)
    raise ParameterError(f"mode must be 'valid', 'same' or 'full', got {mode!r}")


def conv_output_shape(
    shape: Sequence[int], kernel_shape: Sequence[int], stride: int | Sequence[int], pads: Pads
) -> tuple[int, ...]:
    """Output extent per axis: ``(n + left + right - K) // stride + 1``."""
    strides = _strides(stride, len(shape))
    out = []
    for n, k, s, (pl, pr) in zip(shape, kernel_shape, strides, pads):
        L = (n + pl + pr - k) // s + 1
        if L < 1:
            raise ShapeError(
                f"kernel extent {k} exceeds the padded input extent {n + pl + pr}; "
                "use mode='same'/'full' or a smaller kernel"
            )
        out.append(L)
    return tuple(out)


def _strides(stride: int | Sequence[int], d: int) -> tuple[int, ...]:
    st = (int(stride),) * d if np.isscalar(stride) else tuple(int(s) for s in stride)  # type: ignore[arg-type]
    if len(st) != d or any(s < 1 for s in st):
        raise ParameterError(f"stride must be a positive int or {d} positive ints, got {stride}")
    return st


def _row_major(shape: Sequence[int]) -> tuple[int, ...]:
    st = [1] * len(shape)
    for a in range(len(shape) - 2, -1, -1):
        st[a] = st[a + 1] * shape[a + 1]
    return tuple(st)


def _norm_kernel(kernel: np.ndarray, d: int) -> np.ndarray:
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim == d:
        k = k[None, None]
    if k.ndim != d + 2 or min(k.shape) < 1:
        raise ShapeError(
            f"a {d}-D convolution kernel must have shape {('K',) * d} or (C_out, C_in, "
            f"{', '.join(['K'] * d)}), got {np.asarray(kernel).shape}"
        )
    if not np.all(np.isfinite(k)):
        raise ParameterError("the kernel contains NaN or infinite values")
    return k


# -- numpy reference ---------------------------------------------------------------------------
def _conv_nd_ref(
    x: np.ndarray, kernel: np.ndarray, stride: Sequence[int], pads: Pads, bias: np.ndarray | None
) -> np.ndarray:
    """x: (C_in, *shape), kernel: (C_out, C_in, *K) -> (C_out, *out_shape)."""
    d = kernel.ndim - 2
    xp = np.pad(x, [(0, 0)] + [tuple(p) for p in pads])
    out_shape = conv_output_shape(x.shape[1:], kernel.shape[2:], stride, pads)
    out = np.zeros((kernel.shape[0],) + out_shape)
    for k in itertools.product(*[range(s) for s in kernel.shape[2:]]):
        sl = tuple(
            slice(k[a], k[a] + (out_shape[a] - 1) * stride[a] + 1, stride[a]) for a in range(d)
        )
        patch = xp[(slice(None),) + sl]  # (C_in, *out_shape)
        out += np.tensordot(kernel[(slice(None), slice(None)) + k], patch, axes=([1], [0]))
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64).reshape((-1,) + (1,) * d)
    return out


def conv1d_spatial_ref(x, kernel, n=None, stride=1, mode="valid", *, padding=None, bias=None):
    """Numpy twin: ``x`` is ``(n,)`` (or ``(C_in, n)``), kernel ``(K,)`` (or ``(C_out, C_in, K)``).

    Returns ``(L,)`` for a 1-D kernel, else ``(C_out, L)``.
    """
    return _ref_wrapper(x, kernel, 1, None if n is None else (n,), stride, mode, padding, bias)


def conv2d_spatial_ref(x, kernel, shape=None, stride=1, mode="valid", *, padding=None, bias=None):
    """Numpy twin of :func:`conv2d_spatial` on ``(H, W)`` / ``(C_in, H, W)`` arrays."""
    return _ref_wrapper(x, kernel, 2, shape, stride, mode, padding, bias)


def conv3d_spatial_ref(x, kernel, shape=None, stride=1, mode="valid", *, padding=None, bias=None):
    """Numpy twin of :func:`conv3d_spatial` on ``(D, H, W)`` / ``(C_in, D, H, W)`` arrays."""
    return _ref_wrapper(x, kernel, 3, shape, stride, mode, padding, bias)


def _ref_wrapper(x, kernel, d, shape, stride, mode, padding, bias):
    x = np.asarray(x, dtype=np.float64)
    single = np.asarray(kernel).ndim == d
    k = _norm_kernel(kernel, d)
    if single:
        if shape is not None:
            x = x.ravel()[: int(np.prod(shape))].reshape(shape)
        x = x[None]
    elif shape is not None:
        x = x.reshape((x.shape[0], -1))[:, : int(np.prod(shape))].reshape((x.shape[0],) + tuple(shape))
    pads = conv_padding(k.shape[2:], mode, padding)
    b = None if bias is None else np.atleast_1d(np.asarray(bias, dtype=np.float64))
    out = _conv_nd_ref(x, k, _strides(stride, d), pads, b)
    return out[0] if single else out


# -- planning ----------------------------------------------------------------------------------
class _Plan:
    """Everything a spatial convolution call needs, computed from shapes only."""

    def __init__(
        self,
        slots: int,
        shape: Sequence[int],
        kernel: np.ndarray,
        stride: int | Sequence[int],
        pads: Pads,
        packed: bool,
        channel_stride: int,
        compact: bool,
        radix: int,
    ) -> None:
        self.shape = tuple(int(s) for s in shape)
        d = len(self.shape)
        self.d = d
        self.kernel = kernel
        self.c_out, self.c_in = kernel.shape[:2]
        self.ks = kernel.shape[2:]
        self.stride = _strides(stride, d)
        self.pads = pads
        self.out_shape = conv_output_shape(self.shape, self.ks, self.stride, pads)
        self.packed = packed
        self.cs = channel_stride
        self.compact = compact
        self.radix = radix
        self.st = _row_major(self.shape)
        size = int(np.prod(self.shape))
        self.size = size
        # output grid positions (on the input grid) for one channel, row-major order
        grids = np.meshgrid(*[np.arange(L) for L in self.out_shape], indexing="ij")
        self.out_idx = [g.ravel() for g in grids]
        self.out_pos = sum(self.out_idx[a] * self.stride[a] * self.st[a] for a in range(d))
        self.count = int(np.prod(self.out_shape))
        # Tap masks keep every read inside the input, so zero padding needs no room in the
        # slots; the output grid must however fit: on the input grid (constant offset per tap)
        # rows cannot grow, so non-leading axes need (L-1)*s < n.
        for a in range(1, d):
            if (self.out_shape[a] - 1) * self.stride[a] >= self.shape[a]:
                raise ShapeError(
                    f"the output extent {self.out_shape[a]} along axis {a} does not fit on the "
                    f"input grid ({self.shape[a]}); embed the input in a zero-padded grid "
                    f"(e.g. shape {tuple(self.shape[:a]) + (self.shape[a] + sum(pads[a]),) + tuple(self.shape[a + 1:])}) first"
                )
        self.span = max(size, int(self.out_pos.max()) + 1)
        if packed:
            n_ch = max(self.c_in, self.c_out)
            if self.cs < self.span:
                raise ShapeError(
                    f"channel_stride {self.cs} is smaller than one channel's extent ({self.span} "
                    "slots, input or output grid)"
                )
            need = (n_ch - 1) * self.cs + self.span
        else:
            need = self.span
        if need > slots:
            raise SlotOverflowError(
                f"the convolution needs {need} slots (data, output grid and channels) but a "
                f"ciphertext holds {slots}; use a larger preset or fewer packed channels"
            )
        # compaction
        self.holes = any(s > 1 for s in self.stride) or (
            d > 1 and tuple(self.out_shape[1:]) != tuple(self.shape[1:])
        )
        self.use_remove_holes = d == 1 and (not packed or self.cs % self.stride[0] == 0)
        if self.packed:
            self.out_cs = self.cs if not (compact and self.holes) else (
                self.cs // self.stride[0] if self.use_remove_holes else self.count
            )
        else:
            self.out_cs = 0

    def tap_offset(self, k: Sequence[int]) -> int:
        return int(sum((k[a] - self.pads[a][0]) * self.st[a] for a in range(self.d)))

    def tap_mask(self, k: Sequence[int]) -> np.ndarray:
        """Output positions (of one channel) whose tap ``k`` reads inside the input."""
        ok = np.ones(self.count, dtype=bool)
        for a in range(self.d):
            src = self.out_idx[a] * self.stride[a] + k[a] - self.pads[a][0]
            ok &= (src >= 0) & (src < self.shape[a])
        return ok

    def taps(self):
        return itertools.product(*[range(s) for s in self.ks])

    def diagonals_packed(self, slots: int) -> dict[int, np.ndarray]:
        diags: dict[int, np.ndarray] = {}
        for k in self.taps():
            ok = self.tap_mask(k)
            pos = self.out_pos[ok]
            t = self.tap_offset(k)
            for o in range(self.c_out):
                for c in range(self.c_in):
                    w = self.kernel[(o, c) + tuple(k)]
                    if w == 0:
                        continue
                    off = c * self.cs - o * self.cs + t
                    v = diags.setdefault(off, np.zeros(slots))
                    v[o * self.cs + pos] += w
        return diags

    def offsets_packed(self) -> list[int]:
        return sorted(
            {(c - o) * self.cs + self.tap_offset(k) for k in self.taps()
             for o in range(self.c_out) for c in range(self.c_in)}
        )

    def compaction_positions(self) -> np.ndarray:
        if self.packed:
            return np.concatenate([o * self.cs + self.out_pos for o in range(self.c_out)])
        return self.out_pos

    def compaction_depth(self) -> int:
        if not (self.compact and self.holes):
            return 0
        if self.use_remove_holes:
            n = (self.c_out - 1) * self.cs + self.out_pos[-1] + 1 if self.packed else self.out_pos[-1] + 1
            return remove_holes_depth(n, self.stride[0], self.radix, holes_zero=True)
        return gather_depth(self.compaction_positions(), self.radix)

    def compaction_rotations(self) -> list[int]:
        if not (self.compact and self.holes):
            return []
        if self.use_remove_holes:
            n = (self.c_out - 1) * self.cs + self.out_pos[-1] + 1 if self.packed else self.out_pos[-1] + 1
            return required_rotations_remove_holes(n, self.stride[0], self.radix)
        return required_rotations_gather(self.compaction_positions(), self.radix)


# -- the operator ------------------------------------------------------------------------------
def _conv_nd(
    backend: Backend,
    ct: Ciphertext | Sequence[Ciphertext],
    kernel: np.ndarray,
    shape: Sequence[int],
    stride,
    mode: str,
    padding,
    bias,
    compact: bool,
    channel_stride: int | None,
    radix: int,
    bsgs: bool,
    section: str,
) -> Ciphertext | list[Ciphertext]:
    d = len(shape)
    k = _norm_kernel(kernel, d)
    c_out, c_in = k.shape[:2]
    as_list = not isinstance(ct, Ciphertext)
    cts: list[Ciphertext] = list(ct) if as_list else [ct]  # type: ignore[arg-type]
    if not cts:
        raise ShapeError("no input ciphertexts")
    if as_list:
        if len(cts) != c_in:
            raise ShapeError(f"the kernel expects {c_in} input channels, got {len(cts)} ciphertexts")
        packed, cs = False, 0
    else:
        lay = cts[0].layout
        cs = int(channel_stride or (lay.channel_stride if lay.channels > 1 else 0))
        if c_in > 1 and lay.channels not in (1, c_in):
            raise ShapeError(f"the ciphertext packs {lay.channels} channels, the kernel wants {c_in}")
        if c_in > 1 and cs == 0:
            raise ShapeError(
                f"{c_in} input channels in one ciphertext need a channel_stride (argument or "
                "Layout); or pass a list of ciphertexts, one per channel"
            )
        packed = c_in > 1 or c_out > 1
        if packed and cs == 0:
            probe = _Plan(1 << 30, shape, k, stride, conv_padding(k.shape[2:], mode, padding),
                          False, 0, compact, radix)
            cs = probe.span
    pads = conv_padding(k.shape[2:], mode, padding)
    plan = _Plan(backend.slots, shape, k, stride, pads, packed, cs, compact, radix)
    if bias is not None:
        bias = np.atleast_1d(np.asarray(bias, dtype=np.float64))
        if bias.shape != (c_out,):
            raise ShapeError(f"bias must have {c_out} entries, got shape {bias.shape}")
    depth = 1 + plan.compaction_depth()
    for c in cts:
        backend.require_levels(c, depth, section)

    outs: list[Ciphertext] = []
    with backend.counter.section(section):
        if packed:
            diags = plan.diagonals_packed(backend.slots)
            y = diagonal_matvec(backend, cts[0], diags, bsgs=bsgs, hints=[cs] if cs else ())
            outs = [y]
        else:
            # rotations of each input shared by all output channels
            taps = list(plan.taps())
            terms: list[list[tuple[Ciphertext, np.ndarray]]] = [[] for _ in range(c_out)]
            for c, x in enumerate(cts):
                rots: dict[int, Ciphertext] = {}
                for tap in taps:
                    t = plan.tap_offset(tap)
                    ok = plan.tap_mask(tap)
                    if not ok.any():
                        continue
                    pos = plan.out_pos[ok]
                    for o in range(c_out):
                        w = k[(o, c) + tuple(tap)]
                        if w == 0:
                            continue
                        if t not in rots:
                            rots[t] = x if t == 0 else backend.rotate(x, t)
                        vec = np.zeros(int(pos[-1]) + 1)
                        vec[pos] = w
                        terms[o].append((rots[t], vec))
            # one rescale per output channel (lazy rescaling)
            outs = [
                mul_plain_sum(backend, tl) if tl else backend.mul_plain(cts[0], np.zeros(1))
                for tl in terms
            ]
        # compaction
        results = []
        for y in outs:
            if compact and plan.holes:
                if plan.use_remove_holes:
                    n_span = (
                        (c_out - 1) * cs + int(plan.out_pos[-1]) + 1 if packed else int(plan.out_pos[-1]) + 1
                    )
                    y = remove_holes(
                        backend, y, n_span, plan.stride[0], radix=radix, holes_zero=True,
                        section="compact",
                    )
                else:
                    y = gather(backend, y, plan.compaction_positions(), radix=radix, section="compact")
                per = plan.count
            else:
                per = int(plan.out_pos[-1]) + 1
            if packed:
                ch_len = plan.out_cs
                length = (c_out - 1) * ch_len + per
                layout = Layout(
                    gap=plan.stride[0] if (d == 1 and not (compact and plan.holes)) else 1,
                    channels=c_out,
                    channel_stride=ch_len,
                )
            else:
                length = per
                layout = Layout(gap=plan.stride[0]) if (d == 1 and not compact and plan.holes) else Layout()
            y = y.replace(length=length, layout=layout, is_complex=False)
            results.append(y)
        if bias is not None:
            results = _add_bias(backend, results, bias, plan, packed, compact)
    if as_list:
        return results
    return results[0]


def _add_bias(backend, results, bias, plan: _Plan, packed: bool, compact: bool):
    if compact and plan.holes:
        pos = np.arange(plan.count)
    else:
        pos = plan.out_pos
    if packed:
        y = results[0]
        vec = np.zeros(y.length)
        for o in range(plan.c_out):
            vec[o * plan.out_cs + pos] = bias[o]
        return [backend.add_plain(y, vec)]
    out = []
    for o, y in enumerate(results):
        vec = np.zeros(y.length)
        vec[pos] = bias[o]
        out.append(backend.add_plain(y, vec))
    return out


def conv_spatial_depth(
    shape: Sequence[int], kernel_shape: Sequence[int], stride=1, mode="valid", *, padding=None,
    compact: bool = True, radix: int = 2, channels: tuple[int, int] = (1, 1),
    channel_stride: int | None = None,
) -> int:
    """Levels a spatial convolution consumes: 1, plus the compaction's when ``compact``."""
    k = np.zeros((channels[1], channels[0]) + tuple(kernel_shape))
    pads = conv_padding(kernel_shape, mode, padding)
    # as the operator: one channel in and out is never "packed", whatever the channel_stride
    packed = channel_stride is not None and max(channels) > 1
    plan = _Plan(1 << 30, shape, k, stride, pads, packed, channel_stride or 0, compact, radix)
    return 1 + plan.compaction_depth()


def required_rotations_conv_spatial(
    shape: Sequence[int], kernel_shape: Sequence[int], stride=1, mode="valid", *, padding=None,
    compact: bool = True, radix: int = 2, channels: tuple[int, int] = (1, 1),
    channel_stride: int | None = None, slots: int | None = None, bsgs: bool = True,
) -> list[int]:
    """The rotation steps a spatial convolution uses (``channels = (C_in, C_out)``;
    ``channel_stride`` given = one packed ciphertext, else one ciphertext per channel)."""
    k = np.ones((channels[1], channels[0]) + tuple(kernel_shape))
    pads = conv_padding(kernel_shape, mode, padding)
    packed = channel_stride is not None and max(channels) > 1  # as the operator decides
    plan = _Plan(1 << 30, shape, k, stride, pads, packed, channel_stride or 0, compact, radix)
    if packed:
        steps = set(required_rotations_diagonal(plan.offsets_packed(), slots or (1 << 30),
                                                [channel_stride], bsgs))
    else:
        steps = {plan.tap_offset(t) for t in plan.taps() if plan.tap_mask(t).any()}
    steps |= set(plan.compaction_rotations())
    if slots:
        steps = {s % slots for s in steps}
    return sorted(s for s in steps if s)


# -- public entry points -----------------------------------------------------------------------
def conv1d_spatial(
    backend: Backend,
    ct: Ciphertext | Sequence[Ciphertext],
    kernel: np.ndarray,
    n: int,
    stride: int = 1,
    mode: str = "valid",
    *,
    padding: int | Sequence | None = None,
    bias: np.ndarray | Sequence[float] | float | None = None,
    compact: bool = True,
    channel_stride: int | None = None,
    radix: int = 2,
    bsgs: bool = True,
    section: str | None = None,
) -> Ciphertext | list[Ciphertext]:
    """PyTorch ``conv1d`` of the first ``n`` slots with a 1-D ``kernel`` (see the module docstring).

    ``kernel`` ``(K,)``: result holds ``out[i] = sum_k x[i*stride + k - pad] * kernel[k]`` in
    slots ``0..L-1`` (compact) or at slots ``i*stride`` (``compact=False``, ``Layout(gap=stride)``).
    ``(C_out, C_in, K)``: multi-channel, input a list of ciphertexts or one packed ciphertext.
    Depth: 1 (+ ``remove_holes`` levels when ``stride > 1`` and ``compact``).
    """
    return _conv_nd(backend, ct, kernel, (int(n),), stride, mode, padding, bias, compact,
                    channel_stride, radix, bsgs, section or "conv1d_spatial")


def conv2d_spatial(
    backend: Backend,
    ct: Ciphertext | Sequence[Ciphertext],
    kernel: np.ndarray,
    shape: Sequence[int],
    stride: int | Sequence[int] = 1,
    mode: str = "valid",
    *,
    padding: int | Sequence | None = None,
    bias: np.ndarray | Sequence[float] | float | None = None,
    compact: bool = True,
    channel_stride: int | None = None,
    radix: int = 2,
    bsgs: bool = True,
    section: str | None = None,
) -> Ciphertext | list[Ciphertext]:
    """PyTorch ``conv2d`` of a row-major ``shape = (H, W)`` image (``kernel`` ``(KH, KW)`` or
    ``(C_out, C_in, KH, KW)``). The compact result is the row-major ``(H_out, W_out)`` output;
    ``compact=False`` leaves output ``(i, j)`` at slot ``i*s*W + j*s`` of the input grid.
    Depth: 1 (+ :func:`~privkit.fhe.ops.rotate_sum.gather` levels when compacting)."""
    if len(shape) != 2:
        raise ShapeError(f"conv2d_spatial needs shape (H, W), got {shape}")
    return _conv_nd(backend, ct, kernel, tuple(shape), stride, mode, padding, bias, compact,
                    channel_stride, radix, bsgs, section or "conv2d_spatial")


def conv3d_spatial(
    backend: Backend,
    ct: Ciphertext | Sequence[Ciphertext],
    kernel: np.ndarray,
    shape: Sequence[int],
    stride: int | Sequence[int] = 1,
    mode: str = "valid",
    *,
    padding: int | Sequence | None = None,
    bias: np.ndarray | Sequence[float] | float | None = None,
    compact: bool = True,
    channel_stride: int | None = None,
    radix: int = 2,
    bsgs: bool = True,
    section: str | None = None,
) -> Ciphertext | list[Ciphertext]:
    """PyTorch ``conv3d`` of a row-major ``shape = (D, H, W)`` volume; as :func:`conv2d_spatial`."""
    if len(shape) != 3:
        raise ShapeError(f"conv3d_spatial needs shape (D, H, W), got {shape}")
    return _conv_nd(backend, ct, kernel, tuple(shape), stride, mode, padding, bias, compact,
                    channel_stride, radix, bsgs, section or "conv3d_spatial")
