"""The lowering registry: one place per layer kind saying how it runs encrypted.

A layer describes itself to the compiler with ``fhe_spec()``, a plain dict whose ``"op"`` names
its *kind* (``"conv2d"``, ``"polyact"``...). For each kind a :class:`Lowering` registered with
:func:`register_lowering` declares

* :meth:`Lowering.depth`: the levels the layer consumes (the ONE source of depth: layers'
  ``extra_repr`` and the compiler's level plan both ask it);
* :meth:`Lowering.plan`: given the spec and a :class:`PlanContext` (the packed layout of its
  input, the slot count, what the layers around it folded), a :class:`Lowered` with the levels,
  the rotation steps, the output layout and the ``run(backend, ct)`` function;
* multi-ciphertext packing (activations wider than one ciphertext, channels split in groups):
  ``groups = "channelwise"`` for layers that act on each channel alone (run once per group on a
  sub-spec from :meth:`Lowering.split`), ``groups = "mixing"`` for affine layers whose weight is
  ``(out, in, ...)`` (convolutions, a Linear after Flatten: per output group, the sum over input
  groups of the layer on the sub-weight); the default ``None`` refuses multi-ciphertext programs
  with a clear error, so user lowerings keep working for single-ciphertext programs;
* optional folds: ``affine = True`` for layers whose spec carries ``weight`` (output channels
  first) and ``bias``, so that a following BatchNorm, an average pool's ``1/k`` and the next
  activation's :meth:`Lowering.prefold` are folded into them; ``transparent = True`` for layout
  changes that compute nothing (``Flatten``, ``Dropout``).

The compiler dispatches on the kind only; it never imports layer classes. A user layer becomes
compilable by giving it ``fhe_spec()`` and registering a lowering for its kind:

>>> import numpy as np
>>> from privkit import fhe
>>> @fhe.register_lowering("double_it")
... class DoubleIt(fhe.Lowering):
...     def depth(self, spec):
...         return 1
...     def plan(self, spec, ctx):
...         return fhe.Lowered(depth=1, rotations=[], out_layout=ctx.layout,
...                            run=lambda be, ct: be.mul_plain(ct, 2.0), detail="x2")
>>> "double_it" in fhe.registered_lowerings()
True
>>> fhe.unregister_lowering("double_it")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from ...errors import ParameterError, UnsupportedLayerError
from ..backend import Backend, Ciphertext
from ..ops.packed import PackedLayout

__all__ = [
    "Lowering",
    "Lowered",
    "PlanContext",
    "register_lowering",
    "unregister_lowering",
    "registered_lowerings",
    "get_lowering",
    "lowering_depth",
]


@dataclasses.dataclass
class Lowered:
    """What one layer becomes: its level cost, rotations, output layout and encrypted function."""

    depth: int
    rotations: list[int]
    out_layout: PackedLayout | None
    run: Callable[[Backend, Ciphertext], Ciphertext]
    detail: str = ""
    #: the encrypted output equals ``ref_scale * torch_output + ref_shift`` (per channel allowed)
    ref_scale: Any = 1.0
    ref_shift: Any = 0.0
    kind: str = ""


@dataclasses.dataclass
class PlanContext:
    """What a lowering sees of the network around its layer while the compiler plans."""

    name: str
    layout: PackedLayout
    slots: int
    batch: int = 1
    #: a Flatten came before (the data are features, not channels)
    flat: bool = False
    #: ``(scale, shift)`` the affine layer before already applied for this layer (see prefold)
    prefold: tuple[Any, Any] | None = None
    #: the kind of the next layer that computes something (None at the end)
    next_kind: str | None = None
    #: True when the next computing layer is affine (a pool's 1/k can be folded into it)
    next_is_affine: bool = False
    #: set by a lowering: multiply the next affine layer's weights by this (an average pool's 1/k)
    fold_forward: float = 1.0

    def channel_vector(self, values: Any, layout: PackedLayout | None = None) -> Any:
        """Per-channel values (one per channel of ONE input) -> slot vector on ``layout``'s
        elements (tiled over the batch); a scalar stays a scalar."""
        v = np.asarray(values, dtype=np.float64)
        if v.ndim == 0 or v.size == 1:
            return float(v.reshape(-1)[0])
        lay = layout or self.layout
        v = np.tile(v.reshape(-1), self.batch)
        from ..ops.packed import valid_slots

        pos = valid_slots(lay)
        if v.size == lay.channels:
            out = np.zeros(lay.span)
            out[pos] = v[:, None]
            return out
        if lay.channels == 1 and v.size == lay.length:  # features of a Linear output
            out = np.zeros(lay.span)
            out[pos[0]] = v
            return out
        raise ParameterError(f"{self.name}: {v.size} per-channel values for a layout of {lay.channels} channels")


class Lowering:
    """How one layer kind runs encrypted. Subclass it and register it with
    :func:`register_lowering`; the default methods describe a layer that changes nothing."""

    kind: str = ""
    #: the spec has ``weight`` (output channels first) and ``bias``: folds go into it
    affine: bool = False
    #: computes nothing (a layout change or a no-op at inference)
    transparent: bool = False
    #: multi-ciphertext support: "channelwise", "mixing" or None (refused; see the module doc)
    groups: str | None = None

    def depth(self, spec: dict[str, Any]) -> int | None:
        """Levels the layer consumes on its own (no folds from the layers around it); None when
        they depend on the input's size (then the compiled program's plan says)."""
        raise NotImplementedError

    def plan(self, spec: dict[str, Any], ctx: PlanContext) -> Lowered | None:
        """The lowered layer for input layout ``ctx.layout`` (None: nothing to run)."""
        raise NotImplementedError

    def prefold(self, spec: dict[str, Any]) -> tuple[Any, Any] | None:
        """``(scale, shift)`` (scalars or per-channel arrays) that the affine layer right before
        should apply to its output so this layer is cheaper; the compiler then passes them back
        in ``ctx.prefold``. None: no fold wanted."""
        return None

    def needs_clean(self, spec: dict[str, Any]) -> bool:
        """True when the input's non-element slots must be zero (the compiler masks them)."""
        return False

    def split(self, spec: dict[str, Any], out: slice, inp: slice, first: bool) -> dict[str, Any]:
        """The spec acting on one channel group (multi-ciphertext packing).

        ``"channelwise"`` layers get ``out == inp`` (the group's channels) and return the spec of
        the layer on those channels (the default returns ``spec``: nothing per channel).
        ``"mixing"`` layers get the output channels ``out`` and the input channels ``inp``
        (for a Linear after Flatten, ``inp`` indexes its input *features*) and return the spec
        with ``weight[out, inp]``; ``first`` is True for one input group only, which keeps the
        bias (the partial results are summed).
        """
        if self.groups == "mixing":
            w = np.asarray(spec["weight"], float)
            b = spec.get("bias")
            return dict(spec, weight=w[out, inp], bias=None if (b is None or not first) else np.asarray(b, float)[out])
        return spec

    # -- folds into affine layers (used when ``affine`` is True) ----------------------------------
    def fold_output(self, spec: dict[str, Any], scale: Any, shift: Any) -> dict[str, Any]:
        """The spec of ``scale * layer(x) + shift`` (scalars or one value per output channel):
        a BatchNorm after the layer, or the next activation's :meth:`prefold`."""
        w = np.asarray(spec["weight"], float)
        b = np.zeros(w.shape[0]) if spec["bias"] is None else np.asarray(spec["bias"], float)
        s = np.asarray(scale, dtype=np.float64)
        return dict(spec, weight=w * (s.reshape((-1,) + (1,) * (w.ndim - 1)) if s.ndim else float(s)),
                    bias=b * s + np.asarray(shift, dtype=np.float64))

    def fold_input(self, spec: dict[str, Any], factor: float) -> dict[str, Any]:
        """The spec of ``layer(factor * x)`` (an average pool's 1/k before it)."""
        return dict(spec, weight=np.asarray(spec["weight"], float) * factor)

    def batched(self, spec: dict[str, Any], batch: int) -> dict[str, Any]:
        """The spec acting on ``batch`` inputs in consecutive channel groups (block-diagonal)."""
        if batch == 1:
            return spec
        w = np.asarray(spec["weight"], float)
        big = np.zeros((w.shape[0] * batch, w.shape[1] * batch) + w.shape[2:])
        for j in range(batch):
            big[j * w.shape[0] : (j + 1) * w.shape[0], j * w.shape[1] : (j + 1) * w.shape[1]] = w
        bias = None if spec["bias"] is None else np.tile(spec["bias"], batch)
        return dict(spec, weight=big, bias=bias)


