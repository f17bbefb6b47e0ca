"""mask / rotate_and_sum / replicate / remove_holes against their numpy twins."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, target
from hypothesis import strategies as st

from privkit.errors import DepthExhaustedError, ParameterError, ShapeError
from privkit.fhe import CKKSParams, KeySet, ops
from privkit.testing import assert_close_encrypted

P_SIM = CKKSParams.preset("n32768")  # depth 19: room for every stride/radix combination
P_SEAL = CKKSParams.preset("n8192")


@pytest.fixture(scope="module")
def sim():
    return KeySet.generate(P_SIM, backend="sim")


@pytest.fixture(scope="module")
def seal():
    steps = set()
    for s in range(2, 9):
        steps.update(ops.required_rotations_remove_holes(64, s, 4))
    steps.update(ops.required_rotations_rotate_and_sum(37, 3))
    steps.update(ops.required_rotations_replicate(100, 5))
    return KeySet.generate(P_SEAL, backend="seal", rotations=sorted(steps))


def _gapped(rng, n, stride, slots, junk):
    x = np.where(np.arange(n) % stride == 0, rng.uniform(-2, 2, n), 0.0)
    full = np.zeros(slots)
    full[:n] = x
    if junk:
        noise = rng.uniform(-3, 3, slots)
        noise[0:n:stride] = 0.0
        full = full + noise
    return x, full


@given(
    n=st.integers(1, 300),
    stride=st.integers(2, 9),
    radix=st.integers(2, 5),
    junk=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_remove_holes_matches_ref(sim, n, stride, radix, junk, seed):
    be = sim.backend
    x, full = _gapped(np.random.default_rng(seed), n, stride, be.slots, junk)
    ct = sim.encrypt(full) if junk else sim.encrypt(x)
    be.counter.reset()
    out = ops.remove_holes(be, ct, n, stride, radix=radix, holes_zero=not junk)
    got = sim.decrypt(out)
    want = ops.remove_holes_ref(x, n, stride)
    target(assert_close_encrypted(got, want, sim))
    # the tail is clean and the declared depth / rotations are what ran
    assert np.allclose(be.decrypt(out.replace(length=be.slots))[len(want):], 0)
    assert be.counter.total.depth == ops.remove_holes_depth(n, stride, radix, holes_zero=not junk)
    assert out.layout.compact and out.length == len(want)


@pytest.mark.parametrize("stride", range(2, 9))
def test_remove_holes_every_stride_paper_radix(sim, stride):
    n = 200
    x, full = _gapped(np.random.default_rng(stride), n, stride, sim.backend.slots, junk=True)
    out = ops.remove_holes(sim.backend, sim.encrypt(full), n, stride)
    assert_close_encrypted(sim.decrypt(out), x[::stride], sim)


def test_remove_holes_paper_case_uses_one_mask_per_step(sim):
    be = sim.backend
    x, _ = _gapped(np.random.default_rng(0), 256, 2, be.slots, junk=False)
    be.counter.reset()
    ops.remove_holes(be, sim.encrypt(x), 256, 2, holes_zero=True)
    c = be.counter.total
    assert c.rotations == c.pt_mults == c.depth == 7  # log2(128) steps of shift, add, one mask


@pytest.mark.seal
@pytest.mark.parametrize("stride", range(2, 9))
def test_remove_holes_seal(seal, stride):
    n = 64
    x, full = _gapped(np.random.default_rng(stride), n, stride, seal.backend.slots, junk=True)
    out = ops.remove_holes(seal.backend, seal.encrypt(full), n, stride, radix=4)
    assert_close_encrypted(seal.decrypt(out), x[::stride], seal, depth=P_SEAL.depth - out.level)


def test_remove_holes_depth_error(sim):
    small = KeySet.generate("n8192", backend="sim")
    ct = small.encrypt(np.ones(4096))
    with pytest.raises(DepthExhaustedError):
        ops.remove_holes(small.backend, ct, 4096, 2)
    with pytest.raises(ParameterError):
        ops.remove_holes(sim.backend, sim.encrypt([1.0]), 1, 0)
    with pytest.raises(ShapeError):
        ops.remove_holes(sim.backend, sim.encrypt([1.0]), sim.backend.slots + 1, 2)


@given(
    x=st.lists(st.floats(-3, 3, width=32), min_size=1, max_size=80),
    keep=st.lists(st.integers(0, 99), max_size=20),
)
def test_mask(sim, x, keep):
    x = np.array(x)
    ct = sim.encrypt(x)
    out = ops.mask(sim.backend, ct, np.array(keep, dtype=int))
    full = np.zeros(sim.backend.slots)
    full[: x.size] = x
    want = ops.mask_ref(full, np.array(keep, dtype=int))[: out.length]
    assert_close_encrypted(sim.decrypt(out), want, sim)
    assert out.level == ct.level - 1


def test_mask_boolean_vector(sim):
    ct = sim.encrypt(np.arange(6.0))
    out = ops.mask(sim.backend, ct, np.array([True, False, True, False, False, True]))
    assert np.allclose(sim.decrypt(out), [0, 0, 2, 0, 0, 5])


@given(
    x=st.lists(st.floats(-3, 3, width=32), min_size=1, max_size=60),
    count=st.integers(1, 40),
    step=st.integers(-5, 5),
)
def test_rotate_and_sum(sim, x, count, step):
    x = np.array(x)
    full = np.zeros(sim.backend.slots)
    full[: x.size] = x
    sim.backend.counter.reset()
    out = ops.rotate_and_sum(sim.backend, sim.encrypt(x), count, step)
    got = sim.backend.decrypt(out.replace(length=sim.backend.slots))
    assert_close_encrypted(got, ops.rotate_and_sum_ref(full, count, step), sim)
    assert len(ops.required_rotations_rotate_and_sum(count, step)) <= 2 * max(0, count.bit_length() - 1)


@given(n=st.integers(1, 64), copies=st.integers(1, 40))
def test_replicate(sim, n, copies):
    x = np.random.default_rng(n).uniform(-1, 1, n)
    out = ops.replicate(sim.backend, sim.encrypt(x), n, copies)
    full = np.zeros(sim.backend.slots)
    full[:n] = x
    assert_close_encrypted(sim.decrypt(out), ops.replicate_ref(full, n, copies)[: n * copies], sim)


@pytest.mark.seal
def test_rotate_and_sum_and_replicate_seal(seal):
    be = seal.backend
    x = np.random.default_rng(1).uniform(-1, 1, 100)
    full = np.zeros(be.slots)
    full[:100] = x
    out = ops.rotate_and_sum(be, seal.encrypt(x), 37, 3)
    got = be.decrypt(out.replace(length=be.slots))
    assert_close_encrypted(got, ops.rotate_and_sum_ref(full, 37, 3), seal, depth=0, factor=10)
    rep = ops.replicate(be, seal.encrypt(x), 100, 5)
    assert_close_encrypted(seal.decrypt(rep), np.tile(x, 5), seal, depth=0)
    assert {s % be.slots for s in be.rotation_steps} >= set(ops.required_rotations_replicate(100, 5, be.slots))
