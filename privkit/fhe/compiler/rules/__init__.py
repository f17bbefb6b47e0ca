"""The built-in lowerings, one module per family (importing registers them)."""

from . import activation, conv, linear, pool  # noqa: F401
