"""Sign and ReLU: Cheon et al.'s composite odd polynomials (:func:`sign_composite`,
:func:`relu_composite`) and one minimax polynomial for ReLU (:func:`relu_poly`)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.polynomial import polynomial as _P

from ....errors import ParameterError
from ...backend import Backend, Ciphertext
from .evaluate import (
    _L,
    _CtOps,
    _folds,
    _horner,
    _input_range_check,
    poly_cost,
    poly_depth,
    poly_eval,
    poly_eval_ref,
)
from .fit import _trim, cheb_to_power, power_to_cheb
from .maxabs import _abs_sqrt_cheb
from .range_check import check_range


# -- Cheon et al.'s composite sign ------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def compg_f(n: int) -> np.ndarray:
    """Power coefficients of ``f_n(x) = sum_{i<=n} 4**-i C(2i, i) x (1 - x**2)**i`` (degree 2n+1)."""
    n = int(n)
    if n < 1:
        raise ParameterError(f"f_n needs n >= 1, got {n}")
    out = np.zeros(2 * n + 2)
    for i in range(n + 1):
        coef = math.comb(2 * i, i) / 4.0**i
        term = _P.polymul([0.0, 1.0], _P.polypow([1.0, 0.0, -1.0], i))
        out[: len(term)] += coef * term
    return out


#: Cheon-Kim-Kim 2020, section 3.5 (numerators over 2**10), coefficients of x, x^3, ...
_G_NUM = {
    1: (2126, -1359),
    2: (3334, -6108, 3796),
    3: (4589, -16577, 25614, -12860),
    4: (5850, -34974, 97015, -113492, 46623),
}


def compg_g(n: int) -> np.ndarray:
    """Power coefficients of the paper's ``g_n`` (degree 2n+1, n = 1..4)."""
    n = int(n)
    if n not in _G_NUM:
        raise ParameterError(f"g_n is tabulated for n = 1..4, got {n}")
    out = np.zeros(2 * n + 2)
    out[1::2] = np.array(_G_NUM[n], dtype=float) / 2.0**10
    return out


def _grid01(gap: float = 0.0) -> np.ndarray:
    lo = max(gap, 1e-7)
    return np.unique(np.concatenate([np.geomspace(lo, 1.0, 3000), np.linspace(lo, 1.0, 3001)]))


def _compose_np(polys: Sequence[np.ndarray], x: np.ndarray) -> np.ndarray:
    for p in polys:
        x = _P.polyval(x, p)
    return x


def _chain_cost(polys: Sequence[np.ndarray]) -> tuple[int, int]:
    depth = sum(_L(len(p) - 1) for p in polys)
    mults = sum(poly_cost(tuple(p))["ct_mults"] for p in polys)
    return depth, mults


def _search(
    family: str, ok: Callable[[np.ndarray], bool], n: int | None, max_total: int = 24
) -> list[np.ndarray]:
    ns = [int(n)] if n is not None else [1, 2, 3, 4]
    best: tuple[tuple[int, int, int], list[np.ndarray]] | None = None
    for nn in ns:
        f = compg_f(nn)
        g = compg_g(nn) if family == "compg" else None
        dg_range = range(16) if g is not None else range(1)
        for dg in dg_range:
            for df in range(max_total + 1):
                if dg + df == 0 or dg + df > max_total:
                    continue
                polys = [g] * dg + [f] * df
                if ok(polys):
                    depth, mults = _chain_cost(polys)
                    key = (depth, mults, dg + df)
                    if best is None or key < best[0]:
                        best = (key, polys)
                    break  # more f's only cost more
    if best is None:
        raise ParameterError(
            f"no {family} composition of <= {max_total} polynomials reaches that precision; "
            "lower precision_bits or widen the gap"
        )
    return [p.copy() for p in best[1]]


@functools.lru_cache(maxsize=128)
def _sign_plan_cached(alpha: float, gap: float, family: str, n: int | None) -> tuple[tuple[float, ...], ...]:
    grid = _grid01(gap)
    tol = 2.0**-alpha

    def ok(polys: list[np.ndarray]) -> bool:
        y = _compose_np(polys, grid)
        return bool(np.max(np.abs(1.0 - y)) <= tol)

    return tuple(tuple(p) for p in _search(family, ok, n))


def sign_plan(
    alpha: float, gap: float, family: str = "compg", n: int | None = None
) -> list[np.ndarray]:
    """The odd polynomials (power coefficients, applied first to last) whose composition ``s``
    satisfies ``|s(x) - sign(x)| <= 2**-alpha`` for ``gap <= |x| <= 1`` (checked on a dense grid),
    minimising depth then ciphertext products. ``family="compg"``: ``g_n`` then ``f_n``;
    ``"f"``: ``f_n`` only; ``n`` fixes the degree ``2n+1`` (else searched over 1..4)."""
    if family not in ("compg", "f"):
        raise ParameterError(f"family must be 'compg' or 'f', got {family!r}")
    if not 0 < gap < 1:
        raise ParameterError(f"gap must be in (0, 1), got {gap}")
    return [np.array(p) for p in _sign_plan_cached(float(alpha), float(gap), family, n)]


