"""The layer whitelist of saved programs (:mod:`privkit.fhe.artifact`): for each layer kind the
constructor arguments (with their types and bounds), the state tensors those arguments imply,
and how to rebuild the layer from data.

Every check here runs on untrusted input before anything is allocated: argument types are exact,
ints are bounded, the state a layer needs is computed from its arguments alone and compared
with the declared tensors, and box-convolution corners are checked against their kernel.

>>> from privkit import nn as pnn
>>> kind_of(pnn.Conv2d(1, 2, 3)), layer_args("Conv2d", pnn.Conv2d(1, 2, 3))["kernel_size"]
('Conv2d', [3, 3])
>>> sorted(expected_state("Square", {}))
['coeffs']
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import numpy as np

from ..errors import EnvelopeError, PrivkitError, UnsupportedLayerError

__all__ = ["LAYERS", "build_layer", "check_args", "expected_state", "kind_of", "layer_args"]

_MAX_DIM = 1 << 24
# int bounds keep a hostile file from asking for huge loops or allocations
_SMALL = {"degree": 64, "iterations": 32, "precision_bits": 64, "channels": 1 << 16, "n_boxes": 1 << 20}
_MAX_KERNEL = 1 << 12  # a kernel / stride / padding entry


class Ints:
    """Schema type: a list of exactly ``n`` bounded non-negative ints (an N-D size)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def ok(self, v: Any) -> bool:
        return (isinstance(v, list) and len(v) == self.n
                and all(type(x) is int and 0 <= x <= _MAX_KERNEL for x in v))


class Choice:
    """Schema type: one of a few strings."""

    def __init__(self, *values: str) -> None:
        self.values = values

    def ok(self, v: Any) -> bool:
        return type(v) is str and v in self.values


_BN = {"num_features": int, "eps": float, "momentum": (float, type(None)), "affine": bool,
       "track_running_stats": bool}


def _conv(n: int) -> dict[str, Any]:
    return {"in_channels": int, "out_channels": int, "kernel_size": Ints(n), "stride": Ints(n),
            "padding": Ints(n), "bias": bool}


def _box(n: int) -> dict[str, Any]:
    return {"in_channels": int, "out_channels": int, "kernel_size": Ints(n), "stride": Ints(n),
            "padding": (Ints(n), Choice("same", "valid")), "bias": bool, "tol": float,
            "max_boxes": (int, type(None)), "n_boxes": int}


# kind -> (module path, {arg: type})
LAYERS: dict[str, tuple[str, dict[str, Any]]] = {
    "Conv1d": ("privkit.nn", {"in_channels": int, "out_channels": int, "kernel_size": int,
                              "stride": int, "padding": int, "bias": bool, "method": str}),
    "Conv2d": ("privkit.nn", _conv(2)),
    "Conv3d": ("privkit.nn", _conv(3)),
    "Linear": ("privkit.nn", {"in_features": int, "out_features": int, "bias": bool, "method": str}),
    "AvgPool1d": ("privkit.nn", {"kernel_size": int, "stride": int}),
    "AvgPool2d": ("privkit.nn", {"kernel_size": Ints(2), "stride": Ints(2)}),
    "AvgPool3d": ("privkit.nn", {"kernel_size": Ints(3), "stride": Ints(3)}),
    "GlobalAvgPool1d": ("privkit.nn", {}),
    "Flatten": ("privkit.nn", {}),
    "PolyReLU": ("privkit.nn", {"degree": int, "mode": str, "precision_bits": int, "margin": float}),
    "PolyAct": ("privkit.nn", {"degree": int, "learnable": bool, "per_channel": bool,
                               "channels": (int, type(None))}),
    "Square": ("privkit.nn", {}),
    "ApproxMaxPool1d": ("privkit.nn", {"kernel_size": int, "stride": int, "method": str, "degree": int,
                                       "iterations": int, "margin": float}),
    "ApproxMaxPool2d": ("privkit.nn", {"kernel_size": Ints(2), "stride": Ints(2), "method": str,
                                       "degree": int, "iterations": int, "margin": float}),
    "BoxConv1d": ("privkit.nn", _box(1)),
    "BoxConv2d": ("privkit.nn", _box(2)),
    "BoxConv3d": ("privkit.nn", _box(3)),
    "BatchNorm1d": ("torch.nn", _BN),
    "BatchNorm2d": ("torch.nn", _BN),
    "BatchNorm3d": ("torch.nn", _BN),
    "Dropout": ("torch.nn", {"p": float}),
    "Identity": ("torch.nn", {}),
}


def _first(v: Any) -> int:
    return int(v[0] if isinstance(v, (tuple, list)) else v)


def _ints(v: Any, n: int) -> list[int]:
    return [int(x) for x in v] if isinstance(v, (tuple, list)) else [int(v)] * n


