"""Authenticated envelopes: one serialised form for everything that travels.

Public bundles, ciphertexts, program results, model checkpoints and anonymised datasets leave the
machine that made them as *envelopes*::

    magic    8 bytes   b"\\x89PKENV\\r\\n"   (PNG-style: catches text-mode transfer damage)
    version  u16 LE    format version (1)
    hlen     u32 LE    header length
    header   hlen      canonical JSON: kind, fingerprint, payload_len, meta, tag, signer
    payload  payload_len bytes
    digest   32 bytes  SHA-256 of everything above
    sig      64 bytes  (signed envelopes only) Ed25519 over b"privkit-envelope-v1\\0" + digest

The SHA-256 digest covers the header and the payload, so any accidental change (a flipped bit,
a truncated download, appended bytes) is refused with :class:`~privkit.errors.EnvelopeError`
before anything reads the payload. This matters for ciphertexts: SEAL does not authenticate a
serialised ciphertext, and a damaged one would otherwise decrypt to garbage silently. A digest
alone does not stop a deliberate swap (anyone can recompute it); for that, sign with an Ed25519
key (``sign_with=``) and check with the owner's public key (``verify_with=``).

Ciphertext and result envelopes carry the *key fingerprint* of the key set they were made under
(``"<params fingerprint>/<key id>"``, see :func:`key_fingerprint`), and the typed unpackers refuse
one made under other parameters or another key set with
:class:`~privkit.errors.KeyMismatchError` naming both fingerprints, before any computation.

Every error raised here carries a ``reason`` attribute (``"format"``, ``"version"``,
``"truncated"``, ``"appended"``, ``"integrity"``, ``"signature"``, ``"kind"``, ``"fingerprint"``,
``"payload"``) so that callers can tell the cases apart without parsing messages.

>>> from privkit.fhe import KeySet
>>> keys = KeySet.generate("n8192", backend="sim", rotations=[])
>>> blob = pack_ciphertext(keys.encrypt([1.0, 2.0]))
>>> open_envelope(blob).kind
'ciphertext'
>>> keys.decrypt(unpack_ciphertext(blob, keys)).round(6).tolist()
[1.0, 2.0]
>>> other = KeySet.generate("n8192", backend="sim", rotations=[])
>>> unpack_ciphertext(blob, other.public_bundle())  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
privkit.errors.KeyMismatchError: ciphertext envelope was made under key set ... but the target holds ...
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import io
import json
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import EnvelopeError, KeyMismatchError, ParameterError, PrivkitError

if TYPE_CHECKING:  # pragma: no cover
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from .backend import Backend, Ciphertext
    from .keys import KeySet, PublicBundle

__all__ = [
    "FORMAT_VERSION",
    "KINDS",
    "MAGIC",
    "Envelope",
    "generate_signing_key",
    "is_envelope",
    "key_fingerprint",
    "open_envelope",
    "pack_ciphertext",
    "pack_ciphertexts",
    "pack_dataset",
    "pack_public_bundle",
    "read_envelope",
    "seal_envelope",
    "signer_id",
    "unpack_ciphertext",
    "unpack_ciphertexts",
    "unpack_dataset",
    "unpack_public_bundle",
    "write_envelope",
]

MAGIC = b"\x89PKENV\r\n"
FORMAT_VERSION = 1
#: the kinds of artefact an envelope can hold
KINDS = ("public-bundle", "ciphertext", "result", "model", "dataset", "program", "client-spec")

_PREFIX = struct.Struct("<8sHI")
_DIGEST_LEN = 32
_SIG_LEN = 64
_MAX_HEADER = 1 << 20
_MAX_FINGERPRINT = 256
_SIG_CONTEXT = b"privkit-envelope-v1\x00"
_TAGS = {"sha256": _DIGEST_LEN, "sha256+ed25519": _DIGEST_LEN + _SIG_LEN}
# other privkit formats, recognised to give a useful message
_KEYFILE_MAGIC = b"\x89PKKEY\r\n"
_RAW_BUNDLE_MAGIC = b"PKBUNDLE"
_RAW_CT_MAGIC = b"PKCT"


def _fail(reason: str, message: str, cls: type[PrivkitError] = EnvelopeError) -> PrivkitError:
    err = cls(message)
    err.reason = reason  # type: ignore[attr-defined]
    return err


@dataclasses.dataclass(frozen=True)
class Envelope:
    """An opened (integrity-checked) envelope.

    Attributes:
        kind: one of :data:`KINDS`.
        version: the envelope format version.
        fingerprint: what the payload is bound to (key fingerprint, model kind, ...).
        payload: the bytes inside.
        meta: small JSON metadata (counts, model kind, ...), covered by the digest.
        digest: hex SHA-256 over header and payload.
        signer: hex of the signer's raw Ed25519 public key, or ``None`` for an unsigned envelope.
        verified: True when the signature was checked against the key passed as ``verify_with``
            (a signed envelope opened without ``verify_with`` has a valid signature by
            ``signer``, but nobody vouched for that key: ``verified`` is False).
        size: bytes of the whole envelope.
    """

    kind: str
    version: int
    fingerprint: str
    payload: bytes
    meta: dict[str, Any]
    digest: str
    signer: str | None
    verified: bool
    size: int

    @property
    def overhead(self) -> int:
        """Bytes the envelope adds around the payload (prefix, header, digest, signature)."""
        return self.size - len(self.payload)


# -- signing keys --------------------------------------------------------------------------------
def generate_signing_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 private key (keep it secret; hand out ``key.public_key()``)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def _raw_public(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    if isinstance(key, Ed25519PublicKey):
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if isinstance(key, (bytes, bytearray)) and len(key) == 32:
        return bytes(key)
    raise ParameterError(
        "expected an Ed25519 public key (cryptography's Ed25519PublicKey or its 32 raw bytes), "
        f"got {type(key).__name__}"
    )


def signer_id(key: Ed25519PublicKey | Ed25519PrivateKey | bytes) -> str:
    """Hex of the raw Ed25519 public key: how envelopes name their signer."""
    return _raw_public(key).hex()


# -- core ----------------------------------------------------------------------------------------
def _check_kind(kind: Any) -> str:
    if kind not in KINDS:
        raise ParameterError(f"envelope kind must be one of {KINDS}, got {kind!r}")
    return kind


def seal_envelope(
    kind: str,
    payload: bytes,
    fingerprint: str,
    *,
    meta: Mapping[str, Any] | None = None,
    sign_with: Ed25519PrivateKey | None = None,
) -> bytes:
    """Wrap ``payload`` in an envelope of ``kind`` bound to ``fingerprint``.

    Args:
        kind: one of :data:`KINDS`.
        payload: the serialised artefact.
        fingerprint: what the payload is bound to (an ASCII string of at most 256 characters);
            :func:`open_envelope` can require it (``expected_fingerprint=``).
        meta: small JSON-serialisable metadata, covered by the digest (and the signature).
        sign_with: an Ed25519 private key; the envelope then carries a signature by it.
    """
    _check_kind(kind)
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise ParameterError(f"payload must be bytes, got {type(payload).__name__}")
    if (
        not isinstance(fingerprint, str)
        or not fingerprint.isascii()
        or not 0 < len(fingerprint) <= _MAX_FINGERPRINT
    ):
        raise ParameterError(
            f"fingerprint must be a non-empty ASCII string of at most {_MAX_FINGERPRINT} "
            f"characters, got {fingerprint!r}"
        )
    signer = None
    if sign_with is not None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        if not isinstance(sign_with, Ed25519PrivateKey):
            raise ParameterError(
                f"sign_with must be an Ed25519PrivateKey, got {type(sign_with).__name__}"
            )
        signer = signer_id(sign_with)
    payload = bytes(payload)
    try:
        header = json.dumps(
            {
                "kind": kind,
                "fingerprint": fingerprint,
                "payload_len": len(payload),
                "meta": dict(meta or {}),
                "tag": "sha256+ed25519" if signer else "sha256",
                "signer": signer,
            },
            sort_keys=True,
            separators=(",", ":"),
            allow_nan=False,
        ).encode()
    except (TypeError, ValueError) as e:
        raise ParameterError(f"envelope meta must be JSON-serialisable: {e}") from e
    if len(header) > _MAX_HEADER:
        raise ParameterError(f"envelope meta too large ({len(header)} bytes of header)")
    head = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)) + header
    h = hashlib.sha256(head)
    h.update(payload)
    digest = h.digest()
    parts = [head, payload, digest]
    if sign_with is not None:
        parts.append(sign_with.sign(_SIG_CONTEXT + digest))
    return b"".join(parts)


def is_envelope(blob: bytes | bytearray | memoryview) -> bool:
    """True when ``blob`` starts with the envelope magic (says nothing about its integrity)."""
    return bytes(blob[: len(MAGIC)]) == MAGIC


def _parse_header(blob: bytes | bytearray | memoryview) -> tuple[dict[str, Any], int]:
    """Validate the prefix and header; returns (header, offset of the payload)."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise _fail("format", f"an envelope must be bytes, got {type(blob).__name__}")
    n = len(blob)
    start = bytes(blob[: len(MAGIC)])
    if start != MAGIC:
        if n < len(MAGIC) and MAGIC.startswith(start) and n > 0:
            raise _fail("truncated", f"envelope truncated: only {n} bytes")
        if start == _KEYFILE_MAGIC:
            raise _fail(
                "format",
                "this is a sealed privkit key file, not an envelope; open it with KeySet.load",
            )
        if start == _RAW_BUNDLE_MAGIC or start[:4] == _RAW_CT_MAGIC:
            raise _fail(
                "format",
                "this is a raw privkit object (to_bytes), not an envelope; raw objects carry no "
                "integrity tag: send pack_public_bundle/pack_ciphertext output instead",
            )
        raise _fail("format", "not a privkit envelope (bad magic)")
    if n < _PREFIX.size:
        raise _fail("truncated", f"envelope truncated inside its prefix ({n} bytes)")
    _, version, hlen = _PREFIX.unpack(bytes(blob[: _PREFIX.size]))
    if version != FORMAT_VERSION:
        raise _fail(
            "version",
            f"envelope format version {version} is not supported (this privkit reads version "
            f"{FORMAT_VERSION}); the file is damaged or was written by a newer privkit",
        )
    if hlen > _MAX_HEADER:
        raise _fail(
            "format", f"envelope header length {hlen} is implausible: the envelope is damaged"
        )
    end = _PREFIX.size + hlen
    if n < end:
        raise _fail(
            "truncated", f"envelope truncated inside its header ({n} of at least {end} bytes)"
        )
    try:
        header = json.loads(bytes(blob[_PREFIX.size : end]))
        if not isinstance(header, dict):
            raise TypeError("header is not an object")
        kind, fp, plen = header["kind"], header["fingerprint"], header["payload_len"]
        tag, signer, meta = header["tag"], header["signer"], header["meta"]
        if not isinstance(kind, str) or not isinstance(fp, str) or not isinstance(meta, dict):
            raise TypeError("kind, fingerprint or meta has the wrong type")
        if type(plen) is not int or plen < 0:
            raise ValueError(f"payload_len {plen!r}")
        if tag not in _TAGS:
            raise ValueError(f"unknown tag {tag!r}")
        if (tag == "sha256") != (signer is None):
            raise ValueError("tag and signer disagree")
        if signer is not None and (not isinstance(signer, str) or len(signer) != 64):
            raise ValueError("malformed signer")
        if signer is not None:
            bytes.fromhex(signer)
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise _fail("format", f"corrupt envelope header: {e}") from None
    return header, end


