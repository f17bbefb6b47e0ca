"""The attacker suite: re-identification models trained from scratch on the data they attack.

A frozen ReID judge says how well *one* network, trained on real windows, recognises people in
anonymised windows. An attacker who holds anonymised windows with known subjects (the threat the
anonymiser must survive) trains its own model on them instead. :func:`attack_suite` trains three
model families from scratch on ``(x_train, y_train)`` and scores them on ``(x_test, y_test)``:

* ``"tcnn"`` - the tCNN-IMU of the judges (:class:`~privkit.anon.networks.TCNNIMU`);
* ``"cnn1d"`` - :class:`CNN1D`, a plain 1-D CNN over time with the channels as input planes, on
  inputs standardised per channel with the training windows' statistics;
* ``"features"`` - :func:`window_features` (per-channel statistics, FFT band energies,
  cross-channel correlations) into a standardised multinomial logistic regression
  (scikit-learn).

The best of them (highest test accuracy) is the figure to quote. The same suite on real windows
gives the *reference* accuracy a judge should reach (:func:`judge_quality`).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> y = np.repeat(np.arange(3), 40)
>>> x = rng.random((120, 32, 2)).astype(np.float32) * 0.2 + y[:, None, None] * 0.3
>>> res = attack_suite(x[::2], y[::2], x[1::2], y[1::2], kinds=("features", "cnn1d"),
...                    epochs=3, filters=8, seed=0)
>>> feats = res["features"]
>>> sorted(res), feats["acc"] > 0.9
(['cnn1d', 'features'], True)
>>> best_attacker(res)[0] in res
True
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ParameterError, ShapeError
from .metrics import accuracy, weighted_f1
from .networks import TCNNIMU
from .train import AnonConfig, predict, train_classifier

__all__ = [
    "ATTACKERS",
    "CNN1D",
    "FeatureNet",
    "attack_suite",
    "best_attacker",
    "judge_quality",
    "judge_warnings",
    "window_features",
]

#: the attacker families of :func:`attack_suite`
ATTACKERS = ("tcnn", "cnn1d", "features")

#: FFT band edges as fractions of the Nyquist frequency (log-spaced, 8 bands)
_BANDS = (0.0, 0.02, 0.05, 0.1, 0.17, 0.26, 0.4, 0.6, 1.0)


class CNN1D(nn.Module):
    """A plain 1-D CNN classifier: per-channel standardisation (``mean``/``std`` buffers, set
    with :meth:`fit_scaler`), 3 blocks of Conv1d + BatchNorm + ReLU + max-pool (``filters``,
    ``2 filters``, ``2 filters``; kernel 5), global average pooling, dropout, a linear layer.

    >>> net = CNN1D(n_channels=6, window=64, n_classes=4, filters=8)
    >>> net(torch.rand(3, 64, 6)).shape
    torch.Size([3, 4])
    """

    def __init__(self, n_channels: int, window: int, n_classes: int, *, filters: int = 64,
                 kernel: int = 5, dropout: float = 0.3) -> None:
        super().__init__()
        self.n_channels, self.window, self.n_classes = int(n_channels), int(window), int(n_classes)
        c = [self.n_channels, filters, 2 * filters, 2 * filters]
        layers: list[nn.Module] = []
        for i in range(3):
            layers += [nn.Conv1d(c[i], c[i + 1], kernel, padding=kernel // 2),
                       nn.BatchNorm1d(c[i + 1]), nn.ReLU()]
            if window >= 2 ** (i + 2):
                layers.append(nn.MaxPool1d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(c[-1], n_classes))
        self.register_buffer("mean", torch.zeros(self.n_channels))
        self.register_buffer("std", torch.ones(self.n_channels))

    @torch.no_grad()
    def fit_scaler(self, x: torch.Tensor) -> CNN1D:
        """Set the per-channel standardisation from training windows ``(N, T, C)``."""
        flat = x.reshape(-1, self.n_channels).double()
        self.mean.copy_(flat.mean(0).float())
        self.std.copy_(flat.std(0).clamp_min(1e-6).float())
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1] != self.window or x.shape[2] != self.n_channels:
            raise ShapeError(f"CNN1D expects windows shaped (batch, {self.window}, "
                             f"{self.n_channels}), got {tuple(x.shape)}")
        h = ((x - self.mean) / self.std).transpose(1, 2)
        return self.head(self.features(h).mean(2))


def window_features(x: np.ndarray) -> np.ndarray:
    """Hand-made features of windows ``(N, T, C)``: per channel mean, std, min, max, 5
    percentiles, mean absolute first difference, skewness, kurtosis and the log energy of 8
    log-spaced FFT bands (20 per channel); plus the correlation of every channel pair. Returns ``(N, F)`` float64.

    >>> window_features(np.zeros((2, 16, 3))).shape
    (2, 63)
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 3 or x.shape[1] < 4:
        raise ShapeError(f"window_features expects windows (N, T>=4, C), got {x.shape}")
    n, t, c = x.shape
    mu, sd = x.mean(1), x.std(1)
    z = (x - mu[:, None]) / np.maximum(sd, 1e-9)[:, None]
    feats = [mu, sd, x.min(1), x.max(1),
             *np.percentile(x, [10, 25, 50, 75, 90], axis=1),
             np.abs(np.diff(x, axis=1)).mean(1), (z ** 3).mean(1), (z ** 4).mean(1)]
    power = np.abs(np.fft.rfft(x - mu[:, None], axis=1)) ** 2  # (N, F, C); DC removed
    nf = power.shape[1]
    for e0, e1 in itertools.pairwise(_BANDS):
        lo = max(1, int(e0 * nf))
        hi = min(nf, max(lo + 1, round(e1 * nf)))
        feats.append(np.log1p(power[:, lo:hi].sum(1)) if hi > lo else np.zeros((n, c)))
    out = np.concatenate(feats, axis=1)
    if c > 1:
        iu = np.triu_indices(c, 1)
        corr = np.einsum("ntc,ntd->ncd", z, z) / t
        out = np.concatenate([out, corr[:, iu[0], iu[1]]], axis=1)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


