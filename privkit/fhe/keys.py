"""Key sets (client side) and public bundles (what a server receives).

>>> keys = KeySet.generate("n8192", backend="sim", rotations=[1, 2])
>>> ct = keys.encrypt([1.0, 2.0, 3.0])
>>> keys.decrypt(keys.backend.rotate(ct, 1)).round(6).tolist()
[2.0, 3.0, 0.0]
>>> bundle = PublicBundle.from_bytes(keys.public_bundle().to_bytes())
>>> bundle.backend.can_decrypt
False

The secret key never leaves the :class:`KeySet`: :meth:`KeySet.public_bundle` holds the public,
relinearisation and Galois keys and the parameters, and a backend built from it can encrypt and
evaluate but not decrypt (:class:`~privkit.errors.SecretKeyRequiredError`).
"""

from __future__ import annotations

import json
import os
import struct
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np

from ..errors import (
    EnvelopeError,
    KeyMismatchError,
    ParameterError,
    SecretKeyRequiredError,
    SecurityDowngradeError,
)
from .backend import Backend, Ciphertext
from .backend import public_key_id as _seal_key_id
from .params import (  # galois_element re-exported (moved to params)
    CKKSParams,
    galois_element,
)

__all__ = ["KeySet", "PublicBundle", "default_rotations", "galois_element", "require_secure_backend"]

BackendName = Literal["seal", "sim"]


def default_rotations(params: CKKSParams) -> list[int]:
    """Left rotations by every power of two below the slot count (any rotation composes)."""
    return [1 << i for i in range(int(np.log2(params.slots)))]


def _normalise_steps(params: CKKSParams, rotations: Iterable[int] | None) -> list[int]:
    if rotations is None:
        return default_rotations(params)
    steps = set()
    for r in rotations:
        r = int(r)
        if r % params.slots == 0:
            continue
        # keep the sign the caller asked for, but fold huge steps into (-slots, slots)
        steps.add(r % params.slots if r > 0 else -((-r) % params.slots))
    return sorted(steps)


