"""Max-pool (the paper's rotate / compare / mask / remove-holes pipeline and the gapped layout),
average pool and 2-D max pool: encrypted equals the plaintext twin, levels equal the declared
depth, the rotations used are exactly ``required_rotations``, errors against the exact max are
bounded as documented."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, target
from hypothesis import strategies as st

from privkit.errors import DepthExhaustedError, MissingKeyError, ParameterError, ShapeError
from privkit.fhe import CKKSParams, KeySet
from privkit.fhe.backend import Layout
from privkit.fhe.ops import pool as PL
from privkit.testing import assert_close_encrypted

from .strategies import unit_signals

P16 = CKKSParams.preset("n16384")
P32 = CKKSParams.preset("n32768")


@pytest.fixture(scope="module")
def sim32():
    return KeySet.generate(P32, backend="sim")


def _decode(keys, ct, out_len, S, layout):
    vec = keys.decrypt(ct.replace(length=keys.params.slots))
    if layout == "compact":
        return vec[:out_len], vec[out_len:]
    pos = np.arange(out_len) * S
    rest = np.ones(vec.size, dtype=bool)
    rest[pos] = False
    return vec[pos], vec[rest]


@st.composite
def pool_cases(draw):
    kernel = draw(st.integers(1, 5))
    stride = draw(st.integers(1, 4))
    n = draw(st.integers(kernel, 48))
    method = draw(st.sampled_from(["sqrt", "poly"]))
    kw = {"iterations": draw(st.integers(1, 3))} if method == "sqrt" else {"degree": draw(st.sampled_from([2, 4, 8]))}
    layout = draw(st.sampled_from(["compact", "gapped"]))
    bound = draw(st.sampled_from([1.0, 0.5, 2.5]))
    return n, kernel, stride, method, kw, layout, bound


@given(case=pool_cases(), data=st.data())
@settings(max_examples=40)
def test_max_pool1d_matches_twin(sim32, case, data):
    n, kernel, stride, method, kw, layout, bound = case
    depth = PL.max_pool1d_depth(n, kernel, stride, method, bound, layout=layout, **kw)
    if depth > P32.depth:
        return
    x = data.draw(unit_signals(min_len=n, max_len=n)) * bound
    be = sim32.backend
    out = PL.max_pool1d(be, sim32.encrypt(x), n, kernel, stride, method, bound, layout=layout, **kw)
    out_len = PL.pool_output_length(n, kernel, stride)
    assert out.level == P32.depth - depth
    ref = PL.max_pool1d_ref(x, kernel, stride, method, bound, **kw)
    assert ref.shape == (out_len,)
    got, rest = _decode(sim32, out, out_len, stride, layout)
    err = assert_close_encrypted(got, ref, atol=1e-9 * (1 + bound))
    target(err)
    assert np.abs(rest).max() < 1e-9  # zeros outside the result (masked, compacted)
    if layout == "compact":
        assert out.layout == Layout() and out.length == out_len
    else:
        assert out.layout == Layout(gap=stride) and out.length == (out_len - 1) * stride + 1
    exact = np.array([x[j * stride : j * stride + kernel].max() for j in range(out_len)])
    if method == "sqrt":
        assert np.all(ref <= exact + 1e-12)  # never above the true maximum


def test_max_pool1d_paper_configuration_error():
    """kernel 2 stride 2 on [-1, 1]: max error of sqrt-max d = 1..6 as tabulated in the docs."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 4096)
    errs = [np.abs(PL.max_pool1d_ref(x, 2, 2, "sqrt", iterations=d) - x.reshape(-1, 2).max(1)).max()
            for d in range(1, 7)]
    assert errs == sorted(errs, reverse=True)
    assert errs[0] <= 0.175 and errs[2] <= 0.08 and errs[5] <= 0.024


