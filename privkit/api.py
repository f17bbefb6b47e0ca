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
from pathlib import Path
from typing import Any, ClassVar, Literal

from .errors import DataFormatError, ParameterError

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


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, fsync, rename.

    A crash mid-write leaves the old file (or none), never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


_MAGIC = "privkit-model"


def save_state(path: str | os.PathLike, kind: str, state: dict[str, Any]) -> None:
    """Save a model state dict (tensors, numbers, strings, nested dicts) atomically."""
    import torch

    buf = io.BytesIO()
    torch.save({"magic": _MAGIC, "kind": kind, "format": 1, "state": state}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state(path: str | os.PathLike, kind: str) -> dict[str, Any]:
    """Load what :func:`save_state` wrote; refuse files of another kind with a clear error."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"model file {str(path)!r} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt file
        raise DataFormatError(
            f"{str(path)!r} is not a privkit model file (could not unpickle it: {e})"
        ) from e
    if not isinstance(blob, dict) or blob.get("magic") != _MAGIC:
        raise DataFormatError(f"{str(path)!r} is not a privkit model file (no privkit header)")
    if blob.get("kind") != kind:
        raise DataFormatError(
            f"{str(path)!r} holds a {blob.get('kind')!r} model, not a {kind!r}; load it with the "
            "matching class"
        )
    return blob["state"]


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

    def save(self, path: str | os.PathLike) -> None:
        """Save the fitted model to ``path`` (atomic: a crash never leaves a partial file)."""
        save_state(path, self.model_kind, self._get_state())

    @classmethod
    def load(cls, path: str | os.PathLike) -> PrivateModel:
        """Load a model saved by :meth:`save`."""
        return cls._from_state(load_state(path, cls.model_kind))
