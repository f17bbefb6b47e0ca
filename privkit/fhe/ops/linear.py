"""Fully connected layers: ``y = weight @ x[:n] + bias`` in the first ``weight.shape[0]`` slots.

Two families, measured side by side in ``bench/linear.py``:

* :func:`linear_dft`, the ICPR 2024 apnea paper's method: for every output node ``i`` the
  products ``weight[i] * x`` (one plaintext product) are summed through the DC term of a DFT
  (the factored homomorphic DFT of :mod:`.dft`, bit-reversed output, whose last level keeps only
  the DC row and writes it to slot ``i``). Depth ``1 + levels``; cost ``m`` DFTs. The DC term of
  a DFT *is* the slot sum, so this is a faithful reproduction, not a recommendation.
* :func:`linear_diag`, the standard alternatives:

  - ``method="diag"``: the diagonal method (Halevi-Shoup) with baby-step giant-step on the
    ``n x n`` cyclic diagonals of the zero-padded matrix: ``n`` plaintext products (summed with
    a single rescale), about ``2 sqrt(n)`` rotations, **one level**. The input is replicated
    (``x || x ...``, one or two rotations) so rotations act modulo ``n``.
  - ``method="hybrid"`` (rotate-and-sum, GAZELLE's hybrid): for ``m << n``, ``m'`` (``m``
    rounded up to a power of two) extended diagonals ``d_k[j] = W[j mod m', (j+k) mod n']`` give
    ``n'`` partial sums that a rotate-and-sum with step ``m'`` folds (``log2(n'/m')``
    rotations), then a mask cleans the tail: ``m'`` products, about ``2 sqrt(m') + log2(n'/m')``
    rotations, **two levels**.
  - ``method="auto"`` (default) picks the cheaper by the operation counts above.

Several input ciphertexts (``x = concat(x_0[:n_0], x_1[:n_1], ...)``) are handled block by
block and summed (no extra level).

>>> import numpy as np
>>> from privkit.fhe import KeySet
>>> keys = KeySet.generate("n8192", backend="sim")
>>> W, b, x = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 1.0]]), np.array([0.5, 0.0]), np.ones(3)
>>> np.allclose(keys.decrypt(linear_diag(keys.backend, keys.encrypt(x), W, b, 3)), W @ x + b)
True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from ...errors import ParameterError, ShapeError
from ..backend import Backend, Ciphertext, Layout
from .diagonal import diagonal_matvec, mul_plain_sum, required_rotations_diagonal
from .fourier import apply_sparse_chain, chain_rotations, dft_plan
from .rotate_sum import (
    mask,
    replicate,
    required_rotations_replicate,
    required_rotations_rotate_and_sum,
    rotate_and_sum,
)

__all__ = [
    "linear_depth",
    "linear_dft",
    "linear_diag",
    "linear_method",
    "linear_ref",
    "required_rotations_linear",
]


def linear_ref(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, n: int | None = None) -> np.ndarray:
    """Numpy twin: ``weight @ x[:n] + bias``."""
    W = np.asarray(weight, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    n = W.shape[1] if n is None else n
    xx = np.zeros(W.shape[1])
    xx[: min(n, x.size)] = x[: min(n, x.size)]
    y = W @ xx
    return y + (0.0 if bias is None else np.asarray(bias, dtype=np.float64))


# -- inputs ------------------------------------------------------------------------------------
def _blocks(
    backend: Backend, ct: Ciphertext | Sequence[Ciphertext], weight: np.ndarray, bias, n
) -> tuple[list[Ciphertext], list[int], np.ndarray, np.ndarray | None]:
    W = np.asarray(weight, dtype=np.float64)
    if W.ndim != 2:
        raise ShapeError(f"weight must be a 2-D (out, in) matrix, got shape {W.shape}")
    if not np.all(np.isfinite(W)):
        raise ParameterError("weight contains NaN or infinite values")
    cts = [ct] if isinstance(ct, Ciphertext) else list(ct)
    if not cts:
        raise ShapeError("no input ciphertexts")
    ns = [int(n)] * len(cts) if np.isscalar(n) else [int(v) for v in n]  # type: ignore[arg-type]
    if len(ns) != len(cts):
        raise ShapeError(f"{len(cts)} ciphertexts but {len(ns)} lengths")
    if sum(ns) != W.shape[1]:
        raise ShapeError(
            f"weight has {W.shape[1]} columns but the inputs hold {sum(ns)} values ({ns})"
        )
    if W.shape[0] > backend.slots or max(ns) > backend.slots:
        raise ShapeError(f"layer {W.shape} does not fit in {backend.slots} slots")
    b = None
    if bias is not None:
        b = np.broadcast_to(np.asarray(bias, dtype=np.float64), (W.shape[0],)).copy()
    return cts, ns, W, b


def _add_bias(backend: Backend, y: Ciphertext, b: np.ndarray | None, m: int) -> Ciphertext:
    if b is not None and np.any(b):
        y = backend.add_plain(y, b)
    return y.replace(length=m, layout=Layout(), is_complex=False)


# -- diagonal / hybrid -------------------------------------------------------------------------
def _pow2(v: int) -> int:
    return 1 << max(0, (int(v) - 1).bit_length())


def _diag_cost(m: int, n: int, slots: int) -> dict[str, int]:
    offs = list(range(n))
    rots = len(required_rotations_diagonal(offs, slots))
    copies = -(-(m - 1 + n) // n) if m > 1 else 1
    rots += len(required_rotations_replicate(n, copies)) if n < slots else 0
    return {"pt_mults": n, "rotations": rots, "levels": 1}


def _hybrid_shape(m: int, n: int) -> tuple[int, int]:
    mp = _pow2(m)
    npad = -(-n // mp) * mp
    return mp, npad


def _hybrid_cost(m: int, n: int, slots: int) -> dict[str, int]:
    mp, npad = _hybrid_shape(m, n)
    rots = len(required_rotations_diagonal(list(range(mp)), slots))
    rots += len(required_rotations_rotate_and_sum(npad // mp, mp))
    copies = -(-(mp - 1 + npad) // npad)
    rots += len(required_rotations_replicate(npad, copies)) if copies > 1 else 0
    return {"pt_mults": mp + 1, "rotations": rots, "levels": 2}


def linear_method(m: int, n: int, slots: int) -> str:
    """What ``method="auto"`` picks for an ``m x n`` block: ``"diag"`` or ``"hybrid"``
    (by ``pt_mults + 2 * rotations``, the measured relative cost on SEAL)."""
    d, h = _diag_cost(m, n, slots), _hybrid_cost(m, n, slots)
    fits = _hybrid_shape(m, n)[1] + _hybrid_shape(m, n)[0] <= slots
    if fits and h["pt_mults"] + 2 * h["rotations"] < d["pt_mults"] + 2 * d["rotations"]:
        return "hybrid"
    return "diag"


def _diag_block(backend: Backend, x: Ciphertext, W: np.ndarray, n: int) -> Ciphertext:
    m = W.shape[0]
    slots = backend.slots
    copies = -(-(m - 1 + n) // n) if m > 1 else 1
    if copies * n > slots:
        raise ShapeError(f"the diagonal method needs {copies} copies of {n} values > {slots} slots")
    xr = replicate(backend, x, n, copies, section="replicate") if copies > 1 else x
    rows = np.arange(m)
    diags = {}
    for k in range(n):
        v = W[rows, (rows + k) % n]
        if np.any(v):
            diags[k] = v
    if not diags:
        return backend.mul_plain(x, np.zeros(1))
    return diagonal_matvec(backend, xr, diags, section="diagonals")


def _hybrid_block(backend: Backend, x: Ciphertext, W: np.ndarray, n: int) -> tuple[Ciphertext, int]:
    m = W.shape[0]
    mp, npad = _hybrid_shape(m, n)
    Wp = np.zeros((mp, npad))
    Wp[:m, :n] = W
    copies = -(-(mp - 1 + npad) // npad)
    xr = replicate(backend, x, npad, copies, section="replicate") if copies > 1 else x
    j = np.arange(npad)
    diags = {k: Wp[j % mp, (j + k) % npad] for k in range(mp)}
    diags = {k: v for k, v in diags.items() if np.any(v)}
    if not diags:
        return backend.mul_plain(x, np.zeros(1)), 1
    y = diagonal_matvec(backend, xr, diags, section="diagonals")
    y = rotate_and_sum(backend, y, npad // mp, mp, section="rotate_and_sum")
    return y, 1  # one more level (the mask) pending


def linear_depth(m: int, n: int | Sequence[int], slots: int, method: str = "auto",
                 levels: int | None = None) -> int:
    """Levels a linear layer consumes (``linear_diag`` methods, or ``"dft"`` for linear_dft)."""
    ns = [int(n)] if np.isscalar(n) else [int(v) for v in n]  # type: ignore[arg-type]
    if method == "dft":
        return 1 + max(dft_plan(_pow2(v), levels=levels, out_order="bitrev").levels for v in ns)
    meths = [linear_method(m, v, slots) if method == "auto" else method for v in ns]
    return 2 if "hybrid" in meths else 1


def linear_diag(
    backend: Backend,
    ct: Ciphertext | Sequence[Ciphertext],
    weight: np.ndarray,
    bias: np.ndarray | Sequence[float] | float | None,
    n: int | Sequence[int],
    *,
    method: str = "auto",
    section: str | None = None,
) -> Ciphertext:
    """``weight @ x[:n] + bias`` in the first ``weight.shape[0]`` slots (clean tail).

    ``method``: ``"diag"`` (BSGS diagonal method, 1 level), ``"hybrid"`` (rotate-and-sum,
    2 levels, fewest operations when ``m << n``) or ``"auto"``. ``ct`` may be a list of
    ciphertexts with ``n`` a list of their lengths (or one length for all).
    """
    cts, ns, W, b = _blocks(backend, ct, weight, bias, n)
    m = W.shape[0]
    if method not in ("auto", "diag", "hybrid"):
        raise ParameterError(f"method must be 'auto', 'diag' or 'hybrid', got {method!r}")
    meths = [linear_method(m, v, backend.slots) if method == "auto" else method for v in ns]
    depth = 2 if "hybrid" in meths else 1
    for c, v in zip(cts, ns):
        backend.require_levels(c, depth, section or "linear_diag")
        if c.length > v:
            raise ShapeError(
                f"linear_diag needs slots past n={v} to be zero but the ciphertext has length "
                f"{c.length}; mask it first"
            )
    with backend.counter.section(section or "linear_diag"):
        col = 0
        diag_parts: list[Ciphertext] = []
        hyb_parts: list[Ciphertext] = []
        for c, v, meth in zip(cts, ns, meths):
            Wb = W[:, col : col + v]
            col += v
            if meth == "diag":
                diag_parts.append(_diag_block(backend, c, Wb, v))
            else:
                hyb_parts.append(_hybrid_block(backend, c, Wb, v)[0])
        y = None
        if hyb_parts:
            h = hyb_parts[0]
            for p in hyb_parts[1:]:
                h = backend.add(h, p)
            y = mask(backend, h, np.arange(m), section="mask")
        for p in diag_parts:
            y = p if y is None else backend.add(y, p)
        assert y is not None
        y = _add_bias(backend, y, b, m)
    return y


# -- the paper's DFT-DC slot sum ---------------------------------------------------------------
def linear_dft(
    backend: Backend,
    ct: Ciphertext | Sequence[Ciphertext],
    weight: np.ndarray,
    bias: np.ndarray | Sequence[float] | float | None,
    n: int | Sequence[int],
    *,
    levels: int | None = None,
    section: str | None = None,
) -> Ciphertext:
    """``weight @ x[:n] + bias`` by the paper's method: per output node, the products
    ``weight[i] * x`` summed through the DC term of a homomorphic DFT of length
    ``N = next_pow2(n)`` written to slot ``i``. Depth ``1 + levels`` (default 3)."""
    cts, ns, W, b = _blocks(backend, ct, weight, bias, n)
    m = W.shape[0]
    plans = {v: dft_plan(_pow2(v), levels=levels, out_order="bitrev") for v in set(ns)}
    depth = 1 + max(p.levels for p in plans.values())
    for c, v in zip(cts, ns):
        backend.require_levels(c, depth, section or "linear_dft")
        if _pow2(v) > backend.slots:
            raise ShapeError(f"a DFT of length {_pow2(v)} does not fit in {backend.slots} slots")
    with backend.counter.section(section or "linear_dft"):
        y = None
        col = 0
        for c, v in zip(cts, ns):
            N = _pow2(v)
            plan = plans[v]
            Wb = W[:, col : col + v]
            col += v
            for i in range(m):
                if not np.any(Wb[i]):
                    continue
                with backend.counter.section("products"):
                    p = mul_plain_sum(backend, [(c, Wb[i])])
                groups = _dc_groups(plan, N, i, backend.slots)
                if N < backend.slots and i >= N:
                    raise ShapeError(f"output {i} does not fit the DFT length {N}")
                node = apply_sparse_chain(backend, p.replace(length=v), groups, N, section="dft_dc")
                y = node if y is None else backend.add(y, node)
        if y is None:
            y = backend.mul_plain(cts[0], np.zeros(1))
        y = _add_bias(backend, y, b, m)
    return y


def _dc_groups(plan, N: int, i: int, slots: int) -> list[sp.csr_matrix]:
    """The DFT groups, with the last one keeping only the DC row (row 0), moved to row ``i``."""
    if i >= N:
        raise ShapeError(
            f"linear_dft writes output {i} inside the DFT length {N}; use linear_diag for more "
            "outputs than inputs"
        )
    post = sp.csr_matrix(([1.0], ([i], [0])), shape=(N, N))
    gs = list(plan.groups)
    gs[-1] = (post @ gs[-1]).tocsr()
    return gs


def required_rotations_linear(
    weight_shape: tuple[int, int], n: int | Sequence[int], slots: int, method: str = "auto",
    levels: int | None = None,
) -> list[int]:
    """The rotation steps :func:`linear_diag` (``method``) or :func:`linear_dft`
    (``method="dft"``) uses."""
    m = int(weight_shape[0])
    ns = [int(n)] if np.isscalar(n) else [int(v) for v in n]  # type: ignore[arg-type]
    steps: set[int] = set()
    for v in ns:
        if method == "dft":
            N = _pow2(v)
            plan = dft_plan(N, levels=levels, out_order="bitrev")
            for i in range(m):
                steps |= set(chain_rotations(_dc_groups(plan, N, i, slots), N, slots, True))
            continue
        meth = linear_method(m, v, slots) if method == "auto" else method
        if meth == "diag":
            steps |= set(required_rotations_diagonal(list(range(v)), slots))
            copies = -(-(m - 1 + v) // v) if m > 1 else 1
            if copies > 1:
                steps |= set(required_rotations_replicate(v, copies, slots))
        else:
            mp, npad = _hybrid_shape(m, v)
            steps |= set(required_rotations_diagonal(list(range(mp)), slots))
            steps |= set(required_rotations_rotate_and_sum(npad // mp, mp, slots))
            copies = -(-(mp - 1 + npad) // npad)
            if copies > 1:
                steps |= set(required_rotations_replicate(npad, copies, slots))
    return sorted({s % slots for s in steps if s % slots})