@functools.lru_cache(maxsize=128)
def _relu_plan_cached(bits: float, family: str, n: int | None) -> tuple[tuple[float, ...], ...]:
    grid = np.concatenate([[0.0], _grid01(0.0)])
    tol = 2.0**-bits

    def ok(polys: list[np.ndarray]) -> bool:
        s = _compose_np(polys, grid)
        return bool(np.max(np.abs(grid * (1.0 - s) / 2.0)) <= tol)

    return tuple(tuple(p) for p in _search(family, ok, n))


def relu_plan(precision_bits: float = 8, family: str = "compg", n: int | None = None) -> list[np.ndarray]:
    """The sign polynomials :func:`relu_composite` composes: the cheapest chain with
    ``|x (1 + s(x))/2 - relu(x)| <= 2**-precision_bits`` on ``[-1, 1]`` (dense grid; the error is
    odd-symmetric so ``[0, 1]`` suffices)."""
    if family not in ("compg", "f"):
        raise ParameterError(f"family must be 'compg' or 'f', got {family!r}")
    if not 0 < precision_bits <= 30:
        raise ParameterError(f"precision_bits must be in (0, 30], got {precision_bits}")
    return [np.array(p) for p in _relu_plan_cached(float(precision_bits), family, n)]


def _first_poly_cheb(p: np.ndarray, scale: float) -> tuple[np.ndarray, tuple[float, float]]:
    """``p(x / scale)`` as Chebyshev coefficients on ``[-scale, scale]``."""
    return power_to_cheb(p), (-float(scale), float(scale))


def _eval_chain(
    backend: Backend, ct: Ciphertext, polys: Sequence[np.ndarray], scale: float,
    last_affine: tuple[float, float] = (1.0, 0.0), multiplier: Any = None,
) -> Ciphertext:
    """``m * (alpha * s + beta)`` for ``s`` the composition on ``x / scale`` (all folded)."""
    alpha, beta = last_affine
    z = ct
    for k, p in enumerate(polys):
        p = np.asarray(p, dtype=float)
        m = None
        if k == len(polys) - 1:
            p = alpha * p
            p[0] += beta
            m = multiplier
        if k == 0:
            c, iv = _first_poly_cheb(p, scale)
            z = poly_eval(backend, z, c, "chebyshev", iv, multiplier=m, section=f"poly{k}")
        else:
            z = poly_eval(backend, z, p, "power", multiplier=m, section=f"poly{k}")
    return z


def _chain_depth(polys: Sequence[np.ndarray], scale: float) -> int:
    d0 = len(polys[0]) - 1
    first = _L(d0) + (0 if _folds(float(scale), d0) else 1)
    return first + sum(_L(len(p) - 1) for p in polys[1:])


def sign_composite_depth(alpha: float, gap: float, bound: float = 1.0, family: str = "compg",
                         n: int | None = None) -> int:
    """Levels :func:`sign_composite` consumes."""
    return _chain_depth(sign_plan(alpha, gap, family, n), bound)


def sign_composite_ref(x: Any, alpha: float, gap: float, bound: float = 1.0, family: str = "compg",
                       n: int | None = None, on_range: str = "warn") -> Any:
    """Plaintext twin of :func:`sign_composite`."""
    check_range(x, -bound, bound, "sign_composite", on_range)
    z = x * (1.0 / bound)
    for p in sign_plan(alpha, gap, family, n):
        z = _horner(z, p)
    return z


def sign_composite(
    backend: Backend, ct: Ciphertext, alpha: float, gap: float, bound: float = 1.0,
    family: str = "compg", n: int | None = None, *, section: str | None = None,
) -> Ciphertext:
    """Approximately ``sign(x)`` for ``gap * bound <= |x| <= bound``: error ``<= 2**-alpha`` there,
    values in about ``[-1, 1]`` for ``|x| < gap * bound``. Depth :func:`sign_composite_depth`."""
    polys = sign_plan(alpha, gap, family, n)
    backend.require_levels(ct, _chain_depth(polys, bound), "sign_composite")
    _input_range_check(backend, ct, bound, "sign_composite")
    with backend.counter.section(section or "sign_composite"):
        return _eval_chain(backend, ct, polys, bound)


def relu_composite_depth(scale: float = 1.0, precision_bits: float = 8, family: str = "compg",
                         n: int | None = None) -> int:
    """Levels :func:`relu_composite` consumes (the sign chain plus one product)."""
    return _chain_depth(relu_plan(precision_bits, family, n), scale) + 1


def relu_composite_ref(x: Any, scale: float, precision_bits: float = 8, family: str = "compg",
                       n: int | None = None, on_range: str = "warn") -> Any:
    """Plaintext twin of :func:`relu_composite` (numpy or torch)."""
    check_range(x, -scale, scale, "relu_composite", on_range)
    polys = relu_plan(precision_bits, family, n)
    z = x * (1.0 / scale)
    for p in polys[:-1]:
        z = _horner(z, p)
    last = 0.5 * np.asarray(polys[-1], dtype=float)
    last[0] += 0.5
    return x * _horner(z, last)


