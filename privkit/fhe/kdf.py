"""Password key derivation for sealed key files (:mod:`privkit.fhe.keyfile`).

scrypt (:class:`ScryptKDF`, the default) or Argon2id (:class:`Argon2idKDF`, when the installed
``cryptography`` has it) stretch the password; :func:`_split_master` splits the derived master key
with HKDF-SHA256 into the AES-256 key and the password check stored in the header. Failures raise
:class:`~privkit.errors.KeyFileError` with a ``reason`` attribute.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from typing import Any

from ..errors import KeyFileError, ParameterError

__all__ = ["KDF", "Argon2idKDF", "ScryptKDF", "argon2id_available"]

_CHECK_LEN = 16
_INFO_KEY = b"privkit keyfile v1 aes-256-gcm key"
_INFO_CHECK = b"privkit keyfile v1 password check"


def _fail(reason: str, message: str) -> KeyFileError:
    err = KeyFileError(message)
    err.reason = reason  # type: ignore[attr-defined]
    return err


# -- key derivation ------------------------------------------------------------------------------
def argon2id_available() -> bool:
    """True when the installed ``cryptography`` (>= 44, with OpenSSL >= 3.2) has Argon2id."""
    try:
        from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

        Argon2id(salt=b"\0" * 16, length=32, iterations=1, lanes=1, memory_cost=8).derive(b"x")
        return True
    except Exception:  # ImportError, UnsupportedAlgorithm
        return False


@dataclasses.dataclass(frozen=True)
class ScryptKDF:
    """scrypt cost: ``n`` (CPU/memory, a power of two), ``r`` (block size), ``p`` (parallelism).

    Memory is ``128 * n * r`` bytes: 128 MiB for the default ``n=2**17, r=8``.
    """

    n: int = 2**17
    r: int = 8
    p: int = 1

    name = "scrypt"

    def __post_init__(self) -> None:
        n, r, p = self.n, self.r, self.p
        if type(n) is not int or n < 2**10 or n > 2**20 or n & (n - 1):
            raise ParameterError(f"scrypt n must be a power of two in [2**10, 2**20], got {n!r}")
        if type(r) is not int or not 1 <= r <= 32:
            raise ParameterError(f"scrypt r must be in 1..32, got {r!r}")
        if type(p) is not int or not 1 <= p <= 16:
            raise ParameterError(f"scrypt p must be in 1..16, got {p!r}")
        if 128 * n * r > 1 << 30:
            raise ParameterError(f"scrypt n*r too large ({128 * n * r} bytes of memory > 1 GiB)")

    def derive(self, password: bytes, salt: bytes) -> bytes:
        from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

        return Scrypt(salt=salt, length=32, n=self.n, r=self.r, p=self.p).derive(password)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "n": self.n, "r": self.r, "p": self.p}

    def describe(self) -> str:
        mib = 128 * self.n * self.r >> 20
        return f"scrypt n=2^{self.n.bit_length() - 1} r={self.r} p={self.p} ({mib} MiB)"


@dataclasses.dataclass(frozen=True)
class Argon2idKDF:
    """Argon2id cost: ``iterations`` (t), ``lanes`` (p), ``memory_cost`` in KiB (m)."""

    iterations: int = 3
    lanes: int = 4
    memory_cost: int = 64 * 1024

    name = "argon2id"

    def __post_init__(self) -> None:
        t, p, m = self.iterations, self.lanes, self.memory_cost
        if type(t) is not int or not 1 <= t <= 64:
            raise ParameterError(f"argon2id iterations must be in 1..64, got {t!r}")
        if type(p) is not int or not 1 <= p <= 64:
            raise ParameterError(f"argon2id lanes must be in 1..64, got {p!r}")
        if type(m) is not int or not 8 * p <= m <= 1 << 20:
            raise ParameterError(
                f"argon2id memory_cost (KiB) must be in [8*lanes, 2**20] (1 GiB), got {m!r}"
            )

    def derive(self, password: bytes, salt: bytes) -> bytes:
        try:
            from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
        except ImportError as e:
            raise _fail(
                "kdf-unavailable",
                "this key file uses Argon2id, which the installed 'cryptography' lacks; "
                "upgrade it (>= 44) to open the file",
            ) from e
        try:
            return Argon2id(
                salt=salt,
                length=32,
                iterations=self.iterations,
                lanes=self.lanes,
                memory_cost=self.memory_cost,
            ).derive(password)
        except Exception as e:  # UnsupportedAlgorithm on an OpenSSL without Argon2
            raise _fail("kdf-unavailable", f"Argon2id is unavailable here: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "iterations": self.iterations,
            "lanes": self.lanes,
            "memory_cost": self.memory_cost,
        }

    def describe(self) -> str:
        return f"argon2id t={self.iterations} p={self.lanes} m={self.memory_cost >> 10} MiB"


KDF = ScryptKDF | Argon2idKDF


def _kdf_from_dict(d: Any) -> KDF:
    if not isinstance(d, dict):
        raise ValueError("kdf is not an object")
    name = d.get("name")
    fields = {"scrypt": {"name", "n", "r", "p"}, "argon2id": {"name", "iterations", "lanes", "memory_cost"}}
    if name in fields and set(d) != fields[name]:
        raise ValueError(f"kdf fields {sorted(map(str, d))[:6]} differ from {sorted(fields[name])}")
    if name == "scrypt":
        return ScryptKDF(n=d["n"], r=d["r"], p=d["p"])
    if name == "argon2id":
        return Argon2idKDF(
            iterations=d["iterations"], lanes=d["lanes"], memory_cost=d["memory_cost"]
        )
    raise ValueError(f"unknown kdf {name!r}")


def _password_bytes(password: str | bytes) -> bytes:
    if isinstance(password, str):
        # NFC: the same password typed on two keyboards gives the same bytes
        password = unicodedata.normalize("NFC", password).encode("utf-8")
    elif isinstance(password, (bytes, bytearray)):
        password = bytes(password)
    else:
        raise ParameterError(f"password must be str or bytes, got {type(password).__name__}")
    if not password:
        raise ParameterError("the password is empty; choose a non-empty password")
    return password


def _split_master(master: bytes, salt: bytes) -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_INFO_KEY).derive(master)
    check = HKDF(algorithm=hashes.SHA256(), length=_CHECK_LEN, salt=salt, info=_INFO_CHECK).derive(
        master
    )
    return key, check
