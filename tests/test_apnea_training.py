"""ApneaDetector training options: the moving average of the weights (``ema_decay``) with its
BatchNorm refresh, and label smoothing. Tiny data, few epochs: these check the mechanics; the
seed spread they buy is measured by ``bench/apnea_seeds.py`` (docs/encrypted_inference.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from privkit.apps.apnea import (
    ApneaConfig,
    ApneaDetector,
    _ema_copy,
    _ema_update,
    _refresh_batchnorm,
    _subject_split,
    subject_folds,
)
from privkit.apps.apnea_train import choose_epochs
from privkit.data.ecg import synthetic_ecg
from privkit.errors import DataFormatError, ParameterError


@pytest.fixture(scope="module")
def train():
    return synthetic_ecg(96, seed=5, effect=2.0)


@pytest.mark.parametrize("field,value", [("ema_decay", -0.1), ("ema_decay", 1.0), ("ema_decay", math.nan),
                                         ("label_smoothing", -0.2), ("label_smoothing", 1.0),
                                         ("keep_epoch", "median"), ("min_epochs", -1), ("min_epochs", 2.5)])
def test_bad_ema_decay_and_label_smoothing_are_typed_errors(field, value):
    with pytest.raises(ParameterError, match=field):
        ApneaConfig(**{field: value})
    with pytest.raises(ParameterError, match=field):
        ApneaDetector(arch="v2", **{field: value})


def test_v2_defaults_average_the_weights_and_v1_keeps_its_training():
    assert ApneaConfig().ema_decay == 0.99 and ApneaConfig().min_epochs == 0
    v1 = ApneaConfig.for_arch("v1")
    assert v1.ema_decay == 0.0 and v1.min_epochs == 0
    old = ApneaConfig.for_arch("v2", ema_decay=0.0, min_epochs=0)  # v2's training before the average
    assert (old.ema_decay, old.min_epochs, old.keep_epoch) == (0.0, 0, "best")


def test_a_loaded_config_with_a_bad_ema_decay_is_refused(train):
    det = ApneaDetector(arch="v2", epochs=1, restarts=1, seed=0)
    state = det._get_state()
    state["config"]["ema_decay"] = 3.0
    with pytest.raises(DataFormatError, match="ema_decay"):
        ApneaDetector._from_state(state)
    state["config"]["ema_decay"] = 1.0  # inside the file limits, refused by the config itself
    with pytest.raises(DataFormatError, match="ema_decay"):
        ApneaDetector._from_state(state)


def test_ema_update_averages_every_float_tensor_and_copies_counters():
    torch.manual_seed(0)
    live = torch.nn.Sequential(torch.nn.Conv1d(1, 3, 4), torch.nn.BatchNorm1d(3))
    avg = _ema_copy(live)
    before = {k: v.clone() for k, v in avg.state_dict().items()}
    with torch.no_grad():
        for p in live.parameters():
            p.add_(1.0)
    live.train()
    live(torch.randn(8, 1, 16))  # moves the running statistics and the batch counter
    _ema_update(avg, live, 0.9)
    for k, v in avg.state_dict().items():
        want = live.state_dict()[k]
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * want)
        else:
            assert torch.equal(v, want), k
    assert not any(p.requires_grad for p in avg.parameters())


def test_refresh_batchnorm_gives_the_statistics_of_the_model_s_own_outputs():
    torch.manual_seed(1)
    conv, bn = torch.nn.Conv1d(1, 3, 4), torch.nn.BatchNorm1d(3)
    model = torch.nn.Sequential(conv, bn)
    bn.running_mean.fill_(5.0)
    x = torch.randn(40, 1, 16)
    _refresh_batchnorm(model, x, batch_size=40)
    with torch.no_grad():
        h = conv(x).transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(bn.running_mean, h.mean(1))
    torch.testing.assert_close(bn.running_var, h.var(1, unbiased=True))
    assert bn.momentum == 0.1 and not model.training


def _val_loss(det, data):
    """The validation loss of ``det.model`` on the subjects its fit held out."""
    cfg = det.config
    _, ys, xv, yv = _subject_split(data, data.x, data.y, cfg.val_fraction, cfg.seed)
    counts = np.bincount(ys, minlength=2).astype(np.float32)
    loss = torch.nn.CrossEntropyLoss(weight=torch.tensor(counts.sum() / np.maximum(counts, 1) / 2))
    det.model.eval()
    with torch.no_grad():
        return float(loss(det.model(torch.from_numpy(xv)[:, None, :]), torch.from_numpy(yv)))


def test_fit_with_ema_keeps_the_averaged_weights_it_validated(train):
    kw = {"arch": "v2", "epochs": 4, "restarts": 2, "patience": 10, "min_epochs": 0, "seed": 3, "selection": "holdout"}
    ema = ApneaDetector(ema_decay=0.9, **kw).fit(train, progress=False)
    plain = ApneaDetector(ema_decay=0.0, **kw).fit(train, progress=False)
    # the kept weights are the ones whose validation loss was the best recorded
    best = min(h["val_loss"] for h in ema.history)
    assert _val_loss(ema, train) == pytest.approx(best, rel=1e-5)
    assert _val_loss(plain, train) == pytest.approx(min(h["val_loss"] for h in plain.history), rel=1e-5)
    # same seed, same batches: the average is not the live weights
    assert not np.allclose(ema.logits(train.x[:8]), plain.logits(train.x[:8]))
    # the average still compiles to the same program shape
    assert [type(m).__name__ for m in ema.model] == [type(m).__name__ for m in plain.model]


def test_label_smoothing_bounds_the_training_loss_from_below(train):
    kw = {"arch": "v2", "epochs": 60, "restarts": 1, "val_fraction": 0.0, "act_penalty": 0.0, "lr": 3e-2, "seed": 0,
          "selection": "holdout"}
    smooth = ApneaDetector(label_smoothing=0.2, **kw).fit(train, progress=False)
    sharp = ApneaDetector(label_smoothing=0.0, **kw).fit(train, progress=False)
    floor = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))  # cross-entropy against targets (0.9, 0.1)
    assert min(h["loss"] for h in smooth.history) >= floor - 1e-4
    assert min(h["loss"] for h in sharp.history) < floor  # without smoothing the loss goes below it


def test_keep_epoch_last_runs_every_epoch_and_ranks_restarts_by_their_last_epoch(train):
    det = ApneaDetector(arch="v2", epochs=5, restarts=3, patience=1, keep_epoch="last", seed=1, selection="holdout").fit(
        train, progress=False)
    assert [h["epoch"] for h in det.history] == [1, 2, 3, 4, 5] * 3  # patience does not stop it
    last = [det.history[4 + 5 * r]["val_loss"] for r in range(3)]
    assert _val_loss(det, train) == pytest.approx(min(last), rel=1e-5)
    assert len(det._restart_states) == 3


def test_min_epochs_keeps_no_earlier_epoch_and_delays_early_stopping(train):
    det = ApneaDetector(arch="v2", epochs=8, restarts=1, patience=1, min_epochs=5, seed=2, selection="holdout").fit(
        train, progress=False)
    n = len(det.history)
    assert n >= 6  # epochs 1-4 never count towards patience: at least epochs 5 and 6 ran
    later = [h["val_loss"] for h in det.history[4:]]
    assert _val_loss(det, train) == pytest.approx(min(later), rel=1e-5)
    # min_epochs beyond the schedule: only the last epoch qualifies
    last = ApneaDetector(arch="v2", epochs=3, restarts=1, min_epochs=50, seed=2, selection="holdout").fit(
        train, progress=False)
    assert len(last.history) == 3 and _val_loss(last, train) == pytest.approx(last.history[-1]["val_loss"], rel=1e-5)


# -- selection="cv": k-fold cross-validation over subjects picks the epoch count -----------------

@pytest.mark.parametrize("field,value", [("selection", "kfold"), ("selection", ""), ("cv_score", "auc"), ("cv_folds", 1),
                                         ("cv_folds", 21), ("cv_folds", 2.5), ("cv_folds", True)])
def test_bad_selection_and_cv_folds_are_typed_errors(field, value):
    with pytest.raises(ParameterError, match=field):
        ApneaConfig(**{field: value})
    with pytest.raises(ParameterError, match=field):
        ApneaDetector(arch="v2", **{field: value})


def test_subject_folds_deal_whole_subjects_into_disjoint_covering_folds(train):
    masks = subject_folds(train.subject, 4, seed=7)
    assert len(masks) == 4
    assert (np.sum(masks, axis=0) == 1).all()  # every window in exactly one fold
    per_fold = [set(np.unique(train.subject[m])) for m in masks]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not per_fold[i] & per_fold[j]  # no subject in two folds
    n_ids = len(np.unique(train.subject))
    assert sorted(len(p) for p in per_fold) in ([n_ids // 4] * (4 - n_ids % 4) + [n_ids // 4 + 1] * (n_ids % 4),)
    again = subject_folds(train.subject, 4, seed=7)
    assert all((a == b).all() for a, b in zip(masks, again))  # the seed fixes the folds
    with pytest.raises(ParameterError, match="cv_folds=9 needs at least 9 subjects"):
        subject_folds([1, 1, 2, 3], 9, seed=0)
    with pytest.raises(ParameterError, match="subject ids"):
        subject_folds(None, 3, seed=0)


def _weighted_loss(det, x, y, y_for_weights):
    counts = np.bincount(y_for_weights, minlength=2).astype(np.float32)
    loss = torch.nn.CrossEntropyLoss(weight=torch.tensor(counts.sum() / np.maximum(counts, 1) / 2))
    det.model.eval()
    with torch.no_grad():
        return float(loss(det.model(torch.from_numpy(x)[:, None, :]), torch.from_numpy(y)))


@pytest.mark.parametrize("score", ["loss", "accuracy"])
def test_cv_picks_the_epoch_count_of_the_pooled_fold_curves_then_trains_on_everything(train, score):
    det = ApneaDetector(arch="v2", epochs=5, cv_folds=3, restarts=2, seed=4, cv_score=score).fit(
        train, progress=False)
    assert det.config.selection == "cv"
    folds = subject_folds(train.subject, 3, seed=4)
    runs = [[h for h in det.history if h.get("fold") == f] for f in range(3)]
    assert [[h["epoch"] for h in r] for r in runs] == [[1, 2, 3, 4, 5]] * 3  # no early stop in a fold
    # the pooled curve weighs each fold's validation score by its windows: the CV score over all subjects
    key = "val_loss" if score == "loss" else "val_accuracy"
    pooled = sum(np.array([h[key] for h in r]) * m.sum() for r, m in zip(runs, folds)) / len(train.x)
    np.testing.assert_allclose(det.cv_curve, pooled, rtol=1e-12)
    assert det.cv_epochs == choose_epochs(pooled, score)
    finals = [[h for h in det.history if h.get("restart") == r] for r in range(2)]
    assert [len(r) for r in finals] == [det.cv_epochs] * 2
    assert not any("val_loss" in h for r in finals for h in r)  # nothing held out in the final nets
    # each final net trained on every training window; the kept one has the lowest training loss
    assert len(det._restart_scores) == 2
    kept = _weighted_loss(det, train.x, train.y, train.y)
    assert kept == pytest.approx(min(det._restart_scores), rel=1e-5)
    assert kept < max(det._restart_scores) or det._restart_scores[0] == det._restart_scores[1]


def test_choose_epochs_by_loss_and_by_smoothed_accuracy():
    loss = [0.9, 0.5, 0.45, 0.4, 0.42, 0.5]
    assert choose_epochs(loss, "loss") == 4
    assert choose_epochs(loss, "loss", min_epochs=5) == 5
    assert choose_epochs(loss, "loss", min_epochs=99) == 6  # beyond the schedule: its last epoch
    # a lone accuracy spike loses to a stretch of good epochs once averaged over 3
    acc = [0.5, 0.7, 0.95, 0.7, 0.8, 0.88, 0.9, 0.89, 0.9, 0.7]
    assert int(np.argmax(acc)) + 1 == 3
    assert choose_epochs(acc, "accuracy", smooth=3) == 8
    assert choose_epochs(acc, "accuracy", smooth=1) == 3
    assert choose_epochs([], "accuracy") == 0


def test_cv_honours_min_epochs_and_refuses_keep_epoch_last(train):
    det = ApneaDetector(arch="v2", epochs=4, cv_folds=2, restarts=1, min_epochs=3, seed=0, cv_score="loss").fit(
        train, progress=False)
    assert det.cv_epochs >= 3 and det.cv_epochs == 3 + int(np.argmin(det.cv_curve[2:]))
    with pytest.raises(ParameterError, match="keep_epoch='last'"):
        ApneaDetector(arch="v2", epochs=1, cv_folds=2, keep_epoch="last").fit(train, progress=False)
    with pytest.raises(ParameterError, match="cv_folds=20 needs at least 20 subjects"):
        ApneaDetector(arch="v2", epochs=1, cv_folds=20).fit(synthetic_ecg(24, seed=1), progress=False)


def test_selection_defaults_and_save_load(tmp_path, train):
    assert (ApneaConfig().selection, ApneaConfig().cv_folds, ApneaConfig().cv_score) == ("cv", 5, "accuracy")
    assert ApneaConfig.for_arch("v1").selection == "holdout"
    det = ApneaDetector(arch="v2", epochs=1, cv_folds=2, restarts=1, seed=0).fit(train, progress=False)
    det.save(tmp_path / "cv.pkd")
    back = ApneaDetector.load(tmp_path / "cv.pkd")
    assert (back.config.selection, back.config.cv_folds) == ("cv", 2)
    np.testing.assert_allclose(back.logits(train.x[:4]), det.logits(train.x[:4]), rtol=1e-6, atol=1e-6)
    state = det._get_state()
    del state["config"]["selection"], state["config"]["cv_folds"]  # a file from before the fields
    old = ApneaDetector._from_state(state)
    assert (old.config.selection, old.config.cv_folds) == ("holdout", 5)
    for field, bad in (("selection", "kfold"), ("cv_folds", 50), ("cv_folds", 1), ("cv_score", "auc")):
        state = det._get_state()
        state["config"][field] = bad
        with pytest.raises(DataFormatError, match=field):
            ApneaDetector._from_state(state)
