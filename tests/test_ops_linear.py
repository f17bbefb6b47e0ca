"""Fully connected layers (paper's DFT-DC slot sum, diagonal / hybrid) against W @ x + b."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, target
from hypothesis import strategies as st

from privkit.errors import DepthExhaustedError, ShapeError
from privkit.fhe import CKKSParams, KeySet, ops
from privkit.testing import assert_close_encrypted

P_SIM = CKKSParams.preset("n16384")
P_SEAL = CKKSParams.preset("n8192")


@pytest.fixture(scope="module")
def sim():
    return KeySet.generate(P_SIM, backend="sim")


@given(
    m=st.integers(1, 40),
    ns=st.lists(st.integers(1, 150), min_size=1, max_size=3),
    method=st.sampled_from(["diag", "hybrid", "auto", "dft"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_linear_matches_matmul(sim, m, ns, method, seed):
    if method == "dft" and m > min(1 << (v - 1).bit_length() for v in ns):
        return
    rng = np.random.default_rng(seed)
    W, b = rng.uniform(-1, 1, (m, sum(ns))), rng.uniform(-1, 1, m)
    x = rng.uniform(-1, 1, sum(ns))
    parts = np.split(x, np.cumsum(ns)[:-1])
    inp = [sim.encrypt(p) for p in parts] if len(ns) > 1 else sim.encrypt(x)
    n_arg = ns if len(ns) > 1 else ns[0]
    be = sim.backend
    be.counter.reset()
    if method == "dft":
        out = ops.linear_dft(be, inp, W, b, n_arg)
    else:
        out = ops.linear_diag(be, inp, W, b, n_arg, method=method)
    full = be.decrypt(out.replace(length=be.slots))
    target(assert_close_encrypted(full[:m], W @ x + b, sim))
    assert np.allclose(full[m:], 0) and out.length == m
    assert np.allclose(ops.linear_ref(x, W, b), W @ x + b)
    assert be.counter.total.depth == ops.linear_depth(m, n_arg, be.slots, method)


def test_auto_picks_hybrid_for_few_outputs():
    assert ops.linear_method(2, 2048, 8192) == "hybrid"
    assert ops.linear_method(64, 64, 8192) == "diag"


def test_linear_errors(sim):
    be = sim.backend
    with pytest.raises(ShapeError):
        ops.linear_diag(be, sim.encrypt(np.ones(4)), np.ones((2, 5)), None, 4)
    c = sim.encrypt(np.ones(4))
    for _ in range(P_SIM.depth):
        c = be.mul_plain(c, 0.5)
    with pytest.raises(DepthExhaustedError):
        ops.linear_diag(be, c, np.ones((2, 4)), None, 4)


@pytest.mark.seal
@pytest.mark.parametrize("method", ["diag", "hybrid", "dft"])
def test_linear_seal(method):
    rng = np.random.default_rng(0)
    m, n = 5, 100
    W, b, x = rng.uniform(-1, 1, (m, n)), rng.uniform(-1, 1, m), rng.uniform(-1, 1, n)
    steps = ops.required_rotations_linear((m, n), n, P_SEAL.slots, method,
                                          levels=2 if method == "dft" else None)
    keys = KeySet.generate(P_SEAL, backend="seal", rotations=steps)
    be = keys.backend
    if method == "dft":
        out = ops.linear_dft(be, keys.encrypt(x), W, b, n, levels=2)
    else:
        out = ops.linear_diag(be, keys.encrypt(x), W, b, n, method=method)
    assert_close_encrypted(keys.decrypt(out), W @ x + b, keys, depth=P_SEAL.depth - out.level)
