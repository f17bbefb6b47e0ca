"""The built-in lowerings, one module per family (importing registers them)."""

from . import activation, box, conv, linear, pool  # noqa: F401
