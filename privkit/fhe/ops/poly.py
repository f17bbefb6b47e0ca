"""Encrypted polynomials and the non-linearities built on them: ReLU, sign, sqrt, |x|, max.

Every operator here is a polynomial (or a composition of polynomials) of its input, evaluated with
the fewest levels our backends allow, and each has a plaintext twin (``*_ref``) computing the same
polynomial with nothing but ``+``, ``-``, ``*`` and Python floats, so the twins run unchanged on
numpy arrays **and torch tensors** (autograd included): a torch layer calling a twin trains on
exactly the approximation that the encrypted operator computes.

Polynomial evaluation (:func:`poly_eval`)
    Power basis, or Chebyshev basis on an interval ``[a, b]``. Baby-step giant-step on top of a
    depth-optimal recursive split ``p = q * P_g + r`` (``g`` a power of two): a polynomial of
    degree ``d`` costs exactly ``ceil(log2(d + 1))`` levels and ``O(sqrt d)`` ciphertext products
    (every scalar is multiplied in at a point where a level is free). The affine map of a
    Chebyshev interval into ``[-1, 1]`` is folded into the basis (``P_i = r**i T_i((x - c)/r)``
    with ``c, r`` the centre and half-width: a free shift and integer/plaintext constants only),
    provided ``max(r, 1/r)**d <= 2**6`` so intermediate values stay small; otherwise the input is
    first multiplied by ``1/r`` (one more level). :func:`poly_depth` states the levels for given
    settings and :func:`poly_cost` the ciphertext products; the result always leaves exactly
    :func:`poly_depth` levels below its input (lower-depth paths are switched down, for free), so
    a compiler can plan levels from settings alone.

Fitting (:func:`chebyshev_fit`)
    Chebyshev interpolation, least squares, or minimax (Lawson's iteratively reweighted least
    squares on a dense grid, which converges to the best uniform approximation).

Sign and ReLU
    :func:`sign_composite` composes Cheon et al.'s odd polynomials (*Efficient homomorphic
    comparison methods with optimal complexity*, Asiacrypt 2020): ``g_n`` (fast growth near 0)
    then ``f_n`` (polishing near +-1), the numbers of compositions chosen from the target
    precision ``2**-alpha`` and the input gap ``eps`` (``family="compg"``); ``family="f"`` composes
    ``f_n`` only (the simple odd-polynomial option). :func:`relu_composite` is
    ``x * (1 + sign(x / scale)) / 2`` with compositions chosen so that
    ``|relu_composite(x) - relu(x)| <= scale * 2**-precision_bits`` on ``[-scale, scale]``;
    :func:`relu_poly` is one polynomial fitted (minimax) to ReLU on ``[-bound, bound]``.

Square root, |x| and max
    :func:`sqrt` is Cheon et al. 2019's Wilkes iteration (``a <- a (1 - c)``,
    ``c <- c**2 (c - 3/2)``, ``c = b/2``) with ``d`` iterations on ``[0, bound]``;
    :func:`abs_poly` a fitted even polynomial; :func:`approx_max` is
    ``(a + b)/2 + |a - b|/2`` with either.

Depths (levels consumed; ``L(d) = ceil(log2(d + 1))``)

=========================================  ===================================================
``poly_eval`` degree ``d``                 ``L(d)`` (+1 when a Chebyshev interval is not folded)
``relu_poly(degree, bound)``               ``L(degree)`` (+1 unless ``bound**degree <= 64``)
``relu_composite(scale, p)``               ``sum L(deg f_i) + 1`` (+1 unless scale folds)
``sqrt(d, bound)``                         ``2`` for d = 1, else ``2d - 1`` (+1 if bound > 8)
``approx_max(method="sqrt", d)``           ``3`` for d = 1, else ``2d`` (+1 if bound > sqrt 2)
``approx_max(method="poly", degree)``      ``L(degree)`` (+1 if the fold rule fails)
=========================================  ===================================================

Range contract: every approximation is valid on a stated range only (``|x| <= scale`` /
``bound``; ``[0, bound]`` for ``sqrt``). Outside it the polynomials diverge quickly. Encrypted
inputs cannot be checked, so the plaintext twins check (``on_range="warn"`` by default, or
``"raise"`` / ``"ignore"``) and :func:`calibrate_bound` measures the range on training data.

>>> import numpy as np
>>> from privkit.fhe import KeySet
>>> keys = KeySet.generate("n16384", backend="sim")
>>> x = np.linspace(-1, 1, 9)
>>> y = keys.decrypt(relu_poly(keys.backend, keys.encrypt(x), 4, 1.0))
>>> bool(np.allclose(y, relu_poly_ref(x, 4, 1.0), atol=1e-6))
True
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.polynomial import chebyshev as _C
from numpy.polynomial import polynomial as _P

from ...errors import (  # RangeWarning re-exported
    InputRangeWarning,
    ParameterError,
    RangeWarning,
    ShapeError,
)
from ..backend import Backend, Ciphertext

__all__ = [
    "RangeWarning",
    "abs_poly",
    "abs_poly_coeffs",
    "abs_poly_depth",
    "abs_poly_ref",
    "approx_max",
    "approx_max_depth",
    "approx_max_ref",
    "calibrate_bound",
    "cheb_to_power",
    "chebyshev_fit",
    "check_range",
    "compg_f",
    "compg_g",
    "poly_cost",
    "poly_depth",
    "poly_eval",
    "poly_eval_ref",
    "power_to_cheb",
    "relu_composite",
    "relu_composite_depth",
    "relu_composite_ref",
    "relu_plan",
    "relu_poly",
    "relu_poly_coeffs",
    "relu_poly_depth",
    "relu_poly_ref",
    "sign_composite",
    "sign_composite_depth",
    "sign_composite_ref",
    "sign_plan",
    "sqrt",
    "sqrt_depth",
    "sqrt_ref",
]

#: fold an affine map / scale into the basis only while max(r, 1/r)**degree stays below this
FOLD_LIMIT = 2.0**6


# -- range checks ------------------------------------------------------------------------------
def _absmax(x: Any) -> float:
    """max |x| for numpy arrays, torch tensors and scalars (0 for empty)."""
    if isinstance(x, (int, float, complex)):
        return abs(x)
    if getattr(x, "numel", None) is not None:  # torch
        return float(x.detach().abs().max()) if x.numel() else 0.0
    a = np.asarray(x)
    return float(np.max(np.abs(a))) if a.size else 0.0


def _minmax(x: Any) -> tuple[float, float]:
    if getattr(x, "numel", None) is not None:  # torch
        if not x.numel():
            return 0.0, 0.0
        d = x.detach()
        return float(d.min()), float(d.max())
    a = np.asarray(x, dtype=float)
    return (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)


def check_range(
    x: Any, lo: float, hi: float, what: str, on_range: str = "warn", rtol: float = 1e-9
) -> None:
    """Warn (``on_range="warn"``), raise (``"raise"``) or do nothing (``"ignore"``) when ``x``
    leaves ``[lo, hi]`` (with a relative slack ``rtol``)."""
    if on_range == "ignore":
        return
    if on_range not in ("warn", "raise"):
        raise ParameterError(f"on_range must be 'warn', 'raise' or 'ignore', got {on_range!r}")
    mn, mx = _minmax(x)
    slack = rtol * max(abs(lo), abs(hi), 1.0)
    if mn >= lo - slack and mx <= hi + slack:
        return
    msg = (
        f"{what}: inputs span [{mn:.4g}, {mx:.4g}], outside the calibrated range [{lo:.4g}, {hi:.4g}]; "
        "the polynomial approximation diverges there (encrypted results would be garbage). "
        "Recalibrate the bound/scale on representative data (calibrate_bound) or clip the inputs"
    )
    if on_range == "raise":
        raise ParameterError(msg)
    warnings.warn(msg, RangeWarning, stacklevel=3)


def calibrate_bound(x: Any, margin: float = 1.0) -> float:
    """The paper's per-layer scale: ``max(|max x|, |min x|) * margin`` (at least a tiny positive)."""
    return max(_absmax(x) * float(margin), 1e-12)


