"""SimBackend: CKKS semantics on float64 slot vectors, without any cryptography.

Mirrors :class:`privkit.fhe.seal.SealBackend` operation for operation: the same levels, the same
scale bookkeeping (including the ``s/q`` factor after each ciphertext product), the same rotation
keys and composition, the same errors. Optional Gaussian noise (``noise_std``, absolute, added at
encryption, after every rescale and every key switch) imitates CKKS noise. Use it to check depth,
packing and maths fast; its "ciphertexts" are plaintext numbers, so nothing it produces is
encrypted, and privkit never reports it as such.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import KeyMismatchError
from .backend import Backend
from .params import CKKSParams

__all__ = ["SimBackend"]


class SimBackend(Backend):
    name = "sim"
    simulated = True

    def __init__(
        self,
        params: CKKSParams,
        key_id: str,
        rotation_steps: frozenset[int] | set[int] | list[int],
        conjugation: bool,
        noise_std: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(params, key_id, rotation_steps, conjugation)
        self.noise_std = float(noise_std)
        self._rng = np.random.default_rng(seed)

    def attach_secret_bytes(self, blob: bytes) -> None:
        """The simulator's "secret" is its key id: anything else belongs to another key set."""
        if bytes(blob) != self.key_id.encode():
            raise KeyMismatchError(
                f"the simulator secret does not belong to key set {self.key_id[:16]}"
            )
        self.attach_secret()

    def secret_key_bytes(self) -> bytes:
        return self.key_id.encode()

    def _noise(self, v: np.ndarray) -> np.ndarray:
        if self.noise_std <= 0:
            return v
        n = self._rng.normal(0.0, self.noise_std, size=(2, v.size))
        return v + n[0] + 1j * n[1]

    def _encrypt_raw(self, vec: np.ndarray) -> np.ndarray:
        return self._noise(vec.astype(np.complex128, copy=True))

    def _decrypt_raw(self, data: np.ndarray, level: int) -> np.ndarray:
        return data.copy()

    def _add_raw(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + b

    def _sub_raw(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a - b

    def _neg_raw(self, a: np.ndarray) -> np.ndarray:
        return -a

    def _add_plain_raw(self, a: np.ndarray, vec: np.ndarray, level: int, scale: float) -> np.ndarray:
        return a + vec

    def _mul_plain_raw(self, a: np.ndarray, vec: Any, level: int, pt_scale: float) -> np.ndarray:
        return a * vec

    def _mul_raw(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a * b

    def _square_raw(self, a: np.ndarray) -> np.ndarray:
        return a * a

    def _rescale_raw(self, a: np.ndarray, level: int) -> np.ndarray:
        return self._noise(a)

    def _force_scale_raw(self, a: np.ndarray, true_scale: float, declared: float) -> np.ndarray:
        return a * (true_scale / declared)

    def _mod_switch_raw(self, a: np.ndarray, from_level: int, to_level: int) -> np.ndarray:
        return a

    def _rotate_raw(self, a: np.ndarray, step: int) -> np.ndarray:
        return self._noise(np.roll(a, -step))

    def _conjugate_raw(self, a: np.ndarray) -> np.ndarray:
        return self._noise(np.conj(a))

    def _serialize_raw(self, a: np.ndarray) -> bytes:
        return np.asarray(a, dtype="<c16").tobytes()

    def _deserialize_raw(self, blob: bytes, level: int) -> np.ndarray:
        from ..errors import EnvelopeError

        if len(blob) != 16 * self.slots:
            raise EnvelopeError(
                f"simulated ciphertext payload has {len(blob)} bytes, expected {16 * self.slots}"
            )
        return np.frombuffer(blob, dtype="<c16").astype(np.complex128)
