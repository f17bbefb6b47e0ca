"""The attacker suite: every attacker beats chance widely on raw windows, a leaky
"anonymiser" (identity plus noise) is caught, judge-quality warnings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privkit.anon.attackers import (
    ATTACKERS,
    CNN1D,
    attack_suite,
    best_attacker,
    judge_quality,
    judge_warnings,
    window_features,
)
from privkit.apps.anonymiser import AnonConfig, IMUAnonymiser
from privkit.data.imu import MinMaxNormaliser, synthetic_imu
from privkit.data.splits import split_time
from privkit.errors import ParameterError, PrivacyWarning, ShapeError

TINY = {"judge_filters": 8, "judge_fc": 16, "ae_channels": (4, 8, 8), "bottleneck": 8,
        "disc_channels": (4, 8, 8), "mapper_hidden": (16,), "batch_size": 32,
        "ae_epochs": 1, "judge_epochs": 1, "gan_epochs": 1, "selection_critics": 1,
        "select_extra_epochs": 0, "utility_weight": 0.0, "progress": False}


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    ds = synthetic_imu(n_subjects=4, n_activities=2, trials=2, seconds=16, window=32, step=16,
                       n_devices=1, seed=3)
    train, test = split_time(ds, 0.4, gap=1)
    norm = MinMaxNormaliser.fit(train.windows)
    return (train.with_windows(norm.transform(train.windows)),
            test.with_windows(norm.transform(test.windows)))


def test_every_attacker_beats_chance_widely_on_raw_windows(data):
    train, test = data
    res = attack_suite(train.windows, train.subject, test.windows, test.subject, epochs=8,
                       filters=16, batch_size=32, lr=3e-3, seed=0)
    print(res)
    assert set(res) == set(ATTACKERS)
    for kind, r in res.items():
        assert r["acc"] > 2.5 * 0.25, kind  # 4 subjects: chance 0.25
    _, acc = best_attacker(res)
    assert acc == max(r["acc"] for r in res.values()) and acc > 0.8


class LeakyAnonymiser(IMUAnonymiser):
    """A deliberately leaky 'anonymiser': the input plus a little noise."""

    @torch.no_grad()
    def _run(self, x, s, t, g, batch=512):
        return (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)


def test_a_leaky_anonymiser_is_caught_by_the_retrained_attacker(data):
    train, test = data
    model = LeakyAnonymiser(strategy="ag", config=AnonConfig(**TINY)).fit(train)
    with pytest.warns(PrivacyWarning):  # the one-epoch judges are weak or near chance
        m = model.evaluate(test, attacker_epochs=6, attackers=("features", "cnn1d"))
    print({k: round(v, 3) for k, v in m.items()})
    assert m["reid_retrained_acc"] > 2.5 * m["reid_chance"]
    assert {"reid_attack_features_acc", "reid_attack_cnn1d_acc", "reid_reference_acc",
            "har_reference_acc", "har_retrained_acc", "reid_reference_cnn1d_acc"} <= set(m)
    assert m["reid_retrained_acc"] == max(m["reid_attack_features_acc"],
                                          m["reid_attack_cnn1d_acc"])
    rep = model.privacy_report()
    assert rep.reid_retrained_accuracy == m["reid_retrained_acc"]
    assert rep.details["best_attacker"] == model.best_attacker_() in ("features", "cnn1d")
    assert any("identity is not removed" in w for w in rep.warnings)


def test_judge_quality_warnings():
    near = {"reid_acc_real": 0.12, "reid_chance": 0.1, "reid_reference_acc": 0.7,
            "har_acc_real": 0.9, "har_chance": 0.2, "har_reference_acc": 0.92}
    w = judge_warnings(near)
    assert len(w) == 1 and "near chance" in w[0] and "meaningless" in w[0]
    weak = {"reid_acc_real": 0.3, "reid_chance": 0.1, "reid_reference_acc": 0.7}
    assert "overstates privacy" in judge_warnings(weak)[0]
    assert judge_warnings({"reid_acc_real": 0.65, "reid_chance": 0.1,
                                  "reid_reference_acc": 0.7}) == []
    q = judge_quality(0.17, 0.1, 0.69)
    assert q.near_chance and q.weak and abs(q.ratio - 0.17 / 0.69) < 1e-12


def test_bad_inputs_are_typed_errors():
    x = np.random.default_rng(0).random((10, 16, 3)).astype(np.float32)
    y = np.arange(10) % 2
    with pytest.raises(ParameterError, match="unknown attackers"):
        attack_suite(x, y, x, y, kinds=("svm",))
    with pytest.raises(ShapeError):
        attack_suite(x, y, x[:, :8], y)
    with pytest.raises(ShapeError):
        attack_suite(x, y[:5], x, y)
    with pytest.raises(ShapeError):
        window_features(x[0])
    with pytest.raises(ShapeError):
        CNN1D(3, 16, 2)(torch.rand(2, 8, 3))
    with pytest.raises(ParameterError):
        best_attacker({})
    f = window_features(x)
    assert f.shape == (10, 20 * 3 + 3) and np.isfinite(f).all()


def test_split_time_keeps_recordings_on_both_sides(data):
    ds = synthetic_imu(n_subjects=2, n_activities=2, trials=1, seconds=8, window=32, step=16)
    train, test = split_time(ds, 0.5, gap=1)
    for r in set(ds.recording):
        tr, te = np.flatnonzero(train.recording == r), np.flatnonzero(test.recording == r)
        assert len(tr) and len(te)
    with pytest.raises(ParameterError):
        split_time(ds, 1.5)


def test_cnn1d_judges_fit_save_and_load(data, tmp_path):
    train, test = data
    cfg = AnonConfig(**{**TINY, "judge_arch": "cnn1d", "judge_epochs": 4, "judge_lr": 3e-3})
    model = IMUAnonymiser(strategy="acg", config=cfg).fit(train)
    assert isinstance(model.reid, CNN1D) and float(model.reid.std.min()) > 0
    m = model.evaluate(test, retrain_attacker=False)
    assert m["reid_acc_real"] > 2 * m["reid_chance"]  # the 1-D CNN judge learned identities
    path = tmp_path / "anon.pt"
    model.save(path)
    back = IMUAnonymiser.load(path)
    assert isinstance(back.reid, CNN1D) and torch.equal(back.reid.mean, model.reid.mean)
    with pytest.raises(ParameterError, match="judge_arch"):
        AnonConfig(judge_arch="rnn")


def test_feature_net_as_online_attacker(data):
    train, _ = data
    with pytest.raises(ParameterError, match="attacker_init"):
        AnonConfig(attacker_arch="features", attacker_init="reid")
    cfg = AnonConfig(**{**TINY, "adaptive_weight": 1.0, "adaptive_loss": "confusion",
                        "attacker_arch": "features", "attacker_real": True})
    model = IMUAnonymiser(strategy="ag", config=cfg).fit(train)
    assert all("loss_a" in h for h in model.history_["gan"])
    from privkit.anon.attackers import FeatureNet

    net = FeatureNet(6, 32, 4)
    x = torch.rand(8, 32, 6, requires_grad=True)
    net(x).sum().backward()  # differentiable w.r.t. the windows (the generator's gradient)
    assert x.grad is not None and torch.isfinite(x.grad).all()
