"""Box-filter approximation of kernels (privkit.fhe.ops.boxes)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, target
from hypothesis import strategies as st
from strategies import box_sum_kernels

from privkit.errors import ParameterError, ShapeError
from privkit.fhe.ops.boxes import Box, BoxFilterSet, approximate_kernel, fit_alphas


@given(box_sum_kernels())
def test_sum_of_boxes_is_reconstructed_exactly(case):
    k, _boxes = case
    bs = approximate_kernel(k, tol=1e-10)
    err = float(np.max(np.abs(bs.dense() - k)))
    target(err)
    assert err < 1e-8 * max(1.0, float(np.max(np.abs(k))))
    assert bs.error < 1e-9
    assert len(bs) <= k.size


@given(box_sum_kernels(max_boxes=1))
def test_single_box_needs_one_box(case):
    k, boxes = case
    bs = approximate_kernel(k, tol=1e-10)
    assert len(bs) == 1
    (lo, hi, alpha), b = boxes[0], bs.boxes[0]
    assert (b.lo, b.hi) == (lo, hi) and b.alpha == pytest.approx(alpha)


@st.composite
def _random_kernels(draw):
    ndim = draw(st.integers(1, 3))
    top = {1: 20, 2: 7, 3: 4}[ndim]
    shape = tuple(draw(st.integers(1, top)) for _ in range(ndim))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    return rng.standard_normal(shape)


@given(_random_kernels())
def test_error_decreases_monotonically_to_zero(k):
    bs = approximate_kernel(k, tol=0)
    h = np.array(bs.history)
    assert len(h) == len(bs) <= k.size
    target(float(np.max(np.diff(h), initial=0.0)))
    assert np.all(np.diff(h) <= 1e-12)
    assert h[-1] < 1e-6
    # the stored scales reproduce the error the search tracked
    assert bs.error == pytest.approx(h[-1], abs=1e-9)


@given(_random_kernels(), st.sampled_from([0.3, 0.1, 0.01]))
def test_stops_at_first_box_count_below_tol(k, tol):
    bs = approximate_kernel(k, tol=tol)
    assert bs.error < tol
    full = approximate_kernel(k, tol=0)
    # greedy is deterministic: the tol run is a prefix of the full run
    assert [(b.lo, b.hi) for b in bs.boxes] == [(b.lo, b.hi) for b in full.boxes[: len(bs)]]
    if len(bs) > 1:
        assert full.history[len(bs) - 2] >= tol


@given(_random_kernels(), st.integers(1, 5))
def test_max_boxes_is_respected_and_alphas_are_least_squares(k, m):
    bs = approximate_kernel(k, max_boxes=m, tol=0)
    assert len(bs) == min(m, k.size)
    alphas = fit_alphas(k, [(b.lo, b.hi) for b in bs.boxes])
    np.testing.assert_allclose(alphas, bs.alphas, atol=1e-9)
    # the residual is orthogonal to every chosen box (normal equations M alpha = V)
    r = k - bs.dense()
    for b in bs.boxes:
        assert abs(r[b.slices].sum()) < 1e-8 * np.abs(k).sum()


def test_response_error_definition():
    rng = np.random.default_rng(0)
    k = rng.standard_normal((5, 5))
    bs = approximate_kernel(k, max_boxes=6)
    assert bs.response_error() == bs.error
    x = rng.standard_normal((20, 17))
    from scipy.signal import correlate

    ref = correlate(x, k, mode="valid")
    approx = correlate(x, bs.dense(), mode="valid")
    assert bs.response_error(x) == pytest.approx(np.linalg.norm(ref - approx) / np.linalg.norm(ref))
    with pytest.raises(ShapeError):
        bs.response_error(rng.standard_normal(30))
    with pytest.raises(ShapeError):
        bs.response_error(rng.standard_normal((3, 30)))


def test_smooth_kernels_need_few_boxes():
    g = np.exp(-((np.arange(9) - 4.0) ** 2) / 8)
    gauss = np.outer(g, g)
    rand = np.random.default_rng(0).standard_normal((9, 9))
    assert len(approximate_kernel(gauss)) < len(approximate_kernel(rand)) < 81
    assert len(approximate_kernel(gauss, tol=0.05)) <= 16
    sobel = np.array([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]])
    bs = approximate_kernel(sobel, tol=1e-12)
    assert bs.error < 1e-12 and len(bs) <= 4
    np.testing.assert_allclose(bs.alphas, np.round(bs.alphas), atol=1e-9)  # integer scales


def test_large_kernels_are_fast():
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    bs2 = approximate_kernel(rng.standard_normal((9, 9)))
    bs3 = approximate_kernel(rng.standard_normal((6, 6, 6)))
    assert time.perf_counter() - t0 < 10.0
    assert bs2.error < 0.01 and bs3.error < 0.01


def test_boxset_helpers():
    bs = BoxFilterSet((3, 4), [Box((0, 1), (2, 4), 2.0), Box((1, 0), (3, 2), -1.0)])
    d = bs.dense()
    assert d[0, 1] == 2.0 and d[1, 1] == 1.0 and d[2, 0] == -1.0 and d[0, 0] == 0.0
    assert len(bs) == 2 and bs.multiplications == 2 and bs.saving == pytest.approx(1 - 2 / 12)
    assert bs.with_alphas([1.0, 1.0]).dense()[1, 1] == 2.0
    with pytest.raises(ParameterError):
        _ = bs.error  # no kernel to compare with
    with pytest.raises(ShapeError):
        BoxFilterSet((3,), [Box((0,), (4,), 1.0)])
    with pytest.raises(ShapeError):
        bs.with_alphas([1.0])
    corners = Box((1, 2), (3, 5), 1.0).corners()
    assert sorted(corners) == sorted([((1, 2), 1), ((1, 5), -1), ((3, 2), -1), ((3, 5), 1)])


@pytest.mark.parametrize(
    "kernel, kwargs, err",
    [
        (np.array([1.0, np.nan]), {}, ParameterError),
        (np.array([[1.0, np.inf]]), {}, ParameterError),
        (np.zeros((3, 3)), {}, ParameterError),
        (np.ones(3), {"max_boxes": 0}, ParameterError),
        (np.ones(3), {"max_boxes": -2}, ParameterError),
        (np.ones(3), {"max_boxes": 1.5}, ParameterError),
        (np.ones(3), {"tol": -0.1}, ParameterError),
        (np.ones(3), {"tol": float("nan")}, ParameterError),
        (np.ones((2, 2, 2, 2)), {}, ShapeError),
        (np.array(3.0), {}, ShapeError),
        (np.ones((0, 3)), {}, ShapeError),
        (np.array(["a", "b"]), {}, ParameterError),
    ],
)
def test_bad_input_raises_typed_errors(kernel, kwargs, err):
    with pytest.raises(err):
        approximate_kernel(kernel, **kwargs)


def test_fit_alphas_rejects_mismatched_boxes():
    with pytest.raises(ShapeError):
        fit_alphas(np.ones((3, 3)), [((0,), (2,))])
