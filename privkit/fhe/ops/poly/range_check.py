"""Range contract of the plaintext twins: :func:`check_range` (warn / raise / ignore) and
:func:`calibrate_bound` (the range measured on training data)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ....errors import ParameterError, RangeWarning


# -- range checks ------------------------------------------------------------------------------
def _absmax(x: Any) -> float:
    """max |x| for numpy arrays, torch tensors and scalars (0 for empty)."""
    if isinstance(x, (int, float, complex)):
        return abs(x)
    if getattr(x, "numel", None) is not None:  # torch
        return float(x.detach().abs().max()) if x.numel() else 0.0
    a = np.asarray(x)
    return float(np.max(np.abs(a))) if a.size else 0.0


def _minmax(x: Any) -> tuple[float, float]:
    if getattr(x, "numel", None) is not None:  # torch
        if not x.numel():
            return 0.0, 0.0
        d = x.detach()
        return float(d.min()), float(d.max())
    a = np.asarray(x, dtype=float)
    return (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)


def check_range(
    x: Any, lo: float, hi: float, what: str, on_range: str = "warn", rtol: float = 1e-9
) -> None:
    """Warn (``on_range="warn"``), raise (``"raise"``) or do nothing (``"ignore"``) when ``x``
    leaves ``[lo, hi]`` (with a relative slack ``rtol``)."""
    if on_range == "ignore":
        return
    if on_range not in ("warn", "raise"):
        raise ParameterError(f"on_range must be 'warn', 'raise' or 'ignore', got {on_range!r}")
    mn, mx = _minmax(x)
    slack = rtol * max(abs(lo), abs(hi), 1.0)
    if mn >= lo - slack and mx <= hi + slack:
        return
    msg = (
        f"{what}: inputs span [{mn:.4g}, {mx:.4g}], outside the calibrated range [{lo:.4g}, {hi:.4g}]; "
        "the polynomial approximation diverges there (encrypted results would be garbage). "
        "Recalibrate the bound/scale on representative data (calibrate_bound) or clip the inputs"
    )
    if on_range == "raise":
        raise ParameterError(msg)
    warnings.warn(msg, RangeWarning, stacklevel=3)


def calibrate_bound(x: Any, margin: float = 1.0) -> float:
    """The paper's per-layer scale: ``max(|max x|, |min x|) * margin`` (at least a tiny positive)."""
    return max(_absmax(x) * float(margin), 1e-12)
