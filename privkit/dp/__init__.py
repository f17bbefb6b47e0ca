"""privkit.dp: differentially private training (Opacus DP-SGD) with honest accounting.

* :func:`make_private` / :class:`DPTraining` / :class:`DPConfig`: DP-SGD whose report states the
  epsilon of the noise actually used (PRV accountant, RDP fallback said aloud); the result unpacks
  as Opacus' ``model, optimizer, data_loader``; ``distributed=True`` runs on torch.distributed;
* :class:`PrivacyEngine`: Opacus' calling convention over :func:`make_private`;
* :func:`validate_module` / :func:`fix`: reject batch-statistics norms and other DP breakers by
  name, and replace the norms with GroupNorm;
* :func:`register_grad_samplers`: privkit's conv grad samplers for Opacus (done by
  :func:`make_private`; importing this package changes nothing in Opacus);
* :mod:`privkit.dp.audit`: a canary membership-inference audit with an empirical epsilon lower
  bound;
* :mod:`privkit.dp.snn`: LIF spiking neurons that Opacus can compute per-sample gradients for;
* :mod:`privkit.dp.attacks`, :mod:`privkit.dp.metrics`: adversarial / membership attacks, and
  generative-model metrics.
"""

from .accounting import steps_within_budget, validate_history
from .compat import PrivacyEngine
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
from .grad_samplers import register_grad_samplers
from .snn import LIFNeuron, LIFStep, MembraneOutput, lif
from .validator import fix

__all__ = [
    "MEANINGFUL_EPSILON",
    "DPCompatibilityError",
    "DPConfig",
    "DPTraining",
    "EpsilonResult",
    "LIFNeuron",
    "LIFStep",
    "MembraneOutput",
    "PrivacyEngine",
    "PrivacyWarning",
    "calibrate_noise",
    "check_module",
    "compute_epsilon",
    "epsilon_from_history",
    "fix",
    "lif",
    "make_private",
    "register_grad_samplers",
    "steps_within_budget",
    "validate_history",
    "validate_module",
]