def open_envelope(
    blob: bytes | bytearray | memoryview,
    expected_kind: str | Sequence[str] | None = None,
    expected_fingerprint: str | None = None,
    *,
    verify_with: Ed25519PublicKey | bytes | None = None,
) -> Envelope:
    """Check an envelope and return its contents.

    Checks, in order: magic and version, header, exact length (truncated / appended bytes), the
    SHA-256 digest, the signature (when the envelope is signed, and required when
    ``verify_with`` is given), the kind, the fingerprint. Everything but the fingerprint raises
    :class:`~privkit.errors.EnvelopeError`; a fingerprint other than ``expected_fingerprint``
    raises :class:`~privkit.errors.KeyMismatchError` naming both.

    Args:
        blob: the envelope bytes.
        expected_kind: a kind (or several) the caller accepts; ``None`` accepts any.
        expected_fingerprint: the fingerprint the payload must be bound to; ``None``: any.
        verify_with: the Ed25519 public key (or its 32 raw bytes) that must have signed it.
    """
    header, off = _parse_header(blob)
    plen = header["payload_len"]
    taglen = _TAGS[header["tag"]]
    total = off + plen + taglen
    if len(blob) < total:
        raise _fail(
            "truncated",
            f"envelope truncated: {len(blob)} of {total} bytes (the transfer was cut short)",
        )
    if len(blob) > total:
        raise _fail(
            "appended",
            f"envelope has {len(blob) - total} unexpected bytes after its end (appended data)",
        )
    view = memoryview(blob)  # no copies of a large payload while hashing
    h = hashlib.sha256(view[:off])
    h.update(view[off : off + plen])
    digest = h.digest()
    if not hmac.compare_digest(digest, bytes(view[off + plen : off + plen + _DIGEST_LEN])):
        raise _fail(
            "integrity",
            "envelope integrity check failed (SHA-256 mismatch): it was corrupted or tampered "
            "with in storage or transit",
        )
    signer = header["signer"]
    verified = False
    if verify_with is not None:
        want = signer_id(verify_with)
        if signer is None:
            raise _fail(
                "signature",
                f"envelope is not signed, but a signature by {want[:16]}... was required",
            )
        if not hmac.compare_digest(signer, want):
            raise _fail(
                "signature",
                f"envelope is signed by {signer[:16]}..., not by the expected key {want[:16]}...",
            )
    if signer is not None:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        sig = bytes(blob[off + plen + _DIGEST_LEN : total])
        try:
            Ed25519PublicKey.from_public_bytes(bytes.fromhex(signer)).verify(
                sig, _SIG_CONTEXT + digest
            )
        except (InvalidSignature, ValueError):
            raise _fail(
                "signature",
                f"envelope signature by {signer[:16]}... is invalid: the envelope was altered "
                "after signing (or signed by someone else)",
            ) from None
        verified = verify_with is not None
    kind = header["kind"]
    if kind not in KINDS:
        raise _fail("kind", f"unknown envelope kind {kind!r} (written by a newer privkit?)")
    if expected_kind is not None:
        wanted = (expected_kind,) if isinstance(expected_kind, str) else tuple(expected_kind)
        if kind not in wanted:
            raise _fail(
                "kind",
                f"envelope holds a {kind!r}, expected {' or '.join(repr(w) for w in wanted)}",
            )
    fp = header["fingerprint"]
    if expected_fingerprint is not None and not hmac.compare_digest(
        fp.encode(), str(expected_fingerprint).encode()
    ):
        raise _fail(
            "fingerprint",
            f"{kind} envelope is bound to {fp!r} but {expected_fingerprint!r} was expected",
            KeyMismatchError,
        )
    return Envelope(
        kind=kind,
        version=FORMAT_VERSION,
        fingerprint=fp,
        payload=bytes(view[off : off + plen]),
        meta=header["meta"],
        digest=digest.hex(),
        signer=signer,
        verified=verified,
        size=len(blob),
    )


