"""A privacy audit that can fail: canary membership inference with an empirical epsilon lower bound.

The audit follows "Privacy Auditing with One (1) Training Run" (Steinke, Nasr, Jagielski,
NeurIPS 2023), black-box variant:

1. draw ``m`` canaries (records the model would not fit by chance: here, examples with a wrong
   label) and include each in the training set independently with probability 1/2;
2. train once (the same code path as the model being audited);
3. score every canary by how well the model fits it (negative loss: members are fitted);
4. guess "in" for the ``k`` highest scores and "out" for the ``k`` lowest, count correct guesses.

If training is epsilon-DP, the number of correct guesses among ``r = 2k`` is stochastically
dominated by ``Binomial(r, e^eps / (1 + e^eps))`` (their Theorem for pure DP). The empirical lower
bound is the largest epsilon that this rejects at confidence ``1 - beta`` (Bonferroni-corrected over
the few ``k`` tried). It is a *lower* bound: a correct DP implementation gives a value at or below
its accountant's epsilon (up to the ``beta`` chance of a false alarm); a value above it means the
implementation leaks more than it claims (e.g. the noise is missing). The ``delta`` of an
(eps, delta) guarantee adds a small slack to this test that the bound ignores (of order ``m *
delta``; 2e-3 for 200 canaries at delta 1e-5). With ``m`` canaries the bound cannot exceed about
``log(r / log(1/beta))``: a few hundred canaries measure epsilons up to ~4-5, not 8.

The membership-inference AUC (members vs non-members among the canaries) is reported beside it.

>>> import numpy as np
>>> inside = np.array([True] * 50 + [False] * 50)
>>> lb, info = epsilon_lower_bound(np.where(inside, 1.0, 0.0), inside)  # a perfect attack
>>> round(lb, 2), info["correct"], info["guesses"]
(3.18, 100, 100)
>>> epsilon_lower_bound(np.zeros(100), inside)[0]  # an attack that knows nothing
0.0
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import ParameterError

__all__ = [
    "AuditResult",
    "audit_canaries",
    "audit_classifier",
    "epsilon_lower_bound",
    "mislabeled_canaries",
]


def _tail(r: int, v: int, eps: float) -> float:
    """P[Binomial(r, e^eps / (1 + e^eps)) >= v]."""
    from scipy.stats import binom

    p = 1.0 / (1.0 + math.exp(-eps))
    return float(binom.sf(v - 1, r, p))


def _bound_for(r: int, v: int, beta: float) -> float:
    """Largest epsilon with P[Binomial(r, p(eps)) >= v] <= beta (0 if even eps=0 is not rejected)."""
    if r == 0 or _tail(r, v, 0.0) > beta:
        return 0.0
    lo, hi = 0.0, 1.0
    while _tail(r, v, hi) <= beta:
        lo, hi = hi, hi * 2
        if hi > 100:
            return lo
    for _ in range(60):
        mid = (lo + hi) / 2
        if _tail(r, v, mid) <= beta:
            lo = mid
        else:
            hi = mid
    return lo


def epsilon_lower_bound(
    scores: Sequence[float] | np.ndarray, inside: Sequence[bool] | np.ndarray, *,
    beta: float = 0.05, fractions: Sequence[float] = (0.2, 0.5, 1.0),
) -> tuple[float, dict[str, Any]]:
    """Empirical epsilon lower bound from canary ``scores`` (higher = more likely a member) and
    the true inclusion bits ``inside``; ``(bound, details)``.

    For each fraction ``f`` the attacker guesses "in" for the top ``f * m / 2`` scores and "out"
    for the bottom as many; ``fractions`` with ``f = 1`` guesses every canary. The bound at
    confidence ``1 - beta`` is the largest over the fractions, each tested at
    ``beta / len(fractions)``. Ties in scores are broken against the attacker.
    """
    s = np.asarray(scores, dtype=np.float64)
    b = np.asarray(inside, dtype=bool)
    if s.shape != b.shape or s.ndim != 1 or len(s) < 2:
        raise ParameterError(f"scores and inside must be equal-length 1-D arrays, got {s.shape}, "
                             f"{b.shape}")
    if not np.isfinite(s).all():
        raise ParameterError("canary scores must be finite")
    if not 0 < beta < 1:
        raise ParameterError(f"beta must lie in (0, 1), got {beta}")
    m = len(s)
    # ties against the attacker: among equal scores, non-members rank higher
    order_desc = np.lexsort((b, -s))  # by score descending, then inside=False first
    order_asc = np.lexsort((~b, s))  # by score ascending, then inside=True first
    best, best_info = 0.0, {"correct": 0, "guesses": 0, "k": 0}
    per_beta = beta / len(fractions)
    for f in fractions:
        k = max(1, round(f * m / 2))
        top, bottom = order_desc[:k], order_asc[:k]
        correct = int(b[top].sum() + (~b[bottom]).sum())
        lb = _bound_for(2 * k, correct, per_beta)
        if lb > best or best_info["guesses"] == 0:
            best, best_info = lb, {"correct": correct, "guesses": 2 * k, "k": k}
    return best, best_info | {"beta": beta, "canaries": m}


def _auc(scores: np.ndarray, inside: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if inside.all() or not inside.any():
        return float("nan")
    return float(roc_auc_score(inside.astype(int), scores))


@dataclasses.dataclass(frozen=True)
class AuditResult:
    """What :func:`audit_canaries` measured."""

    auc: float  # membership-inference ROC AUC over the canaries (0.5 = chance)
    epsilon_lower_bound: float  # empirical, at confidence 1 - beta
    accountant_epsilon: float | None  # what the accountant claims (None: not private)
    canaries: int
    members: int
    correct: int
    guesses: int
    beta: float

    @property
    def passed(self) -> bool:
        """True when the empirical lower bound does not contradict the accountant's epsilon
        (always False for a model that claims no epsilon but leaks measurably)."""
        if self.accountant_epsilon is None:
            return self.epsilon_lower_bound == 0.0
        return self.epsilon_lower_bound <= self.accountant_epsilon

    def summary(self) -> str:
        claim = "none" if self.accountant_epsilon is None else f"{self.accountant_epsilon:.3g}"
        verdict = "consistent" if self.passed else "FAILED: leaks more than claimed"
        return (f"MIA AUC {self.auc:.3f}; empirical epsilon >= {self.epsilon_lower_bound:.3g} "
                f"({self.correct}/{self.guesses} guesses, {self.canaries} canaries, "
                f"{100 * (1 - self.beta):.0f}% confidence); accountant epsilon {claim}: {verdict}")


def audit_canaries(
    train: Callable[[np.ndarray], Any],
    score: Callable[[Any], np.ndarray],
    n_canaries: int,
    *,
    accountant_epsilon: Callable[[Any], float | None] | float | None = None,
    beta: float = 0.05,
    seed: int = 0,
) -> AuditResult:
    """One-run canary audit of a training procedure.

    ``train(included)`` trains a model with the canaries whose indices are in ``included`` (a
    boolean mask of length ``n_canaries``, drawn here with probability 1/2 each) added to its
    training data, and returns the model (or anything ``score`` understands). ``score(model)``
    returns one membership score per canary (higher = more likely a member, e.g. minus the loss).
    ``accountant_epsilon`` is the epsilon the training claims: a number, a function of the
    trained model, or ``None`` for a non-private model.
    """
    if n_canaries < 2:
        raise ParameterError(f"the audit needs at least 2 canaries, got {n_canaries}")
    rng = np.random.default_rng(seed)
    inside = rng.random(n_canaries) < 0.5
    model = train(inside.copy())
    s = np.asarray(score(model), dtype=np.float64)
    if s.shape != (n_canaries,):
        raise ParameterError(f"score() must return {n_canaries} scores, got shape {s.shape}")
    lb, info = epsilon_lower_bound(s, inside, beta=beta)
    claim = accountant_epsilon(model) if callable(accountant_epsilon) else accountant_epsilon
    return AuditResult(
        auc=_auc(s, inside), epsilon_lower_bound=lb,
        accountant_epsilon=None if claim is None else float(claim), canaries=n_canaries,
        members=int(inside.sum()), correct=info["correct"], guesses=info["guesses"], beta=beta,
    )


def mislabeled_canaries(x: np.ndarray, y: np.ndarray, n: int, n_classes: int, seed: int = 0
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` canaries from ``(x, y)``: examples given a random *wrong* label, so that a model
    fits one only if it saw it. Returns ``(canary_x, canary_y, indices used)``."""
    if n > len(x):
        raise ParameterError(f"{n} canaries requested from {len(x)} examples")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(x), size=n, replace=False)
    shift = rng.integers(1, n_classes, size=n)
    return x[idx], (np.asarray(y)[idx] + shift) % n_classes, idx


