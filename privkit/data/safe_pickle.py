"""A restricted unpickler for data files that come as Python pickles (CIFAR-10 python batches).

``pickle.load`` runs whatever a file tells it to (a ``__reduce__`` returning ``os.system`` is
enough). :func:`load_data_pickle` accepts only plain data: dicts, lists, tuples, str, bytes,
ints, floats, bools, None, and numpy arrays of numeric dtypes. Arrays are never rebuilt by numpy's
own reconstruct path: the pickle's calls to ``numpy...._reconstruct`` / ``numpy.dtype`` /
``numpy...._frombuffer`` / ``_codecs.encode`` are routed to inert stand-ins that only record their
arguments, and the array is made at the end with :func:`numpy.frombuffer` after its declared shape
and dtype were checked against the bytes actually present. Any other global (``os.system``,
``builtins.eval``, ``subprocess.Popen``...) is refused before it is looked up, so nothing in the
file runs. The pure-Python unpickler is used (its reads are bounded by the data present: a
declared 4 GB string in a 100-byte file does not allocate 4 GB).

>>> import pickle, numpy as np
>>> blob = pickle.dumps({b"data": np.arange(6, dtype=np.uint8).reshape(2, 3), b"labels": [1, 2]})
>>> d = load_data_pickle(blob, "example")
>>> d[b"data"].shape, d[b"labels"]
((2, 3), [1, 2])
>>> class Evil:
...     def __reduce__(self):
...         return (eval, ("print('pwned')",))
>>> load_data_pickle(pickle.dumps(Evil()), "evil.pkl")
Traceback (most recent call last):
...
privkit.errors.DataFormatError: evil.pkl: refused to load: the pickle asks for 'builtins.eval', which is not plain data (only dicts, lists, tuples, strings, bytes, numbers and numeric numpy arrays are allowed)
"""

from __future__ import annotations

import io
import math
import pickle
import struct
from typing import Any

import numpy as np

from ..errors import DataFormatError

__all__ = ["load_data_pickle", "MAX_ARRAY_BYTES"]

#: the largest array (in bytes) a data pickle may declare (a CIFAR-10 batch holds 30 MB)
MAX_ARRAY_BYTES = 1 << 31

_NUMERIC = {"b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8",
            "bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
            "float16", "float32", "float64"}


class _Refused(Exception):
    pass


class _DType:
    """Stand-in for ``numpy.dtype(name, align, copy)``; BUILD gives it the byte order."""

    def __init__(self, name: Any, align: Any = False, copy: Any = False) -> None:
        if not isinstance(name, str) or name not in _NUMERIC:
            raise _Refused(f"array dtype {name!r} (only numeric dtypes are allowed)")
        self.name = name
        self.order = "|"

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
            raise _Refused(f"dtype state {str(state)[:80]!r}")
        self.order = state[1]

    def resolve(self) -> np.dtype:
        dt = np.dtype(self.name)
        return dt.newbyteorder(self.order) if self.order in "<>" else dt


class _Array:
    """Stand-in for ``_reconstruct(ndarray, shape, dtype)``; BUILD gives it its data."""

    def __init__(self, *args: Any) -> None:
        self.shape: tuple[int, ...] | None = None
        self.dtype: _DType | None = None
        self.raw: Any = None
        self.fortran = False

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise _Refused("an ndarray state that is not (version, shape, dtype, fortran, data)")
        _, shape, dtype, fortran, raw = state
        self.shape, self.dtype, self.fortran, self.raw = shape, dtype, bool(fortran), raw


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> _Array:
    a = _Array()
    a.shape, a.dtype, a.raw, a.fortran = shape, dtype, buf, order == "F"
    return a


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    # protocol-2 pickles written by Python 3 store bytes as _codecs.encode(str, 'latin1')
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _Array,
    ("numpy._core.multiarray", "_reconstruct"): _Array,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "dtype"): _DType,
    ("numpy", "ndarray"): "ndarray",  # only ever an argument of _reconstruct
    ("_codecs", "encode"): _codecs_encode,
}