class FeatureNet(nn.Module):
    """A differentiable twin of the ``features`` attacker, for *online* training against the
    generator (``AnonConfig(attacker_arch="features")``): per channel mean, std, max, min,
    mean absolute difference and the log energy of 8 FFT bands, plus channel-pair correlations,
    through BatchNorm (an online standardisation) into a small MLP.

    >>> FeatureNet(n_channels=3, window=32, n_classes=4)(torch.rand(5, 32, 3)).shape
    torch.Size([5, 4])
    """

    def __init__(self, n_channels: int, window: int, n_classes: int, *, hidden: int = 64
                 ) -> None:
        super().__init__()
        self.n_channels, self.window, self.n_classes = int(n_channels), int(window), int(n_classes)
        nf = window // 2 + 1
        bands = []
        for e0, e1 in itertools.pairwise(_BANDS):
            lo = max(1, int(e0 * nf))
            bands.append((lo, min(nf, max(lo + 1, round(e1 * nf)))))
        self.bands = [(lo, hi) for lo, hi in bands if hi > lo]
        c = self.n_channels
        n_feat = c * (5 + len(self.bands)) + c * (c - 1) // 2
        self.net = nn.Sequential(nn.BatchNorm1d(n_feat), nn.Linear(n_feat, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1] != self.window or x.shape[2] != self.n_channels:
            raise ShapeError(f"FeatureNet expects windows shaped (batch, {self.window}, "
                             f"{self.n_channels}), got {tuple(x.shape)}")
        mu = x.mean(1)
        xc = x - mu[:, None]
        sd = (xc.pow(2).mean(1) + 1e-8).sqrt()
        f = [mu, sd, x.amax(1), x.amin(1), (x[:, 1:] - x[:, :-1]).abs().mean(1)]
        power = torch.fft.rfft(xc, dim=1).abs().pow(2)
        f += [torch.log1p(power[:, lo:hi].sum(1)) for lo, hi in self.bands]
        if self.n_channels > 1:
            z = xc / sd[:, None]
            corr = torch.einsum("btc,btd->bcd", z, z) / x.shape[1]
            iu = torch.triu_indices(self.n_channels, self.n_channels, 1)
            f.append(corr[:, iu[0], iu[1]])
        return torch.cat(f, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.features(x))


def _fit_features(x_tr: np.ndarray, y_tr: np.ndarray, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=500,
                                                             random_state=seed))
    clf.fit(window_features(x_tr), y_tr)
    return clf


