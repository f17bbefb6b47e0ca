"""Range safety of CKKS results: magnitude bounds against what a level can hold.

CKKS decrypts correctly only while the plaintext's coefficients stay below ``Q_l / (2 * scale)``
(``Backend.capacity(level)``). Every :class:`~privkit.fhe.backend.Ciphertext` carries a per-slot
upper bound on ``|value|`` (``bound``), propagated by the backend through each operation; the
polynomial's coefficients are bounded by the *mean* of the slot bounds (canonical embedding:
``|c_i| <= (1/N) sum_k |sigma_k|``). This module holds the two checks made on those floats:
:func:`check_bound` before a result is used, :func:`check_decrypted` at decryption. See
docs/security.md.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from ..errors import KeyMismatchError, PrecisionError, ScaleOverflowWarning
from .params import CKKSParams

if TYPE_CHECKING:  # pragma: no cover
    from .backend import Backend, Ciphertext

__all__ = ["capacities", "check_bound", "check_decrypted"]


def capacities(params: CKKSParams) -> list[float]:
    """``Q_l / (2 * scale)`` for each level ``l`` (the largest coefficient a level holds).

    >>> caps = [round(c) for c in capacities(CKKSParams.preset("n8192"))]
    >>> caps[0]
    256
    """
    logq = np.cumsum([np.log2(float(q)) for q in params.primes[:-1]])
    return [float(2.0 ** (lq - params.scale_bits - 1)) for lq in logq]


def check_bound(backend: Backend, bound: np.ndarray, level: int) -> None:
    """Warn when a tracked bound says the plaintext may overflow what ``level`` can hold.

    The plaintext polynomial's coefficients (value units) are bounded by the *mean* of the
    per-slot magnitude bounds (``|c_i| <= (1/N) sum_k |sigma_k|``, the canonical embedding),
    and decryption is exact while every coefficient stays below ``Q_l / (2 * scale)``.
    """
    coeff = float(bound.mean())
    cap = backend._capacity[level]
    if coeff >= cap:
        backend.range_stats["overflow_risk"] += 1
        sink = getattr(backend, "overflow_sink", None)
        if sink is not None:  # a program run collects them and warns once (EncryptedProgram.run)
            sink.append((coeff, cap, level))
            return
        warnings.warn(
            f"an encrypted result may overflow its scale: its coefficients can reach "
            f"{coeff:.3g} (slot values up to {float(bound.max()):.3g}) at level {level}, "
            f"beyond the {cap:.3g} that {backend.params.describe()} holds there; if they do, "
            "it decrypts to garbage (PrecisionError at decryption). Scale the inputs or "
            "weights down, calibrate the input range, or use a preset with a larger first "
            "prime",
            ScaleOverflowWarning,
            stacklevel=5,
        )


def check_decrypted(backend: Backend, ct: Ciphertext, full: np.ndarray) -> None:
    """Refuse decrypted values that cannot be a correct decryption (checks on floats only).

    Decryption is exact while the plaintext's coefficients stay below ``Q_l / (2 * scale)``
    (:meth:`capacity`). Beyond that the values wrap around the modulus and are garbage:

    * with a tracked bound (:class:`Ciphertext` ``bound``): a slot whose value exceeds its
      bound (plus noise) cannot be right: :class:`PrecisionError` (the computation overflowed
      the scale), or :class:`KeyMismatchError` when the values look uniformly random and no
      overflow was predicted. A bound that predicted a possible overflow without any slot
      exceeding it only warns (:class:`ScaleOverflowWarning`): the bound is an upper bound;
      the result is *probably* right, and cannot be checked further;
    * without one (a deserialised ciphertext): the root-mean-square coefficient (from the
      slots by Parseval: ``sqrt(mean|z|^2 / N)``) above a quarter of the capacity means the
      coefficients look uniformly random modulo Q: what a ciphertext of another key set, a
      relabelled or damaged one, or a massive overflow decrypts to: :class:`KeyMismatchError`
      (:class:`PrecisionError` on the simulator, whose values are exact). A correct result
      only gets there when its slot values reach ``sqrt(N) / 4`` times the capacity.
    """
    cap = backend._capacity[ct.level]
    finite = bool(np.all(np.isfinite(full)))
    mag = np.abs(full) if finite else np.full(full.shape, np.inf)
    top = float(mag.max()) if mag.size else 0.0
    if not finite:
        rms = float("inf")
    elif top > 0:  # scaled, so that values near 1e200 do not overflow when squared
        rms = top * float(np.sqrt(np.mean((mag / top) ** 2) / backend.params.poly_degree))
    else:
        rms = 0.0
    random_like = rms >= cap / 4
    predicted = False
    exceeded = 0
    if ct.bound is not None:
        predicted = float(ct.bound.mean()) >= cap
        tol = 1e-3 + 1e-6 * float(ct.bound.max()) + 8 * float(getattr(backend, "noise_std", 0.0))
        exceeded = int(np.count_nonzero(mag > ct.bound + tol))
    if exceeded and not random_like or random_like and (predicted or backend.simulated):
        raise PrecisionError(
            f"the result overflowed its scale: {exceeded or 'its'} slot value(s) exceed what "
            f"the computation can produce (values up to {top:.3g}; a level-{ct.level} "
            f"ciphertext of {backend.params.describe()} holds coefficients up to {cap:.3g}). "
            "The values are garbage. Scale the inputs or weights down, or use a preset with a "
            "larger first prime"
        )
    if random_like:
        raise KeyMismatchError(
            f"decrypted values reach |{top:.3g}| and look like random data (rms coefficient "
            f"{rms:.3g} against a capacity of {cap:.3g}): the ciphertext was encrypted under "
            f"another key set than {backend.key_id[:16]}, was relabelled or damaged, or its "
            "computation overflowed the scale. Decrypt it with the key set it was made under"
        )
    if predicted:
        backend.range_stats["decrypt_unverified"] += 1
        warnings.warn(
            # no per-result numbers in the text: Python then shows it once per place and level
            f"a decrypted result may have overflowed its scale (its tracked worst-case bound "
            f"reaches the capacity {cap:.3g} of level {ct.level}) and cannot be verified; no "
            "slot exceeds its bound, so it is probably right",
            ScaleOverflowWarning,
            stacklevel=4,
        )
