"""Packing across several ciphertexts: channels split in groups when one ciphertext is too small.

An activation of ``C`` channels whose channel block is ``B`` slots holds at most
``cap = slots // B`` channels per ciphertext. The multi-ciphertext plan splits every activation
into ``ceil(C / cap)`` *channel groups* of (nearly) equal size; group ``g`` is one ciphertext in
the usual :class:`~privkit.fhe.ops.packed.PackedLayout` of its channels (same block, same gaps
as the single-ciphertext layout, so the same rotation steps). The value that flows between the
steps of such a program is a *list* of ciphertexts:

* a ``"channelwise"`` lowering (activations, pools, a BatchNorm that could not be folded, the
  mask before a padded conv) runs once per group, on the sub-spec of the group's channels;
* a ``"mixing"`` lowering (a convolution) computes output group ``o`` as the sum over input
  groups ``i`` of the layer on ``weight[o, i]`` (the bias added once): still one level;
* a Linear after Flatten sums the partial products of the input groups (torch's Flatten order
  is channel-major, so group ``i`` holds the features ``[start_i * S, stop_i * S)``): its output
  is ONE ciphertext, so the client always decrypts one result.

The input stays one ciphertext when its channels fit (``(1, 28, 28)`` is one ciphertext even if
the first convolution's output needs four); otherwise the client encrypts one per group.
Levels are those of the single-ciphertext plan (a group never costs more levels than the whole).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ...errors import ShapeError, UnsupportedLayerError
from ..backend import Backend, Ciphertext
from ..ops import packed
from ..ops.packed import PackedLayout
from ..program import Step
from .lowering import Lowered, PlanContext

__all__ = ["split_channels", "plan_multi"]


def split_channels(channels: int, cap: int) -> list[slice]:
    """``channels`` split into ``ceil(channels / cap)`` groups of nearly equal size.

    >>> split_channels(16, 4)
    [slice(0, 4, None), slice(4, 8, None), slice(8, 12, None), slice(12, 16, None)]
    >>> [s.stop - s.start for s in split_channels(5, 4)]
    [3, 2]
    """
    n = math.ceil(channels / cap)
    size = math.ceil(channels / n)
    return [slice(i * size, min(channels, (i + 1) * size)) for i in range(n)]


def _width(r: slice) -> int:
    return int(r.stop - r.start)


def _part(v: Any, r: slice, total: int) -> Any:
    """A per-channel array's values of the channels ``r`` (scalars and other sizes unchanged)."""
    a = np.asarray(v, dtype=np.float64)
    return a.reshape(-1)[r] if a.ndim and a.size == total > 1 else v


def _refuse(name: str, kind: str) -> UnsupportedLayerError:
    return UnsupportedLayerError(
        f"{name}: layer kind {kind!r} does not support packing across several ciphertexts (its "
        "lowering declares no `groups`); the model's activations do not fit one ciphertext, so "
        "use a larger preset (params=...) with max_ciphertexts=1, fewer channels, or give the "
        "lowering groups = 'channelwise' / 'mixing' (see privkit.fhe.Lowering.split)")


