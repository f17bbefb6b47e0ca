"""The SAT convolution algorithm, written once over an ops object so it runs on ciphertexts
(:class:`_BackendOps`) or on numbers (:class:`_NumpyOps`): per-element and SIMD engines,
the SIMD rotation plan and the rotation steps it needs."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from ....errors import ParameterError
from ...backend import Backend
from ..rotate_sum import _doubling_plan
from .geometry import SatGeometry, _check_dims, _grid, conv_sat_depth, sat_geometry


# -- engines: the same algorithm on ciphertexts or on numbers --------------------------------------
class _NumpyOps:
    def add(self, a, b):
        return a + b

    def sub(self, a, b):
        return a - b

    def neg(self, a):
        return -a

    def rot(self, a, k):
        return np.roll(a, -int(k))

    def mul(self, a, c):
        return a * c

    def add_scalar(self, a, c):
        return a + c

    def zero(self, like):
        return like * 0


class _BackendOps:
    def __init__(self, backend: Backend) -> None:
        self.b = backend

    def add(self, a, b):
        return self.b.add(a, b)

    def sub(self, a, b):
        return self.b.sub(a, b)

    def neg(self, a):
        return self.b.neg(a)

    def rot(self, a, k):
        return self.b.rotate(a, int(k))

    def mul(self, a, c):
        return self.b.mul_plain(a, float(c))

    def add_scalar(self, a, c):
        return self.b.add_plain(a, float(c))

    def zero(self, like):
        return self.b.mul_plain(like, 0)


def _scale(ops, v, c: float):
    if c == 1.0:
        return v
    if c == -1.0:
        return ops.neg(v)
    return ops.mul(v, c)


def _signed_sum(ops, terms):
    """sum(sign * value); starts from a positive term when there is one."""
    terms = sorted(terms, key=lambda t: -t[0])
    sign, acc = terms[0]
    if sign < 0:
        acc = ops.neg(acc)
    for s, v in terms[1:]:
        acc = ops.add(acc, v) if s > 0 else ops.sub(acc, v)
    return acc


# -- per-element layout ----------------------------------------------------------------------------
def _element_engine(ops, xs: np.ndarray, grid, geo: SatGeometry, bias) -> np.ndarray:
    """xs: object array (C_in, *input_shape) of values; returns (C_out, *out_shape)."""
    D = geo.ndim
    c_in, c_out = len(grid[0]), len(grid)
    sats = []
    for ci in range(c_in):
        a = np.empty(geo.input_shape, dtype=object)
        for idx in np.ndindex(*geo.input_shape):
            a[idx] = xs[(ci,) + idx]
        for d in range(D):  # inclusive cumulative sums along each axis (additions only)
            for j in range(1, geo.input_shape[d]):
                rest = geo.input_shape[:d] + geo.input_shape[d + 1 :]
                for r in np.ndindex(*rest):
                    cur = r[:d] + (j,) + r[d:]
                    prev = r[:d] + (j - 1,) + r[d:]
                    a[cur] = ops.add(a[prev], a[cur])
        sats.append(a)
    cache: dict[tuple, Any] = {}

    def partial(ci, corners, ranges):
        """Differences along the dimensions of ``ranges`` at fixed SAT ``corners`` before them.

        ``partial(ci, (), ranges)`` is the box sum; one subtraction per level, every partial
        cached, so neighbouring outputs and other boxes share them (a range starting at 0 reads
        the zero border of the exclusive SAT: no subtraction)."""
        if not ranges:
            return sats[ci][tuple(c - 1 for c in corners)]
        key = (ci, corners, ranges)
        if key not in cache:
            (a, b), rest = ranges[0], ranges[1:]
            hi = partial(ci, corners + (b,), rest)
            cache[key] = ops.sub(hi, partial(ci, corners + (a,), rest)) if a > 0 else hi
        return cache[key]

    def box_sum(ci, lo, hi):
        return partial(ci, (), tuple(zip(lo, hi)))

    out = np.empty((c_out,) + geo.out_shape, dtype=object)
    any_x = xs.flat[0]
    for co in range(c_out):
        for o in np.ndindex(*geo.out_shape):
            coef: dict[tuple, float] = {}
            for ci in range(c_in):
                for b in grid[co][ci].boxes:
                    lo, hi = [], []
                    for d in range(D):
                        start = o[d] * geo.stride[d] - geo.pads[d][0]
                        lo.append(min(max(start + b.lo[d], 0), geo.input_shape[d]))
                        hi.append(min(max(start + b.hi[d], 0), geo.input_shape[d]))
                    if any(l >= h for l, h in zip(lo, hi)):
                        continue
                    key = (ci, tuple(lo), tuple(hi))
                    coef[key] = coef.get(key, 0.0) + b.alpha
            acc = None
            for (ci, lo, hi), c in coef.items():
                if c == 0.0:
                    continue
                term = _scale(ops, box_sum(ci, lo, hi), c)
                acc = term if acc is None else ops.add(acc, term)
            if acc is None:
                acc = ops.zero(any_x)
            if bias is not None and bias[co] != 0.0:
                acc = ops.add_scalar(acc, bias[co])
            out[(co,) + o] = acc
    return out


# -- SIMD layout -----------------------------------------------------------------------------------
def _prefix(ops, x, geo: SatGeometry, input_sat: bool = False):
    """The flat SAT: windowed prefix sums (right rotations) with every dimension's stride."""
    g = x
    if input_sat:
        return g
    for s, w in zip(reversed(geo.flat_strides), reversed(geo.windows)):
        base, acc = g, g
        for kind, m in _doubling_plan(w):
            acc = ops.add(acc, ops.rot(acc if kind == "double" else base, -m * s))
        g = acc
    return g


