"""Wider property tests (issue 22): 2-D/3-D strided and padded spatial convolutions with garbage
in the slots past the valid input, larger sizes; direct properties of the rotation primitives
``gather``, ``diagonal_matvec`` and ``mul_plain_sum``; ``poly_eval`` through each of its four
evaluation paths (power, Chebyshev r = 1, Chebyshev with a folded half-width r != 1, Chebyshev with
a prescale). Simulator results are compared at 1e-9 relative (``assert_close_encrypted`` with
the backend); SEAL cases are drawn by hypothesis too, marked slow."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import assume, event, given, settings, target
from hypothesis import strategies as st

from privkit.errors import DepthExhaustedError, ShapeError
from privkit.fhe import CKKSParams, KeySet
from privkit.fhe import ops
from privkit.fhe.ops import poly as P
from privkit.fhe.ops import rotate_sum as RS
from privkit.testing import assert_backends_agree, assert_close_encrypted

from .strategies import (
    POLY_SPLITS,
    diagonal_sets,
    gather_cases,
    garbage,
    poly_split_cases,
    spatial_conv_cases,
    unit_signals,
)

P16 = CKKSParams.preset("n16384")
P8 = CKKSParams.preset("n8192")


@pytest.fixture(scope="module")
def sim16():
    return KeySet.generate(P16, backend="sim")


@pytest.fixture(scope="module")
def sim8():
    return KeySet.generate(P8, backend="sim")


def _full(keys, ct):
    return keys.decrypt(ct.replace(length=keys.params.slots))


# -- spatial convolutions: strided, padded, 1-3-D, garbage past the input ---------------------


_CONV = {1: (ops.conv1d_spatial, ops.conv1d_spatial_ref), 2: (ops.conv2d_spatial, ops.conv2d_spatial_ref),
         3: (ops.conv3d_spatial, ops.conv3d_spatial_ref)}


def _run_conv(keys, case, dirty: bool):
    rng = np.random.default_rng(case["seed"])
    dims, shape, cin, cout = case["dims"], case["shape"], case["cin"], case["cout"]
    kernel = rng.uniform(-1, 1, (cout, cin) + case["kshape"])
    bias = rng.uniform(-1, 1, cout)
    x = rng.uniform(-2, 2, (cin,) + shape)
    f, fr = _CONV[dims]
    arg = shape[0] if dims == 1 else shape
    kw = dict(padding=case["padding"], bias=bias)
    want = fr(x, kernel, arg, case["stride"], **kw)
    be, slots = keys.backend, keys.params.slots
    strides = (case["stride"],) * dims if np.isscalar(case["stride"]) else case["stride"]
    if any((want.shape[1 + a] - 1) * strides[a] >= shape[a] for a in range(1, dims)):
        # documented limit: on non-leading axes the output grid must fit on the input grid
        event("output grid wider than the input: ShapeError")
        with pytest.raises(ShapeError, match="does not fit on the input grid"):
            f(be, [keys.encrypt(x[c].ravel()) for c in range(cin)], kernel, arg, case["stride"], **kw)
        return None
    geo = dict(padding=case["padding"], channels=(cin, cout),
               channel_stride=2 * x[0].size if case["packed"] else None)
    depth = ops.conv_spatial_depth(shape, case["kshape"], case["stride"], **geo)
    assume(depth <= keys.params.depth)
    if keys.backend.simulated:  # exactly the keys the operator says it needs
        steps = ops.required_rotations_conv_spatial(shape, case["kshape"], case["stride"],
                                                    slots=slots, **geo)
        keys = KeySet.generate(keys.params, backend="sim", rotations=steps)
        be = keys.backend
    size = x[0].size
    if case["packed"]:
        cs = 2 * size
        assume(cin * cs <= slots and cout * cs <= slots)
        v = garbage(rng, slots) if dirty else np.zeros(slots)
        for c in range(cin):
            v[c * cs : c * cs + size] = x[c].ravel()
        if not dirty:
            v = v[: cin * cs]
        out = f(be, keys.encrypt(v), kernel, arg, case["stride"], channel_stride=cs, **kw)
        full = _full(keys, out)
        ocs = out.layout.channel_stride
        got = np.stack([full[o * ocs : o * ocs + want[o].size] for o in range(cout)])
        level = out.level
    else:
        cts = []
        for c in range(cin):
            v = np.concatenate([x[c].ravel(), garbage(rng, slots - size)]) if dirty else x[c].ravel()
            cts.append(keys.encrypt(v))
        outs = f(be, cts, kernel, arg, case["stride"], **kw)
        got = np.stack([_full(keys, y)[: want[i].size] for i, y in enumerate(outs)])
        level = outs[0].level
    assert keys.params.depth - level == depth
    return got.ravel(), want.ravel()


@given(case=spatial_conv_cases())
@settings(max_examples=25)
def test_strided_padded_conv_nd_ignores_garbage_past_the_input(sim16, case):
    """Valid outputs read only valid inputs (the tap masks zero everything else), for every
    geometry; garbage in every slot past the input (and between packed channels) changes nothing."""
    res = _run_conv(sim16, case, dirty=True)
    if res is None:
        return
    got, want = res
    target(assert_close_encrypted(got, want, sim16, what=f"conv{case['dims']}d {case}"))


@given(case=spatial_conv_cases(sides={1: 200, 2: 30, 3: 10}, max_channels=1))
@settings(max_examples=8)
def test_large_strided_padded_conv_nd(sim16, case):
    """Sizes far beyond 3-7 (1-D up to 200, 2-D 30x30, 3-D 10^3): compaction over long distances."""
    res = _run_conv(sim16, case, dirty=False)
    if res is None:
        return
    got, want = res
    assert_close_encrypted(got, want, sim16)


@given(n=st.integers(20, 300), K=st.integers(1, 9), stride=st.integers(1, 4),
       pads=st.tuples(st.integers(0, 4), st.integers(0, 4)), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=12)
def test_conv1d_freq_asymmetric_padding_and_long_signals(sim16, n, K, stride, pads, seed):
    rng = np.random.default_rng(seed)
    x, k, b = rng.uniform(-2, 2, n), rng.uniform(-1, 1, K), float(rng.uniform(-1, 1))
    want = ops.conv1d_spatial_ref(x, k, n, stride, padding=[pads], bias=b)
    try:
        out = ops.conv1d_freq(sim16.backend, sim16.encrypt(x), k, n, stride, padding=[pads], bias=b)
    except DepthExhaustedError:
        assume(False)
    got = sim16.decrypt(out)
    assert got.shape == want.shape
    target(assert_close_encrypted(got, want, sim16))


# -- gather --------------------------------------------------------------------------------------


@given(case=gather_cases(P8.slots), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=25)
def test_gather_moves_positions_and_cleans_the_rest(case, seed):
    """slot positions[e] -> slot e, with garbage everywhere else in the input; the result is clean
    past len(positions); exactly gather_depth levels and only required_rotations_gather keys."""
    pos, radix = case
    depth = RS.gather_depth(pos, radix)
    assume(depth <= P16.depth)
    keys = KeySet.generate(P16, backend="sim", rotations=RS.required_rotations_gather(pos, radix))
    x = garbage(np.random.default_rng(seed), P16.slots)
    out = RS.gather(keys.backend, keys.encrypt(x), pos, radix=radix)
    assert P16.depth - out.level == depth
    full = _full(keys, out)
    want = np.zeros(P16.slots)
    want[: pos.size] = RS.gather_ref(x, pos)
    target(assert_close_encrypted(full, want, keys, what=f"gather radix {radix}"))


# -- diagonal_matvec -----------------------------------------------------------------------------


@given(diags=diagonal_sets(P8.slots), mode=st.sampled_from(["bsgs", "plain", "chain"]),
       hint=st.sampled_from([(), (64,)]), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=25)
def test_diagonal_matvec_equals_its_twin_on_full_garbage_vectors(diags, mode, hint, seed):
    bsgs, chain = mode == "bsgs", mode == "chain"
    steps = RS.required_rotations_diagonal(list(diags), P8.slots, hint, bsgs, chain=chain)
    keys = KeySet.generate(P8, backend="sim", rotations=steps)
    x = garbage(np.random.default_rng(seed), P8.slots)
    out = RS.diagonal_matvec(keys.backend, keys.encrypt(x), diags, bsgs=bsgs, chain=chain, hints=hint)
    assert out.level == P8.depth - 1
    want = RS.diagonal_matvec_ref(x, diags).real
    target(assert_close_encrypted(_full(keys, out), want, keys, what=f"diagonal_matvec {mode}"))


# -- mul_plain_sum ---------------------------------------------------------------------------------


@given(n_terms=st.integers(1, 5), drops=st.lists(st.integers(0, 2), min_size=5, max_size=5),
       scalars=st.lists(st.booleans(), min_size=5, max_size=5), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=25)
def test_mul_plain_sum_equals_the_sum_of_products(sim8, n_terms, drops, scalars, seed):
    """Terms at different levels (aligned down), vector or scalar plaintexts: the exact sum of
    products, one level below the lowest term, and the same as adding mul_plain results."""
    rng = np.random.default_rng(seed)
    be = sim8.backend
    terms, want = [], 0.0
    n = int(rng.integers(1, 300))
    for i in range(n_terms):
        x = rng.uniform(-2, 2, n)
        ct = sim8.encrypt(x)
        for _ in range(drops[i]):
            ct = be.mod_switch_to(ct, ct.level - 1)
        w = float(rng.uniform(-2, 2)) if scalars[i] else rng.uniform(-2, 2, n)
        terms.append((ct, w))
        want = want + x * w
    out = RS.mul_plain_sum(be, terms)
    assert out.level == min(c.level for c, _ in terms) - 1
    assert_close_encrypted(sim8.decrypt(out), want, sim8)
    lvl = out.level + 1
    one_by_one = None
    for c, w in terms:
        p = be.mul_plain(be.mod_switch_to(c, lvl), w)
        one_by_one = p if one_by_one is None else be.add(one_by_one, p)
    assert_close_encrypted(sim8.decrypt(out), sim8.decrypt(one_by_one), sim8)


# -- poly_eval: every evaluation path --------------------------------------------------------------


@contextlib.contextmanager
def _split_spy():
    """Record (basis, r) of every giant-step split poly_eval performs."""
    seen: list = []
    orig = P._Evaluator._split

    def spy(self, e, g):
        seen.append((self.basis, self.r))
        return orig(self, e, g)

    P._Evaluator._split = spy
    try:
        yield seen
    finally:
        P._Evaluator._split = orig


def _expect_path(kind, coeffs, basis, interval, seen):
    prep = P._prepare(coeffs, basis, interval)
    if kind == "power":
        assert prep.basis == "power"
    elif kind == "cheb_r1":
        assert prep.r == 1.0 and prep.prescale is None
    elif kind == "cheb_folded_r":
        assert prep.r != 1.0 and prep.prescale is None
    else:
        assert prep.prescale is not None
    assert seen and all(b == prep.basis and r == prep.r for b, r in seen), "the split was not reached"


@pytest.mark.parametrize("kind", POLY_SPLITS)
@given(data=st.data())
@settings(max_examples=12)
def test_poly_eval_every_split_path_matches_twin(sim16, kind, data):
    coeffs, basis, iv = data.draw(poly_split_cases(kind))
    depth = P.poly_depth(len(P._trim(coeffs)) - 1, basis, iv)
    assume(depth <= P16.depth)
    x = data.draw(unit_signals(max_len=40)) * (iv[1] - iv[0]) / 2 + (iv[0] + iv[1]) / 2
    with _split_spy() as seen:
        out = P.poly_eval(sim16.backend, sim16.encrypt(x), coeffs, basis, iv)
    _expect_path(kind, coeffs, basis, iv, seen)
    assert out.level == P16.depth - depth
    target(assert_close_encrypted(sim16.decrypt(out), P.poly_eval_ref(x, coeffs, basis, iv), sim16,
                                  what=f"poly_eval {kind}"))


# -- SEAL, drawn by hypothesis (slow) ------------------------------------------------------------


@pytest.fixture(scope="module")
def seal16():
    return KeySet.generate(P16, backend="seal")  # default keys: any rotation by composition


@pytest.mark.slow
@pytest.mark.seal
@pytest.mark.parametrize("kind", POLY_SPLITS)
@given(data=st.data())
@settings(max_examples=4, deadline=None)
def test_seal_poly_eval_every_split_path(seal16, sim16, kind, data):
    coeffs, basis, iv = data.draw(poly_split_cases(kind, max_degree=15))
    depth = P.poly_depth(len(P._trim(coeffs)) - 1, basis, iv)
    assume(depth <= P16.depth)
    x = data.draw(unit_signals(min_len=4, max_len=32)) * (iv[1] - iv[0]) / 2 + (iv[0] + iv[1]) / 2
    out = P.poly_eval(seal16.backend, seal16.encrypt(x), coeffs, basis, iv)
    got = seal16.decrypt(out)
    ref = P.poly_eval_ref(x, coeffs, basis, iv)
    assert_close_encrypted(got, ref, seal16, depth=P16.depth - out.level, factor=4)
    sim = sim16.decrypt(P.poly_eval(sim16.backend, sim16.encrypt(x), coeffs, basis, iv))
    # products amplify the fresh-encryption noise by the coefficients (up to 2 * 2**deg)
    assert_backends_agree(got, sim, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.seal
@given(case=spatial_conv_cases(sides={1: 24, 2: 8, 3: 5}))
@settings(max_examples=6, deadline=None)
def test_seal_strided_padded_conv_nd_with_garbage(seal16, case):
    keys = seal16
    res = _run_conv(keys, case, dirty=True)
    if res is None:
        return
    got, want = res
    out_depth = ops.conv_spatial_depth(case["shape"], case["kshape"], case["stride"],
                                       padding=case["padding"], channels=(case["cin"], case["cout"]),
                                       channel_stride=2 * int(np.prod(case["shape"])) if case["packed"] else None)
    assert_close_encrypted(got, want, keys, depth=out_depth, factor=4)
