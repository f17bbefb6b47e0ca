"""Homomorphic DFT / inverse DFT of length ``n`` (a power of two, ``n <= slots``) on complex slots.

The operator is :func:`dft` (``privkit.fhe.ops.dft``); this module is named ``fourier`` so that no
submodule shadows the function of the same name in :mod:`privkit.fhe.ops`.

Factorisation. The radix-2 decimation-in-frequency Cooley-Tukey FFT writes the DFT matrix as
``F = P S_{m-1} ... S_1 S_0`` (``m = log2 n``), where stage ``S_s`` holds the butterflies of
half-size ``h = n / 2**(s+1)`` (diagonals ``0, +h, -h``) and ``P`` is the bit-reversal
permutation. Applying a matrix with diagonals ``D`` to a ciphertext costs ``|D|`` plaintext
products and ``|D| - 1`` rotations (fewer with baby-step giant-step) and **one level**, so the
stages are grouped: consecutive factors are multiplied out (in numpy) into one sparse matrix per
level. ``levels`` (or ``radix``: ``levels = ceil(log_radix n)``) is the knob trading depth for
rotations; within that budget a small dynamic programme picks the grouping that minimises the
estimated cost (``2 x rotations + plaintext products``) and every group is applied with the
diagonal method, baby-step giant-step where it saves rotations
(:func:`~privkit.fhe.ops.rotate_sum.diagonal_matvec`).

Natural order. ``P`` is a product of ``floor(m/2)`` bit-pair swaps (bits ``j`` and ``m-1-j``),
each a permutation with 3 diagonals. Swap ``j`` is moved right after stage ``j`` (the later
stages are conjugated by it, which keeps them at 3 diagonals) and merged into that stage's group:
natural-order output costs roughly twice the plaintext products of bit-reversed output, but no
level. Convolutions avoid it altogether: forward DFT natural -> bit-reversed, Hadamard product
with the filter spectrum in bit-reversed order, inverse DFT bit-reversed -> natural
(``F^-1 P = (1/n) S_0^H ... S_{m-1}^H``).

Slots and wrap-around. Rotations are cyclic over all ``slots``, not over ``n``. When
``n < slots`` the input (which must be zero past ``n``) is first **replicated** with period
``n`` over all slots (``log2(slots/n)`` rotations, no level); every group's diagonals are tiled
with period ``n``, so each intermediate stays ``n``-periodic and a rotation by ``d`` acts as a
rotation modulo ``n``. The last group's diagonals are kept only on slots ``[0, n)``, so the
result is clean past ``n`` without an extra mask.

Baseline. ``method="naive"`` is the dense matrix-vector DFT by the diagonal method: ``n``
plaintext products and ``n - 1`` rotations computed incrementally (keys for steps 1 and -1
only), one level (``method="dense-bsgs"``: the same matrix with baby-step giant-step, about
``2 sqrt(n)`` rotations, one key per baby and giant step).

Magnitudes grow by up to ``n`` (``norm="backward"``, numpy's default); pick ``norm="ortho"`` or
scale the input when ``n * max|x|`` approaches the parameters' ``max_abs_value``.

>>> import numpy as np
>>> from privkit.fhe import KeySet
>>> keys = KeySet.generate("n8192", backend="sim")
>>> x = np.array([1.0, 2.0, 0.0, -1.0])
>>> y = keys.decrypt(dft(keys.backend, keys.encrypt(x), 4))
>>> np.allclose(y, np.fft.fft(x))
True
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from ...errors import ParameterError, ShapeError
from ..backend import Backend, Ciphertext, Layout
from .diagonal import (
    _centered,
    diagonal_matvec,
    diagonal_plan,
    required_rotations_diagonal,
)
from .rotate_sum import replicate, required_rotations_replicate

__all__ = [
    "DFTPlan",
    "apply_sparse_chain",
    "dft",
    "dft_depth",
    "dft_plan",
    "dft_ref",
    "required_rotations_dft",
]

_ROT_COST = 2.0  # a rotation costs about two plaintext products (SEAL, measured)
_MAX_GROUP = 8  # factors multiplied into one level at most (keeps planning fast)


# -- the factors -------------------------------------------------------------------------------
def _stage(n: int, s: int) -> sp.csr_matrix:
    """DIF stage ``s`` (half-size ``h = n >> (s+1)``), forward twiddles ``exp(-2 pi i t / 2h)``."""
    h = n >> (s + 1)
    t = np.arange(n)
    lo = (t // h) % 2 == 0  # upper half of each block of 2h
    i = t[lo]
    tw = np.exp(-2j * np.pi * (i % h) / (2 * h))
    rows = np.concatenate([i, i, i + h, i + h])
    cols = np.concatenate([i, i + h, i, i + h])
    vals = np.concatenate([np.ones(i.size), np.ones(i.size), tw, -tw])
    return sp.csr_matrix((vals, (rows, cols)), shape=(n, n))


def _perm(p: np.ndarray) -> sp.csr_matrix:
    """``(M x)[i] = x[p[i]]``."""
    n = p.size
    return sp.csr_matrix((np.ones(n), (np.arange(n), p)), shape=(n, n))


def _swap(n: int, a: int, b: int) -> np.ndarray:
    i = np.arange(n)
    diff = ((i >> a) ^ (i >> b)) & 1
    return i ^ (diff << a) ^ (diff << b)


def bitrev_indices(n: int) -> np.ndarray:
    """Bit-reversal permutation of ``range(n)``."""
    m = n.bit_length() - 1
    i = np.arange(n)
    out = np.zeros(n, dtype=np.int64)
    for b in range(m):
        out |= ((i >> b) & 1) << (m - 1 - b)
    return out


@functools.lru_cache(maxsize=64)
def _chain(n: int, inverse: bool, in_order: str, out_order: str) -> tuple[sp.csr_matrix, ...]:
    """Factors in application order (first applied first) of the (unnormalised) transform."""
    m = n.bit_length() - 1
    stages = [_stage(n, s) for s in range(m)]
    if (in_order, out_order) == ("natural", "bitrev"):
        mats = stages
    elif (in_order, out_order) == ("natural", "natural"):
        mats = []
        q = sp.identity(n, format="csr")
        for s in range(m):
            mats.append((q @ stages[s] @ q.T).tocsr())
            if s < m // 2 and s != m - 1 - s:
                sw = _perm(_swap(n, s, m - 1 - s))
                mats.append(sw)
                q = (sw @ q).tocsr()
    elif (in_order, out_order) == ("bitrev", "natural"):
        # F P = F^T P = S_0^T ... S_{m-1}^T (F symmetric, P P = I)
        mats = [s.T.tocsr() for s in reversed(stages)]
    else:
        raise ParameterError(f"unsupported orders in={in_order!r} out={out_order!r}")
    if not mats:  # n == 1
        mats = [sp.identity(n, format="csr", dtype=np.complex128)]
    if inverse:  # F^-1 = conj(F) / n, applied to the same orders
        mats = [mm.conj().tocsr() for mm in mats]
    return tuple(mats)


def _transform_matrix(n: int, inverse: bool, in_order: str, out_order: str, norm: str) -> np.ndarray:
    """Dense reference matrix (for tests and the naive method)."""
    j = np.arange(n)
    sign = 1 if inverse else -1
    F = np.exp(sign * 2j * np.pi * np.outer(j, j) / n) * _norm_factor(n, inverse, norm)
    br = bitrev_indices(n)
    if in_order == "bitrev":
        F = F[:, br]
    if out_order == "bitrev":
        F = F[br, :]
    return F


def _norm_factor(n: int, inverse: bool, norm: str) -> float:
    if norm == "backward":
        return 1.0 / n if inverse else 1.0
    if norm == "ortho":
        return 1.0 / np.sqrt(n)
    if norm == "forward":
        return 1.0 if inverse else 1.0 / n
    raise ParameterError(f"norm must be 'backward', 'ortho' or 'forward', got {norm!r}")


# -- planning ----------------------------------------------------------------------------------
def _offsets(M: sp.spmatrix, n: int) -> list[int]:
    c = M.tocoo()
    keep = np.abs(c.data) > 1e-12
    return sorted(set(((c.col[keep] - c.row[keep]) % n).tolist()))


def _group_cost(M: sp.spmatrix, n: int, bsgs: bool) -> tuple[float, int, int]:
    offs = _offsets(M, n)
    _, split = diagonal_plan(offs, n, (), bsgs)
    rots = len({b for _, b in split.values() if b}) + len({g for g, _ in split.values() if g})
    return len(offs) + _ROT_COST * rots, len(offs), rots


class DFTPlan:
    """A grouping of the factor chain into levels: ``groups[i]`` is an ``n x n`` sparse matrix.

    ``diags_count``/``rotations`` are per group; ``scale`` is applied to the first group.
    """

    def __init__(self, n: int, groups: list[sp.csr_matrix], bsgs: bool) -> None:
        self.n = n
        self.groups = groups
        self.bsgs = bsgs

    @property
    def levels(self) -> int:
        return len(self.groups)

    def offsets(self) -> list[list[int]]:
        return [_offsets(g, self.n) for g in self.groups]

    def cost(self) -> dict[str, int]:
        d = r = 0
        for g in self.groups:
            _, di, ro = _group_cost(g, self.n, self.bsgs)
            d += di
            r += ro
        return {"levels": self.levels, "pt_mults": d, "rotations": r}

    def __repr__(self) -> str:
        return f"<DFTPlan n={self.n} {self.cost()}>"


def _offset_cost(offs: np.ndarray, n: int, bsgs: bool) -> float:
    _, split = diagonal_plan(offs.tolist(), n, (), bsgs)
    rots = len({b for _, b in split.values() if b}) + len({g for g, _ in split.values() if g})
    return offs.size + _ROT_COST * rots


@functools.lru_cache(maxsize=64)
def _best_grouping(n: int, inverse: bool, in_order: str, out_order: str, levels: int, bsgs: bool):
    """Contiguous grouping of the factors into ``levels`` groups of minimal estimated cost.

    Costs come from the offset sum-sets (a superset of the product's diagonals, exact unless
    entries cancel); only the chosen groups are multiplied out.
    """
    mats = _chain(n, inverse, in_order, out_order)
    K = len(mats)
    levels = max(1, min(levels, K))
    span = min(K, -(-K // levels) + 3, _MAX_GROUP + -(-K // levels))
    base = [np.array(_offsets(mm, n), dtype=np.int64) for mm in mats]
    costs: dict[tuple[int, int], float] = {}
    for i in range(K):
        acc = np.array([0], dtype=np.int64)
        for j in range(i + 1, min(K, i + span) + 1):
            acc = np.unique((acc[:, None] + base[j - 1][None, :]).ravel() % n)
            costs[(i, j)] = _offset_cost(acc, n, bsgs)
    best: dict[tuple[int, int], tuple[float, list[tuple[int, int]]]] = {(0, 0): (0.0, [])}
    for lv in range(1, levels + 1):
        for j in range(1, K + 1):
            cand = None
            for i in range(max(0, j - span), j):
                if (i, lv - 1) in best and (i, j) in costs:
                    c = best[(i, lv - 1)][0] + costs[(i, j)]
                    if cand is None or c < cand[0]:
                        cand = (c, best[(i, lv - 1)][1] + [(i, j)])
            if cand is not None:
                best[(j, lv)] = cand
    options = [best[(K, lv)] for lv in range(1, levels + 1) if (K, lv) in best]
    if not options:
        raise ParameterError(f"no grouping of the {K} DFT factors into {levels} levels")
    _, segs = min(options, key=lambda t: t[0])
    groups = []
    for i, j in segs:
        acc = mats[i]
        for k in range(i + 1, j):
            acc = (mats[k] @ acc).tocsr()
        acc.eliminate_zeros()
        groups.append(acc)
    return groups


def dft_plan(
    n: int,
    *,
    inverse: bool = False,
    levels: int | None = None,
    radix: int | None = None,
    in_order: str = "natural",
    out_order: str = "natural",
    norm: str = "backward",
    method: str = "factored",
    bsgs: bool = True,
) -> DFTPlan:
    """The level-by-level sparse matrices a :func:`dft` call applies (shapes only, no keys)."""
    _check_n(n)
    scale = _norm_factor(n, inverse, norm)
    if method in ("naive", "dense-bsgs"):
        F = sp.csr_matrix(_transform_matrix(n, inverse, in_order, out_order, norm))
        return DFTPlan(n, [F], bsgs=(method == "dense-bsgs"))
    if method != "factored":
        raise ParameterError(f"method must be 'factored', 'naive' or 'dense-bsgs', got {method!r}")
    lv = _levels(n, levels, radix)
    groups = list(_best_grouping(n, inverse, in_order, out_order, lv, bsgs))
    # spread the normalisation evenly over the levels (keeps intermediates small)
    per = scale ** (1.0 / len(groups))
    groups = [(g * per).tocsr() for g in groups]
    return DFTPlan(n, groups, bsgs)


def _levels(n: int, levels: int | None, radix: int | None) -> int:
    m = n.bit_length() - 1
    if levels is not None and radix is not None:
        raise ParameterError("give levels or radix, not both")
    if radix is not None:
        if radix < 2 or radix & (radix - 1):
            raise ParameterError(f"radix must be a power of two >= 2, got {radix}")
        r = radix.bit_length() - 1
        return max(1, -(-m // r))
    if levels is None:
        return max(1, min(3, m))
    if levels < 1:
        raise ParameterError(f"levels must be >= 1, got {levels}")
    return max(1, min(int(levels), max(m, 1)))


def _check_n(n: int) -> None:
    if not isinstance(n, (int, np.integer)) or n < 1 or n & (n - 1):
        raise ShapeError(f"the DFT length must be a power of two, got {n!r}")


def dft_depth(
    n: int, *, inverse: bool = False, levels: int | None = None, radix: int | None = None,
    method: str = "factored", in_order: str = "natural", out_order: str = "natural",
) -> int:
    """Levels a :func:`dft` call consumes (at most ``levels``: the planner may use fewer)."""
    return dft_plan(n, inverse=inverse, levels=levels, radix=radix, method=method,
                    in_order=in_order, out_order=out_order).levels


# -- applying a chain of sparse matrices -------------------------------------------------------
def _diagonals(M: sp.spmatrix, n: int) -> dict[int, np.ndarray]:
    """``diag_d[i] = M[i, (i + d) mod n]``, keyed by centred ``d``."""
    c = M.tocoo()
    keep = np.abs(c.data) > 1e-14
    rows, cols, vals = c.row[keep], c.col[keep], c.data[keep]
    d = (cols - rows) % n
    out: dict[int, np.ndarray] = {}
    for off in np.unique(d):
        sel = d == off
        v = np.zeros(n, dtype=np.complex128)
        v[rows[sel]] = vals[sel]
        out[_centered(int(off), n)] = v
    return out


def _tile(v: np.ndarray, slots: int) -> np.ndarray:
    return np.tile(v, slots // v.size)


def chain_rotations(groups: Sequence[sp.spmatrix], n: int, slots: int, bsgs: bool,
                    chain: bool = False) -> list[int]:
    """The rotation steps :func:`apply_sparse_chain` uses."""
    steps: set[int] = set()
    for g in groups:
        offs = [_centered(d, n) for d in _offsets(g, n)]
        steps |= set(required_rotations_diagonal(offs, slots, (), bsgs, chain))
    if n < slots:
        steps |= set(required_rotations_replicate(n, slots // n, slots))
    return sorted({s % slots for s in steps if s % slots})


def apply_sparse_chain(
    backend: Backend,
    ct: Ciphertext,
    groups: Sequence[sp.spmatrix],
    n: int,
    *,
    bsgs: bool = True,
    chain: bool = False,
    replicated: bool = False,
    periodic_output: bool = False,
    out_length: int | None = None,
    section: str = "sparse_chain",
) -> Ciphertext:
    """Apply ``groups[-1] @ ... @ groups[0]`` (each ``n x n``) to the first ``n`` slots.

    One level per group. With ``n < slots`` the input is replicated with period ``n`` first
    (unless ``replicated``: the input is already ``n``-periodic), every group but the last acts
    on all periods, and the last writes only slots ``[0, n)`` (clean tail) unless
    ``periodic_output`` (then the result stays ``n``-periodic, ready for another chain).
    """
    slots = backend.slots
    if n > slots or slots % n:
        raise ShapeError(f"the transform size {n} must divide the {slots} slots")
    backend.require_levels(ct, len(groups), section)
    with backend.counter.section(section):
        x = ct
        if n < slots and not replicated:
            if ct.length > n:
                raise ShapeError(
                    f"the input must be zero past slot {n} (it has length {ct.length}); mask it "
                    "first (privkit.fhe.ops.mask)"
                )
            x = replicate(backend, x, n, slots // n, section="replicate")
        for gi, g in enumerate(groups):
            last = gi == len(groups) - 1 and not periodic_output
            diags = _diagonals(g, n)
            full = {}
            for d, v in diags.items():
                if last or n == slots:
                    vec = np.zeros(slots, dtype=np.complex128)
                    vec[:n] = v
                else:
                    vec = _tile(v, slots)
                full[d] = vec
            x = diagonal_matvec(backend, x, full, bsgs=bsgs, chain=chain, section=f"level{gi}")
    length = (slots if periodic_output else n) if out_length is None else out_length
    return x.replace(length=length, layout=Layout(), is_complex=True)


# -- the operator ------------------------------------------------------------------------------
def dft_ref(
    x: np.ndarray, n: int, inverse: bool = False, *, in_order: str = "natural",
    out_order: str = "natural", norm: str = "backward",
) -> np.ndarray:
    """Numpy twin of :func:`dft`: ``numpy.fft.fft(x[:n])`` (``ifft`` when inverse), reordered."""
    a = np.asarray(x)[:n]
    x = np.zeros(n, dtype=np.complex128)
    x[: a.size] = a
    return _transform_matrix(n, inverse, in_order, out_order, norm) @ x


def dft(
    backend: Backend,
    ct: Ciphertext,
    n: int,
    inverse: bool = False,
    *,
    levels: int | None = None,
    radix: int | None = None,
    method: str = "factored",
    norm: str = "backward",
    in_order: str = "natural",
    out_order: str = "natural",
    bsgs: bool = True,
    section: str | None = None,
) -> Ciphertext:
    """First ``n`` (complex) slots := ``numpy.fft.fft(x[:n])`` (``ifft`` when ``inverse``).

    Args:
        n: a power of two, ``n <= slots``; the input must be zero past slot ``n``.
        levels / radix: the depth knob (default 3 levels, or ``log2 n`` if smaller); more levels
            mean fewer plaintext products and rotations.
        method: ``"factored"`` (default), ``"naive"`` (dense diagonal method, the baseline) or
            ``"dense-bsgs"``.
        norm: numpy's ``"backward"`` / ``"ortho"`` / ``"forward"``.
        in_order / out_order: ``"natural"`` or ``"bitrev"`` (bit-reversed), e.g. forward
            natural -> bitrev and inverse bitrev -> natural for convolutions (cheapest).
    """
    _check_n(n)
    if n > backend.slots:
        raise ShapeError(f"a DFT of length {n} does not fit in {backend.slots} slots")
    plan = dft_plan(n, inverse=inverse, levels=levels, radix=radix, in_order=in_order,
                    out_order=out_order, norm=norm, method=method, bsgs=bsgs)
    backend.require_levels(ct, plan.levels, section or "dft")
    return apply_sparse_chain(backend, ct, plan.groups, n, bsgs=plan.bsgs,
                              chain=method == "naive",
                              section=section or ("idft" if inverse else "dft"))


def required_rotations_dft(
    n: int, slots: int, *, inverse: bool = False, levels: int | None = None,
    radix: int | None = None, method: str = "factored", in_order: str = "natural",
    out_order: str = "natural", bsgs: bool = True,
) -> list[int]:
    """The rotation steps a :func:`dft` call uses (generate exactly these Galois keys)."""
    plan = dft_plan(n, inverse=inverse, levels=levels, radix=radix, in_order=in_order,
                    out_order=out_order, method=method, bsgs=bsgs)
    return chain_rotations(plan.groups, n, slots, plan.bsgs, chain=method == "naive")

