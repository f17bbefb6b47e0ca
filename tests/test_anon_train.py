"""Training pipeline and IMUAnonymiser: AE reconstruction, a short seeded GAN run, save/load,
privacy report, CLI."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from privkit.anon.networks import TCNNIMU, ConvAutoencoder, Discriminator
from privkit.anon.train import (
    AnonConfig,
    build_generator,
    pretrain_autoencoder,
    train_gan,
)
from privkit.api import PrivacyReport
from privkit.apps import anon_cli
from privkit.apps.anonymiser import IMUAnonymiser
from privkit.data.imu import MinMaxNormaliser, split_recordings, synthetic_imu
from privkit.errors import DataFormatError, ParameterError

# the paper's judge (tCNN-IMU); the default judges are 1-D CNNs (tests/test_anon_attackers.py)
FAST = {"judge_arch": "tcnn", "judge_filters": 8, "judge_fc": 32, "judge_lr": 3e-3, "ae_channels": (8, 16, 16), "bottleneck": 16,
            "disc_channels": (8, 16, 16), "mapper_hidden": (64,), "batch_size": 32, "progress": False}


@pytest.fixture(scope="module")
def data():
    ds = synthetic_imu(n_subjects=5, n_activities=3, trials=3, seconds=8, window=32, step=16,
                       n_devices=1, seed=3)
    train, test = split_recordings(ds, 0.34, seed=0)
    norm = MinMaxNormaliser.fit(train.windows)
    return (train.with_windows(norm.transform(train.windows)),
            test.with_windows(norm.transform(test.windows)))


@pytest.fixture(scope="module")
def fitted(data):
    torch.set_num_threads(1)
    train, test = data
    cfg = AnonConfig(**{**FAST, "batch_size": 16}, ae_epochs=4, judge_epochs=8, gan_epochs=3,
                     seed=0)
    model = IMUAnonymiser(strategy="acg", config=cfg).fit(train)
    return model, model.evaluate(test, attacker_epochs=3)


def test_autoencoder_reconstruction_loss_falls(data):
    train, _ = data
    x = torch.as_tensor(train.windows[:300])
    ae = ConvAutoencoder(6, 32, channels=(8, 16, 16), bottleneck=16)
    ae.eval()
    with torch.no_grad():
        before = float(torch.nn.functional.mse_loss(ae(x[-60:]), x[-60:]))
    hist = pretrain_autoencoder(ae, x[:-60], x[-60:],
                                AnonConfig(**{**FAST, "batch_size": 16}, ae_epochs=6, ae_lr=3e-3))
    assert len(hist) >= 3 and min(hist[1:]) < hist[0] < before
    assert min(hist) < 0.5 * before


def test_short_training_lowers_frozen_reid_and_keeps_har(fitted):
    _, m = fitted
    print({k: round(v, 3) for k, v in m.items()})
    assert m["reid_acc_real"] > 0.6  # the judge really learned identities
    assert m["reid_acc_anon"] < m["reid_acc_real"] - 0.3
    assert m["har_acc_anon"] > m["har_chance"] + 0.3  # well above chance
    assert {"reid_retrained_acc", "har_f1_anon", "reid_f1_real", "mmd_real_vs_anon"} <= set(m)
    assert m["mmd_real_vs_anon"] > 0


def test_privacy_report_and_save_load(fitted, data, tmp_path):
    model, m = fitted
    _, test = data
    rep = model.privacy_report()
    assert isinstance(rep, PrivacyReport) and rep.kind == "anonymisation"
    assert rep.reid_accuracy_before == m["reid_acc_real"]
    assert rep.reid_accuracy_after == m["reid_acc_anon"]
    assert rep.reid_retrained_accuracy == m["reid_retrained_acc"]
    assert rep.reid_chance == m["reid_chance"] and rep.har_accuracy_after == m["har_acc_anon"]
    assert "ReID accuracy" in rep.summary()
    path = tmp_path / "anon.pt"
    model.save(path)
    back = IMUAnonymiser.load(path)
    x = test.windows[:10]
    a = model.anonymise(x, source=test.subject[:10], seed=1)
    b = back.anonymise(x, source=test.subject[:10], seed=1)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert back.privacy_report().reid_accuracy_after == rep.reid_accuracy_after
    with pytest.raises(ParameterError, match="source"):
        back.anonymise(x)
    with pytest.raises(ParameterError, match="not seen in training"):
        back.anonymise(x, source=np.full(10, 99))
    with pytest.raises(DataFormatError):
        IMUAnonymiser.load(tmp_path / "missing.pt")


def test_dfi_reuses_pretraining_and_transfers(fitted, data):
    base, _ = fitted
    train, test = data
    cfg = AnonConfig(**FAST, gan_epochs=2, seed=0)
    dfi = IMUAnonymiser(strategy="dfi", config=cfg).fit(train, reuse=base)
    for k, v in base.reid.state_dict().items():
        assert torch.equal(dfi.reid.state_dict()[k], v), k
    xa, tgt = dfi.anonymise(test.windows, source=test.subject, return_target=True)
    assert xa.shape == test.windows.shape and (tgt != test.subject).all()
    m = dfi.evaluate(test, retrain_attacker=False)
    assert 0.0 <= m["dfi_transfer_rate"] <= 1.0
    assert "reid_retrained_acc" not in m
    assert any("retrained" in w for w in dfi.privacy_report().warnings)
    one = dfi.anonymise(test.windows[:4], source=test.subject[:4], target=2)
    assert one.shape == (4, 32, 6)


def test_gan_selection_waits_for_the_online_attacker():
    """With select_attacker, epochs before the warm-up are scored without the attacker and
    never kept, even when they score best; afterwards validate() gets the online attacker."""
    torch.manual_seed(0)
    x = torch.rand(40, 16, 3)
    a, s = torch.randint(0, 2, (40,)), torch.arange(40) % 4
    cfg = AnonConfig(**{**FAST, "batch_size": 20}, gan_epochs=4, warmup_epochs=2,
                     adaptive_weight=1.0, adaptive_loss="confusion", attacker_steps=2,
                     attacker_reset=2, attacker_real=True, select_attacker=True, patience=9,
                     select_extra_epochs=0)  # score-only records are never feasible
    ae = ConvAutoencoder(3, 16, channels=(8, 16, 16), bottleneck=8)
    gen = build_generator(ae, "ag", 4, cfg)
    judge = TCNNIMU((3,), 16, 4, filters=4, fc=8)
    attacker = TCNNIMU((3,), 16, 4, filters=4, fc=8)
    seen, states = [], []

    def validate(g, online=None):
        seen.append(online)
        states.append({k: v.clone() for k, v in g.state_dict().items()})
        return {"score": [10.0, 9.0, 1.0, 2.0][len(seen) - 1]}

    hist = train_gan(gen, Discriminator(3, 16, channels=(4, 8, 8)), judge, "ag", x, a, s, cfg,
                     validate=validate, attacker=attacker)
    assert len(hist) == 4 and all("loss_a" in h for h in hist)
    assert seen[0] is None and seen[1] is attacker and seen[3] is attacker
    kept = gen.state_dict()
    assert all(torch.equal(kept[k], states[1][k]) for k in kept)  # epoch 1, not epoch 0
    assert not all(torch.equal(kept[k], states[0][k]) for k in kept)


def test_model_selection_never_uses_the_har_judge(data, monkeypatch):
    from privkit.apps import anonymiser as mod

    calls = []
    real_predict = mod.predict
    monkeypatch.setattr(mod, "predict", lambda net, x, **k: (calls.append(net),
                                                             real_predict(net, x, **k))[1])
    train, _ = data
    cfg = AnonConfig(**FAST, ae_epochs=1, judge_epochs=1, gan_epochs=2, utility_weight=1.0)
    model = IMUAnonymiser(strategy="ag", config=cfg).fit(train)
    assert calls and all(net is not model.har for net in calls)
    assert any(net is model.selection_critic for net in calls)
    assert model.selection_critic is not model.utility_critic
    assert "activity_ratio" in model.history_["gan"][0]


def test_selection_scores_the_most_pessimistic_selection_critic(data):
    """Model selection's activity ratio is the lowest of the selection critics' ratios
    (anonymised / real accuracy on the validation windows), recomputed here independently."""
    from privkit.anon.metrics import accuracy
    from privkit.anon.train import predict

    torch.set_num_threads(1)
    train, _ = data
    cfg = AnonConfig(**FAST, ae_epochs=1, judge_epochs=2, gan_epochs=1, selection_critics=2,
                     utility_weight=0.0, seed=1)
    model = IMUAnonymiser(strategy="acg", config=cfg).fit(train)
    critics = model.selection_critics
    assert len(critics) == 2 and critics[0] is model.selection_critic
    assert critics[0] is not critics[1] and all(c is not model.har for c in critics)
    # rebuild the validation split and the validation anonymisation exactly as fit() does
    perm = np.random.default_rng(cfg.seed).permutation(len(train.windows))
    va = perm[:max(2, round(cfg.val_fraction * len(perm)))]
    x = torch.as_tensor(train.windows[va])
    s = torch.as_tensor(model._map(train.subject[va], model.subjects_, "subject"))
    a = model._map(train.activity[va], model.activities_, "activity")
    xa = model._run(x, s, None, torch.Generator().manual_seed(cfg.seed + 12))
    ratios = [accuracy(a, predict(c, xa)) / accuracy(a, predict(c, x)) for c in critics]
    kept = next(r for r in model.history_["gan"] if r["selected"])  # the state fit() kept
    assert kept["activity_ratio"] == pytest.approx(min(ratios))


def test_default_and_paper_configurations():
    d, p = AnonConfig(), AnonConfig.paper()
    assert d.utility_weight > 0 and d.dfi_target_mean and d.selection_critics == 1
    assert d.judge_arch == "cnn1d"  # strong judges by default (the paper's tCNN is opt-in)
    assert p.utility_weight == 0 and not p.dfi_target_mean and p.adaptive_weight == 0
    assert p.selection_critics == d.selection_critics  # selection is the same in both
    assert AnonConfig.paper(gan_epochs=3).gan_epochs == 3
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ParameterError, match="selection_critics"):
            AnonConfig(selection_critics=bad)


def test_fit_rejects_unscaled_data(data):
    train, _ = data
    with pytest.raises(ParameterError, match=r"\[0, 1\]"):
        IMUAnonymiser(config=AnonConfig(**FAST)).fit(train.windows * 5, train.activity,
                                                     train.subject)
    with pytest.raises(ParameterError, match="strategy"):
        IMUAnonymiser(strategy="xyz")


def _cli(argv):
    parser = argparse.ArgumentParser(prog="privkit")
    anon_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_train_evaluate_apply(tmp_path, capsys):
    model = str(tmp_path / "m.pt")
    data = ["--data", "synthetic", "--subjects", "3", "--activities", "2", "--seconds", "6",
            "--window", "32", "--step", "16"]
    assert _cli(["anon", "train", *data, "--strategy", "dfi", "--out", model, "--smoke",
                 "--extras", "--quiet", "--json", "--plots", str(tmp_path / "png")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["strategy"] == "dfi" and "dfi_transfer_rate" in out["metrics"]
    back = IMUAnonymiser.load(model)
    assert back.config.dfi_target_mean and back.config.select_attacker  # --extras took effect
    assert back.generator.add_target_mean
    assert out["privacy_report"]["kind"] == "anonymisation"
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["anon_bars.png",
                                                                     "anon_window.png"]
    assert _cli(["anon", "evaluate", "--model", model, "--attacker-epochs", "1"]) == 0
    table = capsys.readouterr().out
    assert "ReID accuracy (retrained attacker)" in table and "DFI transfer rate" in table
    out_file = tmp_path / "a.env"
    assert _cli(["anon", "apply", "--model", model, "--out", str(out_file), "--target", "1"]) == 0
    from privkit.fhe.envelope import unpack_dataset

    got, meta = unpack_dataset(out_file.read_bytes())
    assert (got["target"] == 1).all() and got["windows"].shape[1:] == (32, 12)
    assert meta["strategy"] == "dfi"


def test_cli_paper_flag(tmp_path, capsys):
    model = str(tmp_path / "p.pt")
    data = ["--data", "synthetic", "--subjects", "3", "--activities", "2", "--seconds", "6",
            "--window", "32", "--step", "16"]
    assert _cli(["anon", "train", *data, "--strategy", "dfi", "--out", model, "--smoke",
                 "--paper", "--quiet", "--no-eval"]) == 0
    back = IMUAnonymiser.load(model)
    assert back.config.utility_weight == 0 and not back.config.dfi_target_mean
    assert not back.generator.add_target_mean
    with pytest.raises(SystemExit):
        _cli(["anon", "train", *data, "--out", model, "--paper", "--extras"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_cli_remove_strategy_and_strength(tmp_path, capsys):
    model = str(tmp_path / "r.privkit")
    data = ["--data", "synthetic", "--subjects", "3", "--activities", "2", "--seconds", "6",
            "--window", "32", "--step", "16"]
    assert _cli(["anon", "train", *data, "--strategy", "remove", "--strength", "0.3",
                 "--judge-arch", "cnn1d", "--out", model, "--smoke", "--quiet",
                 "--no-eval"]) == 0
    back = IMUAnonymiser.load(model)
    assert back.strategy == "remove" and back.config.removal_strength == 0.3
    assert back.config.judge_arch == "cnn1d"
    with pytest.raises(ParameterError, match="removal_strength"):
        _cli(["anon", "train", *data, "--strategy", "remove", "--strength", "1.5",
              "--out", str(tmp_path / "bad.privkit"), "--smoke", "--quiet", "--no-eval"])
    assert not (tmp_path / "bad.privkit").exists()


def test_example_smoke_runs():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), MPLBACKEND="Agg")
    r = subprocess.run([sys.executable, str(root / "examples" / "anonymise_imu.py"), "--smoke"],
                       capture_output=True, text=True, timeout=600, env=env, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "reloaded model gives the same output: True" in r.stdout
    assert "Anonymisation (no formal guarantee; empirical)" in r.stdout


def _ag_rec(act, reid, k=8):
    """A validation record as IMUAnonymiser.fit's validate() builds it for ag/acg."""
    return {"activity_ratio": act, "reid": reid,
            "score": act - max(reid - 1 / k, 0.0) / (1 - 1 / k)}


