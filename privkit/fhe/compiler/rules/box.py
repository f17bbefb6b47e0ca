"""Box-filter convolutions (``BoxConv1d/2d/3d``) through the summed-area table
(:mod:`privkit.fhe.ops.sat`, SIMD layout) on the packed layout.

Each input channel's block is read as conv_sat's zero-padded volume: the row gaps of the packed
layout are the padded volume's flat strides (the compiler widens rows for the padding), so a
rotation by ``c*B - origin`` hands channel ``c`` to the SAT engine with its padded origin at
slot 0. The engine builds the SAT with prefix-sum rotations (no level), takes every box as a
signed sum of ``2**n`` corners and one scalar product, and returns one ciphertext per output
channel; one plaintext product per output channel then keeps only the outputs (with the folded
BatchNorm / activation scale) and places channel ``o`` in block ``o``. Levels: the SAT's (1 when
a box scale is not an integer, else 0) plus one for that placement. The blocks need room for the
cyclic prefix sums (``block >= SatGeometry.slots_needed``): the compiler grows them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ....errors import ShapeError, UnsupportedLayerError
from ...backend import Backend, Ciphertext
from ...ops.packed import PackedLayout
from ..lowering import Lowered, Lowering, PlanContext, register_lowering


def _t(v: Any, n: int) -> tuple[int, ...]:
    return tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else (int(v),) * n


@register_lowering("box_conv1d", "box_conv2d", "box_conv3d")
class BoxConvLowering(Lowering):
    """Box-filter convolution by summed-area table; folds go into its output placement."""

    affine = True

    def depth(self, spec: dict[str, Any]) -> int:
        from ...ops.sat import conv_sat_depth

        return conv_sat_depth(spec["boxsets"]) + 1

    def needs_clean(self, spec: dict[str, Any]) -> bool:
        return True  # the prefix sums read the zero slots around every channel

    def _out(self, spec: dict[str, Any]) -> tuple[Any, Any]:
        b = spec["bias"]
        return spec.get("out_scale", 1.0), spec.get("out_shift", 0.0 if b is None else np.asarray(b, float))

    def fold_output(self, spec: dict[str, Any], scale: Any, shift: Any) -> dict[str, Any]:
        s0, t0 = self._out(spec)
        s = np.asarray(scale, dtype=np.float64)
        return dict(spec, out_scale=np.asarray(s0) * s, out_shift=np.asarray(t0) * s + np.asarray(shift, float))

    def fold_input(self, spec: dict[str, Any], factor: float) -> dict[str, Any]:
        return dict(spec, in_scale=spec.get("in_scale", 1.0) * factor)

    def batched(self, spec: dict[str, Any], batch: int) -> dict[str, Any]:
        s0, t0 = self._out(spec)
        tile = (lambda v: np.tile(np.asarray(v, float).reshape(-1), batch) if np.ndim(v) else v)
        return dict(spec, batch=batch, out_scale=tile(s0), out_shift=tile(t0))

    def plan(self, spec: dict[str, Any], ctx: PlanContext) -> Lowered:
        from ...ops import sat as cs
        from ...ops.sat import geometry as sat_geometry_mod

        lay = ctx.layout
        grid = sat_geometry_mod._grid(spec["boxsets"])
        co_n, ci_n = len(grid), len(grid[0])
        kshape = grid[0][0].shape
        nd = len(kshape)
        batch = int(spec.get("batch", 1))
        if ctx.flat or lay.ndim != nd:
            raise UnsupportedLayerError(f"{ctx.name}: a {nd}-D box convolution on {lay.ndim}-D data")
        if lay.channels != ci_n * batch:
            raise ShapeError(f"{ctx.name}: box convolution expects {ci_n} input channels, got {lay.channels // batch}")
        if lay.gaps[-1] != 1 or any(lay.gaps[d] % lay.gaps[d + 1] for d in range(nd - 1)):
            raise UnsupportedLayerError(
                f"{ctx.name}: a box convolution needs unit gaps (the summed-area table runs over the flat "
                f"rows); put it before any strided layer or pool, or use a spatial convolution")
        st, pd = _t(spec["stride"], nd), _t(spec["padding"], nd)
        if spec.get("input_sat"):
            return self._plan_client_sat(spec, ctx, grid, st, pd, batch)
        rows = [lay.gaps[d - 1] // lay.gaps[d] for d in range(1, nd)]
        pads = [(pd[0], pd[0])]
        for d in range(1, nd):
            after = rows[d - 1] - lay.shape[d] - pd[d]
            if after < pd[d]:
                raise ShapeError(f"block {lay.block} leaves no room for padding {pd} (row of {rows[d - 1]})")
            pads.append((pd[d], after))
        geo = cs.sat_geometry(lay.shape, kshape, st, tuple(pads))
        if geo.flat_strides[:-1] != lay.gaps[:-1] if nd > 1 else False:
            raise ShapeError(f"{ctx.name}: internal layout mismatch {geo.flat_strides} vs {lay.gaps}")
        if (lay.channels > 1 and lay.block < geo.slots_needed) or \
                (lay.channels - 1) * lay.block + geo.slots_needed > ctx.slots:
            if (lay.channels - 1) * lay.block + geo.slots_needed > ctx.slots and lay.block >= geo.slots_needed:
                raise ShapeError(f"{ctx.name}: the summed-area tables need {geo.slots_needed} slots per "
                                 f"channel x {lay.channels}; the ciphertext has {ctx.slots}")
            raise ShapeError(f"block {lay.block} leaves no room for padding: the summed-area table needs "
                             f"{geo.slots_needed} slots per channel")
        if max(co_n, ci_n) * batch * lay.block > ctx.slots:
            raise ShapeError(f"{ctx.name}: {max(co_n, ci_n) * batch} channels of block {lay.block} need "
                             f"{max(co_n, ci_n) * batch * lay.block} slots; the ciphertext has {ctx.slots}")
        origin = sum(p[0] * s for p, s in zip(pads, geo.flat_strides))
        out_shape = tuple((n + 2 * p - k) // s + 1 for n, p, k, s in zip(lay.shape, pd, kshape, st))
        return self._finish(spec, ctx, grid, geo, tuple(pads), st, pd, batch, origin, out_shape, lay.gaps, False)

    def _plan_client_sat(self, spec: dict[str, Any], ctx: PlanContext, grid: Any, st: tuple[int, ...],
                         pd: tuple[int, ...], batch: int) -> Lowered:
        """The first layer, fed with each channel's exclusive SAT (``SatGeometry.pack_sat``)."""
        from ...ops import sat as cs

        lay = ctx.layout
        geo = cs.sat_geometry(spec["input_sat"], grid[0][0].shape, st, pd)
        if lay.shape != geo.sat_shape or lay.gaps != geo.sat_strides:
            raise UnsupportedLayerError(f"{ctx.name}: input_sat needs the box convolution as the first layer")
        ch = max(len(grid), len(grid[0])) * batch
        if ch * lay.block > ctx.slots:
            raise ShapeError(f"{ctx.name}: {ch} channels of block {lay.block} need {ch * lay.block} slots; "
                             f"the ciphertext has {ctx.slots}")
        return self._finish(spec, ctx, grid, geo, pd, st, pd, batch, 0, geo.out_shape, geo.sat_strides, True)

    def _finish(self, spec: dict[str, Any], ctx: PlanContext, grid: Any, geo: Any, pads: Any,
                st: tuple[int, ...], pd: tuple[int, ...], batch: int, origin: int, out_shape: tuple[int, ...],
                gaps: tuple[int, ...], input_sat: bool) -> Lowered:
        from ...ops import sat as cs
        from ...ops.sat import engine as sat_engine

        lay = ctx.layout
        co_n, ci_n = len(grid), len(grid[0])
        kshape = grid[0][0].shape
        out_lay = PackedLayout.grid(co_n * batch, out_shape, tuple(g * s for g, s in zip(gaps, st)),
                                    lay.block, clean=True)
        out_pos = out_lay.offsets()
        s0, t0 = self._out(spec)
        scale = np.broadcast_to(np.asarray(s0, float) * float(spec.get("in_scale", 1.0)), (co_n * batch,))
        shift = np.broadcast_to(np.asarray(t0, float), (co_n * batch,))
        B = lay.block
        masks, shift_vec = [], np.zeros(out_lay.span)
        for c in range(co_n * batch):
            m = np.zeros(out_lay.span)
            m[c * B + out_pos] = scale[c]
            masks.append(m)
            shift_vec[c * B + out_pos] = shift[c]
        in_shape = geo.input_shape
        plan = cs.conv_sat_plan(grid, in_shape, st, pads, input_sat=input_sat)
        rots = set(cs.required_rotations(grid, in_shape, st, pads, split=plan["split"], slots=ctx.slots,
                                         input_sat=input_sat))
        rots |= {(c * B - origin) % ctx.slots for c in range(ci_n * batch)}
        rots |= {(-c * B) % ctx.slots for c in range(co_n * batch)}
        split = plan["split"]

        def run(be: Backend, ct: Ciphertext) -> Ciphertext:
            ops = sat_engine._BackendOps(be)
            full = ct.replace(length=be.slots)
            terms = []
            with be.counter.section("box_conv"):
                for g in range(batch):
                    xs = []
                    for ci in range(ci_n):
                        k = ((g * ci_n + ci) * B - origin) % be.slots
                        xs.append(be.rotate(full, k) if k else full)
                    ys = sat_engine._simd_engine(ops, xs, grid, geo, None, split, input_sat)
                    for co, y in enumerate(ys):
                        c = g * co_n + co
                        terms.append((be.rotate(y, -c * B) if c else y, masks[c]))
                lvl = min(t.level for t, _ in terms)
                terms = [(be.mod_switch_to(t, lvl) if t.level > lvl else t, m) for t, m in terms]
                out = be.add_plain(be.mul_plain_sum(terms), shift_vec)
            return out.replace(length=out_lay.span, layout=out_lay.to_layout())

        boxes = sum(len(bs.boxes) for row in grid for bs in row)
        return Lowered(self.depth(spec), sorted(r for r in rots if r), out_lay, run,
                       f"{ci_n}->{co_n} ch, k={kshape}, stride {st}, pad {pd}, {boxes} boxes, summed-area table"
                       + (" (computed by the client)" if input_sat else ""))
