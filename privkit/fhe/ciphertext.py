"""The :class:`Ciphertext` handle, its slot :class:`Layout` and the key id of a public key.

A ciphertext handle carries its data, level, scale, logical length and layout; every operation
on it goes through the owning :class:`~privkit.fhe.backend.Backend`, which holds all semantics.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import EnvelopeError

if TYPE_CHECKING:
    from .backend import Backend

__all__ = ["Ciphertext", "Layout", "public_key_id"]


@dataclasses.dataclass(frozen=True)
class Layout:
    """How logical elements sit in the slots (recorded by operators, read by the next one).

    ``gap``: logical element ``i`` of channel ``c`` lives in slot ``offset + c * channel_stride +
    i * gap``. A compact single-channel vector is ``Layout()``; a strided convolution left
    "gapped" has ``gap = stride``.
    """

    gap: int = 1
    offset: int = 0
    channels: int = 1
    channel_stride: int = 0

    @property
    def compact(self) -> bool:
        return self.gap == 1 and self.offset == 0 and self.channels == 1

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any, slots: int) -> Layout:
        """Strict inverse of :meth:`to_dict`: exactly the four fields, each an integer in range
        (``gap``, ``channels`` >= 1; ``offset``, ``channel_stride`` >= 0; all below ``slots``);
        anything else raises :class:`~privkit.errors.EnvelopeError`.

        >>> Layout.from_dict({"gap": 2, "offset": 0, "channels": 1, "channel_stride": 0}, 64).gap
        2
        >>> Layout.from_dict({"gap": 0.5, "offset": 0, "channels": 1, "channel_stride": 0}, 64)
        Traceback (most recent call last):
        ...
        privkit.errors.EnvelopeError: ciphertext layout field 'gap' must be an integer in [1, 64), got 0.5
        """
        if not isinstance(d, dict) or set(d) != {"gap", "offset", "channels", "channel_stride"}:
            raise EnvelopeError(
                "ciphertext layout must be an object with exactly gap, offset, channels and "
                f"channel_stride, got {str(d)[:80]}"
            )
        for name, low in (("gap", 1), ("offset", 0), ("channels", 1), ("channel_stride", 0)):
            v = d[name]
            if type(v) is not int or not low <= v < max(slots, low + 1):
                raise EnvelopeError(
                    f"ciphertext layout field {name!r} must be an integer in [{low}, {slots}), "
                    f"got {str(v)[:40]}"
                )
        return cls(**d)


@dataclasses.dataclass(eq=False)
class Ciphertext:
    """A handle on one (possibly simulated) ciphertext.

    Never mutated in place by privkit: every operation returns a new handle. Arithmetic
    operators dispatch to the owning backend (``a + b``, ``a - 2.0``, ``a * w``, ``-a``).
    """

    backend: Backend
    data: Any
    level: int
    scale: float
    length: int
    is_complex: bool = False
    layout: Layout = dataclasses.field(default_factory=Layout)
    #: per-slot upper bound on |value| (float64, ``slots`` long), tracked through operations;
    #: ``None`` when unknown (a deserialised ciphertext: the bound is never serialised, it would
    #: reveal the magnitude of the data)
    bound: np.ndarray | None = dataclasses.field(default=None, repr=False)

    @property
    def key_id(self) -> str:
        return self.backend.key_id

    @property
    def slots(self) -> int:
        return self.backend.slots

    def replace(self, **changes: Any) -> Ciphertext:
        """A handle on the same data with other metadata (``length``, ``layout``, ...)."""
        return dataclasses.replace(self, **changes)

    def to_bytes(self) -> bytes:
        return self.backend.serialize_ciphertext(self)

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        kind = "simulated " if self.backend.simulated else ""
        return (
            f"<{kind}Ciphertext length={self.length} level={self.level} "
            f"scale=2^{np.log2(self.scale):.1f} complex={self.is_complex} "
            f"key={self.key_id[:8]} layout={self.layout}>"
        )

    # arithmetic sugar ----------------------------------------------------------------------
    def __add__(self, other: Any) -> Ciphertext:
        return self.backend.add(self, other)

    __radd__ = __add__

    def __sub__(self, other: Any) -> Ciphertext:
        return self.backend.sub(self, other)

    def __rsub__(self, other: Any) -> Ciphertext:
        return self.backend.add(self.backend.neg(self), other)

    def __mul__(self, other: Any) -> Ciphertext:
        return self.backend.mul(self, other)

    __rmul__ = __mul__

    def __neg__(self) -> Ciphertext:
        return self.backend.neg(self)


def public_key_id(public_key_blob: bytes) -> str:
    """The key id of a key set whose public key serialises to ``public_key_blob``.

    A SEAL key set is named by this hash, so a public bundle whose key id disagrees with its own
    public key is refused as altered (:meth:`privkit.fhe.keys.PublicBundle.from_bytes`).

    >>> public_key_id(b"pk")[:8]
    'eb3102a6'
    """
    return hashlib.sha256(public_key_blob).hexdigest()[:32]
