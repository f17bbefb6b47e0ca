"""DP-SGD settings: :class:`DPConfig` (validated on construction) and the threshold above which an
epsilon says nothing useful (:data:`MEANINGFUL_EPSILON`, with the message reports give for it)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..errors import AccountantStateError, ParameterError
from .accounting import validate_delta

__all__ = ["MEANINGFUL_EPSILON", "DPConfig", "tiny_noise_message"]

#: Above this epsilon a DP guarantee says nothing useful; reports flag it loudly.
MEANINGFUL_EPSILON = 100.0


@dataclasses.dataclass
class DPConfig:
    """How to train with DP-SGD: exactly one of ``target_epsilon`` / ``noise_multiplier``.

    ``delta=None`` means 1/N (N = training-set size), the paper's choice; a delta above 1/N
    permits releasing a whole record and is flagged.
    """

    target_epsilon: float | None = None
    noise_multiplier: float | None = None
    delta: float | None = None
    max_grad_norm: float = 1.0
    epochs: int | None = 1
    batch_size: int = 64
    accountant: str = "prv"
    poisson_sampling: bool = True
    grad_sample_mode: str = "fast"

    def __post_init__(self) -> None:
        if (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise ParameterError(
                "DPConfig needs exactly one of target_epsilon or noise_multiplier, got "
                f"target_epsilon={self.target_epsilon}, noise_multiplier={self.noise_multiplier}"
            )
        if self.noise_multiplier is not None and not (
            math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0
        ):
            raise AccountantStateError(
                f"noise_multiplier must be finite and >= 0, got {self.noise_multiplier}"
            )
        if self.target_epsilon is not None and not (
            math.isfinite(self.target_epsilon) and self.target_epsilon > 0
        ):
            raise ParameterError(f"target_epsilon must be > 0, got {self.target_epsilon}")
        if self.delta is not None:
            validate_delta(self.delta)
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise AccountantStateError(
                f"max_grad_norm (the clipping norm) must be finite and > 0, got "
                f"{self.max_grad_norm}: without a finite clip no noise scale bounds one record's "
                "influence"
            )
        if self.epochs is None:
            if self.target_epsilon is not None:
                raise ParameterError(
                    "target_epsilon needs epochs (the noise is calibrated for that schedule); "
                    "give epochs=..., or give noise_multiplier instead"
                )
        elif int(self.epochs) < 1:
            raise ParameterError(f"epochs must be >= 1, got {self.epochs}")
        if int(self.batch_size) < 1:
            raise ParameterError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.accountant not in ("prv", "rdp"):
            raise ParameterError(f"accountant must be 'prv' or 'rdp', got {self.accountant!r}")
        if self.grad_sample_mode not in ("fast", "hooks", "functorch", "ew"):
            raise ParameterError(
                "grad_sample_mode must be 'fast', 'hooks', 'functorch' or 'ew', got "
                f"{self.grad_sample_mode!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def tiny_noise_message(noise_multiplier: float, epsilon: float) -> str:
    return (
        f"NO MEANINGFUL PRIVACY: noise multiplier {noise_multiplier:g} gives epsilon={epsilon:.4g} "
        f"(> {MEANINGFUL_EPSILON:g}); this is the real epsilon of the noise used, not of a rescaled "
        "one - the model is effectively trained without differential privacy"
    )
