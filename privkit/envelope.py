"""The signed container every privkit artefact travels in, and atomic file writes.

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
before anything reads the payload. A digest alone does not stop a deliberate swap (anyone can
recompute it); for that, sign with an Ed25519 key (``sign_with=``) and check with the owner's
public key (``verify_with=``).

This module knows nothing about what the payload is: the FHE packers (public bundles,
ciphertexts bound to a key fingerprint, datasets) are in :mod:`privkit.fhe.envelope`, model
checkpoints in :func:`privkit.api.save_state`. The 14-byte prefix (magic, version, header
length) is shared with the sealed key files of :mod:`privkit.fhe.keyfile`: both parse it with
:func:`read_prefix`.

Every error raised here carries a ``reason`` attribute (``"format"``, ``"version"``,
``"truncated"``, ``"appended"``, ``"integrity"``, ``"signature"``, ``"kind"``, ``"fingerprint"``)
so that callers can tell the cases apart without parsing messages.

>>> blob = seal_envelope("model", b"weights", "my-model", meta={"epochs": 3})
>>> env = open_envelope(blob, "model", "my-model")
>>> env.payload, env.meta, env.signer
(b'weights', {'epochs': 3}, None)
>>> open_envelope(blob[:-1])  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
privkit.errors.EnvelopeError: envelope truncated: ...
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import struct
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import EnvelopeError, KeyMismatchError, ParameterError, PrivkitError

if TYPE_CHECKING:  # pragma: no cover
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

__all__ = [
    "FORMAT_VERSION",
    "KINDS",
    "MAGIC",
    "PREFIX",
    "Envelope",
    "PrefixFormat",
    "atomic_write_bytes",
    "envelope_error",
    "generate_signing_key",
    "is_envelope",
    "open_envelope",
    "read_envelope",
    "read_prefix",
    "seal_envelope",
    "signer_id",
    "write_envelope",
]

#: magic, format version and header length: the first 14 bytes of envelopes and key files
PREFIX = struct.Struct("<8sHI")


def envelope_error(
    reason: str, message: str, cls: type[PrivkitError] = EnvelopeError
) -> PrivkitError:
    """An error of ``cls`` (default :class:`~privkit.errors.EnvelopeError`) with ``reason`` set."""
    err = cls(message)
    err.reason = reason  # type: ignore[attr-defined]
    return err


_fail = envelope_error


# -- the shared prefix ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PrefixFormat:
    """How one privkit container begins, and how its errors are worded.

    Attributes:
        magic: the 8 magic bytes.
        version: the one format version this privkit reads.
        max_header: the largest plausible header length.
        title: what the format is called (``"envelope"``, ``"key file"``).
        noun: how messages name the thing being read (``"envelope"``, ``"key file 'a.keys'"``).
        fail: builds the error from a reason and a message.
        reasons: this format's name for the generic reasons ``"bad-magic"`` and
            ``"header-length"`` (the others, ``"truncated"`` and ``"version"``, are kept).
        foreign: magic bytes of other formats -> (reason, message) to say what the bytes are.
    """

    magic: bytes
    version: int
    max_header: int
    title: str
    noun: str
    fail: Callable[[str, str], Exception]
    reasons: Mapping[str, str] = dataclasses.field(default_factory=dict)
    foreign: Mapping[bytes, tuple[str, str]] = dataclasses.field(default_factory=dict)


def read_prefix(
    blob: bytes | bytearray | memoryview, fmt: PrefixFormat, *, trailer: int = 0
) -> tuple[int, int]:
    """Check magic, version and header length; return ``(version, end of the header)``.

    ``trailer`` bytes must follow the header (a key file's header checksum). Every failure is
    ``fmt.fail(reason, message)`` with reason ``"truncated"``, ``"version"``, or this format's
    name for a bad magic / implausible header length; other privkit formats' magics are named.

    >>> fmt = PrefixFormat(MAGIC, FORMAT_VERSION, 1 << 10, "envelope", "envelope", envelope_error)
    >>> read_prefix(seal_envelope("model", b"", "m"), fmt)[0]
    1
    >>> read_prefix(b"PKCT....", fmt)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    privkit.errors.EnvelopeError: envelope is not a privkit envelope (bad magic)
    """
    n = len(blob)
    magic = fmt.magic
    start = bytes(blob[: len(magic)])
    if start != magic:
        if 0 < n < len(magic) and magic.startswith(start):
            raise fmt.fail("truncated", f"{fmt.noun} is truncated: only {n} bytes")
        for other, (reason, message) in fmt.foreign.items():
            if start.startswith(other):
                raise fmt.fail(reason, message)
        raise fmt.fail(
            fmt.reasons.get("bad-magic", "bad-magic"),
            f"{fmt.noun} is not a privkit {fmt.title} (bad magic)",
        )
    if n < PREFIX.size:
        raise fmt.fail("truncated", f"{fmt.noun} is truncated inside its prefix ({n} bytes)")
    _, version, hlen = PREFIX.unpack(bytes(blob[: PREFIX.size]))
    if version != fmt.version:
        raise fmt.fail(
            "version",
            f"{fmt.noun} has format version {version}, which is not supported (this privkit "
            f"reads version {fmt.version}); the file is damaged or was written by a newer privkit",
        )
    if hlen > fmt.max_header:
        raise fmt.fail(
            fmt.reasons.get("header-length", "header-length"),
            f"{fmt.noun} has a damaged header (implausible length {hlen})",
        )
    end = PREFIX.size + hlen
    if n < end + trailer:
        raise fmt.fail(
            "truncated",
            f"{fmt.noun} is truncated inside its header ({n} of at least {end + trailer} bytes)",
        )
    return version, end


MAGIC = b"\x89PKENV\r\n"
FORMAT_VERSION = 1
#: the kinds of artefact an envelope can hold
KINDS = ("public-bundle", "ciphertext", "result", "model", "dataset", "program", "client-spec")

_DIGEST_LEN = 32
_SIG_LEN = 64
_MAX_HEADER = 1 << 20
_MAX_FINGERPRINT = 256
_SIG_CONTEXT = b"privkit-envelope-v1\x00"
_TAGS = {"sha256": _DIGEST_LEN, "sha256+ed25519": _DIGEST_LEN + _SIG_LEN}
# other privkit formats, recognised to give a useful message
KEYFILE_MAGIC = b"\x89PKKEY\r\n"
_RAW_BUNDLE_MAGIC = b"PKBUNDLE"
_RAW_CT_MAGIC = b"PKCT"


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
    head = PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)) + header
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
    _, end = read_prefix(blob, _ENVELOPE_FORMAT)
    try:
        header = json.loads(bytes(blob[PREFIX.size : end]))
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


_RAW_OBJECT = (
    "this is a raw privkit object (to_bytes), not an envelope; raw objects carry no integrity "
    "tag: send pack_public_bundle/pack_ciphertext output instead"
)
_ENVELOPE_FORMAT = PrefixFormat(
    MAGIC,
    FORMAT_VERSION,
    _MAX_HEADER,
    "envelope",
    "envelope",
    envelope_error,
    reasons={"bad-magic": "format", "header-length": "format"},
    foreign={
        KEYFILE_MAGIC: (
            "format",
            "this is a sealed privkit key file, not an envelope; open it with KeySet.load",
        ),
        _RAW_BUNDLE_MAGIC: ("format", _RAW_OBJECT),
        _RAW_CT_MAGIC: ("format", _RAW_OBJECT),
    },
)


# -- files ---------------------------------------------------------------------------------------
def atomic_write_bytes(
    path: str | os.PathLike, data: bytes | Iterable[bytes], mode: int = 0o644
) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, fsync, rename.

    ``data`` is bytes or an iterable of byte chunks (written one after the other, so a large
    artefact need not be joined in memory). The temporary file gets ``mode`` before any byte is
    written (0600 for secrets), the folder is fsynced after the rename. A crash or an exception
    mid-write leaves the old file (or none), never a half-written one, and no temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            if isinstance(data, (bytes, bytearray, memoryview)):
                fh.write(data)
            else:
                for chunk in data:
                    fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(dfd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dfd)
