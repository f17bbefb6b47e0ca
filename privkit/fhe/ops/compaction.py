"""Hole compaction: ``remove_holes`` (strided elements -> contiguous, any stride and radix) and
``gather`` (any increasing positions -> contiguous), with their numpy twins, depths and rotations.

``remove_holes`` generalises the paper's procedure (stride 2, for ``i = 0..log2(N)-2``: shift
left by ``2**i``, add, multiply by a 0/1 mask keeping groups of ``2**(i+1)``) to any stride
``s >= 2`` and any radix ``r >= 2``: elements sit in blocks of ``b`` consecutive slots with period
``b*s`` (initially ``b = 1``); one step merges ``r`` neighbouring blocks by rotating sub-block
``k`` left by ``k*b*(s-1)`` and masking, so after ``t`` steps blocks hold ``r**t`` elements and
``ceil(log_r(count))`` steps compact ``count = ceil(n/s)`` elements. When the rotated copies cannot
collide inside the kept windows (the paper's stride-2, radix-2 case on a clean input), one mask
serves the whole step (1 plaintext product); otherwise each sub-block gets its own mask
(``r`` products, still one level). Larger radices trade rotations for levels:
``(r-1) * ceil(log_r(ceil(n/s)))`` rotations and ``ceil(log_r(ceil(n/s)))`` levels.

>>> import numpy as np
>>> from privkit.fhe import KeySet
>>> keys = KeySet.generate("n8192", backend="sim")
>>> ct = keys.encrypt(np.arange(12.0))
>>> keys.decrypt(remove_holes(keys.backend, ct, 12, 3)).round(6).tolist()
[0.0, 3.0, 6.0, 9.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import ParameterError, ShapeError
from ..backend import Backend, Ciphertext, Layout
from .rotate_sum import _trim, mask

__all__ = ['gather', 'gather_depth', 'gather_ref', 'remove_holes', 'remove_holes_depth', 'remove_holes_ref', 'required_rotations_gather', 'required_rotations_remove_holes']


# -- hole compaction ---------------------------------------------------------------------------
def _holes_plan(
    n: int, stride: int, radix: int, slots: int, holes_zero: bool
) -> list[dict[str, object]]:
    """The steps of :func:`remove_holes`: per step the shifts, masks and whether one mask serves.

    Element ``e`` (``e < count``) starts in slot ``e*stride``; blocks of ``b`` elements sit with
    period ``b*stride``.
    """
    count = -(-n // stride)
    e = np.arange(count)
    plan = []
    b = 1
    if holes_zero:
        support = np.zeros(slots, dtype=bool)
        support[e * stride] = True
    else:
        support = np.ones(slots, dtype=bool)
    while b < count:
        r = min(radix, -(-count // b))
        bn = b * r
        new_pos = (e // bn) * bn * stride + (e % bn)
        sub = (e % bn) // b
        shifts = [k * b * (stride - 1) for k in range(r)]
        masks = []
        for k in range(r):
            m = np.zeros(slots)
            m[new_pos[sub == k]] = 1.0
            masks.append(m)
        # one mask suffices when no other rotated copy brings a non-zero into a kept window
        single = True
        for k in range(r):
            kept = np.flatnonzero(masks[k])
            for k2 in range(r):
                if k2 != k and support[(kept + shifts[k2]) % slots].any():
                    single = False
                    break
            if not single:
                break
        plan.append({"shifts": shifts, "masks": masks, "single": single})
        support = np.zeros(slots, dtype=bool)
        support[new_pos] = True
        b = bn
    return plan


def remove_holes_depth(n: int, stride: int, radix: int = 2, holes_zero: bool = False) -> int:
    """Levels :func:`remove_holes` consumes: ``ceil(log_radix(ceil(n/stride)))``.

    When that is 0 (stride 1, or a single element) the call still spends one level on a mask
    that cleans the holes, unless ``holes_zero``.
    """
    count = -(-int(n) // int(stride))
    if stride == 1 or count <= 1:
        return 0 if holes_zero else 1
    d, b = 0, 1
    while b < count:
        b *= radix
        d += 1
    return d


def required_rotations_remove_holes(
    n: int, stride: int, radix: int = 2, slots: int | None = None
) -> list[int]:
    """The rotation steps :func:`remove_holes` uses (generate exactly these Galois keys)."""
    count = -(-int(n) // int(stride))
    steps: set[int] = set()
    b = 1
    while stride > 1 and b < count:
        r = min(radix, -(-count // b))
        steps.update(k * b * (stride - 1) for k in range(1, r))
        b *= r
    if slots:
        steps = {s % slots for s in steps}
    return sorted(s for s in steps if s)


def remove_holes_ref(x: np.ndarray, n: int, stride: int) -> np.ndarray:
    """Numpy twin of :func:`remove_holes`: ``x[0:n:stride]``."""
    return np.asarray(x)[0 : int(n) : int(stride)].copy()


def remove_holes(
    backend: Backend,
    ct: Ciphertext,
    n: int,
    stride: int,
    *,
    radix: int = 2,
    holes_zero: bool = False,
    section: str | None = None,
) -> Ciphertext:
    """Move slots ``0, stride, 2*stride, ...`` (those ``< n``) to ``0, 1, 2, ...``.

    Args:
        n: the number of input slots considered; ``ceil(n/stride)`` elements come out.
        stride: any integer ``>= 1`` (1 only trims to ``n``: a mask unless ``holes_zero``).
        radix: blocks merged per step (see the module docstring): levels
            ``ceil(log_radix(count))``, rotations ``(radix-1)`` per level.
        holes_zero: promise that every slot other than ``0, stride, ...`` (below ``n``) is zero;
            lets steps use a single mask when possible. Without it the holes may hold anything
            (e.g. an unmasked convolution output) and are cleaned for free inside the first step.

    The result is compact (``Layout()``) with ``length = ceil(n/stride)`` and zeros after.
    """
    n, stride, radix = int(n), int(stride), int(radix)
    if stride < 1:
        raise ParameterError(f"remove_holes needs stride >= 1, got {stride}")
    if radix < 2:
        raise ParameterError(f"remove_holes needs radix >= 2, got {radix}")
    if n < 1 or n > backend.slots:
        raise ShapeError(f"remove_holes needs 1 <= n <= {backend.slots}, got n={n}")
    count = -(-n // stride)
    depth = remove_holes_depth(n, stride, radix, holes_zero)
    backend.require_levels(ct, depth, "remove_holes")
    if stride == 1 or count == 1:
        if holes_zero:
            return ct.replace(length=min(ct.length, count), layout=Layout())
        return mask(backend, ct, np.arange(count), section=section or "remove_holes").replace(
            length=count, layout=Layout()
        )
    plan = _holes_plan(n, stride, radix, backend.slots, holes_zero)
    with backend.counter.section(section or "remove_holes"):
        x = ct
        for step in plan:
            shifts: list[int] = step["shifts"]  # type: ignore[assignment]
            masks: list[np.ndarray] = step["masks"]  # type: ignore[assignment]
            rots = [x if s == 0 else backend.rotate(x, s) for s in shifts]
            if step["single"]:
                acc = rots[0]
                for r in rots[1:]:
                    acc = backend.add(acc, r)
                x = backend.mul_plain(acc, _trim(sum(masks)))
            else:
                parts = [backend.mul_plain(r, _trim(m)) for r, m in zip(rots, masks)]
                x = parts[0]
                for p in parts[1:]:
                    x = backend.add(x, p)
    return x.replace(length=count, layout=Layout())


# -- monotone gather (generic compaction) -------------------------------------------------------
def _gather_plan(positions: np.ndarray, slots: int, radix: int) -> list[dict[str, object]]:
    """Digit-by-digit routing of element ``e`` from ``positions[e]`` to ``e``.

    The displacement ``d(e) = positions[e] - e`` is non-decreasing for strictly increasing
    positions, and then moving every element left by its base-``radix`` digits, lowest digit
    first, never makes two elements meet (after ``t`` digits element ``e`` sits at
    ``positions[e] - (d(e) mod radix**t)``; equal slots would force ``e' - e = radix**t *
    (floor(d(e)/radix**t) - floor(d(e')/radix**t)) <= 0``).
    """
    e = np.arange(positions.size)
    disp = positions - e
    cur = positions.copy()
    plan = []
    unit = 1
    while unit <= (int(disp.max()) if disp.size else 0):
        digit = (disp // unit) % radix
        masks = {}
        for k in range(radix):
            sel = digit == k
            if not sel.any():
                continue
            m = np.zeros(slots)
            m[cur[sel] - k * unit] = 1.0
            masks[k * unit] = m
        cur = cur - digit * unit
        plan.append(masks)
        unit *= radix
    return plan


def gather_depth(positions: Sequence[int] | np.ndarray, radix: int = 2) -> int:
    """Levels :func:`gather` consumes (at least 1: the holes are always cleaned)."""
    pos = np.asarray(positions, dtype=np.int64)
    disp = int((pos - np.arange(pos.size)).max()) if pos.size else 0
    d, unit = 0, 1
    while unit <= disp:
        unit *= radix
        d += 1
    return max(d, 1)


def required_rotations_gather(positions: Sequence[int] | np.ndarray, radix: int = 2) -> list[int]:
    """The rotation steps :func:`gather` uses."""
    pos = np.asarray(positions, dtype=np.int64)
    return sorted({s for step in _gather_plan(pos, int(pos.max()) + 1 if pos.size else 1, radix) for s in step if s})


def gather_ref(x: np.ndarray, positions: Sequence[int] | np.ndarray) -> np.ndarray:
    """Numpy twin of :func:`gather`: ``x[positions]``."""
    return np.asarray(x)[np.asarray(positions, dtype=np.int64)].copy()


def gather(
    backend: Backend,
    ct: Ciphertext,
    positions: Sequence[int] | np.ndarray,
    *,
    radix: int = 2,
    section: str | None = None,
) -> Ciphertext:
    """Move slot ``positions[e]`` to slot ``e`` for strictly increasing ``positions``.

    The generic compaction behind 2-D/3-D strided or cropped outputs (row-major grids): base-
    ``radix`` routing of the displacements, ``ceil(log_radix(max displacement + 1))`` levels
    (at least 1), at most ``radix - 1`` rotations and ``radix`` masks per level. Other slots
    may hold anything; the result is clean past ``len(positions)``.
    """
    pos = np.asarray(positions, dtype=np.int64)
    if pos.ndim != 1 or pos.size == 0:
        raise ShapeError("gather needs a non-empty 1-D list of positions")
    if np.any(np.diff(pos) <= 0) or pos[0] < 0 or pos[-1] >= backend.slots:
        raise ShapeError(
            f"gather needs strictly increasing positions in [0, {backend.slots}), got "
            f"{pos[:8].tolist()}..."
        )
    if radix < 2:
        raise ParameterError(f"gather needs radix >= 2, got {radix}")
    depth = gather_depth(pos, radix)
    backend.require_levels(ct, depth, "gather")
    plan = _gather_plan(pos, backend.slots, radix)
    with backend.counter.section(section or "gather"):
        x = ct
        if not plan:  # already in place: clean the holes
            return mask(backend, ct, np.arange(pos.size), section="mask").replace(layout=Layout())
        for masks in plan:
            parts = [
                backend.mul_plain(x if s == 0 else backend.rotate(x, s), _trim(m))
                for s, m in masks.items()
            ]
            x = parts[0]
            for p in parts[1:]:
                x = backend.add(x, p)
    return x.replace(length=int(pos.size), layout=Layout())
