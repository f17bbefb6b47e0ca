"""Compile a ``torch.nn.Sequential`` of privkit layers into an :class:`EncryptedProgram`.

The compiler reads each layer's ``fhe_spec()`` and dispatches on its kind through the lowering
registry (:mod:`.lowering`; it never needs the layer classes). It checks the input shape with a
plaintext forward, folds a ``BatchNorm`` into the convolution or linear layer before it (weights
scaled, the shift ``beta`` and running mean into the bias), an average pool's ``1/k`` into the
next linear layer and an activation's requested scaling (:meth:`Lowering.prefold`) into the
layer before it, and plans:

* **packing**: the whole input in one ciphertext, channel ``c`` in a block of ``B`` slots,
  element ``(c, i, j[, k])`` at ``c*B + i*g_0 + j*g_1 [+ k*g_2]``; strides and pools multiply
  the gaps instead of compacting (no levels spent moving data);
* **levels**: each layer's cost (from its lowering); when they exceed the parameters,
  :class:`DepthExhaustedError` names the layer where levels run out and what would fit;
  ``params="auto"`` picks the smallest preset whose depth and slot count suffice;
* **keys**: the exact rotation steps used, so :meth:`EncryptedProgram.keygen` makes only those.

>>> import torch
>>> from privkit import nn as pnn, fhe
>>> model = torch.nn.Sequential(pnn.Conv1d(1, 2, 3), pnn.Flatten(), pnn.Linear(2 * 14, 2))
>>> program = fhe.compile(model, input_shape=(1, 16), params="auto")
>>> program.params.name, program.depth
('n8192', 3)
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ...errors import (
    DepthExhaustedError,
    ParameterError,
    ShapeError,
    UnsupportedLayerError,
)
from ..backend import Backend, Ciphertext
from ..ops import packed
from ..ops.packed import PackedLayout
from ..params import PRESETS, CKKSParams
from ..program import EncryptedProgram, Step
from .lowering import Lowering, PlanContext, get_lowering

__all__ = ["compile"]

_AUTO_ORDER = ("n8192", "n16384", "n32768")
_NOOPS = ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "Identity")
_BATCHNORMS = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d")


def _leaf_layers(model: Any) -> list[tuple[str, Any]]:
    import torch

    if not isinstance(model, torch.nn.Sequential):
        raise UnsupportedLayerError(
            f"fhe.compile takes a torch.nn.Sequential (nested Sequentials are fine), got "
            f"{type(model).__name__}; wrap the layers in torch.nn.Sequential"
        )
    return [(name, mod) for name, mod in model.named_modules() if name and not list(mod.children())]


def _check_forward(model: Any, input_shape: tuple[int, ...]) -> None:
    """Run the plaintext model once on zeros: a wrong input shape fails here, clearly."""
    import torch

    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, dtype=next(model.parameters()).dtype
                              if any(True for _ in model.parameters()) else torch.float32))
    except RuntimeError as e:
        raise ShapeError(f"the model does not accept input of shape {input_shape}: {e}") from e
    finally:
        model.train(was_training)


def _spec_of(name: str, mod: Any) -> dict[str, Any]:
    """The layer's ``fhe_spec()``; torch's no-ops and BatchNorms are described here."""
    tname = type(mod).__name__
    if tname in _NOOPS:
        return {"op": "identity"}
    if tname in _BATCHNORMS:
        if mod.running_mean is None:
            raise UnsupportedLayerError(
                f"{name}: {tname} without running statistics cannot be folded; use track_running_stats=True")
        gamma = mod.weight.detach().double().numpy() if mod.affine else np.ones(mod.num_features)
        beta = mod.bias.detach().double().numpy() if mod.affine else np.zeros(mod.num_features)
        scale = gamma / np.sqrt(mod.running_var.detach().double().numpy() + mod.eps)
        return {"op": "batchnorm", "scale": scale,
                "shift": beta - mod.running_mean.detach().double().numpy() * scale}
    if not callable(getattr(mod, "fhe_spec", None)):
        from .lowering import registered_lowerings

        raise UnsupportedLayerError(
            f"{name} ({tname}): no fhe_spec(), so no encrypted lowering; supported kinds: "
            f"{', '.join(sorted(registered_lowerings()))} (privkit.fhe.register_lowering adds one)")
    return mod.fhe_spec()


@dataclasses.dataclass
class _Item:
    name: str
    ref_name: str
    spec: dict[str, Any]
    low: Lowering


def _items(layers: list[tuple[str, Any]]) -> list[_Item]:
    out: list[_Item] = []
    for name, mod in layers:
        spec = _spec_of(name, mod)
        low = get_lowering(spec["op"], layer=f"{name} ({type(mod).__name__})")
        if spec["op"] == "batchnorm" and out and out[-1].low.affine and out[-1].ref_name == out[-1].name:
            # scale per output channel; bias (b - mean) * scale + beta (the shift carries both)
            out[-1].spec = out[-1].low.fold_output(out[-1].spec, spec["scale"], spec["shift"])
            out[-1].ref_name = name
            continue
        out.append(_Item(name, name, spec, low))
    return out


def _tile(v: Any, batch: int) -> Any:
    a = np.asarray(v, dtype=np.float64)
    return float(a) if a.ndim == 0 else np.tile(a.reshape(-1), batch)


def _max_padding(items: list[_Item]) -> int:
    return max([int(np.max(np.asarray(it.spec.get("padding", 0)))) for it in items] + [0])


def _input_layout(input_shape: tuple[int, ...], batch: int, pad: int, grow: int) -> PackedLayout:
    c0, spatial = input_shape[0] * batch, input_shape[1:]
    if len(spatial) == 1:
        block = grow << math.ceil(math.log2(spatial[0] + 2 * pad + 1))
        return PackedLayout(c0, spatial[0], 1, block, clean=True)
    ext = [n + 2 * pad * grow if (a and pad) else n for a, n in enumerate(spatial)]
    gaps = [1]
    for e in reversed(ext[1:]):
        gaps.insert(0, gaps[0] * e)
    block = grow << math.ceil(math.log2((spatial[0] + 2 * pad) * gaps[0]))
    return PackedLayout.grid(c0, tuple(spatial), tuple(gaps), block, clean=True)


def _next_computing(items: list[_Item], start: int) -> int | None:
    for j in range(start, len(items)):
        if not items[j].low.transparent:
            return j
    return None


def _sat_input(items: list[_Item], input_shape: tuple[int, ...]) -> Any:
    """The summed-area-table geometry of a first box convolution fed by the client's SAT."""
    from ..ops import sat as cs
    from ..ops.sat import geometry as sat_geometry_mod

    j = _next_computing(items, 0)
    if j is None or not items[j].spec["op"].startswith("box_conv"):
        raise ParameterError("input_sat=True needs a BoxConv1d/2d/3d as the first layer (the client "
                             "encrypts the summed-area table of its input)")
    spec = items[j].spec
    grid = sat_geometry_mod._grid(spec["boxsets"])
    nd = len(grid[0][0].shape)
    st = tuple(spec["stride"]) if isinstance(spec["stride"], (tuple, list)) else (int(spec["stride"]),) * nd
    pd = tuple(spec["padding"]) if isinstance(spec["padding"], (tuple, list)) else (int(spec["padding"]),) * nd
    items[j].spec = dict(spec, input_sat=tuple(input_shape[1:]))
    return cs.sat_geometry(input_shape[1:], grid[0][0].shape, st, pd)


