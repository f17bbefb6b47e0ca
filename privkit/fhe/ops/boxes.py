"""Approximating 1-D / 2-D / 3-D kernels by weighted sums of box filters (pure numpy).

A kernel ``F`` (shape ``K1 x ... x Kn``, ``n <= 3``) is approximated by ``m`` boxes,
``F ~ F_hat = sum_i alpha_i * b_i`` where ``b_i`` is the indicator of the axis-aligned box
``[lo_i, hi_i)`` (inclusive-exclusive corners). With a summed-area table of the input, each box's
response costs ``2**n`` additions/subtractions and one multiplication by ``alpha_i``, so a
convolution output costs ``m`` multiplications instead of ``K1*...*Kn``.

The search is the greedy algorithm of Pires, Singh & Moura, "Approximating image filters with
box filters" (ICIP 2011), in any dimension: boxes are added one at a time; at each step every
candidate box (all ``prod K_d (K_d + 1) / 2`` of them) is scored by how much it would lower the
error *after* all scales are re-optimised, and the best one is kept. The optimal scales solve
the normal equations ``M alpha = V`` where ``M[i, j] = |b_i & b_j|`` (box-box overlaps) and
``V[i] = sum(F[b_i])`` (filter mass inside each box).

The exhaustive scoring is vectorised: with an orthonormal basis ``q_1..q_k`` of the chosen boxes
(Gram-Schmidt) and the residual ``r = F - F_hat``, adding box ``b`` lowers ``||r||^2`` by
``(r . b)^2 / (|b| - sum_j (q_j . b)^2)``, and both ``r . b`` and ``q_j . b`` are box sums, read
for all candidates at once from integral images (O(1) per candidate). A 9x9 kernel (2,025
candidates) or a 6x6x6 one (9,261) takes milliseconds per box.

**Error definition.** ``BoxFilterSet.error`` (and the ``tol`` of :func:`approximate_kernel`) is
the relative L2 kernel error ``||F - F_hat||_2 / ||F||_2``. It equals the relative L2 error of
the filter *response* expected on white-noise input (for i.i.d. zero-mean input every output
point has variance ``sigma^2 ||F||^2``), the setting of Pires et al. For a given input ``x``,
:meth:`BoxFilterSet.response_error` measures ``||x * F - x * F_hat||_2 / ||x * F||_2`` on the
valid cross-correlation (``*`` as in deep learning: no kernel flip); natural images, whose
energy sits at low frequencies, usually give a smaller error than white noise for smooth kernels.

>>> import numpy as np
>>> k = np.zeros((5, 5)); k[1:4, 1:4] = 2.0; k[2, 2] = 3.0
>>> bs = approximate_kernel(k, tol=1e-9)
>>> len(bs), bool(np.allclose(bs.dense(), k))
(2, True)
>>> sorted((b.lo, b.hi, round(b.alpha, 6)) for b in bs.boxes)
[((1, 1), (4, 4), 2.0), ((2, 2), (3, 3), 1.0)]
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable, Sequence

import numpy as np

from ...errors import ParameterError, ShapeError

__all__ = ["Box", "BoxFilterSet", "approximate_kernel", "box_candidates", "fit_alphas"]


@dataclasses.dataclass(frozen=True)
class Box:
    """A box filter ``alpha * 1[lo <= idx < hi]`` (corners inclusive-exclusive, per dimension)."""

    lo: tuple[int, ...]
    hi: tuple[int, ...]
    alpha: float

    @property
    def ndim(self) -> int:
        return len(self.lo)

    @property
    def volume(self) -> int:
        return int(np.prod([h - l for l, h in zip(self.lo, self.hi)]))

    @property
    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(l, h) for l, h in zip(self.lo, self.hi))

    def corners(self) -> list[tuple[tuple[int, ...], int]]:
        """The ``2**n`` corners ``(point, sign)`` of the box: ``sum = sum(sign * SAT[point])``
        for an exclusive summed-area table (``SAT[p] = sum(x[:p1, ..., :pn])``)."""
        out = []
        for pick in itertools.product((0, 1), repeat=self.ndim):
            point = tuple(self.hi[d] if p else self.lo[d] for d, p in enumerate(pick))
            sign = -1 if (self.ndim - sum(pick)) % 2 else 1
            out.append((point, sign))
        return out


class BoxFilterSet:
    """A kernel approximated by boxes: ``dense() = sum_i alpha_i * 1[box_i]``.

    Attributes:
        shape: the kernel shape.
        boxes: the :class:`Box` list, in the order the greedy search chose them.
        kernel: the kernel that was approximated (``None`` for a hand-made set).
        history: relative L2 kernel error after 1, 2, ... boxes (non-increasing).
    """

    def __init__(
        self,
        shape: Sequence[int],
        boxes: Iterable[Box],
        kernel: np.ndarray | None = None,
        history: Sequence[float] | None = None,
    ) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.boxes = list(boxes)
        for b in self.boxes:
            if b.ndim != len(self.shape) or any(
                not 0 <= l < h <= n for l, h, n in zip(b.lo, b.hi, self.shape)
            ):
                raise ShapeError(f"box {b} does not fit a kernel of shape {self.shape}")
        self.kernel = None if kernel is None else np.array(kernel, dtype=np.float64)
        self.history = [float(e) for e in history] if history is not None else []

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return len(self.boxes)

    def __iter__(self):
        return iter(self.boxes)

    def __repr__(self) -> str:
        err = f", error={self.error:.3%}" if self.kernel is not None else ""
        return f"BoxFilterSet(shape={self.shape}, boxes={len(self)}{err})"

    @property
    def alphas(self) -> np.ndarray:
        return np.array([b.alpha for b in self.boxes], dtype=np.float64)

    def with_alphas(self, alphas: Sequence[float]) -> BoxFilterSet:
        """The same boxes with other scales (e.g. trained ones)."""
        a = np.asarray(alphas, dtype=np.float64).ravel()
        if a.size != len(self.boxes):
            raise ShapeError(f"got {a.size} scales for {len(self.boxes)} boxes")
        boxes = [Box(b.lo, b.hi, float(v)) for b, v in zip(self.boxes, a)]
        return BoxFilterSet(self.shape, boxes, self.kernel)

    def dense(self) -> np.ndarray:
        """The reconstructed kernel ``sum_i alpha_i * 1[box_i]``."""
        out = np.zeros(self.shape)
        for b in self.boxes:
            out[b.slices] += b.alpha
        return out

    @property
    def error(self) -> float:
        """Relative L2 kernel error ``||F - dense()|| / ||F||`` (white-noise response error)."""
        if self.kernel is None:
            raise ParameterError("this box set was built without a kernel; no error to report")
        return float(np.linalg.norm(self.kernel - self.dense()) / np.linalg.norm(self.kernel))

    def response_error(self, x: np.ndarray | None = None) -> float:
        """Relative L2 error of the filter response on ``x`` (see the module docstring).

        ``||corr(x, F) - corr(x, dense())||_2 / ||corr(x, F)||_2`` over the valid
        cross-correlation; ``x`` must have the kernel's number of dimensions and be at least as
        large. ``x=None`` gives the white-noise expectation, i.e. :attr:`error`.
        """
        if x is None:
            return self.error
        if self.kernel is None:
            raise ParameterError("this box set was built without a kernel; no error to report")
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != self.ndim or any(a < k for a, k in zip(x.shape, self.shape)):
            raise ShapeError(
                f"response_error needs a {self.ndim}-D input at least {self.shape}, got shape {x.shape}"
            )
        from scipy.signal import correlate

        ref = correlate(x, self.kernel, mode="valid")
        diff = correlate(x, self.kernel - self.dense(), mode="valid")
        denom = float(np.linalg.norm(ref))
        if denom == 0.0:
            raise ParameterError("the kernel's response on this input is zero; error undefined")
        return float(np.linalg.norm(diff) / denom)

    @property
    def multiplications(self) -> int:
        """Multiplications per output point with a summed-area table (one per box)."""
        return len(self.boxes)

    @property
    def saving(self) -> float:
        """Fraction of multiplications saved against the spatial ``prod(shape)``."""
        return 1.0 - len(self.boxes) / float(np.prod(self.shape))


# -- helpers ------------------------------------------------------------------------------------
def _check_kernel(kernel: np.ndarray, what: str = "kernel") -> np.ndarray:
    arr = np.asarray(kernel)
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ParameterError(f"the {what} must be real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim not in (1, 2, 3):
        raise ShapeError(f"box filters approximate 1-D, 2-D or 3-D kernels; got a {arr.ndim}-D {what} of shape {arr.shape}")
    if arr.size == 0:
        raise ShapeError(f"the {what} is empty (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        raise ParameterError(f"the {what} contains NaN or infinite values; clean it first")
    if not np.any(arr):
        raise ParameterError(f"the {what} is all zeros; there is nothing to approximate (use no filter)")
    return arr


def box_candidates(shape: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per dimension, the arrays ``(lo, hi)`` of all intervals ``0 <= lo < hi <= n``."""
    out = []
    for n in shape:
        lo, hi = np.triu_indices(n + 1, k=1)
        out.append((lo.astype(np.intp), hi.astype(np.intp)))
    return out


