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
from pathlib import Path
from typing import Any, ClassVar, Literal

from .envelope import atomic_write_bytes  # re-exported: it lives with the container now
from .errors import DataFormatError, EnvelopeError, ParameterError, PrivkitError

__all__ = ["PrivateModel", "PrivacyReport", "save_state", "load_state", "atomic_write_bytes",
           "check_config", "check_plain", "check_state_tensors", "MAX_STATE_ELEMENTS"]

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


_MAGIC = "privkit-model"


def save_state(
    path: str | os.PathLike, kind: str, state: dict[str, Any], *, sign_with: Any = None
) -> None:
    """Save a model state dict (tensors, numbers, strings, nested dicts) atomically.

    The file is an envelope of kind ``"model"`` (:mod:`privkit.envelope`) bound to the
    model ``kind``: a SHA-256 digest catches any corruption, and ``sign_with`` (an Ed25519
    private key) adds the owner's signature for whoever receives the checkpoint.
    """
    import torch

    from .envelope import seal_envelope

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

    from .envelope import is_envelope, open_envelope

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


#: the most tensor elements a loaded model may declare (1 GiB of float32)
MAX_STATE_ELEMENTS = 1 << 28


def _check_value(v: Any, default: Any, lo: float, hi: float, what: str) -> Any:
    def number(x: Any, integral: bool) -> Any:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise DataFormatError(f"{what} must be a number, got {type(x).__name__}")
        if integral and not isinstance(x, int):
            raise DataFormatError(f"{what} must be an integer, got {x!r}")
        if not (x == x and lo <= x <= hi):  # NaN fails the first test, inf the second
            raise DataFormatError(f"{what} = {x!r} is outside {lo:g}..{hi:g}")
        return x

    if isinstance(default, bool):
        if not isinstance(v, bool):
            raise DataFormatError(f"{what} must be true or false, got {v!r}"[:200])
        return v
    if isinstance(default, int):
        return number(v, True)
    if isinstance(default, float):
        return float(number(v, False))
    if isinstance(default, tuple):
        if not isinstance(v, (list, tuple)) or len(v) > 16:
            raise DataFormatError(f"{what} must be a list of at most 16 values")
        return tuple(number(x, all(isinstance(d, int) for d in default)) for x in v)
    # str or None defaults (choices are checked by the config class itself)
    if v is None and default is None:
        return v
    if isinstance(v, str):
        if len(v) > 256:
            raise DataFormatError(f"{what} is a string of {len(v)} characters")
        return v
    return number(v, False)


def check_config(cls: type, d: Any, limits: dict[str, tuple[float, float]], where: str) -> Any:
    """Build the config dataclass ``cls`` from the dict ``d`` read from a file, after checking
    every field: known names only, the type of the field's default (bool, int, float, list of
    numbers, short string), finite numbers inside ``limits[name]`` (``(lo, hi)``; default
    +-1e9). Raises :class:`~privkit.errors.DataFormatError` naming ``where`` and the field.

    >>> import dataclasses
    >>> @dataclasses.dataclass
    ... class C:
    ...     channels: int = 4
    >>> check_config(C, {"channels": 8}, {"channels": (1, 4096)}, "demo").channels
    8
    >>> check_config(C, {"channels": 40000}, {"channels": (1, 4096)}, "demo")
    Traceback (most recent call last):
    ...
    privkit.errors.DataFormatError: demo: config field 'channels' = 40000 is outside 1..4096
    """
    if not isinstance(d, dict):
        raise DataFormatError(f"{where}: the config is a {type(d).__name__}, not a dict")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in d if k not in fields]
    if unknown:
        raise DataFormatError(f"{where}: unknown config fields {[str(k)[:40] for k in unknown[:5]]}")
    out = {}
    for k, v in d.items():
        f = fields[k]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        lo, hi = limits.get(k, (-1e9, 1e9))
        out[k] = _check_value(v, default, lo, hi, f"{where}: config field {k!r}")
    try:
        return cls(**out)
    except PrivkitError as e:
        raise DataFormatError(f"{where}: invalid config: {e}") from e