def _corner_parts(box, geo: SatGeometry, split: int, input_sat: bool = False):
    """(baby terms [(offset, sign)], giant terms [(offset, sign)]) of a box's 2**n corners.

    Server-side flat SAT (inclusive): corners ``lo-1`` / ``hi-1`` with the padded strides;
    client SAT (exclusive, one larger per dimension): corners ``lo`` / ``hi`` with its strides.
    """
    strides = geo.sat_strides if input_sat else geo.flat_strides
    shift = 0 if input_sat else 1

    def parts(dims):
        out = []
        for pick in itertools.product((0, 1), repeat=len(dims)):
            off, sign = 0, 1
            for d, k in zip(dims, pick):
                off += ((box.hi[d] if k else box.lo[d]) - shift) * strides[d]
                sign *= 1 if k else -1
            out.append((off, sign))
        return out

    D = geo.ndim
    return parts(list(range(split, D))), parts(list(range(split)))


def conv_sat_plan(
    boxsets: Any, input_shape: Sequence[int], stride: Any = 1, padding: Any = 0, split: int | None = None,
    input_sat: bool = False,
) -> dict:
    """The SIMD plan: chosen ``split``, rotation steps, and predicted op counts (no encryption).

    Keys: ``split``, ``prefix_steps``, ``baby_steps`` (per input channel), ``giant_steps`` (per
    output channel), ``rotations``, ``pt_mults``, ``depth``, ``slots_needed``.
    """
    grid = _grid(boxsets)
    kshape = _check_dims(grid, input_shape)
    geo = sat_geometry(input_shape, kshape, stride, padding)
    D = geo.ndim
    prefix_steps = []
    for s, w in zip(reversed(geo.flat_strides), reversed(geo.windows)):
        prefix_steps += [] if input_sat else [-m * s for _, m in _doubling_plan(w)]
    best = None
    splits = [split] if split is not None else list(range(D))
    for sp in splits:
        if not 0 <= sp < D:
            raise ParameterError(f"split must be in 0..{D - 1} for a {D}-D convolution, got {sp}")
        baby = [set() for _ in grid[0]]
        giant = [set() for _ in grid]
        mults = 0
        for co, row in enumerate(grid):
            for ci, bs in enumerate(row):
                for b in bs.boxes:
                    bt, gt = _corner_parts(b, geo, sp, input_sat)
                    baby[ci].update(o for o, _ in bt)
                    giant[co].update(o for o, _ in gt)
                    mults += b.alpha not in (1.0, -1.0)
        rot = sum(len(s - {0}) for s in baby) + sum(len(s - {0}) for s in giant)
        rot += len(prefix_steps) * len(grid[0])
        if best is None or rot < best["rotations"]:
            best = {
                "split": sp,
                "baby_steps": [sorted(s - {0}) for s in baby],
                "giant_steps": [sorted(s - {0}) for s in giant],
                "rotations": rot,
                "pt_mults": mults,
            }
    best["prefix_steps"] = prefix_steps
    best["depth"] = conv_sat_depth(grid)
    best["slots_needed"] = geo.slots_needed_client_sat if input_sat else geo.slots_needed
    return best


def required_rotations(
    boxsets: Any, input_shape: Sequence[int], stride: Any = 1, padding: Any = 0,
    split: int | None = None, slots: int | None = None, input_sat: bool = False,
) -> list[int]:
    """Rotation steps the SIMD layout uses (generate exactly these Galois keys).

    Negative steps are right rotations; with ``slots`` given they are folded into ``[0, slots)``.
    """
    plan = conv_sat_plan(boxsets, input_shape, stride, padding, split, input_sat)
    steps = set(plan["prefix_steps"])
    for s in plan["baby_steps"] + plan["giant_steps"]:
        steps.update(s)
    if slots:
        steps = {s % int(slots) for s in steps}
    return sorted(s for s in steps if s != 0)


#: the name registered in :mod:`privkit.fhe.ops`
required_rotations_conv_sat = required_rotations


def _simd_engine(ops, xs: list, grid, geo: SatGeometry, bias, split: int, input_sat: bool = False) -> list:
    sats = [_prefix(ops, x, geo, input_sat) for x in xs]
    copies: dict[tuple[int, int], Any] = {}

    def shifted(ci, off):
        if off == 0:
            return sats[ci]
        if (ci, off) not in copies:
            copies[(ci, off)] = ops.rot(sats[ci], off)
        return copies[(ci, off)]

    outs = []
    for co, row in enumerate(grid):
        acc: dict[int, Any] = {}
        for ci, bs in enumerate(row):
            for b in bs.boxes:
                bt, gt = _corner_parts(b, geo, split, input_sat)
                resp = _scale(ops, _signed_sum(ops, [(s, shifted(ci, o)) for o, s in bt]), b.alpha)
                for off, s in gt:
                    if off not in acc:
                        acc[off] = resp if s > 0 else ops.neg(resp)
                    else:
                        acc[off] = ops.add(acc[off], resp) if s > 0 else ops.sub(acc[off], resp)
        y = None
        for off in sorted(acc):
            term = acc[off] if off == 0 else ops.rot(acc[off], off)
            y = term if y is None else ops.add(y, term)
        if y is None:
            y = ops.zero(xs[0])
        if bias is not None and bias[co] != 0.0:
            y = ops.add_scalar(y, bias[co])
        outs.append(y)
    return outs
