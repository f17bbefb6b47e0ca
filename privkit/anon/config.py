"""Settings of the IMU anonymiser: :class:`AnonConfig`, the strategies, and the paper's and
beyond-the-paper presets (:data:`PAPER`, :data:`BEYOND_PAPER`). The training pipeline that reads
them is :mod:`privkit.anon.train`."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..errors import ParameterError

__all__ = ["ADAPTIVE_LOSSES", "BEYOND_PAPER", "JUDGE_ARCHS", "PAPER", "PAPER_STRATEGIES",
           "SELECTIONS", "STRATEGIES", "AnonConfig"]

#: the paper's strategies (identity hidden from a frozen judge, or transferred)
PAPER_STRATEGIES = ("ag", "acg", "dfi")
#: every strategy: the paper's and ``"remove"`` (identity removed from the code, beyond the
#: paper: :mod:`privkit.anon.removal`, strength ``AnonConfig.removal_strength``)
STRATEGIES = (*PAPER_STRATEGIES, "remove")
ADAPTIVE_LOSSES = ("prob", "confusion")
JUDGE_ARCHS = ("tcnn", "cnn1d")
SELECTIONS = ("constrained", "score")
REMOVAL_LABELS = ("critic", "head")


@dataclasses.dataclass
class AnonConfig:
    """Every knob of the anonymiser (architecture and training)."""

    # generator (autoencoder + latent mapper)
    ae_channels: tuple[int, int, int] = (16, 32, 64)
    bottleneck: int = 64
    kernel: int = 4
    channel_kernel: int | str = "auto"
    dropout: float = 0.1
    z_dim: int = 32
    embed_dim: int = 16
    mapper_hidden: tuple[int, ...] = (128, 256)
    disc_channels: tuple[int, int, int] = (16, 32, 64)
    # judges: "tcnn" (tCNN-IMU, the paper's) or "cnn1d" (a plain 1-D CNN on per-channel
    # standardised windows, :class:`privkit.anon.attackers.CNN1D`: stronger on real data)
    judge_arch: str = "cnn1d"
    judge_filters: int = 32
    judge_kernel: int = 5
    judge_fc: int = 128
    # training
    batch_size: int = 64
    ae_epochs: int = 15
    ae_lr: float = 3e-3
    ae_noise: float = 0.02
    judge_epochs: int = 15
    judge_lr: float = 1e-3
    gan_epochs: int = 20
    gen_lr: float = 2e-4
    disc_lr: float = 2e-4
    lr_decay: float = 0.97
    ag_m: float = 0.9
    # beyond the paper (0 / False / 'prob' = off, i.e. the paper's protocol). Two of them are
    # on by default (``utility_weight`` and ``dfi_target_mean``, see :data:`PAPER`): without them
    # ``dfi`` missed the HAR target on some pre-training draws; ``AnonConfig.paper()`` turns them
    # off
    utility_weight: float = 3.0
    adaptive_weight: float = 0.0
    adaptive_loss: str = "prob"
    attacker_steps: int = 1
    attacker_init: str = "random"
    #: the online attacker's model: "judge" (the judges' architecture, ``judge_arch``) or
    #: "features" (:class:`privkit.anon.attackers.FeatureNet`, a differentiable twin of the
    #: feature attacker of the evaluation suite; needs ``attacker_init="random"``)
    attacker_arch: str = "judge"
    attacker_reset: int = 0
    attacker_real: bool = False
    select_attacker: bool = False
    warmup_epochs: int = 0
    dfi_target_mean: bool = True
    content_weight: float = 0.0
    # strategy "remove" (beyond the paper, :mod:`privkit.anon.removal`)
    #: 0 = autoencoder with an activity-conditioned decoder (utility max), 1 = the decoder
    #: sees only the activity label and noise (privacy max); in between, the bottleneck noise
    #: share and the gradient-reversal weight grow with it
    removal_strength: float = 0.5
    #: size of the small code the identity adversary reads
    removal_dim: int = 64
    #: gradient-reversal weight at strength 1 (it is scaled by the strength)
    removal_adv_weight: float = 1.0
    #: reconstruction (MSE) weight at strength 0 (scaled by ``1 - strength``)
    removal_rec_weight: float = 200.0
    #: weight of the activity-critic term of the removal stage (the other strategies use
    #: ``utility_weight``): 10 kept the frozen HAR judge at 98% of real at strength 0.5 on the
    #: real watch data where 3 kept 77%
    removal_utility_weight: float = 10.0
    removal_lr: float = 3e-4
    #: the removal stage trains at least this many optimiser steps: on a small data set its
    #: epoch budget grows to ``ceil(removal_min_steps / batches per epoch)`` when that is more
    #: than ``gan_epochs``, up to ``4 x gan_epochs`` (early stopping still ends it; 0 = off;
    #: :func:`privkit.anon.removal.removal_epochs`). On the watch data (about 24 batches
    #: per epoch) one training seed needed 32 epochs to reach the activity floor; on 10,000
    #: windows (about 130 batches) 8 epochs did
    removal_min_steps: int = 1500
    #: where the decoder's activity label comes from when anonymising: "critic" (an activity
    #: network trained on the real windows, the judges' architecture, kept with the model) or
    #: "head" (the small head on the identity-free code)
    removal_labels: str = "critic"
    # early stopping / bookkeeping
    #: number of selection critics (activity networks trained on real data, independent of the
    #: HAR judge) scoring utility during model selection; the score uses the *lowest* of their
    #: accuracy ratios anonymised / real, so an epoch is kept only if no critic saw its activity
    #: fade (with tCNN critics, one critic alone kept epochs that other activity networks
    #: misread; the default is one since the judges became 1-D CNNs, measured on the watch data)
    selection_critics: int = 1
    #: model-selection rule after every GAN epoch (:class:`EpochSelector`). ``"constrained"``:
    #: among the *feasible* epochs - validation privacy meets ``select_reid_factor`` (``ag``,
    #: ``acg``) or ``select_transfer_min`` (``dfi``) and the activity ratio meets
    #: ``select_activity_min`` - keep the one with the best combined score ``activity ratio -
    #: privacy``; while no epoch is feasible, keep the best combined score and do not stop early
    #: (``patience`` counts from the first feasible epoch). ``"score"``: always the combined
    #: score (the rule before the constraints; it traded privacy for activity on some draws)
    selection: str = "constrained"
    #: ``ag``/``acg`` feasibility: the frozen ReID judge's validation accuracy on anonymised
    #: windows is at most this multiple of chance (1 / subjects); 1.6 leaves a margin under the
    #: 2x-chance target of the evaluation
    select_reid_factor: float = 1.6
    #: ``dfi`` feasibility: the frozen ReID judge assigns at least this fraction of anonymised
    #: validation windows to their target (a margin over the 0.90 target)
    select_transfer_min: float = 0.93
    #: feasibility for every strategy: the lowest selection-critic accuracy ratio (anonymised /
    #: real) on the validation windows is at least this
    select_activity_min: float = 0.9
    #: constrained selection: when no epoch has been feasible after ``gan_epochs``, train up to
    #: this many more epochs, stopping at the end of the first extra epoch after which a
    #: feasible epoch is kept (0 = never train past ``gan_epochs``)
    select_extra_epochs: int = 8
    val_fraction: float = 0.15
    patience: int = 5
    seed: int = 0
    progress: bool = True
    checkpoint_dir: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.ag_m <= 1.0:
            raise ParameterError(f"ag_m must be in [0, 1] (b = 1 - m), got {self.ag_m}")
        if self.batch_size < 2:
            raise ParameterError(f"batch_size must be >= 2 (batch norm), got {self.batch_size}")
        if not 0.0 < self.val_fraction < 0.5:
            raise ParameterError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")
        if self.judge_arch not in JUDGE_ARCHS:
            raise ParameterError(f"judge_arch must be one of {JUDGE_ARCHS}, "
                                 f"got {self.judge_arch!r}")
        if self.adaptive_loss not in ADAPTIVE_LOSSES:
            raise ParameterError(f"adaptive_loss must be one of {ADAPTIVE_LOSSES}, "
                                 f"got {self.adaptive_loss!r}")
        if not (isinstance(self.removal_strength, (int, float))
                and not isinstance(self.removal_strength, bool)
                and 0.0 <= self.removal_strength <= 1.0):
            raise ParameterError("removal_strength must be a number in [0, 1] (0: autoencoder, "
                                 f"1: activity-conditional generator), got "
                                 f"{self.removal_strength!r}")
        if isinstance(self.removal_dim, bool) or not isinstance(self.removal_dim, int) or \
                self.removal_dim < 1:
            raise ParameterError(f"removal_dim must be an integer >= 1, got {self.removal_dim!r}")
        if self.removal_labels not in REMOVAL_LABELS:
            raise ParameterError(f"removal_labels must be one of {REMOVAL_LABELS}, got "
                                 f"{self.removal_labels!r}")
        if isinstance(self.removal_min_steps, bool) or not isinstance(
                self.removal_min_steps, int) or self.removal_min_steps < 0:
            raise ParameterError(f"removal_min_steps must be an integer >= 0, got "
                                 f"{self.removal_min_steps!r}")
        if not self.removal_lr > 0:
            raise ParameterError(f"removal_lr must be > 0, got {self.removal_lr!r}")
        for name in ("utility_weight", "adaptive_weight", "content_weight", "removal_adv_weight",
                     "removal_rec_weight", "removal_utility_weight"):
            if getattr(self, name) < 0:
                raise ParameterError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.attacker_init not in ("random", "reid"):
            raise ParameterError(f"attacker_init must be 'random' or 'reid', "
                                 f"got {self.attacker_init!r}")
        if self.attacker_arch not in ("judge", "features"):
            raise ParameterError(f"attacker_arch must be 'judge' or 'features', "
                                 f"got {self.attacker_arch!r}")
        if self.attacker_arch == "features" and self.attacker_init == "reid":
            raise ParameterError("attacker_arch='features' cannot start from the ReID judge's "
                                 "weights; use attacker_init='random'")
        if self.attacker_steps < 1:
            raise ParameterError(f"attacker_steps must be >= 1, got {self.attacker_steps}")
        if isinstance(self.selection_critics, bool) or not isinstance(
                self.selection_critics, int) or self.selection_critics < 1:
            raise ParameterError(f"selection_critics must be an integer >= 1, "
                                 f"got {self.selection_critics!r}")
        if self.selection not in SELECTIONS:
            raise ParameterError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        if not (isinstance(self.select_reid_factor, (int, float))
                and 0.0 < self.select_reid_factor and math.isfinite(self.select_reid_factor)):
            raise ParameterError("select_reid_factor (feasible frozen ReID accuracy as a multiple "
                                 f"of chance) must be > 0, got {self.select_reid_factor!r}")
        for name in ("select_transfer_min", "select_activity_min"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
                raise ParameterError(f"{name} must be in [0, 1], got {v!r}")
        for name in ("attacker_reset", "warmup_epochs", "select_extra_epochs"):
            if getattr(self, name) < 0:
                raise ParameterError(f"{name} must be >= 0, got {getattr(self, name)}")
        self.ae_channels = tuple(self.ae_channels)  # type: ignore[assignment]
        self.disc_channels = tuple(self.disc_channels)  # type: ignore[assignment]
        self.mapper_hidden = tuple(self.mapper_hidden)

    @classmethod
    def beyond_paper(cls, **overrides: Any) -> AnonConfig:
        """The configuration with every beyond-the-paper term on at the settings chosen on the
        synthetic bench (:data:`BEYOND_PAPER`); ``overrides`` win. ``AnonConfig()`` has two of
        them on (the utility critic and the mean-code swap); :meth:`paper` has none."""
        return cls(**{**BEYOND_PAPER, **overrides})

    @classmethod
    def paper(cls, **overrides: Any) -> AnonConfig:
        """The paper's losses only: the default configuration with the two beyond-the-paper
        terms that are on by default switched off (:data:`PAPER`); ``overrides`` win. Model
        selection (selection critics, never the HAR judge) is the same as the default's."""
        return cls(**{**PAPER, **overrides})

    @property
    def ag_b(self) -> float:
        return 1.0 - self.ag_m

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnonConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()
                      if k in names})


#: The paper's losses (``AnonConfig.paper()``): switches off the beyond-the-paper terms that
#: ``AnonConfig()`` turns on by default (the auxiliary activity critic and, for ``dfi``, the
#: mean-code swap).
PAPER: dict[str, Any] = {
    "utility_weight": 0.0,
    "dfi_target_mean": False,
}

#: Settings of the beyond-the-paper terms used by the bench (``AnonConfig.beyond_paper()``).
BEYOND_PAPER: dict[str, Any] = {
    "utility_weight": 1.0,
    "adaptive_weight": 1.0,
    "adaptive_loss": "confusion",
    "attacker_steps": 2,
    "attacker_init": "reid",
    "attacker_real": True,
    "select_attacker": True,
    "warmup_epochs": 2,
    "dfi_target_mean": True,
}
