"""Encrypted inference with CKKS: parameters, keys, backends, operators and the compiler.

>>> from privkit import fhe
>>> keys = fhe.KeySet.generate("n8192", backend="sim")
>>> ct = keys.encrypt([1.0, 2.0, 3.0])
>>> keys.decrypt(ct * ct).round(4).tolist()
[1.0, 4.0, 9.0]
"""

from __future__ import annotations

import importlib
from typing import Any

from .backend import Backend, Ciphertext, Layout
from .counter import OpCounter, OpCounts
from .keys import KeySet, PublicBundle
from .params import PRESETS, CKKSParams

__all__ = [
    "Backend",
    "Ciphertext",
    "Layout",
    "OpCounter",
    "OpCounts",
    "KeySet",
    "PublicBundle",
    "CKKSParams",
    "PRESETS",
    "ops",
    "compile",
    "register_lowering",
    "unregister_lowering",
    "registered_lowerings",
    "Lowering",
    "Lowered",
    "PlanContext",
]

_COMPILER_NAMES = ("compile", "register_lowering", "unregister_lowering", "registered_lowerings",
                   "Lowering", "Lowered", "PlanContext")


def __getattr__(name: str) -> Any:
    if name == "ops":
        return importlib.import_module(".ops", __name__)
    if name in _COMPILER_NAMES:
        return getattr(importlib.import_module(".compiler", __name__), name)
    raise AttributeError(f"module 'privkit.fhe' has no attribute {name!r}")
