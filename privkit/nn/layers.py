"""Torch layers whose ``forward`` is the exact plaintext twin of their encrypted form.

Each layer exports a ``fhe_spec()`` (a plain dict) that the compiler reads; the compiler never
needs the layer classes themselves. ``method=`` arguments select the encrypted algorithm, never
the maths: ``Conv1d(method="freq")`` and ``Conv1d(method="spatial")`` compute the same function.

Layers are enrolled with :func:`register_layer`: the validator
(:func:`~privkit.nn.check_fhe_compatible`) accepts them, and the layer contract test
(``tests/test_compile_nd.py``) requires an example of each whose ``fhe_spec()`` kind has a
registered lowering with a property test against the torch forward.

>>> import torch
>>> from privkit import nn as pnn
>>> m = torch.nn.Sequential(pnn.Conv1d(1, 2, 3), pnn.Flatten(), pnn.Linear(2 * 6, 2))
>>> m(torch.zeros(4, 1, 8)).shape
torch.Size([4, 2])
>>> [type(x).__name__ for x in pnn.check_fhe_compatible(torch.nn.Sequential(torch.nn.ReLU()))]
['Incompatibility']
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from ..errors import ParameterError

__all__ = [
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "Linear",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "GlobalAvgPool1d",
    "Flatten",
    "register_layer",
    "registered_layers",
    "FHELayer",
]
# Incompatibility, check_fhe_compatible, make_fhe_compatible: defined in nn/compat.py, resolved
# lazily by __getattr__ at the end of this module

_REGISTRY: dict[str, type[nn.Module]] = {}


def register_layer(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: enrol a privkit layer.

    The validator (:func:`~privkit.nn.check_fhe_compatible`) then accepts it (checking its
    arguments), :func:`registered_layers` lists it, and the layer contract test
    (``tests/test_compile_nd.py``) fails until the layer has an example there whose
    ``fhe_spec()`` kind has a registered lowering covered by a property test. The compiler itself
    reads ``fhe_spec()`` and never needs the class.
    """
    _REGISTRY[cls.__name__] = cls
    return cls


def registered_layers() -> dict[str, type[nn.Module]]:
    """Name -> class of every registered privkit layer."""
    return dict(_REGISTRY)


class FHELayer:
    """Mixin: ``fhe_spec()`` describes the layer to the compiler."""

    def fhe_spec(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError


@register_layer
class Conv1d(nn.Conv1d, FHELayer):
    """1-D convolution (PyTorch's cross-correlation) with an encrypted twin.

    ``method="spatial"``: one rotation per tap (baby-step giant-step across packed channels);
    ``method="freq"``: homomorphic DFT, Hadamard product, inverse DFT. Same maths either way.
    Only ``dilation=1``, ``groups=1`` and zero padding are supported. Computes in the input's
    precision (float64 inputs give float64 outputs, the precision the compiler works in).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True, method: str = "spatial") -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        if method not in ("spatial", "freq"):
            raise ParameterError(f"Conv1d method must be 'spatial' or 'freq', got {method!r}")
        self.method = method

    def extra_repr(self) -> str:
        return super().extra_repr() + f", method={self.method!r}, depth={_depth(self)}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # computes in the input's precision (float64 in -> float64 out, as the compiler does)
        w = self.weight.to(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        return self._conv_forward(x, w, b)

    def fhe_spec(self) -> dict[str, Any]:
        return {
            "op": "conv1d",
            "method": self.method,
            "weight": self.weight.detach().double().cpu().numpy(),
            "bias": None if self.bias is None else self.bias.detach().double().cpu().numpy(),
            "stride": int(self.stride[0]),
            "padding": int(self.padding[0]),
        }


def _depth(layer: FHELayer) -> str:
    """The layer's level cost, asked of the compiler's lowering registry (the one source)."""
    from ..fhe.compiler.lowering import lowering_depth

    d = lowering_depth(layer.fhe_spec())
    return "input-dependent" if d is None else str(d)


class _SpatialConv(FHELayer):
    """Shared forward / spec of the spatial N-D convolutions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype)  # type: ignore[attr-defined]
        b = None if self.bias is None else self.bias.to(x.dtype)  # type: ignore[attr-defined]
        return self._conv_forward(x, w, b)  # type: ignore[attr-defined]

    def extra_repr(self) -> str:
        return super().extra_repr() + f", depth={_depth(self)}"  # type: ignore[misc]

    def fhe_spec(self) -> dict[str, Any]:
        nd = len(self.stride)  # type: ignore[attr-defined]
        return {
            "op": f"conv{nd}d",
            "method": "spatial",
            "weight": self.weight.detach().double().cpu().numpy(),  # type: ignore[attr-defined]
            "bias": None if self.bias is None else self.bias.detach().double().cpu().numpy(),  # type: ignore[attr-defined]
            "stride": tuple(int(v) for v in self.stride),  # type: ignore[attr-defined]
            "padding": tuple(int(v) for v in self.padding),  # type: ignore[attr-defined]
        }


def _check_conv_args(name: str, padding: Any) -> None:
    if isinstance(padding, str):
        raise ParameterError(f"{name}: give padding as an integer or tuple, not {padding!r}")


