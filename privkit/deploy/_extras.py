"""Optional dependencies: imported where used; a missing one names its extra."""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import MissingExtraError

_EXTRA = {"fastapi": "serve", "uvicorn": "serve", "httpx": "serve", "ray": "distributed"}


def require(module: str) -> Any:
    """Import ``module`` or raise :class:`~privkit.errors.MissingExtraError` naming the extra.

    >>> require("json").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        extra = _EXTRA.get(module.split(".")[0], "serve")
        raise MissingExtraError(
            f"{module} is not installed; install the {extra!r} extra: "
            f"pip install 'privkit[{extra}]'"
        ) from e
