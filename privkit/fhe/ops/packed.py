"""Channel-packed operators: what the compiler chains into a network on one ciphertext.

A *packed layout* ``PackedLayout(channels=C, length=L, gap=g, block=B)`` puts element ``i`` of
channel ``c`` in slot ``c*B + i*g``. Strided convolutions and pools multiply the gap instead of
compacting (no levels spent on moving data); the next layer reads with the larger gap. Slots
that hold no element may hold anything ("dirty") unless the layout is marked ``clean``; valid
outputs of these operators only ever read valid inputs, so dirt never reaches a result.

=====================  ==================================================  ======
operator               rotations                                           levels
=====================  ==================================================  ======
``conv1d_packed``      ``K - 1`` + ``Co + Ci - 2`` (``log2 Co`` if Ci = 1)  1
``sum_pool_packed``    ``k - 1``                                           0
``linear_packed``      ``O * log2(span)`` + ``O - 1``                      2
``place_channels``     0                                                   1
=====================  ==================================================  ======

Each operator has a numpy twin (``*_ref``) acting on the full slot vector with the same maths.

>>> import numpy as np
>>> from privkit.fhe import KeySet
>>> keys = KeySet.generate("n8192", backend="sim")
>>> lay = PackedLayout(channels=1, length=8, gap=1, block=16, clean=True)
>>> w = np.ones((2, 1, 3)); b = np.array([0.0, 1.0])
>>> out, lay2 = conv1d_packed(keys.backend, keys.encrypt(np.arange(8.0)), w, b, lay)
>>> unpack(keys.decrypt(out.replace(length=keys.params.slots)), lay2)
array([[ 3.,  6.,  9., 12., 15., 18.],
       [ 4.,  7., 10., 13., 16., 19.]])
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ...errors import ShapeError
from ..backend import Backend, Ciphertext, Layout
from .rotate_sum import replicate

__all__ = [
    "PackedLayout",
    "pack",
    "unpack",
    "valid_slots",
    "conv1d_packed",
    "conv1d_packed_ref",
    "conv1d_packed_rotations",
    "conv_packed",
    "conv_packed_rotations",
    "pool_layout",
    "sum_pool_packed",
    "sum_pool_packed_ref",
    "linear_packed",
    "linear_packed_ref",
    "linear_packed_rotations",
]


@dataclasses.dataclass(frozen=True)
class PackedLayout:
    """Element ``(c, i[, j[, k]])`` sits in slot ``c*block + sum(index_a * gaps[a])``.

    ``shape`` is the spatial shape (``(length,)`` for 1-D data, the default) and ``gaps`` the
    slot distance between neighbours along each axis (``gap`` is the last axis' one). Elements
    are listed row-major (torch's ``Flatten`` order) by :func:`valid_slots`.
    """

    channels: int
    length: int
    gap: int = 1
    block: int = 0
    clean: bool = False
    shape: tuple[int, ...] = ()
    gaps: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        shape = tuple(int(v) for v in self.shape) or (int(self.length),)
        gaps = tuple(int(v) for v in self.gaps)
        if not gaps:
            gaps = (int(self.gap),) if len(shape) == 1 else _row_major_gaps(shape, int(self.gap))
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "gaps", gaps)
        if len(gaps) != len(shape) or math.prod(shape) != self.length or gaps[-1] != self.gap:
            raise ShapeError(f"invalid packed layout {self}: shape, gaps, length and gap disagree")
        if self.block == 0:
            object.__setattr__(self, "block", 1 << max(0, math.ceil(math.log2(max(1, self.extent)))))
        if self.channels < 1 or self.length < 1 or min(gaps) < 1:
            raise ShapeError(f"invalid packed layout {self}")
        if self.extent > self.block and self.channels > 1:
            raise ShapeError(f"layout {self}: a channel overflows its block")

    @classmethod
    def grid(cls, channels: int, shape: tuple[int, ...], gaps: tuple[int, ...], block: int = 0,
             clean: bool = False) -> PackedLayout:
        """An N-D layout from its spatial ``shape`` and per-axis ``gaps``."""
        return cls(channels, math.prod(shape), gaps[-1], block, clean, tuple(shape), tuple(gaps))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def extent(self) -> int:
        """Slots one channel occupies, from its first element to one past its last."""
        return sum((n - 1) * g for n, g in zip(self.shape, self.gaps)) + 1

    @property
    def span(self) -> int:
        """Slots from 0 to one past the last element."""
        return (self.channels - 1) * self.block + self.extent

    def offsets(self) -> np.ndarray:
        """Slot offset of every element inside its channel block, row-major, shape (length,)."""
        off = np.zeros(1, dtype=np.int64)
        for n, g in zip(self.shape, self.gaps):
            off = (off[:, None] + np.arange(n)[None, :] * g).ravel()
        return off

    def to_layout(self) -> Layout:
        return Layout(gap=self.gap, offset=0, channels=self.channels, channel_stride=self.block)


def _row_major_gaps(shape: tuple[int, ...], gap: int) -> tuple[int, ...]:
    gaps = [gap]
    for n in reversed(shape[1:]):
        gaps.insert(0, gaps[0] * n)
    return tuple(gaps)


def valid_slots(layout: PackedLayout) -> np.ndarray:
    """Slot index of every element, shape (channels, length) (spatial axes row-major)."""
    c = np.arange(layout.channels)[:, None] * layout.block
    return c + layout.offsets()[None, :]


def pack(x: np.ndarray, layout: PackedLayout, slots: int) -> np.ndarray:
    """(channels, length) array -> slot vector (zeros elsewhere)."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape != (layout.channels, layout.length):
        raise ShapeError(f"pack expects shape {(layout.channels, layout.length)}, got {x.shape}")
    if layout.span > slots:
        raise ShapeError(f"layout spans {layout.span} slots, more than the {slots} available")
    vec = np.zeros(slots)
    vec[valid_slots(layout)] = x
    return vec


def unpack(vec: np.ndarray, layout: PackedLayout) -> np.ndarray:
    """Slot vector -> (channels, length) array of the elements."""
    v = np.asarray(vec)
    return (v.real if np.iscomplexobj(v) else v)[valid_slots(layout)]


# -- convolution -------------------------------------------------------------------------------


def _conv_out_len(length: int, k: int, stride: int, padding: int) -> int:
    out = (length + 2 * padding - k) // stride + 1
    if out < 1:
        raise ShapeError(f"kernel {k} with padding {padding} is longer than the input ({length})")
    return out


def _tuple(v: int | tuple[int, ...], n: int) -> tuple[int, ...]:
    return tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else (int(v),) * n


def _conv_plan(weight: np.ndarray, layout: PackedLayout, stride: int | tuple[int, ...],
               padding: int | tuple[int, ...], slots: int):
    co_n, ci_n = weight.shape[:2]
    ksz = weight.shape[2:]
    nd = len(ksz)
    if nd != layout.ndim:
        raise ShapeError(f"a {nd}-D convolution needs {nd}-D data, the layout is {layout.ndim}-D")
    if ci_n != layout.channels:
        raise ShapeError(f"convolution expects {ci_n} input channels, the layout has {layout.channels}")
    st, pd = _tuple(stride, nd), _tuple(padding, nd)
    shape_out = tuple(_conv_out_len(n, k, s, p) for n, k, s, p in zip(layout.shape, ksz, st, pd))
    out_extent = sum((n - 1) * g * s for n, g, s in zip(shape_out, layout.gaps, st)) + 1
    if out_extent > layout.block and max(co_n, ci_n) > 1:
        raise ShapeError(f"block {layout.block} leaves no room for padding {pd}: the output spans {out_extent} slots")
    out_layout = PackedLayout.grid(co_n, shape_out, tuple(g * s for g, s in zip(layout.gaps, st)), layout.block)
    if co_n * layout.block > slots or ci_n * layout.block > slots:
        raise ShapeError(
            f"{max(co_n, ci_n)} channels of block {layout.block} need "
            f"{max(co_n, ci_n) * layout.block} slots; the ciphertext has {slots}: use a larger preset"
        )
    if any(pd) and not layout.clean:
        raise ShapeError("a padded convolution needs a clean input layout (mask it first)")
    replicated = ci_n == 1 and co_n > 1 and layout.clean
    taps = list(np.ndindex(*ksz))
    baby = [sum((k - p) * g for k, p, g in zip(kk, pd, layout.gaps)) for kk in taps]
    if any(pd):
        _check_padding_room(layout, shape_out, st, pd, taps, max(ci_n, co_n if replicated else 1), slots)
    w2 = weight.reshape(co_n, ci_n, len(taps))
    deltas = [0] if replicated else list(range(-(co_n - 1), ci_n))
    out_pos = out_layout.offsets()
    masks: dict[tuple[int, int], np.ndarray] = {}
    for d in deltas:
        for t in range(len(taps)):
            m = np.zeros(slots)
            any_nz = False
            for co in range(co_n):
                ci = 0 if replicated else co + d
                if not 0 <= ci < ci_n:
                    continue
                w = w2[co, ci, t]
                if w == 0:
                    continue
                # after the giant-step rotation by d*B, block ci lands on block co
                base = (co if replicated else ci) * layout.block
                m[base + out_pos] = w
                any_nz = True
            if any_nz:
                masks[(d, t)] = m
    return out_layout, replicated, baby, deltas, masks


def _split_1d(k: int, n_deltas: int) -> int | None:
    """Baby steps per giant step for a 1-D kernel of ``k`` taps (taps ``t = j * nb + i``: baby
    rotation ``i``, giant rotation ``j * nb``), or None unless that saves a third of the
    rotations of one rotation per tap.

    >>> _split_1d(32, 1), _split_1d(8, 7), _split_1d(5, 1)
    (8, None, None)
    """
    flat = k - 1 + n_deltas - 1
    best, cost = None, flat
    for nb in range(k - 1, 1, -1):  # ties: the most baby steps (fewest giant products)
        c = nb - 1 + n_deltas * math.ceil(k / nb) - 1
        if c < cost:
            best, cost = nb, c
    # only when it saves a third of the rotations: a giant rotation adds its key-switching noise
    # after the product, so a saving of one rotation on a short kernel is not worth it
    return best if 3 * cost < 2 * flat else None


def _tap_split(layout: PackedLayout, ksz: tuple[int, ...], pd: tuple[int, ...],
               n_deltas: int = 1) -> tuple[list[int], list[int]]:
    """(inner, outer) offset of every tap: the last axis' part and the rest (1-D: the tap index
    split into baby and giant parts, see :func:`_split_1d`)."""
    inner, outer = [], []
    if len(ksz) == 1:
        nb = _split_1d(ksz[0], n_deltas) or ksz[0]
        g = layout.gaps[0]
        for t in range(ksz[0]):
            inner.append((t % nb - pd[0]) * g)
            outer.append((t - t % nb) * g)
        return inner, outer
    for kk in np.ndindex(*ksz):
        inner.append((kk[-1] - pd[-1]) * layout.gaps[-1])
        outer.append(sum((k - p) * g for k, p, g in zip(kk[:-1], pd[:-1], layout.gaps[:-1])))
    return inner, outer


def _use_tap_bsgs(layout: PackedLayout, ksz: tuple[int, ...], n_deltas: int) -> bool:
    """Baby steps over the last kernel axis, giant steps over the others, when that rotates less
    than one rotation per tap (a 1-input-channel 2-D / 3-D conv, typically); a long 1-D kernel
    is split into ``sqrt``-sized baby and giant steps the same way."""
    if len(ksz) < 2:
        return _split_1d(ksz[0], n_deltas) is not None
    flat = math.prod(ksz) - 1 + n_deltas - 1
    bsgs = ksz[-1] - 1 + n_deltas * math.prod(ksz[:-1]) - 1
    return bsgs < flat


def _conv_groups(weight_shape: tuple[int, ...], layout: PackedLayout, padding: Any, baby: list[int],
                 deltas: list[int], masks: dict[tuple[int, int], np.ndarray]) -> dict[int, list[tuple[int, np.ndarray]]]:
    """giant rotation -> [(baby rotation, plaintext mask)]: ``sum_g rot(sum_b rot(x, b) * m, g)``."""
    ksz = tuple(weight_shape[2:])
    pd = _tuple(padding, len(ksz))
    groups: dict[int, list[tuple[int, np.ndarray]]] = {}
    if not _use_tap_bsgs(layout, ksz, len(deltas)):
        for d in deltas:
            for t, step in enumerate(baby):
                if (d, t) in masks:
                    groups.setdefault(d * layout.block, []).append((step, masks[(d, t)]))
        return groups
    inner, outer = _tap_split(layout, ksz, pd, len(deltas))
    for d in deltas:
        for t in range(len(baby)):
            if (d, t) in masks:
                g = d * layout.block + outer[t]
                groups.setdefault(g, []).append((inner[t], np.roll(masks[(d, t)], outer[t])))
    return groups


def _check_padding_room(layout: PackedLayout, shape_out: tuple[int, ...], st: tuple[int, ...],
                        pd: tuple[int, ...], taps: list[tuple[int, ...]], blocks: int, slots: int) -> None:
    """Every tap that falls in the zero padding must read a slot that holds no element."""
    busy = np.zeros(slots, dtype=bool)
    for c in range(blocks):
        busy[(c * layout.block + layout.offsets()) % slots] = True
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape_out, st)], indexing="ij")
    for kk in taps:
        idx = [g + k - p for g, k, p in zip(grids, kk, pd)]
        oob = np.zeros(idx[0].shape, dtype=bool)
        for i, n in zip(idx, layout.shape):
            oob |= (i < 0) | (i >= n)
        if not oob.any():
            continue
        pos = sum(i[oob] * g for i, g in zip(idx, layout.gaps))
        for c in range(blocks):
            if busy[(c * layout.block + pos) % slots].any():
                raise ShapeError(f"block {layout.block} leaves no room for padding {pd}")


