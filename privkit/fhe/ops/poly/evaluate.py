"""Evaluating polynomials: the plaintext twin (:func:`poly_eval_ref`, numpy and torch) and the
encrypted evaluator (:func:`poly_eval`: baby-step giant-step on a depth-optimal split), with
its level and product counts (:func:`poly_depth`, :func:`poly_cost`)."""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ....errors import InputRangeWarning, ParameterError, ShapeError
from ...backend import Backend, Ciphertext
from .fit import _interval, _trim
from .range_check import check_range

#: fold an affine map / scale into the basis only while max(r, 1/r)**degree stays below this
FOLD_LIMIT = 2.0**6


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
