"""Summed-area-table convolution (privkit.fhe.ops.sat): references, both layouts, SEAL."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, target
from hypothesis import strategies as st
from strategies import sat_conv_configs

from privkit.errors import (
    DepthExhaustedError,
    ParameterError,
    ShapeError,
    SlotOverflowError,
)
from privkit.fhe import CKKSParams, KeySet, ops
from privkit.fhe.ops import sat as cs
from privkit.fhe.ops.boxes import Box, BoxFilterSet, approximate_kernel
from privkit.testing import assert_close_encrypted

P_SIM = CKKSParams.preset("n16384")
P_SEAL = CKKSParams.preset("n8192")


def _grid(rng, kshape, c_in, c_out, tol=0.05):
    return [[approximate_kernel(rng.standard_normal(kshape), tol=tol) for _ in range(c_in)] for _ in range(c_out)]


def _dense(grid):
    return np.array([[b.dense() for b in row] for row in grid])


def _case(cfg):
    ishape, kshape, _stride, _padding, c_in, c_out, seed = cfg
    rng = np.random.default_rng(seed)
    grid = _grid(rng, kshape, c_in, c_out)
    x = rng.uniform(-1, 1, (c_in,) + ishape)
    bias = rng.uniform(-1, 1, c_out)
    return grid, x, bias


@pytest.fixture(scope="module")
def sim():
    return KeySet.generate(P_SIM, backend="sim")


# -- plain maths -----------------------------------------------------------------------------------
@st.composite
def _array_and_box(draw):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, {1: 30, 2: 9, 3: 5}[ndim])) for _ in range(ndim))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    lo, hi = [], []
    for n in shape:
        a = draw(st.integers(0, n))
        lo.append(a)
        hi.append(draw(st.integers(a, n)))
    return rng.standard_normal(shape), tuple(lo), tuple(hi)


@given(_array_and_box())
def test_sat_box_sums_equal_direct_sums(case):
    x, lo, hi = case
    sat = cs.summed_area_table(x)
    assert sat.shape == tuple(n + 1 for n in x.shape)
    direct = x[tuple(slice(a, b) for a, b in zip(lo, hi))].sum()
    assert cs.box_sum_ref(sat, lo, hi) == pytest.approx(direct, abs=1e-9)


@given(sat_conv_configs(max_channels=3))
def test_references_agree_with_dense_convolution(cfg):
    grid, x, bias = _case(cfg)
    ishape, kshape, stride, padding = cfg[:4]
    want = cs.correlate_ref(x, _dense(grid), stride, padding, bias=bias)
    got = cs.conv_sat_ref(x, grid, stride, padding, bias=bias)
    np.testing.assert_allclose(got, want, atol=1e-9)
    np.testing.assert_allclose(cs.conv_sat_element_ref(x, grid, stride, padding, bias=bias), want, atol=1e-9)
    geo = cs.sat_geometry(ishape, kshape, stride, padding)
    vecs = [geo.pack(xc) for xc in x]
    outs = cs.conv_sat_simd_ref(vecs, grid, ishape, stride, padding, slots=P_SIM.slots, bias=bias)
    np.testing.assert_allclose(np.array([geo.unpack(v) for v in outs]), want, atol=1e-8)


def test_correlate_ref_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    for D, conv in ((1, torch.nn.functional.conv1d), (2, torch.nn.functional.conv2d), (3, torch.nn.functional.conv3d)):
        x = rng.standard_normal((2,) + (7,) * D)
        w = rng.standard_normal((3, 2) + (3,) * D)
        for stride, pad in ((1, 1), (2, 0)):
            want = conv(torch.tensor(x[None]), torch.tensor(w), stride=stride, padding=pad)[0].numpy()
            np.testing.assert_allclose(cs.correlate_ref(x, w, stride, pad), want, atol=1e-10)


# -- encrypted (simulator) ---------------------------------------------------------------------------
@given(sat_conv_configs(max_channels=2))
def test_simd_layout_equals_dense_convolution(sim, cfg):
    grid, x, bias = _case(cfg)
    ishape, kshape, stride, padding = cfg[:4]
    geo = cs.sat_geometry(ishape, kshape, stride, padding)
    cts = [sim.encrypt(geo.pack(xc)) for xc in x]
    outs = cs.conv_sat(sim.backend, cts, grid, ishape, stride, padding, bias=bias)
    got = np.array([geo.unpack(sim.decrypt(o)) for o in outs])
    want = cs.correlate_ref(x, _dense(grid), stride, padding, bias=bias)
    target(assert_close_encrypted(got, want, sim))


@settings(max_examples=10)
@given(sat_conv_configs(max_side=5, max_channels=2))
def test_element_layout_equals_dense_convolution(sim, cfg):
    grid, x, bias = _case(cfg)
    ishape, _kshape, stride, padding = cfg[:4]
    cts = cs.encrypt_elements(sim, x)
    out = cs.conv_sat(sim.backend, cts, grid, ishape, stride, padding, bias=bias, layout="element")
    want = cs.correlate_ref(x, _dense(grid), stride, padding, bias=bias)
    target(assert_close_encrypted(cs.decrypt_elements(sim, out), want, sim))


def test_element_layout_carries_a_batch_in_the_slots(sim):
    rng = np.random.default_rng(5)
    grid = _grid(rng, (3, 3), 1, 2)
    xb = rng.uniform(-1, 1, (1, 5, 6, 7))  # (C, H, W, batch)
    out = cs.conv_sat(sim.backend, cs.encrypt_elements(sim, xb, batched=True), grid, (5, 6), padding=1, layout="element")
    got = cs.decrypt_elements(sim, out)  # (C_out, H, W, batch)
    for j in range(7):
        want = cs.correlate_ref(xb[..., j], _dense(grid), padding=1)
        assert_close_encrypted(got[..., j], want, sim)


@pytest.mark.parametrize("split", [0, 1, 2])
def test_every_split_gives_the_same_result(sim, split):
    rng = np.random.default_rng(7)
    grid = _grid(rng, (3, 2, 3), 2, 2)
    x = rng.uniform(-1, 1, (2, 4, 5, 4))
    geo = cs.sat_geometry((4, 5, 4), (3, 2, 3), 1, 1)
    outs = cs.conv_sat(sim.backend, [sim.encrypt(geo.pack(c)) for c in x], grid, (4, 5, 4), padding=1, split=split)
    got = np.array([geo.unpack(sim.decrypt(o)) for o in outs])
    assert_close_encrypted(got, cs.correlate_ref(x, _dense(grid), padding=1), sim)


def test_counts_match_the_plan_and_keys_are_exactly_the_required_ones():
    rng = np.random.default_rng(11)
    grid = _grid(rng, (5, 5), 2, 3, tol=0.01)
    shape = (12, 10)
    steps = cs.required_rotations(grid, shape, padding=2)
    keys = KeySet.generate(P_SIM, backend="sim", rotations=steps)
    geo = cs.sat_geometry(shape, (5, 5), 1, 2)
    x = rng.uniform(-1, 1, (2,) + shape)
    be = keys.backend
    be.counter.reset()
    outs = cs.conv_sat(be, [keys.encrypt(geo.pack(c)) for c in x], grid, shape, padding=2, section="sat")
    plan = cs.conv_sat_plan(grid, shape, padding=2)
    c = be.counter.sections["sat"]
    assert c.rotations == plan["rotations"]  # one key switch per rotation: exact keys
    assert c.pt_mults == plan["pt_mults"] == sum(len(b) for row in grid for b in row)
    assert c.depth == 1
    # rotations: shared across output channels -> far fewer than a box-per-rotation scheme
    assert plan["rotations"] < sum(4 * len(b) for row in grid for b in row)
    got = np.array([geo.unpack(keys.decrypt(o)) for o in outs])
    assert_close_encrypted(got, cs.correlate_ref(x, _dense(grid), padding=2), keys)


def test_element_layout_costs_one_multiplication_per_box_and_no_rotation(sim):
    rng = np.random.default_rng(2)
    bs = approximate_kernel(rng.standard_normal((3, 3)), tol=0.01)
    be = sim.backend
    be.counter.reset()
    cs.conv_sat(be, cs.encrypt_elements(sim, rng.uniform(-1, 1, (1, 6, 6))), bs, (6, 6), layout="element", section="el")
    c = be.counter.sections["el"]
    assert c.rotations == 0
    assert c.pt_mults <= 16 * len(bs)  # 4x4 outputs, valid padding: exactly one per box
    assert c.pt_mults == 16 * sum(1 for b in bs.boxes if b.alpha not in (1.0, -1.0))


def test_integer_scales_cost_no_level(sim):
    sobel = approximate_kernel(np.array([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]]), tol=1e-12)
    assert cs.conv_sat_depth(sobel) == 0
    x = np.random.default_rng(0).uniform(-1, 1, (6, 7))
    geo = cs.sat_geometry((6, 7), (3, 3), 1, 1)
    ct = sim.encrypt(geo.pack(x))
    out = cs.conv_sat(sim.backend, ct, sobel, (6, 7), padding=1)
    assert out.level == ct.level
    assert_close_encrypted(geo.unpack(sim.decrypt(out)), cs.correlate_ref(x, sobel.dense(), padding=1), sim)


# -- bad input -------------------------------------------------------------------------------------
def test_bad_input_raises_typed_errors(sim):
    bs2 = approximate_kernel(np.ones((3, 3)))
    bs1 = approximate_kernel(np.ones(3))
    geo = cs.sat_geometry((6, 6), (3, 3))
    ct = sim.encrypt(geo.pack(np.ones((6, 6))))
    with pytest.raises(ShapeError):  # 2-D boxes, 1-D input
        cs.conv_sat(sim.backend, ct, bs2, (36,))
    with pytest.raises(ShapeError):  # mixed kernel shapes in one layer
        cs.conv_sat(sim.backend, [ct, ct], [[bs2, approximate_kernel(np.ones((2, 2)))]], (6, 6))
    with pytest.raises(ShapeError):  # wrong number of input ciphertexts
        cs.conv_sat(sim.backend, [ct, ct], bs2, (6, 6))
    with pytest.raises(ShapeError):  # ciphertext longer than the packed input
        cs.conv_sat(sim.backend, ct, bs2, (5, 5))
    with pytest.raises(ShapeError):  # kernel larger than the input
        cs.conv_sat(sim.backend, ct, approximate_kernel(np.ones((7, 7))), (6, 6))
    with pytest.raises(ShapeError):
        cs.conv_sat(sim.backend, ct, bs2, (6, 6), bias=[1.0, 2.0])
    with pytest.raises(ParameterError):
        cs.conv_sat(sim.backend, ct, bs2, (6, 6), padding="full")
    with pytest.raises(ParameterError):
        cs.conv_sat(sim.backend, ct, bs2, (6, 6), stride=2, padding="same")
    with pytest.raises(ParameterError):
        cs.conv_sat(sim.backend, ct, bs2, (6, 6), stride=0)
    with pytest.raises(ParameterError):
        cs.conv_sat(sim.backend, ct, bs2, (6, 6), layout="rows")
    with pytest.raises(ParameterError):
        cs.conv_sat(sim.backend, ct, bs2, (6, 6), split=2)
    with pytest.raises(ShapeError):
        cs.conv_sat(sim.backend, ct, "not boxes", (6, 6))
    with pytest.raises(ShapeError):
        cs.conv_sat(sim.backend, np.empty((2, 2), dtype=object), bs2, (6, 6), layout="element")
    big = (60, 60)  # 3 * 3600 slots > 8192
    with pytest.raises(SlotOverflowError):
        cs.conv_sat(sim.backend, sim.encrypt(np.zeros(3600)), bs2, big)
    low = sim.backend.mod_switch_to(ct, 0)
    with pytest.raises(DepthExhaustedError):
        cs.conv_sat(sim.backend, low, approximate_kernel(np.random.default_rng(0).standard_normal((3, 3))), (6, 6))
    with pytest.raises(ShapeError):
        cs.conv_sat(sim.backend, ct, bs1, (6, 6))


def test_registered_in_ops():
    assert ops.approximate_kernel is approximate_kernel
    # ops.conv_sat is the function (the package holding it is ops.sat), imported or not
    import privkit.fhe.ops.sat  # noqa: F401

    assert callable(ops.conv_sat) and not isinstance(ops.conv_sat, type(ops))
    keys = KeySet.generate(P_SIM, backend="sim")
    bs = approximate_kernel(np.ones((2, 2)))
    out = ops.conv_sat(keys.backend, keys.encrypt(np.arange(9.0)), bs, (3, 3))
    assert cs.sat_geometry((3, 3), (2, 2)).unpack(keys.decrypt(out)).round(6).tolist() == [[8.0, 12.0], [20.0, 24.0]]
    assert ops.required_rotations_conv_sat is cs.required_rotations


# -- real encryption (SEAL, n8192) -----------------------------------------------------------------
_SEAL_CASES = {
    "2d_5x5": ((8, 8), (5, 5), 1, 2, 1, 1),
    "1d_multichannel_stride2": ((20,), (4,), 2, 1, 2, 2),
    "3d_3x3x3": ((4, 4, 4), (3, 3, 3), 1, 1, 1, 1),
}


def _seal_grid(name):
    _ishape, kshape, _stride, _padding, c_in, c_out = _SEAL_CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    return _grid(rng, kshape, c_in, c_out, tol=0.01), rng


@pytest.fixture(scope="module")
def seal():
    steps = set()
    for name, (ishape, kshape, stride, padding, *_ ) in _SEAL_CASES.items():
        grid, _ = _seal_grid(name)
        steps.update(cs.required_rotations(grid, ishape, stride, padding))
    return KeySet.generate(P_SEAL, backend="seal", rotations=sorted(steps))


@pytest.mark.seal
@pytest.mark.parametrize("name", sorted(_SEAL_CASES))
def test_seal_simd_layout(seal, name):
    ishape, kshape, stride, padding, c_in, c_out = _SEAL_CASES[name]
    grid, rng = _seal_grid(name)
    x = rng.uniform(-1, 1, (c_in,) + ishape)
    bias = rng.uniform(-1, 1, c_out)
    geo = cs.sat_geometry(ishape, kshape, stride, padding)
    outs = cs.conv_sat(seal.backend, [seal.encrypt(geo.pack(c)) for c in x], grid, ishape, stride, padding, bias=bias)
    got = np.array([geo.unpack(seal.decrypt(o)) for o in outs])
    want = cs.correlate_ref(x, _dense(grid), stride, padding, bias=bias)
    assert_close_encrypted(got, want, seal, depth=P_SEAL.depth - outs[0].level)


@pytest.mark.seal
def test_seal_element_layout(seal):
    rng = np.random.default_rng(4)
    grid = _grid(rng, (3, 3), 1, 2, tol=0.01)
    x = rng.uniform(-1, 1, (1, 4, 4))
    out = cs.conv_sat(seal.backend, cs.encrypt_elements(seal, x), grid, (4, 4), padding=1, layout="element")
    assert_close_encrypted(cs.decrypt_elements(seal, out), cs.correlate_ref(x, _dense(grid), padding=1), seal,
                           depth=P_SEAL.depth - out.flat[0].level)


@pytest.mark.seal
def test_seal_integer_box_scales_keep_the_level(seal):
    box = BoxFilterSet((3, 3), [Box((0, 0), (3, 3), 1.0), Box((1, 1), (2, 2), -9.0)])  # a Laplacian-like
    x = np.random.default_rng(9).uniform(-1, 1, (4, 4))
    cts = cs.encrypt_elements(seal, x[None])
    out = cs.conv_sat(seal.backend, cts, box, (4, 4), padding=1, layout="element")
    assert all(o.level == P_SEAL.depth for o in out.flat)
    assert_close_encrypted(cs.decrypt_elements(seal, out)[0], cs.correlate_ref(x, box.dense(), padding=1), seal, depth=0)


@given(sat_conv_configs(max_channels=2))
def test_client_side_sat_input(sim, cfg):
    grid, x, bias = _case(cfg)
    ishape, kshape, stride, padding = cfg[:4]
    geo = cs.sat_geometry(ishape, kshape, stride, padding)
    be = sim.backend
    be.counter.reset()
    outs = cs.conv_sat(be, [sim.encrypt(geo.pack_sat(c)) for c in x], grid, ishape, stride, padding,
                       bias=bias, input_sat=True, section="client_sat")
    plan = cs.conv_sat_plan(grid, ishape, stride, padding, input_sat=True)
    assert plan["prefix_steps"] == []
    got = np.array([geo.unpack(sim.decrypt(o), input_sat=True) for o in outs])
    want = cs.correlate_ref(x, _dense(grid), stride, padding, bias=bias)
    assert_close_encrypted(got, want, sim)
    assert geo.slots_needed_client_sat == int(np.prod([p + 1 for p in geo.padded_shape]))
    np.testing.assert_allclose(geo.pack_sat(x[0]).reshape(geo.sat_shape), cs.summed_area_table(np.pad(x[0], geo.pads)))
    # the numpy twin of the same maths
    ref = cs.conv_sat_simd_ref([geo.pack_sat(c) for c in x], grid, ishape, stride, padding,
                               slots=P_SIM.slots, bias=bias, input_sat=True)
    np.testing.assert_allclose(np.array([geo.unpack(v, input_sat=True) for v in ref]), want, atol=1e-8)
