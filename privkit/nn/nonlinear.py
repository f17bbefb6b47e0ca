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
from typing import Any

import torch
from torch import nn

from ..errors import ParameterError
from ..fhe.compiler.lowering import lowering_depth
from ..fhe.compiler.rules.pool import max_tree
from .layers import FHELayer, _warn_range, register_layer

__all__ = ["PolyReLU", "ApproxMaxPool1d", "ApproxMaxPool2d", "CALIBRATED", "max_tree"]


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
        """Levels of the encrypted form (asked of the lowering registry)."""
        return int(lowering_depth(self.fhe_spec()))

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
        """Levels of the encrypted form (asked of the lowering registry)."""
        return int(lowering_depth(self.fhe_spec()))

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


@register_layer
class ApproxMaxPool2d(ApproxMaxPool1d):
    """2-D max pooling with the same approximate max: the :func:`max_tree` of the kernel's width
    along the last axis, then of its height along the rows (the encrypted order too).
    ``kernel_size`` / ``stride``: an int or ``(height, width)``."""

    def __init__(self, kernel_size: int | tuple[int, int] = 2, stride: int | tuple[int, int] | None = None,
                 method: str = "poly", degree: int = 8, iterations: int = 3, bound: float | None = None,
                 margin: float = 1.1) -> None:
        super().__init__(2, None, method, degree, iterations, bound, margin)
        ks = (int(kernel_size),) * 2 if isinstance(kernel_size, int) else tuple(int(k) for k in kernel_size)
        st = ks if stride is None else ((int(stride),) * 2 if isinstance(stride, int) else tuple(int(v) for v in stride))
        self.kernel_size, self.stride = ks, st  # type: ignore[assignment]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self._current_bound(x)
        m = x
        for axis, k in ((-1, self.kernel_size[1]), (-2, self.kernel_size[0])):
            for off in max_tree(k):
                shifted = torch.roll(m, -off, dims=axis)  # wrapped values only reach invalid outputs
                m = max_torch(m, shifted, self.method, self.degree, self.iterations, b)
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        nh = (x.shape[-2] - kh) // sh + 1
        nw = (x.shape[-1] - kw) // sw + 1
        return m[..., : (nh - 1) * sh + 1 : sh, : (nw - 1) * sw + 1 : sw]

    def fhe_spec(self) -> dict[str, Any]:
        return dict(super().fhe_spec(), op="maxpool2d", kernel=tuple(self.kernel_size), stride=tuple(self.stride))


CALIBRATED = (PolyReLU, ApproxMaxPool1d)

# -- the maths shared with privkit.fhe.ops.poly (torch twins) and the lowering ------------------


def relu_torch(x: torch.Tensor, mode: str, degree: int, precision_bits: int, bound: float) -> torch.Tensor:
    """The torch twin: the same polynomials as ``poly.relu_poly`` / ``poly.relu_composite``."""
    from ..fhe.ops import poly

    if mode == "poly":
        return poly.relu_poly_ref(x, degree, bound, on_range="ignore")
    return poly.relu_composite_ref(x, bound, precision_bits, on_range="ignore")


def max_torch(a: torch.Tensor, b: torch.Tensor, method: str, degree: int, iterations: int,
              bound: float) -> torch.Tensor:
    """The torch twin of ``poly.approx_max``."""
    from ..fhe.ops import poly

    return poly.approx_max_ref(a, b, method=method, iterations=iterations, degree=degree, bound=bound,
                               on_range="ignore")
