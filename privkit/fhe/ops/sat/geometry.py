"""SAT convolution geometry: the summed-area table itself, padding, output shape, the SIMD packing, box-set grids and depth."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from ....errors import ParameterError, ShapeError
from ..boxes import BoxFilterSet


def summed_area_table(x: np.ndarray) -> np.ndarray:
    """Exclusive SAT: ``S[p] = sum(x[:p1, ..., :pn])``, shape ``x.shape + 1`` (zero border)."""
    x = np.asarray(x, dtype=np.float64)
    s = x
    for d in range(x.ndim):
        s = np.cumsum(s, axis=d)
    return np.pad(s, [(1, 0)] * x.ndim)


# -- geometry --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SatGeometry:
    """Shapes of one SAT convolution: padding, output shape and the SIMD packing."""

    input_shape: tuple[int, ...]
    kernel_shape: tuple[int, ...]
    stride: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    padded_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.input_shape)

    @property
    def length(self) -> int:
        """``L``: number of values of the padded volume (slots one SIMD input uses)."""
        return int(np.prod(self.padded_shape))

    @property
    def flat_strides(self) -> tuple[int, ...]:
        """Row-major strides of the padded volume in slots."""
        out, s = [], 1
        for n in reversed(self.padded_shape):
            out.append(s)
            s *= n
        return tuple(reversed(out))

    @property
    def windows(self) -> tuple[int, ...]:
        """Window (in strides) of each prefix-sum stage: ``ceil(L / s_d)``."""
        return tuple(-(-self.length // s) for s in self.flat_strides)

    @property
    def slots_needed(self) -> int:
        """Slots the SIMD layout needs so that the cyclic prefix sums never alias."""
        return self.length + sum(w * s for w, s in zip(self.windows, self.flat_strides))

    @property
    def sat_shape(self) -> tuple[int, ...]:
        """Shape of the exclusive SAT of the padded input (one more per dimension)."""
        return tuple(p + 1 for p in self.padded_shape)

    @property
    def sat_strides(self) -> tuple[int, ...]:
        out, s = [], 1
        for n in reversed(self.sat_shape):
            out.append(s)
            s *= n
        return tuple(reversed(out))

    @property
    def slots_needed_client_sat(self) -> int:
        """Slots the SIMD layout needs when the client encrypts the SAT (:meth:`pack_sat`)."""
        return int(np.prod(self.sat_shape))

    def pack_sat(self, x: np.ndarray) -> np.ndarray:
        """The exclusive summed-area table of the padded input, flattened row-major (what
        ``conv_sat(..., input_sat=True)`` expects).

        The client computes it before encrypting (first layer only): the server then needs no
        prefix-sum rotation and ``prod(padded_shape + 1)`` slots; values grow to ``sum(|x|)``.
        """
        x = np.asarray(x, dtype=np.float64)
        if x.shape != self.input_shape:
            raise ShapeError(f"pack_sat expects an input of shape {self.input_shape}, got {x.shape}")
        return summed_area_table(np.pad(x, self.pads)).ravel()

    def pack(self, x: np.ndarray) -> np.ndarray:
        """One channel (``input_shape``) -> the flat zero-padded vector the SIMD layout encrypts."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape != self.input_shape:
            raise ShapeError(f"pack expects an input of shape {self.input_shape}, got {x.shape}")
        return np.pad(x, self.pads).ravel()

    def output_slots(self, input_sat: bool = False) -> np.ndarray:
        """Slot index of each output point (array of ``out_shape``)."""
        idx = np.zeros(self.out_shape, dtype=np.int64)
        strides = self.sat_strides if input_sat else self.flat_strides
        for d, (n, st, s) in enumerate(zip(self.out_shape, self.stride, strides)):
            shape = [1] * self.ndim
            shape[d] = n
            idx = idx + (np.arange(n) * st * s).reshape(shape)
        return idx

    def unpack(self, vec: np.ndarray, input_sat: bool = False) -> np.ndarray:
        """A decrypted SIMD output vector -> the output array (``out_shape``); pass the
        ``input_sat`` the convolution ran with."""
        vec = np.asarray(vec)
        return vec[self.output_slots(input_sat)]