def _plan(items: list[_Item], input_shape: tuple[int, ...], slots: int, batch: int = 1,
          grow: int = 1, sat: Any = None) -> tuple[list[Step], PackedLayout, int]:
    """Lower the layers for a given slot count. Returns steps, input layout, outputs."""
    if sat is not None:  # the client encrypts each channel's summed-area table
        block = grow << math.ceil(math.log2(sat.slots_needed_client_sat))
        layout = in_layout = PackedLayout.grid(input_shape[0] * batch, sat.sat_shape, sat.sat_strides, block,
                                               clean=True)
    else:
        layout = in_layout = _input_layout(input_shape, batch, _max_padding(items), grow)
    if in_layout.span > slots:
        raise ShapeError(f"the input of {input_shape} (x{batch}) needs {in_layout.span} slots; "
                         f"the ciphertext has {slots}")
    steps: list[Step] = []
    flat = False
    pending = 1.0  # an average pool's 1/k, folded into the next affine layer
    prefolds: dict[int, tuple[Any, Any]] = {}
    for i, it in enumerate(items):
        spec, low = it.spec, it.low
        nj = _next_computing(items, i + 1)
        notes = []
        ref_scale: Any = 1.0
        ref_shift: Any = 0.0
        if low.affine:
            spec = low.batched(spec, batch)
            if pending != 1.0:
                spec = low.fold_input(spec, pending)
                notes.append(f"x{pending:g} folded from the pool before")
                pending = 1.0
            pf = items[nj].low.prefold(items[nj].spec) if nj is not None else None
            if pf is not None:
                spec = low.fold_output(spec, _tile(pf[0], batch), _tile(pf[1], batch))
                prefolds[nj] = pf
                ref_scale, ref_shift = pf
                notes.append(f"{items[nj].name}'s input scaling folded in")
        if low.needs_clean(spec) and not layout.clean:
            steps.append(_mask_step(it.name + ".mask", layout))
            layout = dataclasses.replace(layout, clean=True)
        ctx = PlanContext(it.name, layout, slots, batch, flat, prefolds.get(i),
                          items[nj].spec["op"] if nj is not None else None,
                          nj is not None and items[nj].low.affine)
        lowered = low.plan(spec, ctx)
        flat = ctx.flat
        pending *= ctx.fold_forward
        if lowered is None:
            continue
        detail = lowered.detail + "".join(f" ({n})" for n in notes)
        steps.append(Step(it.name, lowered.kind or low.kind, int(lowered.depth), list(lowered.rotations),
                          lowered.run, lowered.out_layout, detail, ref_name=it.ref_name,
                          ref_scale=_mul(ref_scale, lowered.ref_scale), ref_shift=ref_shift))
        if lowered.out_layout is not None:
            layout = lowered.out_layout
    out = steps[-1].out_layout if steps else None
    if out is None or out.channels != 1 or out.ndim != 1 or out.gap != 1:
        raise UnsupportedLayerError(
            "the model must end with a privkit.nn.Linear layer (its outputs are the logits)"
        )
    return steps, in_layout, out.length


