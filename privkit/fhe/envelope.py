"""FHE artefacts in envelopes: public bundles, ciphertexts bound to their key set, datasets.

The container itself (format, digest, Ed25519 signatures, :func:`open_envelope`,
:func:`seal_envelope`) is generic and lives at the base of the package, in
:mod:`privkit.envelope`; its names are re-exported here so that ``privkit.fhe.envelope`` keeps
working as the one import for everything that travels.

SEAL does not authenticate a serialised ciphertext, and a damaged one would otherwise decrypt to
garbage silently: the envelope's digest catches that first. Ciphertext and result envelopes carry
the *key fingerprint* of the key set they were made under (``"<params fingerprint>/<key id>"``,
see :func:`key_fingerprint`), and the typed unpackers refuse one made under other parameters or
another key set with :class:`~privkit.errors.KeyMismatchError` naming both fingerprints, before
any computation. Payload problems carry ``reason == "payload"``.

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

import io
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..envelope import (  # re-exported: the generic container moved to privkit.envelope
    FORMAT_VERSION,
    KINDS,
    MAGIC,
    Envelope,
    generate_signing_key,
    is_envelope,
    open_envelope,
    read_envelope,
    seal_envelope,
    signer_id,
    write_envelope,
)
from ..envelope import envelope_error as _fail
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