def test_constrained_selection_prefers_feasible_epochs():
    from privkit.anon.train import EpochSelector, select_epoch

    hist = [_ag_rec(1.00, 0.30),   # 0: too identifiable
            _ag_rec(0.93, 0.18),   # 1: feasible
            _ag_rec(0.96, 0.19),   # 2: feasible, best score among feasible
            _ag_rec(0.99, 0.21),   # 3: best combined score, but above 1.6 x chance = 0.2
            _ag_rec(0.85, 0.00)]   # 4: private, activity below 0.9
    assert max(range(5), key=lambda i: hist[i]["score"]) == 3
    cfg = AnonConfig(patience=10)
    assert select_epoch(hist, cfg, 8) == 2
    assert select_epoch(hist, AnonConfig(patience=10, selection="score"), 8) == 3
    sel = EpochSelector(cfg, 8)
    assert [sel.feasible(r) for r in hist] == [False, True, True, False, False]
    # the thresholds are knobs: a looser ReID bound makes epoch 3 feasible and best
    assert select_epoch(hist, AnonConfig(patience=10, select_reid_factor=1.8), 8) == 3
    # a stricter activity floor leaves nothing feasible: fall back to the combined score
    assert select_epoch(hist, AnonConfig(patience=10, select_activity_min=0.995), 8) == 3
    # among feasible epochs the combined score counts, not the activity ratio alone
    hist2 = [_ag_rec(0.99, 0.19), _ag_rec(0.95, 0.05)]
    assert hist2[0]["activity_ratio"] > hist2[1]["activity_ratio"]
    assert select_epoch(hist2, cfg, 8) == 1
    # records without the constraint fields (score only) are never feasible
    assert select_epoch([{"score": 1.0}, {"score": 2.0}], cfg, 8) == 1


