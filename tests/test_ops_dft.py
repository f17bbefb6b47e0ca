"""Homomorphic DFT against numpy.fft (every order, norm, level budget, size)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, target
from hypothesis import strategies as st

from privkit.errors import DepthExhaustedError, ShapeError
from privkit.fhe import CKKSParams, KeySet, ops
from privkit.testing import assert_close_encrypted

P_SIM = CKKSParams.preset("n8192")
P_SEAL = CKKSParams.preset("n8192")


@pytest.fixture(scope="module")
def sim():
    return KeySet.generate(P_SIM, backend="sim")


def _x(seed, n, complex_):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, n)
    return x + 1j * rng.uniform(-1, 1, n) if complex_ else x


@given(
    logn=st.integers(0, 10),
    inverse=st.booleans(),
    orders=st.sampled_from([("natural", "natural"), ("natural", "bitrev"), ("bitrev", "natural")]),
    levels=st.integers(1, 3),
    norm=st.sampled_from(["backward", "ortho", "forward"]),
    complex_=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_dft_matches_numpy(sim, logn, inverse, orders, levels, norm, complex_, seed):
    n = 1 << logn
    if n >= 512 and levels == 1:
        levels = 2  # one level = the dense matrix: covered by the naive test
    x = _x(seed, n, complex_)
    be = sim.backend
    be.counter.reset()
    out = ops.dft(be, sim.encrypt(x), n, inverse, levels=levels, in_order=orders[0],
                  out_order=orders[1], norm=norm)
    full = be.decrypt(out.replace(length=be.slots), complex=True)
    want = ops.dft_ref(x, n, inverse, in_order=orders[0], out_order=orders[1], norm=norm)
    if orders == ("natural", "natural"):
        fn = np.fft.ifft if inverse else np.fft.fft
        assert np.allclose(want, fn(x, norm=norm))
    target(assert_close_encrypted(full[:n], want, sim))
    assert np.allclose(full[n:], 0)  # clean tail: the last level writes [0, n) only
    assert be.counter.total.depth == ops.dft_depth(
        n, inverse=inverse, levels=levels, in_order=orders[0], out_order=orders[1]) <= levels


def test_contract_default_call(sim):
    x = _x(0, 64, False)
    out = ops.dft(sim.backend, sim.encrypt(x), 64)
    assert_close_encrypted(sim.decrypt(out), np.fft.fft(x), sim)
    out = ops.dft(sim.backend, sim.encrypt(x), 64, levels=2)
    back = ops.dft(sim.backend, out, 64, inverse=True, levels=1)
    assert back.level == 0
    assert_close_encrypted(sim.decrypt(back).real, x, sim)
    from privkit.fhe.ops import dft  # the function (the module is ops.fourier)

    assert np.allclose(sim.decrypt(dft(sim.backend, sim.encrypt(x), 64)), np.fft.fft(x))


@pytest.mark.parametrize("method", ["naive", "dense-bsgs"])
def test_naive_baselines(method):
    sim = KeySet.generate(P_SIM, backend="sim",
                          rotations=ops.required_rotations_dft(128, P_SIM.slots, method=method))
    x = _x(1, 128, True)
    be = sim.backend
    be.counter.reset()
    out = ops.dft(be, sim.encrypt(x), 128, method=method)
    assert_close_encrypted(sim.decrypt(out), np.fft.fft(x), sim)
    c = be.counter.total
    assert c.depth == 1 and c.pt_mults == 128
    if method == "naive":
        assert c.rotations >= 127
    else:
        assert c.rotations < 40  # about 2 sqrt(128) + log2(slots / 128) for the replication


def test_levels_trade_rotations():
    costs = [ops.dft_plan(1024, levels=lv).cost() for lv in (2, 3, 5, 10)]
    assert [c["levels"] for c in costs] == [2, 3, 5, 10]
    assert costs[0]["pt_mults"] > costs[1]["pt_mults"] > costs[3]["pt_mults"]
    assert ops.dft_plan(1024, radix=4).levels == 5
    assert ops.dft_plan(1024, levels=3, out_order="bitrev").cost()["pt_mults"] < costs[1]["pt_mults"]


def test_dft_errors(sim):
    with pytest.raises(ShapeError):
        ops.dft(sim.backend, sim.encrypt(np.ones(6)), 6)
    with pytest.raises(ShapeError):
        ops.dft(sim.backend, sim.encrypt(np.ones(100)), 64)  # data past n
    with pytest.raises(DepthExhaustedError):
        ops.dft(sim.backend, sim.encrypt(np.ones(64)), 64, levels=4)


@pytest.fixture(scope="module")
def seal():
    steps = set()
    for oo in ("natural", "bitrev"):
        steps |= set(ops.required_rotations_dft(256, P_SEAL.slots, out_order=oo))
    steps |= set(ops.required_rotations_dft(256, P_SEAL.slots, inverse=True, in_order="bitrev"))
    steps |= set(ops.required_rotations_dft(4096, P_SEAL.slots, levels=3, out_order="bitrev"))
    return KeySet.generate(P_SEAL, backend="seal", rotations=sorted(steps))


@pytest.mark.seal
@pytest.mark.parametrize("oo", ["natural", "bitrev"])
def test_dft_seal(seal, oo):
    x = _x(3, 256, False)
    be = seal.backend
    out = ops.dft(be, seal.encrypt(x), 256, out_order=oo)
    want = ops.dft_ref(x, 256, out_order=oo)
    assert_close_encrypted(seal.decrypt(out), want, seal, depth=P_SEAL.depth - out.level)
    assert {s % be.slots for s in be.rotation_steps} >= set(
        ops.required_rotations_dft(256, be.slots, out_order=oo))


@pytest.mark.seal
def test_dft_roundtrip_seal_full_slots(seal):
    """n = slots (no replication), bit-reversed round trip through the spectrum."""
    be = seal.backend
    x = _x(4, 256, False)
    spec = ops.dft(be, seal.encrypt(x), 256, out_order="bitrev", levels=2)
    back = ops.dft(be, spec, 256, inverse=True, in_order="bitrev", levels=1)
    assert_close_encrypted(seal.decrypt(back).real, x, seal, depth=P_SEAL.depth - back.level)
    y = _x(5, 4096, False) / 4
    out = ops.dft(be, seal.encrypt(y), 4096, out_order="bitrev")
    assert_close_encrypted(seal.decrypt(out), ops.dft_ref(y, 4096, out_order="bitrev"), seal,
                           depth=P_SEAL.depth - out.level, factor=4)
