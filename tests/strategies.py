"""Shared hypothesis strategies. Each section belongs to the module it tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

# -- foundation (backends) -------------------------------------------------------------------


def real_vectors(max_len: int = 64, bound: float = 4.0, min_len: int = 1):
    """1-D float64 arrays with finite values in [-bound, bound]."""
    return hnp.arrays(
        np.float64,
        st.integers(min_len, max_len),
        elements=st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=32),
    )


def vector_pairs(max_len: int = 64, bound: float = 4.0):
    """Two real vectors of the same length."""
    return st.integers(1, max_len).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.float64, n, elements=st.floats(-bound, bound, width=32)),
            hnp.arrays(np.float64, n, elements=st.floats(-bound, bound, width=32)),
        )
    )


# -- linear operators (rotate_sum / dft / conv / linear) ---------------------------------------


def signals(min_len: int = 1, max_len: int = 64, bound: float = 2.0):
    """A real 1-D signal of random length."""
    return real_vectors(max_len=max_len, bound=bound, min_len=min_len)


def kernels(max_len: int = 8, bound: float = 1.0):
    """A real 1-D kernel (at least one tap)."""
    return real_vectors(max_len=max_len, bound=bound, min_len=1)


# -- box filters / summed-area-table convolution (boxes.py, conv_sat.py) -------------------------


@st.composite
def box_sum_kernels(draw, max_boxes: int = 4):
    """(kernel, boxes) where the kernel is an exact sum of ``1..max_boxes`` weighted boxes."""
    ndim = draw(st.integers(1, 3))
    top = {1: 9, 2: 6, 3: 4}[ndim]
    shape = tuple(draw(st.integers(1, top)) for _ in range(ndim))
    k = np.zeros(shape)
    boxes = []
    for _ in range(draw(st.integers(1, max_boxes))):
        lo, hi = [], []
        for n in shape:
            a = draw(st.integers(0, n - 1))
            lo.append(a)
            hi.append(draw(st.integers(a + 1, n)))
        alpha = draw(st.floats(0.25, 3.0) | st.floats(-3.0, -0.25))
        k[tuple(slice(a, b) for a, b in zip(lo, hi))] += alpha
        boxes.append((tuple(lo), tuple(hi), alpha))
    if not np.any(np.abs(k) > 1e-9):
        k.flat[0] = 1.0
    return k, boxes


@st.composite
def sat_conv_configs(draw, max_side: int | None = None, max_channels: int = 2):
    """(input_shape, kernel_shape, stride, padding, c_in, c_out, seed) for a SAT convolution."""
    ndim = draw(st.integers(1, 3))
    side = max_side or {1: 16, 2: 8, 3: 5}[ndim]
    ishape = tuple(draw(st.integers(2, side)) for _ in range(ndim))
    kshape = tuple(draw(st.integers(1, min(n, 4))) for n in ishape)
    stride = draw(st.integers(1, 2))
    padding = draw(st.sampled_from([0, 1, "same"] if stride == 1 else [0, 1]))
    c_in = draw(st.integers(1, max_channels))
    c_out = draw(st.integers(1, max_channels))
    seed = draw(st.integers(0, 2**31 - 1))
    return ishape, kshape, stride, padding, c_in, c_out, seed


# -- keys and envelopes (keyfile.py, envelope.py) -----------------------------------------------


def byte_mutations(max_len: int = 48):
    """Damage to a serialised file: ``(op, where, arg)`` for :func:`apply_mutation`.

    ``where`` is an offset from the start (the headers), from the end (tags, truncation) or a
    fraction of the length (the body); ``op`` flips a bit, truncates, appends bytes or overwrites
    a run of bytes with different ones.
    """
    where = st.one_of(
        st.integers(0, 600), st.integers(-600, -1), st.floats(0, 1, exclude_max=True)
    )
    return st.one_of(
        st.tuples(st.just("flip"), where, st.integers(0, 7)),
        st.tuples(st.just("truncate"), where, st.none()),
        st.tuples(st.just("append"), st.binary(min_size=1, max_size=max_len), st.none()),
        st.tuples(st.just("overwrite"), where, st.binary(min_size=1, max_size=max_len)),
    )


def apply_mutation(blob: bytes, m) -> bytes:
    """Apply one :func:`byte_mutations` draw; the result always differs from ``blob``."""
    op, where, arg = m
    n = len(blob)
    if op == "append":
        return blob + where
    i = min(int(where * n), n - 1) if isinstance(where, float) else where % n
    if op == "flip":
        return blob[:i] + bytes([blob[i] ^ (1 << arg)]) + blob[i + 1 :]
    if op == "truncate":
        return blob[:i]
    patch = bytearray(arg[: n - i])
    if bytes(patch) == blob[i : i + len(patch)]:
        patch[0] ^= 0xFF
    return blob[:i] + bytes(patch) + blob[i + len(patch) :]


# -- polynomial non-linearities (poly.py, pool.py) ------------------------------------------------


def unit_signals(min_len: int = 1, max_len: int = 64):
    """1-D float64 arrays in [-1, 1] (scale them to a bound), with the endpoints likely."""
    return hnp.arrays(
        np.float64,
        st.integers(min_len, max_len),
        elements=st.one_of(
            st.floats(-1.0, 1.0, allow_nan=False, width=32), st.sampled_from([-1.0, 0.0, 1.0])
        ),
    )


def poly_coeffs(max_degree: int = 31, bound: float = 2.0):
    """Coefficient vectors (lowest first) of degree 0..max_degree, leading coefficient non-zero."""
    return st.integers(0, max_degree).flatmap(
        lambda d: hnp.arrays(np.float64, d + 1, elements=st.floats(-bound, bound, width=32)).filter(
            lambda c: c[-1] != 0 or c.size == 1
        )
    )


# -- wider convolution geometry, garbage slots, rotation primitives (issue 22) --------------------


@st.composite
def spatial_conv_cases(draw, max_channels: int = 2, sides: dict | None = None):
    """A 1-D/2-D/3-D convolution with per-axis stride and explicit (left, right) zero padding,
    sizes beyond 3-7: dict(dims, shape, kshape, stride, padding, cin, cout, packed, seed).

    The kernel fits the padded input on every axis (otherwise the convolution is undefined).
    """
    dims = draw(st.integers(1, 3))
    top = (sides or {1: 48, 2: 13, 3: 7})[dims]
    shape = tuple(draw(st.integers(2, top)) for _ in range(dims))
    padding = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(dims))
    kshape = tuple(draw(st.integers(1, min(5, n + pl + pr))) for n, (pl, pr) in zip(shape, padding))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    return {
        "dims": dims, "shape": shape, "kshape": kshape,
        "stride": stride if draw(st.booleans()) else stride[0],
        "padding": padding, "cin": draw(st.integers(1, max_channels)),
        "cout": draw(st.integers(1, max_channels)), "packed": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def garbage(rng: np.random.Generator, size: int, bound: float = 3.0) -> np.ndarray:
    """Random values for the slots past the valid ones (an operator that reads them is wrong)."""
    return rng.uniform(-bound, bound, size)


@st.composite
def gather_cases(draw, slots: int, max_count: int = 40, max_span: int = 600):
    """(positions, radix): strictly increasing slot positions within ``max_span`` (< slots)."""
    span = draw(st.integers(1, min(max_span, slots)))
    count = draw(st.integers(1, min(max_count, span)))
    pos = sorted(draw(st.sets(st.integers(0, span - 1), min_size=count, max_size=count)))
    return np.array(pos, dtype=np.int64), draw(st.integers(2, 4))


@st.composite
def diagonal_sets(draw, slots: int, max_diags: int = 8):
    """{offset: diagonal vector} with offsets anywhere in (-slots, slots), short or full vectors."""
    n = draw(st.integers(1, max_diags))
    near = st.integers(-40, 40)
    far = st.integers(-(slots - 1), slots - 1)
    offsets = draw(st.lists(st.one_of(near, far), min_size=n, max_size=n, unique=True))
    lengths = [draw(st.sampled_from([1, 7, 64, slots])) for _ in offsets]
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    return {int(d): rng.uniform(-1, 1, m) for d, m in zip(offsets, lengths)}


#: the four ways poly_eval evaluates (see privkit.fhe.ops.poly._prepare): power basis; Chebyshev
#: on [-1, 1] shifted (r = 1); Chebyshev with the half-width r != 1 folded into the basis (the
#: split uses r**(2j)); Chebyshev with a prescale (r too far from 1 for the degree: one more level)
POLY_SPLITS = ("power", "cheb_r1", "cheb_folded_r", "cheb_prescaled")


@st.composite
def poly_split_cases(draw, kind: str, max_degree: int = 31):
    """(coeffs, basis, interval) for one of :data:`POLY_SPLITS`, with a degree large enough for
    the giant-step split (>= 8)."""
    deg = draw(st.integers(8, max_degree))
    low = draw(hnp.arrays(np.float64, deg, elements=st.floats(-2, 2, width=32)))
    c = np.append(low, draw(st.floats(0.25, 2.0) | st.floats(-2.0, -0.25)))  # leading term non-zero
    center = draw(st.sampled_from([0.0, 0.5, -1.5]))
    if kind == "power":
        return c, "power", (-1.0, 1.0)
    if kind == "cheb_r1":
        return c, "chebyshev", (center - 1.0, center + 1.0)
    if kind == "cheb_folded_r":
        r = draw(st.sampled_from([0.9, 1.1, 1.12]))  # |log2 r| * deg <= 6 for deg <= 31
        return c, "chebyshev", (center - r, center + r)
    r = draw(st.sampled_from([2.0, 3.0, 0.25]))  # never folds for deg >= 8
    return c, "chebyshev", (center - r, center + r)


# -- encrypted CNN stacks (the compiler's N-D property tests) -------------------------------------


@st.composite
def poly_act_coeffs(draw, min_degree: int = 1, max_degree: int = 4, channels: int = 1):
    """PolyAct coefficients (channels, degree + 1) of both signs; the leading one away from 0."""
    d = draw(st.integers(min_degree, max_degree))
    rows = []
    sign = draw(st.sampled_from([-1.0, 1.0]))
    for _ in range(channels):
        row = [draw(st.floats(-1.0, 1.0, allow_nan=False)) for _ in range(d)]
        lead = sign * draw(st.floats(0.1, 1.0, allow_nan=False))
        rows.append(row + [lead])
    return rows


@st.composite
def cnn_stacks(draw, nd: int = 2, max_blocks: int = 3, max_channels: int = 4, max_side: int = 12):
    """A random ``(layers, input_shape, seed)`` of privkit N-D layers: 1-``max_blocks`` conv
    blocks (random channels, kernels, strides 1-3, padding), activation, optional BatchNorm and
    pool, then Flatten and Linear. Layers are built by the test (so torch seeds apply)."""
    side_lo = 4 if nd == 3 else 5
    shape = tuple(draw(st.integers(side_lo, max_side if nd == 2 else min(max_side, 7))) for _ in range(nd))
    cin = draw(st.integers(1, max_channels))
    blocks = draw(st.integers(1, max_blocks))
    plan = []
    c, n = cin, list(shape)
    for _ in range(blocks):
        cout = draw(st.integers(1, max_channels))
        k = draw(st.integers(1, 3))
        s = draw(st.integers(1, 3))
        p = draw(st.integers(0, 1))
        out = [(v + 2 * p - k) // s + 1 for v in n]
        if min(out) < 1:
            break
        plan.append(("conv", c, cout, k, s, p))
        c, n = cout, out
        if draw(st.booleans()):
            plan.append(("bn", c))
        act = draw(st.sampled_from(["square", "polyact", "polyact_ch", "relu"]))
        if act == "polyact_ch":
            plan.append(("polyact", draw(poly_act_coeffs(1, 3, channels=c)), True))
        elif act == "polyact":
            plan.append(("polyact", draw(poly_act_coeffs(1, 3)), False))
        else:
            plan.append((act,))
        pool = draw(st.sampled_from(["avg", "none", "none"] + (["max"] if nd == 2 else [])))
        if pool != "none" and min(n) >= 2:
            plan.append((pool,))
            n = [(v - 2) // 2 + 1 for v in n]
    plan.append(("linear", c * int(np.prod(n)), draw(st.integers(1, 3)), draw(st.sampled_from(["diag", "bsgs"]))))
    return plan, (cin, *shape), draw(st.integers(0, 10_000))
