"""Slot plumbing: masks, rotate-and-sum and replication.

Hole compaction (``remove_holes``, ``gather``) lives in :mod:`privkit.fhe.ops.compaction` and the
diagonal matrix-vector product (``diagonal_matvec``, ``mul_plain_sum``) in
:mod:`privkit.fhe.ops.diagonal`; both are still importable from here.

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

>>> import numpy as np
>>> from privkit.fhe import KeySet
>>> keys = KeySet.generate("n8192", backend="sim")
>>> ct = keys.encrypt(np.arange(8.0))
>>> keys.decrypt(rotate_and_sum(keys.backend, ct, 8)).round(6).tolist()
[28.0]
"""


from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import ShapeError
from ..backend import Backend, Ciphertext

__all__ = [
    "mask",
    "mask_ref",
    "replicate",
    "replicate_ref",
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


def _trim(vec: np.ndarray) -> np.ndarray:
    """Drop trailing zeros of a plaintext (cheaper validation; the rest is zero anyway)."""
    nz = np.flatnonzero(vec)
    return vec[: int(nz[-1]) + 1] if nz.size else vec[:1]


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


# names defined in compaction.py / diagonal.py that also resolve from this module (lazily:
# those modules import this one)
_ELSEWHERE = {
    **dict.fromkeys(
        ["gather", "gather_depth", "gather_ref", "remove_holes", "remove_holes_depth", "remove_holes_ref",
         "required_rotations_gather", "required_rotations_remove_holes", "_holes_plan", "_gather_plan"],
        "compaction",
    ),
    **dict.fromkeys(
        ["diagonal_matvec", "diagonal_matvec_ref", "diagonal_plan", "mul_plain_sum", "required_rotations_diagonal",
         "_centered"],
        "diagonal",
    ),
}


def __getattr__(name: str):
    mod = _ELSEWHERE.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__package__}.{mod}"), name)