def write_envelope(path: str | os.PathLike, blob: bytes, mode: int = 0o644) -> None:
    """Write an envelope atomically (temporary file, fsync, rename)."""
    from ..api import atomic_write_bytes

    if not is_envelope(blob):
        raise ParameterError("write_envelope expects the bytes of seal_envelope / pack_*")
    atomic_write_bytes(path, blob, mode=mode)


def read_envelope(
    path: str | os.PathLike,
    expected_kind: str | Sequence[str] | None = None,
    expected_fingerprint: str | None = None,
    *,
    verify_with: Ed25519PublicKey | bytes | None = None,
) -> Envelope:
    """Read and open an envelope file (see :func:`open_envelope`)."""
    try:
        with open(path, "rb") as fh:
            blob = fh.read()
    except OSError as e:
        raise _fail("format", f"cannot read envelope {str(path)!r}: {e}") from e
    return open_envelope(blob, expected_kind, expected_fingerprint, verify_with=verify_with)


# -- key fingerprints ----------------------------------------------------------------------------
def key_fingerprint(obj: KeySet | PublicBundle | Backend | Ciphertext) -> str:
    """``"<params fingerprint>/<key id>"``: what a ciphertext is bound to.

    Two objects share it exactly when their ciphertexts are interchangeable: same CKKS
    parameters (ring, primes, scale) and the same key set.
    """
    from .backend import Backend, Ciphertext
    from .keys import KeySet, PublicBundle

    if isinstance(obj, Ciphertext):
        obj = obj.backend
    if isinstance(obj, (KeySet, PublicBundle, Backend)):
        return f"{obj.params.fingerprint()}/{obj.key_id}"
    raise ParameterError(
        f"expected a KeySet, PublicBundle, Backend or Ciphertext, got {type(obj).__name__}"
    )


