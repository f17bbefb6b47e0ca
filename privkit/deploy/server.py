"""The server role: a program and clients' public bundles; computes on ciphertexts only.

>>> import torch
>>> from privkit import nn as pnn, fhe
>>> from privkit.deploy import Client, Server
>>> m = torch.nn.Sequential(pnn.Conv1d(1, 2, 3), pnn.Flatten(), pnn.Linear(2 * 14, 2))
>>> program = fhe.compile(m, input_shape=(1, 16), params="n8192")
>>> server = Server(program, allow_insecure=True)     # simulator keys: tests only
>>> client = Client(program.client_spec())
>>> _ = client.keygen(backend="sim")
>>> key_id = server.register(client.bundle_envelope())
>>> out = client.decrypt(server.infer(client.encrypt([0.1] * 16)))
>>> out.shape
(2,)
>>> server.register(client.keys)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
privkit.errors.SecretKeyExposureError: refusing a KeySet: it holds the secret key...
"""

from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

from ..errors import (
    EnvelopeError,
    KeyMismatchError,
    MissingKeyError,
    ParameterError,
    SecretKeyExposureError,
)
from ..fhe.envelope import (
    open_envelope,
    pack_ciphertexts,
    unpack_ciphertexts,
    unpack_public_bundle,
    write_envelope,
)
from ..fhe.keys import KeySet, PublicBundle
from .wire import key_id_of

__all__ = ["Server", "check_bundle", "valid_key_id"]

log = logging.getLogger(__name__)

_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_KEYFILE_MAGIC = b"\x89PKKEY\r\n"


def valid_key_id(key_id: Any) -> str:
    """A key id safe to use as a file name, or :class:`~privkit.errors.ParameterError`."""
    if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
        raise ParameterError(f"invalid key id {str(key_id)[:80]!r}: expected 1-128 letters, digits, '-' or '_'")
    return key_id


def check_bundle(program: Any, bundle: Any, *, allow_insecure: bool = False) -> PublicBundle:
    """Accept a public bundle for ``program``, or raise a typed error saying why not.

    Refused: a :class:`~privkit.fhe.keys.KeySet` or a sealed key file
    (:class:`~privkit.errors.SecretKeyExposureError`), a damaged or tampered envelope
    (:class:`~privkit.errors.EnvelopeError`), keys of other CKKS parameters
    (:class:`~privkit.errors.KeyMismatchError`), a bundle lacking a rotation the program uses
    (:class:`~privkit.errors.MissingKeyError`) and, unless ``allow_insecure``, a simulator bundle
    (its "ciphertexts" are plaintext) or one below 128-bit security
    (:class:`~privkit.errors.SecurityDowngradeError`).
    """
    if isinstance(bundle, KeySet):
        raise SecretKeyExposureError(
            "refusing a KeySet: it holds the secret key, which must never leave the client; pass "
            "keys.public_bundle() (or its envelope, keys.public_bundle().to_envelope())")
    if isinstance(bundle, (bytes, bytearray, memoryview)):
        if bytes(bundle[: len(_KEYFILE_MAGIC)]) == _KEYFILE_MAGIC:
            raise SecretKeyExposureError(
                "refusing a sealed key file: it holds the secret key; send the public bundle "
                "envelope instead (privkit client keys / Client.bundle_envelope())")
        bundle = unpack_public_bundle(bytes(bundle), allow_insecure=allow_insecure)
    if not isinstance(bundle, PublicBundle):
        raise ParameterError(f"expected a public bundle envelope, got {type(bundle).__name__}")
    if bundle.params.fingerprint() != program.params.fingerprint():
        raise KeyMismatchError(
            f"the bundle's keys use {bundle.params.describe()} but the program was compiled for "
            f"{program.params.describe()}; make the keys from this server's client spec")
    # a simulator or sub-128-bit bundle: SecurityDowngradeError unless allowed explicitly
    bundle.require_secure(allow_insecure, "the inference server")
    have = {r % program.params.slots for r in bundle.rotation_steps}
    missing = [r for r in program.rotations if r not in have]
    if missing:
        raise MissingKeyError(
            f"the bundle lacks Galois keys for rotations {missing[:8]} that the program uses; "
            "generate the keys with Client(spec).keygen() (exactly the spec's rotations)")
    valid_key_id(bundle.key_id)
    return bundle


def _evaluation_only(bundle: PublicBundle) -> None:
    """Build the bundle's evaluation backend now and drop the serialised Galois keys it was
    built from: a server never re-sends a bundle, and at N=16384 those bytes are ~0.5 GB on top
    of the deserialised keys (measured in bench/serve.py)."""
    bundle.backend  # noqa: B018 - builds and caches the backend
    eager = getattr(bundle, "_eager", None)
    if isinstance(eager, dict) and bundle.backend_name == "seal" and "galois_keys" in eager:
        bundle._eager = {k: v for k, v in eager.items() if k != "galois_keys"}


