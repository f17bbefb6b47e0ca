"""Metrics for generative image models that need nothing downloaded.

* ``recon_mse``: mean squared reconstruction error (images in [-1, 1], as FSVAE reports it);
* ``aid``: *autoencoder* Fréchet distance, FSVAE's AID: the Fréchet distance between real and
  generated images in the latent space of a plain autoencoder trained on the same data set;
* ``is_local`` / ``fd_local``: Inception Score and a Fréchet distance computed with a small CNN
  classifier trained locally on the data set's labels. These are **not** IS / FID: Inception-v3
  weights are not available offline, so the numbers are comparable between our models, not with
  published IS / FID values. (torchvision's Inception-v3 can be used instead when it and its
  weights are installed: ``GenerativeMetrics(inception_weights=PATH)``.)

>>> import numpy as np
>>> round(frechet_distance(np.eye(3), np.eye(3)), 6)
0.0
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ParameterError

__all__ = [
    "FeatureAutoencoder",
    "GenerativeMetrics",
    "LocalClassifier",
    "frechet_distance",
    "inception_score",
]


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` (n, d) and ``b`` (m, d)."""
    from scipy import linalg

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1 = np.atleast_2d(np.cov(a, rowvar=False))
    s2 = np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # singular products (few samples) are handled below
        covmean = linalg.sqrtm(s1.dot(s2))
        if not np.isfinite(covmean).all():
            off = np.eye(s1.shape[0]) * 1e-6
            covmean = linalg.sqrtm((s1 + off).dot(s2 + off))
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def inception_score(probs: np.ndarray, splits: int = 1) -> float:
    """``exp(E_x KL(p(y|x) || p(y)))`` from class probabilities ``(n, classes)``."""
    probs = np.asarray(probs, dtype=np.float64)
    scores = []
    for part in np.array_split(probs, splits):
        py = part.mean(0, keepdims=True)
        kl = (part * (np.log(part + 1e-12) - np.log(py + 1e-12))).sum(1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores))