@register_layer
class Conv2d(_SpatialConv, nn.Conv2d):
    """2-D convolution (spatial; stride, zero padding, ``groups=1``) with an encrypted twin: one
    rotation per tap on the packed image (row gap x column gap), one level.

    >>> import torch
    >>> Conv2d(1, 4, 7, stride=3)(torch.zeros(1, 1, 28, 28)).shape
    torch.Size([1, 4, 8, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0, bias: bool = True) -> None:
        _check_conv_args("Conv2d", padding)
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)


@register_layer
class Conv3d(_SpatialConv, nn.Conv3d):
    """3-D convolution (spatial; stride, zero padding, ``groups=1``) with an encrypted twin."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int, int],
                 stride: int | tuple[int, int, int] = 1, padding: int | tuple[int, int, int] = 0,
                 bias: bool = True) -> None:
        _check_conv_args("Conv3d", padding)
        nn.Conv3d.__init__(self, in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)


@register_layer
class Linear(nn.Linear, FHELayer):
    """Fully connected layer with an encrypted twin.

    ``method="diag"``: plaintext-weight products and rotate-and-sum per output (two levels, the
    default); ``method="bsgs"``: hybrid diagonals, baby-step giant-step (ONE level and far fewer
    rotations for many outputs);
    ``method="dft"``: the slot sum taken through the DC term of a homomorphic DFT (the ECG paper's
    method). Same maths either way. Computes in the input's precision.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, method: str = "diag") -> None:
        super().__init__(in_features, out_features, bias=bias)
        if method not in ("diag", "dft", "bsgs"):
            raise ParameterError(f"Linear method must be 'diag', 'bsgs' or 'dft', got {method!r}")
        self.method = method

    def extra_repr(self) -> str:
        return super().extra_repr() + f", method={self.method!r}, depth={_depth(self)}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = None if self.bias is None else self.bias.to(x.dtype)
        return torch.nn.functional.linear(x, self.weight.to(x.dtype), b)

    def fhe_spec(self) -> dict[str, Any]:
        return {
            "op": "linear",
            "method": self.method,
            "weight": self.weight.detach().double().cpu().numpy(),
            "bias": None if self.bias is None else self.bias.detach().double().cpu().numpy(),
        }


@register_layer
class AvgPool1d(nn.AvgPool1d, FHELayer):
    """Average pooling (no padding): rotations and additions, then one scalar product (1 level,
    folded into the next linear layer by the compiler when one follows)."""

    def __init__(self, kernel_size: int, stride: int | None = None) -> None:
        super().__init__(kernel_size, stride=stride)

    def fhe_spec(self) -> dict[str, Any]:
        k = self.kernel_size if isinstance(self.kernel_size, int) else self.kernel_size[0]
        s = self.stride if isinstance(self.stride, int) else self.stride[0]
        return {"op": "avgpool1d", "kernel": int(k), "stride": int(s)}


def _pool_args(v: Any, nd: int) -> tuple[int, ...]:
    return (int(v),) * nd if isinstance(v, int) else tuple(int(x) for x in v)


@register_layer
class AvgPool2d(nn.AvgPool2d, FHELayer):
    """2-D average pooling (no padding): window sums by rotations; the ``1/(kh*kw)`` is folded
    into the next conv / linear layer by the compiler (else one level)."""

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None) -> None:
        super().__init__(kernel_size, stride=stride)

    def fhe_spec(self) -> dict[str, Any]:
        return {"op": "avgpool2d", "kernel": _pool_args(self.kernel_size, 2), "stride": _pool_args(self.stride, 2)}


@register_layer
class AvgPool3d(nn.AvgPool3d, FHELayer):
    """3-D average pooling (no padding); see :class:`AvgPool2d`."""

    def __init__(self, kernel_size: int | tuple[int, int, int],
                 stride: int | tuple[int, int, int] | None = None) -> None:
        super().__init__(kernel_size, stride=stride)

    def fhe_spec(self) -> dict[str, Any]:
        return {"op": "avgpool3d", "kernel": _pool_args(self.kernel_size, 3), "stride": _pool_args(self.stride, 3)}


@register_layer
class GlobalAvgPool1d(nn.AdaptiveAvgPool1d, FHELayer):
    """Mean over the whole length axis, ``(n, c, L) -> (n, c, 1)`` (torch's
    ``AdaptiveAvgPool1d(1)``).

    Encrypted: a rotate-and-sum over the length axis in about ``2 log2(L)`` rotations and no
    level; the ``1/L`` is folded into the next conv / linear layer by the compiler (else one
    scalar product, one level).

    >>> import torch
    >>> GlobalAvgPool1d()(torch.tensor([[[1.0, 2.0, 6.0]]])).tolist()
    [[[3.0]]]
    """

    def __init__(self) -> None:
        super().__init__(1)

    def fhe_spec(self) -> dict[str, Any]:
        return {"op": "globalavgpool1d"}


@register_layer
class Flatten(nn.Flatten, FHELayer):
    """Flatten (channels, *spatial) -> features; free in the encrypted program (a layout change)."""

    def __init__(self) -> None:
        super().__init__(start_dim=1, end_dim=-1)

    def fhe_spec(self) -> dict[str, Any]:
        return {"op": "flatten"}


def _warn_range(layer: str, observed: float, bound: float) -> None:
    warnings.warn(
        f"{layer}: input magnitude {observed:.3g} exceeds the calibrated bound {bound:.3g}; the "
        "polynomial approximation is only valid inside the bound (the encrypted result will be "
        "wrong for such inputs). Re-run privkit.nn.calibrate on representative data.",
        RuntimeWarning,
        stacklevel=3,
    )


def forward_hook_names(model: nn.Module, kinds: tuple[type, ...]) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of the modules of the given kinds, in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kinds)]



def __getattr__(name: str) -> object:
    # the compatibility checks moved to nn/compat.py (which imports the layers from here); their
    # names still resolve from this module
    if name in ("Incompatibility", "check_fhe_compatible", "make_fhe_compatible"):
        from . import compat

        return getattr(compat, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
