"""Encrypted pooling: approximate max-pool (the paper's pipeline) and average pool.

Max-pool 1-D with kernel ``k`` and stride ``s`` on a signal whose element ``i`` sits in slot
``i * gap`` (``gap = ct.layout.gap``, 1 for a compact signal):

1. ``ceil(log2 k)`` rounds of ``M <- max(M, rotate(M, shift * gap))`` with shifts ``1, 2, 4, ...``
   and a last shift ``k - 2**(T-1)`` (windows may overlap: max is idempotent), ``max`` being
   :func:`privkit.fhe.ops.approx_max` (``method="sqrt"``: Wilkes square root with
   ``iterations``; ``"poly"``: an even polynomial ``|x|`` of ``degree``);
2. the 0/1 mask keeping slots ``j * s * gap`` (window starts) is folded into the last round's
   constants (no level of its own);
3. ``layout="compact"``: :func:`privkit.fhe.ops.remove_holes` moves them to slots ``0, 1, ...``
   (``ceil(log2(out))`` levels); ``layout="gapped"``: no compaction, the result keeps
   ``Layout(gap=s * gap)`` (zeros in between) for the next layer to read with the larger gap.

The number of windows is torch's ``(n - k) // s + 1`` (equal to ``n // s`` when ``k == s``).

==========================  =====================================================
operator                    levels
==========================  =====================================================
``max_pool1d`` (gapped)     ``ceil(log2 k) * approx_max_depth(...)``
``max_pool1d`` (compact)    the above + ``ceil(log2(out))``
``avg_pool1d``              ``1`` (+ ``ceil(log2(out))`` compact)
``max_pool2d`` (gapped)     ``(ceil(log2 kh) + ceil(log2 kw)) * approx_max_depth``
==========================  =====================================================

``required_rotations(...)`` lists the Galois keys a call uses, for key generation.
Every operator has a plaintext twin on the last axis of numpy arrays or torch tensors.

>>> import numpy as np
>>> from privkit.fhe import KeySet
>>> keys = KeySet.generate("n16384", backend="sim")
>>> x = np.array([0.1, -0.5, 0.9, 0.2, -0.3, -0.8, 0.4, 0.6])
>>> y = keys.decrypt(max_pool1d(keys.backend, keys.encrypt(x), 8, method="sqrt", iterations=2))
>>> bool(np.allclose(y, max_pool1d_ref(x, 2, 2, "sqrt", iterations=2), atol=1e-6))
True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...errors import ParameterError, ShapeError
from ..backend import Backend, Ciphertext, Layout
from .poly import _max_core, _max_params, approx_max_depth, approx_max_ref, check_range
from .compaction import remove_holes, remove_holes_depth, required_rotations_remove_holes

__all__ = [
    "avg_pool1d",
    "avg_pool1d_depth",
    "avg_pool1d_ref",
    "max_pool1d",
    "max_pool1d_depth",
    "max_pool1d_ref",
    "max_pool2d",
    "max_pool2d_depth",
    "max_pool2d_ref",
    "pool_output_length",
    "required_rotations",
    "required_rotations_2d",
]


def pool_output_length(n: int, kernel: int, stride: int) -> int:
    """Windows of a valid (unpadded) pool: ``(n - kernel) // stride + 1``."""
    n, kernel, stride = int(n), int(kernel), int(stride)
    if kernel < 1 or stride < 1:
        raise ParameterError(f"pooling needs kernel >= 1 and stride >= 1, got {kernel}, {stride}")
    if n < kernel:
        raise ShapeError(f"pooling a length-{n} signal with kernel {kernel} leaves no window")
    return (n - kernel) // stride + 1


def _shifts(kernel: int) -> list[int]:
    """Shifts of the max rounds: windows [i, i + 2**t) doubled, the last one to exactly k."""
    if kernel <= 1:
        return []
    t = math.ceil(math.log2(kernel))
    return [1 << i for i in range(t - 1)] + [kernel - (1 << (t - 1))]


def _check_layout(layout: str) -> None:
    if layout not in ("compact", "gapped"):
        raise ParameterError(f"layout must be 'compact' or 'gapped', got {layout!r}")


