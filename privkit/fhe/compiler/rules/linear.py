"""Fully connected layers, Flatten, no-ops and an unfolded BatchNorm on the packed layout."""

from __future__ import annotations

from typing import Any

import numpy as np

from ....errors import UnsupportedLayerError
from ...backend import Backend, Ciphertext, Layout
from ...ops import packed
from ...ops.packed import PackedLayout
from ..lowering import Lowered, Lowering, PlanContext, register_lowering


@register_lowering("linear")
class LinearLowering(Lowering):
    """``method="diag"``: per output a plaintext product and a rotate-and-sum (two levels);
    ``method="bsgs"``: hybrid diagonals with baby-step giant-step (one level, about
    ``2 sqrt(O) + log2(slots / O)`` rotations);
    ``method="dft"``: slot sums through the DC term of a homomorphic DFT (the paper's FC)."""

    affine = True
    groups = "mixing"

    def depth(self, spec: dict[str, Any]) -> int | None:
        return {"diag": 2, "bsgs": 1}.get(spec.get("method", "diag"))

    def plan(self, spec: dict[str, Any], ctx: PlanContext) -> Lowered:
        w, b = np.asarray(spec["weight"], float), spec["bias"]
        lay_in = ctx.layout
        if not ctx.flat and lay_in.channels > 1:
            raise UnsupportedLayerError(f"{ctx.name}: put a Flatten before a Linear on multi-channel data")
        out_lay = PackedLayout(1, w.shape[0], 1, 0, clean=True)
        if spec.get("method", "diag") == "dft":
            return _linear_dft(spec, lay_in, ctx.slots, out_lay)
        if spec["method"] == "bsgs":
            from ...ops import packed_fc

            def run_b(be: Backend, ct: Ciphertext) -> Ciphertext:
                return packed_fc.linear_bsgs(be, ct, w, b, lay_in, section="fc")

            return Lowered(1, packed_fc.linear_bsgs_rotations(w.shape[0], lay_in, ctx.slots),
                           PackedLayout(1, w.shape[0], 1, 0, clean=False), run_b,
                           f"{w.shape[1]}->{w.shape[0]}, hybrid diagonals (baby-step giant-step)")

        def run(be: Backend, ct: Ciphertext) -> Ciphertext:
            return packed.linear_packed(be, ct, w, b, lay_in, section="fc")

        return Lowered(2, packed.linear_packed_rotations(w.shape[0], lay_in, ctx.slots), out_lay, run,
                       f"{w.shape[1]}->{w.shape[0]}, diag (rotate-and-sum)")


def _linear_dft(spec: dict[str, Any], lay_in: PackedLayout, slots: int, out_lay: PackedLayout) -> Lowered:
    """The paper's FC layer (ops.linear.linear_dft: slot sums through the DFT's DC term), with the
    weights laid out like the packed input (zeros in the slots that hold no element)."""
    from ...ops import linear

    w, b = spec["weight"], spec["bias"]
    masks = packed._linear_masks(w, lay_in, slots)
    n = lay_in.span
    wide = np.stack([m[:n] for m in masks])
    depth = linear.linear_depth(w.shape[0], n, slots, method="dft")
    rots = linear.required_rotations_linear(wide.shape, n, slots, method="dft")

    def run(be: Backend, ct: Ciphertext) -> Ciphertext:
        out = linear.linear_dft(be, ct.replace(length=n), wide, b, n, section="fc_dft")
        return out.replace(length=w.shape[0], layout=Layout())

    return Lowered(depth, rots, out_lay, run, f"{w.shape[1]}->{w.shape[0]}, DFT DC-term slot sums (paper)")


@register_lowering("flatten")
class FlattenLowering(Lowering):
    """(channels, *spatial) -> features: a change of reading, nothing to compute."""

    transparent = True

    def depth(self, spec: dict[str, Any]) -> int:
        return 0

    def plan(self, spec: dict[str, Any], ctx: PlanContext) -> Lowered | None:
        ctx.flat = True
        return None


@register_lowering("identity")
class IdentityLowering(Lowering):
    """Dropout and Identity: no-ops at inference."""

    transparent = True

    def depth(self, spec: dict[str, Any]) -> int:
        return 0

    def plan(self, spec: dict[str, Any], ctx: PlanContext) -> Lowered | None:
        return None


@register_lowering("batchnorm")
class BatchNormLowering(Lowering):
    """An eval-mode BatchNorm that could not be folded into the layer before it: a per-channel
    affine map ``x * scale + shift`` (one level). Right after a conv or linear layer the compiler
    folds it instead (weights scaled, bias ``(b - mean) * scale + beta``: no level)."""

    def depth(self, spec: dict[str, Any]) -> int:
        return 1

    groups = "channelwise"

    def split(self, spec: dict[str, Any], out: slice, inp: slice, first: bool) -> dict[str, Any]:
        def part(v: Any) -> Any:
            a = np.asarray(v, dtype=np.float64)
            return a if a.size == 1 else a.reshape(-1)[inp]

        return dict(spec, scale=part(spec["scale"]), shift=part(spec["shift"]))

    def plan(self, spec: dict[str, Any], ctx: PlanContext) -> Lowered:
        lay = ctx.layout
        if ctx.flat:
            raise UnsupportedLayerError(f"{ctx.name}: a BatchNorm after Flatten must follow a Linear layer")
        scale = ctx.channel_vector(np.broadcast_to(spec["scale"], (lay.channels // ctx.batch,)))
        shift = ctx.channel_vector(np.broadcast_to(spec["shift"], (lay.channels // ctx.batch,)))

        def run(be: Backend, ct: Ciphertext) -> Ciphertext:
            return be.add_plain(be.mul_plain(ct, scale), shift)

        out = PackedLayout.grid(lay.channels, lay.shape, lay.gaps, lay.block, clean=False)
        return Lowered(1, [], out, run, "batch norm (not folded)")