def conv_packed_rotations(weight_shape: tuple[int, ...], layout: PackedLayout,
                          stride: int | tuple[int, ...] = 1, padding: int | tuple[int, ...] = 0,
                          slots: int | None = None) -> list[int]:
    """The rotation steps :func:`conv_packed` uses (any number of spatial axes)."""
    co_n, ci_n = weight_shape[:2]
    ksz = tuple(weight_shape[2:])
    pd = _tuple(padding, len(ksz))
    replicated = ci_n == 1 and co_n > 1 and layout.clean
    deltas = [0] if replicated else list(range(-(co_n - 1), ci_n))
    if _use_tap_bsgs(layout, ksz, len(deltas)):
        inner, outer = _tap_split(layout, ksz, pd, len(deltas))
        steps = set(inner) | {d * layout.block + o for d in deltas for o in set(outer)}
    else:
        steps = {sum((k - p) * g for k, p, g in zip(kk, pd, layout.gaps)) for kk in np.ndindex(*ksz)}
        steps |= {d * layout.block for d in deltas}
    if replicated:
        from .rotate_sum import required_rotations_replicate

        steps |= set(required_rotations_replicate(layout.block, co_n, slots))
    if slots:
        steps = {s % slots for s in steps}
    return sorted(int(s) for s in steps if s)