def _fit_network(kind: str, x_tr: torch.Tensor, y_tr: torch.Tensor, n_classes: int, *,
                 device_channels: Sequence[int], epochs: int, filters: int, seed: int,
                 batch_size: int, lr: float, val_fraction: float, patience: int) -> nn.Module:
    window, n_ch = int(x_tr.shape[1]), int(x_tr.shape[2])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if kind == "tcnn":
            net: nn.Module = TCNNIMU(tuple(device_channels), window, n_classes, filters=filters,
                                     fc=max(2 * filters, 16))
        else:
            net = CNN1D(n_ch, window, n_classes, filters=filters)
        perm = np.random.default_rng(seed).permutation(len(x_tr))
        n_val = max(2, round(val_fraction * len(perm)))
        va, tr = perm[:n_val], perm[n_val:]
        if isinstance(net, CNN1D):
            net.fit_scaler(x_tr[tr])
        cfg = AnonConfig(batch_size=batch_size, judge_lr=lr, patience=patience, seed=seed,
                         progress=False)
        train_classifier(net, x_tr[tr], y_tr[tr], x_tr[va], y_tr[va], cfg,
                         name=f"attacker {kind}", epochs=epochs)
    return net


def _flush(x: np.ndarray) -> np.ndarray:
    """float32 windows with subnormal values set to 0: a sigmoid output near 0 can be subnormal,
    and convolutions over subnormals run many times slower on CPUs (same accuracy)."""
    x = np.array(x, dtype=np.float32)
    x[np.abs(x) < np.finfo(np.float32).tiny] = 0.0
    return x