def _target_backend(target: Any) -> Backend:
    from .backend import Backend
    from .keys import KeySet, PublicBundle

    if isinstance(target, (KeySet, PublicBundle)):
        return target.backend
    if isinstance(target, Backend):
        return target
    raise ParameterError(
        f"unpack a ciphertext into a KeySet, PublicBundle or Backend, got {type(target).__name__}"
    )


# -- public bundles ------------------------------------------------------------------------------
def pack_public_bundle(
    bundle: PublicBundle, *, sign_with: Ed25519PrivateKey | None = None
) -> bytes:
    """A public bundle in an envelope (what a client sends to a server)."""
    from .keys import PublicBundle

    if not isinstance(bundle, PublicBundle):
        raise ParameterError(f"expected a PublicBundle, got {type(bundle).__name__}")
    return seal_envelope(
        "public-bundle",
        bundle.to_bytes(),
        key_fingerprint(bundle),
        meta={
            "backend": bundle.backend_name,
            "params": bundle.params.name,
            "rotations": len(bundle.rotation_steps),
            "conjugation": bundle.conjugation,
        },
        sign_with=sign_with,
    )


def unpack_public_bundle(
    blob: bytes,
    *,
    expected_fingerprint: str | None = None,
    verify_with: Ed25519PublicKey | bytes | None = None,
    allow_insecure: bool = False,
) -> PublicBundle:
    """Open a public-bundle envelope; refuses one whose content disagrees with its fingerprint.

    ``expected_fingerprint`` pins the key set (:func:`key_fingerprint` of the client's keys);
    ``verify_with`` requires the owner's signature. A simulator bundle (its "ciphertexts" are
    plaintext) or one below 128-bit security is refused with
    :class:`~privkit.errors.SecurityDowngradeError` unless ``allow_insecure=True``.
    """
    from .keys import PublicBundle

    env = open_envelope(blob, "public-bundle", expected_fingerprint, verify_with=verify_with)
    try:
        bundle = PublicBundle.from_bytes(env.payload)
    except (EnvelopeError, ParameterError) as e:
        raise _fail("payload", f"public-bundle envelope holds an unreadable bundle: {e}") from e
    inner = key_fingerprint(bundle)
    if inner != env.fingerprint:
        raise _fail(
            "payload",
            f"public-bundle envelope says {env.fingerprint!r} but the bundle inside is {inner!r}",
        )
    bundle.require_secure(allow_insecure, "unpack_public_bundle")
    return bundle


