"""Convolutions on the packed layout: ``conv1d`` / ``conv2d`` / ``conv3d`` (spatial, one level)
and the frequency-domain 1-D convolution (``Conv1d(method="freq")``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ....errors import UnsupportedLayerError
from ...backend import Backend, Ciphertext
from ...ops import packed
from ...ops.packed import PackedLayout
from ..lowering import Lowered, Lowering, PlanContext, register_lowering


def _nd(spec: dict[str, Any]) -> int:
    return int(np.asarray(spec["weight"]).ndim - 2)


@register_lowering("conv1d", "conv2d", "conv3d")
class ConvLowering(Lowering):
    """Baby-step giant-step convolution (:func:`privkit.fhe.ops.packed.conv_packed`): one
    rotation per tap, one per channel offset; strides multiply the gaps of the output."""

    affine = True
    groups = "mixing"

    def depth(self, spec: dict[str, Any]) -> int | None:
        if spec.get("method", "spatial") == "freq":
            return None  # the DFT's levels depend on the input length: see the program's plan
        return 1

    def needs_clean(self, spec: dict[str, Any]) -> bool:
        return bool(np.any(np.asarray(spec.get("padding", 0))))

    def plan(self, spec: dict[str, Any], ctx: PlanContext) -> Lowered:
        if ctx.flat:
            raise UnsupportedLayerError(f"{ctx.name}: a convolution after Flatten is not supported")
        w, b = np.asarray(spec["weight"], float), spec["bias"]
        s, p = spec["stride"], spec["padding"]
        lay_in = ctx.layout
        if _nd(spec) != lay_in.ndim:
            raise UnsupportedLayerError(
                f"{ctx.name}: a {_nd(spec)}-D convolution on {lay_in.ndim}-D data (input_shape must "
                f"be (channels, *spatial) with {_nd(spec)} spatial axes)")
        if spec.get("method", "spatial") == "freq":
            return _conv_freq(ctx.name, spec, lay_in, ctx.slots)
        out_lay = packed._conv_plan(w, lay_in, s, p, ctx.slots)[0]
        rots = packed.conv_packed_rotations(w.shape, lay_in, s, p, ctx.slots)

        def run(be: Backend, ct: Ciphertext) -> Ciphertext:
            return packed.conv_packed(be, ct, w, b, lay_in, s, p, section="conv")[0]

        ks = "x".join(str(k) for k in w.shape[2:])
        return Lowered(1, rots, PackedLayout.grid(out_lay.channels, out_lay.shape, out_lay.gaps,
                                                  out_lay.block, clean=True), run,
                       f"{w.shape[1]}->{w.shape[0]} ch, k={ks}, stride {s}, pad {p}, spatial")


def _conv_freq(name: str, spec: dict[str, Any], lay_in: PackedLayout, slots: int) -> Lowered:
    """Frequency-domain conv (ops.conv_freq) adapted to the packed layout.

    Needs a compact, clean, single-channel input (the first layer): ``conv1d_freq`` computes each
    output channel gapped (``compact=False``: output ``i`` at slot ``i*stride``, zeros elsewhere),
    and a rotation by ``-c*B`` moves channel ``c`` into its block.
    """
    from ...ops import conv_freq

    w, b, s, p = spec["weight"], spec["bias"], spec["stride"], spec["padding"]
    if not (lay_in.channels == 1 and lay_in.gap == 1 and lay_in.clean):
        raise UnsupportedLayerError(
            f"{name}: Conv1d(method='freq') needs a compact single-channel input (use it as the "
            "first layer); use method='spatial' for later layers"
        )
    out_lay = packed._conv_plan(np.asarray(w, float), lay_in, s, p, slots)[0]
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

    return Lowered(depth, sorted(r for r in rots if r), PackedLayout.grid(
        out_lay.channels, out_lay.shape, out_lay.gaps, out_lay.block, clean=True), run,
        f"1->{co_n} ch, k={k}, stride {s}, pad {p}, frequency domain (DFT)")