def _resolve_padding(padding: Any, kernel_shape: tuple[int, ...], stride: tuple[int, ...]):
    D = len(kernel_shape)
    if isinstance(padding, str):
        if padding == "valid":
            return tuple((0, 0) for _ in range(D))
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ParameterError("padding='same' needs stride 1 (as in torch)")
            return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel_shape)
        raise ParameterError(f"padding must be an int, a tuple, 'valid' or 'same'; got {padding!r}")
    if isinstance(padding, (int, np.integer)):
        padding = (int(padding),) * D
    pads = []
    try:
        items = list(padding)
    except TypeError as e:
        raise ParameterError(f"padding must be an int, a tuple, 'valid' or 'same'; got {padding!r}") from e
    if len(items) != D:
        raise ShapeError(f"padding {padding!r} has {len(items)} entries for a {D}-D convolution")
    for p in items:
        pair = (int(p), int(p)) if isinstance(p, (int, np.integer)) else tuple(int(v) for v in p)
        if len(pair) != 2 or min(pair) < 0:
            raise ParameterError(f"padding entries must be non-negative ints or (before, after) pairs, got {p!r}")
        pads.append(pair)
    return tuple(pads)


def sat_geometry(
    input_shape: Sequence[int], kernel_shape: Sequence[int], stride: int | Sequence[int] = 1, padding: Any = 0
) -> SatGeometry:
    """Resolve padding (int, per-dimension ints or pairs, ``"valid"``, ``"same"``) and shapes."""
    ishape = tuple(int(n) for n in input_shape)
    kshape = tuple(int(k) for k in kernel_shape)
    D = len(ishape)
    if D not in (1, 2, 3) or any(n < 1 for n in ishape):
        raise ShapeError(f"input_shape must be 1-D, 2-D or 3-D with positive sizes, got {ishape}")
    if len(kshape) != D:
        raise ShapeError(f"a {len(kshape)}-D kernel cannot convolve a {D}-D input of shape {ishape}")
    st = (int(stride),) * D if isinstance(stride, (int, np.integer)) else tuple(int(s) for s in stride)
    if len(st) != D or min(st) < 1:
        raise ParameterError(f"stride must be a positive int or {D} positive ints, got {stride!r}")
    pads = _resolve_padding(padding, kshape, st)
    padded = tuple(n + a + b for n, (a, b) in zip(ishape, pads))
    out = tuple((p - k) // s + 1 for p, k, s in zip(padded, kshape, st))
    if any(p < k for p, k in zip(padded, kshape)):
        raise ShapeError(f"kernel {kshape} is larger than the padded input {padded}")
    return SatGeometry(ishape, kshape, st, pads, padded, out)


# -- box-set grids ---------------------------------------------------------------------------------
def _grid(boxsets: Any) -> list[list[BoxFilterSet]]:
    """BoxFilterSet | [[BoxFilterSet]*C_in]*C_out -> list of rows (one per output channel)."""
    if isinstance(boxsets, BoxFilterSet):
        return [[boxsets]]
    arr = boxsets.tolist() if isinstance(boxsets, np.ndarray) else boxsets
    try:
        rows = [list(r) for r in arr]
    except TypeError as e:
        raise ShapeError("boxsets must be a BoxFilterSet or a C_out x C_in nested list of them") from e
    if not rows or not rows[0] or any(len(r) != len(rows[0]) for r in rows):
        raise ShapeError("boxsets must be a non-empty rectangular C_out x C_in grid of BoxFilterSets")
    shape = None
    for r in rows:
        for b in r:
            if not isinstance(b, BoxFilterSet):
                raise ShapeError(f"boxsets must hold BoxFilterSets, found {type(b).__name__}")
            if shape is None:
                shape = b.shape
            elif b.shape != shape:
                raise ShapeError(f"all box sets of a layer need one kernel shape; got {shape} and {b.shape}")
    return rows


def _check_dims(grid, input_shape) -> tuple[int, ...]:
    kshape = grid[0][0].shape
    if len(kshape) != len(tuple(input_shape)):
        raise ShapeError(
            f"box sets are {len(kshape)}-D but input_shape {tuple(input_shape)} is {len(tuple(input_shape))}-D"
        )
    return kshape


def conv_sat_depth(boxsets: Any) -> int:
    """Levels :func:`conv_sat` consumes: 1 if some box scale is not an integer, else 0."""
    for row in _grid(boxsets):
        for bs in row:
            if any(not float(b.alpha).is_integer() or abs(b.alpha) >= 2**20 for b in bs.boxes):
                return 1
    return 0



def _bias(bias, c_out):
    if bias is None:
        return None
    b = np.asarray(bias, dtype=np.float64).ravel()
    if b.size != c_out:
        raise ShapeError(f"bias has {b.size} entries for {c_out} output channels")
    if not np.all(np.isfinite(b)):
        raise ParameterError("bias contains NaN or infinite values")
    return b