def _mul(a: Any, b: Any) -> Any:
    return a * b if not (np.isscalar(a) and np.isscalar(b)) else float(a) * float(b)


def _plan_fitting(items: list[_Item], input_shape: tuple[int, ...], slots: int,
                  batch: int, sat: Any = None) -> tuple[list[Step], PackedLayout, int]:
    """Plan with the smallest channel block that leaves room for every layer's padding (the
    reach of padding grows with the gap of later layers)."""
    grow = 1
    while True:
        try:
            return _plan(items, input_shape, slots, batch, grow, sat)
        except ShapeError as e:
            if "leaves no room for padding" not in str(e) or grow >= slots:
                raise
            grow *= 2


def _mask_step(name: str, layout: PackedLayout) -> Step:
    def run(be: Backend, ct: Ciphertext) -> Ciphertext:
        keep = np.zeros(layout.span)
        keep[packed.valid_slots(layout)] = 1.0
        return be.mul_plain(ct, keep)

    return Step(name, "mask", 1, [], run, layout, "zero the non-element slots before a padded conv")


#: checks run on a model before it is lowered (``fn(model, raise_error=True)``): privkit.nn
#: registers ``check_fhe_compatible`` when it is imported, which every model of privkit layers
#: has done; the compiler itself never imports the layers (it reads ``fhe_spec()`` only)
_MODEL_VALIDATORS: list[Callable[..., Any]] = []


