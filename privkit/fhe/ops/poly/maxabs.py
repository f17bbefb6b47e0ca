"""``|x|`` by one fitted even polynomial (:func:`abs_poly`) and ``max(a, b) = (a + b)/2 + |a - b|/2``
(:func:`approx_max`) with either ``|x|`` or the Wilkes square root."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from ....errors import ParameterError
from ...backend import Backend, Ciphertext
from .evaluate import _L, _CtOps, _folds, _input_range_check, poly_eval, poly_eval_ref
from .fit import cheb_to_power, chebyshev_fit
from .range_check import check_range
from .wilkes import _check_iters, _wilkes, _wilkes_depth, _wilkes_folds, _wilkes_ref


# -- |x| by one polynomial --------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _abs_sqrt_cheb(m: int) -> tuple[float, ...]:
    """q with q(t) ~ sqrt(t) on [0, 1], Chebyshev on [0, 1] (|u| ~ q(u^2))."""
    return tuple(chebyshev_fit(np.sqrt, m, (0.0, 1.0), "minimax"))


def abs_poly_coeffs(degree: int, bound: float = 1.0) -> np.ndarray:
    """Power coefficients in ``x`` of the even polynomial :func:`abs_poly` applies: ``bound *
    q((x/bound)**2)`` with ``q`` the minimax fit of ``sqrt`` on ``[0, 1]`` of degree ``degree // 2``
    (equivalently the minimax even fit of ``|x|`` on ``[-bound, bound]``)."""
    m = _abs_m(degree)
    q = cheb_to_power(_abs_sqrt_cheb(m), (0.0, 1.0))
    out = np.zeros(2 * m + 1)
    out[0::2] = q * float(bound) ** (1 - 2 * np.arange(m + 1))
    return out


def _abs_m(degree: int) -> int:
    degree = int(degree)
    if degree < 2 or degree % 2:
        raise ParameterError(f"abs_poly needs an even degree >= 2, got {degree}")
    return degree // 2


def _abs_plan(degree: int, bound: float, prescaled: bool) -> tuple[np.ndarray, tuple[float, float]]:
    """Chebyshev coefficients (on an interval of W = x**2) of bound * q(W / bound**2)."""
    m = _abs_m(degree)
    c = float(bound) * np.asarray(_abs_sqrt_cheb(m))
    # W = x**2 on [0, bound**2], or W = 2 (x/bound)**2 on [0, 2] when prescaled (half-width 1)
    hi = 2.0 if prescaled else float(bound) ** 2
    return c, (0.0, hi)


def _abs_prescale(degree: int, bound: float) -> bool:
    return not _folds(float(bound) ** 2 / 2.0, _abs_m(degree))


def abs_poly_depth(degree: int, bound: float = 1.0) -> int:
    """Levels :func:`abs_poly` consumes: ``1 + L(degree/2)`` (= ``L(degree)``), plus one when
    ``bound`` is too far from 1 to fold."""
    m = _abs_m(degree)
    return 1 + _L(m) + (1 if _abs_prescale(degree, bound) else 0)


def abs_poly_ref(x: Any, degree: int, bound: float = 1.0, on_range: str = "warn") -> Any:
    """Plaintext twin of :func:`abs_poly`."""
    check_range(x, -bound, bound, "abs_poly", on_range)
    c, iv = _abs_plan(degree, 1.0, False)
    u = x * (1.0 / bound)
    return poly_eval_ref(u * u, c, "chebyshev", iv) * float(bound)


def _abs_core(backend: Backend, ct: Ciphertext, degree: int, bound: float, multiplier: Any) -> Ciphertext:
    pre = _abs_prescale(degree, bound)
    x = backend.mul_plain(ct, math.sqrt(2.0) / bound) if pre else ct
    fw = _CtOps(backend).fac(x.level)
    W = backend.square(x)  # fw * x^2: the interval of W scales by fw
    c, iv = _abs_plan(degree, bound, pre)
    iv = (0.0, iv[1] * fw)
    return poly_eval(backend, W, c, "chebyshev", iv, multiplier=multiplier, section="poly")


def abs_poly(
    backend: Backend, ct: Ciphertext, degree: int = 8, bound: float = 1.0,
    *, section: str | None = None,
) -> Ciphertext:
    """Approximately ``|x|`` for ``|x| <= bound`` by an even polynomial of ``degree`` (evaluated as
    a polynomial in ``x**2``). Depth :func:`abs_poly_depth`."""
    depth = abs_poly_depth(degree, bound)
    backend.require_levels(ct, depth, "abs_poly")
    _input_range_check(backend, ct, bound, "abs_poly")
    with backend.counter.section(section or "abs_poly"):
        return _abs_core(backend, ct, degree, bound, None)


# -- max(a, b) ------------------------------------------------------------------------------------
def _max_params(method: str, iterations: int | None, degree: int | None) -> tuple[int | None, int | None]:
    if method == "sqrt":
        it = 3 if iterations is None else int(iterations)
        _check_iters(it)
        return it, None
    if method == "poly":
        deg = 8 if degree is None else int(degree)
        _abs_m(deg)
        return None, deg
    raise ParameterError(f"method must be 'sqrt' or 'poly', got {method!r}")


def approx_max_depth(method: str = "sqrt", iterations: int | None = None, degree: int | None = None,
                     bound: float = 1.0) -> int:
    """Levels :func:`approx_max` consumes (inputs at the same level)."""
    it, deg = _max_params(method, iterations, degree)
    if method == "sqrt":
        pre = 0 if _wilkes_folds(1.0 / (4.0 * bound**2)) else 1
        return pre + 1 + _wilkes_depth(it)
    return abs_poly_depth(deg, 2.0 * bound)


def approx_max_ref(a: Any, b: Any, method: str = "sqrt", iterations: int | None = None,
                   degree: int | None = None, bound: float = 1.0, on_range: str = "warn") -> Any:
    """Plaintext twin of :func:`approx_max`: ``(a + b)/2 + |a - b|/2`` with ``|a - b|/2`` from
    ``bound * sqrt_d(((a - b)/(2 bound))**2)`` or ``abs_poly(a - b, degree, 2 bound) / 2``."""
    it, deg = _max_params(method, iterations, degree)
    check_range(a, -bound, bound, "approx_max (a)", on_range)
    check_range(b, -bound, bound, "approx_max (b)", on_range)
    u = a - b
    if method == "sqrt":
        half = _wilkes_ref(u * u, it, 1.0 / (4.0 * bound**2), float(bound))
    else:
        half = abs_poly_ref(u, deg, 2.0 * bound, on_range="ignore") * 0.5
    return (a + b) * 0.5 + half


def _max_core(
    backend: Backend, a: Ciphertext, b: Ciphertext, method: str, it: int | None, deg: int | None,
    bound: float, multiplier: Any,
) -> Ciphertext:
    """multiplier * max(a, b), with the magnitude bound of the result (see ``_untracked``)."""
    out_bound = None
    if a.bound is not None and b.bound is not None:
        reach = np.maximum(a.bound, b.bound)
        if float(reach.max()) <= bound * (1 + 1e-6):
            m = 1.0 if multiplier is None else np.abs(np.asarray(multiplier, dtype=np.complex128))
            if np.ndim(m) == 1:
                mm = np.zeros(backend.slots)
                mm[: np.size(m)] = m
                m = mm
            # max(a, b) = (a + b)/2 + |a - b|/2 with |.| approximated (error up to ~bound)
            out_bound = (reach + bound) * 1.05 * m + 1e-9
        else:
            backend.range_stats["bound_lost"] += 1
    out = _max_core_untracked(backend, a.replace(bound=None), b.replace(bound=None), method, it,
                              deg, bound, multiplier)
    return out.replace(bound=out_bound)


def _max_core_untracked(
    backend: Backend, a: Ciphertext, b: Ciphertext, method: str, it: int | None, deg: int | None,
    bound: float, multiplier: Any,
) -> Ciphertext:
    """multiplier * max(a, b) (multiplier: scalar or slot vector, folded)."""
    m = 1.0 if multiplier is None else multiplier
    if method == "sqrt" and not _wilkes_folds(1.0 / (4.0 * bound**2)):
        a, b = backend.mul_plain(a, 1.0 / bound), backend.mul_plain(b, 1.0 / bound)
        m, bound = m * bound, 1.0
    u = backend.sub(a, b)
    if method == "sqrt":
        fw = _CtOps(backend).fac(u.level)
        W = backend.square(u)  # fw * u^2
        half = _wilkes(_CtOps(backend), W, it, 1.0 / (4.0 * bound**2 * fw), m * bound)
    else:
        half = _abs_core(backend, u, deg, 2.0 * bound, m * 0.5)
    mean = backend.mul_plain(backend.add(a, b), m * 0.5)
    return backend.add(half, mean)


def approx_max(
    backend: Backend, a: Ciphertext, b: Ciphertext, method: str = "sqrt",
    iterations: int | None = None, degree: int | None = None, bound: float = 1.0,
    *, section: str | None = None,
) -> Ciphertext:
    """Slot-wise approximate ``max(a, b)`` for ``|a|, |b| <= bound``: ``(a + b)/2 + |a - b|/2``,
    ``|a - b|/2`` by the Wilkes square root of ``((a - b)/(2 bound))**2`` with ``iterations``
    (default 3; the result never exceeds the true max) or by :func:`abs_poly` of ``degree``
    (default 8). Depth :func:`approx_max_depth`."""
    it, deg = _max_params(method, iterations, degree)
    if not (bound > 0 and math.isfinite(bound)):
        raise ParameterError(f"bound must be positive and finite, got {bound}")
    depth = approx_max_depth(method, it, deg, bound)
    backend.require_levels(a, depth, "approx_max")
    backend.require_levels(b, depth, "approx_max")
    target = min(a.level, b.level) - depth
    with backend.counter.section(section or "approx_max"):
        out = _max_core(backend, a, b, method, it, deg, bound, None)
        if out.level > target:
            out = backend.mod_switch_to(out, target)
    return out
