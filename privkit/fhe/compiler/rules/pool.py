"""Pooling on the packed layout: average pools (window sums, the 1/k folded forward) and the
approximate max pools (pairwise-max trees, one per spatial axis)."""

from __future__ import annotations

import math
from typing import Any

from ....errors import ParameterError
from ...backend import Backend, Ciphertext
from ...ops import packed
from ...ops.packed import PackedLayout
from ..lowering import Lowered, Lowering, PlanContext, register_lowering

__all__ = ["max_tree", "max_depth", "window_sum_plan"]


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    return tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else (int(v),) * n


def max_tree(kernel: int) -> list[int]:
    """Offsets of the pairwise-max rounds covering a window of ``kernel`` elements.

    Round ``r`` computes ``m <- max(m, shift(m, offset_r))``; windows double until they cover
    ``kernel`` (the last offset overlaps so the window is exactly ``kernel`` wide). The torch
    forward of the max-pool layers and their lowering use this same tree.

    >>> max_tree(2), max_tree(3), max_tree(4)
    ([1], [1, 1], [1, 2])
    """
    if kernel < 1:
        raise ParameterError(f"pool kernel must be >= 1, got {kernel}")
    offs, width = [], 1
    while width < kernel:
        step = min(width, kernel - width)
        offs.append(step)
        width += step
    return offs


def max_depth(method: str, degree: int, iterations: int, bound: float = 1.0) -> int:
    """Levels one approximate max of two inputs bounded by ``bound`` consumes."""
    from ...ops import poly

    return poly.approx_max_depth(method, iterations=iterations, degree=degree, bound=bound)


def _nd_of(kind: str) -> int:
    return int(kind[-2])


@register_lowering("avgpool1d", "avgpool2d", "avgpool3d")
class AvgPoolLowering(Lowering):
    """Window sums by rotations (separable, no level); the ``1/prod(k)`` goes into the next conv
    or linear layer when one follows (else one scalar product, one level)."""

    groups = "channelwise"

    def depth(self, spec: dict[str, Any]) -> int:
        return 1  # on its own; 0 when the compiler folds the 1/k forward

    def plan(self, spec: dict[str, Any], ctx: PlanContext) -> Lowered:
        lay_in = ctx.layout
        nd = _nd_of(self.kind)
        if lay_in.ndim != nd:
            raise ParameterError(f"{ctx.name}: a {nd}-D pool on {lay_in.ndim}-D data")
        k, s = _tuple(spec["kernel"], nd), _tuple(spec["stride"], nd)
        area = math.prod(k)
        fold = ctx.next_is_affine
        out = packed.pool_layout(lay_in, k, s)
        out = PackedLayout.grid(out.channels, out.shape, out.gaps, out.block, clean=False)  # rotations bring elements into gaps

        def run(be: Backend, ct: Ciphertext) -> Ciphertext:
            y = packed.sum_pool_packed(be, ct, lay_in, k, s, section="sum")[0]
            return y if fold else be.mul_plain(y, 1.0 / area)

        if fold:
            ctx.fold_forward *= 1.0 / area
        return Lowered(0 if fold else 1, packed.sum_pool_rotations(lay_in, k), out, run,
                       f"k={k if nd > 1 else k[0]}, stride {s if nd > 1 else s[0]}"
                       + (f"; 1/{area} folded into the next layer" if fold else ""),
                       ref_scale=float(area) if fold else 1.0)


def window_sum_plan(length: int) -> tuple[list[int], list[int]]:
    """Rotate-and-sum of ``length`` consecutive elements in about ``2 log2(length)`` rotations.

    Returns ``(doublings, offsets)`` in element units: ``cur <- cur + shift(cur, d)`` for each
    ``d`` in ``doublings`` builds window sums of widths 1, 2, 4...; the window of width
    ``2**i`` is added at offset ``offsets[i]`` (-1: not used) when bit ``i`` of ``length`` is set.

    >>> window_sum_plan(5)
    ([1, 2], [0, -1, 1])
    >>> window_sum_plan(8)
    ([1, 2, 4], [-1, -1, -1, 0])
    """
    if length < 1:
        raise ParameterError(f"window length must be >= 1, got {length}")
    doublings, offsets, off, w, n = [], [], 0, 1, int(length)
    while True:
        offsets.append(off if n & 1 else -1)
        if n & 1:
            off += w
        n >>= 1
        if n == 0:
            return doublings, offsets
        doublings.append(w)
        w *= 2


