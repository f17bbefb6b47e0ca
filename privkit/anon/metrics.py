"""Metrics of the anonymiser: accuracy, weighted F1, identity-transfer rate, MMD fidelity.

>>> import numpy as np
>>> accuracy(np.array([0, 1, 1]), np.array([0, 1, 0]))
0.6666666666666666
>>> round(weighted_f1(np.array([0, 1, 1]), np.array([0, 1, 1])), 3)
1.0
>>> rng = np.random.default_rng(0)
>>> a, b = rng.normal(size=(200, 10)), rng.normal(size=(200, 10))
>>> abs(mmd_rbf(a, b)) < 0.02 < mmd_rbf(a, b + 1.0)
True
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score

__all__ = ["accuracy", "mmd_rbf", "transfer_rate", "weighted_f1"]


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of predictions equal to the labels."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean()) if len(y_true) else float("nan")


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 per class averaged with class supports as weights (sklearn's ``average='weighted'``)."""
    return float(f1_score(np.asarray(y_true), np.asarray(y_pred), average="weighted",
                          zero_division=0))


def transfer_rate(target: np.ndarray, predicted: np.ndarray) -> float:
    """Identity transfer: fraction of anonymised windows the ReID judge assigns to the target."""
    return accuracy(target, predicted)


def mmd_rbf(x: np.ndarray, y: np.ndarray, *, max_n: int = 500, seed: int = 0) -> float:
    """Unbiased squared maximum mean discrepancy with a Gaussian kernel (median bandwidth).

    Windows are flattened; at most ``max_n`` of each side are used. 0 means the two samples are
    indistinguishable by this statistic; it is a fidelity figure, not a test.
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    if len(x) > max_n:
        x = x[rng.choice(len(x), max_n, replace=False)]
    if len(y) > max_n:
        y = y[rng.choice(len(y), max_n, replace=False)]
    z = np.concatenate([x, y])
    sq = (z * z).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)
    med = np.median(d2[np.triu_indices(len(z), 1)])
    k = np.exp(-d2 / max(med, 1e-12))
    n, m = len(x), len(y)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1))
                 + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())
