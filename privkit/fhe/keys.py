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

import hashlib
import json
import struct
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np

from ..errors import EnvelopeError, ParameterError, SecretKeyRequiredError
from .backend import Backend, Ciphertext
from .params import CKKSParams

__all__ = ["KeySet", "PublicBundle", "default_rotations", "galois_element"]

BackendName = Literal["seal", "sim"]


def default_rotations(params: CKKSParams) -> list[int]:
    """Left rotations by every power of two below the slot count (any rotation composes)."""
    return [1 << i for i in range(int(np.log2(params.slots)))]


def galois_element(params: CKKSParams, step: int) -> int:
    """SEAL's Galois element for a left rotation by ``step`` (negative: right): 3**k mod 2N."""
    m = 2 * params.poly_degree
    k = step if step > 0 else params.slots + step
    return pow(3, k, m)


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
    ) -> None:
        self.params = params
        self.backend_name = backend_name
        self.key_id = key_id
        self.rotation_steps = tuple(rotation_steps)
        self.conjugation = conjugation
        self._blobs = dict(blobs)
        self._backend: Backend | None = None

    def fingerprint(self) -> str:
        """Identifies the key set (and so which ciphertexts this bundle can evaluate)."""
        return self.key_id

    @property
    def backend(self) -> Backend:
        """An evaluation backend with public keys only (built once, then cached)."""
        if self._backend is None:
            if self.backend_name == "sim":
                from .sim import SimBackend

                self._backend = SimBackend(
                    self.params, self.key_id, self.rotation_steps, self.conjugation
                )
            else:
                from tenseal.sealapi import GaloisKeys, PublicKey, RelinKeys

                from .seal import SealBackend, _context_for, seal_load

                ctx = _context_for(self.params).context
                pk = seal_load(PublicKey, ctx, self._blobs["public_key"])
                rk = seal_load(RelinKeys, ctx, self._blobs["relin_keys"])
                gk = seal_load(GaloisKeys, ctx, self._blobs["galois_keys"]) if "galois_keys" in self._blobs else None
                self._backend = SealBackend(
                    self.params, self.key_id, pk, rk, gk, self.rotation_steps, self.conjugation
                )
        return self._backend

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
        header = json.dumps(
            {
                "params": self.params.to_dict(),
                "backend": self.backend_name,
                "key_id": self.key_id,
                "rotations": list(self.rotation_steps),
                "conjugation": self.conjugation,
                "blobs": {k: len(v) for k, v in self._blobs.items()},
            }
        ).encode()
        parts = [self._MAGIC, struct.pack("<I", len(header)), header]
        parts += [self._blobs[k] for k in sorted(self._blobs)]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, blob: bytes) -> PublicBundle:
        if not isinstance(blob, (bytes, bytearray)) or blob[: len(cls._MAGIC)] != cls._MAGIC:
            raise EnvelopeError("not a privkit public bundle (bad magic)")
        off = len(cls._MAGIC)
        try:
            (hlen,) = struct.unpack("<I", blob[off : off + 4])
            header = json.loads(bytes(blob[off + 4 : off + 4 + hlen]))
            params = CKKSParams.from_dict(header["params"])
            sizes = {str(k): int(v) for k, v in header["blobs"].items()}
        except (struct.error, ValueError, KeyError, TypeError, ParameterError) as e:
            raise EnvelopeError(f"corrupt public bundle header: {e}") from e
        pos = off + 4 + hlen
        blobs = {}
        for k in sorted(sizes):
            blobs[k] = bytes(blob[pos : pos + sizes[k]])
            if len(blobs[k]) != sizes[k]:
                raise EnvelopeError(f"public bundle truncated inside {k!r}")
            pos += sizes[k]
        if pos != len(blob):
            raise EnvelopeError(f"public bundle has {len(blob) - pos} trailing bytes")
        if "secret_key" in blobs:
            raise EnvelopeError("refusing a public bundle that carries a secret key")
        if header["backend"] not in ("seal", "sim"):
            raise EnvelopeError(f"unknown backend {header['backend']!r} in public bundle")
        return cls(
            params, header["backend"], str(header["key_id"]), header["rotations"],
            bool(header["conjugation"]), blobs,
        )


class KeySet:
    """A client's keys: secret key (kept inside), public key, relinearisation and Galois keys."""

    def __init__(self, params: CKKSParams, backend: Backend, bundle: PublicBundle, secret: Any) -> None:
        self.params = params
        self.backend = backend
        self._bundle = bundle
        self._secret = secret

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
            be._has_secret = True
            bundle = PublicBundle(params, "sim", key_id, steps, conjugation, {})
            return cls(params, be, bundle, secret=None)
        if backend != "seal":
            raise ParameterError(f"backend must be 'seal' or 'sim', got {backend!r}")
        if noise_std:
            raise ParameterError("noise_std applies to the simulator only; SEAL has real noise")
        import tenseal.sealapi as sealapi

        from .seal import SealBackend, _context_for, seal_save

        ctx = _context_for(params).context
        keygen = sealapi.KeyGenerator(ctx)
        sk = keygen.secret_key()
        pk = sealapi.PublicKey()
        keygen.create_public_key(pk)
        rk = sealapi.RelinKeys()
        keygen.create_relin_keys(rk)
        elts = [galois_element(params, s) for s in steps] + (
            [2 * params.poly_degree - 1] if conjugation else []
        )
        gk = None
        blobs = {"public_key": seal_save(pk), "relin_keys": seal_save(rk)}
        if elts:
            gk = sealapi.GaloisKeys()
            keygen.create_galois_keys(sorted(set(elts)), gk)
            blobs["galois_keys"] = seal_save(gk)
        key_id = hashlib.sha256(blobs["public_key"]).hexdigest()[:32]
        be = SealBackend(params, key_id, pk, rk, gk, steps, conjugation)
        be._attach_secret(sk)
        bundle = PublicBundle(params, "seal", key_id, steps, conjugation, blobs)
        return cls(params, be, bundle, secret=sk)

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
        if self.backend.name == "sim":
            return self.key_id.encode()
        from .seal import seal_save

        return seal_save(self._secret)

    def ciphertext_from_bytes(self, blob: bytes) -> Ciphertext:
        return self.backend.deserialize_ciphertext(blob)