# -- fitting and basis conversion ----------------------------------------------------------------
def _interval(interval: Sequence[float]) -> tuple[float, float]:
    a, b = (float(v) for v in interval)
    if not (math.isfinite(a) and math.isfinite(b)) or not a < b:
        raise ParameterError(f"interval must be finite with a < b, got {tuple(interval)}")
    return a, b


def chebyshev_fit(
    f: Callable[[np.ndarray], np.ndarray],
    degree: int,
    interval: Sequence[float] = (-1.0, 1.0),
    method: str = "minimax",
    parity: str | None = None,
    grid: int = 2001,
    iterations: int = 400,
) -> np.ndarray:
    """Chebyshev coefficients (on ``interval``) of a degree-``degree`` approximation of ``f``.

    ``method``: ``"interp"`` (interpolation at Chebyshev nodes, near-minimax for smooth ``f``),
    ``"lsq"`` (least squares on a uniform grid) or ``"minimax"`` (Lawson's algorithm on a dense
    grid: the best uniform approximation up to the grid). ``parity="odd"|"even"`` zeroes the other
    coefficients exactly (for odd/even ``f`` on a symmetric interval). Deterministic.
    """
    degree = int(degree)
    if degree < 0:
        raise ParameterError(f"degree must be >= 0, got {degree}")
    a, b = _interval(interval)
    keep = np.ones(degree + 1, dtype=bool)
    if parity == "odd":
        keep[0::2] = False
    elif parity == "even":
        keep[1::2] = False
    elif parity is not None:
        raise ParameterError(f"parity must be None, 'odd' or 'even', got {parity!r}")
    if method == "interp":
        nodes = np.cos(np.pi * (np.arange(degree + 1) + 0.5) / (degree + 1))
        c = _C.chebfit(nodes, f((nodes * (b - a) + a + b) / 2), degree)
        return np.where(keep, c, 0.0)
    if method not in ("lsq", "minimax"):
        raise ParameterError(f"method must be 'interp', 'lsq' or 'minimax', got {method!r}")
    # grid denser near the ends (Chebyshev-like) and uniform, merged
    t = np.unique(np.concatenate([np.linspace(-1, 1, grid), np.cos(np.linspace(0, np.pi, grid))]))
    V = np.ascontiguousarray(_C.chebvander(t, degree)[:, keep])
    y = f((t * (b - a) + a + b) / 2)
    w = np.ones_like(t)
    best, best_err, since = None, np.inf, 0
    for _ in range(1 if method == "lsq" else iterations):
        if since >= 25:  # converged: no 1e-7 relative improvement for 25 rounds
            break
        Vw = V * w[:, None]
        try:
            sol = np.linalg.solve(Vw.T @ V, Vw.T @ y)
        except np.linalg.LinAlgError:
            sol = np.linalg.lstsq(V * np.sqrt(w)[:, None], y * np.sqrt(w), rcond=None)[0]
        err = np.abs(V @ sol - y)
        m = float(err.max())
        since = 0 if m < best_err * (1 - 1e-7) else since + 1
        if m < best_err:
            best, best_err = sol, m
        w = w * err
        w = np.maximum(w / w.max(), 1e-20)  # no denormals (they make the products crawl)
    c = np.zeros(degree + 1)
    c[keep] = best
    return c


