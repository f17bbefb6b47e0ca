"""Training of the apnea detector (:meth:`privkit.apps.apnea.ApneaDetector.fit`).

Two ways to decide how long to train and which initialisation to keep (``ApneaConfig.selection``):

``"holdout"``
    One split: ``val_fraction`` of the training subjects is held out. Every restart trains on
    the rest, its epoch with the lowest validation loss is kept (early stopping with
    ``patience``), and the restart with the lowest validation loss wins. Cheap, but the choice
    rests on ~8 subjects: when they happen to be hard ones, their loss bottoms out after a few
    epochs and a half-trained net is kept.

``"cv"``
    k-fold cross-validation over subjects chooses the EPOCH COUNT, then the final net trains on
    all the subjects. The subjects are cut into ``cv_folds`` folds; fold f's net trains on the
    other folds for the whole schedule and is scored on fold f after every epoch (accuracy, or
    the loss with ``cv_score="loss"``). Each window of the training data is out-of-fold for
    exactly one of these nets, so the pooled curve ``S(e) = sum_f n_f S_f(e) / sum_f n_f`` is the
    cross-validated score of "train for e epochs" on every subject, and ``e*`` is its best
    epoch (:func:`choose_epochs`). Only the epoch count is compared across folds, never one
    fold's score against another's, so a hard fold shifts the curve of every candidate count
    alike instead of favouring whichever run it happened to validate. Then ``restarts`` nets
    train on all the subjects for ``e*`` epochs (the same schedule, cut at ``e*``) and the one
    with the lowest training loss is kept: with no held-out subjects left, the training loss
    ranks the initialisations by how well they optimised (a quadratic network sometimes starts
    in a poor basin), which on a net of a few hundred weights and a thousand windows is what
    differs between them. It costs ``cv_folds`` full trainings more than one fit.
    The accuracy is the default score because the pooled cross-entropy bottoms out early (the
    nets grow confident) while the accuracy still rises: bench/apnea_seeds.py measured both.

Both use the same per-epoch step: AdamW, an optional cosine decay, an optional moving average
of the weights (whose BatchNorm statistics are recomputed before it is scored), the activation
penalty and the quadratic-sign clamp.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .. import nn as pnn
from ..errors import ParameterError

__all__ = ["choose_epochs", "subject_folds"]

log = logging.getLogger(__name__)

#: seed offset between restarts (and folds): each gets its own initialisation
_RESTART_STRIDE = 7919
#: epochs in the moving average of the pooled cross-validated accuracy (``cv_score="accuracy"``)
CV_SMOOTH = 5
#: seed offset of the final restarts of ``selection="cv"`` (not the folds' initialisations)
_FINAL_OFFSET = 104729


def _subject_split(data: Any, x: np.ndarray, y: np.ndarray, fraction: float,
                   seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Hold out ``fraction`` of the subjects (whole subjects, so validation is on unseen people)."""
    if fraction <= 0:
        return x, y, None, None
    subj = getattr(data, "subject", None)
    if subj is None or len(subj) != len(x):
        raise ParameterError("val_fraction > 0 needs data with subject ids (ECGWindows); pass "
                             "val_fraction=0 for a plain (x, y) tuple")
    ids = np.unique(np.asarray(subj))
    if len(ids) < 2:
        raise ParameterError(f"val_fraction needs at least 2 subjects, the data has {len(ids)}")
    rng = np.random.default_rng(seed)
    n_val = min(len(ids) - 1, max(1, int(round(len(ids) * fraction))))
    held = np.isin(np.asarray(subj), rng.choice(ids, n_val, replace=False))
    return x[~held], y[~held], x[held], y[held]


def subject_folds(subject: Any, k: int, seed: int) -> list[np.ndarray]:
    """``k`` boolean masks over the windows, one per fold; each subject's windows all fall in
    one fold, the subjects shuffled by ``seed`` and dealt into folds of equal size (+-1).

    >>> subj = np.array([1, 1, 2, 3, 3, 4])
    >>> masks = subject_folds(subj, 2, seed=0)
    >>> [len(set(subj[m])) for m in masks], bool((sum(m.astype(int) for m in masks) == 1).all())
    ([2, 2], True)
    """
    if subject is None:
        raise ParameterError("selection='cv' needs data with subject ids (ECGWindows); pass "
                             "selection='holdout', val_fraction=0 for a plain (x, y) tuple")
    subj = np.asarray(subject)
    ids = np.unique(subj)
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ParameterError(f"cv_folds must be an integer >= 2, got {k!r}")
    if len(ids) < k:
        raise ParameterError(f"cv_folds={k} needs at least {k} subjects, the data has {len(ids)}; "
                             "lower cv_folds or use selection='holdout'")
    order = np.random.default_rng(seed).permutation(ids)
    return [np.isin(subj, part) for part in np.array_split(order, k)]


