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

Modules (every name, and the private helpers other modules use, importable from
``privkit.fhe.ops.poly`` as before): :mod:`~privkit.fhe.ops.poly.range_check`,
:mod:`~privkit.fhe.ops.poly.fit`, :mod:`~privkit.fhe.ops.poly.evaluate`,
:mod:`~privkit.fhe.ops.poly.sign` (sign and ReLU), :mod:`~privkit.fhe.ops.poly.wilkes` (square root),
:mod:`~privkit.fhe.ops.poly.maxabs` (``|x|`` and max).

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

from ....errors import RangeWarning  # re-exported: defined in privkit.errors

# FOLD_LIMIT and the private helpers (_Evaluator, _folds, _prepare, _trim, _max_core, _max_params)
# stay importable from here: privkit.fhe.ops.pool / .plan and the tests use them
from .evaluate import (  # noqa: F401
    FOLD_LIMIT,
    _Evaluator,
    _folds,
    _prepare,
    poly_cost,
    poly_depth,
    poly_eval,
    poly_eval_ref,
)
from .fit import (
    _trim,  # noqa: F401
    cheb_to_power,
    chebyshev_fit,
    power_to_cheb,
)
from .maxabs import (  # noqa: F401
    _max_core,
    _max_params,
    abs_poly,
    abs_poly_coeffs,
    abs_poly_depth,
    abs_poly_ref,
    approx_max,
    approx_max_depth,
    approx_max_ref,
)
from .range_check import (
    calibrate_bound,
    check_range,
)
from .sign import (
    compg_f,
    compg_g,
    relu_composite,
    relu_composite_depth,
    relu_composite_ref,
    relu_plan,
    relu_poly,
    relu_poly_coeffs,
    relu_poly_depth,
    relu_poly_ref,
    sign_composite,
    sign_composite_depth,
    sign_composite_ref,
    sign_plan,
)
from .wilkes import (
    sqrt,
    sqrt_depth,
    sqrt_ref,
)

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
