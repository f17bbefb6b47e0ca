"""Spatial and frequency-domain convolutions against numpy / scipy (PyTorch's convention:
cross-correlation, ``out[i] = sum_k x[i*stride + k] * kernel[k]``, no kernel flip)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
from hypothesis import given, target
from hypothesis import strategies as st

from privkit.errors import DepthExhaustedError, ShapeError
from privkit.fhe import CKKSParams, KeySet, ops
from privkit.testing import assert_close_encrypted

from .strategies import kernels, signals

P_SIM = CKKSParams.preset("n32768")
P_SEAL = CKKSParams.preset("n8192")
P_SEAL16 = CKKSParams.preset("n16384")


@pytest.fixture(scope="module")
def sim():
    return KeySet.generate(P_SIM, backend="sim")


def _full(be, ct):
    return be.decrypt(ct.replace(length=be.slots))


# -- references agree with scipy / numpy ---------------------------------------------------------
@given(x=signals(max_len=40), k=kernels(max_len=8), mode=st.sampled_from(["valid", "same", "full"]))
def test_reference_is_cross_correlation(x, k, mode):
    if mode == "valid" and k.size > x.size:
        return
    ref = ops.conv1d_spatial_ref(x, k, mode=mode)
    full = scipy.signal.correlate(x, k, mode="full")  # index j <-> shift j - (K-1)
    if mode == "valid":
        want = scipy.signal.correlate(x, k, mode="valid")
    elif mode == "full":
        want = full
    else:  # PyTorch 'same': left pad (K-1)//2
        start = k.size - 1 - (k.size - 1) // 2
        want = full[start : start + x.size]
    assert np.allclose(ref, want)
    assert np.allclose(ops.conv1d_spatial_ref(x, k, mode="full"), np.convolve(x, k[::-1]))


# -- spatial, simulator ----------------------------------------------------------------------------
@given(
    n=st.integers(2, 80),
    K=st.integers(1, 9),
    stride=st.integers(1, 5),
    mode=st.sampled_from(["valid", "same", "full"]),
    compact=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_conv1d_spatial_single(sim, n, K, stride, mode, compact, seed):
    if mode == "valid" and K > n:
        return
    rng = np.random.default_rng(seed)
    x, k, b = rng.uniform(-2, 2, n), rng.uniform(-1, 1, K), float(rng.uniform(-1, 1))
    be = sim.backend
    be.counter.reset()
    out = ops.conv1d_spatial(be, sim.encrypt(x), k, n, stride, mode, bias=b, compact=compact)
    want = ops.conv1d_spatial_ref(x, k, n, stride, mode, bias=b)
    full = _full(be, out)
    got = full[: want.size] if compact else full[: (want.size - 1) * stride + 1 : stride]
    target(assert_close_encrypted(got, want, be, depth=be.counter.total.depth))
    assert be.counter.total.depth == ops.conv_spatial_depth((n,), (K,), stride, mode, compact=compact)
    if compact:
        assert out.length == want.size and out.layout.compact
        assert np.allclose(full[want.size :], 0)
    else:
        assert out.layout.gap == stride


@given(
    dims=st.sampled_from([1, 2, 3]),
    cin=st.integers(1, 3),
    cout=st.integers(1, 3),
    stride=st.integers(1, 3),
    packed=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_conv_nd_multichannel(sim, dims, cin, cout, stride, packed, seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(3, 8, size=dims))
    ks = tuple(int(rng.integers(1, min(3, s) + 1)) for s in shape)
    mode = "valid" if dims > 1 and stride > 1 else str(rng.choice(["valid", "same"]))
    kernel = rng.uniform(-1, 1, (cout, cin) + ks)
    bias = rng.uniform(-1, 1, cout)
    x = rng.uniform(-2, 2, (cin,) + shape)
    f = {1: ops.conv1d_spatial, 2: ops.conv2d_spatial, 3: ops.conv3d_spatial}[dims]
    fr = {1: ops.conv1d_spatial_ref, 2: ops.conv2d_spatial_ref, 3: ops.conv3d_spatial_ref}[dims]
    arg = shape[0] if dims == 1 else shape
    want = fr(x, kernel, arg, stride, mode, bias=bias)
    be = sim.backend
    size = int(np.prod(shape))
    if packed:
        cs = 2 * size
        v = np.zeros(cin * cs)
        for c in range(cin):
            v[c * cs : c * cs + size] = x[c].ravel()
        out = f(be, sim.encrypt(v), kernel, arg, stride, mode, bias=bias, channel_stride=cs)
        full = _full(be, out)
        ocs = out.layout.channel_stride
        assert out.layout.channels == cout
        got = np.stack([full[o * ocs : o * ocs + want[o].size] for o in range(cout)])
    else:
        outs = f(be, [sim.encrypt(x[c].ravel()) for c in range(cin)], kernel, arg, stride, mode, bias=bias)
        got = np.stack([_full(be, y)[: want[i].size] for i, y in enumerate(outs)])
    target(assert_close_encrypted(got.ravel(), want.ravel(), be))


def test_conv2d_matches_scipy(sim):
    rng = np.random.default_rng(0)
    img, k = rng.uniform(-1, 1, (9, 11)), rng.uniform(-1, 1, (3, 4))
    out = ops.conv2d_spatial(sim.backend, sim.encrypt(img.ravel()), k, img.shape)
    want = scipy.signal.correlate2d(img, k, mode="valid")
    assert_close_encrypted(_full(sim.backend, out)[: want.size], want.ravel(), sim)


def test_conv_spatial_errors(sim):
    be = sim.backend
    ct = sim.encrypt(np.ones(16))
    with pytest.raises(ShapeError):
        ops.conv1d_spatial(be, ct, np.ones(20), 16)  # kernel longer than the signal
    with pytest.raises(ShapeError):
        ops.conv2d_spatial(be, ct, np.ones((3, 3)), (4, 4), mode="full")  # rows cannot grow
    small = KeySet.generate("n8192", backend="sim")
    c = small.encrypt(np.ones(512))
    for _ in range(3):
        c = small.backend.mul_plain(c, 0.5)
    with pytest.raises(DepthExhaustedError):
        ops.conv1d_spatial(small.backend, c, np.ones(3), 512)


def test_required_rotations_conv_spatial_suffice():
    for kw in [{"shape": (50,), "kernel_shape": (5,), "stride": 3, "mode": "same"},
               {"shape": (6, 7), "kernel_shape": (3, 2), "stride": 2}]:
        steps = ops.required_rotations_conv_spatial(**kw)
        keys = KeySet.generate(P_SIM, backend="sim", rotations=steps)
        shape = kw["shape"]
        x = np.random.default_rng(0).uniform(-1, 1, int(np.prod(shape)))
        f = ops.conv1d_spatial if len(shape) == 1 else ops.conv2d_spatial
        arg = shape[0] if len(shape) == 1 else shape
        keys.backend.counter.reset()
        f(keys.backend, keys.encrypt(x), np.ones(kw["kernel_shape"]), arg, kw["stride"], kw.get("mode", "valid"))
        # each rotation used exactly one key (no composition)
        assert keys.backend.counter.total.rotations <= 64


# -- spatial, SEAL -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def seal8():
    steps = set(ops.required_rotations_conv_spatial((100,), (5,), 2, "same", radix=8, slots=P_SEAL.slots))
    steps |= set(ops.required_rotations_conv_spatial((8, 8), (3, 3), 1, radix=4, slots=P_SEAL.slots))
    steps |= set(ops.required_rotations_conv_spatial(
        (64,), (3,), 1, channels=(2, 3), channel_stride=128, slots=P_SEAL.slots))
    return KeySet.generate(P_SEAL, backend="seal", rotations=sorted(steps))


@pytest.mark.seal
def test_conv_spatial_seal(seal8):
    be = seal8.backend
    rng = np.random.default_rng(3)
    x, k = rng.uniform(-2, 2, 100), rng.uniform(-1, 1, 5)
    out = ops.conv1d_spatial(be, seal8.encrypt(x), k, 100, 2, "same", bias=0.5, radix=8)
    want = ops.conv1d_spatial_ref(x, k, 100, 2, "same", bias=0.5)
    assert_close_encrypted(seal8.decrypt(out), want, seal8, depth=P_SEAL.depth - out.level)
    img, k2 = rng.uniform(-1, 1, (8, 8)), rng.uniform(-1, 1, (3, 3))
    out = ops.conv2d_spatial(be, seal8.encrypt(img.ravel()), k2, (8, 8), radix=4)
    assert_close_encrypted(seal8.decrypt(out), ops.conv2d_spatial_ref(img, k2).ravel(), seal8,
                           depth=P_SEAL.depth - out.level)
    xs = rng.uniform(-1, 1, (2, 64))
    v = np.zeros(256)
    v[:64], v[128:192] = xs[0], xs[1]
    kk = rng.uniform(-1, 1, (3, 2, 3))
    out = ops.conv1d_spatial(be, seal8.encrypt(v), kk, 64, channel_stride=128)
    full = seal8.decrypt(out.replace(length=3 * 128))
    want = ops.conv1d_spatial_ref(xs, kk, 64)
    got = np.stack([full[o * 128 : o * 128 + 62] for o in range(3)])
    assert_close_encrypted(got.ravel(), want.ravel(), seal8, depth=P_SEAL.depth - out.level)


# -- frequency domain ------------------------------------------------------------------------------
@given(
    n=st.integers(1, 90),
    K=st.integers(1, 12),
    stride=st.integers(1, 6),
    mode=st.sampled_from(["valid", "same", "full"]),
    channels=st.sampled_from([None, (1, 1), (2, 1), (1, 3), (3, 2)]),
    compact=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_conv1d_freq_matches_spatial_ref(sim, n, K, stride, mode, channels, compact, seed):
    if mode == "valid" and K > n:
        return
    rng = np.random.default_rng(seed)
    be = sim.backend
    if channels is None:  # the contract's single-channel form
        x, k, b = rng.uniform(-2, 2, n), rng.uniform(-1, 1, K), float(rng.uniform(-1, 1))
        inp = sim.encrypt(x)
    else:
        cin, cout = channels
        x, k, b = rng.uniform(-2, 2, (cin, n)), rng.uniform(-1, 1, (cout, cin, K)), rng.uniform(-1, 1, cout)
        inp = [sim.encrypt(v) for v in x]
    want = ops.conv1d_spatial_ref(x, k, n, stride, mode, bias=b)
    assert np.allclose(ops.conv1d_freq_ref(x, k, n, stride, mode, bias=b), want)
    be.counter.reset()
    out = ops.conv1d_freq(be, inp, k, n, stride, mode, bias=b, compact=compact)
    outs = [out] if channels is None else out
    wants = [want] if channels is None else list(want)
    err = 0.0
    for y, w in zip(outs, wants):
        full = _full(be, y)
        got = full[: w.size] if compact else full[: (w.size - 1) * stride + 1 : stride]
        err = max(err, assert_close_encrypted(got, w, be, depth=be.counter.total.depth, factor=2))
        if compact:
            assert np.allclose(full[w.size :], 0) and y.length == w.size
        elif stride > 1:
            assert y.layout.gap == stride
    target(err)
    cin, cout = channels or (1, 1)
    assert be.counter.total.depth == ops.conv_freq_depth(
        n, K, stride, mode, channels=(cin, cout), compact=compact, available=P_SIM.depth)


def test_conv1d_freq_contract_and_depth_error():
    keys = KeySet.generate("n16384", backend="sim")
    x, k = np.random.default_rng(0).uniform(-1, 1, 200), np.array([0.5, -1.0, 0.25])
    out = ops.conv1d_freq(keys.backend, keys.encrypt(x), k, 200)
    assert_close_encrypted(keys.decrypt(out), scipy.signal.correlate(x, k, mode="valid"),
                           keys)
    with pytest.raises(DepthExhaustedError):
        ops.conv1d_freq(keys.backend, keys.encrypt(x), k, 200, stride=2, radix=2)  # 6 + 7 levels
    with pytest.raises(ShapeError):
        ops.conv1d_freq(keys.backend, keys.encrypt(x), np.ones((2, 2, 3)), 200)  # 2 inputs wanted


@pytest.mark.seal
def test_conv1d_freq_seal():
    """n8192 (3 levels): 2 + 1 transform levels, strided output left gapped (no level)."""
    n, k = 300, np.random.default_rng(1).uniform(-1, 1, 7)
    x = np.random.default_rng(2).uniform(-1, 1, n)
    kw = {"levels_dft": 2, "levels_idft": 1, "compact": False}
    steps = ops.required_rotations_conv_freq(n, k, 2, "same", slots=P_SEAL.slots, **kw)
    keys = KeySet.generate(P_SEAL, backend="seal", rotations=steps)
    out = ops.conv1d_freq(keys.backend, keys.encrypt(x), k, n, 2, "same", bias=0.1, **kw)
    want = ops.conv1d_spatial_ref(x, k, n, 2, "same", bias=0.1)
    assert out.layout.gap == 2
    assert_close_encrypted(keys.decrypt(out)[::2], want, keys, depth=P_SEAL.depth - out.level)
    # the generated keys serve every rotation directly (no composition through other keys)
    assert all(len(keys.backend.rotation_path(s)) == 1 for s in steps)