def _ema_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of ``model`` that holds the moving average (no hooks, no gradients)."""
    avg = copy.deepcopy(model)
    for m in avg.modules():
        m._forward_pre_hooks.clear()
        m._forward_hooks.clear()
    for p in avg.parameters():
        p.requires_grad_(False)
    return avg


@torch.no_grad()
def _ema_update(avg: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``avg = decay * avg + (1 - decay) * model`` for every float tensor of the state (BatchNorm's
    running statistics included; integer counters are copied)."""
    live = model.state_dict()
    for k, v in avg.state_dict().items():
        if v.is_floating_point():
            v.mul_(decay).add_(live[k], alpha=1 - decay)
        else:
            v.copy_(live[k])


@torch.no_grad()
def _refresh_batchnorm(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 256) -> None:
    """Recompute every BatchNorm's running statistics on ``x`` for ``model``'s own weights (an
    average of weights is not normalised by the statistics the live weights gathered)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    model.train()
    for i in range(0, len(x), batch_size):
        model(x[i : i + batch_size])
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()


@dataclasses.dataclass
class _RunResult:
    score: float  # the validation loss of the kept epoch (holdout / cv folds) or the training loss (final)
    state: dict[str, torch.Tensor]
    curve: list[float]  # validation loss after every epoch that ran (empty without validation)


class _Trainer:
    """One ``fit``'s shared state: the detector, losses, batch order, history and progress bar."""

    def __init__(self, det: Any, y: np.ndarray, val: Any, bar: Any) -> None:
        cfg = self.cfg = det.config
        self.det, self.val, self.bar = det, val, bar
        self.gen = torch.Generator().manual_seed(cfg.seed)
        counts = np.bincount(y, minlength=2).astype(np.float32)
        weight = torch.tensor(counts.sum() / np.maximum(counts, 1) / 2)
        self.loss_fn = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
        self.score_fn = torch.nn.CrossEntropyLoss(weight=weight)
        self.seen: list[torch.Tensor] = []

    def _step_epoch(self, opt: Any, ema: torch.nn.Module | None, xt: torch.Tensor, yt: torch.Tensor) -> float:
        cfg, model = self.cfg, self.det.model
        model.train()
        self.det._eval_model = None
        perm = torch.randperm(len(xt), generator=self.gen)
        tot, nb = 0.0, 0
        for i in range(0, len(xt), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            opt.zero_grad()
            self.seen.clear()
            loss = self.loss_fn(model(xt[idx]), yt[idx])
            if self.seen:  # activation inputs beyond act_bound are penalised (small encrypted values)
                loss = loss + cfg.act_penalty * sum(torch.relu(a.abs() - cfg.act_bound).pow(2).mean()
                                                    for a in self.seen)
            loss.backward()
            opt.step()
            if cfg.min_quadratic > 0:
                with torch.no_grad():  # one sign for every a2: the compiler folds each quadratic into one level
                    for m in model.modules():
                        if isinstance(m, pnn.PolyAct) and m.learnable and m.degree == 2:
                            m.coeffs[:, 2].clamp_(min=cfg.min_quadratic)
            if ema is not None:
                _ema_update(ema, model, cfg.ema_decay)
            tot += float(loss.detach())
            nb += 1
        return tot / max(nb, 1)

    @torch.no_grad()
    def _score(self, model: torch.nn.Module, x: torch.Tensor, y: np.ndarray) -> tuple[float, float]:
        model.eval()
        out = model(x)
        return float(self.score_fn(out, torch.from_numpy(y))), float((out.argmax(1).numpy() == y).mean())

    def run(self, xs: np.ndarray, ys: np.ndarray, xv: np.ndarray | None, yv: np.ndarray | None, *,
            epochs: int, early_stop: bool, tag: dict[str, int]) -> _RunResult:
        """Train ``det.model`` (freshly built by the caller) on ``xs`` for at most ``epochs`` epochs
        of the configured schedule (which always spans ``config.epochs``).

        With a validation set, records its loss after every epoch; ``early_stop`` keeps the best
        epoch (after ``min_epochs``) and stops after ``patience`` epochs without a better one,
        ``keep_epoch="last"`` keeps the last. Without one, the last epoch is kept and scored by
        its training loss."""
        cfg, det = self.cfg, self.det
        model = det.model
        xt, yt = torch.from_numpy(xs)[:, None, :], torch.from_numpy(ys)
        xvt = None if xv is None else torch.from_numpy(xv)[:, None, :]
        ema = _ema_copy(model) if cfg.ema_decay > 0 else None
        acts = [m for m in model.modules() if isinstance(m, pnn.PolyAct)] if cfg.act_penalty > 0 else []
        hooks = [m.register_forward_pre_hook(lambda _m, inp: self.seen.append(inp[0])) for m in acts]
        judged = model if ema is None else ema

        def snapshot() -> dict[str, torch.Tensor]:
            return {k: v.detach().clone() for k, v in judged.state_dict().items()}

        try:
            opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(cfg.epochs, 1), eta_min=cfg.lr / 100)
                     if cfg.lr_schedule == "cosine" else None)
            best: tuple[float, dict[str, torch.Tensor]] | None = None
            curve: list[float] = []
            stale = 0
            for epoch in range(epochs):
                rec: dict[str, float] = {"epoch": epoch + 1, **tag, "loss": self._step_epoch(opt, ema, xt, yt)}
                if xvt is not None:
                    if ema is not None:  # BatchNorm statistics of the averaged weights, not the live ones
                        _refresh_batchnorm(ema, xt)
                    rec["val_loss"], rec["val_accuracy"] = self._score(judged, xvt, yv)
                    curve.append(rec["val_loss"])
                self._record(rec)
                if sched is not None:
                    sched.step()
                if not early_stop or cfg.keep_epoch == "last" or epoch + 1 < min(cfg.min_epochs, cfg.epochs):
                    continue
                if best is None or rec["val_loss"] < best[0]:
                    best, stale = (rec["val_loss"], snapshot()), 0
                else:
                    stale += 1
                    if stale >= cfg.patience:
                        log.info("early stop after epoch %d (best validation loss %.4f)", epoch + 1, best[0])
                        break
            if best is None:  # the last epoch is kept
                if xvt is None and ema is not None:
                    _refresh_batchnorm(ema, xt)
                score = curve[-1] if curve else (self._score(judged, xt, ys)[0] if epochs else float("inf"))
                best = (score, snapshot())
            return _RunResult(best[0], best[1], curve)
        finally:
            for h in hooks:
                h.remove()

    def _record(self, rec: dict[str, float]) -> None:
        if self.val is not None:
            rec.update({f"heldout_{k}": v for k, v in self.det.evaluate(self.val).items() if k != "n"})
        self.det.history.append(rec)
        self.bar.set_postfix({k: round(v, 4) for k, v in rec.items() if k not in ("epoch", "fold", "restart")})
        self.bar.update(1)


