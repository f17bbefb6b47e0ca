"""The backend protocol: :class:`Backend` holds every CKKS semantic, subclasses supply raw primitives.

A backend evaluates CKKS operations on ciphertexts of one key set. All bookkeeping lives in the
:class:`Backend` base class (levels, scales, rotation composition, op counting, validation and
errors), and the two concrete backends only supply raw primitives. The :class:`Ciphertext`
handle and its :class:`Layout` live in :mod:`privkit.fhe.ciphertext` (re-exported here).

Concrete backends:

* :class:`privkit.fhe.seal.SealBackend`: real encryption through TenSEAL's ``sealapi``;
* :class:`privkit.fhe.sim.SimBackend`: float64 slot vectors with the same semantics, for fast
  checks of depth, packing and maths. It is *not* encryption and never says so.

Semantics shared by both (the contract the property tests check):

* a ciphertext holds ``slots`` complex values; ``length`` is its logical length, slots past it are
  zero unless an operation documents otherwise (``sum_slots``);
* ``level`` is the number of rescales left; a fresh ciphertext has ``params.depth``. Every
  multiplication by a non-integer plaintext or by a ciphertext consumes one level; multiplying by
  an integer scalar (``mul_plain(ct, 3)``) consumes none; additions and rotations consume none;
* scales are managed so every ciphertext carries the nominal scale ``2**scale_bits``: plaintext
  multiplicands are encoded at the scale of the prime that the rescale drops (exact), and after a
  ciphertext product the scale ``s*s/q`` is declared ``s`` again, which multiplies the value by
  ``s/q`` (a relative error below 5e-6 for the presets; the simulator applies the same factor);
* operands at different levels are aligned automatically (modulus switching, free);
* ``rotate(ct, k)`` moves slot ``i + k`` to slot ``i`` (left rotation, ``numpy.roll(x, -k)``) for
  any integer ``k``; without a Galois key for ``k`` the rotation is composed from the keys that
  exist (fewest rotations), and raises :class:`MissingKeyError` naming ``k`` when impossible.
"""

from __future__ import annotations

import abc
import collections
import json
import numbers
import struct
from typing import Any, ClassVar

import numpy as np

from ..errors import (
    DepthExhaustedError,
    EnvelopeError,
    KeyMismatchError,
    MissingKeyError,
    ParameterError,
    SecretKeyRequiredError,
    ShapeError,
    SlotOverflowError,
)
from .ciphertext import Ciphertext, Layout, public_key_id
from .counter import OpCounter
from .params import CKKSParams
from .ranges import capacities, check_bound, check_decrypted
from .rotation import shortest_rotation_path

__all__ = ["Backend", "Ciphertext", "Layout", "PlainLike", "public_key_id"]

PlainLike = Any  # a Python/numpy scalar or a 1-D array-like of real or complex numbers

_INT_SCALAR_LIMIT = 2**20


