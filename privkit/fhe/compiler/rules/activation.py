"""Activations: the approximated ReLU (``relu``) and fixed / trainable polynomials (``polyact``).

Both ask the affine layer before them (conv or linear) to fold a scaling into its weights when
that saves a level (:meth:`Lowering.prefold`):

* ``relu`` on ``[-B, B]``: the layer before divides by ``B`` and the polynomial is evaluated on
  ``[-1, 1]`` (ReLU is positively homogeneous: ``relu_poly`` on ``[-B, B]`` is ``B * p1(x / B)``);
* ``polyact`` of degree 2: ``a2 x^2 + a1 x + a0 = s (c x + e)^2 + (a0 - s e^2)`` with
  ``c = sqrt(|a2|)``, ``e = s a1 / (2c)``, ``s = sign(a2)``: the layer before computes
  ``c x + e`` and the activation is one ciphertext square (ONE level). Degree <= 1 folds away
  entirely (0 levels); degree 3 costs 2 levels, degree 4 costs 3 (``ceil(log2(d + 1))``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ....errors import ParameterError
from ...backend import Backend, Ciphertext
from ...ops.packed import PackedLayout
from ..lowering import Lowered, Lowering, PlanContext, register_lowering


def _dirty(lay: PackedLayout) -> PackedLayout:
    return PackedLayout.grid(lay.channels, lay.shape, lay.gaps, lay.block, clean=False)


def relu_depth(mode: str, degree: int, precision_bits: int, bound: float = 1.0) -> int:
    """Levels an encrypted PolyReLU consumes on inputs in ``[-bound, bound]``."""
    from ...ops import poly

    if mode == "poly":
        return poly.relu_poly_depth(degree, bound)
    return poly.relu_composite_depth(bound, precision_bits)


@register_lowering("relu")
class ReluLowering(Lowering):
    """PolyReLU: a minimax polynomial of ReLU (``mode="poly"``) or the composite sign
    approximation (``mode="composite"``)."""

    groups = "channelwise"

    def depth(self, spec: dict[str, Any]) -> int:
        b = spec["bound"] if spec["bound"] > 0 else 1.0
        return relu_depth(spec["mode"], spec["degree"], spec["precision_bits"], b)

    def prefold(self, spec: dict[str, Any]) -> tuple[Any, Any] | None:
        b = spec["bound"]
        if spec["mode"] != "poly" or not b > 0:
            return None
        if relu_depth("poly", spec["degree"], 0, b) > relu_depth("poly", spec["degree"], 0, 1.0):
            return 1.0 / b, 0.0
        return None

    def plan(self, spec: dict[str, Any], ctx: PlanContext) -> Lowered:
        from ...ops import poly

        mode, deg, bits, b = spec["mode"], spec["degree"], spec["precision_bits"], spec["bound"]
        out = _dirty(ctx.layout)
        if mode == "poly" and ctx.prefold is not None:
            unit = poly.relu_poly_coeffs(deg, 1.0)

            def run_p(be: Backend, ct: Ciphertext) -> Ciphertext:
                return poly.poly_eval(be, ct, unit, "power", (-1.0, 1.0), multiplier=b, section="relu")

            return Lowered(poly.poly_depth(deg, "power", (-1.0, 1.0)), [], out, run_p,
                           f"degree-{deg} minimax on [-{b:.3g}, {b:.3g}] (input pre-divided by the range)")
        if mode == "poly":
            def run(be: Backend, ct: Ciphertext) -> Ciphertext:
                return poly.relu_poly(be, ct, deg, b, section="relu")

            return Lowered(self.depth(spec), [], out, run, f"degree-{deg} minimax on [-{b:.3g}, {b:.3g}]")

        def run_c(be: Backend, ct: Ciphertext) -> Ciphertext:
            return poly.relu_composite(be, ct, b, precision_bits=bits, section="relu")

        return Lowered(self.depth(spec), [], out, run_c, f"composite sign, {bits} bits, scale {b:.3g}")


def _coeffs(spec: dict[str, Any]) -> np.ndarray:
    """Coefficients as (channels or 1, degree + 1), trailing all-zero columns dropped."""
    a = np.atleast_2d(np.asarray(spec["coeffs"], dtype=np.float64))
    nz = np.flatnonzero(np.any(a != 0, axis=0))
    d = int(nz[-1]) if nz.size else 0
    if d > 4:
        raise ParameterError(f"polyact: degree {d} > 4 is not supported (use PolyReLU for ReLU fits)")
    return a[:, : d + 1]


def _fold_quadratic(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, float] | None:
    a2 = a[:, 2]
    if np.any(a2 == 0) or not (np.all(a2 > 0) or np.all(a2 < 0)):
        return None
    sgn = 1.0 if a2[0] > 0 else -1.0
    c = np.sqrt(np.abs(a2))
    e = sgn * a[:, 1] / (2 * c)
    return c, e, sgn


def _one(v: np.ndarray) -> Any:
    return float(v[0]) if v.size == 1 else v


@register_lowering("polyact")
class PolyActLowering(Lowering):
    """A polynomial activation ``sum_i a_i x^i`` (per layer or per channel), degree <= 4, at the
    minimum depth: see the module docstring."""

    groups = "channelwise"

    def split(self, spec: dict[str, Any], out: slice, inp: slice, first: bool) -> dict[str, Any]:
        a = np.atleast_2d(np.asarray(spec["coeffs"], dtype=np.float64))
        return spec if a.shape[0] == 1 else dict(spec, coeffs=a[inp])

    def depth(self, spec: dict[str, Any]) -> int:
        a = _coeffs(spec)
        d = a.shape[1] - 1
        if d == 0:
            return 1
        if d == 1:
            return 0 if np.all(a[:, 1] == 1) else 1
        if d == 2:
            return 1 if np.all(a[:, 2] == 1) and np.all(a[:, 1] == 0) else 2
        return 2 if d == 3 else 3

    def prefold(self, spec: dict[str, Any]) -> tuple[Any, Any] | None:
        a = _coeffs(spec)
        d = a.shape[1] - 1
        if d == 0:
            return None
        if d == 1:
            return _one(a[:, 1]), _one(a[:, 0])
        if d == 2:
            f = _fold_quadratic(a)
            if f is None or (np.all(f[0] == 1) and np.all(f[1] == 0)):
                return None
            return _one(f[0]), _one(f[1])
        return None

    def plan(self, spec: dict[str, Any], ctx: PlanContext) -> Lowered:
        a = _coeffs(spec)
        d = a.shape[1] - 1
        out = _dirty(ctx.layout)
        cv = ctx.channel_vector
        col = [cv(_one(a[:, i])) for i in range(d + 1)]
        if d == 0:
            return Lowered(1, [], out, lambda be, ct: be.add_plain(be.mul_plain(ct, 0.0), col[0]),
                           "constant")
        if ctx.prefold is not None and d == 1:
            return Lowered(0, [], ctx.layout, lambda be, ct: ct, "affine, folded into the layer before")
        if d == 1:
            if np.all(a[:, 1] == 1):
                return Lowered(0, [], out, lambda be, ct: be.add_plain(ct, col[0]), "x + a0")
            return Lowered(1, [], out, lambda be, ct: be.add_plain(be.mul_plain(ct, col[1]), col[0]),
                           "a1 x + a0")
        if d == 2:
            f = _fold_quadratic(a)
            if ctx.prefold is not None or (f is not None and np.all(f[0] == 1) and np.all(f[1] == 0)):
                assert f is not None
                c, e, sgn = f
                const = cv(_one(a[:, 0] - sgn * e * e))

                def run_sq(be: Backend, ct: Ciphertext) -> Ciphertext:
                    y = be.square(ct)
                    return be.add_plain(be.neg(y) if sgn < 0 else y, const)

                what = "x^2" if ctx.prefold is None else "(c x + e)^2, c and e folded into the layer before"
                return Lowered(1, [], out, run_sq, f"{'-' if sgn < 0 else ''}{what}: one ct*ct")

            def run2(be: Backend, ct: Ciphertext) -> Ciphertext:
                t = be.add_plain(be.mul_plain(ct, col[2]), col[1])
                return be.add_plain(be.mul(t, ct), col[0])

            return Lowered(2, [], out, run2, "x (a2 x + a1) + a0")

        def run34(be: Backend, ct: Ciphertext) -> Ciphertext:
            x2 = be.square(ct)
            if d == 3:
                q = be.add_plain(be.mul_plain(ct, col[3]), col[2])
            else:
                q = be.add_plain(be.add(be.mul_plain(x2, col[4]), be.mul_plain(ct, col[3])), col[2])
            return be.add(be.mul(x2, q), be.add_plain(be.mul_plain(ct, col[1]), col[0]))

        return Lowered(2 if d == 3 else 3, [], out, run34, f"degree {d}: x^2 (q(x)) + a1 x + a0")