def audit_classifier(
    x: np.ndarray, y: np.ndarray, n_classes: int, *,
    target_epsilon: float | None = None, delta: float | None = None,
    n_canaries: int = 200, n_train: int = 500, epochs: int = 100, batch_size: int = 64,
    lr: float | None = None, max_grad_norm: float = 1.0, hidden: int = 256,
    seed: int = 0, beta: float = 0.05, tamper: Callable[[Any], None] | None = None,
) -> AuditResult:
    """Audit a small MLP classifier trained on ``(x, y)`` (features ``(n, d)``, integer labels):
    ``n_train`` clean records plus the included half of ``n_canaries`` mislabeled canaries.

    ``target_epsilon=None`` trains without DP (Adam, for ``epochs``); otherwise DP-SGD through
    :func:`privkit.dp.make_private` (SGD with momentum, the noise calibrated to ``target_epsilon``
    over ``epochs``; ``delta`` defaults to 1/N). ``tamper(training)`` is called on the
    :class:`~privkit.dp.DPTraining` before training: tests use it to plant a bug (e.g. drop the
    noise while the accountant keeps its sigma) and check the audit catches it.
    """
    import torch
    from torch import nn

    from .engine import make_private

    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    if len(x) < n_train + n_canaries:
        raise ParameterError(f"need {n_train + n_canaries} examples, got {len(x)}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(x))
    base_x, base_y = x[perm[:n_train]], y[perm[:n_train]]
    pool = perm[n_train:]
    cx, cy, _ = mislabeled_canaries(x[pool], y[pool], n_canaries, n_classes, seed=seed + 1)

    def train(included: np.ndarray) -> Any:
        torch.manual_seed(seed)
        tx = torch.as_tensor(np.concatenate([base_x, cx[included]]))
        ty = torch.as_tensor(np.concatenate([base_y, cy[included]]))
        model = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, n_classes))
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(tx, ty), batch_size=batch_size, shuffle=True,
            generator=torch.Generator().manual_seed(seed))
        if target_epsilon is None:
            opt: Any = torch.optim.Adam(model.parameters(), lr=lr or 1e-3)
            training = None
            m, o, dl = model, opt, loader
        else:
            opt = torch.optim.SGD(model.parameters(), lr=lr or 0.5, momentum=0.9)
            training = make_private(model, opt, loader, target_epsilon=target_epsilon,
                                    delta=delta, max_grad_norm=max_grad_norm, epochs=epochs)
            if tamper is not None:
                tamper(training)
            m, o, dl = training
        for _ in range(epochs):
            for xb, yb in dl:
                if len(xb) == 0:
                    o.zero_grad()
                    o.step() if training is not None else None
                    continue
                o.zero_grad()
                nn.functional.cross_entropy(m(xb), yb).backward()
                o.step()
        model.eval()
        return model, training

    def score(trained: Any) -> np.ndarray:
        model, _ = trained
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.as_tensor(cx)), 1)
        return logp[torch.arange(len(cy)), torch.as_tensor(cy)].numpy()

    def claim(trained: Any) -> float | None:
        _, training = trained
        return None if training is None else training.get_epsilon()

    return audit_canaries(train, score, n_canaries, accountant_epsilon=claim, beta=beta,
                          seed=seed + 2)
