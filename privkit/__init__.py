"""privkit: privacy-preserving machine learning in ordinary PyTorch code.

Three kinds of privacy behind one API (:class:`PrivateModel`, :class:`PrivacyReport`):

* ``privkit.fhe`` and ``privkit.nn``: encrypted inference with CKKS (TenSEAL);
* ``privkit.dp``: differentially private training (Opacus) with honest accounting;
* ``privkit.anon``: anonymisation of IMU time series.

Subpackages are imported lazily so that ``import privkit`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from .api import PrivacyReport, PrivateModel
from .errors import PrivkitError

__version__ = "0.1.0"
__all__ = ["PrivateModel", "PrivacyReport", "PrivkitError", "fhe", "nn", "dp", "anon", "data", "apps"]

_SUBPACKAGES = {"fhe", "nn", "dp", "anon", "data", "apps", "testing"}


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'privkit' has no attribute {name!r}")