def kind_of(mod: Any) -> str:
    """The whitelisted kind of ``mod`` (its exact class), else :class:`UnsupportedLayerError`."""
    kind = type(mod).__name__
    entry = LAYERS.get(kind)
    if entry is None or type(mod) is not getattr(importlib.import_module(entry[0]), kind):
        raise UnsupportedLayerError(
            f"cannot save a program with a {type(mod).__module__}.{kind} layer: saved programs "
            f"hold only the layers {sorted(LAYERS)} (privkit.nn and folded torch layers)"
        )
    return kind


def layer_args(kind: str, m: Any) -> dict[str, Any]:
    """Constructor arguments of a whitelisted leaf layer, read from its attributes."""
    if kind == "Conv1d":
        return {"in_channels": m.in_channels, "out_channels": m.out_channels,
                "kernel_size": _first(m.kernel_size), "stride": _first(m.stride),
                "padding": _first(m.padding), "bias": m.bias is not None, "method": m.method}
    if kind in ("Conv2d", "Conv3d"):
        n = int(kind[-2])
        return {"in_channels": m.in_channels, "out_channels": m.out_channels,
                "kernel_size": _ints(m.kernel_size, n), "stride": _ints(m.stride, n),
                "padding": _ints(m.padding, n), "bias": m.bias is not None}
    if kind.startswith("BoxConv"):
        n = m.ndim
        return {"in_channels": m.in_channels, "out_channels": m.out_channels,
                "kernel_size": _ints(m.kernel_size, n), "stride": _ints(m.stride, n),
                "padding": m.padding if isinstance(m.padding, str) else _ints(m.padding, n),
                "bias": m.bias is not None, "tol": float(m.tol),
                "max_boxes": None if m.max_boxes is None else int(m.max_boxes), "n_boxes": m.num_boxes}
    if kind == "Linear":
        return {"in_features": m.in_features, "out_features": m.out_features,
                "bias": m.bias is not None, "method": m.method}
    if kind == "AvgPool1d":
        return {"kernel_size": _first(m.kernel_size), "stride": _first(m.stride)}
    if kind in ("AvgPool2d", "AvgPool3d"):
        n = int(kind[-2])
        return {"kernel_size": _ints(m.kernel_size, n), "stride": _ints(m.stride, n)}
    if kind == "PolyReLU":
        return {"degree": m.degree, "mode": m.mode, "precision_bits": m.precision_bits,
                "margin": float(m.margin)}
    if kind == "PolyAct":
        return {"degree": m.degree, "learnable": m.learnable, "per_channel": m.per_channel,
                "channels": int(m.coeffs.shape[0]) if m.per_channel else None}
    if kind in ("ApproxMaxPool1d", "ApproxMaxPool2d"):
        ks, st = (m.kernel_size, m.stride) if kind.endswith("1d") else (_ints(m.kernel_size, 2), _ints(m.stride, 2))
        return {"kernel_size": ks, "stride": st, "method": m.method,
                "degree": m.degree, "iterations": m.iterations, "margin": float(m.margin)}
    if kind.startswith("BatchNorm"):
        return {"num_features": m.num_features, "eps": float(m.eps),
                "momentum": None if m.momentum is None else float(m.momentum),
                "affine": bool(m.affine), "track_running_stats": bool(m.track_running_stats)}
    if kind == "Dropout":
        return {"p": float(m.p)}
    return {}


def expected_state(kind: str, a: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], str]]:
    """The state tensors (shape, dtype) a layer with these arguments has, computed from the
    arguments alone: checked against the file before any layer is constructed."""
    f = "float64"
    if kind in ("Conv1d", "Conv2d", "Conv3d"):
        ks = a["kernel_size"] if isinstance(a["kernel_size"], list) else [a["kernel_size"]]
        out = {"weight": ((a["out_channels"], a["in_channels"], *ks), f)}
        return out | ({"bias": ((a["out_channels"],), f)} if a["bias"] else {})
    if kind.startswith("BoxConv"):
        nb, ks = a["n_boxes"], tuple(a["kernel_size"])
        out = {"box_masks": ((nb, *ks), f), "box_pair": ((nb,), "int64"),
               "box_corners": ((nb, 2 * len(ks)), "int64"), "alpha": ((nb,), f)}
        return out | ({"bias": ((a["out_channels"],), f)} if a["bias"] else {})
    if kind == "Linear":
        out = {"weight": ((a["out_features"], a["in_features"]), f)}
        return out | ({"bias": ((a["out_features"],), f)} if a["bias"] else {})
    if kind in ("PolyReLU", "ApproxMaxPool1d", "ApproxMaxPool2d"):
        return {"bound_": ((), f), "frozen_": ((), "bool")}
    if kind == "PolyAct":
        rows = a["channels"] if a["per_channel"] else 1
        return {"coeffs": ((rows, a["degree"] + 1), f)}
    if kind == "Square":
        return {"coeffs": ((1, 3), f)}
    if kind.startswith("BatchNorm"):
        n = a["num_features"]
        out = {"weight": ((n,), f), "bias": ((n,), f)} if a["affine"] else {}
        if a["track_running_stats"]:
            out |= {"running_mean": ((n,), f), "running_var": ((n,), f),
                    "num_batches_tracked": ((), "int64")}
        return out
    return {}


