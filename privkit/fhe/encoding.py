"""Input encoding shared by the program (:meth:`EncryptedProgram.encode_input`) and the client
(:meth:`ClientSpec.encode_input`): one function, so the two cannot drift apart.

An input of shape ``(channels, *spatial)`` (1-3 spatial axes; ``(batch, channels, *spatial)``
for a batched program) is packed into the slot vector of the program's input layout. With the
``"sat"`` encoding (``fhe.compile(..., input_sat=True)``, a first box convolution) each channel
is first replaced by the exclusive summed-area table of its zero-padded values.

>>> import numpy as np
>>> from privkit.fhe.ops.packed import PackedLayout
>>> lay = PackedLayout.grid(1, (2, 2), (2, 1), 4, clean=True)
>>> encode_slots(np.arange(4.0).reshape(2, 2), (1, 2, 2), 1, lay, 8)
array([0., 1., 2., 3.])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ShapeError
from .ops.packed import PackedLayout, pack

__all__ = ["encode_slots", "sat_from_dict", "sat_to_dict"]


def encode_slots(x: Any, input_shape: tuple[int, ...], batch: int, layout: PackedLayout, slots: int,
                 sat: Any = None) -> np.ndarray:
    """Input -> the vector to encrypt (``layout.span`` values).

    ``sat``: a :class:`~privkit.fhe.ops.sat.SatGeometry` for the summed-area-table
    encoding, or None for the values themselves. A one-channel, unbatched program also takes
    the input without its channel axis. Raises :class:`~privkit.errors.ShapeError` for any
    other shape.
    """
    x = np.asarray(x, dtype=np.float64)
    c, spatial = int(input_shape[0]), tuple(int(v) for v in input_shape[1:])
    want = (batch, c, *spatial)
    nd = len(spatial)
    if x.ndim == nd and c == 1 and batch == 1:
        x = x[None, None]
    elif x.ndim == nd + 1 and (c == 1 and batch > 1 or batch == 1):
        x = x[:, None] if batch > 1 else x[None]
    if x.shape != want:
        shown = want if batch > 1 else (c, *spatial)
        raise ShapeError(f"the program expects input of shape {shown}, got {x.shape}")
    if sat is not None:
        x = np.stack([np.asarray(sat.pack_sat(ch), dtype=np.float64).ravel()
                      for ch in x.reshape(batch * c, *spatial)])
    else:
        x = x.reshape(batch * c, int(np.prod(spatial)))
    return pack(x, layout, slots)[: layout.span]


def sat_to_dict(sat: Any) -> dict[str, Any]:
    """The public facts of a SAT input encoding (kernel, stride, padding), JSON-shaped."""
    return {"kind": "sat", "kernel": [int(v) for v in sat.kernel_shape],
            "stride": [int(v) for v in sat.stride], "pads": [[int(a), int(b)] for a, b in sat.pads]}


def sat_from_dict(d: Any, input_shape: tuple[int, ...]) -> Any:
    """Inverse of :func:`sat_to_dict` for inputs of ``input_shape`` (raises ValueError / the
    geometry's typed errors on a malformed entry)."""
    from .ops.sat import sat_geometry

    if not isinstance(d, dict) or d.get("kind") != "sat" or set(d) != {"kind", "kernel", "stride", "pads"}:
        raise ValueError(f"unknown input encoding {d!r:.80}")
    nd = len(input_shape) - 1
    kernel, stride, pads = d["kernel"], d["stride"], d["pads"]
    flat = list(kernel) + list(stride) + [v for p in pads for v in p]
    if (len(kernel) != nd or len(stride) != nd or len(pads) != nd or any(len(p) != 2 for p in pads)
            or any(type(v) is not int or not 0 <= v <= 4096 for v in flat)):
        raise ValueError(f"malformed SAT encoding {d!r:.80}")
    return sat_geometry(input_shape[1:], kernel, stride, [tuple(p) for p in pads])