def conv1d_packed_rotations(weight_shape: tuple[int, int, int], layout: PackedLayout, stride: int = 1,
                            padding: int = 0, slots: int | None = None) -> list[int]:
    """The rotation steps :func:`conv1d_packed` uses."""
    return conv_packed_rotations(weight_shape, layout, stride, padding, slots)


def conv1d_packed_ref(vec: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, layout: PackedLayout,
                      stride: int = 1, padding: int = 0) -> tuple[np.ndarray, PackedLayout]:
    """Numpy twin of :func:`conv1d_packed` on the full slot vector (same rotations and masks)."""
    vec = np.asarray(vec, dtype=np.complex128)
    slots = vec.size
    out_layout, replicated, baby, deltas, masks = _conv_plan(np.asarray(weight, float), layout, stride, padding, slots)
    x = vec
    if replicated:
        x = sum(np.roll(vec, j * layout.block) for j in range(weight.shape[0]))
    acc = np.zeros(slots, dtype=np.complex128)
    for g, terms in _conv_groups(np.shape(weight), layout, padding, baby, deltas, masks).items():
        part = sum((np.roll(x, -b) * m for b, m in terms), np.zeros(slots, dtype=np.complex128))
        acc += np.roll(part, -g)
    if bias is not None:
        acc += _bias_vec(np.asarray(bias, float), out_layout, slots)
    return acc, out_layout


