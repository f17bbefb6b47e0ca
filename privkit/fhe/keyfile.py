"""Sealed key files: a :class:`~privkit.fhe.keys.KeySet` encrypted under a password.

A client keeps its CKKS secret key on disk for months; this module makes sure it is never there
in the clear. ``keys.save(path, password=...)`` writes::

    magic     8 bytes   b"\\x89PKKEY\\r\\n"
    version   u16 LE    format version (1)
    hlen      u32 LE    header length
    header    hlen      canonical JSON: KDF name, cost and salt, password check, nonce prefix,
                        chunk size, payload length, and the public facts of the key set
                        (backend, parameter set and its fingerprint, key id, rotation steps)
    checksum  32 bytes  SHA-256 of everything above (tells header damage from a wrong password)
    body                AES-256-GCM ciphertext of the key set, in chunks

* **Key derivation**: scrypt (``n=2**17, r=8, p=1`` by default: 128 MiB and about 0.2-1 s per
  derivation, OWASP's minimum for scrypt) or Argon2id (``kdf=Argon2idKDF()``, RFC 9106's
  second recommended setting, t=3, 64 MiB, 4 lanes; needs ``cryptography`` >= 44), with a random
  16-byte salt. The derived master key is split with HKDF-SHA256 into the AES-256 key and a
  16-byte *password check* stored in the header (the GCM tag is already an equally good offline
  test of a password guess, so the check weakens nothing; the KDF cost is what slows guessing).
* **Encryption**: AES-256-GCM (``cryptography``). GCM in ``cryptography`` takes at most
  2**31 - 1 bytes per call and a key set with all Galois keys at N=32768 is larger, so the body is
  split into chunks of ``chunk_size`` bytes (4 MiB by default), each sealed with the nonce
  ``prefix (7 random bytes) || chunk index (u32 BE) || last-chunk flag (1 byte)`` (the layout of
  Tink's streaming AEAD): chunks cannot be reordered, dropped or the file cut at a chunk boundary
  without detection. The whole header block (prefix, header, checksum) is the associated data of
  every chunk, so the parameter set and key id it states are bound to the encrypted keys.
* **Errors** (:class:`~privkit.errors.KeyFileError`, with a ``reason`` attribute): ``"missing"``,
  ``"not-a-key-file"``, ``"version"``, ``"truncated"``, ``"appended"``, ``"header"`` (damaged
  header: checksum or content), ``"password-required"``, ``"wrong-password"`` (the password check
  does not match), ``"corrupted"`` (the password is right but a chunk fails authentication: the
  body was damaged or tampered with), ``"kdf-unavailable"``, ``"mismatch"``.
* **Writing** is atomic (temporary file in the same folder, fsync, rename) with 0600 permissions.
* Without a password, ``insecure_plaintext=True`` writes the key set unencrypted (with a SHA-256
  of the body in the header, to catch corruption) and issues :class:`InsecureKeyFileWarning`;
  loading such a file is refused (:class:`~privkit.errors.SecurityDowngradeError`) unless
  ``allow_plaintext=True`` is passed, and then warns again.

>>> import tempfile, os
>>> from privkit.fhe import KeySet
>>> keys = KeySet.generate("n8192", backend="sim", rotations=[1])
>>> path = os.path.join(tempfile.mkdtemp(), "client.keys")
>>> keys.save(path, password="correct horse", kdf=ScryptKDF(n=2**12))
>>> KeySet.load(path, password="correct horse").key_id == keys.key_id
True
>>> oct(os.stat(path).st_mode & 0o777)
'0o600'
>>> KeySet.load(path, password="wrong")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
privkit.errors.KeyFileError: wrong password for key file ...: the key derived from it does not match the file's password check
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import secrets
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..envelope import MAGIC as ENVELOPE_MAGIC
from ..envelope import PREFIX, PrefixFormat, atomic_write_bytes, read_prefix
from ..errors import (
    BackendError,
    EnvelopeError,
    InsecureKeyFileWarning,  # re-exported: defined in privkit.errors
    KeyFileError,  # noqa: F401  (re-exported: keyfile errors are KeyFileError)
    KeyMismatchError,
    ParameterError,
    SecurityDowngradeError,
)
from .kdf import (  # re-exported: the key derivation of sealed key files
    _CHECK_LEN,
    KDF,
    Argon2idKDF,
    ScryptKDF,
    _fail,
    _kdf_from_dict,
    _password_bytes,
    _split_master,
    argon2id_available,
)
from .params import CKKSParams

if TYPE_CHECKING:  # pragma: no cover
    from .keys import KeySet

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "Argon2idKDF",
    "InsecureKeyFileWarning",
    "KeyFileInfo",
    "ScryptKDF",
    "argon2id_available",
    "load_keyset",
    "open_keyset",
    "read_header",
    "save_keyset",
    "seal_keyset",
]

MAGIC = b"\x89PKKEY\r\n"
FORMAT_VERSION = 1
DEFAULT_CHUNK = 4 << 20

_PREFIX = PREFIX  # magic, version, header length: shared with privkit.envelope
_CHECKSUM_LEN = 32
_TAG_LEN = 16
_MAX_HEADER = 1 << 20
_SALT_LEN = 16
_NONCE_PREFIX_LEN = 7
_PAYLOAD_MAGIC = b"PKKS"


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">I", index) + (b"\x01" if last else b"\x00")


def _n_chunks(payload_len: int, chunk: int) -> int:
    return max(1, -(-payload_len // chunk))


# -- payload (the key set, in the clear, only ever in memory) -----------------------------------
def _keyset_payload(keys: KeySet) -> bytes:
    secret = keys.secret_key_bytes()
    bundle = keys.public_bundle().to_bytes()
    return _PAYLOAD_MAGIC + struct.pack("<Q", len(secret)) + secret + bundle


def _keyset_from_payload(payload: bytes) -> KeySet:
    from .keys import KeySet, PublicBundle

    if payload[:4] != _PAYLOAD_MAGIC or len(payload) < 12:
        raise ValueError("bad payload magic")
    (slen,) = struct.unpack_from("<Q", payload, 4)
    if 12 + slen > len(payload):
        raise ValueError("secret key runs past the payload")
    secret = payload[12 : 12 + slen]
    bundle = PublicBundle.from_bytes(payload[12 + slen :])
    return KeySet.from_parts(bundle, secret)


# -- header --------------------------------------------------------------------------------------
def _public_facts(keys: KeySet) -> dict[str, Any]:
    bundle = keys.public_bundle()
    return {
        "backend": bundle.backend_name,
        "params": keys.params.to_dict(),
        "params_fingerprint": keys.params.fingerprint(),
        "key_id": keys.key_id,
        "rotations": sorted(int(s) for s in bundle.rotation_steps),
        "conjugation": bool(bundle.conjugation),
        "public_sizes": bundle.sizes(),
    }


def _header_block(header: dict[str, Any]) -> bytes:
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    head = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(raw)) + raw
    return head + hashlib.sha256(head).digest()


@dataclasses.dataclass(frozen=True)
class KeyFileInfo:
    """What a key file says about itself without being decrypted (never secrets)."""

    version: int
    protection: str  # "aes-256-gcm" or "none"
    kdf: str | None  # e.g. "scrypt n=2^17 r=8 p=1 (128 MiB)"
    backend: str
    params: CKKSParams
    params_fingerprint: str
    key_id: str
    rotations: tuple[int, ...]
    conjugation: bool
    payload_len: int
    body_len: int
    file_len: int
    public_sizes: dict[str, int]

    @property
    def fingerprint(self) -> str:
        """The key fingerprint of :func:`privkit.fhe.envelope.key_fingerprint`."""
        return f"{self.params_fingerprint}/{self.key_id}"


def _prefix_format(where: str) -> PrefixFormat:
    return PrefixFormat(
        MAGIC,
        FORMAT_VERSION,
        _MAX_HEADER,
        "key file",
        f"key file {where}",
        _fail,
        reasons={"bad-magic": "not-a-key-file", "header-length": "header"},
        foreign={
            ENVELOPE_MAGIC: (
                "not-a-key-file",
                (
                    f"{where} is a privkit envelope (public bundle, ciphertext, ...), not a key "
                    "file; inspect it with `privkit keys inspect`"
                ),
            )
        },
    )


def _parse(blob: bytes, where: str) -> tuple[dict[str, Any], bytes, KeyFileInfo]:
    """Validate prefix, header checksum, header fields and body length."""
    n = len(blob)
    version, hend = read_prefix(blob, _prefix_format(where), trailer=_CHECKSUM_LEN)
    block = bytes(blob[: hend + _CHECKSUM_LEN])
    if not hmac.compare_digest(hashlib.sha256(block[:hend]).digest(), block[hend:]):
        raise _fail(
            "header",
            f"key file {where} has a damaged header (checksum mismatch); restore it from a backup",
        )
    try:
        h = json.loads(block[_PREFIX.size : hend])
        if not isinstance(h, dict):
            raise TypeError("header is not an object")
        protection = h["protection"]
        plen, chunk = h["payload_len"], h["chunk_size"]
        if (
            type(plen) is not int
            or plen < 0
            or type(chunk) is not int
            or not 1024 <= chunk <= 1 << 30
        ):
            raise ValueError("payload_len or chunk_size out of range")
        if protection == "aes-256-gcm":
            kdf = _kdf_from_dict(h["kdf"])
            if not all(isinstance(h[k], str) for k in ("salt", "nonce_prefix", "password_check")):
                raise TypeError("salt, nonce_prefix and password_check must be hex strings")
            if len(bytes.fromhex(h["salt"])) != _SALT_LEN:
                raise ValueError("salt length")
            if len(bytes.fromhex(h["nonce_prefix"])) != _NONCE_PREFIX_LEN:
                raise ValueError("nonce prefix length")
            if len(bytes.fromhex(h["password_check"])) != _CHECK_LEN:
                raise ValueError("password check length")
            body_len = plen + _TAG_LEN * _n_chunks(plen, chunk)
            kdf_desc: str | None = kdf.describe()
        elif protection == "none":
            if not isinstance(h["payload_sha256"], str) or len(bytes.fromhex(h["payload_sha256"])) != 32:
                raise ValueError("payload digest length")
            body_len, kdf_desc = plen, None
        else:
            raise ValueError(f"unknown protection {protection!r}")
        backend, key_id, pfp = h["backend"], h["key_id"], h["params_fingerprint"]
        if backend not in ("seal", "sim"):
            raise ValueError(f"unknown backend {str(backend)[:32]!r}")
        for what, v in (("key_id", key_id), ("params_fingerprint", pfp)):
            if not isinstance(v, str) or not 0 < len(v) <= 128 or not v.isascii():
                raise TypeError(f"{what} must be a short ASCII string")
        rotations, conj, sizes = h["rotations"], h["conjugation"], h["public_sizes"]
        if not isinstance(rotations, list) or len(rotations) > 1 << 15:
            raise TypeError("rotations must be a list of integers")
        if any(type(r) is not int or abs(r) >= 1 << 15 for r in rotations):
            raise ValueError("rotation steps must be integers below 2**15 in magnitude")
        if type(conj) is not bool:
            raise TypeError(f"conjugation must be true or false, got {conj!r}")
        if not isinstance(sizes, dict) or any(
            not isinstance(k, str) or type(v) is not int or v < 0 for k, v in sizes.items()
        ):
            raise TypeError("public_sizes must map names to non-negative integers")
        info = KeyFileInfo(
            version=version,
            protection=protection,
            kdf=kdf_desc,
            backend=backend,
            params=CKKSParams.from_dict(h["params"]),
            params_fingerprint=pfp,
            key_id=key_id,
            rotations=tuple(rotations),
            conjugation=conj,
            payload_len=plen,
            body_len=body_len,
            file_len=n,
            public_sizes=dict(sizes),
        )
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError, ParameterError) as e:
        raise _fail("header", f"key file {where} has an invalid header: {e}") from None
    body_at = hend + _CHECKSUM_LEN
    if n < body_at + body_len:
        raise _fail(
            "truncated",
            f"key file {where} is truncated: {n} of {body_at + body_len} bytes (the write or copy "
            "was cut short); restore it from a backup",
        )
    if n > body_at + body_len:
        raise _fail(
            "appended",
            f"key file {where} has {n - body_at - body_len} unexpected bytes after its end",
        )
    return h, block, info


def read_header(source: str | os.PathLike | bytes) -> KeyFileInfo:
    """Describe a key file (path or bytes) without decrypting it: never reveals secrets.

    Validates the structure (magic, version, header checksum, length) and raises
    :class:`~privkit.errors.KeyFileError` like :func:`load_keyset` does for those.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _parse(bytes(source), "<bytes>")[2]
    return _parse(_read(source), repr(str(source)))[2]