class _Unpickler(pickle._Unpickler):  # the pure-Python one: bounded reads, no C fast paths
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("a persistent id")

    def _load_bytearray8(self) -> None:
        # the stock op allocates the declared length (up to 2^63) before reading
        (n,) = struct.unpack("<Q", self.read(8))
        data = self.read(n)
        if len(data) != n:
            raise pickle.UnpicklingError(f"BYTEARRAY8 declares {n} bytes, {len(data)} present")
        self.append(bytearray(data))

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8


def _finish(obj: Any, depth: int = 0) -> Any:
    """Replace array stand-ins by numpy arrays (after checking them); reject anything else."""
    if depth > 50:
        raise DataFormatError("nesting deeper than 50 levels")
    if isinstance(obj, _Array):
        return _to_array(obj)
    if isinstance(obj, dict):
        return {_finish(k, depth + 1): _finish(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finish(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_finish(v, depth + 1) for v in obj)
    if obj is None or isinstance(obj, (str, bytes, bool, int, float)):
        return obj
    if isinstance(obj, bytearray):
        return bytes(obj)
    raise DataFormatError(f"unexpected object of type {type(obj).__name__}")


def _to_array(a: _Array) -> np.ndarray:
    if not isinstance(a.dtype, _DType):
        raise DataFormatError("an array without a numeric dtype")
    shape = a.shape
    if (not isinstance(shape, tuple) or len(shape) > 32
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
        raise DataFormatError(f"array shape {str(shape)[:80]} is not a tuple of sizes")
    dt = a.dtype.resolve()
    n_bytes = math.prod(shape) * dt.itemsize  # python ints: no wrap-around
    if n_bytes > MAX_ARRAY_BYTES:
        raise DataFormatError(f"array of shape {shape} declares {n_bytes} bytes (limit "
                              f"{MAX_ARRAY_BYTES})")
    raw = a.raw
    if isinstance(raw, str):  # python 2 pickles loaded with encoding='latin1'
        raw = raw.encode("latin1")
    if not isinstance(raw, (bytes, bytearray)):
        raise DataFormatError(f"array data of type {type(raw).__name__} (expected bytes)")
    if len(raw) != n_bytes:
        raise DataFormatError(f"array of shape {shape} and dtype {dt} needs {n_bytes} bytes of "
                              f"data but holds {len(raw)}")
    arr = np.frombuffer(bytes(raw), dtype=dt)
    return arr.reshape(shape, order="F" if a.fortran else "C").astype(dt.newbyteorder("="))


def load_data_pickle(raw: bytes, what: str) -> Any:
    """Unpickle ``raw`` (the bytes of file ``what``) allowing plain data and numeric arrays only.

    Raises :class:`~privkit.errors.DataFormatError` naming ``what`` for anything else (code
    references, truncated or corrupt pickles, arrays whose size does not match their data).
    """
    try:
        obj = _Unpickler(io.BytesIO(raw), encoding="bytes").load()
        return _finish(obj)
    except _Refused as e:
        raise DataFormatError(
            f"{what}: refused to load: the pickle asks for {str(e)!r}, which is not plain data "
            "(only dicts, lists, tuples, strings, bytes, numbers and numeric numpy arrays are "
            "allowed)"
        ) from None
    except DataFormatError as e:
        raise DataFormatError(f"{what}: {e}") from None
    except (MemoryError, RecursionError) as e:
        raise DataFormatError(f"{what}: pickle too large or too deeply nested ({type(e).__name__})"
                              ) from None
    except Exception as e:  # noqa: BLE001 - the unpickler raises many types on corrupt input
        raise DataFormatError(f"{what}: not a readable data pickle ({type(e).__name__}: "
                              f"{str(e)[:200]})") from None
