"""Testing helpers shipped with privkit (used by our tests and by users' tests of their models).

:func:`assert_close_encrypted` derives its tolerance from the CKKS scale and the depth consumed,
and fails with the maximal error, where it occurred and the parameters.

>>> import numpy as np
>>> from privkit.fhe import CKKSParams
>>> err = assert_close_encrypted(np.array([1.0, 2.0 + 1e-7]), np.array([1.0, 2.0]),
...                              params=CKKSParams.preset("n8192"), depth=1)
>>> round(err, 9)
1e-07
>>> assert_close_encrypted(np.array([1.0, 2.5]), np.array([1.0, 2.0]), atol=1e-3)
Traceback (most recent call last):
...
AssertionError: encrypted result differs from the reference: max |error| 0.5 at index 1 (actual 2.5, expected 2) > tolerance 0.001 (atol given explicitly)
"""

from __future__ import annotations

import numpy as np

from .fhe.params import CKKSParams

__all__ = ["assert_close_encrypted", "encrypted_tolerance"]


def encrypted_tolerance(
    params: CKKSParams | str | None, depth: int | None, magnitude: float, factor: float = 1.0
) -> float:
    """Absolute tolerance for a CKKS result of the given magnitude after ``depth`` levels.

    ``magnitude * 2**-(scale_bits - 24) * (depth + 1) * factor``: with the presets' scale
    2**40 that is 1.5e-5 per level for values of size 1, about 50 times the errors we observe,
    and far below any error a wrong computation makes.
    """
    p = CKKSParams.coerce(params) if params is not None else CKKSParams.preset("n8192")
    d = p.depth if depth is None else int(depth)
    return float(max(1.0, magnitude) * 2.0 ** -(p.scale_bits - 24) * (d + 1) * factor)


def assert_close_encrypted(
    actual: np.ndarray,
    expected: np.ndarray,
    params: CKKSParams | str | None = None,
    *,
    depth: int | None = None,
    atol: float | None = None,
    factor: float = 1.0,
    what: str = "encrypted result",
) -> float:
    """Assert a decrypted result equals its plaintext reference within CKKS tolerance.

    Returns the maximal absolute error (handy with ``hypothesis.target``).
    """
    a = np.asarray(actual)
    e = np.asarray(expected)
    if a.shape != e.shape:
        raise AssertionError(f"{what} has shape {a.shape}, the reference {e.shape}")
    if a.size == 0:
        return 0.0
    err = np.abs(a - e)
    idx = int(np.argmax(err))
    max_err = float(err.flat[idx])
    if atol is None:
        tol = encrypted_tolerance(params, depth, float(np.max(np.abs(e))), factor)
        how = f"derived from {CKKSParams.coerce(params).describe() if params else 'n8192'}, depth {depth}"
    else:
        tol, how = float(atol), "atol given explicitly"
    if not np.isfinite(max_err) or max_err > tol:
        raise AssertionError(
            f"{what} differs from the reference: max |error| {max_err:.3g} at index "
            f"{np.unravel_index(idx, a.shape)[0] if a.ndim == 1 else np.unravel_index(idx, a.shape)} "
            f"(actual {a.flat[idx]:.6g}, expected {e.flat[idx]:.6g}) > tolerance {tol:.3g} ({how})"
        )
    return max_err
