"""Compile a ``torch.nn.Sequential`` of privkit layers into an :class:`EncryptedProgram`.

The compiler reads each layer's ``fhe_spec()`` (it never needs the layer classes), checks the
input shape with a plaintext forward, folds ``BatchNorm1d`` into the convolution or linear layer
before it (and an average pool's 1/k and a PolyReLU's range into the linear layers around them),
and plans:

* **packing**: the whole input in one ciphertext, channel ``c`` in a block of ``B`` slots
  (``B`` = next power of two of the input length plus padding); strides and pools multiply the
  gap between elements instead of compacting (no levels spent moving data);
* **levels**: each layer's cost; when they exceed the parameters, :class:`DepthExhaustedError`
  names the layer where levels run out and what would fit; ``params="auto"`` picks the smallest
  preset whose depth and slot count suffice;
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
from typing import Any

import numpy as np

from ..errors import DepthExhaustedError, ParameterError, ShapeError, UnsupportedLayerError
from .backend import Backend, Ciphertext, Layout
from .ops import packed
from .ops.packed import PackedLayout
from .params import PRESETS, CKKSParams
from .program import EncryptedProgram, Step

__all__ = ["compile"]

_AUTO_ORDER = ("n8192", "n16384", "n32768")


def _leaf_layers(model: Any) -> list[tuple[str, Any]]:
    import torch

    if not isinstance(model, torch.nn.Sequential):
        raise UnsupportedLayerError(
            f"fhe.compile takes a torch.nn.Sequential (nested Sequentials are fine), got "
            f"{type(model).__name__}; wrap the layers in torch.nn.Sequential"
        )
    out = []
    for name, mod in model.named_modules():
        if name and not list(mod.children()):
            out.append((name, mod))
    return out


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


def _fold_batchnorm(spec: dict[str, Any], bn: Any) -> dict[str, Any]:
    """Fold an eval-mode BatchNorm1d into the preceding conv / linear spec."""
    gamma = bn.weight.detach().double().numpy() if bn.affine else np.ones(bn.num_features)
    beta = bn.bias.detach().double().numpy() if bn.affine else np.zeros(bn.num_features)
    if bn.running_mean is None:
        raise UnsupportedLayerError(
            "BatchNorm1d without running statistics cannot be folded; use track_running_stats=True"
        )
    mean = bn.running_mean.detach().double().numpy()
    var = bn.running_var.detach().double().numpy()
    scale = gamma / np.sqrt(var + bn.eps)
    w = spec["weight"] * (scale[:, None, None] if spec["weight"].ndim == 3 else scale[:, None])
    b = spec["bias"] if spec["bias"] is not None else np.zeros(len(scale))
    return dict(spec, weight=w, bias=(b - mean) * scale + beta)


def _affine_step(name: str, scale: np.ndarray, shift: np.ndarray, layout: PackedLayout) -> Step:
    """Per-channel affine map (a BatchNorm that cannot be folded): one level."""
    slots_needed = layout.span

    def run(be: Backend, ct: Ciphertext) -> Ciphertext:
        sc = np.zeros(be.slots)
        sh = np.zeros(be.slots)
        pos = packed.valid_slots(layout)
        sc[pos] = scale[:, None]
        sh[pos] = shift[:, None]
        return be.add_plain(be.mul_plain(ct, sc[: max(slots_needed, 1)]), sh[: max(slots_needed, 1)])

    return Step(name, "affine", 1, [], run, layout, "batch norm (not folded)")


def _batched(spec: dict[str, Any], batch: int) -> dict[str, Any]:
    """Block-diagonal weights so ``batch`` inputs in consecutive channel groups run at once."""
    if batch == 1 or spec["op"] not in ("conv1d", "linear"):
        return spec
    w = spec["weight"]
    big = np.zeros((w.shape[0] * batch, w.shape[1] * batch) + w.shape[2:])
    for j in range(batch):
        big[j * w.shape[0] : (j + 1) * w.shape[0], j * w.shape[1] : (j + 1) * w.shape[1]] = w
    bias = None if spec["bias"] is None else np.tile(spec["bias"], batch)
    return dict(spec, weight=big, bias=bias)


def _plan(layers: list[tuple[str, Any]], input_shape: tuple[int, int], slots: int, batch: int = 1,
          grow: int = 1) -> tuple[list[Step], PackedLayout, int]:
    """Lower the layers for a given slot count. Returns steps, input layout, outputs."""
    from ..nn import nonlinear as nl

    c0, l0 = input_shape
    c0 *= batch
    pads = [m.fhe_spec().get("padding", 0) for _, m in layers if hasattr(m, "fhe_spec")]
    block = grow << math.ceil(math.log2(l0 + 2 * max(pads + [0]) + 1))
    layout = PackedLayout(c0, l0, 1, block, clean=True)
    in_layout = layout
    steps: list[Step] = []
    flat: tuple[int, ...] | None = None
    out_features = 0
    pending_scale = 1.0  # an average pool's 1/k, folded into the next linear layer
    prescaled = False  # the previous conv already divided by the next PolyReLU's bound
    i = 0
    while i < len(layers):
        name, mod = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        tname = type(mod).__name__
        if tname in ("Dropout", "Identity"):
            i += 1
            continue
        if tname == "BatchNorm1d":
            # not preceded by a foldable layer (those consume their BN below)
            if flat is not None:
                raise UnsupportedLayerError(f"{name}: BatchNorm1d after Flatten must follow a Linear layer")
            scale = (mod.weight.detach().double().numpy() if mod.affine else 1.0) / np.sqrt(
                mod.running_var.detach().double().numpy() + mod.eps)
            shift = (mod.bias.detach().double().numpy() if mod.affine else 0.0) - mod.running_mean.detach().double().numpy() * scale
            steps.append(_affine_step(name, np.broadcast_to(scale, (layout.channels,)),
                                      np.broadcast_to(shift, (layout.channels,)), layout))
            prescaled = False
            layout = dataclasses.replace(layout, clean=False)
            i += 1
            continue
        if not hasattr(mod, "fhe_spec"):
            raise UnsupportedLayerError(f"{name}: {tname} has no encrypted form (see check_fhe_compatible)")
        spec = mod.fhe_spec()
        op = spec["op"]
        ref_name = name
        if op in ("conv1d", "linear") and nxt is not None and type(nxt[1]).__name__ == "BatchNorm1d":
            spec = _fold_batchnorm(spec, nxt[1])
            ref_name = nxt[0]
            i += 1
        if op in ("conv1d", "linear") and pending_scale != 1.0:
            spec = dict(spec, weight=spec["weight"] * pending_scale)
        relu_fold = 1.0
        if op in ("conv1d", "linear"):
            relu_fold = _relu_prescale(layers, i + 1)
            if relu_fold != 1.0:  # y = x / B here; the PolyReLU evaluates B * p1(y) (same maths)
                spec = dict(spec, weight=spec["weight"] * relu_fold,
                            bias=None if spec["bias"] is None else spec["bias"] * relu_fold)
        spec = _batched(spec, batch)
        if op != "relu":
            prescaled = prescaled and op in ("flatten",)
        if op == "conv1d":
            if flat is not None:
                raise UnsupportedLayerError(f"{name}: Conv1d after Flatten is not supported")
            pre: list[Step] = []
            if spec["padding"] and not layout.clean:
                pre.append(_mask_step(name + ".mask", layout))
                layout = dataclasses.replace(layout, clean=True)
            w, b, s, p = spec["weight"], spec["bias"], spec["stride"], spec["padding"]
            lay_in = layout
            out_lay = packed._conv_plan(w, lay_in, s, p, slots)[0]
            rots = packed.conv1d_packed_rotations(w.shape, lay_in, s, p, slots)
            if spec["method"] == "freq":
                step = _conv_freq_step(name, spec, lay_in, out_lay, slots)
            else:
                def run(be, ct, w=w, b=b, s=s, p=p, lay_in=lay_in):
                    return packed.conv1d_packed(be, ct, w, b, lay_in, s, p, section="conv")[0]

                step = Step(name, "conv1d", 1, rots, run, out_lay,
                            f"{w.shape[1]}->{w.shape[0]} ch, k={w.shape[2]}, stride {s}, pad {p}, spatial")
            step.ref_name = ref_name
            step.ref_scale = relu_fold
            if pending_scale != 1.0:
                step.detail += f" (x{pending_scale:g} folded from the pool before)"
                pending_scale = 1.0
            if relu_fold != 1.0:
                step.detail += f" (x{relu_fold:.3g}: the next PolyReLU's range)"
            steps += pre + [step]
            prescaled = relu_fold != 1.0
            layout = dataclasses.replace(out_lay, clean=True)
        elif op == "relu":
            fn, depth, detail = nl.lower_relu(spec, prescaled=prescaled)
            st = Step(name, "polyrelu", depth, [], fn, layout, detail)
            st.ref_name = ref_name
            steps.append(st)
            layout = dataclasses.replace(layout, clean=False)
        elif op == "maxpool1d":
            lay_in = layout
            out_lay = packed._pool_layout(lay_in, spec["kernel"], spec["stride"])
            fn, depth, rots, detail = nl.lower_maxpool(spec, lay_in)
            st = Step(name, "maxpool1d", depth, rots, fn, out_lay, detail)
            st.ref_name = ref_name
            steps.append(st)
            layout = dataclasses.replace(out_lay, clean=False)
        elif op == "avgpool1d":
            k, s = spec["kernel"], spec["stride"]
            lay_in = layout
            fold = _next_is_linear(layers, i + 1)

            def run(be, ct, k=k, s=s, lay_in=lay_in, fold=fold):
                out = packed.sum_pool_packed(be, ct, lay_in, k, s, section="sum")[0]
                return out if fold else be.mul_plain(out, 1.0 / k)

            out_lay = packed._pool_layout(lay_in, k, s)
            st = Step(name, "avgpool1d", 0 if fold else 1, [j * lay_in.gap for j in range(1, k)], run,
                      out_lay, f"k={k}, stride {s}" + (f"; 1/{k} folded into the next layer" if fold else ""),
                      ref_name=ref_name, ref_scale=(float(k) if fold else 1.0) / pending_scale)
            if fold:
                pending_scale *= 1.0 / k
            steps.append(st)
            layout = dataclasses.replace(out_lay, clean=layout.clean)
        elif op == "flatten":
            flat = (layout.channels, layout.length)
        elif op == "linear":
            w, b = spec["weight"], spec["bias"]
            lay_in = layout if flat is not None or layout.channels == 1 else None
            if lay_in is None:
                raise UnsupportedLayerError(f"{name}: put a Flatten before a Linear on multi-channel data")
            if spec["method"] == "dft":
                st = _linear_dft_step(name, spec, lay_in, slots)
            else:
                def run(be, ct, w=w, b=b, lay_in=lay_in):
                    return packed.linear_packed(be, ct, w, b, lay_in, section="fc")

                st = Step(name, "linear", 2, packed.linear_packed_rotations(w.shape[0], lay_in, slots), run,
                          None, f"{w.shape[1]}->{w.shape[0]}, diag (rotate-and-sum)")
            st.ref_name = ref_name
            st.ref_scale = relu_fold
            if pending_scale != 1.0:
                st.detail += f" (x{pending_scale:g} folded from the pool before)"
                pending_scale = 1.0
            if relu_fold != 1.0:
                raise UnsupportedLayerError(f"{name}: a PolyReLU after the final Linear is not supported")
            steps.append(st)
            out_features = w.shape[0]
            layout = PackedLayout(1, w.shape[0], 1, 0, clean=True)
            flat = None
        else:
            raise UnsupportedLayerError(f"{name}: the compiler does not know op {op!r}")
        i += 1
    if not steps or steps[-1].kind != "linear":
        # output is the last layout's elements; expose them compactly via a final linear identity
        raise UnsupportedLayerError(
            "the model must end with a privkit.nn.Linear layer (its outputs are the logits)"
        )
    return steps, in_layout, out_features


def _plan_fitting(layers: list[tuple[str, Any]], input_shape: tuple[int, int], slots: int,
                  batch: int) -> tuple[list[Step], PackedLayout, int]:
    """Plan with the smallest channel block that leaves room for every layer's padding (the
    reach of padding grows with the gap of later layers)."""
    grow = 1
    while True:
        try:
            return _plan(layers, input_shape, slots, batch, grow)
        except ShapeError as e:
            if "leaves no room for padding" not in str(e) or grow >= slots:
                raise
            grow *= 2


def _relu_prescale(layers: list[tuple[str, Any]], start: int) -> float:
    """1/B when the next computing layer (after an optional BatchNorm) is a poly-mode PolyReLU
    whose evaluation on [-B, B] costs more levels than on [-1, 1]; else 1."""
    from ..nn import nonlinear as nl

    rest = [m for _, m in layers[start:]]
    if rest and type(rest[0]).__name__ == "BatchNorm1d":
        rest = rest[1:]  # folded into the conv / linear, so it scales with it
    for mod in rest:
        if type(mod).__name__ in ("Dropout", "Identity"):
            continue
        if not isinstance(mod, nl.PolyReLU) or mod.mode != "poly" or not mod.bound > 0:
            return 1.0
        if nl.relu_depth("poly", mod.degree, mod.precision_bits, mod.bound) > nl.relu_depth(
                "poly", mod.degree, mod.precision_bits, 1.0):
            return 1.0 / mod.bound
        return 1.0
    return 1.0


def _next_is_linear(layers: list[tuple[str, Any]], start: int) -> bool:
    """True when the next layer that computes something is a conv or linear layer."""
    for _, mod in layers[start:]:
        op = mod.fhe_spec()["op"] if hasattr(mod, "fhe_spec") else type(mod).__name__
        if op in ("flatten", "Dropout", "Identity"):
            continue
        return op in ("conv1d", "linear")
    return False


def _mask_step(name: str, layout: PackedLayout) -> Step:
    def run(be: Backend, ct: Ciphertext) -> Ciphertext:
        keep = np.zeros(layout.span)
        keep[packed.valid_slots(layout)] = 1.0
        return be.mul_plain(ct, keep)

    return Step(name, "mask", 1, [], run, layout, "zero the non-element slots before a padded conv")


def _conv_freq_step(name: str, spec: dict[str, Any], lay_in: PackedLayout, out_lay: PackedLayout,
                    slots: int) -> Step:
    """Frequency-domain conv (ops.conv_freq) adapted to the packed layout.

    Needs a compact, clean, single-channel input (the first layer): ``conv1d_freq`` computes each
    output channel gapped (``compact=False``: output ``i`` at slot ``i*stride``, zeros elsewhere),
    and a rotation by ``-c*B`` moves channel ``c`` into its block.
    """
    from .ops import conv_freq

    w, b, s, p = spec["weight"], spec["bias"], spec["stride"], spec["padding"]
    if not (lay_in.channels == 1 and lay_in.gap == 1 and lay_in.clean):
        raise UnsupportedLayerError(
            f"{name}: Conv1d(method='freq') needs a compact single-channel input (use it as the "
            "first layer); use method='spatial' for later layers"
        )
    n, co_n, k = lay_in.length, w.shape[0], w.shape[2]
    kw = {"padding": p, "compact": False}
    depth = conv_freq.conv_freq_depth(n, k, s, channels=(1, co_n), slots=slots, **kw)
    rots = set(conv_freq.required_rotations_conv_freq(n, w, s, slots=slots, **kw))
    rots |= {(-c * lay_in.block) % slots for c in range(1, co_n)}

    def run(be: Backend, ct: Ciphertext) -> Ciphertext:
        outs = conv_freq.conv1d_freq(be, [ct.replace(length=n)], w, n, s, padding=p, compact=False,
                                     section="conv_freq")
        acc = None
        for c, y in enumerate(outs):
            y = be.rotate(y, -c * lay_in.block) if c else y
            acc = y if acc is None else be.add(acc, y)
        if b is not None:
            acc = be.add_plain(acc, packed._bias_vec(np.asarray(b, float), out_lay, be.slots))
        return acc.replace(length=out_lay.span, layout=out_lay.to_layout())

    return Step(name, "conv1d", depth, sorted(r for r in rots if r), run, out_lay,
                f"1->{co_n} ch, k={k}, stride {s}, pad {p}, frequency domain (DFT)")


def _linear_dft_step(name: str, spec: dict[str, Any], lay_in: PackedLayout, slots: int) -> Step:
    """The paper's FC layer (ops.linear.linear_dft: slot sums through the DFT's DC term), with the
    weights laid out like the packed input (zeros in the slots that hold no element)."""
    from .ops import linear

    w, b = spec["weight"], spec["bias"]
    masks = packed._linear_masks(w, lay_in, slots)
    n = lay_in.span
    wide = np.stack([m[:n] for m in masks])
    depth = linear.linear_depth(w.shape[0], n, slots, method="dft")
    rots = linear.required_rotations_linear(wide.shape, n, slots, method="dft")

    def run(be: Backend, ct: Ciphertext) -> Ciphertext:
        out = linear.linear_dft(be, ct.replace(length=n), wide, b, n, section="fc_dft")
        return out.replace(length=w.shape[0], layout=Layout())

    return Step(name, "linear", depth, rots, run, None,
                f"{w.shape[1]}->{w.shape[0]}, DFT DC-term slot sums (paper)")


def compile(model: Any, input_shape: tuple[int, ...], params: CKKSParams | str = "auto", *,
            batch: int = 1) -> EncryptedProgram:
    """Compile ``model`` (an ``nn.Sequential`` of privkit layers) for inputs of ``input_shape``.

    Args:
        model: the trained (and calibrated) torch model. It is copied; later changes to it do not
            affect the program.
        input_shape: ``(channels, length)`` of one input (no batch dimension).
        params: a :class:`CKKSParams`, a preset name, or ``"auto"`` (the smallest preset that fits).
        batch: inputs packed into one ciphertext (consecutive channel groups, block-diagonal
            weights); ``encode_input`` then takes ``(batch, channels, length)`` and
            ``decrypt_output`` returns ``(batch, out_features)``. Same levels, more slots.
    """
    if int(batch) < 1:
        raise ParameterError(f"batch must be >= 1, got {batch}")
    batch = int(batch)
    from ..nn import check_fhe_compatible

    check_fhe_compatible(model, raise_error=True)
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) == 1:
        input_shape = (1, input_shape[0])
    if len(input_shape) != 2:
        raise ShapeError(f"input_shape must be (channels, length), got {input_shape}")
    ref = copy.deepcopy(model).double().eval()
    _check_calibrated(ref)
    _check_forward(ref, input_shape)
    layers = _leaf_layers(ref)
    candidates = [CKKSParams.preset(n) for n in _AUTO_ORDER] if params == "auto" else [CKKSParams.coerce(params)]
    last_err: Exception | None = None
    for p in candidates:
        try:
            steps, in_layout, outs = _plan_fitting(layers, input_shape, p.slots, batch)
        except ShapeError as e:  # does not fit the slots: try a larger preset
            last_err = e
            continue
        need = sum(s.depth for s in steps)
        if need <= p.depth:
            # no lowering uses complex conjugation (the DFT paths keep real data in real slots)
            return EncryptedProgram(p, steps, in_layout, input_shape, outs // batch, False, reference=ref,
                                    batch=batch)
        last_err = _depth_error(steps, p, auto=params == "auto")
    assert last_err is not None
    if isinstance(last_err, ShapeError) and params == "auto":
        raise ShapeError(f"the model does not fit any preset: {last_err}") from last_err
    raise last_err


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
    hint = (
        ("no preset is deep enough; " if auto else
         f"use a preset with at least {need} levels ({', '.join(n for n in PRESETS if CKKSParams.preset(n).depth >= need) or 'none fits'}), or ")
        + "lower the PolyReLU degree / precision or remove a block; the costliest layers are "
        + ", ".join(f"{s.name} ({s.depth} level{'' if s.depth == 1 else 's'})" for s in costly)
    )
    err = DepthExhaustedError(needed=need, available=p.depth, where=f"layer {where!r} ({p.name})", hint=hint)
    return err


def _check_calibrated(model: Any) -> None:
    from ..nn import nonlinear as nl

    missing = [n for n, m in model.named_modules() if isinstance(m, nl.CALIBRATED) and not m.is_calibrated]
    if missing:
        raise ParameterError(
            f"layers {missing} have no calibrated input range; run privkit.nn.calibrate(model, data) "
            "on representative inputs before compiling"
        )