def _fresh(det: Any, build: Callable[[Any], torch.nn.Module], seed: int) -> None:
    torch.manual_seed(seed)
    det.model = build(det.config)


def _fit_holdout(det: Any, data: Any, x: np.ndarray, y: np.ndarray, val: Any, bar: Any,
                 build: Callable[[Any], torch.nn.Module]) -> tuple[_Trainer, dict[str, torch.Tensor], np.ndarray, np.ndarray]:
    cfg = det.config
    xs, ys, xv, yv = _subject_split(data, x, y, cfg.val_fraction, cfg.seed)
    if cfg.restarts > 1 and xv is None:
        raise ParameterError("restarts > 1 picks the restart by validation loss: set val_fraction > 0")
    tr = _Trainer(det, ys, val, bar)

    def one(r: int) -> _RunResult:
        if r > 0:  # a fresh initialisation (restart 0 is the one built with the detector)
            _fresh(det, build, cfg.seed + _RESTART_STRIDE * r)
        return tr.run(xs, ys, xv, yv, epochs=cfg.epochs, early_stop=xv is not None, tag={})

    score, state, r = _best_restart(det, cfg.restarts, one)
    log.info("kept restart %d of %d (validation loss %.4f)", r + 1, cfg.restarts, score)
    return tr, state, xs, ys


def _best_restart(det: Any, restarts: int, run: Callable[[int], _RunResult]
                  ) -> tuple[float, dict[str, torch.Tensor], int]:
    """Run ``run(r)`` for every restart, record each on ``det`` and return the lowest score
    with its state and index."""
    chosen: tuple[float, dict[str, torch.Tensor], int] | None = None
    for r in range(restarts):
        res = run(r)
        det._restart_states.append(res.state)
        det._restart_scores.append(res.score)
        if chosen is None or res.score < chosen[0]:
            chosen = (res.score, res.state, r)
    if chosen is None:
        raise ParameterError(f"restarts must be >= 1, got {restarts}")
    return chosen


