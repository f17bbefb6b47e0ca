"""Numpy twins of the SAT convolution: the engines on numbers (:func:`conv_sat_simd_ref`,
:func:`conv_sat_element_ref`), the plain vectorised SAT convolution and the dense correlation."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from ....errors import ShapeError, SlotOverflowError
from .engine import _element_engine, _NumpyOps, _simd_engine, conv_sat_plan
from .geometry import _bias, _check_dims, _grid, sat_geometry, summed_area_table


def conv_sat_simd_ref(
    vecs: Any, boxsets: Any, input_shape: Sequence[int], stride: Any = 1, padding: Any = 0,
    *, slots: int, bias: Any = None, split: int | None = None, input_sat: bool = False,
) -> list[np.ndarray]:
    """Numpy twin of the SIMD layout on full slot vectors (``vecs``: one packed vector per channel)."""
    grid = _grid(boxsets)
    kshape = _check_dims(grid, input_shape)
    geo = sat_geometry(input_shape, kshape, stride, padding)
    need = geo.slots_needed_client_sat if input_sat else geo.slots_needed
    if need > slots:
        raise SlotOverflowError(f"needs {need} slots, have {slots}")
    xs = []
    for v in (vecs if isinstance(vecs, (list, tuple)) else [vecs]):
        full = np.zeros(slots)
        full[: len(v)] = v
        xs.append(full)
    plan = conv_sat_plan(grid, input_shape, stride, padding, split, input_sat)
    return _simd_engine(_NumpyOps(), xs, grid, geo, _bias(bias, len(grid)), plan["split"], input_sat)


def conv_sat_element_ref(x: np.ndarray, boxsets: Any, stride: Any = 1, padding: Any = 0, *, bias: Any = None) -> np.ndarray:
    """Numpy twin of the per-element layout: ``x`` is ``(C_in, *input_shape)``; same operations."""
    grid = _grid(boxsets)
    x = np.asarray(x, dtype=np.float64)
    D = len(grid[0][0].shape)
    if x.ndim == D:
        x = x[None]
    geo = sat_geometry(x.shape[1:], grid[0][0].shape, stride, padding)
    xs = np.empty(x.shape, dtype=object)
    for idx in np.ndindex(*x.shape):
        xs[idx] = np.float64(x[idx])
    out = _element_engine(_NumpyOps(), xs, grid, geo, _bias(bias, len(grid)))
    return out.astype(np.float64)


def box_sum_ref(sat: np.ndarray, lo: Sequence[int], hi: Sequence[int]) -> float:
    """``sum(x[lo:hi])`` from an exclusive SAT by its ``2**n`` corners."""
    D = sat.ndim
    total = 0.0
    for pick in itertools.product((0, 1), repeat=D):
        p = tuple(hi[d] if k else lo[d] for d, k in enumerate(pick))
        total += (-1 if (D - sum(pick)) % 2 else 1) * sat[p]
    return float(total)


def _prep(x, grid):
    x = np.asarray(x, dtype=np.float64)
    D = len(grid[0][0].shape)
    if x.ndim == D:
        x = x[None]
    if x.ndim != D + 1:
        raise ShapeError(f"input must be (C_in, *spatial) with {D} spatial dims, got shape {x.shape}")
    if x.shape[0] != len(grid[0]):
        raise ShapeError(f"input has {x.shape[0]} channels, box sets expect {len(grid[0])}")
    return x


def conv_sat_ref(x: np.ndarray, boxsets: Any, stride: Any = 1, padding: Any = 0, *, bias: Any = None) -> np.ndarray:
    """Plain SAT convolution: ``(C_in, *spatial)`` -> ``(C_out, *out_shape)`` (vectorised numpy)."""
    grid = _grid(boxsets)
    x = _prep(x, grid)
    geo = sat_geometry(x.shape[1:], grid[0][0].shape, stride, padding)
    sats = [summed_area_table(np.pad(xc, geo.pads)) for xc in x]
    out = np.zeros((len(grid),) + geo.out_shape)
    for co, row in enumerate(grid):
        for ci, bs in enumerate(row):
            for b in bs.boxes:
                for pick in itertools.product((0, 1), repeat=geo.ndim):
                    sl = tuple(
                        slice(c, c + (n - 1) * st + 1, st)
                        for c, n, st in zip(
                            [b.hi[d] if k else b.lo[d] for d, k in enumerate(pick)], geo.out_shape, geo.stride
                        )
                    )
                    sign = -1 if (geo.ndim - sum(pick)) % 2 else 1
                    out[co] += sign * b.alpha * sats[ci][sl]
        if bias is not None:
            out[co] += _bias(bias, len(grid))[co]
    return out


def correlate_ref(x: np.ndarray, kernels: np.ndarray, stride: Any = 1, padding: Any = 0, *, bias: Any = None) -> np.ndarray:
    """Dense cross-correlation (torch's ConvNd): ``kernels`` is ``(C_out, C_in, *K)`` or ``K``.

    A single kernel with a single-channel ``x`` without channel axis returns ``out_shape``.
    """
    k = np.asarray(kernels, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    squeeze = k.ndim == x.ndim
    if squeeze:
        k, x = k[None, None], x[None]
    D = k.ndim - 2
    geo = sat_geometry(x.shape[1:], k.shape[2:], stride, padding)
    xp = np.pad(x, [(0, 0)] + list(geo.pads))
    out = np.zeros((k.shape[0],) + geo.out_shape)
    for off in np.ndindex(*k.shape[2:]):
        sl = (slice(None),) + tuple(
            slice(o, o + (n - 1) * st + 1, st) for o, n, st in zip(off, geo.out_shape, geo.stride)
        )
        patch = xp[sl]  # (C_in, *out)
        w = k[(slice(None), slice(None)) + off]  # (C_out, C_in)
        out += np.tensordot(w, patch, axes=([1], [0]))
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64).reshape((-1,) + (1,) * D)
    return out[0] if squeeze else out
