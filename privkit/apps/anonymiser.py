"""IMUAnonymiser: a GAN around a convolutional autoencoder that removes (or transfers) identity
from windowed IMU data while keeping the activity.

>>> from privkit.data.imu import synthetic_imu, split_recordings, MinMaxNormaliser
>>> ds = synthetic_imu(n_subjects=3, n_activities=2, trials=2, seconds=8, window=32, step=16)
>>> train, test = split_recordings(ds, test_fraction=0.5)
>>> norm = MinMaxNormaliser.fit(train.windows)
>>> cfg = AnonConfig(ae_epochs=1, judge_epochs=1, gan_epochs=1, judge_filters=8,
...                  progress=False)
>>> model = IMUAnonymiser(strategy="dfi", config=cfg).fit(train.with_windows(
...     norm.transform(train.windows)))
>>> xa = model.anonymise(norm.transform(test.windows), source=test.subject, target=0)
>>> xa.shape == test.windows.shape and float(xa.min()) >= 0.0
True
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
import warnings
from typing import Any

import numpy as np
import torch

from ..anon.attackers import (
    ATTACKERS,
    CNN1D,
    FeatureNet,
    attack_suite,
    best_attacker,
    judge_quality,
    judge_warnings,
)
from ..anon.metrics import accuracy, mmd_rbf, transfer_rate, weighted_f1
from ..anon.networks import TCNNIMU, ConvAutoencoder, Discriminator, Generator
from ..anon.removal import RemovalGenerator, removal_epochs, train_removal
from ..anon.selection import EpochSelector
from ..anon.train import (
    STRATEGIES,
    AnonConfig,
    build_generator,
    compute_code_means,
    generate,
    predict,
    pretrain_autoencoder,
    random_targets,
    train_classifier,
    train_gan,
)
from ..api import (
    PrivacyReport,
    PrivateModel,
    check_config,
    check_plain,
    check_state_tensors,
)
from ..data.imu import IMUDataset, MinMaxNormaliser
from ..errors import DataFormatError, ParameterError, PrivacyWarning, ShapeError

__all__ = ["AnonConfig", "IMUAnonymiser"]

log = logging.getLogger(__name__)


def _labels(ds_or_x: Any, activity: Any, subject: Any,
            device_channels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]:
    if isinstance(ds_or_x, IMUDataset):
        return (ds_or_x.windows, ds_or_x.activity, ds_or_x.subject,
                tuple(device_channels or ds_or_x.device_channels))
    x = np.asarray(ds_or_x, dtype=np.float32)
    if x.ndim != 3:
        raise ShapeError(f"windows must be shaped (N, T, C), got {x.shape}")
    if activity is None or subject is None:
        raise ParameterError("pass activity and subject labels (or an IMUDataset)")
    dc = tuple(device_channels) if device_channels else (x.shape[2],)
    return x, np.asarray(activity), np.asarray(subject), dc


_MODULES = ("generator", "ae_pretrained", "discriminator", "reid", "har")
#: limits on the config fields of a loaded anonymiser (checked before anything is built)
_LIMITS: dict[str, tuple[float, float]] = {
    "ae_channels": (1, 1024), "bottleneck": (1, 1 << 14), "kernel": (1, 256),
    "channel_kernel": (1, 256), "dropout": (0, 1), "z_dim": (1, 4096), "embed_dim": (1, 4096),
    "mapper_hidden": (1, 1 << 14), "disc_channels": (1, 1024), "judge_filters": (1, 1024),
    "judge_kernel": (1, 256), "judge_fc": (1, 1 << 14), "batch_size": (1, 1 << 20),
    "val_fraction": (0, 1), "seed": (0, 2**63),
}


class IMUAnonymiser(PrivateModel):
    """Anonymise IMU windows with strategy ``"remove"`` (the default: identity removed from the
    code, beyond the paper, :mod:`privkit.anon.removal`, strength
    ``AnonConfig.removal_strength``) or one of the paper's, ``"ag"``, ``"acg"`` or ``"dfi"``
    (identity transfer). ``remove`` is the default because it is the one whose privacy survives
    an attacker retrained on its output (docs/anonymisation.md, "Measured trade-off").

    Windows are ``(N, T, C)`` arrays scaled to [0, 1] (see
    :class:`privkit.data.imu.MinMaxNormaliser`; a normaliser can be attached as ``normaliser``
    and is saved with the model). ``device_channels`` (from an :class:`IMUDataset`) gives the
    ReID/HAR judges one branch per body-worn device.
    """

    model_kind = "imu-anonymiser"

    def __init__(self, strategy: str = "remove", config: AnonConfig | None = None,
                 **overrides: Any) -> None:
        if strategy not in STRATEGIES:
            raise ParameterError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
        self.strategy = strategy
        self.config = dataclasses_replace(config or AnonConfig(), overrides)
        self.normaliser: MinMaxNormaliser | None = None
        self.data_spec: dict[str, Any] = {}
        self.metrics_: dict[str, float] = {}
        self.history_: dict[str, Any] = {}
        self._fitted = False
        self.utility_critic: TCNNIMU | None = None
        self.selection_critic: TCNNIMU | None = None
        self.selection_critics: list[TCNNIMU] = []
        # (x, subject idx, activity idx) of fit, not saved
        self._train: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None

    # ---------------------------------------------------------------- shapes and labels
    def _map(self, values: Any, known: np.ndarray, what: str) -> np.ndarray:
        values = np.asarray(values).reshape(-1)
        pos = {v: i for i, v in enumerate(known.tolist())}
        try:
            return np.array([pos[v] for v in values.tolist()], dtype=np.int64)
        except KeyError as e:
            raise ParameterError(
                f"{what} {e.args[0]!r} was not seen in training; known: {known.tolist()}"
            ) from None

    def _build(self) -> None:
        cfg = self.config
        T, C, K, A = self.window, self.n_channels, len(self.subjects_), len(self.activities_)
        self.ae_pretrained = ConvAutoencoder(C, T, channels=cfg.ae_channels, kernel=cfg.kernel,
                                             channel_kernel=cfg.channel_kernel,
                                             dropout=cfg.dropout, bottleneck=cfg.bottleneck)
        self.generator: Generator | RemovalGenerator
        if self.strategy == "remove":
            self.generator = RemovalGenerator(
                copy.deepcopy(self.ae_pretrained), n_activities=A, n_subjects=K,
                dim=cfg.removal_dim, strength=cfg.removal_strength,
                labeller=self._judge(A) if cfg.removal_labels == "critic" else None)
        else:
            self.generator = build_generator(copy.deepcopy(self.ae_pretrained), self.strategy, K,
                                             cfg)
        self.discriminator = Discriminator(C, T, channels=cfg.disc_channels, kernel=cfg.kernel,
                                           channel_kernel=cfg.channel_kernel)
        self.reid = self._judge(K)
        self.har = self._judge(A)

    def _judge(self, n_classes: int, x_scale: torch.Tensor | None = None) -> TCNNIMU:
        """A judge/critic network of ``cfg.judge_arch``; a ``cnn1d`` one takes its per-channel
        standardisation from ``x_scale`` (real training windows)."""
        cfg = self.config
        if cfg.judge_arch == "cnn1d":
            net = CNN1D(self.n_channels, self.window, n_classes, filters=cfg.judge_filters,
                        kernel=cfg.judge_kernel)
            if x_scale is not None:
                net.fit_scaler(x_scale)
            return net  # type: ignore[return-value]
        return TCNNIMU(self.device_channels, self.window, n_classes, filters=cfg.judge_filters,
                       kernel=cfg.judge_kernel, fc=cfg.judge_fc)

    # ---------------------------------------------------------------- fit
    def fit(self, windows: Any, activity: Any = None, subject: Any = None, *,
            strategy: str | None = None, device_channels: Any = None,
            reuse: IMUAnonymiser | None = None) -> IMUAnonymiser:
        """Pre-train the autoencoder and the ReID/HAR judges, then train the GAN.

        ``reuse``: a fitted anonymiser on the same data whose pre-trained autoencoder and judges
        are copied instead of retrained (to compare strategies fairly and quickly).
        """
        if strategy is not None:
            if strategy not in STRATEGIES:
                raise ParameterError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
            self.strategy = strategy
        cfg = self.config
        x, act, sub, dc = _labels(windows, activity, subject, device_channels)
        if len(x) < 16:
            raise ParameterError(f"too few windows to train on ({len(x)}; need at least 16)")
        if x.min() < -1e-6 or x.max() > 1 + 1e-6:
            raise ParameterError("windows must be scaled to [0, 1] (use MinMaxNormaliser)")
        self.window, self.n_channels = int(x.shape[1]), int(x.shape[2])
        self.device_channels = dc
        if sum(dc) != self.n_channels:
            raise ShapeError(f"device_channels {dc} do not sum to {self.n_channels} channels")
        self.subjects_, self.activities_ = np.unique(sub), np.unique(act)
        if len(self.subjects_) < 2:
            raise ParameterError("need at least two subjects to anonymise")
        s_idx = self._map(sub, self.subjects_, "subject")
        a_idx = self._map(act, self.activities_, "activity")

        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        perm = rng.permutation(len(x))
        n_val = max(2, round(cfg.val_fraction * len(x)))
        va, tr = perm[:n_val], perm[n_val:]
        X = torch.as_tensor(x, dtype=torch.float32)
        S, A = torch.as_tensor(s_idx), torch.as_tensor(a_idx)
        self._build()
        if cfg.judge_arch == "cnn1d":  # standardised with the real training windows
            for net in (self.reid, self.har):
                net.fit_scaler(X[tr])
        t0 = time.perf_counter()
        if reuse is not None:
            if (reuse.window, reuse.n_channels, len(reuse.subjects_)) != (
                    self.window, self.n_channels, len(self.subjects_)):
                raise ParameterError("reuse: the other anonymiser was fitted on other shapes")
            self.ae_pretrained.load_state_dict(reuse.ae_pretrained.state_dict())
            self.reid.load_state_dict(reuse.reid.state_dict())
            self.har.load_state_dict(reuse.har.state_dict())
            self.history_ = {k: reuse.history_.get(k) for k in ("ae", "reid", "har")}
        else:
            self.history_ = {
                "ae": pretrain_autoencoder(self.ae_pretrained, X[tr], X[va], cfg),
                "reid": train_classifier(self.reid, X[tr], S[tr], X[va], S[va], cfg,
                                         name="reid", seed_offset=1),
                "har": train_classifier(self.har, X[tr], A[tr], X[va], A[va], cfg,
                                        name="har", seed_offset=2),
            }
        self.ae_pretrained.eval()
        self.reid.eval()
        self.har.eval()
        self.generator.ae.load_state_dict(self.ae_pretrained.state_dict())
        K = len(self.subjects_)
        if self.strategy != "remove":
            compute_code_means(self.generator, X[tr], S[tr], K)

        critic = attacker = None
        labeller = getattr(self.generator, "labeller", None)
        if self.strategy == "remove":
            need_critic = cfg.removal_utility_weight > 0 or labeller is not None
        else:
            need_critic = cfg.utility_weight > 0
        if need_critic:
            critic = getattr(reuse, "utility_critic", None)
            if critic is None:
                critic = self._judge(len(self.activities_), X[tr])
                train_classifier(critic, X[tr], A[tr], X[va], A[va], cfg,
                                 name="utility_critic", seed_offset=3)
        self.utility_critic = critic  # not saved: only training uses it
        if labeller is not None:  # remove: the critic also labels real windows (saved)
            labeller.load_state_dict(critic.state_dict())
            labeller.eval()
        # early stopping scores activity with its own critic, never with the HAR judge (the
        # independent judge of the evaluation), and never with the utility critic (which the
        # generator is trained against and can fool)
        selectors = list(getattr(reuse, "selection_critics", None) or [])
        if len(selectors) != cfg.selection_critics:
            selectors = []
            for k in range(cfg.selection_critics):
                critic_k = self._judge(len(self.activities_), X[tr])
                train_classifier(critic_k, X[tr], A[tr], X[va], A[va], cfg,
                                 name="selection_critic" + (f"_{k}" if k else ""),
                                 seed_offset=4 if k == 0 else 10 + k)
                selectors.append(critic_k)
        # not saved: only model selection uses them
        self.selection_critics = selectors
        self.selection_critic = selectors[0]
        if cfg.adaptive_weight > 0 and self.strategy != "remove":
            torch.manual_seed(cfg.seed + 5)
            if cfg.attacker_arch == "features":
                attacker = FeatureNet(self.n_channels, self.window, K)
            else:
                attacker = self._judge(K, X[tr])
        har_real = [accuracy(a_idx[va], predict(c, X[va])) for c in selectors]
        gval = torch.Generator().manual_seed(cfg.seed + 11)
        t_val = random_targets(S[va], K, gval) if self.strategy == "dfi" else None

        chance = 1.0 / K

        def validate(gen: Generator, online: TCNNIMU | None = None) -> dict[str, float]:
            g = torch.Generator().manual_seed(cfg.seed + 12)
            xa = self._run(X[va], S[va], t_val, g)
            # the most pessimistic selection critic: accuracy on X' relative to real windows
            har = min(accuracy(a_idx[va], predict(c, xa)) / max(real, 1e-9)
                      for c, real in zip(selectors, har_real))
            pred = predict(self.reid, xa)
            out: dict[str, float] = {"activity_ratio": har}
            if self.strategy == "dfi":
                rate = transfer_rate(t_val.numpy(), pred)
                out["transfer"], priv = rate, 1.0 - rate
            else:
                acc = accuracy(s_idx[va], pred)
                out["reid"], priv = acc, max(acc - chance, 0.0) / (1 - chance)
            if online is not None:  # the online attacker's ReID on held-out X' (after warm-up)
                acc = accuracy(s_idx[va], predict(online, xa))
                out["online_reid"] = acc
                priv = priv + max(acc - chance, 0.0) / (1 - chance)
            out["score"] = har - priv
            return out

        if self.strategy == "remove":
            # on small data sets the removal stage gets more epochs (removal_min_steps)
            rcfg = dataclasses.replace(cfg, gan_epochs=removal_epochs(cfg, len(tr)))
            self.history_["gan"] = train_removal(
                self.generator, self.discriminator, X[tr], A[tr], S[tr], rcfg,
                validate=validate, selector=EpochSelector(rcfg, K), utility_critic=critic)
        else:
            self.history_["gan"] = train_gan(
                self.generator, self.discriminator, self.reid, self.strategy, X[tr], A[tr],
                S[tr], cfg, validate=validate, utility_critic=critic, attacker=attacker)
        self.history_["seconds"] = time.perf_counter() - t0
        self._train = (x, s_idx, a_idx)
        self._fitted = True
        self.metrics_ = {}
        return self

    # ---------------------------------------------------------------- anonymise
    @torch.no_grad()
    def _run(self, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor | None,
             g: torch.Generator, batch: int = 512) -> torch.Tensor:
        self.generator.eval()
        out = [generate(self.generator, self.strategy, x[i:i + batch], s[i:i + batch],
                        None if t is None else t[i:i + batch], g)
               for i in range(0, len(x), batch)]
        return torch.cat(out) if out else x.clone()

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise ParameterError("this IMUAnonymiser is not fitted; call fit() or load()")

    def anonymise(self, x: Any, source: Any = None, target: Any = None, *,
                  seed: int | None = None, return_target: bool = False) -> Any:
        """Anonymised windows (same shape, in [0, 1]).

        ``source``: the subject of each window (required by ``acg`` and ``dfi``; ignored by
        ``ag`` and ``remove``). ``target`` (``dfi`` only): a subject id or one per window; ``None`` picks a
        random other subject per window (returned too when ``return_target``).
        """
        self._check_fitted()
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (self.window, self.n_channels):
            raise ShapeError(f"expected windows (N, {self.window}, {self.n_channels}), "
                             f"got {x.shape}")
        g = torch.Generator().manual_seed(self.config.seed + 999 if seed is None else seed)
        n = len(x)
        if self.strategy in ("ag", "remove"):
            s = torch.zeros(n, dtype=torch.long)
        else:
            if source is None:
                raise ParameterError(f"strategy {self.strategy!r} needs the source subject of "
                                     "every window (source=...)")
            src = np.broadcast_to(np.asarray(source), (n,))
            s = torch.as_tensor(self._map(src, self.subjects_, "source subject"))
        t = None
        if self.strategy == "dfi":
            if target is None:
                t = random_targets(s, len(self.subjects_), g)
            else:
                tgt = np.broadcast_to(np.asarray(target), (n,))
                t = torch.as_tensor(self._map(tgt, self.subjects_, "target subject"))
        elif target is not None:
            raise ParameterError("target is only meaningful for strategy 'dfi'")
        out = self._run(torch.as_tensor(x), s, t, g).numpy()
        if return_target:
            return out, (self.subjects_[t.numpy()] if t is not None else None)
        return out

    # ---------------------------------------------------------------- evaluate
    def evaluate(self, test: Any, activity: Any = None, subject: Any = None, *,
                 train: Any = None, retrain_attacker: bool = True,
                 attacker_epochs: int | None = None,
                 attackers: tuple[str, ...] | list[str] = ATTACKERS,
                 reference: bool = True) -> dict[str, float]:
        """HAR/ReID accuracy and weighted F1 on real vs anonymised test windows, the DFI
        transfer rate, MMD fidelity figures and, with ``retrain_attacker``, the attacker suite.

        The attacker suite (:func:`privkit.anon.attackers.attack_suite`: ``attackers`` among
        ``"tcnn"``, ``"cnn1d"``, ``"features"``) trains every attacker from scratch on
        anonymised training windows with their true subjects (``train``: an IMUDataset or
        ``(windows, subject)``; defaults to the data ``fit`` saw) and tests it on the anonymised
        test windows: ``reid_attack_<kind>_acc`` / ``_f1``, and ``reid_retrained_acc`` = the
        best of them (the figure to quote). With ``reference`` the same suite trained on *real*
        windows gives the accuracy a judge should reach (``reid_reference_acc``,
        ``har_reference_acc``), the suite trained on anonymised windows with their activities
        gives the utility left for a retrained activity model (``har_retrained_acc``), and the
        judges' quality (``*_judge_quality`` = judge accuracy /
        reference). A judge near chance on real windows makes its anonymised figure
        meaningless: a :class:`~privkit.errors.PrivacyWarning` says so (and
        :meth:`privacy_report` repeats it)."""
        self._check_fitted()
        x, act, sub, _ = _labels(test, activity, subject, None)
        s_idx = self._map(sub, self.subjects_, "subject")
        a_idx = self._map(act, self.activities_, "activity")
        X = torch.as_tensor(np.asarray(x, np.float32))
        g = torch.Generator().manual_seed(self.config.seed + 2024)
        t = random_targets(s_idx, len(self.subjects_), g) if self.strategy == "dfi" else None
        t0 = time.perf_counter()
        XA = self._run(X, torch.as_tensor(s_idx), t, g)
        secs = time.perf_counter() - t0
        m: dict[str, float] = {"n_test": float(len(x)), "n_subjects": float(len(self.subjects_))}
        for name, net, y in (("har", self.har, a_idx), ("reid", self.reid, s_idx)):
            for kind, data in (("real", X), ("anon", XA)):
                p = predict(net, data)
                m[f"{name}_acc_{kind}"] = accuracy(y, p)
                m[f"{name}_f1_{kind}"] = weighted_f1(y, p)
            m[f"{name}_chance"] = float(np.bincount(y).max() / len(y))
        if t is not None:
            m["dfi_transfer_rate"] = transfer_rate(t.numpy(), predict(self.reid, XA))
        m["anonymise_windows_per_s"] = len(x) / max(secs, 1e-9)
        m["mmd_real_vs_anon"] = mmd_rbf(x, XA.numpy())
        if retrain_attacker:
            tr = self._train_for_attacker(train)
            if tr is not None:
                m.update(self._attack(tr, X, s_idx, a_idx if reference else None,
                                      attacker_epochs, tuple(attackers)))
                m["mmd_real_train_vs_test"] = mmd_rbf(tr[0], x)
        for name in ("reid", "har"):
            ratio = judge_quality(m[f"{name}_acc_real"], m[f"{name}_chance"],
                                  m.get(f"{name}_reference_acc")).ratio
            if ratio is not None:
                m[f"{name}_judge_quality"] = ratio
        self.metrics_ = m
        for text in judge_warnings(m):
            warnings.warn(text, PrivacyWarning, stacklevel=2)
        return m

    def _train_for_attacker(self, train: Any
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
        if train is None:
            if self._train is None:
                log.warning("no training data for the retrained attacker (model was loaded); "
                            "pass train=...")
            return self._train
        if isinstance(train, IMUDataset):
            return (train.windows, self._map(train.subject, self.subjects_, "subject"),
                    self._map(train.activity, self.activities_, "activity"))
        x, s = train
        return np.asarray(x, np.float32), self._map(s, self.subjects_, "subject"), None

    def _attack(self, tr: tuple[np.ndarray, np.ndarray, np.ndarray | None], X_test: torch.Tensor,
                s_test: np.ndarray, a_test: np.ndarray | None, epochs: int | None,
                kinds: tuple[str, ...]) -> dict[str, float]:
        """The attacker suite on anonymised windows: every attacker is trained from scratch on
        anonymised training windows (with the true source subjects) and tested on anonymised
        test windows. With ``a_test``, the same suite on real windows (the reference)."""
        cfg = self.config
        K = len(self.subjects_)
        g = torch.Generator().manual_seed(cfg.seed + 4242)
        xtr, str_ = torch.as_tensor(tr[0]), torch.as_tensor(tr[1])
        t = random_targets(str_, K, g) if self.strategy == "dfi" else None
        xa_tr = self._run(xtr, str_, t, g)
        t2 = random_targets(torch.as_tensor(s_test), K, g) if self.strategy == "dfi" else None
        xa_te = self._run(X_test, torch.as_tensor(s_test), t2, g)
        kw = {"kinds": kinds, "device_channels": self.device_channels,
              "epochs": cfg.judge_epochs if epochs is None else epochs,
              "filters": cfg.judge_filters, "batch_size": cfg.batch_size, "lr": cfg.judge_lr,
              "val_fraction": cfg.val_fraction, "patience": cfg.patience, "seed": cfg.seed + 77}
        m: dict[str, float] = {}
        res = attack_suite(xa_tr.numpy(), tr[1], xa_te.numpy(), s_test, n_classes=K, **kw)
        for kind, r in res.items():
            m[f"reid_attack_{kind}_acc"], m[f"reid_attack_{kind}_f1"] = r["acc"], r["f1"]
        best = best_attacker(res)[0]
        m["reid_retrained_acc"], m["reid_retrained_f1"] = res[best]["acc"], res[best]["f1"]
        if a_test is not None:
            ref = attack_suite(tr[0], tr[1], X_test.numpy(), s_test, n_classes=K, **kw)
            for kind, r in ref.items():
                m[f"reid_reference_{kind}_acc"] = r["acc"]
            m["reid_reference_acc"] = best_attacker(ref)[1]
            if tr[2] is not None:
                A = len(self.activities_)
                href = attack_suite(tr[0], tr[2], X_test.numpy(), a_test, n_classes=A, **kw)
                m["har_reference_acc"] = best_attacker(href)[1]
                hret = attack_suite(xa_tr.numpy(), tr[2], xa_te.numpy(), a_test, n_classes=A,
                                    **kw)
                m["har_retrained_acc"] = best_attacker(hret)[1]
        return m

    def best_attacker_(self) -> str | None:
        """Name of the best attacker of the last :meth:`evaluate` (``None`` if none ran)."""
        res = {k[len("reid_attack_"):-len("_acc")]: {"acc": v} for k, v in self.metrics_.items()
               if k.startswith("reid_attack_") and k.endswith("_acc")}
        return best_attacker(res)[0] if res else None

    # ---------------------------------------------------------------- report
    def privacy_report(self) -> PrivacyReport:
        m = self.metrics_
        warns = []
        if not m:
            warns.append("not evaluated yet: call evaluate(test) to fill in the numbers")
        chance = m.get("reid_chance")
        retr = m.get("reid_retrained_acc")
        best = self.best_attacker_()
        if m and retr is None:
            warns.append("no retrained (adaptive) attacker was run; the frozen judge alone "
                         "overstates privacy")
        if retr is not None and chance and retr > 2 * chance:
            warns.append(
                f"an attacker retrained on anonymised data ({best or 'tcnn'}) re-identifies "
                f"{retr:.1%} of windows (chance {chance:.1%}): identity is not removed, only "
                "hidden from the frozen judge")
        warns += judge_warnings(m)
        details: dict[str, Any] = {k: v for k, v in m.items() if k not in (
            "reid_acc_real", "reid_acc_anon", "reid_retrained_acc", "reid_chance",
            "har_acc_real", "har_acc_anon")}
        details["strategy"] = self.strategy
        if best is not None:
            details["best_attacker"] = best
        return PrivacyReport(
            kind="anonymisation",
            reid_accuracy_before=m.get("reid_acc_real"),
            reid_accuracy_after=m.get("reid_acc_anon"),
            reid_retrained_accuracy=retr,
            reid_chance=chance,
            har_accuracy_before=m.get("har_acc_real"),
            har_accuracy_after=m.get("har_acc_anon"),
            judge=("tCNN-IMU" if self.config.judge_arch == "tcnn" else "1-D CNN")
                  + " ReID trained on real data, frozen (the generator trained against it); "
                  "retrained: the best of the attacker suite "
                  + (f"({best}) " if best else "")
                  + "trained from scratch on anonymised windows",
            warnings=warns,
            details=details,
        )

    # ---------------------------------------------------------------- state
    def _get_state(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "strategy": self.strategy,
            "config": self.config.to_dict(),
            "window": self.window,
            "n_channels": self.n_channels,
            "device_channels": list(self.device_channels),
            "subjects": self.subjects_.tolist(),
            "activities": self.activities_.tolist(),
            "generator": self.generator.state_dict(),
            "ae_pretrained": self.ae_pretrained.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "reid": self.reid.state_dict(),
            "har": self.har.state_dict(),
            "normaliser": self.normaliser.to_dict() if self.normaliser else None,
            "data_spec": dict(self.data_spec),
            "metrics": dict(self.metrics_),
        }

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> IMUAnonymiser:
        # everything is checked before a real network is built
        where = "IMUAnonymiser"
        raw_cfg = state.get("config")
        if isinstance(raw_cfg, dict):
            raw_cfg = {k: (tuple(v) if isinstance(v, list) else v) for k, v in raw_cfg.items()}
        if isinstance(raw_cfg, dict) and "removal_labels" not in raw_cfg:
            raw_cfg["removal_labels"] = "head"  # saved before the labeller existed
        cfg = check_config(AnonConfig, raw_cfg, _LIMITS, where)
        if state.get("strategy") not in STRATEGIES:
            raise DataFormatError(f"{where}: strategy {str(state.get('strategy'))[:40]!r} is not "
                                  f"one of {STRATEGIES}")
        window, n_channels = state.get("window"), state.get("n_channels")
        dc = state.get("device_channels")
        for name, v, hi in (("window", window, 1 << 16), ("n_channels", n_channels, 4096)):
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= hi:
                raise DataFormatError(f"{where}: {name} must be an integer in 1..{hi}, got "
                                      f"{v!r}"[:200])
        if (not isinstance(dc, (list, tuple)) or not 1 <= len(dc) <= 64
                or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in dc)
                or sum(dc) != n_channels):
            raise DataFormatError(f"{where}: device_channels must be positive integers summing "
                                  f"to n_channels={n_channels}, got {str(dc)[:100]}")
        labels = {}
        for name in ("subjects", "activities"):
            v = check_plain(state.get(name), f"{where} {name}", kind=list, max_items=100_001)
            if not 1 <= len(v) <= 100_000 or not (
                    all(isinstance(x, int) and not isinstance(x, bool) for x in v)
                    or all(isinstance(x, str) for x in v)) or len(set(v)) != len(v):
                raise DataFormatError(f"{where}: {name} must be 1..100000 distinct integers or "
                                      "strings")
            labels[name] = np.asarray(v)
        model = cls(strategy=state["strategy"], config=cfg)
        model.window, model.n_channels = window, n_channels
        model.device_channels = tuple(dc)
        model.subjects_ = labels["subjects"]
        model.activities_ = labels["activities"]
        with torch.device("meta"):
            model._build()
        for name in _MODULES:
            check_state_tensors(getattr(model, name).state_dict(), state.get(name),
                                f"{where} {name}")
        norm = state.get("normaliser")
        if norm is not None:
            check_plain(norm, f"{where} normaliser", kind=dict)
            try:
                normaliser = MinMaxNormaliser.from_dict(norm)
            except (KeyError, TypeError, ValueError) as e:
                raise DataFormatError(f"{where}: malformed normaliser ({type(e).__name__}: "
                                      f"{e})"[:300]) from e
            if (normaliser.lo.shape != (n_channels,) or normaliser.hi.shape != (n_channels,)
                    or not (np.isfinite(normaliser.lo).all() and np.isfinite(normaliser.hi).all())
                    or not (normaliser.hi > normaliser.lo).all()):
                raise DataFormatError(f"{where}: normaliser must hold {n_channels} finite ranges "
                                      "with hi > lo")
        data_spec = check_plain(state.get("data_spec") or {}, f"{where} data_spec", kind=dict)
        metrics = check_plain(state.get("metrics") or {}, f"{where} metrics", kind=dict)
        model._build()
        for name in _MODULES:
            mod = getattr(model, name)
            mod.load_state_dict(state[name])
            mod.eval()
        if norm is not None:
            model.normaliser = normaliser
        model.data_spec = dict(data_spec)
        model.metrics_ = dict(metrics)
        model._fitted = True
        return model


def dataclasses_replace(cfg: AnonConfig, overrides: dict[str, Any]) -> AnonConfig:
    """A copy of ``cfg`` with ``overrides``; unknown names are an error."""
    if not overrides:
        return copy.deepcopy(cfg)
    d = cfg.to_dict()
    unknown = set(overrides) - set(d)
    if unknown:
        raise ParameterError(f"unknown AnonConfig options {sorted(unknown)}")
    d.update(overrides)
    return AnonConfig.from_dict(d)
