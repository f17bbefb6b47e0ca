"""SealBackend: real CKKS encryption through TenSEAL's low-level ``sealapi`` (Microsoft SEAL).

This is the only module in privkit that imports TenSEAL: key generation, attaching a secret key
and (de)serialising keys happen here (:meth:`SealBackend.generate`,
:meth:`SealBackend.from_public_keys`, :meth:`SealBackend.attach_secret_bytes`), and
:mod:`privkit.fhe.keys` calls these methods. SEAL's own exceptions are wrapped in
:class:`privkit.errors.BackendError` (or a more specific privkit error) so that a message such
as "scale out of bounds" never reaches a user unexplained.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import tenseal.sealapi as sealapi

from ..errors import BackendError, EnvelopeError, ParameterError, SecretKeyRequiredError
from .backend import Backend, public_key_id
from .params import CKKSParams, galois_element
from .plain_cache import PlainCache

__all__ = ["SealBackend", "SealContext", "seal_save", "seal_load"]

# Serialisation goes through an anonymous in-memory file (Linux ``memfd_create``): sealapi only
# saves to / loads from a *path*, and a memfd has no name in any directory (not /tmp, not
# /dev/shm), lives in RAM, is reachable only through this process's descriptor table
# (/proc/self/fd/N) and disappears when closed. Its pages are overwritten with zeros before it is
# closed, so a secret key leaves no copy behind. Where memfd is unavailable (not Linux), a
# private temporary file is used and overwritten with zeros before it is unlinked.
_HAS_MEMFD = hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")


def _wipe_fd(fd: int) -> None:
    size = os.fstat(fd).st_size
    zeros = bytes(min(size, 1 << 20))
    pos = 0
    while pos < size:
        pos += os.pwrite(fd, zeros[: size - pos], pos)
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.ftruncate(fd, 0)


@contextlib.contextmanager
def _memfile() -> Iterator[tuple[int, str]]:
    """A file descriptor and a path SEAL can open, backed by memory where possible."""
    if _HAS_MEMFD:
        fd = os.memfd_create("privkit-seal", os.MFD_CLOEXEC)
        path = f"/proc/self/fd/{fd}"
        try:
            yield fd, path
        finally:
            try:
                _wipe_fd(fd)
            finally:
                os.close(fd)
        return
    fd, path = tempfile.mkstemp(prefix="privkit-")  # pragma: no cover - non-Linux fallback
    try:  # pragma: no cover
        yield fd, path
    finally:  # pragma: no cover
        try:
            _wipe_fd(fd)
        finally:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks, pos = [], 0
    while pos < size:
        b = os.pread(fd, size - pos, pos)
        if not b:
            break
        chunks.append(b)
        pos += len(b)
    return b"".join(chunks)


def seal_save(obj: Any) -> bytes:
    """Serialise a SEAL object (ciphertext, key, ...) to bytes, through memory only.

    sealapi saves to a path; the path given is an anonymous in-memory file (see above), wiped
    afterwards, so a secret key never reaches a filesystem.
    """
    with _memfile() as (fd, path):
        obj.save(path)
        return _read_all(fd)


def seal_load(cls: type, context: Any, blob: bytes) -> Any:
    """Inverse of :func:`seal_save`; SEAL validates the data against ``context``."""
    obj = cls()
    if not isinstance(blob, (bytes, bytearray, memoryview)) or len(blob) < 16:
        raise EnvelopeError(f"serialised {cls.__name__} is missing or too short")
    with _memfile() as (fd, path):
        view = memoryview(blob)
        pos = 0
        while pos < len(view):
            pos += os.pwrite(fd, view[pos:], pos)
        try:
            obj.load(context, path)
        except (ValueError, RuntimeError, TypeError, MemoryError) as e:
            raise EnvelopeError(f"SEAL refused the serialised {cls.__name__}: {e}") from e
    return obj


class SealContext:
    """A SEAL context for one parameter set, with the per-level parms ids and an encoder."""

    def __init__(self, params: CKKSParams) -> None:
        self.params = params
        parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
        parms.set_poly_modulus_degree(params.poly_degree)
        parms.set_coeff_modulus([sealapi.Modulus(q) for q in params.primes])
        level = sealapi.SEC_LEVEL_TYPE.TC128 if params.secure else sealapi.SEC_LEVEL_TYPE.NONE
        self.context = sealapi.SEALContext(parms, True, level)
        if not self.context.parameters_set():
            raise ParameterError(
                f"SEAL rejected the parameters {params.describe()}: "
                f"{self.context.parameters_error_message()}"
            )
        # parms id of each level (level = rescales left = SEAL's chain index)
        self.parms_ids: dict[int, Any] = {}
        cd = self.context.first_context_data()
        while cd is not None:
            self.parms_ids[cd.chain_index()] = cd.parms_id()
            cd = cd.next_context_data()
        if max(self.parms_ids) != params.depth:
            raise ParameterError(
                f"SEAL built {max(self.parms_ids)} levels but the parameters promise {params.depth}"
            )
        self.encoder = sealapi.CKKSEncoder(self.context)
        self.evaluator = sealapi.Evaluator(self.context)
        #: encoded plaintext operands (weights, masks) of every backend of these parameters
        self.plain_cache = PlainCache()


@functools.lru_cache(maxsize=8)
def _context_for(params: CKKSParams) -> SealContext:
    return SealContext(params)


def _wrap(op: str):
    def deco(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (ValueError, RuntimeError, TypeError) as e:
                raise BackendError(
                    f"SEAL refused {op}: {e}. This is a privkit bug if the inputs came from "
                    "privkit operators; please report it with the parameters used"
                ) from e

        return inner

    return deco


class SealBackend(Backend):
    """CKKS evaluation with SEAL. Holds public material only, unless a KeySet attaches a secret."""

    name = "seal"
    simulated = False

    def __init__(
        self,
        params: CKKSParams,
        key_id: str,
        public_key: Any,
        relin_keys: Any | None,
        galois_keys: Any | None,
        rotation_steps: frozenset[int] | set[int] | list[int],
        conjugation: bool,
    ) -> None:
        super().__init__(params, key_id, rotation_steps, conjugation)
        self.ctx = _context_for(params)
        self._encryptor = sealapi.Encryptor(self.ctx.context, public_key)
        self._relin = relin_keys
        self._galois = galois_keys
        self._decryptor: Any | None = None
        self._secret: Any | None = None

    # -- keys ----------------------------------------------------------------------------------
    @classmethod
    def generate(
        cls, params: CKKSParams, rotation_steps: list[int], conjugation: bool
    ) -> tuple[SealBackend, dict[str, bytes], dict[str, Any]]:
        """Fresh keys: ``(backend holding the secret, serialised public key, live key objects)``.

        The live objects (relinearisation and Galois keys) are serialised only on demand by the
        public bundle: at N=32768 the Galois keys are several GB.
        """
        ctx = _context_for(params).context
        keygen = sealapi.KeyGenerator(ctx)
        sk = keygen.secret_key()
        pk = sealapi.PublicKey()
        keygen.create_public_key(pk)
        rk = sealapi.RelinKeys()
        keygen.create_relin_keys(rk)
        elts = [galois_element(params, s) for s in rotation_steps] + (
            [2 * params.poly_degree - 1] if conjugation else []
        )
        gk = None
        blobs = {"public_key": seal_save(pk)}
        if elts:
            gk = sealapi.GaloisKeys()
            keygen.create_galois_keys(sorted(set(elts)), gk)
        be = cls(params, public_key_id(blobs["public_key"]), pk, rk, gk, rotation_steps, conjugation)
        be.attach_secret(sk)
        return be, blobs, {"relin_keys": rk, "galois_keys": gk}

    @classmethod
    def from_public_keys(
        cls,
        params: CKKSParams,
        key_id: str,
        blobs: dict[str, bytes],
        live: dict[str, Any],
        rotation_steps: frozenset[int] | set[int] | list[int] | tuple[int, ...],
        conjugation: bool,
    ) -> SealBackend:
        """An evaluation backend (public keys only) from serialised keys; a key in ``live``
        (an object of this process) is used as is instead of being deserialised."""
        ctx = _context_for(params).context
        pk = seal_load(sealapi.PublicKey, ctx, blobs["public_key"])
        rk = live.get("relin_keys") or seal_load(sealapi.RelinKeys, ctx, blobs["relin_keys"])
        gk = live.get("galois_keys")
        if gk is None and "galois_keys" in blobs:
            gk = seal_load(sealapi.GaloisKeys, ctx, blobs["galois_keys"])
        return cls(params, key_id, pk, rk, gk, rotation_steps, conjugation)

    @staticmethod
    def serialize_key(key: Any) -> bytes:
        """Bytes of a SEAL key object (through memory only, see :func:`seal_save`)."""
        return seal_save(key)

    def attach_secret(self, secret: Any = None) -> None:
        """Decrypt with ``secret`` (a ``sealapi.SecretKey``)."""
        if secret is None:
            raise ParameterError("a SEAL backend needs its secret key to decrypt")
        self._decryptor = sealapi.Decryptor(self.ctx.context, secret)
        self._secret = secret
        super().attach_secret(secret)

    def attach_secret_bytes(self, blob: bytes) -> None:
        """Load and attach a serialised secret key (check it with :meth:`secret_matches`)."""
        self.attach_secret(seal_load(sealapi.SecretKey, self.ctx.context, bytes(blob)))

    def secret_key_bytes(self) -> bytes:
        if self._secret is None:
            raise SecretKeyRequiredError("this backend holds no secret key")
        return seal_save(self._secret)

    # -- helpers -------------------------------------------------------------------------------
    def _zero(self, level: int, scale: float) -> Any:
        """A fresh public-key encryption of zero at ``level`` and ``scale``.

        SEAL refuses to produce a "transparent" ciphertext (all-zero, e.g. ``a - a`` or a product
        with an all-zero mask) because it would reveal its value; the mathematically right result
        is an encryption of zero, which is what privkit returns.
        """
        ct = sealapi.Ciphertext()
        self._encryptor.encrypt_zero(self.ctx.parms_ids[level], ct)
        ct.scale = scale
        return ct

    def _level_of(self, a: Any) -> int:
        return self.ctx.context.get_context_data(a.parms_id()).chain_index()

    def _guard(self, fn, a: Any, scale: float) -> Any:
        try:
            return fn()
        except (ValueError, RuntimeError) as e:
            if "transparent" in str(e):
                return self._zero(self._level_of(a), scale)
            raise

    def _encode(self, vec: np.ndarray | complex, level: int, scale: float) -> Any:
        pt = sealapi.Plaintext()
        pid = self.ctx.parms_ids[level]
        if isinstance(vec, np.ndarray):
            if np.any(vec.imag):
                self.ctx.encoder.encode(vec.tolist(), pid, scale, pt)
            else:
                self.ctx.encoder.encode(vec.real.tolist(), pid, scale, pt)
        else:
            if vec.imag:
                self.ctx.encoder.encode(complex(vec), pid, scale, pt)
            else:
                self.ctx.encoder.encode(float(vec.real), pid, scale, pt)
        return pt

    def _encode_operand(self, vec: np.ndarray | complex, level: int, scale: float) -> Any:
        """:meth:`_encode` for a plaintext operand of the evaluation (never a client's input),
        through the context's :class:`~privkit.fhe.plain_cache.PlainCache`."""
        if not isinstance(vec, np.ndarray):
            return self._encode(vec, level, scale)
        nbytes = self.params.poly_degree * (level + 1) * 8
        return self.ctx.plain_cache.get_or_make(vec, level, scale,
                                                lambda: self._encode(vec, level, scale), nbytes)

    # -- primitives ----------------------------------------------------------------------------
    @_wrap("encryption")
    def _encrypt_raw(self, vec: np.ndarray) -> Any:
        pt = self._encode(vec, self.params.depth, self.params.scale)
        ct = sealapi.Ciphertext()
        self._encryptor.encrypt(pt, ct)
        return ct

    @_wrap("decryption")
    def _decrypt_raw(self, data: Any, level: int) -> np.ndarray:
        pt = sealapi.Plaintext()
        self._decryptor.decrypt(data, pt)
        return np.asarray(self.ctx.encoder.decode_complex(pt), dtype=np.complex128)

    @_wrap("add")
    def _add_raw(self, a: Any, b: Any) -> Any:
        def run() -> Any:
            out = sealapi.Ciphertext()
            self.ctx.evaluator.add(a, b, out)
            return out

        return self._guard(run, a, a.scale)

    @_wrap("sub")
    def _sub_raw(self, a: Any, b: Any) -> Any:
        def run() -> Any:
            out = sealapi.Ciphertext()
            self.ctx.evaluator.sub(a, b, out)
            return out

        return self._guard(run, a, a.scale)

    @_wrap("negate")
    def _neg_raw(self, a: Any) -> Any:
        def run() -> Any:
            out = sealapi.Ciphertext()
            self.ctx.evaluator.negate(a, out)
            return out

        return self._guard(run, a, a.scale)

    @_wrap("add_plain")
    def _add_plain_raw(self, a: Any, vec: np.ndarray, level: int, scale: float) -> Any:
        def run() -> Any:
            out = sealapi.Ciphertext()
            self.ctx.evaluator.add_plain(a, self._encode_operand(vec, level, scale), out)
            return out

        return self._guard(run, a, a.scale)

    @_wrap("multiply_plain")
    def _mul_plain_raw(self, a: Any, vec: Any, level: int, pt_scale: float) -> Any:
        def run() -> Any:
            out = sealapi.Ciphertext()
            self.ctx.evaluator.multiply_plain(a, self._encode_operand(vec, level, pt_scale), out)
            return out

        return self._guard(run, a, a.scale * pt_scale)

    @_wrap("multiply")
    def _mul_raw(self, a: Any, b: Any) -> Any:
        def run() -> Any:
            out = sealapi.Ciphertext()
            self.ctx.evaluator.multiply(a, b, out)
            self.ctx.evaluator.relinearize_inplace(out, self._relin)
            return out

        return self._guard(run, a, a.scale * b.scale)

    @_wrap("square")
    def _square_raw(self, a: Any) -> Any:
        def run() -> Any:
            out = sealapi.Ciphertext()
            self.ctx.evaluator.square(a, out)
            self.ctx.evaluator.relinearize_inplace(out, self._relin)
            return out

        return self._guard(run, a, a.scale * a.scale)

    @_wrap("rescale")
    def _rescale_raw(self, a: Any, level: int) -> Any:
        self.ctx.evaluator.rescale_to_next_inplace(a)
        return a

    def _force_scale_raw(self, a: Any, true_scale: float, declared: float) -> Any:
        a.scale = declared
        return a

    @_wrap("modulus switch")
    def _mod_switch_raw(self, a: Any, from_level: int, to_level: int) -> Any:
        out = sealapi.Ciphertext()
        self.ctx.evaluator.mod_switch_to(a, self.ctx.parms_ids[to_level], out)
        return out

    @_wrap("rotation")
    def _rotate_raw(self, a: Any, step: int) -> Any:
        def run() -> Any:
            out = sealapi.Ciphertext()
            self.ctx.evaluator.rotate_vector(a, int(step), self._galois, out)
            return out

        return self._guard(run, a, a.scale)

    @_wrap("conjugation")
    def _conjugate_raw(self, a: Any) -> Any:
        def run() -> Any:
            out = sealapi.Ciphertext()
            self.ctx.evaluator.complex_conjugate(a, self._galois, out)
            return out

        return self._guard(run, a, a.scale)

    def _serialize_raw(self, a: Any) -> bytes:
        return seal_save(a)

    def _deserialize_raw(self, blob: bytes, level: int) -> Any:
        ct = seal_load(sealapi.Ciphertext, self.ctx.context, blob)
        if ct.parms_id() != self.ctx.parms_ids[level]:
            raise EnvelopeError("ciphertext data does not match the level in its header")
        if abs(ct.scale - self.params.scale) > 1e-6 * self.params.scale:
            raise EnvelopeError(f"ciphertext has scale {ct.scale}, expected {self.params.scale}")
        return ct