def relu_composite(
    backend: Backend, ct: Ciphertext, scale: float, precision_bits: float = 8,
    family: str = "compg", n: int | None = None, *, section: str | None = None,
) -> Ciphertext:
    """Approximately ``max(x, 0)`` for ``|x| <= scale``: ``x * (1 + s(x / scale)) / 2`` with ``s``
    the composite sign of :func:`relu_plan`; ``|error| <= scale * 2**-precision_bits`` on the range
    (plus CKKS noise). ``scale`` is the paper's per-layer ``max(|max|, |min|)`` (see
    :func:`calibrate_bound`); the division by it is folded into the first polynomial when
    ``max(scale, 1/scale)**deg <= 64`` (else one level). Depth :func:`relu_composite_depth`."""
    if not (scale > 0 and math.isfinite(scale)):
        raise ParameterError(f"scale must be positive and finite, got {scale}")
    polys = relu_plan(precision_bits, family, n)
    _input_range_check(backend, ct, scale, "relu_composite")
    depth = _chain_depth(polys, scale) + 1
    backend.require_levels(ct, depth, "relu_composite")
    with backend.counter.section(section or "relu_composite"):
        # the s/q factor of the final product is folded into the last polynomial
        f = _CtOps(backend).fac(ct.level - (depth - 1))
        step = _eval_chain(backend, ct, polys, scale, last_affine=(0.5, 0.5), multiplier=1.0 / f)
        out = backend.mul(ct, step)
    return out


# -- a single fitted polynomial for ReLU ----------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _relu_cheb_unit(degree: int) -> tuple[float, ...]:
    """Chebyshev coefficients on [-1, 1] of the minimax fit of ReLU of ``degree``.

    ``relu(x) = x/2 + |x|/2``: the best uniform fit is ``x/2`` plus half the best even fit of
    ``|x|``, which is ``q(x**2)`` with ``q`` the minimax fit of ``sqrt`` on ``[0, 1]`` of degree
    ``degree // 2``; as ``T_k(2x**2 - 1) = T_{2k}(x)``, ``q``'s Chebyshev coefficients on
    ``[0, 1]`` are those of ``T_{2k}(x)``. (An odd degree adds nothing to the even one below.)
    """
    e = np.zeros(int(degree) + 1)
    q = _abs_sqrt_cheb(int(degree) // 2)
    e[0 : 2 * len(q) : 2] = 0.5 * np.asarray(q)
    e[1] += 0.5
    return tuple(e)


def relu_poly_coeffs(degree: int, bound: float = 1.0) -> np.ndarray:
    """Power coefficients (lowest first) of the minimax degree-``degree`` fit of ReLU on
    ``[-bound, bound]`` (``bound * p1(x / bound)`` with ``p1`` the fit on ``[-1, 1]``: ReLU is
    positively homogeneous, so this is the minimax fit on the wider range too)."""
    degree = int(degree)
    if degree < 1:
        raise ParameterError(f"relu_poly needs degree >= 1, got {degree}")
    if not (bound > 0 and math.isfinite(bound)):
        raise ParameterError(f"bound must be positive and finite, got {bound}")
    p1 = np.zeros(degree + 1)
    pw = cheb_to_power(_relu_cheb_unit(degree))[: degree + 1]
    p1[: len(pw)] = pw
    return p1 * float(bound) ** (1 - np.arange(degree + 1))


def _relu_cheb(degree: int, bound: float) -> np.ndarray:
    return float(bound) * np.asarray(_relu_cheb_unit(int(degree)))


def relu_poly_depth(degree: int, bound: float = 1.0) -> int:
    """Levels :func:`relu_poly` consumes (``ceil(log2(d + 1))`` for the effective degree ``d``,
    the largest even number <= ``degree``, or 1; plus one if ``bound`` does not fold)."""
    eff = len(_trim(_relu_cheb(degree, bound))) - 1
    return poly_depth(eff, "chebyshev", (-bound, bound))


def relu_poly_ref(x: Any, degree: int, bound: float = 1.0, on_range: str = "warn") -> Any:
    """Plaintext twin of :func:`relu_poly`: the polynomial ``relu_poly_coeffs(degree, bound)``
    (evaluated in the Chebyshev form for accuracy; the same polynomial)."""
    check_range(x, -bound, bound, "relu_poly", on_range)
    return poly_eval_ref(x, _relu_cheb(degree, bound), "chebyshev", (-bound, bound))


def relu_poly(
    backend: Backend, ct: Ciphertext, degree: int, bound: float = 1.0, *, section: str | None = None
) -> Ciphertext:
    """The polynomial ``relu_poly_coeffs(degree, bound)`` applied slot-wise (minimax fit of ReLU
    on ``[-bound, bound]``); evaluated in its Chebyshev form. Depth :func:`relu_poly_depth`."""
    relu_poly_coeffs(degree, bound)  # validates
    _input_range_check(backend, ct, bound, "relu_poly")
    return poly_eval(backend, ct, _relu_cheb(degree, bound), "chebyshev", (-bound, bound),
                     section=section or "relu_poly")
