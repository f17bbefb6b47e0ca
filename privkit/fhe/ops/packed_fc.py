"""Fully connected layer on a packed ciphertext by hybrid diagonals with baby-step giant-step.

The compiler's ``Linear(method="bsgs")``: ONE level and about ``2 sqrt(O) + log2(slots / O)``
rotations for ``O`` outputs, against ``linear_packed``'s two levels and ``O * log2(span)``.
It reads the input on any :class:`~privkit.fhe.ops.packed.PackedLayout` (gaps, dirty slots).
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import ShapeError
from ..backend import Backend, Ciphertext, Layout
from .packed import PackedLayout, valid_slots

__all__ = ["linear_bsgs", "linear_bsgs_ref", "linear_bsgs_rotations"]


def _bsgs_split(o_pad: int) -> tuple[int, int]:
    baby = 1 << (int(math.log2(o_pad)) + 1) // 2
    return baby, o_pad // baby


def _linear_bsgs_plan(weight: np.ndarray, layout: PackedLayout, slots: int):
    o_n, f_n = weight.shape
    if f_n != layout.channels * layout.length:
        raise ShapeError(
            f"linear layer expects {f_n} features but the input has {layout.channels} x {layout.length} "
            f"= {layout.channels * layout.length}"
        )
    o_pad = 1 << max(0, math.ceil(math.log2(o_n)))
    if o_pad > slots or layout.span > slots:
        raise ShapeError(f"{o_n} outputs / span {layout.span} do not fit {slots} slots")
    big = np.zeros((o_pad, slots))  # M'[o, s]: the weight of the element at slot s
    big[:o_n, valid_slots(layout).ravel()] = weight
    baby, giant = _bsgs_split(o_pad)
    s_idx = np.arange(slots)
    diags = {}
    for g in range(giant):
        for b in range(baby):
            i = g * baby + b
            d = big[s_idx % o_pad, (s_idx + i) % slots]  # diagonal i: row s mod O', column s + i
            if np.any(d):
                diags[(g, b)] = np.roll(d, g * baby)  # pre-rotated so the giant step comes after
    return o_pad, baby, giant, diags


def linear_bsgs_rotations(out_features: int, layout: PackedLayout, slots: int) -> list[int]:
    """The rotation steps :func:`linear_bsgs` uses."""
    o_pad = 1 << max(0, math.ceil(math.log2(out_features)))
    baby, giant = _bsgs_split(o_pad)
    steps = set(range(1, baby)) | {g * baby for g in range(1, giant)}
    steps |= {o_pad << j for j in range(int(math.log2(slots // o_pad)))}
    return sorted(s % slots for s in steps if s % slots)


def linear_bsgs_ref(vec: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, layout: PackedLayout) -> np.ndarray:
    """Numpy twin of :func:`linear_bsgs` (full slot vector; outputs repeat with period ``O'``)."""
    vec = np.asarray(vec, dtype=np.complex128)
    slots = vec.size
    o_pad, baby, giant, diags = _linear_bsgs_plan(np.asarray(weight, float), layout, slots)
    acc = np.zeros(slots, dtype=np.complex128)
    for g in range(giant):
        part = sum((np.roll(vec, -b) * diags[(g, b)] for b in range(baby) if (g, b) in diags),
                   np.zeros(slots, dtype=np.complex128))
        acc += np.roll(part, -g * baby)
    step = o_pad
    while step < slots:
        acc = acc + np.roll(acc, -step)
        step *= 2
    if bias is not None:
        acc += np.resize(np.concatenate([bias, np.zeros(o_pad - len(bias))]), slots)
    return acc


def linear_bsgs(backend: Backend, ct: Ciphertext, weight: np.ndarray, bias: np.ndarray | None,
                layout: PackedLayout, section: str | None = None) -> Ciphertext:
    """Fully connected layer by hybrid diagonals with baby-step giant-step; ONE level.

    With ``O'`` the outputs rounded up to a power of two: ``z = sum_i diag_i * rot(x, i)`` over
    ``i < O'`` (``diag_i[s]`` = weight of output ``s mod O'`` for the element at slot ``s + i``;
    zero at slots that hold no element, so dirty slots never count), ``baby + giant - 2``
    rotations; then a rotate-and-sum with steps ``O', 2O', ...`` (``log2(slots / O')``
    rotations) leaves output ``o`` in slot ``o`` (and, periodically, in ``o + k*O'``: the
    result is not clean). Compare :func:`linear_packed`: ``O * log2(span)`` rotations, 2 levels.
    """
    weight = np.asarray(weight, dtype=np.float64)
    if weight.ndim != 2:
        raise ShapeError(f"linear weight must be 2-D, got shape {weight.shape}")
    o_pad, baby, giant, diags = _linear_bsgs_plan(weight, layout, backend.slots)
    backend.require_levels(ct, 1, section or "linear_bsgs")
    with backend.counter.section(section or "linear_bsgs"):
        x = ct.replace(length=backend.slots)
        rots = {0: x}
        acc = None
        for g in range(giant):
            terms = []
            for b in range(baby):
                if (g, b) not in diags:
                    continue
                if b not in rots:
                    rots[b] = backend.rotate(x, b)
                terms.append((rots[b], diags[(g, b)]))
            if not terms:
                continue
            part = backend.mul_plain_sum(terms)
            if g:
                part = backend.rotate(part, g * baby)
            acc = part if acc is None else backend.add(acc, part)
        if acc is None:
            acc = backend.mul_plain(x, np.zeros(1))
        step = o_pad
        while step < backend.slots:
            acc = backend.add(acc, backend.rotate(acc, step))
            step *= 2
        if bias is not None:
            acc = backend.add_plain(acc, np.resize(np.concatenate([bias, np.zeros(o_pad - len(bias))]), backend.slots))
    return acc.replace(length=weight.shape[0], layout=Layout())