def max_pool1d_depth(
    n: int, kernel: int = 2, stride: int = 2, method: str = "sqrt", bound: float = 1.0,
    iterations: int | None = None, degree: int | None = None, layout: str = "compact",
    gap: int = 1,
) -> int:
    """Levels :func:`max_pool1d` consumes for these settings."""
    _check_layout(layout)
    out = pool_output_length(n, kernel, stride)
    rounds = len(_shifts(kernel))
    d = rounds * approx_max_depth(method, iterations, degree, bound) if rounds else 1
    if layout == "compact":
        S = stride * gap
        d += remove_holes_depth((out - 1) * S + 1, S, holes_zero=True)
    return d


def required_rotations(
    n: int, kernel: int = 2, stride: int = 2, layout: str = "compact", gap: int = 1,
    slots: int | None = None,
) -> list[int]:
    """Rotation steps :func:`max_pool1d` / :func:`avg_pool1d` use (generate exactly these keys)."""
    _check_layout(layout)
    out = pool_output_length(n, kernel, stride)
    steps = {s * gap for s in _shifts(kernel)}
    if layout == "compact":
        S = stride * gap
        steps.update(required_rotations_remove_holes((out - 1) * S + 1, S, slots=slots))
    if slots:
        steps = {s % slots for s in steps}
    return sorted(s for s in steps if s)


def _signal_gap(backend: Backend, ct: Ciphertext, n: int, what: str) -> int:
    lay = ct.layout
    if lay.offset != 0 or lay.channels != 1:
        raise ShapeError(
            f"{what} takes a single-channel signal at offset 0 (layout {lay}); use the packed "
            "operators (privkit.fhe.ops.packed) for channel-packed layouts"
        )
    g = int(lay.gap)
    if n < 1 or (n - 1) * g + 1 > backend.slots:
        raise ShapeError(f"{what}: n={n} elements with gap {g} do not fit {backend.slots} slots")
    return g


def _mask(slots_used: int, positions: np.ndarray, value: float = 1.0) -> np.ndarray:
    m = np.zeros(slots_used)
    m[positions] = value
    return m


def max_pool1d(
    backend: Backend,
    ct: Ciphertext,
    n: int,
    kernel: int = 2,
    stride: int = 2,
    method: str = "sqrt",
    bound: float = 1.0,
    *,
    iterations: int | None = None,
    degree: int | None = None,
    layout: str = "compact",
    section: str | None = None,
) -> Ciphertext:
    """Approximate max-pool of the first ``n`` elements (``|x| <= bound``).

    ``layout="compact"``: the first ``(n - kernel)//stride + 1`` slots hold the window maxima
    (zeros after). ``layout="gapped"``: maximum ``j`` stays in slot ``j * stride * gap`` (zeros
    between), ``Layout(gap=stride * gap)``, no compaction levels. ``method="sqrt"`` never exceeds
    the true maximum; its error grows as window values get close (see ``approx_max``).
    Depth :func:`max_pool1d_depth`; keys :func:`required_rotations`.
    """
    _check_layout(layout)
    it, deg = _max_params(method, iterations, degree)
    if not (bound > 0 and math.isfinite(bound)):
        raise ParameterError(f"bound must be positive and finite, got {bound}")
    n, kernel, stride = int(n), int(kernel), int(stride)
    out = pool_output_length(n, kernel, stride)
    g = _signal_gap(backend, ct, n, "max_pool1d")
    S = stride * g
    depth = max_pool1d_depth(n, kernel, stride, method, bound, it, deg, layout, g)
    backend.require_levels(ct, depth, "max_pool1d")
    target = ct.level - depth
    span = (out - 1) * S + 1
    keep = _mask(span, np.arange(out) * S)
    shifts = _shifts(kernel)
    with backend.counter.section(section or "max_pool1d"):
        M = ct
        if not shifts:
            M = backend.mul_plain(M, keep)
        for r, sh in enumerate(shifts):
            last = r == len(shifts) - 1
            M = _max_core(backend, M, backend.rotate(M, sh * g), method, it, deg, bound,
                          keep if last else None)
        if layout == "compact":
            M = remove_holes(backend, M.replace(length=span), span, S, holes_zero=True)
            M = M.replace(length=out, layout=Layout())
        else:
            M = M.replace(length=span, layout=Layout(gap=S))
        if M.level > target:
            M = backend.mod_switch_to(M, target)
    return M


