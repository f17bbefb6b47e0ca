"""Polynomial evaluation, composite sign/ReLU, Wilkes sqrt, |x| and max: each encrypted operator
equals its plaintext twin (the same polynomial) on SimBackend for many inputs and settings, on
SealBackend for a representative few, and each twin stays within its documented error of the
exact function on the stated range."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, target
from hypothesis import strategies as st

from privkit.errors import DepthExhaustedError, ParameterError
from privkit.fhe import CKKSParams, KeySet
from privkit.fhe.ops import poly as P
from privkit.testing import assert_close_encrypted

from .strategies import poly_coeffs, unit_signals

P16 = CKKSParams.preset("n16384")
P32 = CKKSParams.preset("n32768")


@pytest.fixture(scope="module")
def sim16():
    return KeySet.generate(P16, backend="sim", rotations=[1])


@pytest.fixture(scope="module")
def sim32():
    return KeySet.generate(P32, backend="sim", rotations=[1])


def _sim_close(actual, expected, what="encrypted result"):
    """SimBackend has no noise and the s/q factors are folded: agreement to float rounding."""
    scale = 1.0 + float(np.max(np.abs(expected))) if np.size(expected) else 1.0
    return assert_close_encrypted(actual, expected, atol=1e-9 * scale, what=what)


# -- poly_eval -----------------------------------------------------------------------------------

_INTERVALS = [(-1.0, 1.0), (-0.5, 1.5), (-2.0, 2.0), (0.0, 4.0), (-6.0, 6.0), (-0.25, 0.25)]


@given(c=poly_coeffs(max_degree=31), basis=st.sampled_from(["power", "chebyshev"]),
       iv=st.sampled_from(_INTERVALS), data=st.data())
@settings(max_examples=40)
def test_poly_eval_matches_twin_and_depth(sim16, c, basis, iv, data):
    if basis == "power":
        iv = (-1.0, 1.0)
    deg = len(P._trim(c)) - 1
    depth = P.poly_depth(deg, basis, iv)
    if depth > P16.depth:
        with pytest.raises(DepthExhaustedError):
            P.poly_eval(sim16.backend, sim16.encrypt([0.0]), c, basis, iv)
        return
    x = data.draw(unit_signals(max_len=40)) * (iv[1] - iv[0]) / 2 + (iv[0] + iv[1]) / 2
    be = sim16.backend
    be.counter.reset()
    out = P.poly_eval(be, sim16.encrypt(x), c, basis, iv)
    assert out.level == P16.depth - depth
    if deg >= 1:
        assert depth == math.ceil(math.log2(deg + 1)) + (0 if P._folds((iv[1] - iv[0]) / 2, deg) else 1)
        assert be.counter.total.ct_mults == P.poly_cost(c, basis, iv)["ct_mults"]
    err = _sim_close(sim16.decrypt(out), P.poly_eval_ref(x, c, basis, iv))
    target(err)


def test_poly_eval_depth_is_log_and_products_sublinear():
    rng = np.random.default_rng(0)
    for d in (1, 2, 3, 4, 7, 8, 15, 16, 31, 63):
        for basis in ("power", "chebyshev"):
            cost = P.poly_cost(rng.normal(size=d + 1), basis)
            assert cost["depth"] == math.ceil(math.log2(d + 1))
            assert cost["ct_mults"] <= 2 * math.sqrt(d + 1) + math.log2(d + 1) + 1, (d, cost)


def test_poly_eval_multiplier_masks_for_free(sim16):
    x = np.linspace(-1, 1, 16)
    c = [0.3, -1.0, 0.5, 0.25]
    m = (np.arange(16) % 3 == 0).astype(float) * 1.7
    out = P.poly_eval(sim16.backend, sim16.encrypt(x), c, multiplier=m)
    assert out.level == P16.depth - 2
    _sim_close(sim16.decrypt(out), m * P.poly_eval_ref(x, c))


def test_poly_eval_checks_depth_before_any_work(sim16):
    be = sim16.backend
    ct = be.mod_switch_to(sim16.encrypt([0.5]), 2)
    be.counter.reset()
    with pytest.raises(DepthExhaustedError, match="poly_eval"):
        P.poly_eval(be, ct, np.ones(8))
    assert be.counter.total.total_ops == 0


def test_basis_conversions_roundtrip():
    rng = np.random.default_rng(1)
    for iv in _INTERVALS:
        c = rng.normal(size=8)
        p = P.cheb_to_power(c, iv)
        np.testing.assert_allclose(P.power_to_cheb(p, iv), c, atol=1e-9)
        x = np.linspace(*iv, 50)
        np.testing.assert_allclose(np.polynomial.polynomial.polyval(x, p),
                                   P.poly_eval_ref(x, c, "chebyshev", iv), atol=1e-9)


def test_fitter_minimax_beats_interpolation_and_respects_parity():
    relu = lambda t: np.maximum(t, 0.0)
    x = np.linspace(-1, 1, 20001)
    for d in (2, 4, 7):
        mm = P.chebyshev_fit(relu, d, method="minimax")
        it = P.chebyshev_fit(relu, d, method="interp")
        e_mm = np.abs(np.polynomial.chebyshev.chebval(x, mm) - relu(x)).max()
        e_it = np.abs(np.polynomial.chebyshev.chebval(x, it) - relu(x)).max()
        assert e_mm <= e_it + 1e-9
    odd = P.chebyshev_fit(np.sign, 9, method="lsq", parity="odd")
    assert np.all(odd[0::2] == 0)
    sq = P.chebyshev_fit(np.sqrt, 6, (0.0, 4.0), method="interp")
    t = np.linspace(0, 4, 101)
    assert np.abs(P.poly_eval_ref(t, sq, "chebyshev", (0.0, 4.0)) - np.sqrt(t)).max() < 0.2


# -- composite sign and ReLU --------------------------------------------------------------------


def test_compg_polynomials():
    x = np.linspace(-1, 1, 2001)
    np.testing.assert_allclose(P.compg_f(1), [0, 1.5, 0, -0.5])
    for n in (1, 2, 3, 4):
        f, g = P.compg_f(n), P.compg_g(n)
        fx, gx = np.polynomial.polynomial.polyval(x, f), np.polynomial.polynomial.polyval(x, g)
        assert np.abs(fx).max() <= 1 + 1e-12 and np.abs(gx).max() <= 1 + 1e-3  # map [-1,1] to itself
        assert g[1] > f[1] > 1  # g grows faster near 0


@given(alpha=st.integers(2, 8), gap_bits=st.integers(2, 7), family=st.sampled_from(["compg", "f"]))
@settings(max_examples=20)
def test_sign_plan_precision(alpha, gap_bits, family):
    gap = 2.0**-gap_bits
    x = np.concatenate([np.geomspace(gap, 1, 4000), np.linspace(gap, 1, 4000)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = P.sign_composite_ref(x, alpha, gap, family=family)
        s_neg = P.sign_composite_ref(-x, alpha, gap, family=family)
    assert np.abs(1 - s).max() <= 2.0**-alpha
    np.testing.assert_allclose(s_neg, -s, atol=1e-12)  # odd


def test_sign_composite_encrypted(sim32):
    x = np.concatenate([np.linspace(-2, -0.25, 20), np.linspace(0.25, 2, 20)])
    out = P.sign_composite(sim32.backend, sim32.encrypt(x), 4, 0.125, bound=2.0)
    assert out.level == P32.depth - P.sign_composite_depth(4, 0.125, 2.0)
    ref = P.sign_composite_ref(x, 4, 0.125, 2.0)
    _sim_close(sim32.decrypt(out), ref)
    assert np.abs(ref - np.sign(x)).max() <= 2.0**-4


@given(bits=st.integers(2, 10), family=st.sampled_from(["compg", "f"]),
       scale=st.floats(0.05, 50.0))
@settings(max_examples=20)
def test_relu_composite_error_bound(bits, family, scale):
    x = np.concatenate([np.linspace(-scale, scale, 4001), scale * np.geomspace(1e-6, 1, 500)])
    err = np.abs(P.relu_composite_ref(x, scale, bits, family) - np.maximum(x, 0)).max()
    target(err / scale)
    assert err <= scale * 2.0**-bits * (1 + 1e-9)


@given(bits=st.integers(2, 10), scale=st.sampled_from([0.5, 1.0, 3.0, 20.0]), data=st.data())
@settings(max_examples=12)
def test_relu_composite_matches_twin(sim32, bits, scale, data):
    depth = P.relu_composite_depth(scale, bits)
    x = data.draw(unit_signals(max_len=32)) * scale
    out = P.relu_composite(sim32.backend, sim32.encrypt(x), scale, bits)
    assert out.level == P32.depth - depth
    target(_sim_close(sim32.decrypt(out), P.relu_composite_ref(x, scale, bits)))


def test_relu_composite_depths_documented():
    # one degree-7 polynomial (3 levels) and the product for 4 bits; more bits, more compositions
    assert P.relu_composite_depth(1.0, 4) == 4
    assert P.relu_composite_depth(1.0, 6) == 7
    assert P.relu_composite_depth(10.0, 4) == 5  # 10**7 too far to fold: one level to divide
    depths = [P.relu_composite_depth(1.0, b) for b in range(2, 11)]
    assert depths == sorted(depths)


#: max |relu_poly - relu| on [-1, 1] (the minimax fit; odd degrees add nothing to even ones)
RELU_POLY_ERR = {2: 0.0626, 4: 0.0339, 6: 0.0230, 8: 0.0174, 10: 0.0140, 12: 0.0117, 14: 0.0100}
RELU_POLY_ERR[1] = 0.2501


@given(degree=st.integers(1, 15), bound=st.floats(0.1, 20.0), data=st.data())
@settings(max_examples=30)
def test_relu_poly_is_the_coefficients_applied(sim16, degree, bound, data):
    x = data.draw(unit_signals(max_len=32)) * bound
    coeffs = P.relu_poly_coeffs(degree, bound)
    assert len(coeffs) == degree + 1
    ref = P.relu_poly_ref(x, degree, bound)
    np.testing.assert_allclose(ref, np.polynomial.polynomial.polyval(x, coeffs), atol=1e-9 * bound)
    out = P.relu_poly(sim16.backend, sim16.encrypt(x), degree, bound)
    assert out.level == P16.depth - P.relu_poly_depth(degree, bound)
    assert P.relu_poly_depth(degree, 1.0) == math.ceil(math.log2(degree + 1))
    target(_sim_close(sim16.decrypt(out), ref))
    grid = np.linspace(-bound, bound, 4001)
    err = np.abs(P.relu_poly_ref(grid, degree, bound) - np.maximum(grid, 0)).max()
    assert err <= RELU_POLY_ERR[max(1, degree - degree % 2)] * bound


# -- sqrt, |x|, max --------------------------------------------------------------------------------


@given(d=st.integers(1, 6), bound=st.sampled_from([1.0, 0.3, 4.0, 50.0]), data=st.data())
@settings(max_examples=20)
def test_sqrt_matches_twin_and_paper_bound(sim32, d, bound, data):
    z = np.abs(data.draw(unit_signals(max_len=32))) * bound
    out = P.sqrt(sim32.backend, sim32.encrypt(z), d, bound)
    assert out.level == P32.depth - P.sqrt_depth(d, bound)
    ref = P.sqrt_ref(z, d, bound)
    target(_sim_close(sim32.decrypt(out), ref))
    t = z / bound
    assert np.all(ref <= np.sqrt(z) + 1e-12)  # from below
    assert np.all(np.abs(ref - np.sqrt(z)) <= math.sqrt(bound) * (1 - t / 4) ** (2 ** (d + 1)) + 1e-12)


def test_sqrt_depths():
    assert [P.sqrt_depth(d) for d in range(1, 7)] == [2, 3, 5, 7, 9, 11]
    assert [P.approx_max_depth("sqrt", d) for d in range(1, 7)] == [3, 4, 6, 8, 10, 12]
    assert P.approx_max_depth("sqrt", 2, bound=3.0) == 5  # prescale by 1/bound


#: max |abs_poly - |x|| on [-1, 1] (minimax even fits)
ABS_POLY_ERR = {2: 0.1251, 4: 0.0677, 6: 0.0460, 8: 0.0348, 10: 0.0279, 12: 0.0233, 14: 0.0200,
                16: 0.0175}


@given(degree=st.sampled_from([2, 4, 6, 8, 12, 16]), bound=st.sampled_from([1.0, 0.5, 3.0]),
       data=st.data())
@settings(max_examples=15)
def test_abs_poly(sim16, degree, bound, data):
    x = data.draw(unit_signals(max_len=32)) * bound
    out = P.abs_poly(sim16.backend, sim16.encrypt(x), degree, bound)
    assert out.level == P16.depth - P.abs_poly_depth(degree, bound)
    ref = P.abs_poly_ref(x, degree, bound)
    target(_sim_close(sim16.decrypt(out), ref))
    np.testing.assert_allclose(ref, np.polynomial.polynomial.polyval(x, P.abs_poly_coeffs(degree, bound)),
                               atol=1e-9 * bound)
    grid = np.linspace(-bound, bound, 2001)
    assert np.abs(P.abs_poly_ref(grid, degree, bound) - np.abs(grid)).max() <= ABS_POLY_ERR[degree] * bound


@given(method=st.sampled_from(["sqrt", "poly"]), k=st.integers(1, 4),
       bound=st.sampled_from([1.0, 2.0, 0.5]), data=st.data())
@settings(max_examples=25)
def test_approx_max(sim16, method, k, bound, data):
    kw = {"iterations": k} if method == "sqrt" else {"degree": 2 * k}
    a = data.draw(unit_signals(max_len=24)) * bound
    b = np.roll(a, 1)
    depth = P.approx_max_depth(method, bound=bound, **kw)
    if depth > P16.depth:
        return
    out = P.approx_max(sim16.backend, sim16.encrypt(a), sim16.encrypt(b), method, bound=bound, **kw)
    assert out.level == P16.depth - depth
    ref = P.approx_max_ref(a, b, method, bound=bound, **kw)
    target(_sim_close(sim16.decrypt(out), ref))
    exact = np.maximum(a, b)
    if method == "sqrt":
        assert np.all(ref <= exact + 1e-12)
        gap = np.abs(a - b) / (2 * bound)
        assert np.all(exact - ref <= bound * (1 - gap**2 / 4) ** (2 ** (k + 1)) + 1e-12)
    else:
        assert np.abs(ref - exact).max() <= ABS_POLY_ERR[2 * k] * bound + 1e-12


# -- range contract ------------------------------------------------------------------------------


def test_twins_warn_or_raise_outside_the_range():
    x = np.array([-1.5, 0.2, 1.2])
    for fn in (lambda v, **kw: P.relu_composite_ref(v, 1.0, 4, **kw),
               lambda v, **kw: P.relu_poly_ref(v, 4, 1.0, **kw),
               lambda v, **kw: P.sign_composite_ref(v, 4, 0.1, **kw),
               lambda v, **kw: P.sqrt_ref(v * v, 2, 1.0, **kw),
               lambda v, **kw: P.approx_max_ref(v, v[::-1], **kw)):
        with pytest.warns(P.RangeWarning, match="outside the calibrated range"):
            fn(x)
        with pytest.raises(ParameterError, match="calibrated range"):
            fn(x, on_range="raise")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fn(x, on_range="ignore")
            fn(x * 0.5)  # inside: silent
    assert P.calibrate_bound(np.array([-3.0, 2.0])) == 3.0


def _rev(v):
    return v.flip(0) if hasattr(v, "flip") else v[::-1]


def test_twins_run_on_torch_with_gradients():
    torch = pytest.importorskip("torch")
    x = torch.linspace(-0.9, 0.9, 33, dtype=torch.float64, requires_grad=True)
    for fn in (lambda v: P.relu_composite_ref(v, 1.0, 6), lambda v: P.relu_poly_ref(v, 7, 1.0),
               lambda v: P.approx_max_ref(v, _rev(v), "sqrt", 3),
               lambda v: P.approx_max_ref(v, _rev(v), "poly", degree=8)):
        y = fn(x)
        y.sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        np.testing.assert_allclose(y.detach().numpy(), fn(x.detach().numpy()), atol=1e-12)
        x.grad = None


# -- SEAL: a representative few ------------------------------------------------------------------


@pytest.fixture(scope="module")
def seal16():
    return KeySet.generate(P16, backend="seal", rotations=[1])


@pytest.mark.seal
@pytest.mark.parametrize(
    "name, run, ref, depth",
    [
        ("relu_poly7", lambda be, ct: P.relu_poly(be, ct, 7, 1.0), lambda x: P.relu_poly_ref(x, 7, 1.0), 3),
        ("relu_comp4", lambda be, ct: P.relu_composite(be, ct, 1.0, 4),
         lambda x: P.relu_composite_ref(x, 1.0, 4), 4),
        ("relu_comp6_scaled", lambda be, ct: P.relu_composite(be, ct, 2.0, 5),
         lambda x: P.relu_composite_ref(x, 2.0, 5), 7),
        ("cheb15", lambda be, ct: P.poly_eval(be, ct, np.linspace(1, -1, 16) / 4, "chebyshev", (-1, 1)),
         lambda x: P.poly_eval_ref(x, np.linspace(1, -1, 16) / 4, "chebyshev", (-1, 1)), 4),
        ("max_sqrt2", lambda be, ct: P.approx_max(be, ct, be.rotate(ct, 1), "sqrt", 2),
         lambda x: P.approx_max_ref(x, np.append(x[1:], 0.0), "sqrt", 2), 4),
    ],
)
def test_seal_matches_twin(seal16, name, run, ref, depth):
    x = np.linspace(-0.95, 0.95, 64) * np.cos(np.arange(64))
    out = run(seal16.backend, seal16.encrypt(x))
    assert out.level == P16.depth - depth
    assert_close_encrypted(seal16.decrypt(out), ref(x), P16, depth=depth, what=name)