def _bias_vec(bias: np.ndarray, layout: PackedLayout, slots: int) -> np.ndarray:
    v = np.zeros(slots)
    v[valid_slots(layout)] = bias[:, None]
    return v


def conv1d_packed(backend: Backend, ct: Ciphertext, weight: np.ndarray, bias: np.ndarray | None,
                  layout: PackedLayout, stride: int = 1, padding: int = 0,
                  section: str | None = None) -> tuple[Ciphertext, PackedLayout]:
    """Multi-channel 1-D convolution (PyTorch cross-correlation) on a packed ciphertext.

    See :func:`conv_packed` (which this is, for weights of shape ``(out, in, kernel)``).
    """
    weight = np.asarray(weight, dtype=np.float64)
    if weight.ndim != 3:
        raise ShapeError(f"conv weight must have shape (out, in, kernel), got {weight.shape}")
    return conv_packed(backend, ct, weight, bias, layout, stride, padding, section=section or "conv1d_packed")


def conv_packed(backend: Backend, ct: Ciphertext, weight: np.ndarray, bias: np.ndarray | None,
                layout: PackedLayout, stride: int | tuple[int, ...] = 1, padding: int | tuple[int, ...] = 0,
                section: str | None = None) -> tuple[Ciphertext, PackedLayout]:
    """Multi-channel N-D convolution (PyTorch cross-correlation) on a packed ciphertext.

    ``weight`` has shape ``(out, in, *kernel)`` with one kernel axis per spatial axis of
    ``layout``; every tap ``(k_1, ..., k_n)`` is one rotation of the input by
    ``sum((k_a - padding_a) * gaps[a])``.

    Baby-step giant-step: ``K`` rotations of the input by the taps, plaintext masks carrying the
    weights per (channel shift, tap), ``Co + Ci - 2`` rotations by whole blocks. With one input
    channel on a clean layout the input is replicated into every output block instead
    (``log2 Co`` rotations). One level. The output is left gapped (gap ``g * stride``).
    """
    weight = np.asarray(weight, dtype=np.float64)
    if weight.ndim < 3:
        raise ShapeError(f"conv weight must have shape (out, in, *kernel), got {weight.shape}")
    out_layout, replicated, baby, deltas, masks = _conv_plan(weight, layout, stride, padding, backend.slots)
    backend.require_levels(ct, 1, section or "conv_packed")
    with backend.counter.section(section or "conv_packed"):
        x = ct
        if replicated:
            x = replicate(backend, ct.replace(length=min(ct.length, layout.block)), layout.block,
                          weight.shape[0], section="replicate")
        rotated: dict[int, Ciphertext] = {}
        acc = None
        for g, group in _conv_groups(weight.shape, layout, padding, baby, deltas, masks).items():
            terms = []
            for step, m in group:
                if step not in rotated:
                    rotated[step] = backend.rotate(x, step) if step else x
                terms.append((rotated[step], m))
            part = backend.mul_plain_sum(terms)  # one rescale per giant step
            if g:
                part = backend.rotate(part, g)
            acc = part if acc is None else backend.add(acc, part)
        if acc is None:  # all-zero weights
            acc = backend.mul_plain(x, np.zeros(1))
        if bias is not None:
            acc = backend.add_plain(acc, _bias_vec(np.asarray(bias, float), out_layout, backend.slots))
    return acc.replace(length=out_layout.span, layout=out_layout.to_layout()), out_layout