def register_model_validator(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn(model, raise_error=True)`` on every model :func:`compile` receives, before
    lowering (it raises to refuse the model). Registering the same function twice is a no-op.

    >>> seen = []
    >>> def note(model, raise_error=True):
    ...     seen.append(type(model).__name__)
    >>> register_model_validator(note) is note
    True
    >>> _MODEL_VALIDATORS.remove(note)
    """
    if fn not in _MODEL_VALIDATORS:
        _MODEL_VALIDATORS.append(fn)
    return fn


def compile(model: Any, input_shape: tuple[int, ...], params: CKKSParams | str = "auto", *,
            batch: int = 1, input_sat: bool = False, max_ciphertexts: int | None = None,
            channels_per_ciphertext: int | None = None) -> EncryptedProgram:
    """Compile ``model`` (an ``nn.Sequential`` of privkit layers) for inputs of ``input_shape``.

    Args:
        model: the trained (and calibrated) torch model. It is copied; later changes to it do not
            affect the program.
        input_shape: one input without the batch dimension: ``(channels, length)``,
            ``(channels, height, width)`` or ``(channels, depth, height, width)``.
        params: a :class:`CKKSParams`, a preset name, or ``"auto"`` (the smallest preset that fits).
        batch: inputs packed into one ciphertext (consecutive channel groups, block-diagonal
            weights); ``encode_input`` then takes ``(batch, *input_shape)`` and
            ``decrypt_output`` returns ``(batch, out_features)``. Same levels, more slots.
        input_sat: the first layer is a box convolution and the client encrypts the summed-area
            table of each zero-padded input channel (``encode_input`` computes it): the server
            skips the prefix-sum rotations. Values grow to ``sum(|x|)`` of a channel.
        max_ciphertexts: the most ciphertexts one activation may use. ``None`` (default): when
            the channels of an activation do not fit one ciphertext, they are split over
            several (:mod:`.multi`); with ``params="auto"`` the packing (several ciphertexts at
            a smaller ring or one at a larger ring) is chosen by estimated latency
            (:mod:`.cost`) and :meth:`EncryptedProgram.plan_table` says why. ``1``: one
            ciphertext only (a model that does not fit raises :class:`ShapeError`).
        channels_per_ciphertext: force the split: at most this many channels per ciphertext
            (the program is multi-ciphertext even where one would fit; for tests and tuning).
    """
    if int(batch) < 1:
        raise ParameterError(f"batch must be >= 1, got {batch}")
    batch = int(batch)
    for validate in _MODEL_VALIDATORS:  # privkit.nn's lists every problem at once
        validate(model, raise_error=True)
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) == 1:
        input_shape = (1, input_shape[0])
    if not 2 <= len(input_shape) <= 4 or min(input_shape) < 1:
        raise ShapeError(f"input_shape must be (channels, *spatial) with 1-3 spatial axes, got {input_shape}")
    ref = copy.deepcopy(model).double().eval()
    _check_calibrated(ref)
    _check_forward(ref, input_shape)
    items = _items(_leaf_layers(ref))
    sat = _sat_input(items, input_shape) if input_sat else None
    candidates = [CKKSParams.preset(n) for n in _AUTO_ORDER] if params == "auto" else [CKKSParams.coerce(params)]
    if max_ciphertexts is not None and (type(max_ciphertexts) is not int or max_ciphertexts < 1):
        raise ParameterError(f"max_ciphertexts must be an integer >= 1 or None, got {max_ciphertexts!r}")
    if channels_per_ciphertext is not None and (type(channels_per_ciphertext) is not int
                                                or channels_per_ciphertext < 1):
        raise ParameterError(f"channels_per_ciphertext must be an integer >= 1 or None, got "
                             f"{channels_per_ciphertext!r}")
    if max_ciphertexts != 1 and (max_ciphertexts is not None or channels_per_ciphertext is not None
                                 or _needs_more_than_one(items, input_shape, candidates, batch, sat)):
        from .packing import compile_packed

        return compile_packed(ref, items, input_shape, candidates, params == "auto", batch, sat,
                              max_ciphertexts, channels_per_ciphertext)
    last_err: Exception | None = None
    for p in candidates:
        try:
            steps, in_layout, outs = _plan_fitting(items, input_shape, p.slots, batch, sat)
        except ShapeError as e:  # does not fit the slots: try a larger preset
            last_err = e
            continue
        need = sum(s.depth for s in steps)
        if need <= p.depth:
            # no lowering uses complex conjugation (the DFT paths keep real data in real slots)
            return EncryptedProgram(p, steps, in_layout, input_shape, outs // batch, False, reference=ref,
                                    batch=batch, input_encoding=("sat", sat) if sat else None)
        last_err = _depth_error(steps, p, auto=params == "auto")
    assert last_err is not None
    if isinstance(last_err, ShapeError) and params == "auto":
        raise ShapeError(f"the model does not fit any preset: {last_err}") from last_err
    raise last_err


def _needs_more_than_one(items: list[_Item], input_shape: tuple[int, ...], candidates: list[CKKSParams],
                        batch: int, sat: Any) -> bool:
    """True when no candidate holds the model in one ciphertext for lack of slots (then the
    multi-ciphertext packing is considered; a single-ciphertext model compiles as before)."""
    try:
        _plan_fitting(items, input_shape, candidates[0].slots, batch, sat)
    except ShapeError:
        return True
    except UnsupportedLayerError:
        return False
    return False


def _depth_error(steps: list[Step], p: CKKSParams, auto: bool) -> DepthExhaustedError:
    used = 0
    where = steps[-1].name
    for s in steps:
        if used + s.depth > p.depth:
            where = s.name
            break
        used += s.depth
    need = sum(s.depth for s in steps)
    costly = sorted(steps, key=lambda s: -s.depth)[:3]
    fits = ", ".join(n for n in PRESETS if CKKSParams.preset(n).depth >= need) or "none fits"
    hint = (
        ("no preset is deep enough; " if auto else f"use a preset with at least {need} levels ({fits}), or ")
        + "lower the PolyReLU degree / precision or remove a block; the costliest layers are "
        + ", ".join(f"{s.name} ({s.depth} level{'' if s.depth == 1 else 's'})" for s in costly)
    )
    return DepthExhaustedError(needed=need, available=p.depth, where=f"layer {where!r} ({p.name})", hint=hint)


def _check_calibrated(model: Any) -> None:
    missing = [n for n, m in model.named_modules() if getattr(m, "is_calibrated", True) is False]
    if missing:
        raise ParameterError(
            f"layers {missing} have no calibrated input range; run privkit.nn.calibrate(model, data) "
            "on representative inputs before compiling"
        )