# -- ciphertexts ---------------------------------------------------------------------------------
_CT_KINDS = ("ciphertext", "result")


def pack_ciphertexts(
    cts: Iterable[Ciphertext],
    *,
    kind: str = "result",
    sign_with: Ed25519PrivateKey | None = None,
) -> bytes:
    """Several ciphertexts of one key set in one envelope (e.g. a program's outputs)."""
    from .backend import Ciphertext

    if kind not in _CT_KINDS:
        raise ParameterError(
            f"ciphertext envelopes have kind 'ciphertext' or 'result', got {kind!r}"
        )
    cts = list(cts)
    if not cts:
        raise ParameterError("pack_ciphertexts needs at least one ciphertext")
    for c in cts:
        if not isinstance(c, Ciphertext):
            raise ParameterError(f"expected Ciphertext objects, got {type(c).__name__}")
    fp = key_fingerprint(cts[0])
    for c in cts[1:]:
        if key_fingerprint(c) != fp:
            raise KeyMismatchError(
                f"cannot pack ciphertexts of different key sets in one envelope: {fp!r} and "
                f"{key_fingerprint(c)!r}"
            )
    blobs = [c.to_bytes() for c in cts]
    payload = struct.pack("<I", len(blobs)) + b"".join(struct.pack("<Q", len(b)) + b for b in blobs)
    meta = {
        "count": len(cts),
        "backend": cts[0].backend.name,
        "levels": [c.level for c in cts][:64],
        "lengths": [c.length for c in cts][:64],
    }
    return seal_envelope(kind, payload, fp, meta=meta, sign_with=sign_with)