# -- pooling -------------------------------------------------------------------------------------


def pool_layout(layout: PackedLayout, kernel: int | tuple[int, ...], stride: int | tuple[int, ...]) -> PackedLayout:
    """Layout after a window operation of ``kernel`` / ``stride`` per spatial axis (gaps grow)."""
    ks, st = _tuple(kernel, layout.ndim), _tuple(stride, layout.ndim)
    shape = tuple((n - k) // s + 1 for n, k, s in zip(layout.shape, ks, st))
    if min(shape) < 1:
        raise ShapeError(f"pool kernel {ks} is larger than the input {layout.shape}")
    return PackedLayout.grid(layout.channels, shape, tuple(g * s for g, s in zip(layout.gaps, st)), layout.block)


_pool_layout = pool_layout


def sum_pool_packed_ref(vec: np.ndarray, layout: PackedLayout, kernel: int | tuple[int, ...],
                        stride: int | tuple[int, ...]) -> tuple[np.ndarray, PackedLayout]:
    """Numpy twin of :func:`sum_pool_packed`."""
    out = np.asarray(vec, dtype=np.complex128)
    for k, g in zip(_tuple(kernel, layout.ndim), layout.gaps):
        out = sum(np.roll(out, -j * g) for j in range(k))
    return out, pool_layout(layout, kernel, stride)


def sum_pool_rotations(layout: PackedLayout, kernel: int | tuple[int, ...]) -> list[int]:
    """The rotation steps :func:`sum_pool_packed` uses."""
    return sorted({j * g for k, g in zip(_tuple(kernel, layout.ndim), layout.gaps) for j in range(1, k)})


def sum_pool_packed(backend: Backend, ct: Ciphertext, layout: PackedLayout, kernel: int | tuple[int, ...],
                    stride: int | tuple[int, ...], section: str | None = None) -> tuple[Ciphertext, PackedLayout]:
    """Window sums (``kernel`` taps per axis, ``stride``) on a packed ciphertext; no level, gapped
    output. Separable: one pass of ``k_a - 1`` rotations per spatial axis."""
    out_layout = pool_layout(layout, kernel, stride)
    with backend.counter.section(section or "sum_pool"):
        acc = ct
        for k, g in zip(_tuple(kernel, layout.ndim), layout.gaps):
            base = acc
            for j in range(1, k):
                acc = backend.add(acc, backend.rotate(base, j * g))
    return acc.replace(length=out_layout.span, layout=out_layout.to_layout()), out_layout


# -- fully connected -----------------------------------------------------------------------------


def _span_pow2(layout: PackedLayout) -> int:
    return 1 << math.ceil(math.log2(max(2, layout.span)))


def _linear_masks(weight: np.ndarray, layout: PackedLayout, slots: int) -> list[np.ndarray]:
    o_n, f_n = weight.shape
    if f_n != layout.channels * layout.length:
        raise ShapeError(
            f"linear layer expects {f_n} features but the input has {layout.channels} x {layout.length} "
            f"= {layout.channels * layout.length}"
        )
    pos = valid_slots(layout).ravel()  # (c, i) row-major = torch's Flatten order
    out = []
    for o in range(o_n):
        m = np.zeros(slots)
        m[pos] = weight[o]
        out.append(m)
    return out


def linear_packed_rotations(out_features: int, layout: PackedLayout, slots: int) -> list[int]:
    """The rotation steps :func:`linear_packed` uses."""
    span = _span_pow2(layout)
    steps = {1 << i for i in range(int(math.log2(span)))}
    steps |= {(-o) % slots for o in range(1, out_features)}
    return sorted(s % slots for s in steps if s % slots)


def linear_packed_ref(vec: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, layout: PackedLayout) -> np.ndarray:
    """Numpy twin of :func:`linear_packed` (returns the full slot vector)."""
    vec = np.asarray(vec, dtype=np.complex128)
    slots = vec.size
    out = np.zeros(slots, dtype=np.complex128)
    for o, m in enumerate(_linear_masks(np.asarray(weight, float), layout, slots)):
        out[o] = np.sum(vec * m)
    if bias is not None:
        out[: len(bias)] += bias
    return out


def linear_packed(backend: Backend, ct: Ciphertext, weight: np.ndarray, bias: np.ndarray | None,
                  layout: PackedLayout, section: str | None = None) -> Ciphertext:
    """Fully connected layer on a packed ciphertext; outputs compact in slots ``0..O-1``, clean.

    Per output: one plaintext product with the weights laid out like the input (zeros in gaps,
    so dirty slots never count), a rotate-and-sum over the occupied span (``log2(span)``
    rotations), then a one-hot mask moves the sum to its slot. Two levels.
    """
    weight = np.asarray(weight, dtype=np.float64)
    if weight.ndim != 2:
        raise ShapeError(f"linear weight must be 2-D, got shape {weight.shape}")
    masks = _linear_masks(weight, layout, backend.slots)
    backend.require_levels(ct, 2, section or "linear_packed")
    span = _span_pow2(layout)
    with backend.counter.section(section or "linear_packed"):
        acc = None
        for o, m in enumerate(masks):
            s = backend.sum_slots(backend.mul_plain(ct, m), span)
            s = backend.mul_plain(s, np.ones(1))  # keep slot 0 only
            if o:
                s = backend.rotate(s, -o)
            acc = s if acc is None else backend.add(acc, s)
        if bias is not None:
            acc = backend.add_plain(acc, np.asarray(bias, dtype=np.float64))
    return acc.replace(length=weight.shape[0], layout=Layout())