class _LRU:
    """Bundles by key id, bounded by their serialised size in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[str, tuple[PublicBundle, int]] = OrderedDict()
        self.bytes = 0

    def get(self, key_id: str) -> PublicBundle | None:
        item = self._items.get(key_id)
        if item is None:
            return None
        self._items.move_to_end(key_id)
        return item[0]

    def put(self, key_id: str, bundle: PublicBundle, size: int) -> None:
        _evaluation_only(bundle)
        if key_id in self._items:
            self.bytes -= self._items.pop(key_id)[1]
        self._items[key_id] = (bundle, size)
        self.bytes += size
        while self.bytes > self.max_bytes and len(self._items) > 1:
            old, (_, sz) = self._items.popitem(last=False)
            self.bytes -= sz
            log.info("evicted bundle %s (%d bytes) from the cache", old[:16], sz)

    def __len__(self) -> int:
        return len(self._items)


class Server:
    """Runs a program for registered clients (in this process; see :mod:`.http` for a pool).

    Args:
        program: the compiled (or loaded) :class:`~privkit.fhe.program.EncryptedProgram`.
        key_dir: where registered bundles are stored by key id (``<key_id>.env``); ``None`` keeps
            them in memory only.
        cache_bytes: the most serialised bundle bytes held in memory (least recently used
            evicted first; evicted bundles are read back from ``key_dir``).
        allow_insecure: accept simulator or sub-128-bit bundles (tests only: no real security).
    """

    def __init__(self, program: Any, *, key_dir: str | os.PathLike | None = None,
                 cache_bytes: int = 4 << 30, allow_insecure: bool = False) -> None:
        self.program = program
        self.key_dir = None if key_dir is None else Path(key_dir)
        if self.key_dir is not None:
            self.key_dir.mkdir(parents=True, exist_ok=True)
        self.allow_insecure = allow_insecure
        self._cache = _LRU(cache_bytes)

    def register(self, bundle_envelope: bytes | PublicBundle) -> str:
        """Check and store a client's public bundle; returns its key id."""
        blob = bundle_envelope if isinstance(bundle_envelope, (bytes, bytearray)) else None
        bundle = check_bundle(self.program, bundle_envelope, allow_insecure=self.allow_insecure)
        if blob is None:
            blob = bundle.to_envelope()
        if self.key_dir is not None:
            write_envelope(self.key_dir / f"{bundle.key_id}.env", bytes(blob))
        self._cache.put(bundle.key_id, bundle, len(blob))
        return bundle.key_id

    def bundle(self, key_id: str) -> PublicBundle:
        """The registered bundle of ``key_id`` (from memory, else from ``key_dir``)."""
        valid_key_id(key_id)
        b = self._cache.get(key_id)
        if b is not None:
            return b
        path = None if self.key_dir is None else self.key_dir / f"{key_id}.env"
        if path is None or not path.is_file():
            raise MissingKeyError(f"no public bundle registered under key id {key_id[:16]}...; "
                                  "register the client's bundle first (POST /keys)")
        blob = path.read_bytes()
        b = check_bundle(self.program, blob, allow_insecure=self.allow_insecure)
        if b.key_id != key_id:
            raise EnvelopeError(f"stored bundle {path.name} holds key id {b.key_id[:16]}")
        self._cache.put(key_id, b, len(blob))
        return b

    def infer(self, ciphertext_envelope: bytes, key_id: str | None = None) -> bytes:
        """A ``"ciphertext"`` envelope (one or several inputs) -> one ``"result"`` envelope."""
        if isinstance(ciphertext_envelope, KeySet):
            raise SecretKeyExposureError("refusing a KeySet where a ciphertext envelope is expected")
        env = open_envelope(ciphertext_envelope, "ciphertext")
        kid = key_id_of(env.fingerprint)
        if key_id is not None and kid != key_id:
            raise KeyMismatchError(
                f"the ciphertext was made under key set {kid[:16]}... but was sent for key set "
                f"{str(key_id)[:16]}...; send it to /infer/<its own key id>")
        bundle = self.bundle(kid)
        cts = unpack_ciphertexts(ciphertext_envelope, bundle, kind="ciphertext")
        outs = [self.program.run(ct, bundle, allow_insecure=self.allow_insecure) for ct in cts]
        return pack_ciphertexts(outs, kind="result")

    @property
    def cached_bundles(self) -> int:
        return len(self._cache)
