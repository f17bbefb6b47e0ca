"""Convolution from summed-area tables (SAT) and box filters, 1-D / 2-D / 3-D, encrypted and plain.

Each kernel of a layer is first approximated by boxes (:func:`privkit.fhe.ops.boxes.approximate_kernel`,
``F ~ sum_i alpha_i 1[lo_i <= k < hi_i]``). The convolution (deep-learning convention: cross
correlation, ``y[o] = sum_k F[k] x[o*stride + k - pad]``, zero padding) is then computed from the
summed-area table of the input: every box response is a signed sum of ``2**n`` SAT entries and
costs one multiplication by ``alpha_i``, so an output point costs ``m`` multiplications (``m``
boxes) instead of ``K1*...*Kn`` ("Efficient Convolution Operator in FHE Using Summed Area
Table", ICPR 2024). Two ciphertext layouts:

**per-element** (``layout="element"``, the paper's): one ciphertext per input value (its slots may
carry a batch: slot ``j`` of every ciphertext belongs to sample ``j``). The SAT is built with
additions only (``n * prod(shape)`` of them). A box sum is taken one dimension at a time
(``S[.., b] - S[.., a]`` along the last dimension, then differences of those along the one
before, ...), at most ``2**n - 1`` subtractions, and every partial difference is cached per
input channel, so neighbouring outputs, other boxes and other output channels share them;
corners on the zero border cost nothing and boxes entirely in the padding are skipped. Each
(output, box) pair costs one plaintext-scalar multiplication (boxes whose clipped ranges
coincide at the border share it). No rotations.

**SIMD** (``layout="simd"``): the zero-padded volume of input channel ``c`` is flattened row-major
into one ciphertext (:meth:`SatGeometry.pack`; padding zeros are part of the packed input). The SAT
is the composition of ``n`` windowed prefix sums over the flat vector, with strides
``s_d = prod(padded_shape[d+1:])`` and windows ``w_d = ceil(L / s_d)`` (``L`` = padded volume),
each by binary doubling (at most ``2*log2(w_d)`` rotations, no level). Because the prefix runs over
the *flat* vector, rows never need gaps: corner differences are exact for every box that lies
inside the padded volume. The cyclic rotations need ``slots >= L + sum_d w_d*s_d`` (about
``(n+1)*L``; :attr:`SatGeometry.slots_needed`). Box responses are combined baby-step giant-step:
the SAT of each input channel is rotated once per distinct *baby* corner offset (inner
dimensions, shared by all boxes and all output channels); each box takes ``2**b - 1``
additions of those copies (``b`` baby dimensions) and one scalar multiplication; the scaled box
responses are accumulated per *giant* corner offset (outer dimensions) and each output channel
rotates each of its giant accumulators once. The split between baby and giant dimensions is
chosen to minimise rotations (``split``). Output ``o`` of channel ``co`` lands in slot
``sum_d o_d * stride_d * s_d`` of output ciphertext ``co`` (:meth:`SatGeometry.unpack`); other
slots hold garbage (mask them if the next operator needs clean slots). The result's ``length``
is the full slot count.

Depth: one level when some box scale is not an integer (scales that are integers, e.g. the
boxes of a Sobel kernel, are free), else zero. Counts go to ``backend.counter`` under
``section`` (default ``"conv_sat"``).

The numpy twins run the same algorithm on numbers: :func:`conv_sat_simd_ref` on full slot vectors
(``np.roll`` for rotations, garbage included) and :func:`conv_sat_element_ref` element by element;
:func:`conv_sat_ref` is the plain SAT convolution on arrays and :func:`correlate_ref` the dense
cross-correlation it approximates.

>>> import numpy as np
>>> from privkit.fhe import KeySet
>>> from privkit.fhe.ops.boxes import approximate_kernel
>>> x = np.arange(36.0).reshape(6, 6) / 10
>>> bs = approximate_kernel(np.array([[1., 2., 1.], [2., 4., 2.], [1., 2., 1.]]) / 16)
>>> geo = sat_geometry((6, 6), bs.shape, padding=1)
>>> keys = KeySet.generate("n8192", backend="sim", rotations=required_rotations(bs, (6, 6), padding=1))
>>> out = conv_sat(keys.backend, keys.encrypt(geo.pack(x)), bs, (6, 6), padding=1)
>>> y = geo.unpack(keys.decrypt(out))
>>> bool(np.allclose(y, correlate_ref(x, bs.dense(), padding=1)))
True
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import types
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import ParameterError, ShapeError, SlotOverflowError
from ..backend import Backend, Ciphertext, Layout
from .rotate_sum import _doubling_plan
from .boxes import BoxFilterSet

__all__ = [
    "SatGeometry",
    "box_sum_ref",
    "conv_sat",
    "conv_sat_depth",
    "conv_sat_element_ref",
    "conv_sat_plan",
    "conv_sat_ref",
    "conv_sat_simd_ref",
    "correlate_ref",
    "decrypt_elements",
    "encrypt_elements",
    "required_rotations",
    "required_rotations_conv_sat",
    "sat_geometry",
    "summed_area_table",
]


# -- geometry --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SatGeometry:
    """Shapes of one SAT convolution: padding, output shape and the SIMD packing."""

    input_shape: tuple[int, ...]
    kernel_shape: tuple[int, ...]
    stride: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    padded_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.input_shape)

    @property
    def length(self) -> int:
        """``L``: number of values of the padded volume (slots one SIMD input uses)."""
        return int(np.prod(self.padded_shape))

    @property
    def flat_strides(self) -> tuple[int, ...]:
        """Row-major strides of the padded volume in slots."""
        out, s = [], 1
        for n in reversed(self.padded_shape):
            out.append(s)
            s *= n
        return tuple(reversed(out))

    @property
    def windows(self) -> tuple[int, ...]:
        """Window (in strides) of each prefix-sum stage: ``ceil(L / s_d)``."""
        return tuple(-(-self.length // s) for s in self.flat_strides)

    @property
    def slots_needed(self) -> int:
        """Slots the SIMD layout needs so that the cyclic prefix sums never alias."""
        return self.length + sum(w * s for w, s in zip(self.windows, self.flat_strides))

    @property
    def sat_shape(self) -> tuple[int, ...]:
        """Shape of the exclusive SAT of the padded input (one more per dimension)."""
        return tuple(p + 1 for p in self.padded_shape)

    @property
    def sat_strides(self) -> tuple[int, ...]:
        out, s = [], 1
        for n in reversed(self.sat_shape):
            out.append(s)
            s *= n
        return tuple(reversed(out))

    @property
    def slots_needed_client_sat(self) -> int:
        """Slots the SIMD layout needs when the client encrypts the SAT (:meth:`pack_sat`)."""
        return int(np.prod(self.sat_shape))

    def pack_sat(self, x: np.ndarray) -> np.ndarray:
        """The exclusive summed-area table of the padded input, flattened row-major (what
        ``conv_sat(..., input_sat=True)`` expects).

        The client computes it before encrypting (first layer only): the server then needs no
        prefix-sum rotation and ``prod(padded_shape + 1)`` slots; values grow to ``sum(|x|)``.
        """
        x = np.asarray(x, dtype=np.float64)
        if x.shape != self.input_shape:
            raise ShapeError(f"pack_sat expects an input of shape {self.input_shape}, got {x.shape}")
        return summed_area_table(np.pad(x, self.pads)).ravel()

    def pack(self, x: np.ndarray) -> np.ndarray:
        """One channel (``input_shape``) -> the flat zero-padded vector the SIMD layout encrypts."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape != self.input_shape:
            raise ShapeError(f"pack expects an input of shape {self.input_shape}, got {x.shape}")
        return np.pad(x, self.pads).ravel()

    def output_slots(self, input_sat: bool = False) -> np.ndarray:
        """Slot index of each output point (array of ``out_shape``)."""
        idx = np.zeros(self.out_shape, dtype=np.int64)
        strides = self.sat_strides if input_sat else self.flat_strides
        for d, (n, st, s) in enumerate(zip(self.out_shape, self.stride, strides)):
            shape = [1] * self.ndim
            shape[d] = n
            idx = idx + (np.arange(n) * st * s).reshape(shape)
        return idx

    def unpack(self, vec: np.ndarray, input_sat: bool = False) -> np.ndarray:
        """A decrypted SIMD output vector -> the output array (``out_shape``); pass the
        ``input_sat`` the convolution ran with."""
        vec = np.asarray(vec)
        return vec[self.output_slots(input_sat)]


