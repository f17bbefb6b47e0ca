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
    "AccountantStateError",
    "CheckpointError",
    "PrivacyBudgetExhaustedError",
    "SecretKeyExposureError",
    "PlanMismatchError",
    "ServerBusyError",
    "WorkerCrashedError",
    "RemoteError",
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


class AccountantStateError(ParameterError):
    """A privacy-accountant history or DP setting is invalid: NaN / infinite noise, a sample rate
    outside (0, 1], a negative or non-integer step count, a delta outside (0, 1), a non-finite
    clipping norm, or a restored state that would lower the privacy spent."""


class CheckpointError(DataFormatError):
    """A DP training checkpoint is malformed, or belongs to another run (other data-set size,
    sample rate or accountant)."""


class PrivacyBudgetExhaustedError(PrivacyBudgetError):
    """``stop_at_budget=True`` refused an optimizer step that would spend more than the budget;
    the model holds the parameters of the last step within it."""


# -- security downgrades, numeric range and precision; every warning; DP layers, optional deps ----


class SecurityDowngradeError(PrivkitError, ValueError):
    """A less secure mode (plaintext key file, simulator or sub-128-bit bundle) was not opted into.

    The message names the keyword argument that accepts the downgrade explicitly.
    """


class PrecisionError(PrivkitError, ArithmeticError):
    """A decrypted value exceeds what the CKKS scale can hold: the computation overflowed it."""


class InputRangeError(PrivkitError, ValueError):
    """An input lies outside the range a program (or approximation) was calibrated for."""


class PrivkitWarning(UserWarning):
    """Base class of the warnings privkit issues on purpose."""


class ScaleOverflowWarning(PrivkitWarning):
    """A ciphertext's tracked magnitude bound exceeds what its level and scale can hold.

    Issued *before* the result is used: if the bound is reached, decryption gives garbage (and
    :class:`PrecisionError` when the client decrypts).
    """


class InputRangeWarning(PrivkitWarning):
    """Inputs lie outside the range a program was calibrated for (results may be wrong)."""


class RangeWarning(PrivkitWarning):
    """A plaintext twin saw inputs outside the range its approximation was calibrated for."""


class PrivacyWarning(PrivkitWarning):
    """The privacy guarantee is weaker than it looks (tiny noise, no Poisson sampling, a spent
    epsilon past the target...)."""


class InsecureKeyFileWarning(PrivkitWarning):
    """A key set is being written (or was read) without encryption."""


class DPCompatibilityError(UnsupportedLayerError):
    """A module cannot be trained with DP-SGD as it is; ``problems`` lists (name, reason, fix)."""

    def __init__(self, problems: list[tuple[str, str, str]]) -> None:
        self.problems = list(problems)
        lines = [f"  - {name or '<root>'}: {why}; fix: {fix}" for name, why, fix in self.problems]
        super().__init__(
            f"the model cannot be trained with DP-SGD ({len(self.problems)} problem(s)):\n"
            + "\n".join(lines)
        )


__all__ += [
    "SecurityDowngradeError",
    "PrecisionError",
    "InputRangeError",
    "PrivkitWarning",
    "ScaleOverflowWarning",
    "InputRangeWarning",
    "RangeWarning",
    "PrivacyWarning",
    "InsecureKeyFileWarning",
    "DPCompatibilityError",
]


class MissingDependencyError(PrivkitError, ImportError):
    """An optional dependency of the feature in use is not installed; the message names the
    pip extra that brings it (``pip install 'privkit[ecg]'``)."""

    def __init__(self, module: str, extra: str, feature: str = "") -> None:
        self.module = module
        self.extra = extra
        what = f" for {feature}" if feature else ""
        super().__init__(
            f"{module!r} is needed{what} but is not installed; install it with "
            f"pip install 'privkit[{extra}]' (or pip install 'privkit[all]')",
            name=module,
        )


__all__ += ["MissingDependencyError"]


class SecretKeyExposureError(PrivkitError, TypeError):
    """Secret key material (a ``KeySet``, a sealed key file) was passed where only public material
    (a public bundle) belongs; send ``keys.public_bundle()`` in an envelope instead."""


class PlanMismatchError(EnvelopeError):
    """A saved program, rebuilt from its data, compiles to another plan than the one saved (the
    file was written by another privkit, or altered); the message names the first difference."""


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


class WorkerFailure(PrivkitError):
    """An error raised inside a deploy worker, carried back by type name and message."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error


__all__ += ["WorkerFailure"]
