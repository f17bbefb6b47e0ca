"""A bounded cache of encoded plaintexts, for the server side of encrypted inference.

Encoding a plaintext vector for CKKS (an inverse FFT, then an NTT per RNS prime) costs about as
much as the plaintext product it feeds: 2.7 ms to encode against 1.0 ms to multiply at N=16384
with 9 primes. A compiled program multiplies by the same weight and mask vectors for every input,
so the server encodes each of them once and keeps the result: :class:`PlainCache` maps the
vector's content (a BLAKE2b digest of its bytes), its level and its scale to the encoded object,
least recently used first out, within a byte budget.

Only plaintext operands of ``mul_plain`` / ``add_plain`` (weights, masks, biases: values the
evaluating server holds anyway) go through it, never what a client encrypts.

The budget comes from ``PRIVKIT_PLAIN_CACHE_MB`` (default 256; 0 turns the cache off). An entry
that alone exceeds the budget is not stored.

>>> c = PlainCache(max_bytes=100)
>>> import numpy as np
>>> v = np.arange(4.0)
>>> c.get_or_make(v, 3, 2.0, lambda: "encoded", nbytes=60)
'encoded'
>>> c.get_or_make(v.copy(), 3, 2.0, lambda: "again", nbytes=60)  # same content: a hit
'encoded'
>>> c.hits, c.misses, c.bytes
(1, 1, 60)
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ParameterError

__all__ = ["PlainCache", "default_cache_bytes"]

_ENV = "PRIVKIT_PLAIN_CACHE_MB"


def default_cache_bytes() -> int:
    """The byte budget from ``PRIVKIT_PLAIN_CACHE_MB`` (a non-negative number; default 256 MB)."""
    raw = os.environ.get(_ENV, "256")
    try:
        mb = float(raw)
    except ValueError:
        raise ParameterError(f"{_ENV}={raw!r} is not a number; give the cache size in MB (0 turns it off)") from None
    if not np.isfinite(mb) or mb < 0:
        raise ParameterError(f"{_ENV}={raw!r} must be a finite number >= 0 (MB; 0 turns the cache off)")
    return int(mb * (1 << 20))


class PlainCache:
    """LRU map ``(content, level, scale) -> encoded plaintext`` within ``max_bytes``.

    Thread-safe. ``hits`` / ``misses`` / ``bytes`` say how it is doing.
    """

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = default_cache_bytes() if max_bytes is None else int(max_bytes)
        if self.max_bytes < 0:
            raise ParameterError(f"max_bytes must be >= 0, got {max_bytes}")
        self._items: OrderedDict[tuple[bytes, int, float], tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(vec: np.ndarray, level: int, scale: float) -> tuple[bytes, int, float]:
        """The cache key: a digest of the array's dtype, shape and bytes, the level, the scale."""
        arr = np.ascontiguousarray(vec)
        h = hashlib.blake2b(digest_size=20)
        h.update(arr.dtype.str.encode())
        h.update(repr(arr.shape).encode())
        h.update(memoryview(arr).cast("B"))
        return h.digest(), int(level), float(scale)

    def get_or_make(self, vec: np.ndarray, level: int, scale: float, make: Callable[[], Any],
                    nbytes: int) -> Any:
        """The cached encoding of ``vec`` at ``level`` / ``scale``, else ``make()`` (stored when
        its ``nbytes`` fit the budget)."""
        if self.max_bytes == 0:
            return make()
        k = self.key(vec, level, scale)
        with self._lock:
            hit = self._items.get(k)
            if hit is not None:
                self._items.move_to_end(k)
                self.hits += 1
                return hit[0]
            self.misses += 1
        value = make()
        if nbytes > self.max_bytes:
            return value
        with self._lock:
            if k not in self._items:
                self._items[k] = (value, nbytes)
                self.bytes += nbytes
                while self.bytes > self.max_bytes:
                    _, (_, n) = self._items.popitem(last=False)
                    self.bytes -= n
        return value

    def clear(self) -> None:
        """Drop every entry (the counters stay)."""
        with self._lock:
            self._items.clear()
            self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)