def test_constrained_selection_dfi_and_patience():
    from privkit.anon.train import select_epoch

    def dfi(act, tr):
        return {"activity_ratio": act, "transfer": tr, "score": act - (1 - tr)}

    cfg = AnonConfig(patience=2)
    # no epoch is feasible for a while: patience must not stop training before the first
    # feasible epoch (the combined-score rule stops at epoch 2 and keeps epoch 0)
    hist = [dfi(0.99, 0.85), dfi(0.98, 0.84), dfi(0.97, 0.83), dfi(0.96, 0.86),
            dfi(0.95, 0.94), dfi(0.94, 0.94), dfi(0.93, 0.94), dfi(0.99, 0.99)]
    assert select_epoch(hist, AnonConfig(patience=2, selection="score"), 8) == 0
    # epoch 4 is the first feasible one; patience counts from there, so epoch 7 is never seen
    assert select_epoch(hist, cfg, 8) == 4
    assert select_epoch(hist, AnonConfig(patience=3), 8) == 7
    # transfer just under the threshold is infeasible
    assert select_epoch([dfi(1.0, 0.929), dfi(0.91, 0.93)], cfg, 8) == 1


def test_selection_knobs_are_validated():
    for kw, what in [({"selection": "best"}, "selection"),
                     ({"select_reid_factor": 0}, "select_reid_factor"),
                     ({"select_reid_factor": float("nan")}, "select_reid_factor"),
                     ({"select_reid_factor": "2"}, "select_reid_factor"),
                     ({"select_transfer_min": 1.5}, "select_transfer_min"),
                     ({"select_activity_min": -0.1}, "select_activity_min"),
                     ({"select_extra_epochs": -1}, "select_extra_epochs")]:
        with pytest.raises(ParameterError, match=what):
            AnonConfig(**kw)