def attack_suite(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    kinds: Sequence[str] = ATTACKERS,
    device_channels: Sequence[int] | None = None,
    n_classes: int | None = None,
    epochs: int = 15,
    filters: int = 32,
    batch_size: int = 64,
    lr: float = 1e-3,
    val_fraction: float = 0.15,
    patience: int = 5,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Train every attacker in ``kinds`` from scratch on ``(x_train, y_train)`` (integer labels
    ``0..n_classes-1``) and score it on ``(x_test, y_test)``: ``{kind: {"acc", "f1"}}``.

    The networks keep their best epoch on a ``val_fraction`` split of the training windows
    (early stopping after ``patience`` epochs without progress).
    """
    unknown = [k for k in kinds if k not in ATTACKERS]
    if unknown or not kinds:
        raise ParameterError(f"unknown attackers {unknown}; choose from {ATTACKERS}")
    x_tr, x_te = _flush(x_train), _flush(x_test)
    if x_tr.ndim != 3 or x_te.shape[1:] != x_tr.shape[1:]:
        raise ShapeError(f"attack_suite: train {x_tr.shape} and test {x_te.shape} windows must "
                         "be (N, T, C) with the same T and C")
    y_tr, y_te = np.asarray(y_train, np.int64), np.asarray(y_test, np.int64)
    if len(y_tr) != len(x_tr) or len(y_te) != len(x_te):
        raise ShapeError("attack_suite: one label per window")
    k = int(n_classes if n_classes is not None else max(y_tr.max(), y_te.max()) + 1)
    dc = tuple(device_channels) if device_channels else (x_tr.shape[2],)
    out: dict[str, dict[str, float]] = {}
    for i, kind in enumerate(kinds):
        if kind == "features":
            pred = _fit_features(x_tr, y_tr, seed).predict(window_features(x_te))
        else:
            net = _fit_network(kind, torch.as_tensor(x_tr), torch.as_tensor(y_tr), k,
                               device_channels=dc, epochs=epochs, filters=filters,
                               seed=seed + 31 * i, batch_size=batch_size, lr=lr,
                               val_fraction=val_fraction, patience=patience)
            pred = predict(net, torch.as_tensor(x_te))
        out[kind] = {"acc": accuracy(y_te, pred), "f1": weighted_f1(y_te, pred)}
    return out


def best_attacker(results: dict[str, dict[str, float]]) -> tuple[str, float]:
    """The attacker with the highest accuracy in :func:`attack_suite`'s results."""
    if not results:
        raise ParameterError("no attacker results")
    name = max(results, key=lambda k: results[k]["acc"])
    return name, results[name]["acc"]


@dataclasses.dataclass(frozen=True)
class JudgeQuality:
    """How good a frozen judge is on real windows: its accuracy, chance, and the best
    from-scratch attacker's accuracy on the same real windows (the reference)."""

    accuracy: float
    chance: float
    reference: float | None = None

    @property
    def near_chance(self) -> bool:
        """Accuracy within 1.5x chance (or within 10 points of it): the judge learned little,
        so a low accuracy on anonymised windows says nothing about privacy."""
        return self.accuracy <= max(1.5 * self.chance, self.chance + 0.1)

    @property
    def ratio(self) -> float | None:
        """Judge accuracy / reference accuracy (1 = as good as the best attacker)."""
        if self.reference is None or self.reference <= 0:
            return None
        return self.accuracy / self.reference

    @property
    def weak(self) -> bool:
        """Near chance, or below 80% of the reference accuracy."""
        r = self.ratio
        return self.near_chance or (r is not None and r < 0.8)


def judge_quality(accuracy: float, chance: float, reference: float | None = None
                  ) -> JudgeQuality:
    """:class:`JudgeQuality` of a judge with ``accuracy`` on real test windows.

    >>> q = judge_quality(0.17, 0.1, reference=0.69)
    >>> q.near_chance, round(q.ratio, 2), q.weak
    (True, 0.25, True)
    >>> judge_quality(0.65, 0.1, reference=0.69).weak
    False
    """
    return JudgeQuality(float(accuracy), float(chance),
                        None if reference is None else float(reference))


def judge_warnings(metrics: dict[str, float]) -> list[str]:
    """What the frozen judges' quality on real windows says about their figures, from the
    metrics of :meth:`~privkit.apps.anonymiser.IMUAnonymiser.evaluate` (``<judge>_acc_real``,
    ``<judge>_chance`` and, when measured, ``<judge>_reference_acc`` for ``reid`` and ``har``).

    >>> first = judge_warnings({"reid_acc_real": 0.12, "reid_chance": 0.1})[0]
    >>> first.startswith("the REID judge is near chance")
    True
    >>> judge_warnings({"reid_acc_real": 0.65, "reid_chance": 0.1, "reid_reference_acc": 0.7})
    []
    """
    out = []
    for name, what in (("reid", "privacy (frozen ReID)"), ("har", "utility (frozen HAR)")):
        if f"{name}_acc_real" not in metrics or f"{name}_chance" not in metrics:
            continue
        q = judge_quality(metrics[f"{name}_acc_real"], metrics[f"{name}_chance"],
                          metrics.get(f"{name}_reference_acc"))
        if q.near_chance:
            out.append(f"the {name.upper()} judge is near chance on real windows "
                       f"({q.accuracy:.1%}, chance {q.chance:.1%}): its {what} figure on "
                       "anonymised windows is meaningless")
        elif q.weak:
            out.append(f"the {name.upper()} judge is weak: {q.accuracy:.1%} on real windows where "
                       f"a from-scratch attacker reaches {q.reference:.1%}; its {what} figure on "
                       "anonymised windows overstates "
                       + ("privacy" if name == "reid" else "utility loss"))
    return out