def cheb_to_power(c: Sequence[float], interval: Sequence[float] = (-1.0, 1.0)) -> np.ndarray:
    """Power coefficients in ``x`` (lowest first) of ``sum c_i T_i((2x - a - b)/(b - a))``."""
    a, b = _interval(interval)
    p = _C.cheb2poly(np.asarray(c, dtype=float))  # in y
    # substitute y = alpha x + beta
    alpha, beta = 2.0 / (b - a), -(a + b) / (b - a)
    out = np.zeros(1)
    lin = np.array([beta, alpha])
    powk = np.ones(1)
    for k, pk in enumerate(p):
        if k:
            powk = _P.polymul(powk, lin)
        out = _P.polyadd(out, pk * powk)
    return np.asarray(out, dtype=float)


def power_to_cheb(p: Sequence[float], interval: Sequence[float] = (-1.0, 1.0)) -> np.ndarray:
    """Chebyshev coefficients on ``interval`` of the power-basis polynomial ``p`` (in ``x``)."""
    a, b = _interval(interval)
    # x = (r y + c): substitute into p to get a power series in y, then convert
    c0, r = (a + b) / 2, (b - a) / 2
    out = np.zeros(1)
    lin = np.array([c0, r])
    powk = np.ones(1)
    for k, pk in enumerate(np.asarray(p, dtype=float)):
        if k:
            powk = _P.polymul(powk, lin)
        out = _P.polyadd(out, pk * powk)
    return _C.poly2cheb(out)


def _trim(c: Sequence[float]) -> np.ndarray:
    c = np.asarray(c, dtype=float).ravel()
    if c.size == 0:
        raise ParameterError("a polynomial needs at least one coefficient")
    if not np.all(np.isfinite(c)):
        raise ParameterError("polynomial coefficients must be finite")
    nz = np.flatnonzero(c)
    return c[: int(nz[-1]) + 1] if nz.size else c[:1]


# -- plaintext evaluation (numpy and torch) -----------------------------------------------------
def _horner(x: Any, coeffs: Sequence[float]) -> Any:
    acc = None
    for c in reversed([float(v) for v in coeffs]):
        acc = c + 0.0 * x if acc is None else acc * x + c
    return acc


def _clenshaw(y: Any, coeffs: Sequence[float]) -> Any:
    c = [float(v) for v in coeffs]
    if len(c) == 1:
        return c[0] + 0.0 * y
    b1 = 0.0 * y
    b2 = 0.0 * y
    for ck in reversed(c[1:]):
        b1, b2 = 2.0 * y * b1 - b2 + ck, b1
    return y * b1 - b2 + c[0]


