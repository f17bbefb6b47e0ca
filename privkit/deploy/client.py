"""The client role: a client spec and a key set; never the model.

The client makes keys with exactly the rotations its :class:`~privkit.fhe.artifact.ClientSpec`
lists, encrypts inputs (refusing values outside the calibrated input range), sends the public
bundle and ciphertexts as envelopes, and decrypts result envelopes. Keys are stored with the
sealed key-file format (:mod:`privkit.fhe.keyfile`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import ParameterError, SecretKeyRequiredError
from ..fhe.artifact import ClientSpec
from ..fhe.envelope import pack_ciphertexts, pack_public_bundle, unpack_ciphertexts
from ..fhe.keys import KeySet

__all__ = ["Client"]


class Client:
    """Encrypts inputs for, and decrypts results of, a server's program.

    >>> import torch
    >>> from privkit import nn as pnn, fhe
    >>> m = torch.nn.Sequential(pnn.Conv1d(1, 2, 3), pnn.Flatten(), pnn.Linear(2 * 14, 2))
    >>> spec = fhe.compile(m, input_shape=(1, 16), params="n8192").client_spec()
    >>> client = Client(spec)
    >>> sorted(client.keygen(backend="sim").rotation_steps) == sorted(spec.rotations)
    True
    """

    def __init__(self, spec: ClientSpec, keys: KeySet | None = None) -> None:
        if not isinstance(spec, ClientSpec):
            raise ParameterError(f"Client needs a ClientSpec, got {type(spec).__name__}")
        self.spec = spec
        self._keys = None
        if keys is not None:
            self._set_keys(keys)

    def _set_keys(self, keys: KeySet) -> None:
        if keys.params.fingerprint() != self.spec.params.fingerprint():
            raise ParameterError(
                f"the keys use {keys.params.describe()} but the model needs "
                f"{self.spec.params.describe()}; generate them with Client.keygen()")
        missing = set(r % self.spec.params.slots for r in self.spec.rotations) - set(
            r % self.spec.params.slots for r in keys.rotation_steps)
        if missing:
            raise ParameterError(f"the keys lack rotations {sorted(missing)[:8]} the model uses; "
                                 "generate them with Client.keygen()")
        self._keys = keys

    @property
    def keys(self) -> KeySet:
        if self._keys is None:
            raise SecretKeyRequiredError("this client has no keys yet: call keygen() or load_keys()")
        return self._keys

    def keygen(self, backend: str = "seal", **kwargs: Any) -> KeySet:
        """Make a key set with exactly the spec's rotation keys (and keep it)."""
        keys = KeySet.generate(self.spec.params, backend=backend, rotations=list(self.spec.rotations),
                               conjugation=self.spec.conjugation, **kwargs)
        self._keys = keys
        return keys

    def save_keys(self, path: str | os.PathLike, password: str | bytes | None = None, *,
                  insecure_plaintext: bool = False) -> None:
        """Seal the key set to ``path`` (AES-256-GCM under the password; see keyfile)."""
        self.keys.save(path, password, insecure_plaintext=insecure_plaintext)

    def load_keys(self, path: str | os.PathLike, password: str | bytes | None = None, *,
                  allow_plaintext: bool = False) -> KeySet:
        """Open a sealed key file and check it fits the spec (an unencrypted key file is refused
        unless ``allow_plaintext=True``)."""
        keys = KeySet.load(path, password, allow_plaintext=allow_plaintext)
        self._set_keys(keys)
        return keys

    @property
    def key_id(self) -> str:
        return self.keys.key_id

    def bundle_envelope(self, *, sign_with: Any = None) -> bytes:
        """The public bundle in an envelope: what the server registers (no secret key)."""
        return pack_public_bundle(self.keys.public_bundle(), sign_with=sign_with)

    def encrypt(self, x: Any, *, check_range: bool = True) -> bytes:
        """One input -> a ``"ciphertext"`` envelope (range-checked; see ``ClientSpec.check_input``)."""
        return self.encrypt_batch([x], check_range=check_range)

    def encrypt_batch(self, xs: Any, *, check_range: bool = True) -> bytes:
        """Several inputs -> one ``"ciphertext"`` envelope holding one ciphertext each.

        Each ciphertext is sent at the spec's ``encrypt_level`` (the level the program starts
        from): the levels above it would be dropped by the server unused.
        """
        cts = []
        level = self.spec.encrypt_level
        for x in xs:
            if check_range:
                self.spec.check_input(x)
            ct = self.keys.encrypt(self.spec.encode_input(x))
            if level is not None and level < ct.level:
                # the server drops these levels before its first layer: do not upload them
                ct = self.keys.backend.mod_switch_to(ct, level)
            cts.append(ct)
        if not cts:
            raise ParameterError("encrypt_batch needs at least one input")
        return pack_ciphertexts(cts, kind="ciphertext")

    def decrypt(self, result_envelope: bytes) -> np.ndarray:
        """A ``"result"`` envelope -> logits: ``(out_features,)`` for one input, ``(n, out_features)``
        for several (``(batch, out)`` / ``(n, batch, out)`` for a batched program)."""
        cts = unpack_ciphertexts(result_envelope, self.keys, kind="result")
        n = self.spec.out_features * self.spec.batch
        outs = [self.spec.decode_output(self.keys.decrypt(c.replace(length=n))) for c in cts]
        return outs[0] if len(outs) == 1 else np.stack(outs)