def _last(x: Any, start: int, stop: int, step: int = 1) -> Any:
    return x[..., start:stop:step]


def max_pool1d_ref(
    x: Any, kernel: int = 2, stride: int = 2, method: str = "sqrt", bound: float = 1.0,
    iterations: int | None = None, degree: int | None = None, on_range: str = "warn",
) -> Any:
    """Plaintext twin of :func:`max_pool1d` on the last axis (numpy or torch): the same rounds of
    :func:`approx_max_ref`, then the window starts (compact order)."""
    it, deg = _max_params(method, iterations, degree)
    n = int(x.shape[-1])
    out = pool_output_length(n, kernel, stride)
    check_range(x, -bound, bound, "max_pool1d", on_range)
    M = x
    for sh in _shifts(kernel):
        m = int(M.shape[-1])
        M = approx_max_ref(_last(M, 0, m - sh), _last(M, sh, m), method, it, deg, bound,
                           on_range="ignore")
    return _last(M, 0, (out - 1) * stride + 1, stride)


# -- average pool ---------------------------------------------------------------------------------
def avg_pool1d_depth(n: int, kernel: int = 2, stride: int = 2, layout: str = "compact", gap: int = 1) -> int:
    """Levels :func:`avg_pool1d` consumes."""
    _check_layout(layout)
    out = pool_output_length(n, kernel, stride)
    d = 1
    if layout == "compact":
        S = stride * gap
        d += remove_holes_depth((out - 1) * S + 1, S, holes_zero=True)
    return d


def avg_pool1d_ref(x: Any, kernel: int = 2, stride: int = 2) -> Any:
    """Plaintext twin of :func:`avg_pool1d` (last axis, numpy or torch)."""
    n = int(x.shape[-1])
    out = pool_output_length(n, kernel, stride)
    span = (out - 1) * stride + 1
    acc = _last(x, 0, span, stride)
    for j in range(1, kernel):
        acc = acc + _last(x, j, j + span, stride)
    return acc * (1.0 / kernel)


def avg_pool1d(
    backend: Backend, ct: Ciphertext, n: int, kernel: int = 2, stride: int = 2,
    *, layout: str = "compact", section: str | None = None,
) -> Ciphertext:
    """Average pool (the cheap baseline): ``k - 1`` rotations, one masked ``1/k`` product, then
    the same compaction as :func:`max_pool1d` (or the gapped layout). Exact (no approximation)."""
    _check_layout(layout)
    n, kernel, stride = int(n), int(kernel), int(stride)
    out = pool_output_length(n, kernel, stride)
    g = _signal_gap(backend, ct, n, "avg_pool1d")
    S = stride * g
    depth = avg_pool1d_depth(n, kernel, stride, layout, g)
    backend.require_levels(ct, depth, "avg_pool1d")
    span = (out - 1) * S + 1
    with backend.counter.section(section or "avg_pool1d"):
        acc = ct
        for j in range(1, kernel):
            acc = backend.add(acc, backend.rotate(ct, j * g))
        M = backend.mul_plain(acc, _mask(span, np.arange(out) * S, 1.0 / kernel))
        if layout == "compact":
            M = remove_holes(backend, M.replace(length=span), span, S, holes_zero=True)
            return M.replace(length=out, layout=Layout())
        return M.replace(length=span, layout=Layout(gap=S))


# -- 2-D max pool (row-major image, gapped output) --------------------------------------------------
def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (int(v), int(v)) if np.ndim(v) == 0 else (int(v[0]), int(v[1]))  # type: ignore[index]


def max_pool2d_depth(
    shape: tuple[int, int], kernel: int | tuple[int, int] = 2, stride: int | tuple[int, int] | None = None,
    method: str = "sqrt", bound: float = 1.0, iterations: int | None = None, degree: int | None = None,
) -> int:
    """Levels :func:`max_pool2d` consumes."""
    kh, kw = _pair(kernel)
    rounds = len(_shifts(kh)) + len(_shifts(kw))
    return rounds * approx_max_depth(method, iterations, degree, bound) if rounds else 1


