"""privkit.data

``read_seglearn_watch`` (real smartwatch IMU data, :mod:`privkit.data.watch`) is re-exported
here, imported on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["read_seglearn_watch"]


def __getattr__(name: str) -> Any:
    if name == "read_seglearn_watch":
        from .watch import read_seglearn_watch

        return read_seglearn_watch
    raise AttributeError(f"module 'privkit.data' has no attribute {name!r}")