def _bad(msg: str) -> EnvelopeError:
    err = EnvelopeError(f"program envelope: {msg}")
    err.reason = "payload"  # type: ignore[attr-defined]
    return err


def _type_ok(v: Any, t: Any) -> bool:
    if isinstance(t, (Ints, Choice)):
        return t.ok(v)
    if t is float:
        return type(v) in (float, int) and math.isfinite(v)
    return type(v) is t


def check_args(kind: str, args: Any, where: str) -> dict[str, Any]:
    """Exact argument names, exact types, bounded ints, finite floats; else EnvelopeError."""
    schema = LAYERS[kind][1]
    if not isinstance(args, dict) or set(args) != set(schema):
        raise _bad(f"{where}: {kind} arguments must be exactly {sorted(schema)}, got "
                   f"{sorted(args) if isinstance(args, dict) else type(args).__name__}")
    for k, typ in schema.items():
        v = args[k]
        if not any(_type_ok(v, t) for t in (typ if isinstance(typ, tuple) else (typ,))):
            raise _bad(f"{where}: argument {k}={v!r:.80} of {kind} has the wrong type or is out of range")
        if type(v) is int and not 0 <= v <= _SMALL.get(k, _MAX_DIM):
            raise _bad(f"{where}: argument {k}={v} of {kind} is out of range")
    if kind.startswith("BoxConv") and args["n_boxes"] > args["in_channels"] * args["out_channels"] * math.prod(
            args["kernel_size"]):
        raise _bad(f"{where}: {args['n_boxes']} boxes exceed the kernels' size")
    return args


def _box_grid(kind: str, a: dict[str, Any], arrays: dict[str, np.ndarray], where: str) -> Any:
    """The C_out x C_in grid of box sets from the saved corners, pairs and scales (validated)."""
    from .ops.boxes import Box, BoxFilterSet

    n, ks = len(a["kernel_size"]), tuple(a["kernel_size"])
    co, ci = a["out_channels"], a["in_channels"]
    pair, corners, alpha = arrays["box_pair"], arrays["box_corners"], arrays["alpha"]
    if pair.size and (pair.min() < 0 or pair.max() >= co * ci or np.any(np.diff(pair) < 0)):
        raise _bad(f"{where}: box channel pairs must be sorted and below {co * ci}")
    if not np.all(np.isfinite(alpha)):
        raise _bad(f"{where}: box scales are not finite")
    grid: list[list[list[Any]]] = [[[] for _ in range(ci)] for _ in range(co)]
    for p, c, s in zip(pair.tolist(), corners.tolist(), alpha.tolist()):
        lo, hi = tuple(c[:n]), tuple(c[n:])
        if not all(0 <= l < h <= k for l, h, k in zip(lo, hi, ks)):
            raise _bad(f"{where}: box {lo}-{hi} does not fit the kernel {ks}")
        o, i = divmod(p, ci)
        grid[o][i].append(Box(lo, hi, float(s)))
    return [[BoxFilterSet(ks, boxes) for boxes in row] for row in grid]


def build_layer(kind: str, args: dict[str, Any], arrays: dict[str, np.ndarray], where: str) -> Any:
    """Construct a checked layer (``check_args`` and the state shapes done) and load its state."""
    import torch

    cls = getattr(importlib.import_module(LAYERS[kind][0]), kind)
    kw = dict(args)
    state_keys = list(expected_state(kind, args))
    try:
        if kind.startswith("BoxConv"):
            kw.pop("n_boxes")
            pad = kw["padding"]
            mod = cls(**(kw | {"padding": pad, "boxsets": _box_grid(kind, args, arrays, where)}))
        elif kind == "PolyAct":
            mod = cls(None, degree=args["degree"], learnable=args["learnable"],
                      per_channel=args["per_channel"], channels=args["channels"])
        else:
            mod = cls(**kw)
    except (ValueError, TypeError, PrivkitError) as e:
        raise _bad(f"{where} ({kind}) rejects its arguments: {e}") from e
    state = {k: torch.from_numpy(np.array(arrays[k])) for k in state_keys}
    if kind.startswith("BoxConv") and not torch.equal(mod.box_masks.double(), state["box_masks"].double()):
        raise _bad(f"{where}: box masks disagree with the box corners")
    mod.double()
    mod.load_state_dict(state, strict=True)
    return mod