def _resolve_padding(padding: Any, kernel_shape: tuple[int, ...], stride: tuple[int, ...]):
    D = len(kernel_shape)
    if isinstance(padding, str):
        if padding == "valid":
            return tuple((0, 0) for _ in range(D))
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ParameterError("padding='same' needs stride 1 (as in torch)")
            return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel_shape)
        raise ParameterError(f"padding must be an int, a tuple, 'valid' or 'same'; got {padding!r}")
    if isinstance(padding, (int, np.integer)):
        padding = (int(padding),) * D
    pads = []
    try:
        items = list(padding)
    except TypeError as e:
        raise ParameterError(f"padding must be an int, a tuple, 'valid' or 'same'; got {padding!r}") from e
    if len(items) != D:
        raise ShapeError(f"padding {padding!r} has {len(items)} entries for a {D}-D convolution")
    for p in items:
        pair = (int(p), int(p)) if isinstance(p, (int, np.integer)) else tuple(int(v) for v in p)
        if len(pair) != 2 or min(pair) < 0:
            raise ParameterError(f"padding entries must be non-negative ints or (before, after) pairs, got {p!r}")
        pads.append(pair)
    return tuple(pads)


def sat_geometry(
    input_shape: Sequence[int], kernel_shape: Sequence[int], stride: int | Sequence[int] = 1, padding: Any = 0
) -> SatGeometry:
    """Resolve padding (int, per-dimension ints or pairs, ``"valid"``, ``"same"``) and shapes."""
    ishape = tuple(int(n) for n in input_shape)
    kshape = tuple(int(k) for k in kernel_shape)
    D = len(ishape)
    if D not in (1, 2, 3) or any(n < 1 for n in ishape):
        raise ShapeError(f"input_shape must be 1-D, 2-D or 3-D with positive sizes, got {ishape}")
    if len(kshape) != D:
        raise ShapeError(f"a {len(kshape)}-D kernel cannot convolve a {D}-D input of shape {ishape}")
    st = (int(stride),) * D if isinstance(stride, (int, np.integer)) else tuple(int(s) for s in stride)
    if len(st) != D or min(st) < 1:
        raise ParameterError(f"stride must be a positive int or {D} positive ints, got {stride!r}")
    pads = _resolve_padding(padding, kshape, st)
    padded = tuple(n + a + b for n, (a, b) in zip(ishape, pads))
    out = tuple((p - k) // s + 1 for p, k, s in zip(padded, kshape, st))
    if any(p < k for p, k in zip(padded, kshape)):
        raise ShapeError(f"kernel {kshape} is larger than the padded input {padded}")
    return SatGeometry(ishape, kshape, st, pads, padded, out)


# -- box-set grids ---------------------------------------------------------------------------------
def _grid(boxsets: Any) -> list[list[BoxFilterSet]]:
    """BoxFilterSet | [[BoxFilterSet]*C_in]*C_out -> list of rows (one per output channel)."""
    if isinstance(boxsets, BoxFilterSet):
        return [[boxsets]]
    arr = boxsets.tolist() if isinstance(boxsets, np.ndarray) else boxsets
    try:
        rows = [list(r) for r in arr]
    except TypeError as e:
        raise ShapeError("boxsets must be a BoxFilterSet or a C_out x C_in nested list of them") from e
    if not rows or not rows[0] or any(len(r) != len(rows[0]) for r in rows):
        raise ShapeError("boxsets must be a non-empty rectangular C_out x C_in grid of BoxFilterSets")
    shape = None
    for r in rows:
        for b in r:
            if not isinstance(b, BoxFilterSet):
                raise ShapeError(f"boxsets must hold BoxFilterSets, found {type(b).__name__}")
            if shape is None:
                shape = b.shape
            elif b.shape != shape:
                raise ShapeError(f"all box sets of a layer need one kernel shape; got {shape} and {b.shape}")
    return rows


def _check_dims(grid, input_shape) -> tuple[int, ...]:
    kshape = grid[0][0].shape
    if len(kshape) != len(tuple(input_shape)):
        raise ShapeError(
            f"box sets are {len(kshape)}-D but input_shape {tuple(input_shape)} is {len(tuple(input_shape))}-D"
        )
    return kshape


def conv_sat_depth(boxsets: Any) -> int:
    """Levels :func:`conv_sat` consumes: 1 if some box scale is not an integer, else 0."""
    for row in _grid(boxsets):
        for bs in row:
            if any(not float(b.alpha).is_integer() or abs(b.alpha) >= 2**20 for b in bs.boxes):
                return 1
    return 0


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


# -- public entry points ---------------------------------------------------------------------------
def _bias(bias, c_out):
    if bias is None:
        return None
    b = np.asarray(bias, dtype=np.float64).ravel()
    if b.size != c_out:
        raise ShapeError(f"bias has {b.size} entries for {c_out} output channels")
    if not np.all(np.isfinite(b)):
        raise ParameterError("bias contains NaN or infinite values")
    return b


def _object_array(cts: Any, shape: tuple[int, ...]) -> np.ndarray:
    if isinstance(cts, np.ndarray) and cts.dtype == object:
        arr = cts
    else:
        arr = np.empty(shape, dtype=object)
        try:
            for idx in np.ndindex(*shape):
                v = cts
                for i in idx:
                    v = v[i]
                arr[idx] = v
        except (TypeError, IndexError) as e:
            raise ShapeError(f"per-element input must be nested lists / an object array of shape {shape}") from e
    if arr.shape == shape[1:] and shape[0] == 1:
        arr = arr.reshape(shape)
    if arr.shape != shape:
        raise ShapeError(f"per-element input has shape {arr.shape}, expected {shape} (C_in, *input_shape)")
    return arr


def conv_sat(
    backend: Backend,
    ct_or_cts: Any,
    boxsets: Any,
    input_shape: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: Any = 0,
    *,
    layout: str = "simd",
    bias: Sequence[float] | None = None,
    split: int | None = None,
    input_sat: bool = False,
    section: str | None = None,
) -> Any:
    """Box-filter convolution of encrypted input (see the module docstring).

    Args:
        backend: the evaluation backend.
        ct_or_cts: ``layout="simd"``: one ciphertext per input channel (a list, or a single
            ciphertext when ``C_in = 1``) holding :meth:`SatGeometry.pack` of that channel;
            ``layout="element"``: an object array / nested lists of shape ``(C_in, *input_shape)``
            (or ``input_shape`` when ``C_in = 1``) with one ciphertext per input value
            (:func:`encrypt_elements`).
        boxsets: a :class:`BoxFilterSet` (one channel in and out) or a ``C_out x C_in`` grid.
        input_shape: spatial shape of one channel (1, 2 or 3 dimensions).
        stride, padding: as in ``torch.nn.ConvNd`` (zero padding; ``"valid"``, ``"same"`` too).
        bias: optional, one value per output channel.
        split: SIMD only: dimensions ``< split`` are giant steps (default: fewest rotations).
        input_sat: SIMD only: the ciphertexts hold :meth:`SatGeometry.pack_sat` (the client
            computed the summed-area table before encrypting; no prefix rotations, and only
            ``L + sum(strides)`` slots needed). Only for a first layer fed by the client.
        section: counter section name (default ``"conv_sat"``).

    Returns:
        ``"simd"``: a list of ``C_out`` ciphertexts (a single one if a single ciphertext came in
        and ``C_out = 1``), outputs at :meth:`SatGeometry.output_slots`; ``"element"``: an object
        array ``(C_out, *out_shape)`` of ciphertexts.
    """
    grid = _grid(boxsets)
    kshape = _check_dims(grid, input_shape)
    geo = sat_geometry(input_shape, kshape, stride, padding)
    c_out, c_in = len(grid), len(grid[0])
    b = _bias(bias, c_out)
    depth = conv_sat_depth(grid)
    if layout == "element":
        xs = _object_array(ct_or_cts, (c_in,) + geo.input_shape)
        for ct in xs.flat:
            if not isinstance(ct, Ciphertext):
                raise ShapeError(f"per-element input must hold Ciphertexts, found {type(ct).__name__}")
            backend.require_levels(ct, depth, "conv_sat (per-element)")
        with backend.counter.section(section or "conv_sat"):
            return _element_engine(_BackendOps(backend), xs, grid, geo, b)
    if layout != "simd":
        raise ParameterError(f"layout must be 'simd' or 'element', got {layout!r}")
    single = isinstance(ct_or_cts, Ciphertext)
    cts = [ct_or_cts] if single else list(ct_or_cts)
    if len(cts) != c_in:
        raise ShapeError(f"got {len(cts)} input ciphertexts for {c_in} input channels")
    need = geo.slots_needed_client_sat if input_sat else geo.slots_needed
    if need > backend.slots:
        raise SlotOverflowError(
            f"the SIMD SAT of a padded input {geo.padded_shape} ({geo.length} values) needs "
            f"{need} slots (the cyclic prefix sums must not alias) but a ciphertext has "
            f"{backend.slots}; use layout='element', a larger poly_degree, or tile the input"
        )
    packed_len = geo.slots_needed_client_sat if input_sat else geo.length
    for ct in cts:
        if not isinstance(ct, Ciphertext):
            raise ShapeError(f"SIMD input must be Ciphertexts, found {type(ct).__name__}")
        if ct.length > packed_len:
            raise ShapeError(
                f"an input ciphertext has length {ct.length} but the packed input has "
                f"{packed_len} values; encrypt SatGeometry.{'pack_sat' if input_sat else 'pack'}(x)"
            )
        backend.require_levels(ct, depth, "conv_sat (SIMD)")
    plan = conv_sat_plan(grid, input_shape, stride, padding, split, input_sat)
    with backend.counter.section(section or "conv_sat"):
        xs = [ct.replace(length=backend.slots) for ct in cts]
        outs = _simd_engine(_BackendOps(backend), xs, grid, geo, b, plan["split"], input_sat)
    if geo.ndim == 1:
        outs = [o.replace(layout=Layout(gap=geo.stride[0])) for o in outs]
    return outs[0] if single and c_out == 1 else outs


def conv_sat_simd_ref(
    vecs: Any, boxsets: Any, input_shape: Sequence[int], stride: Any = 1, padding: Any = 0,
    *, slots: int, bias: Any = None, split: int | None = None, input_sat: bool = False,
) -> list[np.ndarray]:
    """Numpy twin of the SIMD layout on full slot vectors (``vecs``: one packed vector per channel)."""
    grid = _grid(boxsets)
    kshape = _check_dims(grid, input_shape)
    geo = sat_geometry(input_shape, kshape, stride, padding)
    need = geo.slots_needed_client_sat if input_sat else geo.slots_needed
    if need > slots:
        raise SlotOverflowError(f"needs {need} slots, have {slots}")
    xs = []
    for v in (vecs if isinstance(vecs, (list, tuple)) else [vecs]):
        full = np.zeros(slots)
        full[: len(v)] = v
        xs.append(full)
    plan = conv_sat_plan(grid, input_shape, stride, padding, split, input_sat)
    return _simd_engine(_NumpyOps(), xs, grid, geo, _bias(bias, len(grid)), plan["split"], input_sat)


def conv_sat_element_ref(x: np.ndarray, boxsets: Any, stride: Any = 1, padding: Any = 0, *, bias: Any = None) -> np.ndarray:
    """Numpy twin of the per-element layout: ``x`` is ``(C_in, *input_shape)``; same operations."""
    grid = _grid(boxsets)
    x = np.asarray(x, dtype=np.float64)
    D = len(grid[0][0].shape)
    if x.ndim == D:
        x = x[None]
    geo = sat_geometry(x.shape[1:], grid[0][0].shape, stride, padding)
    xs = np.empty(x.shape, dtype=object)
    for idx in np.ndindex(*x.shape):
        xs[idx] = np.float64(x[idx])
    out = _element_engine(_NumpyOps(), xs, grid, geo, _bias(bias, len(grid)))
    return out.astype(np.float64)


def summed_area_table(x: np.ndarray) -> np.ndarray:
    """Exclusive SAT: ``S[p] = sum(x[:p1, ..., :pn])``, shape ``x.shape + 1`` (zero border)."""
    x = np.asarray(x, dtype=np.float64)
    s = x
    for d in range(x.ndim):
        s = np.cumsum(s, axis=d)
    return np.pad(s, [(1, 0)] * x.ndim)


def box_sum_ref(sat: np.ndarray, lo: Sequence[int], hi: Sequence[int]) -> float:
    """``sum(x[lo:hi])`` from an exclusive SAT by its ``2**n`` corners."""
    D = sat.ndim
    total = 0.0
    for pick in itertools.product((0, 1), repeat=D):
        p = tuple(hi[d] if k else lo[d] for d, k in enumerate(pick))
        total += (-1 if (D - sum(pick)) % 2 else 1) * sat[p]
    return float(total)


def _prep(x, grid):
    x = np.asarray(x, dtype=np.float64)
    D = len(grid[0][0].shape)
    if x.ndim == D:
        x = x[None]
    if x.ndim != D + 1:
        raise ShapeError(f"input must be (C_in, *spatial) with {D} spatial dims, got shape {x.shape}")
    if x.shape[0] != len(grid[0]):
        raise ShapeError(f"input has {x.shape[0]} channels, box sets expect {len(grid[0])}")
    return x


def conv_sat_ref(x: np.ndarray, boxsets: Any, stride: Any = 1, padding: Any = 0, *, bias: Any = None) -> np.ndarray:
    """Plain SAT convolution: ``(C_in, *spatial)`` -> ``(C_out, *out_shape)`` (vectorised numpy)."""
    grid = _grid(boxsets)
    x = _prep(x, grid)
    geo = sat_geometry(x.shape[1:], grid[0][0].shape, stride, padding)
    sats = [summed_area_table(np.pad(xc, geo.pads)) for xc in x]
    out = np.zeros((len(grid),) + geo.out_shape)
    for co, row in enumerate(grid):
        for ci, bs in enumerate(row):
            for b in bs.boxes:
                for pick in itertools.product((0, 1), repeat=geo.ndim):
                    sl = tuple(
                        slice(c, c + (n - 1) * st + 1, st)
                        for c, n, st in zip(
                            [b.hi[d] if k else b.lo[d] for d, k in enumerate(pick)], geo.out_shape, geo.stride
                        )
                    )
                    sign = -1 if (geo.ndim - sum(pick)) % 2 else 1
                    out[co] += sign * b.alpha * sats[ci][sl]
        if bias is not None:
            out[co] += _bias(bias, len(grid))[co]
    return out


def correlate_ref(x: np.ndarray, kernels: np.ndarray, stride: Any = 1, padding: Any = 0, *, bias: Any = None) -> np.ndarray:
    """Dense cross-correlation (torch's ConvNd): ``kernels`` is ``(C_out, C_in, *K)`` or ``K``.

    A single kernel with a single-channel ``x`` without channel axis returns ``out_shape``.
    """
    k = np.asarray(kernels, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    squeeze = k.ndim == x.ndim
    if squeeze:
        k, x = k[None, None], x[None]
    D = k.ndim - 2
    geo = sat_geometry(x.shape[1:], k.shape[2:], stride, padding)
    xp = np.pad(x, [(0, 0)] + list(geo.pads))
    out = np.zeros((k.shape[0],) + geo.out_shape)
    for off in np.ndindex(*k.shape[2:]):
        sl = (slice(None),) + tuple(
            slice(o, o + (n - 1) * st + 1, st) for o, n, st in zip(off, geo.out_shape, geo.stride)
        )
        patch = xp[sl]  # (C_in, *out)
        w = k[(slice(None), slice(None)) + off]  # (C_out, C_in)
        out += np.tensordot(w, patch, axes=([1], [0]))
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64).reshape((-1,) + (1,) * D)
    return out[0] if squeeze else out


def encrypt_elements(backend_or_keys: Any, x: np.ndarray, *, batched: bool = False) -> np.ndarray:
    """One ciphertext per value: ``x`` ``(C, *spatial)`` -> object array of the same shape.

    ``batched=True``: the last axis of ``x`` is a batch, carried in the slots of each ciphertext.
    """
    x = np.asarray(x, dtype=np.float64)
    shape = x.shape[:-1] if batched else x.shape
    out = np.empty(shape, dtype=object)
    for idx in np.ndindex(*shape):
        out[idx] = backend_or_keys.encrypt(np.atleast_1d(x[idx]))
    return out


def decrypt_elements(keys: Any, cts: np.ndarray) -> np.ndarray:
    """Object array of ciphertexts -> values (a trailing batch axis when they hold several)."""
    vals = [np.asarray(keys.decrypt(ct)) for ct in cts.flat]
    n = max(v.size for v in vals)
    arr = np.stack([np.pad(v, (0, n - v.size)) for v in vals]).reshape(cts.shape + (n,))
    return arr[..., 0] if n == 1 else arr


class _CallableModule(types.ModuleType):
    """``privkit.fhe.ops.conv_sat`` names both this module and its function: once the module is
    imported, the package attribute is the module, so calling it forwards to :func:`conv_sat`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return conv_sat(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
