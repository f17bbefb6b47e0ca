"""Approximated non-linearities: PolyReLU and ApproxMaxPool1d.

Their ``forward`` evaluates exactly the polynomials that the encrypted operators of
:mod:`privkit.fhe.ops.poly` / :mod:`privkit.fhe.ops.pool` evaluate on ciphertexts, so a model
trained with them is trained on what the server computes. Both need an input range: during
training an unfrozen layer tracks the largest input it sees; :func:`privkit.nn.calibrate` fixes
the bound from representative data before compiling. In evaluation mode an input beyond the
bound raises a warning (the encrypted result would be wrong for it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import ParameterError
from .layers import FHELayer, _warn_range, register_layer

__all__ = ["PolyReLU", "ApproxMaxPool1d", "CALIBRATED", "max_tree", "lower_relu", "lower_maxpool"]


class _Calibrated(nn.Module):
    """Shared bound bookkeeping of the approximated layers."""

    def __init__(self, bound: float | None, margin: float) -> None:
        super().__init__()
        self.register_buffer("bound_", torch.tensor(float(bound or 0.0), dtype=torch.float64))
        self.register_buffer("frozen_", torch.tensor(bound is not None))
        self.margin = float(margin)
        self._calibrating = False
        self._warned = False

    @property
    def bound(self) -> float:
        return float(self.bound_)

    @property
    def is_calibrated(self) -> bool:
        return bool(self.frozen_) and self.bound > 0

    def set_bound(self, bound: float) -> None:
        if not bound > 0 or not math.isfinite(bound):
            raise ParameterError(f"{type(self).__name__}: bound must be positive and finite, got {bound}")
        self.bound_.fill_(float(bound))
        self.frozen_.fill_(True)
        self._warned = False

    def observe(self, x: torch.Tensor) -> float:
        """The input magnitude this layer must cover for ``x``."""
        return float(x.detach().abs().max()) if x.numel() else 0.0

    def _current_bound(self, x: torch.Tensor) -> float:
        if self._calibrating and not bool(self.frozen_):
            return max(self.observe(x) * self.margin, 1e-6)  # provisional, while calibrating
        if self.training and not bool(self.frozen_):
            seen = self.observe(x) * self.margin
            if seen > self.bound:
                self.bound_.fill_(seen)
        b = self.bound
        if b <= 0:
            raise ParameterError(
                f"{type(self).__name__} has no input range yet: train it, or call "
                "privkit.nn.calibrate(model, data), or pass bound=..."
            )
        if not self.training and not self._calibrating and not self._warned:
            seen = self.observe(x)
            if seen > b:
                self._warned = True
                _warn_range(type(self).__name__, seen, b)
        return b


@register_layer
class PolyReLU(_Calibrated, FHELayer):
    """ReLU approximated by polynomials on ``[-bound, bound]``.

    ``mode="poly"``: one polynomial of ``degree`` fitted to ReLU (depth ``ceil(log2(degree+1))``);
    ``mode="composite"``: ``x * (1 + sign(x / bound)) / 2`` with the composite sign
    approximation of ``precision_bits`` (the ECG paper's method; much deeper).
    """

    def __init__(self, degree: int = 3, mode: str = "poly", precision_bits: int = 8,
                 bound: float | None = None, margin: float = 1.1) -> None:
        super().__init__(bound, margin)
        if mode not in ("poly", "composite"):
            raise ParameterError(f"PolyReLU mode must be 'poly' or 'composite', got {mode!r}")
        if mode == "poly" and not 2 <= int(degree) <= 31:
            raise ParameterError(f"PolyReLU degree must be in 2..31, got {degree}")
        self.degree = int(degree)
        self.mode = mode
        self.precision_bits = int(precision_bits)

    @property
    def depth(self) -> int:
        return relu_depth(self.mode, self.degree, self.precision_bits, self.bound if self.bound > 0 else 1.0)

    def extra_repr(self) -> str:
        rng = f"[-{self.bound:.3g}, {self.bound:.3g}]" if self.bound > 0 else "uncalibrated"
        what = f"degree={self.degree}" if self.mode == "poly" else f"precision_bits={self.precision_bits}"
        return f"mode={self.mode!r}, {what}, range={rng}, depth={self.depth}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self._current_bound(x)
        return relu_torch(x, self.mode, self.degree, self.precision_bits, b)

    def fhe_spec(self) -> dict[str, Any]:
        return {"op": "relu", "mode": self.mode, "degree": self.degree,
                "precision_bits": self.precision_bits, "bound": self.bound}


def max_tree(kernel: int) -> list[int]:
    """Offsets of the pairwise-max rounds covering a window of ``kernel`` elements.

    Round ``r`` computes ``m <- max(m, shift(m, offset_r))``; windows double until they cover
    ``kernel`` (the last offset overlaps so the window is exactly ``kernel`` wide). The torch
    forward and the encrypted program use this same tree.
    """
    if kernel < 1:
        raise ParameterError(f"pool kernel must be >= 1, got {kernel}")
    offs, width = [], 1
    while width < kernel:
        step = min(width, kernel - width)
        offs.append(step)
        width += step
    return offs


@register_layer
class ApproxMaxPool1d(_Calibrated, FHELayer):
    """Max pooling with max(a, b) = (a + b)/2 + |a - b|/2 and an approximated ``|.|``.

    ``method="sqrt"``: |d| = sqrt(d^2) by ``iterations`` steps of the paper's iterative square
    root; ``method="poly"``: a polynomial of ``degree`` fitted to |x|. ``bound`` covers the inputs
    (``|x| <= bound``). Windows are combined by :func:`max_tree`.
    """

    def __init__(self, kernel_size: int = 2, stride: int | None = None, method: str = "poly",
                 degree: int = 8, iterations: int = 3, bound: float | None = None, margin: float = 1.1) -> None:
        super().__init__(bound, margin)
        if method not in ("sqrt", "poly"):
            raise ParameterError(f"ApproxMaxPool1d method must be 'sqrt' or 'poly', got {method!r}")
        self.kernel_size = int(kernel_size)
        self.stride = int(stride or kernel_size)
        self.method = method
        self.degree = int(degree)
        self.iterations = int(iterations)

    @property
    def depth(self) -> int:
        b = self.bound if self.bound > 0 else 1.0
        return len(max_tree(self.kernel_size)) * max_depth(self.method, self.degree, self.iterations, b)

    def extra_repr(self) -> str:
        rng = f"[-{self.bound:.3g}, {self.bound:.3g}]" if self.bound > 0 else "uncalibrated"
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, method={self.method!r}, "
                f"range={rng}, depth={self.depth}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self._current_bound(x)
        m = x
        for off in max_tree(self.kernel_size):
            shifted = torch.nn.functional.pad(m[..., off:], (0, off))
            m = max_torch(m, shifted, self.method, self.degree, self.iterations, b)
        n_out = (x.shape[-1] - self.kernel_size) // self.stride + 1
        return m[..., : (n_out - 1) * self.stride + 1 : self.stride]

    def fhe_spec(self) -> dict[str, Any]:
        return {"op": "maxpool1d", "kernel": self.kernel_size, "stride": self.stride,
                "method": self.method, "degree": self.degree, "iterations": self.iterations,
                "bound": self.bound}


CALIBRATED = (PolyReLU, ApproxMaxPool1d)

# -- the maths shared with privkit.fhe.ops.poly (torch twins) and the lowering ------------------


def relu_depth(mode: str, degree: int, precision_bits: int, bound: float = 1.0) -> int:
    """Levels an encrypted PolyReLU consumes."""
    from ..fhe.ops import poly

    if mode == "poly":
        return poly.relu_poly_depth(degree, bound)
    return poly.relu_composite_depth(bound, precision_bits)


def relu_torch(x: torch.Tensor, mode: str, degree: int, precision_bits: int, bound: float) -> torch.Tensor:
    """The torch twin: the same polynomials as ``poly.relu_poly`` / ``poly.relu_composite``."""
    from ..fhe.ops import poly

    if mode == "poly":
        return poly.relu_poly_ref(x, degree, bound, on_range="ignore")
    return poly.relu_composite_ref(x, bound, precision_bits, on_range="ignore")


def max_depth(method: str, degree: int, iterations: int, bound: float = 1.0) -> int:
    """Levels one approximate max of two inputs bounded by ``bound`` consumes."""
    from ..fhe.ops import poly

    return poly.approx_max_depth(method, iterations=iterations, degree=degree, bound=bound)


def max_torch(a: torch.Tensor, b: torch.Tensor, method: str, degree: int, iterations: int,
              bound: float) -> torch.Tensor:
    """The torch twin of ``poly.approx_max``."""
    from ..fhe.ops import poly

    return poly.approx_max_ref(a, b, method=method, iterations=iterations, degree=degree, bound=bound,
                               on_range="ignore")


def lower_relu(spec: dict[str, Any], prescaled: bool = False) -> tuple[Callable, int, str]:
    """(run(backend, ct), depth, description) of an encrypted PolyReLU.

    ``prescaled``: the layer before already divided by the bound B, so evaluate ``B * p1(y)`` on
    ``y`` in [-1, 1], where ``p1`` is the unit-range fit (``relu_poly`` on [-B, B] is exactly
    ``B * p1(x / B)``: ReLU is positively homogeneous). Saves the interval-scaling level.
    """
    from ..fhe.ops import poly

    mode, deg, bits, b = spec["mode"], spec["degree"], spec["precision_bits"], spec["bound"]
    if mode == "poly" and prescaled:
        unit = poly.relu_poly_coeffs(deg, 1.0)

        def run_p(be, ct):
            return poly.poly_eval(be, ct, unit, "power", (-1.0, 1.0), multiplier=b, section="relu")

        return run_p, poly.poly_depth(deg, "power", (-1.0, 1.0)), (
            f"degree-{deg} minimax on [-{b:.3g}, {b:.3g}] (input pre-divided by the range)")
    if mode == "poly":
        def run(be, ct):
            return poly.relu_poly(be, ct, deg, b, section="relu")

        return run, relu_depth(mode, deg, bits, b), f"degree-{deg} minimax on [-{b:.3g}, {b:.3g}]"

    def run_c(be, ct):
        return poly.relu_composite(be, ct, b, precision_bits=bits, section="relu")

    return run_c, relu_depth(mode, deg, bits, b), f"composite sign, {bits} bits, scale {b:.3g}"


def lower_maxpool(spec: dict[str, Any], layout: Any) -> tuple[Callable, int, list[int], str]:
    """(run, depth, rotations, description) of an encrypted ApproxMaxPool1d on a packed layout."""
    from ..fhe.ops import poly

    offs = max_tree(spec["kernel"])
    method, deg, it, b = spec["method"], spec["degree"], spec["iterations"], spec["bound"]
    gap = layout.gap

    def run(be, ct):
        m = ct
        for off in offs:
            m = poly.approx_max(be, m, be.rotate(m, off * gap), method=method, iterations=it,
                                degree=deg, bound=b, section="max")
        return m

    depth = len(offs) * max_depth(method, deg, it, b)
    return run, depth, [o * gap for o in offs], (
        f"k={spec['kernel']}, stride {spec['stride']}, |x| by {method} "
        f"({'degree ' + str(deg) if method == 'poly' else str(it) + ' iterations'})")