def _read(path: str | os.PathLike) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise _fail("missing", f"no key file at {str(path)!r}") from None
    except OSError as e:
        raise _fail("missing", f"cannot read key file {str(path)!r}: {e}") from e


# -- seal / open ---------------------------------------------------------------------------------
def seal_keyset(
    keys: KeySet,
    password: str | bytes | None = None,
    *,
    insecure_plaintext: bool = False,
    kdf: KDF | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> Iterator[bytes]:
    """The bytes of a key file, as chunks (what :func:`save_keyset` writes)."""
    from .keys import KeySet

    if not isinstance(keys, KeySet):
        raise ParameterError(f"expected a KeySet, got {type(keys).__name__}")
    if password is None and not insecure_plaintext:
        raise ParameterError(
            "refusing to write a secret key without a password: pass password=... (or, for "
            "throw-away test keys only, insecure_plaintext=True)"
        )
    if password is not None and insecure_plaintext:
        raise ParameterError("pass either a password or insecure_plaintext=True, not both")
    if type(chunk_size) is not int or not 1024 <= chunk_size <= 1 << 30:
        raise ParameterError(f"chunk_size must be in [1 KiB, 1 GiB], got {chunk_size!r}")
    payload = _keyset_payload(keys)
    header = {"format": "privkit-keyset", "payload_len": len(payload), "chunk_size": chunk_size}
    header.update(_public_facts(keys))
    if password is None:
        warnings.warn(
            "writing a CKKS secret key WITHOUT encryption (insecure_plaintext=True); anyone who "
            "can read the file can decrypt everything encrypted under these keys",
            InsecureKeyFileWarning,
            stacklevel=3,
        )
        header.update(protection="none", payload_sha256=hashlib.sha256(payload).hexdigest())
        return iter([_header_block(header), payload])
    pw = _password_bytes(password)
    kdf = ScryptKDF() if kdf is None else kdf
    if not isinstance(kdf, (ScryptKDF, Argon2idKDF)):
        raise ParameterError(f"kdf must be ScryptKDF(...) or Argon2idKDF(...), got {kdf!r}")
    salt = secrets.token_bytes(_SALT_LEN)
    prefix = secrets.token_bytes(_NONCE_PREFIX_LEN)
    key, check = _split_master(kdf.derive(pw, salt), salt)
    header.update(
        protection="aes-256-gcm",
        kdf=kdf.to_dict(),
        salt=salt.hex(),
        nonce_prefix=prefix.hex(),
        password_check=check.hex(),
    )
    block = _header_block(header)
    return _encrypt_chunks(block, payload, key, prefix, chunk_size)


def _encrypt_chunks(
    block: bytes, payload: bytes, key: bytes, prefix: bytes, chunk: int
) -> Iterator[bytes]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(key)
    yield block
    total = _n_chunks(len(payload), chunk)
    view = memoryview(payload)
    for i in range(total):
        yield aead.encrypt(
            _nonce(prefix, i, i == total - 1), view[i * chunk : (i + 1) * chunk], block
        )


def open_keyset(
    blob: bytes, password: str | bytes | None = None, *, where: str = "<bytes>",
    allow_plaintext: bool = False,
) -> KeySet:
    """Inverse of :func:`seal_keyset` on the file's bytes.

    An unencrypted key file is refused (:class:`~privkit.errors.SecurityDowngradeError`) unless
    ``allow_plaintext=True``, whether or not a password was given.
    """
    if type(allow_plaintext) is not bool:
        raise ParameterError(f"allow_plaintext must be True or False, got {allow_plaintext!r}")
    h, block, info = _parse(blob, where)
    body = memoryview(blob)[len(block) :]
    if info.protection == "none" and not allow_plaintext:
        raise SecurityDowngradeError(
            f"key file {where} is NOT encrypted (written with insecure_plaintext=True); anyone "
            "could have written the keys in it. Refusing it; pass allow_plaintext=True to load "
            "it anyway (throw-away test keys only), then re-save it with a password"
        )
    if info.protection == "none":
        if not hmac.compare_digest(hashlib.sha256(body).hexdigest(), h["payload_sha256"]):
            raise _fail(
                "corrupted",
                f"unencrypted key file {where} is corrupted (payload checksum mismatch)",
            )
        warnings.warn(
            f"key file {where} is NOT encrypted (written with insecure_plaintext=True); re-save "
            "it with a password",
            InsecureKeyFileWarning,
            stacklevel=3,
        )
        payload = bytes(body)
    else:
        if password is None:
            raise _fail(
                "password-required",
                f"key file {where} is password-protected ({info.kdf}); pass password=...",
            )
        pw = _password_bytes(password)
        salt = bytes.fromhex(h["salt"])
        key, check = _split_master(_kdf_from_dict(h["kdf"]).derive(pw, salt), salt)
        if not hmac.compare_digest(check, bytes.fromhex(h["password_check"])):
            raise _fail(
                "wrong-password",
                f"wrong password for key file {where}: the key derived from it does not match the "
                "file's password check",
            )
        payload = _decrypt_chunks(
            block,
            body,
            key,
            bytes.fromhex(h["nonce_prefix"]),
            h["chunk_size"],
            info.payload_len,
            where,
        )
    try:
        keys = _keyset_from_payload(payload)
    except (
        ValueError,
        struct.error,
        EnvelopeError,
        KeyMismatchError,
        ParameterError,
        BackendError,
    ) as e:
        raise _fail("corrupted", f"key file {where} holds an unreadable key set: {e}") from e
    if (
        keys.key_id != info.key_id
        or keys.params.fingerprint() != info.params_fingerprint
        or keys.public_bundle().backend_name != info.backend
    ):
        raise _fail(
            "mismatch",
            f"key file {where}: the keys inside ({keys.key_id[:16]}, params "
            f"{keys.params.fingerprint()}) differ from what the header states ({info.key_id[:16]}, "
            f"params {info.params_fingerprint})",
        )
    return keys


def _decrypt_chunks(
    block: bytes,
    body: memoryview,
    key: bytes,
    prefix: bytes,
    chunk: int,
    payload_len: int,
    where: str,
) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(key)
    total = _n_chunks(payload_len, chunk)
    out = []
    pos = 0
    for i in range(total):
        size = min(chunk, payload_len - i * chunk) + _TAG_LEN
        try:
            out.append(
                aead.decrypt(_nonce(prefix, i, i == total - 1), body[pos : pos + size], block)
            )
        except InvalidTag:
            raise _fail(
                "corrupted",
                f"key file {where} is corrupted or was tampered with: chunk {i + 1} of {total} "
                "fails authentication although the password is right; restore it from a backup",
            ) from None
        pos += size
    return b"".join(out)


def save_keyset(
    keys: KeySet,
    path: str | os.PathLike,
    password: str | bytes | None = None,
    *,
    insecure_plaintext: bool = False,
    kdf: KDF | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> None:
    """Seal ``keys`` under ``password`` and write them atomically to ``path`` (mode 0600)."""
    chunks = seal_keyset(
        keys, password, insecure_plaintext=insecure_plaintext, kdf=kdf, chunk_size=chunk_size
    )
    atomic_write_bytes(Path(path), chunks, mode=0o600)


def load_keyset(path: str | os.PathLike, password: str | bytes | None = None, *,
                allow_plaintext: bool = False) -> KeySet:
    """Read and unseal a key file; :class:`~privkit.errors.KeyFileError` says what is wrong.

    Unencrypted key files need ``allow_plaintext=True`` (see :func:`open_keyset`).
    """
    return open_keyset(_read(path), password, where=repr(str(path)), allow_plaintext=allow_plaintext)