def test_fit_marks_the_epoch_the_selector_keeps(fitted):
    from privkit.anon.train import select_epoch

    model, _ = fitted
    hist = model.history_["gan"]
    assert all("feasible" in r for r in hist)
    assert sum(r["selected"] for r in hist) == 1
    kept = next(r["epoch"] for r in hist if r["selected"])
    assert kept == select_epoch(hist, model.config, len(model.subjects_))


def test_extra_epochs_only_while_nothing_is_feasible():
    """Constrained selection trains past gan_epochs only while no epoch was feasible, and
    stops after the first extra epoch that is; the score rule never trains past gan_epochs."""
    torch.manual_seed(0)
    x = torch.rand(40, 16, 3)
    a, s = torch.randint(0, 2, (40,)), torch.arange(40) % 4

    def run(reids, **kw):
        cfg = AnonConfig(**{**FAST, "batch_size": 20}, gan_epochs=2, patience=1, **kw)
        ae = ConvAutoencoder(3, 16, channels=(8, 16, 16), bottleneck=8)
        gen = build_generator(ae, "ag", 4, cfg)
        judge = TCNNIMU((3,), 16, 4, filters=4, fc=8)
        it = iter(reids)

        def validate(g, online=None):
            r = next(it)
            return {"activity_ratio": 1.0, "reid": r, "score": 1.0 - r}

        return train_gan(gen, Discriminator(3, 16, channels=(4, 8, 8)), judge, "ag", x, a, s,
                         cfg, validate=validate)

    # chance 0.25: feasible needs reid <= 1.6 * 0.25 = 0.4; first feasible at epoch 3
    hist = run([0.9, 0.8, 0.7, 0.3, 0.1, 0.1], select_extra_epochs=3)
    assert len(hist) == 4 and [h["selected"] for h in hist] == [0, 0, 0, 1]
    assert [h["feasible"] for h in hist] == [0, 0, 0, 1]
    hist = run([0.9, 0.8, 0.7, 0.6, 0.5], select_extra_epochs=2)  # never feasible: 2 + 2
    assert len(hist) == 4 and hist[3]["selected"] == 1
    hist = run([0.9, 0.8, 0.7], selection="score", select_extra_epochs=5)
    assert len(hist) == 2
    hist = run([0.3, 0.9, 0.9, 0.9], select_extra_epochs=5)  # feasible at once: patience 1
    assert len(hist) == 2 and hist[0]["selected"] == 1