def check_plain(obj: Any, where: str, *, kind: type | tuple[type, ...] | None = None,
                max_items: int = 1_000_000) -> Any:
    """Check that ``obj`` (read from a file) is plain data: dicts with string keys, lists,
    strings, finite-or-not numbers, bools and None, at most 32 levels deep and ``max_items``
    entries in all; ``kind`` optionally fixes the top-level type. Returns ``obj``.

    >>> check_plain([{"loss": 0.5}], "history", kind=list)
    [{'loss': 0.5}]
    >>> check_plain({"a": object()}, "history")
    Traceback (most recent call last):
    ...
    privkit.errors.DataFormatError: history: unexpected object of type object
    """
    if kind is not None and not isinstance(obj, kind):
        raise DataFormatError(f"{where}: expected {getattr(kind, '__name__', kind)}, got "
                              f"{type(obj).__name__}")
    count = 0
    stack = [(obj, 0)]
    while stack:
        o, depth = stack.pop()
        count += 1
        if count > max_items or depth > 32:
            raise DataFormatError(f"{where}: more than {max_items} entries or 32 levels")
        if isinstance(o, dict):
            for k, v in o.items():
                if not isinstance(k, str):
                    raise DataFormatError(f"{where}: a key of type {type(k).__name__}")
                stack.append((v, depth + 1))
        elif isinstance(o, (list, tuple)):
            stack.extend((v, depth + 1) for v in o)
        elif not (o is None or isinstance(o, (str, int, float, bool))):
            raise DataFormatError(f"{where}: unexpected object of type {type(o).__name__}")
    return obj


def check_state_tensors(expected: dict[str, Any], got: Any, where: str, *,
                        max_elements: int = MAX_STATE_ELEMENTS) -> None:
    """Check saved tensors ``got`` against ``expected`` (the state dict of the same model built
    on torch's ``meta`` device, which allocates nothing) before a real model is built: the
    model's size against ``max_elements``, the same names, shapes and kinds of dtype, and
    finite floating-point values. Raises :class:`~privkit.errors.DataFormatError`."""
    import torch

    n = sum(int(t.numel()) for t in expected.values())
    if n > max_elements:
        raise DataFormatError(f"{where}: the config declares a model of {n} tensor elements "
                              f"(limit {max_elements})")
    if not isinstance(got, dict):
        raise DataFormatError(f"{where}: the weights are a {type(got).__name__}, not a dict")
    missing = sorted(set(expected) - set(got))
    extra = sorted(str(k)[:40] for k in set(got) - set(expected))
    if missing or extra:
        raise DataFormatError(f"{where}: weights do not match the config (missing "
                              f"{missing[:5]}, unexpected {extra[:5]})")
    for k, ref in expected.items():
        t = got[k]
        if not isinstance(t, torch.Tensor):
            raise DataFormatError(f"{where}: weight {k!r} is a {type(t).__name__}, not a tensor")
        if tuple(t.shape) != tuple(ref.shape):
            raise DataFormatError(f"{where}: weight {k!r} has shape {tuple(t.shape)}, the config "
                                  f"needs {tuple(ref.shape)}")
        if t.layout != torch.strided or t.is_floating_point() != ref.is_floating_point() \
                or t.is_complex():
            raise DataFormatError(f"{where}: weight {k!r} has dtype {t.dtype}, expected "
                                  f"{ref.dtype}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise DataFormatError(f"{where}: weight {k!r} holds NaN or infinite values")


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
        """Load a model saved by :meth:`save`; ``verify_with`` requires the owner's signature.

        A well-formed file whose state is not what this class saves (missing or extra entries,
        wrong types, a configuration outside the limits, tensors of the wrong shape) raises
        :class:`~privkit.errors.DataFormatError` naming the file; nothing is built from a
        configuration before it has been checked.
        """
        state = load_state(path, cls.model_kind, verify_with=verify_with)
        try:
            if not isinstance(state, dict):
                raise DataFormatError(f"the state is a {type(state).__name__}, not a dict")
            return cls._from_state(state)
        except (PrivkitError, TypeError, KeyError, ValueError, IndexError, AttributeError,
                RuntimeError, OverflowError, MemoryError, RecursionError) as e:
            if isinstance(e, EnvelopeError):
                raise
            raise DataFormatError(
                f"{str(path)!r} is not a usable {cls.model_kind!r} checkpoint: "
                f"{type(e).__name__ + ': ' if not isinstance(e, PrivkitError) else ''}{e}"
            ) from e
