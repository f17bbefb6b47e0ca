"""Square root by Wilkes' iteration (Cheon et al. 2019): :func:`sqrt` on ``[0, bound]``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ....errors import ParameterError
from ...backend import Backend, Ciphertext
from .evaluate import _CtOps
from .range_check import check_range


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
