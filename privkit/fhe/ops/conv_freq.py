"""Frequency-domain 1-D convolution (the ICPR 2024 apnea paper's method, made cheaper).

Convention: PyTorch's ``conv1d`` (cross-correlation), ``out[o, i] = bias[o] + sum_c sum_k
x[c, i*stride + k - pad_left] * kernel[o, c, k]`` with zero padding; ``mode`` = ``"valid"`` /
``"same"`` / ``"full"`` or an explicit ``padding`` (see :mod:`.conv_spatial`). The numpy twin is
:func:`~privkit.fhe.ops.conv_spatial.conv1d_spatial_ref`.

Pipeline, with ``N`` the smallest power of two ``>= n + max(pad_left, pad_right)`` and
``>= (L-1)*stride + 1`` (so that the circular correlation of length ``N`` has no wrap-around
where the output reads it):

1. per input channel, a forward DFT of length ``N``, natural -> bit-reversed order
   (:func:`~privkit.fhe.ops.fourier.dft`, ``levels_dft`` levels);
2. the Hadamard product with ``conj(DFT(kernel))`` (bit-reversed, a plaintext): with one input
   channel it is folded into the first level of the inverse DFT (no level); with ``C_in > 1``
   the input channels are summed in the frequency domain, ``Z_o = sum_c conj(W_oc) * X_c``
   (one level, ``C_in * C_out`` plaintext products);
3. per output channel one inverse DFT, bit-reversed -> natural (``levels_idft`` levels), whose
   last level also applies the shift by ``pad_left`` and keeps only the output positions
   ``i*stride`` (the paper rotates by ``n-1`` and masks: here that costs nothing);
4. ``stride > 1``: compaction with :func:`~privkit.fhe.ops.rotate_sum.remove_holes` (the paper's
   procedure, ``ceil(log_radix(L))`` levels; ``radix=None`` picks the smallest power of two that
   fits the remaining depth), or ``compact=False`` leaves the output gapped
   (``Layout(gap=stride)``, no level);
5. bias: a plaintext addition (no level).

Depth: ``levels_dft + levels_idft (+1 if C_in > 1) (+ remove_holes)``.

>>> import numpy as np
>>> from privkit.fhe import KeySet
>>> keys = KeySet.generate("n16384", backend="sim")
>>> x, k = np.arange(10.0), np.array([1.0, 0.0, -1.0])
>>> y = keys.decrypt(conv1d_freq(keys.backend, keys.encrypt(x), k, 10, stride=2))
>>> np.allclose(y, [-2.0, -2.0, -2.0, -2.0])
True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from ...errors import DepthExhaustedError, ParameterError, ShapeError
from ..backend import Backend, Ciphertext, Layout
from .compaction import (
    remove_holes,
    remove_holes_depth,
    required_rotations_remove_holes,
)
from .conv_spatial import _norm_kernel, conv_output_shape, conv_padding
from .fourier import apply_sparse_chain, bitrev_indices, chain_rotations, dft_plan

__all__ = [
    "conv1d_freq",
    "conv1d_freq_ref",
    "conv_freq_depth",
    "conv_freq_fft_size",
    "required_rotations_conv_freq",
]


def conv1d_freq_ref(x, kernel, n=None, stride=1, mode="valid", *, padding=None, bias=None):
    """Numpy twin (the same maths as :func:`conv1d_spatial_ref`), computed via ``numpy.fft``."""
    x = np.asarray(x, dtype=np.float64)
    single = np.asarray(kernel).ndim == 1
    k = _norm_kernel(kernel, 1)
    xs = x[None] if single else x
    if n is not None:
        xs = xs[:, :n]
    n = xs.shape[1]
    K = k.shape[2]
    (pl, pr), = conv_padding((K,), mode, padding)
    L = conv_output_shape((n,), (K,), stride, ((pl, pr),))[0]
    N = conv_freq_fft_size(n, K, stride, mode, padding=padding)
    X = np.fft.fft(xs, N, axis=1)
    W = np.fft.fft(k, N, axis=2)
    C = np.fft.ifft(np.einsum("ocf,cf->of", np.conj(W), X), axis=1).real
    idx = (np.arange(L) * stride - pl) % N
    out = C[:, idx]
    if bias is not None:
        out = out + np.atleast_1d(np.asarray(bias, dtype=np.float64))[:, None]
    return out[0] if single else out


def conv_freq_fft_size(n: int, K: int, stride: int = 1, mode: str = "valid", *, padding=None) -> int:
    """The DFT length ``N``: a power of two with no wrap-around where the output reads."""
    (pl, pr), = conv_padding((K,), mode, padding)
    L = conv_output_shape((n,), (K,), stride, ((pl, pr),))[0]
    need = max(n + max(pl, pr), (L - 1) * stride + 1, 1)
    return 1 << (need - 1).bit_length()


def _post_matrix(N: int, L: int, stride: int, pl: int) -> sp.csr_matrix:
    rows = np.arange(L) * stride
    cols = (rows - pl) % N
    return sp.csr_matrix((np.ones(L), (rows, cols)), shape=(N, N))


def _pick_radix(count: int, budget: int, radix: int | None, n_span: int, stride: int) -> int:
    if radix is not None:
        return int(radix)
    r = 2
    while r < max(2, count):
        if remove_holes_depth(n_span, stride, r, holes_zero=True) <= budget:
            return r
        r *= 2
    return max(2, r)


class _FreqPlan:
    def __init__(self, slots, n, kernel, stride, mode, padding, levels_dft, levels_idft, compact,
                 radix, available):
        self.c_out, self.c_in, self.K = kernel.shape
        (self.pl, self.pr), = conv_padding((self.K,), mode, padding)
        self.L = conv_output_shape((n,), (self.K,), stride, ((self.pl, self.pr),))[0]
        self.N = N = conv_freq_fft_size(n, self.K, stride, mode, padding=padding)
        if N > slots:
            raise ShapeError(
                f"a frequency-domain convolution of {n} samples (kernel {self.K}, padding "
                f"{self.pl}/{self.pr}) needs a DFT of length {N} > {slots} slots; use "
                "conv1d_spatial or a larger preset"
            )
        self.stride = stride
        self.fwd = dft_plan(N, levels=levels_dft, out_order="bitrev")
        inv = dft_plan(N, inverse=True, levels=levels_idft, in_order="bitrev")
        br = bitrev_indices(N)
        W = np.conj(np.fft.fft(kernel, N, axis=2))[:, :, br]  # (C_out, C_in, N), bit-reversed
        self.W = W
        post = _post_matrix(N, self.L, stride, self.pl)
        self.merged = self.c_in == 1
        self.inv_groups: list[list[sp.csr_matrix]] = []
        for o in range(self.c_out):
            gs = list(inv.groups)
            if self.merged:
                gs[0] = (gs[0] @ sp.diags(W[o, 0])).tocsr()
            gs[-1] = (post @ gs[-1]).tocsr()
            self.inv_groups.append(gs)
        self.core_depth = self.fwd.levels + inv.levels + (0 if self.merged else 1)
        self.n_span = (self.L - 1) * stride + 1
        self.compact = compact and stride > 1
        if self.compact:
            budget = (available if available is not None else 10**6) - self.core_depth
            self.radix = _pick_radix(self.L, budget, radix, self.n_span, stride)
            self.holes_depth = remove_holes_depth(self.n_span, stride, self.radix, holes_zero=True)
        else:
            self.radix = radix or 2
            self.holes_depth = 0
        self.depth = self.core_depth + self.holes_depth

    def rotations(self, slots: int) -> list[int]:
        steps = set(chain_rotations(self.fwd.groups, self.N, slots, True))
        for gs in self.inv_groups:
            steps |= set(chain_rotations(gs, self.N, slots, True))
        if self.compact:
            steps |= set(required_rotations_remove_holes(self.n_span, self.stride, self.radix, slots))
        return sorted(steps)


def conv1d_freq(
    backend: Backend,
    ct: Ciphertext | Sequence[Ciphertext],
    kernel: np.ndarray,
    n: int,
    stride: int = 1,
    mode: str = "valid",
    *,
    padding: int | Sequence | None = None,
    bias: np.ndarray | Sequence[float] | float | None = None,
    compact: bool = True,
    levels_dft: int | None = None,
    levels_idft: int | None = None,
    radix: int | None = None,
    section: str | None = None,
) -> Ciphertext | list[Ciphertext]:
    """PyTorch ``conv1d`` of the first ``n`` slots, computed in the frequency domain.

    ``kernel`` ``(K,)`` with one ciphertext: one compact ciphertext (``out[i]`` in slot ``i``;
    ``compact=False``: at slot ``i*stride``, ``Layout(gap=stride)``). ``(C_out, C_in, K)`` with a
    list of ``C_in`` ciphertexts (one channel each, zero past ``n``): a list of ``C_out``.
    ``levels_dft`` / ``levels_idft``: depth of each transform (default 3 each, fewer rotations
    with more levels). See the module docstring for the pipeline and depth.
    """
    stride = int(stride)
    if stride < 1:
        raise ParameterError(f"stride must be >= 1, got {stride}")
    as_list = not isinstance(ct, Ciphertext)
    cts: list[Ciphertext] = list(ct) if as_list else [ct]  # type: ignore[arg-type]
    k = _norm_kernel(kernel, 1)
    c_out, c_in, _K = k.shape
    if len(cts) != c_in:
        raise ShapeError(
            f"the kernel expects {c_in} input channels, got {len(cts)} ciphertext(s); packed "
            "channels are supported by conv1d_spatial, pass one ciphertext per channel here"
        )
    if not as_list and c_out > 1:
        as_list = True
    n = int(n)
    if n < 1:
        raise ShapeError(f"n must be >= 1, got {n}")
    for c in cts:
        if c.length > n:
            raise ShapeError(
                f"conv1d_freq needs slots past n={n} to be zero but a ciphertext has length "
                f"{c.length}; mask it first"
            )
    if bias is not None:
        bias = np.atleast_1d(np.asarray(bias, dtype=np.float64))
        if bias.shape != (c_out,):
            raise ShapeError(f"bias must have {c_out} entries, got shape {bias.shape}")
    available = min(c.level for c in cts)
    plan = _FreqPlan(backend.slots, n, k, stride, mode, padding, levels_dft, levels_idft,
                     compact, radix, available)
    if plan.depth > available:
        raise DepthExhaustedError(
            needed=plan.depth, available=available, where=section or "conv1d_freq",
            hint="lower levels_dft/levels_idft, use compact=False (gapped output), "
                 "conv1d_spatial (1 level), or a preset with more levels",
        )
    N, slots = plan.N, backend.slots
    outs = []
    with backend.counter.section(section or "conv1d_freq"):
        spectra = [
            apply_sparse_chain(backend, c, plan.fwd.groups, N, periodic_output=True, section="dft")
            for c in cts
        ]
        for o in range(c_out):
            if plan.merged:
                z = spectra[0]
                y = apply_sparse_chain(backend, z, plan.inv_groups[o], N, replicated=True,
                                       section="idft")
            else:
                with backend.counter.section("hadamard"):
                    z = None
                    for c in range(c_in):
                        term = backend.mul_plain(spectra[c], np.tile(plan.W[o, c], slots // N))
                        z = term if z is None else backend.add(z, term)
                y = apply_sparse_chain(backend, z, plan.inv_groups[o], N, replicated=True,
                                       section="idft")
            y = y.replace(is_complex=False)
            if plan.compact:
                y = remove_holes(backend, y, plan.n_span, stride, radix=plan.radix,
                                 holes_zero=True, section="remove_holes")
                y = y.replace(length=plan.L, layout=Layout())
                pos = np.arange(plan.L)
            else:
                y = y.replace(length=plan.n_span,
                              layout=Layout(gap=stride) if stride > 1 else Layout())
                pos = np.arange(plan.L) * stride
            if bias is not None:
                vec = np.zeros(int(pos[-1]) + 1)
                vec[pos] = bias[o]
                y = backend.add_plain(y, vec)
            outs.append(y.replace(is_complex=False))
    return outs if as_list else outs[0]


def conv_freq_depth(n: int, K: int, stride: int = 1, mode: str = "valid", *, padding=None,
                    channels: tuple[int, int] = (1, 1), levels_dft: int | None = None,
                    levels_idft: int | None = None, compact: bool = True,
                    radix: int | None = None, available: int | None = None,
                    slots: int = 1 << 30) -> int:
    """Levels :func:`conv1d_freq` consumes (``channels = (C_in, C_out)``)."""
    k = np.ones((channels[1], channels[0], K))
    return _FreqPlan(slots, n, k, stride, mode, padding, levels_dft, levels_idft, compact, radix,
                     available).depth


def required_rotations_conv_freq(n: int, kernel: np.ndarray, stride: int = 1, mode: str = "valid",
                                 *, slots: int, padding=None, levels_dft: int | None = None,
                                 levels_idft: int | None = None, compact: bool = True,
                                 radix: int | None = None, available: int | None = None) -> list[int]:
    """The rotation steps a :func:`conv1d_freq` call uses (kernel values matter: zeros of the
    spectrum drop diagonals)."""
    k = _norm_kernel(kernel, 1)
    return _FreqPlan(slots, n, k, stride, mode, padding, levels_dft, levels_idft, compact, radix,
                     available).rotations(slots)
