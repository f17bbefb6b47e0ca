"""Encrypted operators. Each takes a backend and ciphertexts, never imports TenSEAL, records its
op counts in ``backend.counter`` (under a section when given) and has a numpy reference of the
same maths (``<name>_ref``) that the property tests compare against.

Names are resolved lazily from the modules below, so importing one operator does not import all.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module (one line per name; keep sorted by module)
_EXPORTS: dict[str, str] = {
    # boxes.py / conv_sat.py (summed-area tables, box filters)
    # conv_freq.py
    # conv_spatial.py
    # dft.py
    # linear.py
    # poly.py
    # pool.py
    # rotate_sum.py
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'privkit.fhe.ops' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{mod}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