def pack_ciphertext(
    ct: Ciphertext,
    *,
    kind: str = "ciphertext",
    sign_with: Ed25519PrivateKey | None = None,
) -> bytes:
    """One ciphertext in an envelope bound to its key set's fingerprint."""
    return pack_ciphertexts([ct], kind=kind, sign_with=sign_with)


def unpack_ciphertexts(
    blob: bytes,
    target: KeySet | PublicBundle | Backend,
    *,
    kind: str | Sequence[str] = _CT_KINDS,
    verify_with: Ed25519PublicKey | bytes | None = None,
) -> list[Ciphertext]:
    """Open a ciphertext/result envelope into ciphertexts of ``target``'s key set.

    An envelope made under other parameters or another key set is refused with
    :class:`~privkit.errors.KeyMismatchError` naming both fingerprints, before any ciphertext is
    deserialised.
    """
    backend = _target_backend(target)
    want = key_fingerprint(backend)
    env = open_envelope(blob, kind, verify_with=verify_with)
    if env.fingerprint != want:
        raise _fail(
            "fingerprint",
            f"{env.kind} envelope was made under key set {env.fingerprint!r} but the target "
            f"holds {want!r}; encrypt under this key set (or send the matching public bundle)",
            KeyMismatchError,
        )
    payload = env.payload
    try:
        (count,) = struct.unpack_from("<I", payload, 0)
        pos = 4
        raw = []
        for _ in range(count):
            (ln,) = struct.unpack_from("<Q", payload, pos)
            pos += 8
            if pos + ln > len(payload):
                raise ValueError("ciphertext runs past the payload")
            raw.append(payload[pos : pos + ln])
            pos += ln
        if pos != len(payload) or count != env.meta.get("count", count):
            raise ValueError("payload length disagrees with its ciphertext count")
    except (struct.error, ValueError) as e:
        raise _fail("payload", f"{env.kind} envelope payload is malformed: {e}") from None
    out = []
    for i, b in enumerate(raw):
        try:
            out.append(backend.deserialize_ciphertext(b))
        except EnvelopeError as e:
            raise _fail("payload", f"ciphertext {i} in the envelope is unreadable: {e}") from e
    return out


def unpack_ciphertext(
    blob: bytes,
    target: KeySet | PublicBundle | Backend,
    *,
    kind: str | Sequence[str] = _CT_KINDS,
    verify_with: Ed25519PublicKey | bytes | None = None,
) -> Ciphertext:
    """Open an envelope holding exactly one ciphertext (see :func:`unpack_ciphertexts`)."""
    cts = unpack_ciphertexts(blob, target, kind=kind, verify_with=verify_with)
    if len(cts) != 1:
        raise _fail("payload", f"envelope holds {len(cts)} ciphertexts; use unpack_ciphertexts")
    return cts[0]


# -- datasets ------------------------------------------------------------------------------------
def pack_dataset(
    arrays: Mapping[str, Any],
    *,
    fingerprint: str = "dataset",
    meta: Mapping[str, Any] | None = None,
    sign_with: Ed25519PrivateKey | None = None,
) -> bytes:
    """Named numeric arrays (an anonymised dataset, say) in an envelope.

    Arrays are stored with ``numpy.savez`` (no pickled objects); ``fingerprint`` names what the
    data is bound to (e.g. the anonymiser that produced it), ``meta`` travels alongside.
    """
    if not arrays:
        raise ParameterError("pack_dataset needs at least one array")
    clean = {}
    for name, a in arrays.items():
        arr = np.asarray(a)
        if arr.dtype == object:
            raise ParameterError(f"array {name!r} has dtype object; only numeric/str arrays travel")
        clean[str(name)] = arr
    buf = io.BytesIO()
    np.savez(buf, **clean)
    m = {"arrays": {k: [str(v.dtype), list(v.shape)] for k, v in clean.items()}}
    m.update(dict(meta or {}))
    return seal_envelope("dataset", buf.getvalue(), fingerprint, meta=m, sign_with=sign_with)


