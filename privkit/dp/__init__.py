"""privkit.dp: differentially private training (Opacus DP-SGD) with honest accounting.

* :func:`make_private` / :class:`DPTraining` / :class:`DPConfig`: DP-SGD whose report states the
  epsilon of the noise actually used (PRV accountant, RDP fallback said aloud);
* :func:`validate_module`: rejects batch-statistics norms and other DP breakers by name;
* :mod:`privkit.dp.snn`: LIF spiking neurons that Opacus can compute per-sample gradients for;
* :mod:`privkit.dp.attacks`, :mod:`privkit.dp.metrics`: adversarial / membership attacks, and
  generative-model metrics.
"""

from .engine import (
    MEANINGFUL_EPSILON,
    DPCompatibilityError,
    DPConfig,
    DPTraining,
    EpsilonResult,
    PrivacyWarning,
    calibrate_noise,
    check_module,
    compute_epsilon,
    epsilon_from_history,
    make_private,
    validate_module,
)
from .snn import LIFNeuron, LIFStep, MembraneOutput, lif

__all__ = [
    "MEANINGFUL_EPSILON",
    "DPCompatibilityError",
    "DPConfig",
    "DPTraining",
    "EpsilonResult",
    "PrivacyWarning",
    "calibrate_noise",
    "check_module",
    "compute_epsilon",
    "epsilon_from_history",
    "make_private",
    "validate_module",
    "LIFNeuron",
    "LIFStep",
    "MembraneOutput",
    "lif",
]