def max_pool2d(
    backend: Backend, ct: Ciphertext, shape: tuple[int, int], kernel: int | tuple[int, int] = 2,
    stride: int | tuple[int, int] | None = None, method: str = "sqrt", bound: float = 1.0,
    *, iterations: int | None = None, degree: int | None = None, section: str | None = None,
) -> Ciphertext:
    """Approximate 2-D max-pool of an ``H x W`` image stored row-major (pixel ``(i, j)`` in slot
    ``i * W + j``). Output pixel ``(a, b)`` stays in slot ``a * sh * W + b * sw`` (a gapped 2-D
    layout, zeros elsewhere; ``length`` covers the last one); read it with
    :func:`max_pool2d_ref`'s order. Rotations: the 1-D shifts along rows and ``W`` times them
    along columns."""
    H, Wd = (int(v) for v in shape)
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride if stride is not None else (kh, kw))
    it, deg = _max_params(method, iterations, degree)
    oh, ow = pool_output_length(H, kh, sh), pool_output_length(Wd, kw, sw)
    if ct.layout != Layout():
        raise ShapeError(f"max_pool2d takes a compact row-major image, got layout {ct.layout}")
    if H * Wd > backend.slots:
        raise ShapeError(f"a {H}x{Wd} image does not fit {backend.slots} slots")
    depth = max_pool2d_depth((H, Wd), (kh, kw), (sh, sw), method, bound, it, deg)
    backend.require_levels(ct, depth, "max_pool2d")
    target = ct.level - depth
    pos = (np.arange(oh)[:, None] * sh * Wd + np.arange(ow)[None, :] * sw).ravel()
    span = int(pos.max()) + 1
    keep = _mask(span, pos)
    steps = [s for s in _shifts(kw)] + [s * Wd for s in _shifts(kh)]
    with backend.counter.section(section or "max_pool2d"):
        M = ct
        if not steps:
            M = backend.mul_plain(M, keep)
        for r, st in enumerate(steps):
            last = r == len(steps) - 1
            M = _max_core(backend, M, backend.rotate(M, st), method, it, deg, bound,
                          keep if last else None)
        M = M.replace(length=span, layout=Layout())
        if M.level > target:
            M = backend.mod_switch_to(M, target)
    return M


def max_pool2d_ref(
    x: Any, kernel: int | tuple[int, int] = 2, stride: int | tuple[int, int] | None = None,
    method: str = "sqrt", bound: float = 1.0, iterations: int | None = None,
    degree: int | None = None, on_range: str = "warn",
) -> Any:
    """Plaintext twin of :func:`max_pool2d` on the last two axes (numpy or torch): rows first
    (width rounds), then columns, as the encrypted order."""
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride if stride is not None else (kh, kw))
    it, deg = _max_params(method, iterations, degree)
    H, Wd = int(x.shape[-2]), int(x.shape[-1])
    oh, ow = pool_output_length(H, kh, sh), pool_output_length(Wd, kw, sw)
    check_range(x, -bound, bound, "max_pool2d", on_range)
    M = x
    for s in _shifts(kw):
        m = int(M.shape[-1])
        M = approx_max_ref(M[..., :, : m - s], M[..., :, s:m], method, it, deg, bound, on_range="ignore")
    for s in _shifts(kh):
        m = int(M.shape[-2])
        M = approx_max_ref(M[..., : m - s, :], M[..., s:m, :], method, it, deg, bound, on_range="ignore")
    return M[..., 0 : (oh - 1) * sh + 1 : sh, 0 : (ow - 1) * sw + 1 : sw]


def required_rotations_2d(shape: tuple[int, int], kernel: int | tuple[int, int] = 2) -> list[int]:
    """Rotation steps :func:`max_pool2d` uses."""
    kh, kw = _pair(kernel)
    return sorted({s for s in _shifts(kw)} | {s * int(shape[1]) for s in _shifts(kh)})


#: unambiguous names for the ops namespace
required_rotations_pool1d = required_rotations
required_rotations_pool2d = required_rotations_2d
__all__ += ["required_rotations_pool1d", "required_rotations_pool2d"]