def plan_multi(items: list[Any], input_shape: tuple[int, ...], slots: int, grow: int = 1,
               channels_per_ct: int | None = None,
               max_cts: int | None = None) -> tuple[list[Step], list[PackedLayout], int, int]:
    """Lower the layers with channel groups. Returns steps, input layouts (one per input
    ciphertext), the number of outputs and the channel cap per ciphertext."""
    from .core import _input_layout, _max_padding, _next_computing

    c0, spatial = input_shape[0], tuple(input_shape[1:])
    probe = _input_layout((1, *spatial), 1, _max_padding(items), grow)
    cap = slots // probe.block
    if channels_per_ct is not None:
        cap = min(cap, int(channels_per_ct))
    if cap < 1:
        raise ShapeError(f"one channel of the input {input_shape} needs a block of {probe.block} slots; "
                         f"the ciphertext has {slots}")
    ranges = split_channels(c0, cap)
    layouts = [_input_layout((_width(r), *spatial), 1, _max_padding(items), grow) for r in ranges]
    in_layouts = list(layouts)
    if max(lay.span for lay in layouts) > slots:
        raise ShapeError(f"the input of {input_shape} needs {layouts[0].span} slots per ciphertext; "
                         f"the ciphertext has {slots}")
    total = c0  # channels (or features after Flatten) of the current value
    steps: list[Step] = []
    flat = False
    pending = 1.0
    prefolds: dict[int, tuple[Any, Any]] = {}

    def check_count(name: str, n: int) -> None:
        if max_cts is not None and n > max_cts:
            raise ShapeError(f"{name}: its output needs {n} ciphertexts of {cap} channels; "
                             f"max_ciphertexts={max_cts}")

    check_count("the input", len(ranges))
    for i, it in enumerate(items):
        spec, low = it.spec, it.low
        nj = _next_computing(items, i + 1)
        notes: list[str] = []
        ref_scale: Any = 1.0
        ref_shift: Any = 0.0
        if low.transparent:
            ctx = PlanContext(it.name, layouts[0], slots, 1, flat)
            if low.plan(spec, ctx) is not None:
                raise UnsupportedLayerError(f"{it.name}: a transparent lowering returned a step")
            if ctx.flat and not flat:  # features of group g: its channels times the spatial size
                per = layouts[0].length
                ranges = [slice(r.start * per, r.stop * per) for r in ranges]
                total *= per
            flat = ctx.flat
            continue
        if low.groups not in ("channelwise", "mixing"):
            raise _refuse(it.name, spec["op"])
        if low.affine:
            if pending != 1.0:
                spec = low.fold_input(spec, pending)
                notes.append(f"x{pending:g} folded from the pool before")
                pending = 1.0
            pf = items[nj].low.prefold(items[nj].spec) if nj is not None else None
            if pf is not None:
                spec = low.fold_output(spec, pf[0], pf[1])
                prefolds[nj] = pf
                ref_scale, ref_shift = pf
                notes.append(f"{items[nj].name}'s input scaling folded in")
        if low.needs_clean(spec) and not all(lay.clean for lay in layouts):
            steps.append(Step(it.name + ".mask", "mask", 1, [], mask_run(layouts), layouts[0],
                              f"[{len(layouts)} ct] zero the non-element slots before a padded conv",
                              groups=list(layouts)))
            layouts = [dataclasses.replace(lay, clean=True) for lay in layouts]
        nxt = (items[nj].spec["op"] if nj is not None else None, nj is not None and items[nj].low.affine)
        if low.groups == "channelwise":
            table: list[list[Lowered]] = []
            fold = 1.0
            for g, (r, lay) in enumerate(zip(ranges, layouts)):
                pf = prefolds.get(i)
                ctx = PlanContext(it.name, lay, slots, 1, flat,
                                  None if pf is None else (_part(pf[0], r, total), _part(pf[1], r, total)),
                                  *nxt)
                lowered = low.plan(low.split(spec, r, r, True), ctx)
                if lowered is None:
                    raise UnsupportedLayerError(f"{it.name}: a channelwise lowering returned no step")
                table.append([lowered])
                fold = ctx.fold_forward
            pending *= fold
            out_ranges = ranges
            kind = "channelwise"
        else:
            w = np.asarray(spec["weight"])
            n_out = int(w.shape[0])
            out_ranges = [slice(0, n_out)] if flat else split_channels(n_out, cap)
            check_count(it.name, len(out_ranges))
            table = []
            for ro in out_ranges:
                row = []
                for gi, (r, lay) in enumerate(zip(ranges, layouts)):
                    ctx = PlanContext(it.name, lay, slots, 1, flat, None, *nxt)
                    lowered = low.plan(low.split(spec, ro, r, gi == 0), ctx)
                    if lowered is None:
                        raise UnsupportedLayerError(f"{it.name}: a mixing lowering returned no step")
                    row.append(lowered)
                table.append(row)
            kind = "mixing"
        steps.append(_group_step(it, low.kind, table, kind, notes, ref_scale, ref_shift))
        new_layouts = [row[0].out_layout for row in table]
        if all(lay is not None for lay in new_layouts):
            layouts = new_layouts  # type: ignore[assignment]
        if kind == "mixing":
            total = int(np.asarray(spec["weight"]).shape[0])
            ranges = out_ranges
    out = layouts[0] if len(layouts) == 1 else None
    if out is None or out.channels != 1 or out.ndim != 1 or out.gap != 1 or not flat:
        raise UnsupportedLayerError("the model must end with a privkit.nn.Linear layer (its outputs are the logits)")
    return steps, in_layouts, out.length, cap