#: default cap on the bytes a dataset envelope may expand to: ``max(64 MiB, 16 x payload)``
DATASET_MIN_LIMIT = 64 << 20
DATASET_EXPANSION = 16
_MAX_ARRAYS = 4096


def unpack_dataset(
    blob: bytes,
    *,
    expected_fingerprint: str | None = None,
    verify_with: Ed25519PublicKey | bytes | None = None,
    max_bytes: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Open a dataset envelope: ``(arrays, meta)``.

    The archive is validated before anything is allocated: every member must be a ``.npy``
    array of a plain (non-object) dtype whose header's shape and dtype account exactly for the
    member's declared size, and the declared sizes together must stay below ``max_bytes``
    (default ``max(64 MiB, 16 x the payload)``; ``pack_dataset`` stores arrays uncompressed, so
    only a crafted archive expands more). Violations raise :class:`~privkit.errors.EnvelopeError`
    (reason ``"payload"``) without decompressing anything.
    """
    env = open_envelope(blob, "dataset", expected_fingerprint, verify_with=verify_with)
    limit = max(DATASET_MIN_LIMIT, DATASET_EXPANSION * len(env.payload)) if max_bytes is None else max_bytes
    if type(limit) is not int or limit < 0:
        raise ParameterError(f"max_bytes must be a non-negative integer, got {max_bytes!r}")
    return _read_npz(env.payload, limit), dict(env.meta)


def _read_npz(payload: bytes, limit: int) -> dict[str, np.ndarray]:
    import zipfile

    from numpy.lib import format as npf

    def bad(msg: str) -> PrivkitError:
        return _fail("payload", f"dataset envelope holds an unreadable array archive: {msg}")

    try:
        zf = zipfile.ZipFile(io.BytesIO(payload))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise bad(str(e)[:200]) from None
    with zf:
        infos = zf.infolist()
        if len(infos) > _MAX_ARRAYS:
            raise bad(f"{len(infos)} members (at most {_MAX_ARRAYS})")
        declared = sum(i.file_size for i in infos)
        if declared > limit:
            raise bad(
                f"it declares {declared:,} bytes of arrays, above the limit of {limit:,} (a "
                f"{len(payload):,}-byte payload); pass max_bytes= to accept larger datasets"
            )
        out: dict[str, np.ndarray] = {}
        for info in infos:
            name = info.filename
            if not name.endswith(".npy") or info.is_dir() or name[:-4] in out:
                raise bad(f"unexpected member {name[:80]!r}")
            try:
                with zf.open(info) as fh:
                    version = npf.read_magic(fh)
                    if version not in ((1, 0), (2, 0), (3, 0)):
                        raise ValueError(f"npy version {version}")
                    reader = npf.read_array_header_1_0 if version == (1, 0) else npf.read_array_header_2_0
                    shape, fortran, dtype = reader(fh)
                    if dtype.hasobject:
                        raise ValueError("object arrays are refused")
                    if any(type(d) is not int or d < 0 for d in shape):
                        raise ValueError(f"bad shape {shape}")
                    count = 1
                    for d in shape:
                        count *= d
                    nbytes = count * dtype.itemsize
                    if nbytes != info.file_size - fh.tell():
                        raise ValueError(
                            f"{name[:40]!r} declares shape {shape[:8]} of {dtype} ({nbytes:,} bytes) "
                            f"but holds {info.file_size - fh.tell():,}"
                        )
                    data = fh.read(nbytes + 1)
                if len(data) != nbytes:
                    raise ValueError(f"{name[:40]!r} is truncated")
            except (zipfile.BadZipFile, ValueError, OSError, EOFError, TypeError, SyntaxError,
                    RuntimeError, NotImplementedError, OverflowError, KeyError) as e:
                raise bad(str(e)[:200]) from None
            arr = np.frombuffer(data, dtype=dtype)
            arr = arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
            out[name[:-4]] = arr.copy()
    return out
