"""Fitting polynomials (Chebyshev interpolation, least squares, minimax) and converting between
the power and Chebyshev bases."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from numpy.polynomial import chebyshev as _C
from numpy.polynomial import polynomial as _P

from ....errors import ParameterError


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