def choose_epochs(curve: Any, score: str, min_epochs: int = 0, smooth: int = CV_SMOOTH) -> int:
    """The epoch count (1-based) a pooled cross-validation curve points to, at least ``min_epochs``.

    ``score="loss"``: the epoch of the lowest loss. ``"accuracy"``: the epoch of the highest
    accuracy after a centred moving average over ``smooth`` epochs (the ends padded with their
    own value): accuracy moves in steps of one window and plateaus for many epochs, so its raw
    maximum is a coin toss among near-equal epochs; the average picks the middle of the best
    stretch instead.

    >>> choose_epochs([0.9, 0.5, 0.4, 0.45, 0.6], "loss")
    3
    >>> choose_epochs([0.60, 0.80, 0.90, 0.88, 0.91, 0.90, 0.90, 0.89], "accuracy", smooth=3)
    6
    >>> choose_epochs([0.9, 0.5, 0.4, 0.45, 0.6], "loss", min_epochs=4)
    4
    """
    c = np.asarray(curve, dtype=float)
    if len(c) == 0:
        return 0
    first = min(max(min_epochs, 1), len(c)) - 1
    if score == "loss":
        return first + int(np.argmin(c[first:])) + 1
    half = max(smooth, 1) // 2
    avg = np.convolve(np.pad(c, half, mode="edge"), np.ones(2 * half + 1) / (2 * half + 1), mode="valid")
    return first + int(np.argmax(avg[first:])) + 1


def _fit_cv(det: Any, data: Any, x: np.ndarray, y: np.ndarray, val: Any, bar: Any,
            build: Callable[[Any], torch.nn.Module]) -> tuple[_Trainer, dict[str, torch.Tensor], np.ndarray, np.ndarray]:
    cfg = det.config
    if cfg.keep_epoch == "last":
        raise ParameterError("keep_epoch='last' contradicts selection='cv' (which chooses the epoch "
                             "count); use selection='holdout' to keep the last epoch")
    subj = getattr(data, "subject", None)
    if subj is not None and len(subj) != len(x):
        subj = None
    folds = subject_folds(subj, cfg.cv_folds, cfg.seed)
    tr = _Trainer(det, y, val, bar)
    pooled = np.zeros(cfg.epochs)
    for f, held in enumerate(folds):
        _fresh(det, build, cfg.seed + _RESTART_STRIDE * f)
        n_hist = len(det.history)
        res = tr.run(x[~held], y[~held], x[held], y[held], epochs=cfg.epochs, early_stop=False, tag={"fold": f})
        curve = (res.curve if cfg.cv_score == "loss" else
                 [-h["val_accuracy"] for h in det.history[n_hist:]])  # lower is better for both
        pooled += np.asarray(curve) * held.sum()
    pooled /= len(x)
    if cfg.cv_score == "accuracy":
        pooled = -pooled
    det.cv_curve = pooled.tolist()
    det.cv_epochs = n_epochs = choose_epochs(pooled, cfg.cv_score, cfg.min_epochs)
    if hasattr(tr.bar, "refresh"):  # the final restarts run e* epochs, not the whole schedule
        tr.bar.total = len(folds) * cfg.epochs + cfg.restarts * n_epochs + cfg.finetune_epochs
        tr.bar.refresh()
    log.info("cross-validated epoch count %d of %d (pooled validation %s %.4f over %d folds)", n_epochs,
             cfg.epochs, cfg.cv_score, pooled[n_epochs - 1] if cfg.epochs else float("nan"), cfg.cv_folds)

    def one(r: int) -> _RunResult:
        _fresh(det, build, cfg.seed + _FINAL_OFFSET + _RESTART_STRIDE * r)
        return tr.run(x, y, None, None, epochs=n_epochs, early_stop=False, tag={"restart": r})

    score, state, r = _best_restart(det, cfg.restarts, one)
    log.info("kept final restart %d of %d (training loss %.4f)", r + 1, cfg.restarts, score)
    return tr, state, x, y


def fit_detector(det: Any, data: Any, x: np.ndarray, y: np.ndarray, val: Any, bar: Any,
                 build: Callable[[Any], torch.nn.Module]) -> None:
    """Train ``det.model`` (see the module docstring), then calibrate and fine-tune it."""
    cfg = det.config
    torch.manual_seed(cfg.seed)
    det._restart_states, det._restart_scores = [], []
    det.cv_curve, det.cv_epochs = None, None
    fit = _fit_cv if cfg.selection == "cv" else _fit_holdout
    tr, kept, xs, ys = fit(det, data, x, y, val, bar, build)
    det.model.load_state_dict(kept)
    # freeze the approximations' input ranges at what the data shows, then fine-tune the kept weights
    xt = torch.from_numpy(xs)[:, None, :]
    pnn.calibrate(det.model, xt, margin=cfg.calibration_margin)
    if cfg.finetune_epochs:
        opt = torch.optim.AdamW(det.model.parameters(), lr=cfg.lr / 5, weight_decay=cfg.weight_decay)
        yt = torch.from_numpy(ys)
        hooks = [m.register_forward_pre_hook(lambda _m, inp: tr.seen.append(inp[0]))
                 for m in det.model.modules() if isinstance(m, pnn.PolyAct)] if cfg.act_penalty > 0 else []
        try:
            for epoch in range(cfg.epochs, cfg.epochs + cfg.finetune_epochs):
                tr._record({"epoch": epoch + 1, "loss": tr._step_epoch(opt, None, xt, yt)})
        finally:
            for h in hooks:
                h.remove()