class PublicBundle:
    """Public material of a key set: what a server needs to evaluate, never the secret key."""

    _MAGIC = b"PKBUNDLE"

    def __init__(
        self,
        params: CKKSParams,
        backend_name: BackendName,
        key_id: str,
        rotation_steps: Sequence[int],
        conjugation: bool,
        blobs: dict[str, bytes],
        *,
        live: dict[str, Any] | None = None,
    ) -> None:
        self.params = params
        self.backend_name = backend_name
        self.key_id = key_id
        self.rotation_steps = tuple(rotation_steps)
        self.conjugation = conjugation
        self._eager = dict(blobs)
        # in-memory SEAL key objects of a bundle made in this process: serialised only when bytes
        # are asked for, and shared (not copied) by an in-process server backend. At N=32768 a
        # program's Galois keys are several GB, so holding them once instead of three times
        # (client objects, bundle bytes, server copy) decides whether it fits in memory.
        self._live = {k: v for k, v in (live or {}).items() if v is not None}
        self._backend: Backend | None = None

    @property
    def _blobs(self) -> dict[str, bytes]:
        """Serialised keys (the live ones are serialised on each call, not kept)."""
        if not self._live:
            return self._eager
        from .seal import SealBackend

        out = dict(self._eager)
        out.update({k: SealBackend.serialize_key(v) for k, v in self._live.items()})
        return out

    def fingerprint(self) -> str:
        """Identifies the key set (and so which ciphertexts this bundle can evaluate)."""
        return self.key_id

    @property
    def backend(self) -> Backend:
        """An evaluation backend with public keys only (built once, then cached)."""
        if self._backend is None:
            self._backend = self._build_backend()
        return self._backend

    def _build_backend(self) -> Backend:
        """A new backend from the public material (public keys only)."""
        if self.backend_name == "sim":
            from .sim import SimBackend

            return SimBackend(self.params, self.key_id, self.rotation_steps, self.conjugation)
        from .seal import SealBackend

        return SealBackend.from_public_keys(
            self.params, self.key_id, self._eager, self._live, self.rotation_steps,
            self.conjugation,
        )

    def _check_key_id(self) -> None:
        """A SEAL bundle's key id is the hash of its public key: refuse one that disagrees."""
        if self.backend_name != "seal":
            return
        missing = {"public_key", "relin_keys"} - set(self._eager) - set(self._live)
        if missing:
            raise EnvelopeError(f"public bundle lacks {sorted(missing)}")
        got = _seal_key_id(self._eager["public_key"])
        if got != self.key_id:
            raise EnvelopeError(
                f"public bundle claims key id {self.key_id[:16]} but its public key hashes to "
                f"{got[:16]}: the bundle was altered"
            )

    def to_envelope(self, *, sign_with: Any = None) -> bytes:
        """This bundle in an authenticated envelope (see ``envelope.pack_public_bundle``)."""
        from .envelope import pack_public_bundle

        return pack_public_bundle(self, sign_with=sign_with)

    @classmethod
    def from_envelope(
        cls, blob: bytes, *, expected_fingerprint: str | None = None, verify_with: Any = None,
        allow_insecure: bool = False,
    ) -> PublicBundle:
        """Inverse of :meth:`to_envelope` (see ``envelope.unpack_public_bundle``; simulator
        and sub-128-bit bundles need ``allow_insecure=True``)."""
        from .envelope import unpack_public_bundle

        return unpack_public_bundle(
            blob, expected_fingerprint=expected_fingerprint, verify_with=verify_with,
            allow_insecure=allow_insecure,
        )

    def encrypt(self, values: Any) -> Ciphertext:
        """Encrypt with the public key (a server or a third party can do this too)."""
        return self.backend.encrypt(values)

    def decrypt(self, ct: Ciphertext) -> np.ndarray:
        """Always refused: a public bundle holds no secret key."""
        raise SecretKeyRequiredError(
            "a PublicBundle holds no secret key and cannot decrypt; send the result back to the "
            "client and call KeySet.decrypt there"
        )

    def sizes(self) -> dict[str, int]:
        """Bytes of each key in the bundle."""
        return {k: len(v) for k, v in self._blobs.items()}

    def to_bytes(self) -> bytes:
        blobs = self._blobs  # serialises live keys once
        header = json.dumps(
            {
                "params": self.params.to_dict(),
                "backend": self.backend_name,
                "key_id": self.key_id,
                "rotations": list(self.rotation_steps),
                "conjugation": self.conjugation,
                "blobs": {k: len(v) for k, v in blobs.items()},
            }
        ).encode()
        parts = [self._MAGIC, struct.pack("<I", len(header)), header]
        parts += [blobs[k] for k in sorted(blobs)]
        return b"".join(parts)

    #: the only blobs a bundle may carry, per backend (never a secret key)
    ALLOWED_BLOBS: dict[str, frozenset[str]] = {
        "seal": frozenset({"public_key", "relin_keys", "galois_keys"}),
        "sim": frozenset(),
    }
    _HEADER_FIELDS = frozenset({"params", "backend", "key_id", "rotations", "conjugation", "blobs"})
    _MAX_HEADER = 1 << 20

    @classmethod
    def from_bytes(cls, blob: bytes) -> PublicBundle:
        """Inverse of :meth:`to_bytes`; strict: every header field is type- and range-checked,
        blob names other than the public ones (``public_key``, ``relin_keys``, ``galois_keys``)
        are refused (a bundle never carries a secret key), and declared sizes must add up to
        the real size before anything is copied. Errors: :class:`~privkit.errors.EnvelopeError`.
        """
        if not isinstance(blob, (bytes, bytearray, memoryview)) or bytes(blob[: len(cls._MAGIC)]) != cls._MAGIC:
            raise EnvelopeError("not a privkit public bundle (bad magic)")
        off = len(cls._MAGIC)
        try:
            (hlen,) = struct.unpack("<I", bytes(blob[off : off + 4]))
            if hlen > min(cls._MAX_HEADER, len(blob) - off - 4):
                raise ValueError(f"header length {hlen} runs past the bundle")
            header = json.loads(bytes(blob[off + 4 : off + 4 + hlen]))
            if not isinstance(header, dict):
                raise TypeError("header is not an object")
            if set(header) != cls._HEADER_FIELDS:
                raise ValueError(
                    f"header fields {sorted(map(str, header))[:8]} differ from "
                    f"{sorted(cls._HEADER_FIELDS)}"
                )
            params = CKKSParams.from_dict(header["params"])
            backend_name, key_id = header["backend"], header["key_id"]
            if backend_name not in cls.ALLOWED_BLOBS:
                raise ValueError(f"unknown backend {str(backend_name)[:32]!r}")
            if not isinstance(key_id, str) or not 0 < len(key_id) <= 128 or not key_id.isascii():
                raise TypeError("key_id must be a short ASCII string")
            raw_sizes = header["blobs"]
            if not isinstance(raw_sizes, dict):
                raise TypeError("blobs must be an object of name -> size")
            unknown = set(raw_sizes) - cls.ALLOWED_BLOBS[backend_name]
            if unknown:
                secretish = [k for k in unknown if "secret" in k.lower() or k.lower() in ("sk", "s")]
                why = "it would carry a SECRET key" if secretish else "they are not public keys"
                raise EnvelopeError(
                    f"refusing a public bundle with blob(s) {sorted(unknown)[:4]}: {why}; a "
                    f"{backend_name} bundle holds only {sorted(cls.ALLOWED_BLOBS[backend_name])}"
                )
            sizes = {}
            for k, v in raw_sizes.items():
                if type(v) is not int or v < 0:
                    raise ValueError(f"blob size of {k!r} must be a non-negative integer")
                sizes[k] = v
            rotations = header["rotations"]
            if not isinstance(rotations, list) or len(rotations) > params.slots:
                raise TypeError("rotations must be a list of at most slots integers")
            for r in rotations:
                if type(r) is not int or not -params.slots < r < params.slots or r == 0:
                    raise ValueError(f"rotation step {r!r} out of range")
            conjugation = header["conjugation"]
            if type(conjugation) is not bool:
                raise TypeError(f"conjugation must be true or false, got {conjugation!r}")
        except EnvelopeError:
            raise
        except (struct.error, ValueError, KeyError, TypeError, AttributeError, RecursionError,
                ParameterError) as e:
            what = f"missing field {e}" if isinstance(e, KeyError) else str(e)
            raise EnvelopeError(f"corrupt public bundle header: {what}"[:500]) from None
        pos = off + 4 + hlen
        if pos + sum(sizes.values()) != len(blob):
            raise EnvelopeError(
                f"public bundle declares {sum(sizes.values())} bytes of keys but holds "
                f"{len(blob) - pos}: truncated or with trailing bytes"
            )
        blobs = {}
        for k in sorted(sizes):
            blobs[k] = bytes(blob[pos : pos + sizes[k]])
            pos += sizes[k]
        bundle = cls(params, backend_name, key_id, rotations, conjugation, blobs)
        bundle._check_key_id()
        return bundle

    def security_problem(self) -> str | None:
        """Why this bundle is not safe to compute on (simulator, under 128 bits), or ``None``."""
        if self.backend_name == "sim":
            return ("it is a SIMULATOR bundle: its 'ciphertexts' are plaintext numbers and the "
                    "input travels in the clear")
        if not self.params.secure:
            return (f"its parameters give only about {self.params.security_bits}-bit security "
                    f"(below 128): {self.params.describe()}")
        return None

    def require_secure(self, allow_insecure: bool = False, where: str = "this server") -> str | None:
        """Refuse a simulator or sub-128-bit bundle unless ``allow_insecure=True``.

        Returns the problem (a string to put in reports) when it was allowed, else ``None``;
        raises :class:`~privkit.errors.SecurityDowngradeError` when it was not.
        """
        return require_secure_backend(self.backend, allow_insecure, where)