def _window_sum(be: Backend, ct: Ciphertext, length: int, gap: int) -> Ciphertext:
    """``out[p] = sum_{j < length} ct[p + j * gap]`` (see :func:`window_sum_plan`)."""
    doublings, offsets = window_sum_plan(length)
    acc, cur = None, ct
    for i, off in enumerate(offsets):
        if off >= 0:
            term = cur if off == 0 else be.rotate(cur, off * gap)
            acc = term if acc is None else be.add(acc, term)
        if i < len(doublings):
            cur = be.add(cur, be.rotate(cur, doublings[i] * gap))
    assert acc is not None
    return acc


@register_lowering("globalavgpool1d")
class GlobalAvgPoolLowering(Lowering):
    """Mean over the length axis: a logarithmic rotate-and-sum (no level); the ``1/L`` goes
    into the next conv or linear layer when one follows (else one scalar product, one level)."""

    groups = "channelwise"

    def depth(self, spec: dict[str, Any]) -> int:
        return 1  # on its own; 0 when the compiler folds the 1/L forward

    def plan(self, spec: dict[str, Any], ctx: PlanContext) -> Lowered:
        lay_in = ctx.layout
        if lay_in.ndim != 1:
            raise ParameterError(f"{ctx.name}: GlobalAvgPool1d on {lay_in.ndim}-D data (it pools 1-D signals)")
        length, gap = int(lay_in.shape[0]), int(lay_in.gaps[0])
        fold = ctx.next_is_affine
        out = packed.pool_layout(lay_in, length, length)
        out = PackedLayout.grid(out.channels, out.shape, out.gaps, out.block, clean=False)
        doublings, offsets = window_sum_plan(length)
        steps = sorted({d * gap for d in doublings} | {o * gap for o in offsets if o > 0})

        def run(be: Backend, ct: Ciphertext) -> Ciphertext:
            with be.counter.section("sum"):
                y = _window_sum(be, ct, length, gap)
            y = y.replace(length=out.span, layout=out.to_layout())
            return y if fold else be.mul_plain(y, 1.0 / length)

        if fold:
            ctx.fold_forward *= 1.0 / length
        return Lowered(0 if fold else 1, steps, out, run,
                       f"L={length}, {len(steps)} rotations" + (f"; 1/{length} folded into the next layer" if fold else ""),
                       ref_scale=float(length) if fold else 1.0)


@register_lowering("maxpool1d", "maxpool2d")
class MaxPoolLowering(Lowering):
    """max(a, b) = (a + b)/2 + |a - b|/2 with an approximated ``|.|``, combined by
    :func:`max_tree` along each spatial axis (last axis first), on the gapped layout."""

    groups = "channelwise"

    def depth(self, spec: dict[str, Any]) -> int:
        nd = _nd_of(self.kind)
        ks = _tuple(spec["kernel"], nd)
        b = spec["bound"] if spec["bound"] > 0 else 1.0
        per = max_depth(spec["method"], spec["degree"], spec["iterations"], b)
        return sum(len(max_tree(k)) for k in ks) * per

    def plan(self, spec: dict[str, Any], ctx: PlanContext) -> Lowered:
        from ...ops import poly

        lay_in = ctx.layout
        nd = _nd_of(self.kind)
        if lay_in.ndim != nd:
            raise ParameterError(f"{ctx.name}: a {nd}-D pool on {lay_in.ndim}-D data")
        ks, ss = _tuple(spec["kernel"], nd), _tuple(spec["stride"], nd)
        method, deg, it, b = spec["method"], spec["degree"], spec["iterations"], spec["bound"]
        rounds = [off * g for ax in reversed(range(nd)) for off, g in
                  ((o, lay_in.gaps[ax]) for o in max_tree(ks[ax]))]

        def run(be: Backend, ct: Ciphertext) -> Ciphertext:
            m = ct
            for r in rounds:
                m = poly.approx_max(be, m, be.rotate(m, r), method=method, iterations=it,
                                    degree=deg, bound=b, section="max")
            return m

        out = packed.pool_layout(lay_in, ks, ss)
        out = PackedLayout.grid(out.channels, out.shape, out.gaps, out.block, clean=False)
        what = f"degree {deg}" if method == "poly" else f"{it} iterations"
        return Lowered(self.depth(spec), sorted(set(rounds)), out, run,
                       f"k={ks if nd > 1 else ks[0]}, stride {ss if nd > 1 else ss[0]}, |x| by {method} ({what})")