def poly_eval_ref(
    x: Any,
    coeffs: Sequence[float],
    basis: str = "power",
    interval: Sequence[float] = (-1.0, 1.0),
    on_range: str = "ignore",
) -> Any:
    """Plaintext twin of :func:`poly_eval` (numpy arrays or torch tensors)."""
    c = _trim(coeffs)
    a, b = _interval(interval)
    check_range(x, a, b, "poly_eval", on_range)
    if basis == "power":
        return _horner(x, c)
    if basis == "chebyshev":
        y = (x - (a + b) / 2) * (2.0 / (b - a)) if (a, b) != (-1.0, 1.0) else x
        return _clenshaw(y, c)
    raise ParameterError(f"basis must be 'power' or 'chebyshev', got {basis!r}")


# -- the evaluator (shared by the encrypted path and the cost model) ----------------------------
def _L(degree: int) -> int:
    return 0 if degree <= 0 else math.ceil(math.log2(degree + 1))


def _ilog2_ceil(i: int) -> int:
    return 0 if i <= 1 else (i - 1).bit_length()


def _folds(r: float, degree: int) -> bool:
    """Whether the half-width ``r`` can be folded into the basis for a degree-``degree`` poly."""
    if degree <= 1 or r == 1.0:
        return True
    # slack 1e-3 (in log2 units): a ciphertext product's s/q factor (up to 2e-5) moves a half-width
    # computed at run time (abs_poly's interval after the square) off the one the depth was
    # planned with; on the boundary (r**d == FOLD_LIMIT) both must take the same branch
    return abs(math.log2(r)) * degree <= math.log2(FOLD_LIMIT) + 1e-3


class _Sym:
    """A symbolic value for the cost model: its depth below the input (level = -depth)."""

    __slots__ = ("depth",)

    def __init__(self, depth: int) -> None:
        self.depth = depth

    @property
    def level(self) -> int:
        return -self.depth


class _CountOps:
    """Arithmetic on :class:`_Sym` values counting operations (the dry run of the evaluators)."""

    def __init__(self) -> None:
        self.ct_mults = 0
        self.pt_mults = 0
        self.adds = 0

    def fac(self, level: int) -> float:
        return 1.0

    def mul(self, a: _Sym, b: _Sym, level: int | None = None) -> _Sym:
        self.ct_mults += 1
        return _Sym(max(a.depth, b.depth, -level if level is not None else 0) + 1)

    def mul_const(self, a: _Sym, c: Any) -> _Sym:
        self.pt_mults += 1
        return _Sym(a.depth if _is_free_scalar(c) else a.depth + 1)

    def add(self, a: _Sym, b: _Sym) -> _Sym:
        self.adds += 1
        return _Sym(max(a.depth, b.depth))

    def add_const(self, a: _Sym, c: Any) -> _Sym:
        self.adds += 1
        return a


