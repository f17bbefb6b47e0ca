"""privkit.anon: anonymisation of IMU time series (GAN around a convolutional autoencoder).

The networks (:mod:`.networks`), the training pipeline with the strategies ``ag``, ``acg`` and
``dfi`` (:mod:`.train`) and the metrics (:mod:`.metrics`). The user-facing model is
:class:`privkit.apps.anonymiser.IMUAnonymiser`; see ``docs/anonymisation.md``.
"""

from .metrics import accuracy, mmd_rbf, transfer_rate, weighted_f1
from .networks import TCNNIMU, ConvAutoencoder, Discriminator, Generator, LatentMapper
from .train import STRATEGIES, AnonConfig

__all__ = [
    "STRATEGIES",
    "TCNNIMU",
    "AnonConfig",
    "ConvAutoencoder",
    "Discriminator",
    "Generator",
    "LatentMapper",
    "accuracy",
    "mmd_rbf",
    "transfer_rate",
    "weighted_f1",
]
