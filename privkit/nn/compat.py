"""FHE compatibility of a torch model: the validator and its fixer (Opacus' ``ModuleValidator``
pattern).

:func:`check_fhe_compatible` lists every module the compiler cannot run, by qualified name, with
the fix (:class:`Incompatibility`); :func:`make_fhe_compatible` swaps torch layers for their
privkit twins in place, keeping the weights.

>>> import torch
>>> [str(p) for p in check_fhe_compatible(torch.nn.Sequential(torch.nn.ReLU()))]
['0 (ReLU): use privkit.nn.PolyReLU (make_fhe_compatible swaps it)']
"""

from __future__ import annotations

import dataclasses

from torch import nn

from ..errors import UnsupportedLayerError
from ..fhe.compiler import register_model_validator
from .layers import (
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    Conv1d,
    Conv2d,
    Conv3d,
    Flatten,
    GlobalAvgPool1d,
    Linear,
    _pool_args,
    registered_layers,
)

__all__ = ["Incompatibility", "check_fhe_compatible", "make_fhe_compatible"]


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
        nn.Conv2d: "use privkit.nn.Conv2d (make_fhe_compatible swaps it, keeping the weights)",
        nn.Conv3d: "use privkit.nn.Conv3d (make_fhe_compatible swaps it, keeping the weights)",
        nn.AvgPool2d: "use privkit.nn.AvgPool2d (make_fhe_compatible swaps it)",
        nn.AvgPool3d: "use privkit.nn.AvgPool3d (make_fhe_compatible swaps it)",
        nn.MaxPool2d: "use privkit.nn.ApproxMaxPool2d (make_fhe_compatible swaps it)",
        nn.AdaptiveAvgPool1d: "use privkit.nn.GlobalAvgPool1d (output size 1; make_fhe_compatible swaps it)",
    }


_CONTAINERS = (nn.Sequential,)
_PASSED = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity,
           nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _no_lowering_reason(mod: nn.Module) -> str:
    spec_fn = getattr(mod, "fhe_spec", None)
    if not callable(spec_fn):
        return "no encrypted equivalent in privkit"
    from ..fhe.compiler.lowering import registered_lowerings

    try:
        kind = spec_fn().get("op")
    except Exception as e:  # noqa: BLE001
        return f"its fhe_spec() failed: {e}"
    return (f"its fhe_spec() kind {kind!r} has no registered lowering; supported kinds: "
            f"{', '.join(sorted(registered_lowerings()))} (privkit.fhe.register_lowering adds one)")


def _has_registered_lowering(mod: nn.Module) -> bool:
    spec_fn = getattr(mod, "fhe_spec", None)
    if not callable(spec_fn):
        return False
    from ..fhe.compiler.lowering import registered_lowerings

    try:
        return spec_fn().get("op") in registered_lowerings()
    except Exception:  # noqa: BLE001 - a broken user spec is reported as unsupported
        return False


def check_fhe_compatible(model: nn.Module, *, raise_error: bool = False) -> list[Incompatibility]:
    """List every module the compiler cannot run, by qualified name (empty list: compatible).

    Supported: registered privkit layers, modules whose ``fhe_spec()`` names a kind registered
    with :func:`privkit.fhe.register_lowering`, ``torch.nn.BatchNorm1d/2d/3d`` (folded into the
    convolution or linear layer right before it at compile time, else one level), ``Dropout``
    and ``Identity`` (no-ops at inference), inside ``nn.Sequential`` containers.
    """
    problems: list[Incompatibility] = []
    fixes = _fixes()
    registered = tuple(registered_layers().values())
    for name, mod in model.named_modules():
        if isinstance(mod, registered):
            _check_layer_args(name, mod, problems)
            continue
        if isinstance(mod, _CONTAINERS) or isinstance(mod, _PASSED):
            continue
        if _has_registered_lowering(mod):  # a user layer with its own registered lowering
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
        reason = fix or _no_lowering_reason(mod)
        problems.append(Incompatibility(name, type(mod).__name__, reason))
    if raise_error and problems:
        raise UnsupportedLayerError(
            "the model cannot be compiled to an encrypted program:\n  "
            + "\n  ".join(str(p) for p in problems)
        )
    return problems


def _check_layer_args(name: str, mod: nn.Module, problems: list[Incompatibility]) -> None:
    if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        if set(mod.dilation) != {1} or mod.groups != 1 or mod.padding_mode != "zeros":
            problems.append(Incompatibility(name, type(mod).__name__,
                                            "only dilation=1, groups=1 and zero padding are supported"))
        if isinstance(mod.padding, str):
            problems.append(Incompatibility(name, type(mod).__name__, "give padding as an integer"))


def make_fhe_compatible(model: nn.Module) -> nn.Module:
    """Swap torch layers for their privkit twins in place (weights kept); returns the model.

    ReLU -> PolyReLU (calibrate it afterwards), MaxPool1d/2d -> ApproxMaxPool1d/2d, Conv1d/2d/3d,
    Linear, AvgPool1d/2d/3d, AdaptiveAvgPool1d(1) and Flatten -> the privkit classes (BatchNorm1d/2d/3d stay: the
    compiler folds them). Anything else is left for
    :func:`check_fhe_compatible` to report.
    """
    from .nonlinear import ApproxMaxPool1d, ApproxMaxPool2d, PolyReLU

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
        if t is nn.AdaptiveAvgPool1d and mod.output_size in (1, (1,)):
            return GlobalAvgPool1d()
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
        if t in (nn.Conv2d, nn.Conv3d) and mod.groups == 1 and not isinstance(mod.padding, str) \
                and set(mod.dilation) == {1} and mod.padding_mode == "zeros":
            cls = Conv2d if t is nn.Conv2d else Conv3d
            new = cls(mod.in_channels, mod.out_channels, mod.kernel_size, stride=mod.stride,
                      padding=mod.padding, bias=mod.bias is not None)
            new.load_state_dict(mod.state_dict())
            return new
        if t in (nn.AvgPool2d, nn.AvgPool3d) and not any(_pool_args(mod.padding, 1)):
            return (AvgPool2d if t is nn.AvgPool2d else AvgPool3d)(mod.kernel_size, mod.stride)
        if t is nn.MaxPool2d:
            return ApproxMaxPool2d(mod.kernel_size, mod.stride)
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


# compile() runs this before lowering: registered here because the compiler (fhe) sits below
# the layers (nn) and must not import them
register_model_validator(check_fhe_compatible)