class _CtOps:
    """The same arithmetic on ciphertexts. ``fac(level)`` is the factor ``s/q`` that a ciphertext
    product of operands at ``level`` leaves on its value (see :mod:`privkit.fhe.backend`); the
    evaluators fold its inverse into constants so that results are exact polynomials."""

    def __init__(self, backend: Backend) -> None:
        self.be = backend

    def fac(self, level: int) -> float:
        p = self.be.params
        return p.scale / float(p.primes[level])

    def mul(self, a: Ciphertext, b: Ciphertext, level: int | None = None) -> Ciphertext:
        be = self.be
        if level is not None:
            a, b = be.mod_switch_to(a, level), (a if b is a else be.mod_switch_to(b, level))
        return be.square(a) if a is b or (a.data is b.data) else be.mul(a, b)

    def mul_const(self, a: Ciphertext, c: Any) -> Ciphertext:
        return self.be.mul_plain(a, c)

    def add(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        return self.be.add(a, b)

    def add_const(self, a: Ciphertext, c: Any) -> Ciphertext:
        return self.be.add_plain(a, c)


def _is_free_scalar(c: Any) -> bool:
    if np.ndim(c) != 0:
        return False
    v = complex(c)
    return v.imag == 0 and float(v.real).is_integer() and abs(v.real) < 2**20


class _Evaluator:
    """Evaluates ``want * sum e_i U_i(x)`` for the basis ``U`` (power, or scaled Chebyshev
    ``U_i = r**i T_i(x/r)`` after the shift), ``want`` a scalar or slot vector.

    Each basis element is held as ``P_i = s_i U_i`` with a known scale ``s_i`` (the ``s/q``
    factors of the products that made it); constants absorb the scales, so the value computed is
    exactly the polynomial (up to CKKS noise). Products of the giant-step split happen at the
    fixed level ``level(x) - (budget - 1)``, so their factors are known before the operands.
    """

    def __init__(self, ops: Any, x: Any, basis: str, r: float, baby: int) -> None:
        self.ops = ops
        self.basis = basis
        self.r = float(r)
        self.baby = baby
        self.lvl0 = x.level
        self._P: dict[int, tuple[Any, float]] = {1: (x, 1.0)}

    def P(self, i: int) -> tuple[Any, float]:
        """``(P_i, s_i)`` with ``P_i = s_i U_i`` at depth ``ceil(log2 i)``."""
        if i in self._P:
            return self._P[i]
        ops = self.ops
        hi = 1 << (_ilog2_ceil(i) - 1)
        lo = i - hi
        (ph, sh), (pl, sl) = self.P(hi), self.P(lo)
        f = ops.fac(min(ph.level, pl.level))
        prod = ops.mul(ph, pl)
        s = f * sh * sl
        if self.basis == "power":
            out = (prod, s)
        else:
            prod = ops.mul_const(prod, 2)  # = s (U_i + r^(2 lo) U_(hi-lo))
            k = s * self.r ** (2 * lo)
            if lo == hi:
                out = (ops.add_const(prod, -k), s)
            else:
                pd, sd = self.P(hi - lo)
                out = (ops.add(prod, ops.mul_const(pd, -k / sd)), s)
        self._P[i] = out
        return out

    def _split(self, e: np.ndarray, g: int) -> tuple[np.ndarray, np.ndarray]:
        """e = q * U_g + r with deg r < g (deg e < 2g)."""
        d = len(e) - 1
        if self.basis == "power":
            return e[g:].copy(), e[:g].copy()
        q = np.zeros(d - g + 1)
        r = e[:g].copy()
        q[0] = e[g]
        for i in range(g + 1, d + 1):
            j = i - g
            q[j] += 2 * e[i]
            r[g - j] -= e[i] * self.r ** (2 * j)
        return q, r

    @staticmethod
    def _linear_depth(e: np.ndarray) -> int:
        return max((_ilog2_ceil(i) + 1 for i in range(1, len(e)) if e[i] != 0), default=0)

    def eval(self, e: np.ndarray, budget: int, want: Any = 1.0) -> Any:
        """``want * p`` at depth <= budget, or ``("const", want * c)`` for a constant ``p``."""
        nz = np.flatnonzero(e)
        d = int(nz[-1]) if nz.size else 0
        e = e[: d + 1]
        if d == 0:
            return ("const", want * float(e[0]))
        ops = self.ops
        if d < self.baby and self._linear_depth(e) <= budget:
            acc = None
            for i in range(1, d + 1):
                if e[i] == 0:
                    continue
                p, s = self.P(i)
                term = ops.mul_const(p, want * (float(e[i]) / s))
                acc = term if acc is None else ops.add(acc, term)
            if e[0] != 0:
                acc = ops.add_const(acc, want * float(e[0]))
            return acc
        g = 1 << (d.bit_length() - 1)  # largest power of two <= d
        if _ilog2_ceil(g) > budget - 1:
            raise AssertionError("poly_eval depth budget violated (internal error)")
        q, r = self._split(e, g)
        pg, sg = self.P(g)
        lvl = self.lvl0 - (budget - 1)
        f = ops.fac(lvl)
        Q = self.eval(q, budget - 1, want / (f * sg))
        if isinstance(Q, tuple):
            top = ops.mul_const(pg, Q[1] * f)  # Q[1] = want q0 / (f sg)
        else:
            top = ops.mul(Q, pg, lvl)
        R = self.eval(r, budget, want)
        if isinstance(R, tuple):
            return top if np.all(np.asarray(R[1]) == 0) else ops.add_const(top, R[1])
        return ops.add(top, R)


@dataclasses.dataclass(frozen=True)
class _Prep:
    basis: str
    e: np.ndarray  # coefficients in the evaluation basis
    degree: int
    shift: float  # x - shift first (free)
    prescale: float | None  # multiply by this first (one level) or None
    r: float  # basis half-width parameter
    depth: int


def _prepare(coeffs: Sequence[float], basis: str, interval: Sequence[float]) -> _Prep:
    c = _trim(coeffs)
    d = len(c) - 1
    if basis == "power":
        return _Prep("power", c, d, 0.0, None, 1.0, _L(d))
    if basis != "chebyshev":
        raise ParameterError(f"basis must be 'power' or 'chebyshev', got {basis!r}")
    a, b = _interval(interval)
    center, r = (a + b) / 2, (b - a) / 2
    if _folds(r, d):
        e = c / r ** np.arange(d + 1)
        return _Prep("chebyshev", e, d, center, None, r, _L(d))
    return _Prep("chebyshev", c, d, center, 1.0 / r, 1.0, _L(d) + 1)


def _baby_for(e: np.ndarray, basis: str, r: float, budget: int) -> int:
    """Pick the baby-step bound minimising ciphertext products (dry runs of the evaluator)."""
    d = len(e) - 1
    best, best_k = None, 2
    for lk in range(1, max(1, _L(d)) + 1):
        k = 1 << lk
        ops = _CountOps()
        ev = _Evaluator(ops, _Sym(0), basis, r, k)
        out = ev.eval(e, budget)
        depth = 0 if isinstance(out, tuple) else out.depth
        key = (depth > budget, ops.ct_mults, ops.pt_mults)
        if best is None or key < best:
            best, best_k = key, k
    return best_k


@functools.lru_cache(maxsize=512)
def _cost_cached(coeffs: tuple[float, ...], basis: str, interval: tuple[float, float]) -> dict[str, int]:
    prep = _prepare(coeffs, basis, interval)
    budget = _L(prep.degree)
    baby = _baby_for(prep.e, prep.basis, prep.r, budget)
    ops = _CountOps()
    if prep.prescale is not None:
        ops.pt_mults += 1
    if prep.degree > 0:
        _Evaluator(ops, _Sym(0), prep.basis, prep.r, baby).eval(prep.e, budget)
    return {
        "depth": prep.depth,
        "ct_mults": ops.ct_mults,
        "pt_mults": ops.pt_mults,
        "adds": ops.adds,
        "baby": baby,
    }


def poly_depth(degree: int, basis: str = "power", interval: Sequence[float] = (-1.0, 1.0)) -> int:
    """Levels :func:`poly_eval` consumes for a polynomial of this degree (exact)."""
    d = int(degree)
    if basis == "power":
        return _L(d)
    a, b = _interval(interval)
    return _L(d) + (0 if _folds((b - a) / 2, d) else 1)


def poly_cost(
    coeffs: Sequence[float], basis: str = "power", interval: Sequence[float] = (-1.0, 1.0)
) -> dict[str, int]:
    """``{"depth", "ct_mults", "pt_mults", "adds", "baby"}`` of :func:`poly_eval` for ``coeffs``."""
    c = tuple(float(v) for v in _trim(coeffs))
    return dict(_cost_cached(c, basis, tuple(float(v) for v in interval)))


def poly_eval(
    backend: Backend,
    ct: Ciphertext,
    coeffs: Sequence[float],
    basis: str = "power",
    interval: Sequence[float] = (-1.0, 1.0),
    *,
    multiplier: Any = None,
    section: str | None = None,
) -> Ciphertext:
    """Evaluate a polynomial slot-wise on ``ct`` (the first ``ct.length`` slots).

    Args:
        coeffs: lowest degree first; power coefficients in ``x``, or Chebyshev coefficients of
            ``T_i((2x - a - b)/(b - a))`` for ``basis="chebyshev"`` on ``interval=(a, b)``.
        multiplier: optional scalar or slot vector multiplying the whole polynomial, folded into
            the coefficients (no extra level; a 0/1 vector masks for free).

    Consumes exactly :func:`poly_depth` levels (``ceil(log2(d + 1))``, plus one for a Chebyshev
    interval too far from ``[-1, 1]`` to fold) and raises :class:`DepthExhaustedError` up front
    when ``ct`` has fewer. Slots past ``ct.length`` stay zero. Values are only meaningful for
    inputs in ``interval`` (the plaintext twin checks; see the module docstring).
    """
    if not isinstance(ct, Ciphertext):
        raise TypeError(f"expected a Ciphertext, got {type(ct).__name__}")
    prep = _prepare(coeffs, basis, interval)
    if multiplier is not None:
        m = np.asarray(multiplier)
        if m.ndim > 1:
            raise ShapeError(f"multiplier must be a scalar or a 1-D slot vector, got shape {m.shape}")
        if m.ndim == 1 and m.size > backend.slots:
            raise ShapeError(f"multiplier has {m.size} values but a ciphertext holds {backend.slots}")
        multiplier = m if m.ndim == 1 else m.item()
    backend.require_levels(ct, prep.depth, "poly_eval")
    target = ct.level - prep.depth
    in_bound = ct.bound
    if in_bound is not None:
        # interval arithmetic through the evaluation tree would lose all cancellation (bounds of
        # 1e140 for a degree-27 composite); the output bound is instead the polynomial's largest
        # |value| on [-B, B], B the input bound, times |multiplier|
        ct = ct.replace(bound=None)
    with backend.counter.section(section or "poly_eval"):
        x = ct
        if prep.shift != 0.0:
            x = backend.add_plain(x, -prep.shift)
        if prep.prescale is not None:
            x = backend.mul_plain(x, prep.prescale)
        budget = _L(prep.degree)
        if prep.degree == 0:
            c = prep.e[0] if multiplier is None else prep.e[0] * multiplier
            out = backend.add_plain(backend.mul_plain(ct, 0), c)
        else:
            baby = _baby_for(prep.e, prep.basis, prep.r, budget)
            ev = _Evaluator(_CtOps(backend), x, prep.basis, prep.r, baby)
            out = ev.eval(prep.e, budget, 1.0 if multiplier is None else multiplier)
        if out.level > target:
            out = backend.mod_switch_to(out, target)
    if in_bound is not None:
        out = out.replace(bound=_poly_output_bound(backend, coeffs, basis, interval, in_bound,
                                                   multiplier, out.level))
    return out


def _poly_output_bound(backend: Backend, coeffs: Any, basis: str, interval: Any,
                       in_bound: np.ndarray, multiplier: Any, level: int) -> np.ndarray | None:
    """Per-slot bound on |p(x)| * |m| for x in the polynomial's interval with |x| <= max(in_bound)
    (a 1025-point grid, +1%), or ``None`` (bound lost) when the input bound passes the interval.

    A polynomial approximation is only meaningful on its interval, and magnitude bounds cannot
    show which side of it a value is on: the bound assumes the design interval. Past it, the
    polynomial explodes and any bound would be meaningless, so tracking stops (counted in
    ``backend.range_stats["bound_lost"]``).
    """
    a, b = _interval(interval)
    reach = float(in_bound.max())
    if reach > max(abs(a), abs(b)) * (1 + 1e-6) + 1e-12:
        backend.range_stats["bound_lost"] += 1
        return None
    grid = np.linspace(max(a, -reach), min(b, reach), 1025)
    with np.errstate(all="ignore"):
        vals = np.abs(np.asarray(poly_eval_ref(grid, coeffs, basis, interval, on_range="ignore")))
    top = float(vals.max()) if np.all(np.isfinite(vals)) else float("inf")
    bound = np.full(backend.slots, top * 1.01 + 1e-9)
    if multiplier is not None:
        m = np.abs(np.asarray(multiplier, dtype=np.complex128))
        if m.ndim == 1:
            mm = np.zeros(backend.slots)
            mm[: m.size] = m
            m = mm
        bound = bound * m
    backend._check_bound(bound, level)
    return bound


def _input_range_check(backend: Backend, ct: Ciphertext, limit: float, what: str) -> None:
    """Count (and warn about) slots whose tracked input bound exceeds an approximation's range.

    Encrypted values cannot be looked at; the bound tracked through the operations (see
    :class:`~privkit.fhe.backend.Ciphertext`) can. It is an upper bound (after a convolution,
    easily 10-50x the real magnitude), so a slot counted here *may* be outside
    ``[-limit, limit]``; one not counted is certainly inside. Hence counted only
    (``backend.range_stats["approx_inputs_may_exceed"]``); ``backend.warn_approx_range = True``
    also warns.
    """
    b = getattr(ct, "bound", None)
    if b is None:
        return
    n_out = int(np.count_nonzero(b[: max(ct.length, 1)] > limit * (1 + 1e-6) + 1e-12))
    if not n_out:
        return
    backend.range_stats["approx_inputs_may_exceed"] += n_out
    if getattr(backend, "warn_approx_range", False):
        warnings.warn(
            f"{what}: {n_out} of {ct.length} encrypted inputs may lie outside the calibrated range "
            f"[-{limit:.3g}, {limit:.3g}] (tracked bound up to {float(b.max()):.3g}); the "
            "approximation is wrong there. Recalibrate on representative data or clip the inputs",
            InputRangeWarning,
            stacklevel=3,
        )


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


# -- square root (Wilkes iteration) -----------------------------------------------------------------
def _wilkes_folds(kappa: float) -> bool:
    """``z = kappa * W``: fold kappa while ``(W - 1/kappa)**2`` stays <= 64."""
    return 1.0 / kappa <= 8.0


def _wilkes_depth(iterations: int) -> int:
    """Depth of ``a_d`` above the depth of ``W``."""
    return 2 if iterations == 1 else 2 * iterations - 1


def _wilkes(ops: _CtOps, W: Ciphertext, iterations: int, kappa: float, sigma: Any) -> Ciphertext:
    """``sigma * a_d`` with ``a_{n+1} = a_n (1 - c_n)``, ``c_{n+1} = c_n**2 (c_n - 3/2)`` for
    ``z = kappa * W`` (``a_0 = z``, ``c_0 = (z - 1)/2``), starting from the closed forms
    ``a_1 = z (3 - z)/2`` and ``c_1 = (z - 1)**2 (z - 4)/8`` (both depth 2 above ``W``).

    ``sigma`` (scalar or slot vector) is folded into the last ``c``; the ``s/q`` factor of every
    product is folded into a constant that meets the product (``A`` carries a tracked scale).
    """
    d = int(iterations)
    ik = 1.0 / kappa
    lw = W.level
    f = ops.fac(lw - 1)  # products of the two depth-1 factors of a_1 (and of c_1)

    def a1(scale: Any) -> Ciphertext:
        left = ops.mul_const(W, scale * kappa / (2.0 * f))
        right = ops.add_const(ops.mul_const(W, -kappa), 3.0)
        return ops.mul(left, right)

    if d == 1:
        return a1(sigma)
    Wm = ops.add_const(W, -ik)
    fr = ops.fac(lw)
    R = ops.mul(Wm, Wm)  # fr (W - 1/k)^2

    def c1(scale: Any) -> Ciphertext:  # scale * c_1
        return ops.mul(R, ops.mul_const(ops.add_const(W, -4.0 * ik), scale * kappa**3 / (8.0 * fr * f)))

    A, sa = a1(1.0), 1.0  # A = sa * a_n
    if d == 2:
        mu = sigma / (ops.fac(lw - 2) * sa)
        C = c1(mu)
    else:
        C = c1(1.0)  # c_1
        for n in range(1, d - 1):
            # a_{n+1} = a_n (1 - c_n)
            fa = ops.fac(min(A.level, C.level))
            A, sa = ops.mul(A, ops.add_const(ops.mul_const(C, -1), 1.0)), sa * fa
            # c_{n+1} = c_n^2 (c_n - 3/2), exact (lambda absorbs both products' factors), or
            # mu * c_{d-1} for the last one
            f1, f2 = ops.fac(C.level), ops.fac(C.level - 1)
            if n == d - 2:
                t = sigma / (ops.fac(min(A.level, C.level - 2)) * sa)
            else:
                t = 1.0
            lam = t / (f1 * f2)
            X = ops.mul(C, C)
            Y = ops.add_const(ops.mul_const(C, lam), -1.5 * lam)
            C = ops.mul(X, Y)
    # C = mu * c_{d-1}; sigma * a_d = (sa a_{d-1}) (mu - mu c_{d-1}) * fac
    return ops.mul(A, ops.add_const(ops.mul_const(C, -1), sigma / sa / ops.fac(min(A.level, C.level))))


def _wilkes_ref(W: Any, iterations: int, kappa: float, sigma: float = 1.0) -> Any:
    z = W * kappa
    a = z * (3.0 - z) * 0.5
    c = (z - 1.0) * (z - 1.0) * (z - 4.0) * 0.125
    for _ in range(1, int(iterations)):
        a = a * (1.0 - c)
        c = c * c * (c - 1.5)
    return a * sigma


def sqrt_depth(iterations: int = 3, bound: float = 1.0) -> int:
    """Levels :func:`sqrt` consumes."""
    _check_iters(iterations)
    return _wilkes_depth(iterations) + (0 if _wilkes_folds(1.0 / bound) else 1)


def _check_iters(iterations: int) -> None:
    if int(iterations) != iterations or not 1 <= iterations <= 30:
        raise ParameterError(f"iterations must be an integer in 1..30, got {iterations}")


def sqrt_ref(x: Any, iterations: int = 3, bound: float = 1.0, on_range: str = "warn") -> Any:
    """Plaintext twin of :func:`sqrt` (numpy or torch)."""
    _check_iters(iterations)
    check_range(x, 0.0, bound, "sqrt", on_range)
    return _wilkes_ref(x, iterations, 1.0 / bound, math.sqrt(bound))


def sqrt(
    backend: Backend, ct: Ciphertext, iterations: int = 3, bound: float = 1.0,
    *, section: str | None = None,
) -> Ciphertext:
    """Approximately ``sqrt(x)`` for ``0 <= x <= bound``: Cheon et al. 2019's iteration
    (``d = iterations``), ``sqrt(bound) * a_d(x / bound)``. The error
    ``|a_d(z) - sqrt z| <= (1 - z/4)**(2**(d+1))`` is small away from 0 and at most ``sqrt z``
    near 0 (``a_d <= sqrt z`` always). Depth :func:`sqrt_depth`: 2 for one iteration, ``2d - 1``
    for more (one more when ``bound > 8``)."""
    _check_iters(iterations)
    if not (bound > 0 and math.isfinite(bound)):
        raise ParameterError(f"bound must be positive and finite, got {bound}")
    depth = sqrt_depth(iterations, bound)
    backend.require_levels(ct, depth, "sqrt")
    target = ct.level - depth
    out_bound = None  # the iteration's intermediates are not tracked; its output is <= sqrt(x)
    if ct.bound is not None:
        if float(ct.bound.max()) <= bound * (1 + 1e-6):
            out_bound = np.sqrt(ct.bound) * 1.01 + 1e-9
        else:
            backend.range_stats["bound_lost"] += 1
        ct = ct.replace(bound=None)
    with backend.counter.section(section or "sqrt"):
        kappa = 1.0 / bound
        W = ct
        if not _wilkes_folds(kappa):
            W, kappa = backend.mul_plain(ct, kappa), 1.0
        out = _wilkes(_CtOps(backend), W, iterations, kappa, math.sqrt(bound))
        if out.level > target:
            out = backend.mod_switch_to(out, target)
    return out.replace(bound=out_bound)


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
