"""Slot plumbing: masks, rotate-and-sum, replication and hole compaction (``remove_holes``).

All rotations are cyclic over *all* ``slots`` of a ciphertext (``slots = N/2``), left rotations
as in :meth:`Backend.rotate` (slot ``i + k`` moves to slot ``i``).

Level costs (each plaintext multiplication by a 0/1 mask costs one level; rotations and additions
are free):

==========================  ==========================================  =====================
operator                    rotations                                   levels
==========================  ==========================================  =====================
``mask``                    0                                           1
``rotate_and_sum(c, step)`` ``<= 2*floor(log2 c)``                      0
``replicate(n, copies)``    ``<= 2*floor(log2 copies)``                 0
``remove_holes(n, s, r)``   ``(r-1) * ceil(log_r(ceil(n/s)))``          ``ceil(log_r(ceil(n/s)))``
==========================  ==========================================  =====================

``remove_holes`` generalises the paper's procedure (stride 2, for ``i = 0..log2(N)-2``: shift
left by ``2**i``, add, multiply by a 0/1 mask keeping groups of ``2**(i+1)``) to any stride
``s >= 2`` and any radix ``r >= 2``: elements sit in blocks of ``b`` consecutive slots with period
``b*s`` (initially ``b = 1``); one step merges ``r`` neighbouring blocks by rotating sub-block
``k`` left by ``k*b*(s-1)`` and masking, so after ``t`` steps blocks hold ``r**t`` elements and
``ceil(log_r(count))`` steps compact ``count = ceil(n/s)`` elements. When the rotated copies cannot
collide inside the kept windows (the paper's stride-2, radix-2 case on a clean input), one mask
serves the whole step (1 plaintext product); otherwise each sub-block gets its own mask
(``r`` products, still one level). Larger radices trade rotations for levels.

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

__all__ = [
    "diagonal_matvec",
    "diagonal_matvec_ref",
    "diagonal_plan",
    "gather",
    "gather_depth",
    "gather_ref",
    "mask",
    "mask_ref",
    "mul_plain_sum",
    "remove_holes",
    "remove_holes_depth",
    "remove_holes_ref",
    "replicate",
    "replicate_ref",
    "required_rotations_diagonal",
    "required_rotations_gather",
    "required_rotations_remove_holes",
    "required_rotations_replicate",
    "required_rotations_rotate_and_sum",
    "rotate_and_sum",
    "rotate_and_sum_ref",
]


# -- masks -------------------------------------------------------------------------------------
def _keep_vector(keep: Sequence[int] | np.ndarray, slots: int) -> np.ndarray:
    """Indices or a boolean / 0-1 float vector -> a float 0/1 vector of ``slots`` entries.

    A ``bool`` array is a boolean vector; an integer array lists indices; a float array is taken
    as 0/1 values (any non-zero = keep).
    """
    arr = np.asarray(keep)
    if arr.ndim != 1:
        raise ShapeError(f"mask wants a 1-D index list or boolean vector, got shape {arr.shape}")
    vec = np.zeros(slots)
    if arr.dtype == bool or np.issubdtype(arr.dtype, np.floating):
        if arr.size > slots:
            raise ShapeError(f"mask vector has {arr.size} entries but a ciphertext has {slots} slots")
        vec[: arr.size] = arr != 0
        return vec
    if arr.size == 0:
        return vec
    if not np.issubdtype(arr.dtype, np.integer):
        raise ShapeError(f"mask indices must be integers, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= slots:
        raise ShapeError(f"mask indices must lie in [0, {slots}), got {arr.min()}..{arr.max()}")
    vec[arr] = 1.0
    return vec


def mask_ref(x: np.ndarray, keep: Sequence[int] | np.ndarray) -> np.ndarray:
    """Numpy twin of :func:`mask` on a slot vector ``x``."""
    x = np.asarray(x)
    return x * _keep_vector(keep, x.size)


def mask(
    backend: Backend,
    ct: Ciphertext,
    keep: Sequence[int] | np.ndarray,
    *,
    section: str | None = None,
) -> Ciphertext:
    """Zero every slot not in ``keep`` (indices, or a boolean vector); one level.

    The result's ``length`` is the last kept index + 1 (at least 1).
    """
    vec = _keep_vector(keep, backend.slots)
    backend.require_levels(ct, 1, "mask")
    nz = np.flatnonzero(vec)
    length = int(nz[-1]) + 1 if nz.size else 1
    with backend.counter.section(section or "mask"):
        out = backend.mul_plain(ct, vec[:length] if length else vec[:1])
    return out.replace(length=length)


# -- doubling sums -----------------------------------------------------------------------------
def _doubling_plan(count: int) -> list[tuple[str, int]]:
    """Binary doubling for ``sum_{i<count} rot(x, i*step)``: ('double', m) / ('extend', m)."""
    plan: list[tuple[str, int]] = []
    m = 1
    for bit in bin(count)[3:]:
        plan.append(("double", m))
        m *= 2
        if bit == "1":
            plan.append(("extend", m))
            m += 1
    return plan


def _doubling(backend: Backend, ct: Ciphertext, count: int, step: int) -> Ciphertext:
    acc = ct
    for kind, m in _doubling_plan(count):
        if kind == "double":
            acc = backend.add(acc, backend.rotate(acc, m * step))
        else:
            acc = backend.add(acc, backend.rotate(ct, m * step))
    return acc


def _doubling_steps(count: int, step: int, slots: int | None = None) -> list[int]:
    steps = {m * step for _, m in _doubling_plan(count)}
    if slots:
        steps = {s % slots for s in steps}
    return sorted(s for s in steps if s != 0)


def rotate_and_sum_ref(x: np.ndarray, count: int, step: int = 1) -> np.ndarray:
    """Numpy twin of :func:`rotate_and_sum` on a full slot vector (cyclic)."""
    x = np.asarray(x)
    return sum(np.roll(x, -i * step) for i in range(count))


def rotate_and_sum(
    backend: Backend, ct: Ciphertext, count: int, step: int = 1, *, section: str | None = None
) -> Ciphertext:
    """Slot ``j`` gets ``sum_{i<count} ct[j + i*step]`` (cyclic); slot 0 holds the total.

    Binary doubling: at most ``2*floor(log2(count))`` rotations, no level. Slots other than 0
    hold window sums (mask them if the next operator needs a clean tail); ``length`` is 1.
    """
    count, step = int(count), int(step)
    if count < 1 or count > backend.slots:
        raise ShapeError(f"rotate_and_sum needs 1 <= count <= {backend.slots}, got count={count}")
    with backend.counter.section(section or "rotate_and_sum"):
        out = _doubling(backend, ct, count, step)
    return out.replace(length=1)


def required_rotations_rotate_and_sum(count: int, step: int = 1, slots: int | None = None) -> list[int]:
    """The rotation steps :func:`rotate_and_sum` uses (generate exactly these Galois keys)."""
    return _doubling_steps(int(count), int(step), slots)


def replicate_ref(x: np.ndarray, n: int, copies: int) -> np.ndarray:
    """Numpy twin of :func:`replicate`: ``x[:n]`` tiled ``copies`` times (zeros after)."""
    x = np.asarray(x)
    out = np.zeros_like(x)
    tile = np.tile(x[:n], copies)
    out[: tile.size] = tile
    return out


def replicate(
    backend: Backend,
    ct: Ciphertext,
    n: int,
    copies: int | None = None,
    *,
    section: str | None = None,
) -> Ciphertext:
    """Tile the first ``n`` slots ``copies`` times (default ``slots // n``); no level.

    Needs slots ``n..`` zero (the convention for slots past ``length``) and ``n * copies <=
    slots``. With ``copies = slots / n`` the result is periodic with period ``n`` over all slots,
    so cyclic rotations by any ``k`` act as rotations modulo ``n``.
    """
    n = int(n)
    if n < 1 or n > backend.slots:
        raise ShapeError(f"replicate needs 1 <= n <= {backend.slots}, got n={n}")
    copies = backend.slots // n if copies is None else int(copies)
    if copies < 1 or n * copies > backend.slots:
        raise ShapeError(
            f"replicate: {copies} copies of {n} slots do not fit in {backend.slots} slots"
        )
    if ct.length > n:
        raise ShapeError(
            f"replicate needs the slots past n={n} to be zero but the ciphertext has length "
            f"{ct.length}; mask it first"
        )
    with backend.counter.section(section or "replicate"):
        out = _doubling(backend, ct, copies, -n)
    return out.replace(length=n * copies)


def required_rotations_replicate(n: int, copies: int, slots: int | None = None) -> list[int]:
    """The rotation steps :func:`replicate` uses."""
    return _doubling_steps(int(copies), -int(n), slots)


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


def _trim(vec: np.ndarray) -> np.ndarray:
    """Drop trailing zeros of a plaintext (cheaper validation; the rest is zero anyway)."""
    nz = np.flatnonzero(vec)
    return vec[: int(nz[-1]) + 1] if nz.size else vec[:1]


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


# -- sums of plaintext products with one rescale -----------------------------------------------
def mul_plain_sum(
    backend: Backend, terms: Sequence[tuple[Ciphertext, np.ndarray]]
) -> Ciphertext:
    """``sum_i terms[i][0] * terms[i][1]`` (plaintext vectors), rescaled **once**; one level.

    Identical maths to adding :meth:`Backend.mul_plain` results, but the products are summed
    before the rescale (standard lazy rescaling), which halves the cost of diagonal-method
    products on SEAL, where the rescale dominates. Delegates to :meth:`Backend.mul_plain_sum`.
    """
    return backend.mul_plain_sum(list(terms))


# -- diagonal matrix-vector products -----------------------------------------------------------
def _centered(d: int, slots: int) -> int:
    d %= slots
    return d - slots if d > slots // 2 else d


def diagonal_plan(
    offsets: Sequence[int], slots: int, hints: Sequence[int] = (), bsgs: bool = True
) -> tuple[int, dict[int, tuple[int, int]]]:
    """Split rotation offsets into giant + baby steps (``d = g + b``) minimising rotations.

    Returns ``(G, split)`` with ``split[d] = (g, b)``; ``G = 0`` means no baby-step giant-step
    (every non-zero offset rotates once). Candidates for the giant step ``G`` are powers of two
    and the ``hints`` (e.g. a channel stride); ``g = G*round(d/G)``.
    """
    offs = np.unique([_centered(int(d), slots) for d in offsets])
    plain = {int(d): (0, int(d)) for d in offs}
    best_cost = int(np.count_nonzero(offs))
    if not bsgs or best_cost <= 2:
        return 0, plain
    span = int(np.abs(offs).max())
    cands = {1 << i for i in range(1, max(2, span.bit_length() + 1))} | {int(h) for h in hints if h > 1}
    best_G = 0
    for G in sorted(cands):
        g = G * np.floor(offs / G + 0.5).astype(np.int64)
        b = offs - g
        cost = np.unique(b[b != 0]).size + np.unique(g[g != 0]).size
        if cost < best_cost:
            best_cost, best_G = int(cost), G
    if best_G == 0:
        return 0, plain
    g = best_G * np.floor(offs / best_G + 0.5).astype(np.int64)
    return best_G, {int(d): (int(gg), int(d - gg)) for d, gg in zip(offs, g)}


def required_rotations_diagonal(
    offsets: Sequence[int], slots: int, hints: Sequence[int] = (), bsgs: bool = True,
    chain: bool = False,
) -> list[int]:
    """The rotation steps :func:`diagonal_matvec` uses for these offsets."""
    if chain:
        offs = sorted({_centered(int(d), slots) for d in offsets})
        steps = set()
        for side in (1, -1):
            side_offs = sorted((d for d in offs if d * side > 0), key=abs)
            steps |= {b - a for a, b in zip([0] + side_offs, side_offs)}
        return sorted(steps)
    _, split = diagonal_plan(offsets, slots, hints, bsgs)
    return sorted({s for gb in split.values() for s in gb if s})


def diagonal_matvec_ref(x: np.ndarray, diags: dict[int, np.ndarray]) -> np.ndarray:
    """Numpy twin of :func:`diagonal_matvec` on a full slot vector."""
    x = np.asarray(x, dtype=np.complex128)
    out = np.zeros_like(x)
    for d, v in diags.items():
        vec = np.zeros(x.size, dtype=np.complex128)
        vec[: len(v)] = v
        out += vec * np.roll(x, -int(d))
    return out


def diagonal_matvec(
    backend: Backend,
    ct: Ciphertext,
    diags: dict[int, np.ndarray],
    *,
    bsgs: bool = True,
    hints: Sequence[int] = (),
    chain: bool = False,
    length: int | None = None,
    section: str | None = None,
) -> Ciphertext:
    """``y = sum_d diags[d] * rot(ct, d)`` over all slots (the diagonal method); one level.

    ``chain`` (without ``bsgs``): compute the rotations incrementally, ``rot(ct, d_{j+1}) =
    rot(rot(ct, d_j), d_{j+1} - d_j)`` (the textbook dense method: a single Galois key for step
    1 serves a contiguous band, instead of one key per diagonal).

    With ``bsgs`` the offsets are split ``d = g + b`` (:func:`diagonal_plan`) and evaluated as
    ``sum_g rot(sum_b rot(diags[d], -g) * rot(ct, b), g)`` (plaintexts pre-rotated, so
    rotations drop from ``|offsets|`` to ``|babies| + |giants|``; the giant rotations run one
    level lower, where they are cheaper). Baby-step rotations of ``ct`` are computed once and
    shared (the Backend API has no hoisted key switching).
    """
    if not diags:
        raise ShapeError("diagonal_matvec needs at least one diagonal")
    slots = backend.slots
    backend.require_levels(ct, 1, section or "diagonal_matvec")
    full: dict[int, np.ndarray] = {}
    for d, v in diags.items():
        v = np.asarray(v)
        if v.ndim != 1 or v.size > slots:
            raise ShapeError(f"diagonal {d} has shape {v.shape}; at most {slots} values")
        vec = np.zeros(slots, dtype=np.complex128)
        vec[: v.size] = v
        c = _centered(int(d), slots)
        full[c] = full[c] + vec if c in full else vec
    full = {d: v for d, v in full.items() if np.any(v)}
    if not full:
        return backend.mul_plain(ct, np.zeros(1)).replace(length=length or 1)
    _, split = diagonal_plan(list(full), slots, hints, bsgs and not chain)
    is_c = any(np.any(v.imag) for v in full.values())
    with backend.counter.section(section or "diagonal_matvec"):
        babies: dict[int, Ciphertext] = {}
        if chain and not any(g for g, _ in split.values()):
            for side in (1, -1):
                prev, cur = 0, ct
                for b in sorted((b for _, b in split.values() if b * side > 0), key=abs):
                    cur = backend.rotate(cur, b - prev)
                    babies[b] = cur
                    prev = b
        groups: dict[int, list[tuple[int, np.ndarray]]] = {}
        for d, v in full.items():
            g, b = split[d]
            groups.setdefault(g, []).append((b, v))
        acc: Ciphertext | None = None
        for g in sorted(groups):
            terms = []
            for b, v in groups[g]:
                if b not in babies:
                    babies[b] = ct if b == 0 else backend.rotate(ct, b)
                pv = np.roll(v, g) if g else v
                pv = pv if is_c else pv.real
                terms.append((babies[b], _trim(pv)))
            inner = mul_plain_sum(backend, terms)
            if g:
                inner = backend.rotate(inner, g)
            acc = inner if acc is None else backend.add(acc, inner)
    assert acc is not None
    out_len = length if length is not None else slots
    return acc.replace(length=out_len, is_complex=ct.is_complex or is_c, layout=Layout())