class Backend(abc.ABC):
    """Base class of the CKKS backends; see the module docstring for the shared semantics."""

    #: "seal" or "sim"
    name: ClassVar[str]
    #: True for the simulator (its "ciphertexts" are plain numbers)
    simulated: ClassVar[bool]

    def __init__(
        self,
        params: CKKSParams,
        key_id: str,
        rotation_steps: frozenset[int] | set[int] | list[int],
        conjugation: bool,
    ) -> None:
        self.params = params
        self.key_id = key_id
        self.rotation_steps = frozenset(int(s) for s in rotation_steps)
        self.conjugation = bool(conjugation)
        self.counter = OpCounter()
        self._has_secret = False
        self._paths: dict[int, tuple[int, ...] | None] = {}
        #: what a ciphertext at level l can hold: |value| < Q_l / (2 * scale)
        self._capacity = capacities(params)
        #: range bookkeeping: results whose tracked bound exceeded their level's capacity
        self.range_stats: collections.Counter = collections.Counter()

    # -- properties ----------------------------------------------------------------------------
    @property
    def slots(self) -> int:
        return self.params.slots

    @property
    def depth(self) -> int:
        return self.params.depth

    @property
    def can_decrypt(self) -> bool:
        return self._has_secret

    # -- the secret key (a KeySet attaches it; a server-side backend never holds one) ----------
    def attach_secret(self, secret: Any = None) -> None:
        """Let this backend decrypt. ``secret`` is the backend's own secret-key object
        (the simulator has none); :class:`~privkit.fhe.keys.KeySet` is the only caller."""
        self._has_secret = True

    def attach_secret_bytes(self, blob: bytes) -> None:
        """Attach a secret key serialised by :meth:`secret_key_bytes`.

        Raises :class:`~privkit.errors.KeyMismatchError` when it cannot belong to this key set
        (a SEAL secret is checked further by :meth:`secret_matches`).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot load a secret key")

    def secret_key_bytes(self) -> bytes:
        """The serialised secret key (for sealed storage; handle with care)."""
        raise NotImplementedError(f"{type(self).__name__} has no serialisable secret key")

    def secret_matches(self) -> bool:
        """True when a probe encrypted under the public key decrypts under the attached secret."""
        probe = np.zeros(self.slots, dtype=np.complex128)
        probe[:4] = [0.5, -1.25, 2.0, 0.125]
        got = self._decrypt_raw(self._encrypt_raw(probe), self.depth)[:4].real
        return bool(np.allclose(got, probe[:4].real, atol=1e-3))

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.params.describe()}; key={self.key_id[:8]}; "
            f"{len(self.rotation_steps)} rotation keys; decrypt={'yes' if self._has_secret else 'no'}>"
        )

    # -- raw primitives (subclasses) -----------------------------------------------------------
    @abc.abstractmethod
    def _encrypt_raw(self, vec: np.ndarray) -> Any: ...

    @abc.abstractmethod
    def _decrypt_raw(self, data: Any, level: int) -> np.ndarray: ...

    @abc.abstractmethod
    def _add_raw(self, a: Any, b: Any) -> Any: ...

    @abc.abstractmethod
    def _sub_raw(self, a: Any, b: Any) -> Any: ...

    @abc.abstractmethod
    def _neg_raw(self, a: Any) -> Any: ...

    @abc.abstractmethod
    def _add_plain_raw(self, a: Any, vec: np.ndarray, level: int, scale: float) -> Any: ...

    @abc.abstractmethod
    def _mul_plain_raw(self, a: Any, vec: np.ndarray | complex, level: int, pt_scale: float) -> Any:
        """Multiply by a plaintext (vector, or scalar broadcast to all slots); no rescale."""

    @abc.abstractmethod
    def _mul_raw(self, a: Any, b: Any) -> Any:
        """Ciphertext product, relinearised, not rescaled."""

    @abc.abstractmethod
    def _square_raw(self, a: Any) -> Any: ...

    @abc.abstractmethod
    def _rescale_raw(self, a: Any, level: int) -> Any:
        """Drop the prime of ``level``; the scale is divided by it."""

    @abc.abstractmethod
    def _force_scale_raw(self, a: Any, true_scale: float, declared: float) -> Any:
        """Declare the scale ``declared`` for data whose exact scale is ``true_scale``."""

    @abc.abstractmethod
    def _mod_switch_raw(self, a: Any, from_level: int, to_level: int) -> Any: ...

    @abc.abstractmethod
    def _rotate_raw(self, a: Any, step: int) -> Any:
        """Rotate by a step that has its own Galois key."""

    @abc.abstractmethod
    def _conjugate_raw(self, a: Any) -> Any: ...

    @abc.abstractmethod
    def _serialize_raw(self, a: Any) -> bytes: ...

    @abc.abstractmethod
    def _deserialize_raw(self, blob: bytes, level: int) -> Any: ...

    # -- validation helpers --------------------------------------------------------------------
    def _check(self, *cts: Ciphertext) -> None:
        for ct in cts:
            if not isinstance(ct, Ciphertext):
                raise TypeError(f"expected a Ciphertext, got {type(ct).__name__}")
            if ct.backend is self:
                continue
            if ct.backend.key_id != self.key_id or ct.backend.name != self.name:
                raise KeyMismatchError(
                    f"ciphertext belongs to key set {ct.backend.key_id[:16]} ({ct.backend.name}) "
                    f"but this backend evaluates key set {self.key_id[:16]} ({self.name}); "
                    "encrypt with the matching KeySet / PublicBundle, never mix key sets"
                )

    def _vector(self, values: PlainLike, what: str) -> np.ndarray:
        arr = np.asarray(values)
        if arr.ndim != 1:
            raise ShapeError(
                f"{what} must be a 1-D array, got shape {arr.shape}; flatten it (x.ravel()) first"
            )
        if arr.size > self.slots:
            raise SlotOverflowError(
                f"{what} has {arr.size} values but a ciphertext holds {self.slots} slots "
                f"(poly_degree {self.params.poly_degree}); split the input or use a larger preset"
            )
        if not np.issubdtype(arr.dtype, np.number):
            raise ShapeError(f"{what} must be numeric, got dtype {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise ParameterError(f"{what} contains NaN or infinite values")
        big = float(np.max(np.abs(arr))) if arr.size else 0.0
        if big >= self.params.max_abs_value:
            raise ParameterError(
                f"{what} holds a value of magnitude {big:.3g}, beyond the {self.params.max_abs_value:.3g} "
                f"these parameters can represent (first prime {self.params.coeff_bits[0]} bits, "
                f"scale 2^{self.params.scale_bits}); rescale the input or use a larger first prime"
            )
        vec = np.zeros(self.slots, dtype=np.complex128)
        vec[: arr.size] = arr
        return vec

    def require_levels(self, ct: Ciphertext, needed: int, where: str = "") -> None:
        """Raise :class:`DepthExhaustedError` *before* any work if ``ct`` cannot afford ``needed``."""
        self._check(ct)
        if needed > ct.level:
            raise DepthExhaustedError(needed=needed, available=ct.level, where=where)

    def _need_level(self, ct: Ciphertext, op: str) -> None:
        if ct.level < 1:
            raise DepthExhaustedError(needed=1, available=0, where=op)

    def _align(self, a: Ciphertext, b: Ciphertext) -> tuple[Ciphertext, Ciphertext]:
        if a.level > b.level:
            a = self.mod_switch_to(a, b.level)
        elif b.level > a.level:
            b = self.mod_switch_to(b, a.level)
        return a, b

    def capacity(self, level: int) -> float:
        """Largest |value| a ciphertext at ``level`` can hold at the nominal scale."""
        return self._capacity[level]

    def _new(self, like: Ciphertext, data: Any, level: int | None = None, **meta: Any) -> Ciphertext:
        level = like.level if level is None else level
        bound = meta.pop("bound", None)
        # rotations, negation and conjugation keep the level and the mean of the bound: no check
        if bound is not None and meta.pop("check", True):
            self._check_bound(bound, level)
        return Ciphertext(
            backend=self,
            data=data,
            level=level,
            scale=self.params.scale,
            length=meta.pop("length", like.length),
            is_complex=meta.pop("is_complex", like.is_complex),
            layout=meta.pop("layout", like.layout),
            bound=bound,
        )

    def _check_bound(self, bound: np.ndarray, level: int) -> None:
        """Warn when a tracked bound may overflow ``level`` (see :mod:`privkit.fhe.ranges`)."""
        check_bound(self, bound, level)

    @staticmethod
    def _bsum(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
        return None if a is None or b is None else a + b

    # -- encryption ----------------------------------------------------------------------------
    def encrypt(self, values: PlainLike) -> Ciphertext:
        """Encrypt a 1-D real or complex array (at most ``slots`` values; the rest are zero)."""
        arr = np.asarray(values)
        vec = self._vector(arr, "the input")
        data = self._encrypt_raw(vec)
        self.counter.record("encrypt", out_level=self.depth)
        return Ciphertext(
            backend=self,
            data=data,
            level=self.depth,
            scale=self.params.scale,
            length=int(arr.size),
            is_complex=bool(np.iscomplexobj(arr)),
            bound=np.abs(vec),
        )

    def decrypt(self, ct: Ciphertext, *, complex: bool | None = None) -> np.ndarray:
        """Decrypt to ``ct.length`` values (complex if the ciphertext is, or if asked)."""
        self._check(ct)
        if not self._has_secret:
            raise SecretKeyRequiredError(
                "this backend holds only public keys (a server-side object) and cannot decrypt; "
                "decrypt on the client with KeySet.decrypt"
            )
        full = self._decrypt_raw(ct.data, ct.level)
        self._check_decrypted(ct, full)
        vec = full[: ct.length]
        want_complex = ct.is_complex if complex is None else complex
        return vec.copy() if want_complex else vec.real.copy()

    def _check_decrypted(self, ct: Ciphertext, full: np.ndarray) -> None:
        """Refuse values no correct decryption gives (see :func:`privkit.fhe.ranges.check_decrypted`)."""
        check_decrypted(self, ct, full)

    # -- additive ------------------------------------------------------------------------------
    def add(self, a: Ciphertext, b: Ciphertext | PlainLike) -> Ciphertext:
        """``a + b`` for a ciphertext or plaintext ``b``."""
        if not isinstance(b, Ciphertext):
            return self.add_plain(a, b)
        self._check(a, b)
        a, b = self._align(a, b)
        self.counter.record("add", in_level=a.level, out_level=a.level)
        return self._new(
            a, self._add_raw(a.data, b.data), length=max(a.length, b.length),
            is_complex=a.is_complex or b.is_complex, bound=self._bsum(a.bound, b.bound),
        )

    def sub(self, a: Ciphertext, b: Ciphertext | PlainLike) -> Ciphertext:
        """``a - b`` for a ciphertext or plaintext ``b``."""
        if not isinstance(b, Ciphertext):
            return self.add_plain(a, -np.asarray(b))
        self._check(a, b)
        a, b = self._align(a, b)
        self.counter.record("add", in_level=a.level, out_level=a.level)
        return self._new(
            a, self._sub_raw(a.data, b.data), length=max(a.length, b.length),
            is_complex=a.is_complex or b.is_complex, bound=self._bsum(a.bound, b.bound),
        )

    def neg(self, a: Ciphertext) -> Ciphertext:
        self._check(a)
        return self._new(a, self._neg_raw(a.data), bound=a.bound, check=False)

    def add_plain(self, a: Ciphertext, values: PlainLike) -> Ciphertext:
        """Add a plaintext vector, or a scalar to each of the ``a.length`` logical slots."""
        self._check(a)
        arr = np.asarray(values)
        if arr.ndim == 0:
            arr = np.full(a.length, arr.item())
        vec = self._vector(arr, "the plaintext addend")
        self.counter.record("add", in_level=a.level, out_level=a.level)
        return self._new(
            a, self._add_plain_raw(a.data, vec, a.level, a.scale),
            length=max(a.length, int(arr.size)), is_complex=a.is_complex or np.iscomplexobj(arr),
            bound=None if a.bound is None else a.bound + np.abs(vec),
        )

    # -- multiplicative ------------------------------------------------------------------------
    def mul_plain(self, a: Ciphertext, values: PlainLike) -> Ciphertext:
        """Multiply by a plaintext vector or scalar.

        Consumes one level, except for an integer scalar (``|k| < 2**20``), which is exact and free.
        """
        self._check(a)
        arr = np.asarray(values)
        if arr.ndim == 0:
            v = arr.item()
            if not np.isfinite(v):
                raise ParameterError(f"the plaintext multiplier is {v}; it must be finite")
            if isinstance(v, numbers.Real) and float(v).is_integer() and abs(v) < _INT_SCALAR_LIMIT:
                self.counter.record("pt_mult", in_level=a.level, out_level=a.level)
                return self._new(a, self._mul_plain_raw(a.data, complex(v), a.level, 1.0),
                                 bound=None if a.bound is None else a.bound * abs(v))
            plain: np.ndarray | complex = complex(v)
            is_c = a.is_complex or isinstance(v, complex)
            bound = None if a.bound is None else a.bound * abs(v)
        else:
            plain = self._vector(arr, "the plaintext multiplier")
            is_c = a.is_complex or np.iscomplexobj(arr)
            bound = None if a.bound is None else a.bound * np.abs(plain)
        self._need_level(a, "mul_plain")
        q = float(self.params.primes[a.level])
        raw = self._mul_plain_raw(a.data, plain, a.level, q)
        raw = self._rescale_raw(raw, a.level)
        self.counter.record("pt_mult", in_level=a.level, out_level=a.level - 1)
        self.counter.record("rescale", in_level=a.level, out_level=a.level - 1)
        length = a.length if arr.ndim == 0 else max(a.length, int(arr.size))
        return self._new(a, raw, level=a.level - 1, length=length, is_complex=is_c, bound=bound)

    def mul_plain_sum(self, terms: list[tuple[Ciphertext, PlainLike]]) -> Ciphertext:
        """``sum_i ct_i * plain_i`` rescaled once (one level): the same maths as adding
        :meth:`mul_plain` results, with one rescale instead of one per term (lazy rescaling;
        on SEAL the rescale is about half of a plaintext product's cost). Counts one pt_mult per
        term and one rescale."""
        if not terms:
            raise ShapeError("mul_plain_sum needs at least one term")
        for c, _ in terms:
            self._check(c)
        level = min(c.level for c, _ in terms)
        if level < 1:
            raise DepthExhaustedError(needed=1, available=level, where="mul_plain_sum")
        q = float(self.params.primes[level])
        raw, is_c, length = None, False, 0
        bound: np.ndarray | None = np.zeros(self.slots)
        for c, v in terms:
            if c.level > level:
                c = self.mod_switch_to(c, level)
            arr = np.asarray(v)
            vec = self._vector(arr if arr.ndim else np.full(c.length, arr.item()), "the plaintext multiplier")
            is_c = is_c or c.is_complex or bool(np.iscomplexobj(arr) and np.any(arr.imag))
            length = max(length, c.length, int(arr.size))
            bound = None if bound is None or c.bound is None else bound + c.bound * np.abs(vec)
            prod = self._mul_plain_raw(c.data, vec, level, q)
            self.counter.record("pt_mult", in_level=level, out_level=level - 1)
            if raw is None:
                raw = prod
            else:
                raw = self._add_raw(raw, prod)
                self.counter.record("add", in_level=level, out_level=level)
        raw = self._rescale_raw(raw, level)
        self.counter.record("rescale", in_level=level, out_level=level - 1)
        return self._new(terms[0][0], raw, level=level - 1, length=length, is_complex=is_c,
                         bound=bound)

    def mul(self, a: Ciphertext, b: Ciphertext | PlainLike) -> Ciphertext:
        """``a * b`` (slot-wise); a ciphertext product is relinearised and rescaled (one level)."""
        if not isinstance(b, Ciphertext):
            return self.mul_plain(a, b)
        self._check(a, b)
        a, b = self._align(a, b)
        self._need_level(a, "mul")
        raw = self._mul_raw(a.data, b.data)
        bound = None if a.bound is None or b.bound is None else a.bound * b.bound
        return self._finish_product(a, raw, max(a.length, b.length), a.is_complex or b.is_complex,
                                    bound)

    def square(self, a: Ciphertext) -> Ciphertext:
        """``a * a`` (one level)."""
        self._check(a)
        self._need_level(a, "square")
        bound = None if a.bound is None else a.bound * a.bound
        return self._finish_product(a, self._square_raw(a.data), a.length, a.is_complex, bound)

    def _finish_product(self, a: Ciphertext, raw: Any, length: int, is_complex: bool,
                        bound: np.ndarray | None = None) -> Ciphertext:
        s = self.params.scale
        q = float(self.params.primes[a.level])
        if bound is not None:
            bound = bound * (s / q)
        raw = self._rescale_raw(raw, a.level)
        raw = self._force_scale_raw(raw, s * s / q, s)
        self.counter.record("ct_mult", in_level=a.level, out_level=a.level - 1)
        self.counter.record("rescale", in_level=a.level, out_level=a.level - 1)
        return self._new(a, raw, level=a.level - 1, length=length, is_complex=is_complex,
                         bound=bound)

    def mod_switch_to(self, a: Ciphertext, level: int) -> Ciphertext:
        """Drop to a lower ``level`` without rescaling (free; used to align operands)."""
        self._check(a)
        if level > a.level or level < 0:
            raise ParameterError(f"cannot switch a level-{a.level} ciphertext to level {level}")
        if level == a.level:
            return a
        return self._new(a, self._mod_switch_raw(a.data, a.level, level), level=level,
                         bound=a.bound)

    # -- rotations -----------------------------------------------------------------------------
    def _normal_step(self, k: int) -> int:
        return int(k) % self.slots

    def rotation_path(self, k: int) -> tuple[int, ...] | None:
        """The Galois-key steps whose composition rotates by ``k`` (fewest), or None if impossible."""
        t = self._normal_step(k)
        if t == 0:
            return ()
        if t in self._paths:
            return self._paths[t]
        direct = [s for s in self.rotation_steps if s % self.slots == t]
        if direct:
            self._paths[t] = (direct[0],)
            return self._paths[t]
        self._paths[t] = shortest_rotation_path(t, self.rotation_steps, self.slots)
        return self._paths[t]

    def rotate(self, a: Ciphertext, k: int) -> Ciphertext:
        """Rotate left by ``k`` (slot ``i+k`` -> ``i``); composes keys when ``k`` has none."""
        self._check(a)
        path = self.rotation_path(k)
        if path is None:
            raise MissingKeyError(
                f"no Galois key serves a rotation by {k} (= {self._normal_step(k)} mod "
                f"{self.slots}); available steps: {sorted(self.rotation_steps)[:24]}"
                f"{' ...' if len(self.rotation_steps) > 24 else ''}; generate the key set with "
                f"rotations including {k} (or powers of two), or let the compiler choose the keys"
            )
        data = a.data
        for s in path:
            data = self._rotate_raw(data, s)
            self.counter.record("rotation", in_level=a.level, out_level=a.level)
        bound = None if a.bound is None else np.roll(a.bound, -self._normal_step(k))
        return self._new(a, data, bound=bound, check=False)

    def conjugate(self, a: Ciphertext) -> Ciphertext:
        """Complex conjugate of every slot (needs the conjugation key)."""
        self._check(a)
        if not self.conjugation:
            raise MissingKeyError(
                "complex conjugation needs the conjugation Galois key; generate the key set with "
                "conjugation=True"
            )
        self.counter.record("rotation", in_level=a.level, out_level=a.level)
        return self._new(a, self._conjugate_raw(a.data), bound=a.bound, check=False)

    def sum_slots(self, a: Ciphertext, n: int) -> Ciphertext:
        """Slot 0 of the result holds ``sum(a[0:n])``.

        Binary doubling (at most ``2*log2(n)`` rotations). Slot ``j`` holds the cyclic window sum
        ``a[j] + ... + a[j+n-1]``, so slots other than 0 are generally non-zero: mask them if the
        next operation needs a clean tail. The result's ``length`` is 1.
        """
        self._check(a)
        n = int(n)
        if n < 1 or n > self.slots:
            raise ShapeError(f"sum_slots needs 1 <= n <= {self.slots}, got n={n}")
        acc, m = a, 1
        for bit in bin(n)[3:]:
            acc = self.add(acc, self.rotate(acc, m))
            m *= 2
            if bit == "1":
                acc = self.add(acc, self.rotate(a, m))
                m += 1
        return acc.replace(length=1)

    # -- serialisation -------------------------------------------------------------------------
    _CT_MAGIC = b"PKCT"

    def serialize_ciphertext(self, ct: Ciphertext) -> bytes:
        """Ciphertext -> bytes (a small JSON header, then the backend's own encoding)."""
        self._check(ct)
        header = json.dumps(
            {
                "backend": self.name,
                "key_id": self.key_id,
                "params": self.params.fingerprint(),
                "level": ct.level,
                "length": ct.length,
                "complex": ct.is_complex,
                "layout": ct.layout.to_dict(),
            }
        ).encode()
        return self._CT_MAGIC + struct.pack("<I", len(header)) + header + self._serialize_raw(ct.data)

    _CT_FIELDS = frozenset({"backend", "key_id", "params", "level", "length", "complex", "layout"})
    _CT_MAX_HEADER = 1 << 16

    def deserialize_ciphertext(self, blob: bytes) -> Ciphertext:
        """bytes -> Ciphertext, refusing data made under other keys or parameters.

        The header is parsed strictly (exactly its seven fields, each with its JSON type and
        range; the layout through :meth:`Layout.from_dict`): anything else raises
        :class:`~privkit.errors.EnvelopeError`. The result carries no magnitude bound.
        """
        if not isinstance(blob, (bytes, bytearray)) or blob[:4] != self._CT_MAGIC or len(blob) < 8:
            raise EnvelopeError("not a privkit ciphertext (bad magic or too short)")
        (hlen,) = struct.unpack("<I", blob[4:8])
        if hlen > min(self._CT_MAX_HEADER, len(blob) - 8):
            raise EnvelopeError(f"ciphertext header length {hlen} runs past the data")
        try:
            header = json.loads(bytes(blob[8 : 8 + hlen]))
        except (ValueError, RecursionError) as e:
            raise EnvelopeError(f"corrupt ciphertext header: {str(e)[:120]}") from None
        if not isinstance(header, dict) or set(header) != self._CT_FIELDS:
            got = sorted(map(str, header))[:8] if isinstance(header, dict) else type(header).__name__
            raise EnvelopeError(
                f"corrupt ciphertext header: fields {got} differ from {sorted(self._CT_FIELDS)}"
            )
        if header["backend"] != self.name or header["key_id"] != self.key_id:
            raise KeyMismatchError(
                f"ciphertext was made under key set {str(header['key_id'])[:16]} "
                f"({str(header['backend'])[:16]}) but this backend holds {self.key_id[:16]} ({self.name})"
            )
        if header["params"] != self.params.fingerprint():
            raise KeyMismatchError(
                f"ciphertext parameters {str(header['params'])[:32]} differ from {self.params.fingerprint()}"
            )
        level, length, is_complex = header["level"], header["length"], header["complex"]
        if type(level) is not int or type(length) is not int or type(is_complex) is not bool:
            raise EnvelopeError(
                "corrupt ciphertext header: level and length must be integers and complex a boolean"
            )
        if not 0 <= level <= self.depth or not 0 <= length <= self.slots:
            raise EnvelopeError(f"ciphertext header out of range: level {level}, length {length}")
        layout = Layout.from_dict(header["layout"], self.slots)
        data = self._deserialize_raw(bytes(blob[8 + hlen :]), level)
        return Ciphertext(self, data, level, self.params.scale, length, is_complex, layout)