def test_gapped_input_and_required_rotations():
    n, k, s = 20, 2, 2
    rot = PL.required_rotations(n, k, s, "compact")
    keys = KeySet.generate(P16, backend="sim", rotations=rot)
    x = np.linspace(-0.9, 0.9, n) * np.cos(np.arange(n))
    out = PL.max_pool1d(keys.backend, keys.encrypt(x), n, k, s, iterations=2)  # only these keys
    assert_close_encrypted(keys.decrypt(out), PL.max_pool1d_ref(x, k, s, iterations=2), atol=1e-9)
    # a gapped input (e.g. after a strided layer): element i in slot 2i; output gap 4
    gx = np.zeros(2 * n)
    gx[::2] = x
    keys2 = KeySet.generate(P16, backend="sim", rotations=PL.required_rotations(n, k, s, "gapped", gap=2))
    ct = keys2.encrypt(gx).replace(layout=Layout(gap=2))
    out = PL.max_pool1d(keys2.backend, ct, n, k, s, iterations=2, layout="gapped")
    assert out.layout == Layout(gap=4)
    vec = keys2.decrypt(out.replace(length=keys2.params.slots))
    assert_close_encrypted(vec[0 : 4 * (n // 2) : 4], PL.max_pool1d_ref(x, k, s, iterations=2), atol=1e-9)
    with pytest.raises(MissingKeyError):
        PL.max_pool1d(keys2.backend, keys2.encrypt(x), n, 2, 2, iterations=1, layout="gapped")


def test_max_pool1d_validates_up_front(sim32):
    be = sim32.backend
    ct = sim32.encrypt(np.zeros(64))
    with pytest.raises(ShapeError):
        PL.max_pool1d(be, ct, 1, 2, 2)
    with pytest.raises(ParameterError):
        PL.max_pool1d(be, ct, 64, method="median")
    with pytest.raises(ParameterError):
        PL.max_pool1d(be, ct, 64, layout="diagonal")
    low = be.mod_switch_to(ct, 3)
    be.counter.reset()
    with pytest.raises(DepthExhaustedError, match="max_pool1d"):
        PL.max_pool1d(be, low, 64, iterations=3)
    assert be.counter.total.total_ops == 0
    with pytest.warns(Warning, match="calibrated range"):
        PL.max_pool1d_ref(np.array([2.0, 0.0]), bound=1.0)


@given(n=st.integers(2, 40), kernel=st.integers(1, 4), stride=st.integers(1, 4),
       layout=st.sampled_from(["compact", "gapped"]), data=st.data())
@settings(max_examples=25)
def test_avg_pool1d(sim32, n, kernel, stride, layout, data):
    if kernel > n:
        return
    x = data.draw(unit_signals(min_len=n, max_len=n)) * 3
    out = PL.avg_pool1d(sim32.backend, sim32.encrypt(x), n, kernel, stride, layout=layout)
    assert out.level == P32.depth - PL.avg_pool1d_depth(n, kernel, stride, layout)
    out_len = PL.pool_output_length(n, kernel, stride)
    got, rest = _decode(sim32, out, out_len, stride, layout)
    ref = PL.avg_pool1d_ref(x, kernel, stride)
    exact = np.array([x[j * stride : j * stride + kernel].mean() for j in range(out_len)])
    np.testing.assert_allclose(ref, exact, atol=1e-12)
    target(assert_close_encrypted(got, ref, atol=1e-9))
    assert np.abs(rest).max() < 1e-9


@given(h=st.integers(2, 9), w=st.integers(2, 9), k=st.integers(1, 3), method=st.sampled_from(["sqrt", "poly"]),
       data=st.data())
@settings(max_examples=15)
def test_max_pool2d(sim32, h, w, k, method, data):
    if k > min(h, w):
        return
    kw = {"iterations": 2} if method == "sqrt" else {"degree": 4}
    x = data.draw(unit_signals(min_len=h * w, max_len=h * w)).reshape(h, w)
    out = PL.max_pool2d(sim32.backend, sim32.encrypt(x.ravel()), (h, w), k, method=method, **kw)
    assert out.level == P32.depth - PL.max_pool2d_depth((h, w), k, method=method, **kw)
    ref = PL.max_pool2d_ref(x, k, method=method, **kw)
    oh, ow = ref.shape
    vec = sim32.decrypt(out.replace(length=h * w)).reshape(h, w)
    target(assert_close_encrypted(vec[: oh * k : k, : ow * k : k], ref, atol=1e-9))


def test_twins_on_torch_batches():
    torch = pytest.importorskip("torch")
    x = torch.rand(3, 2, 16, dtype=torch.float64) * 2 - 1
    x.requires_grad_(True)
    y = PL.max_pool1d_ref(x, 2, 2, "sqrt", iterations=3)
    assert y.shape == (3, 2, 8)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    np.testing.assert_allclose(y.detach().numpy(), PL.max_pool1d_ref(x.detach().numpy(), 2, 2, iterations=3))
    z = PL.max_pool2d_ref(x.detach().reshape(3, 4, 8), 2, method="poly", degree=4)
    assert z.shape == (3, 2, 4)


@pytest.mark.seal
@pytest.mark.parametrize("layout", ["compact", "gapped"])
def test_seal_max_pool1d(layout):
    n = 16
    keys = KeySet.generate(P16, backend="seal", rotations=PL.required_rotations(n, 2, 2, layout))
    x = np.linspace(-0.9, 0.9, n) * np.cos(3 * np.arange(n))
    depth = PL.max_pool1d_depth(n, iterations=2, layout=layout)
    out = PL.max_pool1d(keys.backend, keys.encrypt(x), n, iterations=2, layout=layout)
    assert out.level == P16.depth - depth
    got, rest = _decode(keys, out, n // 2, 2, layout)
    assert_close_encrypted(got, PL.max_pool1d_ref(x, 2, 2, iterations=2), P16, depth=depth)
    assert np.abs(rest).max() < 1e-4
