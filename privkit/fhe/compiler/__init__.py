"""The compiler: a torch ``nn.Sequential`` of privkit layers -> an :class:`EncryptedProgram`.

* :mod:`.core`: :func:`compile` (folds, packing, level plan, keys);
* :mod:`.lowering`: the registry, one :class:`Lowering` per layer kind
  (:func:`register_lowering`);
* :mod:`.rules`: the built-in lowerings (convolutions, linear, pools, activations).
"""

from __future__ import annotations

from .core import compile, register_model_validator
from .lowering import (
    Lowered,
    Lowering,
    PlanContext,
    get_lowering,
    lowering_depth,
    register_lowering,
    registered_lowerings,
    unregister_lowering,
)

__all__ = [
    "compile",
    "register_model_validator",
    "Lowering",
    "Lowered",
    "PlanContext",
    "register_lowering",
    "unregister_lowering",
    "registered_lowerings",
    "get_lowering",
    "lowering_depth",
]
