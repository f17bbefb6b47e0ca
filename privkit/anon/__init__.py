"""privkit.anon: anonymisation of IMU time series (GAN around a convolutional autoencoder).

The networks (:mod:`.networks`), the training pipeline with the strategies ``ag``, ``acg`` and
``dfi`` (:mod:`.train`), the metrics (:mod:`.metrics`) and the attacker suite that re-identifies
from scratch on anonymised windows (:mod:`.attackers`). The user-facing model is
:class:`privkit.apps.anonymiser.IMUAnonymiser`; see ``docs/anonymisation.md``.
"""

from .attackers import (
    ATTACKERS,
    CNN1D,
    FeatureNet,
    attack_suite,
    best_attacker,
    judge_quality,
    judge_warnings,
    window_features,
)
from .metrics import accuracy, mmd_rbf, transfer_rate, weighted_f1
from .networks import TCNNIMU, ConvAutoencoder, Discriminator, Generator, LatentMapper
from .train import STRATEGIES, AnonConfig

__all__ = [
    "ATTACKERS",
    "CNN1D",
    "STRATEGIES",
    "TCNNIMU",
    "AnonConfig",
    "ConvAutoencoder",
    "Discriminator",
    "FeatureNet",
    "Generator",
    "LatentMapper",
    "accuracy",
    "attack_suite",
    "best_attacker",
    "judge_quality",
    "judge_warnings",
    "mmd_rbf",
    "transfer_rate",
    "weighted_f1",
    "window_features",
]
