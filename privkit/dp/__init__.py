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
from .snn import LIFNeuron, LIFStep, MembraneOutput, lif, register_grad_samplers

register_grad_samplers()  # fast per-sample gradients for convs and transposed convs

__all__ = [
    "MEANINGFUL_EPSILON",
    "DPCompatibilityError",
    "DPConfig",
    "DPTraining",
    "EpsilonResult",
    "LIFNeuron",
    "LIFStep",
    "MembraneOutput",
    "PrivacyWarning",
    "calibrate_noise",
    "check_module",
    "compute_epsilon",
    "epsilon_from_history",
    "lif",
    "make_private",
    "register_grad_samplers",
    "validate_module",
]