def _group_step(it: Any, kind: str, table: list[list[Lowered]], how: str, notes: list[str],
                ref_scale: Any, ref_shift: Any) -> Step:
    """One program step on a list of ciphertexts: per output group, the (sum of the) lowered runs."""
    from .core import _mul

    first = table[0][0]
    depth = max(int(lw.depth) for row in table for lw in row)
    if any(int(lw.depth) != depth for row in table for lw in row):
        raise UnsupportedLayerError(f"{it.name}: its channel groups lower to different depths")
    rots = sorted({int(r) for row in table for lw in row for r in lw.rotations})
    runs = [[lw.run for lw in row] for row in table]

    if how == "channelwise":
        def run(be: Backend, cts: list[Ciphertext]) -> list[Ciphertext]:
            return [row[0](be, ct) for row, ct in zip(runs, cts)]
    else:
        def run(be: Backend, cts: list[Ciphertext]) -> list[Ciphertext]:
            view = _SharedWork(be) if len(runs) > 1 else be
            outs = []
            for row in runs:
                acc = None
                for fn, ct in zip(row, cts):
                    y = fn(view, ct)  # type: ignore[arg-type]
                    acc = y if acc is None else be.add(acc, y)
                outs.append(acc)
            return outs

    n_in, n_out = (len(table), len(table)) if how == "channelwise" else (len(table[0]), len(table))
    detail = first.detail + "".join(f" ({n})" for n in notes)
    detail = f"[{n_in}->{n_out} ct] " + detail
    return Step(it.name, first.kind or kind, depth, rots, run, first.out_layout, detail,
                ref_name=it.ref_name, ref_scale=_mul(ref_scale, first.ref_scale), ref_shift=ref_shift,
                groups=[row[0].out_layout for row in table])


class _SharedWork:
    """The backend as one mixing step sees it: a rotation (or a ciphertext sum) of the same
    ciphertext data with the same metadata is computed once and reused, so every output group
    of a convolution shares its input group's tap rotations and replication instead of redoing
    them. Everything else goes to the backend. Lives for one step run (the inputs of memoised
    results are kept alive, so ``id`` values cannot be reused meanwhile)."""

    def __init__(self, be: Backend) -> None:
        self._be = be
        self._memo: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._be, name)

    @staticmethod
    def _key(a: Ciphertext) -> tuple[Any, ...]:
        return (id(a.data), a.level, a.scale, a.length, a.is_complex, a.layout)

    def rotate(self, a: Ciphertext, k: int) -> Ciphertext:
        key = ("rot", self._key(a), int(k) % self._be.slots)
        hit = self._memo.get(key)
        if hit is None:
            hit = (a, self._be.rotate(a, k))
            self._memo[key] = hit
        return hit[-1]

    def add(self, a: Ciphertext, b: Any) -> Ciphertext:
        if not isinstance(b, Ciphertext):
            return self._be.add(a, b)
        key = ("add", self._key(a), self._key(b))
        hit = self._memo.get(key)
        if hit is None:
            hit = (a, b, self._be.add(a, b))
            self._memo[key] = hit
        return hit[-1]


def mask_run(layouts: list[PackedLayout]) -> Any:
    """The run of a mask step: zero the non-element slots of every group."""
    def run(be: Backend, cts: list[Ciphertext]) -> list[Ciphertext]:
        out = []
        for lay, ct in zip(layouts, cts):
            keep = np.zeros(lay.span)
            keep[packed.valid_slots(lay)] = 1.0
            out.append(be.mul_plain(ct, keep))
        return out

    return run