_REGISTRY: dict[str, Lowering] = {}


def register_lowering(*kinds: str) -> Callable[[type[Lowering]], type[Lowering]]:
    """Class decorator: the lowering of the layer kinds ``kinds`` (``fhe_spec()["op"]``).

    Registering a kind enrols it in the compiler and in the contract tests (every registered
    kind must have a property test against its torch forward).
    """
    if not kinds or not all(isinstance(k, str) and k for k in kinds):
        raise ParameterError("register_lowering needs at least one layer kind (a non-empty string)")

    def deco(cls: type[Lowering]) -> type[Lowering]:
        if not (isinstance(cls, type) and issubclass(cls, Lowering)):
            raise ParameterError(f"register_lowering decorates a Lowering subclass, got {cls!r}")
        for k in kinds:
            inst = cls()
            inst.kind = k
            _REGISTRY[k] = inst
        return cls

    return deco


def unregister_lowering(kind: str) -> None:
    """Remove a registered kind (for tests and user plug-ins)."""
    _REGISTRY.pop(kind, None)


def _ensure_rules() -> None:
    from . import rules  # noqa: F401  (registers the built-in lowerings)


def registered_lowerings() -> dict[str, Lowering]:
    """Kind -> lowering of every registered layer kind."""
    _ensure_rules()
    return dict(_REGISTRY)


def get_lowering(kind: str, layer: str = "") -> Lowering:
    """The lowering of ``kind``; :class:`UnsupportedLayerError` naming the layer and the
    supported kinds when there is none."""
    _ensure_rules()
    if kind not in _REGISTRY:
        raise UnsupportedLayerError(
            f"{layer + ': ' if layer else ''}layer kind {kind!r} has no encrypted lowering; supported "
            f"kinds: {', '.join(sorted(_REGISTRY))} (privkit.fhe.register_lowering adds one)"
        )
    return _REGISTRY[kind]


def lowering_depth(spec: dict[str, Any]) -> int | None:
    """Levels a layer with this ``fhe_spec()`` consumes on its own (what layers report)."""
    return get_lowering(spec["op"]).depth(spec)
