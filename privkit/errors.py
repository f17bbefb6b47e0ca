"""The privkit error hierarchy.

Every error privkit raises on purpose derives from :class:`PrivkitError`, and every message says
what was wrong, what was received, and how to fix it. Raw exceptions of the libraries underneath
(SEAL's ``ValueError("scale out of bounds")`` and friends) are wrapped with ``raise ... from e``.

>>> from privkit.errors import DepthExhaustedError, PrivkitError
>>> err = DepthExhaustedError(needed=9, available=7, where="PolyReLU 'act1'")
>>> isinstance(err, PrivkitError), err.needed, err.available
(True, 9, 7)
"""

from __future__ import annotations

__all__ = [
    "PrivkitError",
    "ParameterError",
    "DepthExhaustedError",
    "MissingKeyError",
    "SecretKeyRequiredError",
    "KeyMismatchError",
    "SlotOverflowError",
    "ShapeError",
    "UnsupportedLayerError",
    "DataFormatError",
    "PrivacyBudgetError",
    "KeyFileError",
    "EnvelopeError",
    "BackendError",
    "SecretKeyExposureError",
    "PlanMismatchError",
    "MissingExtraError",
    "ServerBusyError",
    "WorkerCrashedError",
    "RemoteError",
    "InputRangeError",
]


class PrivkitError(Exception):
    """Base class of every error privkit raises on purpose."""


class ParameterError(PrivkitError, ValueError):
    """Invalid or insecure encryption / training parameters."""


class DepthExhaustedError(PrivkitError):
    """A computation needs more multiplicative levels than the ciphertext has left."""

    def __init__(self, needed: int, available: int, where: str = "", hint: str = "") -> None:
        self.needed = int(needed)
        self.available = int(available)
        self.where = where
        loc = f" in {where}" if where else ""
        fix = hint or (
            "use a preset with more levels (e.g. 'n32768'), lower a polynomial degree, "
            "or remove a layer"
        )
        super().__init__(
            f"multiplicative depth exhausted{loc}: needs {self.needed} more level(s) but the "
            f"ciphertext has {self.available} left; {fix}"
        )


class MissingKeyError(PrivkitError):
    """A rotation (Galois) or relinearisation key that the operation needs was not generated."""


class SecretKeyRequiredError(PrivkitError):
    """Decryption was attempted on an object that holds no secret key (a server-side object)."""


class KeyMismatchError(PrivkitError, ValueError):
    """Ciphertexts (or a ciphertext and a backend) come from different key sets or parameters."""


class SlotOverflowError(PrivkitError, ValueError):
    """More values than the ciphertext has slots."""


class ShapeError(PrivkitError, ValueError):
    """An array or ciphertext has the wrong shape or length for the operation."""


class UnsupportedLayerError(PrivkitError, TypeError):
    """A model contains a layer that cannot be compiled to an encrypted program."""


class DataFormatError(PrivkitError, ValueError):
    """A data file is missing, truncated, or not in the expected format."""


class PrivacyBudgetError(PrivkitError, ValueError):
    """A differential-privacy target cannot be reached (or the accountant cannot compute it)."""


class KeyFileError(PrivkitError):
    """A sealed key file is unreadable: wrong password, truncated or tampered with."""


class EnvelopeError(PrivkitError, ValueError):
    """An envelope (serialised artefact) is malformed, tampered with, or bound to other keys."""


class BackendError(PrivkitError, RuntimeError):
    """The encryption library refused an operation; the message says which and why."""


class SecretKeyExposureError(PrivkitError, TypeError):
    """Secret key material (a ``KeySet``, a sealed key file) was passed where only public material
    (a public bundle) belongs; send ``keys.public_bundle()`` in an envelope instead."""


class PlanMismatchError(EnvelopeError):
    """A saved program, rebuilt from its data, compiles to another plan than the one saved (the
    file was written by another privkit, or altered); the message names the first difference."""


class MissingExtraError(PrivkitError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class ServerBusyError(PrivkitError, RuntimeError):
    """The inference server's queue is full; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = float(retry_after)


class WorkerCrashedError(PrivkitError, RuntimeError):
    """A worker process died while computing a request; nothing of it was returned."""


class RemoteError(PrivkitError):
    """An inference server answered with an error; ``status`` and ``error`` (the server-side
    error type) say which."""

    def __init__(self, message: str, status: int = 0, error: str = "") -> None:
        super().__init__(message)
        self.status = int(status)
        self.error = error


class InputRangeError(PrivkitError, ValueError):
    """An input lies outside the range the model was calibrated on (its polynomial
    approximations would give a wrong answer without any sign of it)."""