def _all_box_sums(a: np.ndarray, cands: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Sums of ``a`` over every candidate box, shape ``(L1, ..., Ln)`` (integral image)."""
    integ = a
    for d in range(a.ndim):
        integ = np.cumsum(integ, axis=d)
        pad = [(0, 0)] * a.ndim
        pad[d] = (1, 0)
        integ = np.pad(integ, pad)
    for d, (lo, hi) in enumerate(cands):
        integ = np.take(integ, hi, axis=d) - np.take(integ, lo, axis=d)
    return integ


def _box_lohi(idx: tuple[int, ...], cands) -> tuple[tuple[int, ...], tuple[int, ...]]:
    lo = tuple(int(cands[d][0][i]) for d, i in enumerate(idx))
    hi = tuple(int(cands[d][1][i]) for d, i in enumerate(idx))
    return lo, hi


def fit_alphas(kernel: np.ndarray, boxes: Sequence[tuple[Sequence[int], Sequence[int]]]) -> np.ndarray:
    """Optimal scales for fixed boxes: solve ``M alpha = V`` (overlaps, masses) by least squares."""
    k = _check_kernel(kernel)
    m = len(boxes)
    if m == 0:
        return np.zeros(0)
    lo = np.array([b[0] for b in boxes], dtype=np.int64)
    hi = np.array([b[1] for b in boxes], dtype=np.int64)
    if lo.shape != (m, k.ndim) or hi.shape != (m, k.ndim):
        raise ShapeError(f"boxes must have {k.ndim} corner coordinates each")
    ov = np.ones((m, m))
    for d in range(k.ndim):
        ov *= np.clip(
            np.minimum(hi[:, None, d], hi[None, :, d]) - np.maximum(lo[:, None, d], lo[None, :, d]), 0, None
        )
    mass = np.array([k[tuple(slice(a, b) for a, b in zip(lo[i], hi[i]))].sum() for i in range(m)])
    alphas, *_ = np.linalg.lstsq(ov, mass, rcond=None)
    return alphas


def approximate_kernel(
    kernel: np.ndarray, max_boxes: int | None = None, tol: float = 0.01
) -> BoxFilterSet:
    """Greedy box approximation of a 1-D, 2-D or 3-D kernel (see the module docstring).

    Args:
        kernel: the kernel (real, finite, not all zero).
        max_boxes: stop after this many boxes (default: as many as needed; at most
            ``kernel.size`` boxes always reproduce the kernel exactly).
        tol: stop as soon as the relative L2 error ``||F - F_hat|| / ||F||`` is below ``tol``
            (``0.01`` = 1%, the paper's criterion; ``0`` runs to ``max_boxes`` / exactness).

    Raises:
        ParameterError: NaN/inf or all-zero kernel, ``max_boxes < 1``, negative ``tol``.
        ShapeError: a kernel that is not 1-D, 2-D or 3-D, or is empty.
    """
    k = _check_kernel(kernel)
    if max_boxes is not None:
        if isinstance(max_boxes, bool) or not float(max_boxes).is_integer() or max_boxes < 1:
            raise ParameterError(f"max_boxes must be an integer >= 1 (or None), got {max_boxes!r}")
        max_boxes = int(max_boxes)
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ParameterError(f"tol must be a finite number >= 0, got {tol!r}")
    limit = k.size if max_boxes is None else min(max_boxes, k.size)
    cands = box_candidates(k.shape)
    vol = np.ones([len(c[0]) for c in cands])
    for d, (lo, hi) in enumerate(cands):
        shape = [1] * k.ndim
        shape[d] = -1
        vol = vol * (hi - lo).reshape(shape)
    den = vol.astype(np.float64).copy()  # |b| - sum_j (q_j . b)^2
    norm_f = float(np.linalg.norm(k))
    r = k.copy()
    basis: list[np.ndarray] = []
    chosen: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    history: list[float] = []
    eps = 1e-9
    while len(chosen) < limit:
        if history and history[-1] < tol:
            break
        num = _all_box_sums(r, cands)
        gain = np.where(den > eps * vol, num * num / np.maximum(den, eps), -1.0)
        idx = np.unravel_index(int(np.argmax(gain)), gain.shape)
        if gain[idx] <= (1e-15 * norm_f) ** 2:
            break  # residual is (numerically) zero or orthogonal to every box
        lo, hi = _box_lohi(tuple(int(i) for i in idx), cands)
        b = np.zeros(k.shape)
        b[tuple(slice(a, c) for a, c in zip(lo, hi))] = 1.0
        q = b.copy()
        for _ in range(2):  # Gram-Schmidt with one re-orthogonalisation
            for qj in basis:
                q -= np.vdot(qj, q) * qj
        nq = float(np.linalg.norm(q))
        if nq < 1e-10:
            den[idx] = 0.0
            continue
        q /= nq
        basis.append(q)
        chosen.append((lo, hi))
        p = _all_box_sums(q, cands)
        den = den - p * p
        r = r - np.vdot(q, r) * q
        history.append(float(np.linalg.norm(r)) / norm_f)
    alphas = fit_alphas(k, chosen)
    # scales within rounding of an integer become that integer: an integer plaintext scalar costs
    # no level in CKKS (e.g. the boxes of a Sobel kernel)
    near = np.abs(alphas - np.round(alphas)) <= 1e-9 * np.maximum(1.0, np.abs(alphas))
    alphas = np.where(near, np.round(alphas), alphas)
    boxes = [Box(lo, hi, float(a)) for (lo, hi), a in zip(chosen, alphas)]
    return BoxFilterSet(k.shape, boxes, kernel=k, history=history)
