"""Diagonal matrix-vector products (Halevi-Shoup, with baby-step giant-step) and sums of
plaintext products under one rescale (``mul_plain_sum``), with numpy twins and rotation lists."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import ShapeError
from ..backend import Backend, Ciphertext, Layout
from .rotate_sum import _trim

__all__ = ['diagonal_matvec', 'diagonal_matvec_ref', 'diagonal_plan', 'mul_plain_sum', 'required_rotations_diagonal']


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