def require_secure_backend(backend: Backend, allow_insecure: bool = False,
                           where: str = "this server") -> str | None:
    """The check of :meth:`PublicBundle.require_secure`, for a backend."""
    if type(allow_insecure) is not bool:
        raise ParameterError(f"allow_insecure must be True or False, got {allow_insecure!r}")
    problem = None
    if backend.simulated:
        problem = ("it is a SIMULATOR backend: its 'ciphertexts' are plaintext numbers and the "
                   "input travels in the clear")
    elif not backend.params.secure:
        problem = (f"its parameters give only about {backend.params.security_bits}-bit security "
                   f"(below 128): {backend.params.describe()}")
    if problem is None:
        return None
    if not allow_insecure:
        raise SecurityDowngradeError(
            f"{where} refuses these keys: {problem}. Pass allow_insecure=True to accept them "
            "explicitly (tests and demos only); the report will say so"
        )
    return problem


class KeySet:
    """A client's keys: secret key (kept inside), public key, relinearisation and Galois keys."""

    def __init__(self, params: CKKSParams, backend: Backend, bundle: PublicBundle) -> None:
        # the secret key lives in ``backend`` (attached there); nothing here touches it
        self.params = params
        self.backend = backend
        self._bundle = bundle

    @property
    def key_id(self) -> str:
        return self.backend.key_id

    @property
    def rotation_steps(self) -> frozenset[int]:
        return self.backend.rotation_steps

    def __repr__(self) -> str:
        return f"<KeySet {self.backend.name} {self.params.describe()} key={self.key_id[:8]}>"

    @classmethod
    def generate(
        cls,
        params: CKKSParams | str,
        backend: BackendName = "seal",
        rotations: Iterable[int] | None = None,
        conjugation: bool = True,
        noise_std: float = 0.0,
        seed: int | None = None,
    ) -> KeySet:
        """Generate a key set.

        Args:
            params: a :class:`CKKSParams` or a preset name ("n8192", "n16384", "n32768").
            backend: "seal" (real encryption) or "sim" (the plaintext simulator).
            rotations: the rotation steps to make Galois keys for (left rotations; negative =
                right). ``None``: every power of two (any rotation then composes from at most
                log2(slots) keys). ``[]``: none.
            conjugation: also make the complex-conjugation key (needed by complex DFTs).
            noise_std: simulator only: Gaussian noise added at encryption, rescale, key switch.
            seed: simulator only: seed of that noise.
        """
        params = CKKSParams.coerce(params)
        steps = _normalise_steps(params, rotations)
        if backend == "sim":
            from .sim import SimBackend

            key_id = "sim-" + uuid.uuid4().hex
            be = SimBackend(params, key_id, steps, conjugation, noise_std=noise_std, seed=seed)
            be.attach_secret()
            bundle = PublicBundle(params, "sim", key_id, steps, conjugation, {})
            return cls(params, be, bundle)
        if backend != "seal":
            raise ParameterError(f"backend must be 'seal' or 'sim', got {backend!r}")
        if noise_std:
            raise ParameterError("noise_std applies to the simulator only; SEAL has real noise")
        from .seal import SealBackend

        be, blobs, live = SealBackend.generate(params, steps, conjugation)
        bundle = PublicBundle(params, "seal", be.key_id, steps, conjugation, blobs, live=live)
        return cls(params, be, bundle)

    # -- client operations ---------------------------------------------------------------------
    def encrypt(self, values: Any) -> Ciphertext:
        """Encrypt a 1-D real (or complex) array of at most ``params.slots`` values."""
        return self.backend.encrypt(values)

    def decrypt(self, ct: Ciphertext, *, complex: bool | None = None) -> np.ndarray:
        """Decrypt ``ct`` to exactly ``ct.length`` values (real unless the ciphertext is complex).

        A ciphertext evaluated on a server backend (from the public bundle) of the same key set
        decrypts too; one of another key set raises :class:`~privkit.errors.KeyMismatchError`.
        """
        if ct.backend is not self.backend:
            # results computed by a server backend of the same keys: re-home the handle
            self.backend._check(ct)
            ct = ct.replace(backend=self.backend)
        return self.backend.decrypt(ct, complex=complex)

    def public_bundle(self) -> PublicBundle:
        """What the server gets: parameters and public/relinearisation/Galois keys."""
        return self._bundle

    def secret_key_bytes(self) -> bytes:
        """The serialised secret key (for sealed storage; handle with care)."""
        return self.backend.secret_key_bytes()

    def ciphertext_from_bytes(self, blob: bytes) -> Ciphertext:
        return self.backend.deserialize_ciphertext(blob)

    # -- storage -------------------------------------------------------------------------------
    @classmethod
    def from_parts(cls, bundle: PublicBundle, secret_key: bytes) -> KeySet:
        """Rebuild a key set from its public bundle and :meth:`secret_key_bytes`.

        Checks that the secret key belongs to the bundle (SEAL: the bundle's key id matches its
        public key, and a probe encrypted under the public key decrypts correctly), else raises
        :class:`~privkit.errors.KeyMismatchError`. Simulator key sets come back without their
        ``noise_std``/``seed``.
        """
        if not isinstance(bundle, PublicBundle):
            raise ParameterError(f"expected a PublicBundle, got {type(bundle).__name__}")
        bundle._check_key_id()
        fresh = PublicBundle(
            bundle.params, bundle.backend_name, bundle.key_id, bundle.rotation_steps,
            bundle.conjugation, bundle._blobs,
        )
        be = fresh._build_backend()
        be.attach_secret_bytes(secret_key)  # the simulator refuses another key set's secret here
        # probe: a value encrypted under the public key must decrypt under the secret key
        if not be.secret_matches():
            raise KeyMismatchError(
                f"the secret key does not belong to key set {bundle.key_id[:16]} (a probe "
                "encrypted under its public key does not decrypt)"
            )
        return cls(bundle.params, be, fresh)

    def save(
        self,
        path: str | os.PathLike,
        password: str | bytes | None = None,
        insecure_plaintext: bool = False,
        *,
        kdf: Any = None,
    ) -> None:
        """Write the whole key set to ``path``, sealed under ``password``.

        AES-256-GCM under a key derived from the password (scrypt by default, see
        :mod:`privkit.fhe.keyfile`), written atomically with 0600 permissions. Without a
        password, ``insecure_plaintext=True`` is required (and a warning is issued).
        """
        from .keyfile import save_keyset

        save_keyset(self, path, password, insecure_plaintext=insecure_plaintext, kdf=kdf)

    @classmethod
    def load(cls, path: str | os.PathLike, password: str | bytes | None = None, *,
             allow_plaintext: bool = False) -> KeySet:
        """Read a key file written by :meth:`save`; :class:`~privkit.errors.KeyFileError` if
        the password is wrong or the file truncated or tampered with (the message says which).

        An UNENCRYPTED key file (written with ``insecure_plaintext=True``) is refused with
        :class:`~privkit.errors.SecurityDowngradeError` unless ``allow_plaintext=True``: a
        swapped-in plaintext file holding someone else's keys is never accepted silently.
        """
        from .keyfile import load_keyset

        return load_keyset(path, password, allow_plaintext=allow_plaintext)