class LocalClassifier(nn.Module):
    """A small CNN classifier; its penultimate layer gives the features for ``fd_local``."""

    def __init__(self, in_channels: int, image_size: int, n_classes: int, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * (image_size // 4) ** 2, 128), nn.ReLU(),
        )
        self.head = nn.Linear(128, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FeatureAutoencoder(nn.Module):
    """A plain convolutional autoencoder; its latent code gives the features for AID."""

    def __init__(self, in_channels: int, image_size: int, latent: int = 32, width: int = 32) -> None:
        super().__init__()
        s = image_size // 4
        self.enc = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, 2, 1), nn.ReLU(), nn.Flatten(),
            nn.Linear(2 * width * s * s, latent),
        )
        self.dec = nn.Sequential(
            nn.Linear(latent, 2 * width * s * s), nn.ReLU(), nn.Unflatten(1, (2 * width, s, s)),
            nn.ConvTranspose2d(2 * width, width, 3, 2, 1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(width, in_channels, 3, 2, 1, output_padding=1), nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(x))


def _batches(x: torch.Tensor, bs: int, gen: torch.Generator | None = None):
    idx = torch.randperm(len(x), generator=gen) if gen is not None else torch.arange(len(x))
    for i in range(0, len(x), bs):
        yield idx[i:i + bs]


@dataclasses.dataclass
class GenerativeMetrics:
    """Fit once per data set (``fit(train_images, labels)``), then ``evaluate(generated, real)``.

    ``epochs`` trades time for quality of the feature extractors; the numbers are only
    comparable between evaluations that use the same fitted instance.
    """

    epochs: int = 5
    latent: int = 32
    seed: int = 0
    inception_weights: str | None = None
    classifier: LocalClassifier | None = None
    autoencoder: FeatureAutoencoder | None = None
    classifier_accuracy: float | None = None
    _inception: Any = None

    def fit(self, images: np.ndarray, labels: np.ndarray | None) -> GenerativeMetrics:
        torch.manual_seed(self.seed)
        g = torch.Generator().manual_seed(self.seed)
        x = torch.as_tensor(np.asarray(images, dtype=np.float32))
        _, c, h, _w = x.shape
        if h % 4:
            raise ParameterError(f"metrics need an image size divisible by 4, got {h}")
        self.autoencoder = FeatureAutoencoder(c, h, self.latent)
        opt = torch.optim.Adam(self.autoencoder.parameters(), lr=1e-3)
        for _ in range(self.epochs):
            for idx in _batches(x, 128, g):
                opt.zero_grad()
                loss = ((self.autoencoder(x[idx]) - x[idx]) ** 2).mean()
                loss.backward()
                opt.step()
        self.autoencoder.eval()
        if labels is not None:
            y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
            self.classifier = LocalClassifier(c, h, int(y.max()) + 1)
            opt = torch.optim.Adam(self.classifier.parameters(), lr=1e-3)
            for _ in range(self.epochs):
                for idx in _batches(x, 128, g):
                    opt.zero_grad()
                    nn.functional.cross_entropy(self.classifier(x[idx]), y[idx]).backward()
                    opt.step()
            self.classifier.eval()
            with torch.no_grad():
                pred = torch.cat([self.classifier(x[i:i + 512]).argmax(1)
                                  for i in range(0, len(x), 512)])
            self.classifier_accuracy = float((pred == y).float().mean())
        if self.inception_weights:
            self._inception = _load_inception(self.inception_weights)
        return self

    @torch.no_grad()
    def _ae_features(self, x: torch.Tensor) -> np.ndarray:
        assert self.autoencoder is not None
        return torch.cat([self.autoencoder.enc(x[i:i + 512]) for i in range(0, len(x), 512)]).numpy()

    @torch.no_grad()
    def _clf(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        assert self.classifier is not None
        feats, probs = [], []
        for i in range(0, len(x), 512):
            f = self.classifier.features(x[i:i + 512])
            feats.append(f)
            probs.append(torch.softmax(self.classifier.head(f), 1))
        return torch.cat(feats).numpy(), torch.cat(probs).numpy()

    def evaluate(self, generated: np.ndarray, real: np.ndarray) -> dict[str, float]:
        """AID, and (when labels were given to ``fit``) IS / FD with the local classifier."""
        if self.autoencoder is None:
            raise ParameterError("GenerativeMetrics.evaluate before fit()")
        gx = torch.as_tensor(np.asarray(generated, dtype=np.float32))
        rx = torch.as_tensor(np.asarray(real, dtype=np.float32))
        out = {"aid": frechet_distance(self._ae_features(rx), self._ae_features(gx))}
        if self.classifier is not None:
            fg, pg = self._clf(gx)
            fr, _ = self._clf(rx)
            out["is_local"] = inception_score(pg)
            out["fd_local"] = frechet_distance(fr, fg)
        if self._inception is not None:
            out.update(_inception_metrics(self._inception, gx, rx))
        return out


def _load_inception(path: str) -> Any:
    if not os.path.isfile(path):
        raise ParameterError(f"Inception weights {path!r} not found")
    try:
        from torchvision.models import inception_v3  # type: ignore[import-not-found]
    except ImportError as e:
        raise ParameterError(
            "Inception-v3 metrics need torchvision (not installed); the local-classifier IS/FD "
            "are used instead"
        ) from e
    net = inception_v3(weights=None, aux_logits=True, init_weights=False)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    net.eval()
    return net


@torch.no_grad()
def _inception_metrics(net: Any, gx: torch.Tensor, rx: torch.Tensor) -> dict[str, float]:
    import torch.nn.functional as F

    def run(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        feats, probs = [], []
        pool = {}
        h = net.avgpool.register_forward_hook(lambda m, i, o: pool.__setitem__("f", o.flatten(1)))
        try:
            for i in range(0, len(x), 64):
                b = x[i:i + 64]
                if b.shape[1] == 1:
                    b = b.repeat(1, 3, 1, 1)
                b = F.interpolate(b, size=(299, 299), mode="bilinear", align_corners=False)
                logits = net(b)
                feats.append(pool["f"])
                probs.append(torch.softmax(logits, 1))
        finally:
            h.remove()
        return torch.cat(feats).numpy(), torch.cat(probs).numpy()

    fg, pg = run(gx)
    fr, _ = run(rx)
    return {"inception_score": inception_score(pg, splits=10), "fid": frechet_distance(fr, fg)}
