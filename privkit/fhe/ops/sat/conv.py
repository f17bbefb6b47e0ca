"""The encrypted entry point :func:`conv_sat` (both layouts) and per-element encrypt / decrypt helpers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ....errors import ParameterError, ShapeError, SlotOverflowError
from ...backend import Backend, Ciphertext, Layout
from .engine import _BackendOps, _element_engine, _simd_engine, conv_sat_plan
from .geometry import _bias, _check_dims, _grid, conv_sat_depth, sat_geometry


def _object_array(cts: Any, shape: tuple[int, ...]) -> np.ndarray:
    if isinstance(cts, np.ndarray) and cts.dtype == object:
        arr = cts
    else:
        arr = np.empty(shape, dtype=object)
        try:
            for idx in np.ndindex(*shape):
                v = cts
                for i in idx:
                    v = v[i]
                arr[idx] = v
        except (TypeError, IndexError) as e:
            raise ShapeError(f"per-element input must be nested lists / an object array of shape {shape}") from e
    if arr.shape == shape[1:] and shape[0] == 1:
        arr = arr.reshape(shape)
    if arr.shape != shape:
        raise ShapeError(f"per-element input has shape {arr.shape}, expected {shape} (C_in, *input_shape)")
    return arr


def conv_sat(
    backend: Backend,
    ct_or_cts: Any,
    boxsets: Any,
    input_shape: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: Any = 0,
    *,
    layout: str = "simd",
    bias: Sequence[float] | None = None,
    split: int | None = None,
    input_sat: bool = False,
    section: str | None = None,
) -> Any:
    """Box-filter convolution of encrypted input (see the module docstring).

    Args:
        backend: the evaluation backend.
        ct_or_cts: ``layout="simd"``: one ciphertext per input channel (a list, or a single
            ciphertext when ``C_in = 1``) holding :meth:`SatGeometry.pack` of that channel;
            ``layout="element"``: an object array / nested lists of shape ``(C_in, *input_shape)``
            (or ``input_shape`` when ``C_in = 1``) with one ciphertext per input value
            (:func:`encrypt_elements`).
        boxsets: a :class:`BoxFilterSet` (one channel in and out) or a ``C_out x C_in`` grid.
        input_shape: spatial shape of one channel (1, 2 or 3 dimensions).
        stride, padding: as in ``torch.nn.ConvNd`` (zero padding; ``"valid"``, ``"same"`` too).
        bias: optional, one value per output channel.
        split: SIMD only: dimensions ``< split`` are giant steps (default: fewest rotations).
        input_sat: SIMD only: the ciphertexts hold :meth:`SatGeometry.pack_sat` (the client
            computed the summed-area table before encrypting; no prefix rotations, and only
            ``L + sum(strides)`` slots needed). Only for a first layer fed by the client.
        section: counter section name (default ``"conv_sat"``).

    Returns:
        ``"simd"``: a list of ``C_out`` ciphertexts (a single one if a single ciphertext came in
        and ``C_out = 1``), outputs at :meth:`SatGeometry.output_slots`; ``"element"``: an object
        array ``(C_out, *out_shape)`` of ciphertexts.
    """
    grid = _grid(boxsets)
    kshape = _check_dims(grid, input_shape)
    geo = sat_geometry(input_shape, kshape, stride, padding)
    c_out, c_in = len(grid), len(grid[0])
    b = _bias(bias, c_out)
    depth = conv_sat_depth(grid)
    if layout == "element":
        xs = _object_array(ct_or_cts, (c_in,) + geo.input_shape)
        for ct in xs.flat:
            if not isinstance(ct, Ciphertext):
                raise ShapeError(f"per-element input must hold Ciphertexts, found {type(ct).__name__}")
            backend.require_levels(ct, depth, "conv_sat (per-element)")
        with backend.counter.section(section or "conv_sat"):
            return _element_engine(_BackendOps(backend), xs, grid, geo, b)
    if layout != "simd":
        raise ParameterError(f"layout must be 'simd' or 'element', got {layout!r}")
    single = isinstance(ct_or_cts, Ciphertext)
    cts = [ct_or_cts] if single else list(ct_or_cts)
    if len(cts) != c_in:
        raise ShapeError(f"got {len(cts)} input ciphertexts for {c_in} input channels")
    need = geo.slots_needed_client_sat if input_sat else geo.slots_needed
    if need > backend.slots:
        raise SlotOverflowError(
            f"the SIMD SAT of a padded input {geo.padded_shape} ({geo.length} values) needs "
            f"{need} slots (the cyclic prefix sums must not alias) but a ciphertext has "
            f"{backend.slots}; use layout='element', a larger poly_degree, or tile the input"
        )
    packed_len = geo.slots_needed_client_sat if input_sat else geo.length
    for ct in cts:
        if not isinstance(ct, Ciphertext):
            raise ShapeError(f"SIMD input must be Ciphertexts, found {type(ct).__name__}")
        if ct.length > packed_len:
            raise ShapeError(
                f"an input ciphertext has length {ct.length} but the packed input has "
                f"{packed_len} values; encrypt SatGeometry.{'pack_sat' if input_sat else 'pack'}(x)"
            )
        backend.require_levels(ct, depth, "conv_sat (SIMD)")
    plan = conv_sat_plan(grid, input_shape, stride, padding, split, input_sat)
    with backend.counter.section(section or "conv_sat"):
        xs = [ct.replace(length=backend.slots) for ct in cts]
        outs = _simd_engine(_BackendOps(backend), xs, grid, geo, b, plan["split"], input_sat)
    if geo.ndim == 1:
        outs = [o.replace(layout=Layout(gap=geo.stride[0])) for o in outs]
    return outs[0] if single and c_out == 1 else outs



def encrypt_elements(backend_or_keys: Any, x: np.ndarray, *, batched: bool = False) -> np.ndarray:
    """One ciphertext per value: ``x`` ``(C, *spatial)`` -> object array of the same shape.

    ``batched=True``: the last axis of ``x`` is a batch, carried in the slots of each ciphertext.
    """
    x = np.asarray(x, dtype=np.float64)
    shape = x.shape[:-1] if batched else x.shape
    out = np.empty(shape, dtype=object)
    for idx in np.ndindex(*shape):
        out[idx] = backend_or_keys.encrypt(np.atleast_1d(x[idx]))
    return out


def decrypt_elements(keys: Any, cts: np.ndarray) -> np.ndarray:
    """Object array of ciphertexts -> values (a trailing batch axis when they hold several)."""
    vals = [np.asarray(keys.decrypt(ct)) for ct in cts.flat]
    n = max(v.size for v in vals)
    arr = np.stack([np.pad(v, (0, n - v.size)) for v in vals]).reshape(cts.shape + (n,))
    return arr[..., 0] if n == 1 else arr
