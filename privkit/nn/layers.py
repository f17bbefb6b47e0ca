"""Torch layers whose ``forward`` is the exact plaintext twin of their encrypted form.

Each layer exports a ``fhe_spec()`` (a plain dict) that the compiler reads; the compiler never
needs the layer classes themselves. ``method=`` arguments select the encrypted algorithm, never
the maths: ``Conv1d(method="freq")`` and ``Conv1d(method="spatial")`` compute the same function.

Layers are enrolled with :func:`register_layer`, which also enrols them in the shared contract
tests (every registered layer must compile and match its torch forward).

>>> import torch
>>> from privkit import nn as pnn
>>> m = torch.nn.Sequential(pnn.Conv1d(1, 2, 3), pnn.Flatten(), pnn.Linear(2 * 6, 2))
>>> m(torch.zeros(4, 1, 8)).shape
torch.Size([4, 2])
>>> [type(x).__name__ for x in pnn.check_fhe_compatible(torch.nn.Sequential(torch.nn.ReLU()))]
['Incompatibility']
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import torch
from torch import nn

from ..errors import ParameterError, UnsupportedLayerError

__all__ = [
    "Conv1d",
    "Linear",
    "AvgPool1d",
    "Flatten",
    "register_layer",
    "registered_layers",
    "FHELayer",
    "check_fhe_compatible",
    "make_fhe_compatible",
    "Incompatibility",
]

_REGISTRY: dict[str, type[nn.Module]] = {}


def register_layer(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: enrol a layer with the compiler and the contract tests."""
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
        return super().extra_repr() + f", method={self.method!r}, depth=1"

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


@register_layer
class Linear(nn.Linear, FHELayer):
    """Fully connected layer with an encrypted twin.

    ``method="diag"``: plaintext-weight products and rotate-and-sum (fast, the default);
    ``method="dft"``: the slot sum taken through the DC term of a homomorphic DFT (the ECG paper's
    method). Same maths either way. Computes in the input's precision.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, method: str = "diag") -> None:
        super().__init__(in_features, out_features, bias=bias)
        if method not in ("diag", "dft"):
            raise ParameterError(f"Linear method must be 'diag' or 'dft', got {method!r}")
        self.method = method

    def extra_repr(self) -> str:
        return super().extra_repr() + f", method={self.method!r}, depth=2"

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


@register_layer
class Flatten(nn.Flatten, FHELayer):
    """Flatten (channels, length) -> features; free in the encrypted program (a layout change)."""

    def __init__(self) -> None:
        super().__init__(start_dim=1, end_dim=-1)

    def fhe_spec(self) -> dict[str, Any]:
        return {"op": "flatten"}


# -- validation ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Incompatibility:
    """One module that cannot be compiled, with its qualified name and the fix."""

    name: str
    module_type: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name or '<model>'} ({self.module_type}): {self.reason}"


def _fixes() -> dict[type[nn.Module], str]:
    return {
        nn.ReLU: "use privkit.nn.PolyReLU (make_fhe_compatible swaps it)",
        nn.MaxPool1d: "use privkit.nn.ApproxMaxPool1d (make_fhe_compatible swaps it)",
        nn.AvgPool1d: "use privkit.nn.AvgPool1d (make_fhe_compatible swaps it)",
        nn.Conv1d: "use privkit.nn.Conv1d (make_fhe_compatible swaps it, keeping the weights)",
        nn.Linear: "use privkit.nn.Linear (make_fhe_compatible swaps it, keeping the weights)",
        nn.Flatten: "use privkit.nn.Flatten (make_fhe_compatible swaps it)",
    }


_CONTAINERS = (nn.Sequential,)


def check_fhe_compatible(model: nn.Module, *, raise_error: bool = False) -> list[Incompatibility]:
    """List every module the compiler cannot run, by qualified name (empty list: compatible).

    Supported: registered privkit layers, ``torch.nn.BatchNorm1d`` right after a convolution or
    linear layer (folded into it at compile time), ``Dropout`` and ``Identity`` (no-ops at
    inference), inside ``nn.Sequential`` containers.
    """
    problems: list[Incompatibility] = []
    fixes = _fixes()
    registered = tuple(_REGISTRY.values())
    for name, mod in model.named_modules():
        if isinstance(mod, registered):
            _check_layer_args(name, mod, problems)
            continue
        if isinstance(mod, _CONTAINERS) or isinstance(mod, (nn.Dropout, nn.Identity, nn.BatchNorm1d)):
            continue
        if name == "" and not list(mod.children()):
            problems.append(Incompatibility(name, type(mod).__name__, "not a privkit layer"))
            continue
        if name == "":
            problems.append(
                Incompatibility(
                    name, type(mod).__name__,
                    "the compiler runs nn.Sequential models; wrap the layers in torch.nn.Sequential",
                )
            )
            continue
        fix = next((v for k, v in fixes.items() if type(mod) is k), None)
        reason = fix or "no encrypted equivalent in privkit"
        problems.append(Incompatibility(name, type(mod).__name__, reason))
    if raise_error and problems:
        raise UnsupportedLayerError(
            "the model cannot be compiled to an encrypted program:\n  "
            + "\n  ".join(str(p) for p in problems)
        )
    return problems


def _check_layer_args(name: str, mod: nn.Module, problems: list[Incompatibility]) -> None:
    if isinstance(mod, nn.Conv1d):
        if mod.dilation[0] != 1 or mod.groups != 1 or mod.padding_mode != "zeros":
            problems.append(Incompatibility(name, type(mod).__name__,
                                            "only dilation=1, groups=1 and zero padding are supported"))
        if isinstance(mod.padding, str):
            problems.append(Incompatibility(name, type(mod).__name__, "give padding as an integer"))


def make_fhe_compatible(model: nn.Module) -> nn.Module:
    """Swap torch layers for their privkit twins in place (weights kept); returns the model.

    ReLU -> PolyReLU (calibrate it afterwards), MaxPool1d -> ApproxMaxPool1d, Conv1d, Linear,
    AvgPool1d and Flatten -> the privkit classes. Anything else is left for
    :func:`check_fhe_compatible` to report.
    """
    from .nonlinear import ApproxMaxPool1d, PolyReLU

    def convert(mod: nn.Module) -> nn.Module | None:
        t = type(mod)
        if t is nn.ReLU:
            return PolyReLU()
        if t is nn.MaxPool1d:
            k = mod.kernel_size if isinstance(mod.kernel_size, int) else mod.kernel_size[0]
            s = mod.stride if isinstance(mod.stride, int) else mod.stride[0]
            return ApproxMaxPool1d(k, s)
        if t is nn.AvgPool1d:
            return AvgPool1d(mod.kernel_size[0], mod.stride[0])
        if t is nn.Flatten:
            return Flatten()
        if t is nn.Conv1d:
            new = Conv1d(mod.in_channels, mod.out_channels, mod.kernel_size[0], stride=mod.stride[0],
                         padding=mod.padding[0] if not isinstance(mod.padding, str) else 0,
                         bias=mod.bias is not None)
            new.load_state_dict(mod.state_dict())
            return new
        if t is nn.Linear:
            new = Linear(mod.in_features, mod.out_features, bias=mod.bias is not None)
            new.load_state_dict(mod.state_dict())
            return new
        return None

    def walk(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            new = convert(child)
            if new is not None:
                setattr(parent, name, new)
            else:
                walk(child)

    walk(model)
    return model


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

