"""The uniform model API: :class:`PrivateModel` and :class:`PrivacyReport`.

Every privkit application (the encrypted apnea detector, the DP spiking VAE, the IMU anonymiser)
is a :class:`PrivateModel`: ``fit``, ``evaluate``, ``privacy_report``, ``save`` and ``load``
behave the same way everywhere, and the report says which privacy guarantee holds.

>>> r = PrivacyReport(kind="dp", epsilon=3.2, delta=1e-5, accountant="prv", noise_multiplier=1.1,
...                   max_grad_norm=1.0, sample_rate=0.01, steps=1000)
>>> r.kind, r.epsilon
('dp', 3.2)
>>> "epsilon=3.2" in r.summary()
True
"""

from __future__ import annotations

import abc
import dataclasses
import io
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, Literal

from .errors import DataFormatError, EnvelopeError, ParameterError

__all__ = ["PrivateModel", "PrivacyReport", "save_state", "load_state", "atomic_write_bytes"]

ReportKind = Literal["fhe", "dp", "anonymisation", "none"]


@dataclasses.dataclass
class PrivacyReport:
    """What privacy a model gives, in numbers a reader can check.

    Only the fields of the report's ``kind`` are filled; the others stay ``None``.

    * ``fhe``: the scheme, ring dimension, modulus chain, security level (from the HE standard
      table) and whether the user opted out of 128-bit security; ``server_sees`` says what the
      server learns (ciphertext sizes and the program, never values).
    * ``dp``: epsilon *as computed by the accountant for the noise actually used*, delta, the
      accountant, noise multiplier, clipping norm, sample rate and number of steps.
    * ``anonymisation``: re-identification accuracy before/after (frozen judge, the paper's
      protocol) and of an attacker retrained on anonymised data, with chance level, and the
      utility (activity recognition) kept.
    """

    kind: ReportKind
    # fhe
    scheme: str | None = None
    poly_degree: int | None = None
    coeff_modulus_bits: tuple[int, ...] | None = None
    security_bits: int | None = None
    secure: bool | None = None
    server_sees: str | None = None
    # dp
    epsilon: float | None = None
    delta: float | None = None
    accountant: str | None = None
    noise_multiplier: float | None = None
    max_grad_norm: float | None = None
    sample_rate: float | None = None
    steps: int | None = None
    # anonymisation
    reid_accuracy_before: float | None = None
    reid_accuracy_after: float | None = None
    reid_retrained_accuracy: float | None = None
    reid_chance: float | None = None
    har_accuracy_before: float | None = None
    har_accuracy_after: float | None = None
    judge: str | None = None
    # all kinds
    warnings: list[str] = dataclasses.field(default_factory=list)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("fhe", "dp", "anonymisation", "none"):
            raise ParameterError(
                f"PrivacyReport.kind must be 'fhe', 'dp', 'anonymisation' or 'none', got {self.kind!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The non-empty fields as a JSON-serialisable dict."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None or (f.name in ("warnings", "details") and not v):
                continue
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def summary(self) -> str:
        """One human-readable paragraph; what the CLI prints."""
        if self.kind == "fhe":
            sec = (
                f"{self.security_bits}-bit security (HE standard, classical)"
                if self.secure
                else f"INSECURE: below 128-bit security (estimated {self.security_bits} bits), "
                "opted out explicitly"
            )
            text = (
                f"FHE ({self.scheme}): N={self.poly_degree}, log Q={sum(self.coeff_modulus_bits or ())}"
                f" bits, {sec}."
            )
            if self.server_sees:
                text += f" Server sees: {self.server_sees}."
        elif self.kind == "dp":
            text = (
                f"DP-SGD: epsilon={self.epsilon:.4g} at delta={self.delta:.3g} "
                f"({self.accountant} accountant), noise multiplier {self.noise_multiplier}, "
                f"clip {self.max_grad_norm}, sample rate {self.sample_rate:.4g}, {self.steps} steps."
            )
        elif self.kind == "anonymisation":
            parts = [f"judge: {self.judge}"] if self.judge else []
            if self.reid_accuracy_before is not None:
                parts.append(
                    f"ReID accuracy {self.reid_accuracy_before:.3f} -> {self.reid_accuracy_after:.3f}"
                )
            if self.reid_retrained_accuracy is not None:
                parts.append(f"retrained attacker {self.reid_retrained_accuracy:.3f}")
            if self.reid_chance is not None:
                parts.append(f"chance {self.reid_chance:.3f}")
            if self.har_accuracy_before is not None:
                parts.append(
                    f"HAR accuracy {self.har_accuracy_before:.3f} -> {self.har_accuracy_after:.3f}"
                )
            text = "Anonymisation (no formal guarantee; empirical): " + ", ".join(parts) + "."
        else:
            text = "No privacy protection."
        for w in self.warnings:
            text += f"\nWARNING: {w}"
        return text


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


_MAGIC = "privkit-model"


def save_state(
    path: str | os.PathLike, kind: str, state: dict[str, Any], *, sign_with: Any = None
) -> None:
    """Save a model state dict (tensors, numbers, strings, nested dicts) atomically.

    The file is an envelope of kind ``"model"`` (:mod:`privkit.fhe.envelope`) bound to the
    model ``kind``: a SHA-256 digest catches any corruption, and ``sign_with`` (an Ed25519
    private key) adds the owner's signature for whoever receives the checkpoint.
    """
    import torch

    from .fhe.envelope import seal_envelope

    buf = io.BytesIO()
    torch.save({"magic": _MAGIC, "kind": kind, "format": 1, "state": state}, buf)
    blob = seal_envelope(
        "model", buf.getvalue(), kind, meta={"model_kind": kind, "format": 1}, sign_with=sign_with
    )
    atomic_write_bytes(path, blob)


def load_state(path: str | os.PathLike, kind: str, *, verify_with: Any = None) -> dict[str, Any]:
    """Load what :func:`save_state` wrote; refuse files of another kind with a clear error.

    A missing file, one that is not a privkit model envelope, one holding another model kind,
    or a truncated or corrupted one raises :class:`~privkit.errors.DataFormatError` (the
    envelope's error is its ``__cause__``). With ``verify_with`` (the owner's Ed25519 public
    key) an unsigned or wrongly signed checkpoint raises :class:`~privkit.errors.EnvelopeError`.
    """
    import torch

    from .fhe.envelope import is_envelope, open_envelope

    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"model file {str(path)!r} does not exist")
    blob = path.read_bytes()
    if not is_envelope(blob):
        raise DataFormatError(
            f"{str(path)!r} is not a privkit model file (no privkit envelope; checkpoints "
            "written before envelopes existed must be re-saved)"
        )
    try:
        env = open_envelope(blob, verify_with=verify_with)
    except EnvelopeError as e:
        if getattr(e, "reason", None) == "signature":
            raise
        raise DataFormatError(f"{str(path)!r} is not a usable privkit model file: {e}") from e
    if env.kind != "model":
        raise DataFormatError(
            f"{str(path)!r} is a privkit {env.kind!r} envelope, not a model checkpoint"
        )
    if env.fingerprint != kind or env.meta.get("model_kind") != kind:
        raise DataFormatError(
            f"{str(path)!r} holds a {env.fingerprint!r} model, not a {kind!r}; load it with the "
            "matching class"
        )
    try:
        inner = torch.load(io.BytesIO(env.payload), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt file
        raise DataFormatError(
            f"{str(path)!r} is not a privkit model file (could not unpickle it: {e})"
        ) from e
    if not isinstance(inner, dict) or inner.get("magic") != _MAGIC or inner.get("kind") != kind:
        raise DataFormatError(f"{str(path)!r} is not a privkit model file (no privkit header)")
    return inner["state"]


class PrivateModel(abc.ABC):
    """Abstract base of every privkit application model.

    Subclasses implement ``fit``, ``evaluate``, ``privacy_report`` and the two state hooks
    ``_get_state`` / ``_from_state``; ``save`` and ``load`` are shared and atomic.
    """

    #: identifies the model kind inside saved files
    model_kind: ClassVar[str] = "private-model"

    @abc.abstractmethod
    def fit(self, *args: Any, **kwargs: Any) -> PrivateModel:
        """Train the model; returns ``self``."""

    @abc.abstractmethod
    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        """Utility (and, where it applies, privacy) metrics on held-out data."""

    @abc.abstractmethod
    def privacy_report(self) -> PrivacyReport:
        """Which guarantee holds, with its numbers."""

    @abc.abstractmethod
    def _get_state(self) -> dict[str, Any]:
        """Everything needed to rebuild the fitted model (tensors, config, accountant state)."""

    @classmethod
    @abc.abstractmethod
    def _from_state(cls, state: dict[str, Any]) -> PrivateModel:
        """Rebuild a model from what :meth:`_get_state` returned."""

    def save(self, path: str | os.PathLike, *, sign_with: Any = None) -> None:
        """Save the fitted model to ``path`` (atomic: a crash never leaves a partial file).

        The file is a ``"model"`` envelope; ``sign_with`` (Ed25519 private key) signs it.
        """
        save_state(path, self.model_kind, self._get_state(), sign_with=sign_with)

    @classmethod
    def load(cls, path: str | os.PathLike, *, verify_with: Any = None) -> PrivateModel:
        """Load a model saved by :meth:`save`; ``verify_with`` requires the owner's signature."""
        return cls._from_state(load_state(path, cls.model_kind, verify_with=verify_with))
