"""An anonymiser must change its input, and hide identity from a ReID model: these tests fail for
an identity anonymiser (``anonymise`` returning its input) and for a leaky one (output close to
the input, or re-identified as often as the real data).

Public surface only: ``IMUAnonymiser.anonymise`` and the CLI's ``anon apply`` output file. Tiny
synthetic data and a short schedule (the settings of tests/test_anon_train.py).

Thresholds (measured on this fixture: the anonymised test windows differ from the real ones by
an RMS of 0.079 on average and 0.045 at least, on the [0, 1] scale; the frozen ReID judge falls
from 1.00 on the real windows to 0.33, chance being 0.2):
* every window's RMS difference is above ``MIN_WINDOW_RMS`` = 0.02, and the mean RMS difference
  above ``MIN_MEAN_RMS`` = 0.05;
* the ReID judge's accuracy on the output is at least ``MIN_REID_DROP`` = 0.4 below its accuracy
  on the real windows (which must itself be above 0.6, so the judge is a real attacker).
A half-leaky output (0.5 x input + 0.5 x anonymised: mean RMS 0.039, ReID 0.65) fails them.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from privkit.anon.metrics import accuracy
from privkit.anon.train import AnonConfig, predict
from privkit.apps import anon_cli
from privkit.apps.anonymiser import IMUAnonymiser

MIN_WINDOW_RMS = 0.02
MIN_MEAN_RMS = 0.05
MIN_REID_DROP = 0.4

FAST = {"judge_filters": 8, "judge_fc": 32, "judge_lr": 3e-3, "ae_channels": (8, 16, 16), "bottleneck": 16,
        "disc_channels": (8, 16, 16), "mapper_hidden": (64,), "batch_size": 16, "progress": False}
SPEC = {"data": "synthetic", "window": 32, "step": 16, "seed": 3, "test_fraction": 0.34,
        "subjects": 5, "activities": 3, "seconds": 8}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    train, test, norm = anon_cli.prepare_data(SPEC)
    cfg = AnonConfig(**FAST, ae_epochs=4, judge_epochs=8, gan_epochs=3, seed=0)
    model = IMUAnonymiser(strategy="acg", config=cfg)
    model.normaliser, model.data_spec = norm, dict(SPEC)
    model.fit(train)
    path = tmp_path_factory.mktemp("anon") / "acg.pt"
    model.save(path)
    return model, train, test, path


def _reid_accuracy(model, windows, subjects):
    idx = np.searchsorted(model.subjects_, subjects)
    assert (model.subjects_[idx] == subjects).all()
    return accuracy(idx, predict(model.reid, torch.as_tensor(np.asarray(windows, np.float32))))


def assert_changed_and_private(model, real, anon, subjects, what):
    """The checks an identity or leaky anonymiser fails."""
    assert anon.shape == real.shape
    rms = np.sqrt(((anon - real) ** 2).mean(axis=(1, 2)))
    assert rms.min() > MIN_WINDOW_RMS, (
        f"{what}: window {int(rms.argmin())} is almost unchanged (RMS difference {rms.min():.3g})")
    assert rms.mean() > MIN_MEAN_RMS, f"{what}: output too close to the input (mean RMS {rms.mean():.3g})"
    before, after = _reid_accuracy(model, real, subjects), _reid_accuracy(model, anon, subjects)
    assert before > 0.6, f"the ReID judge is no attacker (accuracy {before:.2f} on real data)"
    assert after < before - MIN_REID_DROP, (
        f"{what}: ReID accuracy {after:.2f} on the output vs {before:.2f} on the input")
    return rms.mean(), before, after


def test_anonymise_changes_every_window_and_lowers_reid(trained):
    model, _, test, _ = trained
    anon = model.anonymise(test.windows, source=test.subject, seed=0)
    rms, before, after = assert_changed_and_private(model, test.windows, anon, test.subject, "anonymise")
    print(f"mean RMS change {rms:.3f}; ReID {before:.2f} -> {after:.2f}")


def test_anonymise_on_training_windows_too(trained):
    """Not only on unseen data: the windows the model was fitted on are changed as well."""
    model, train, _, _ = trained
    sel = slice(0, 120)
    anon = model.anonymise(train.windows[sel], source=train.subject[sel], seed=1)
    assert_changed_and_private(model, train.windows[sel], anon, train.subject[sel], "anonymise(train)")


def _cli(argv):
    parser = argparse.ArgumentParser(prog="privkit")
    anon_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_apply_output_differs_from_its_input(trained, tmp_path, capsys):
    model, _, test, path = trained
    out_file = tmp_path / "anon.env"
    assert _cli(["anon", "apply", "--model", str(path), "--out", str(out_file)]) == 0
    capsys.readouterr()
    from privkit.fhe.envelope import unpack_dataset

    got, meta = unpack_dataset(out_file.read_bytes())
    assert meta["strategy"] == "acg"
    np.testing.assert_array_equal(got["subject"], test.subject)  # the test split, in order
    real_raw = model.normaliser.inverse(test.windows)
    assert got["windows"].shape == real_raw.shape
    # compare on the model's [0, 1] scale (the file holds raw sensor units)
    anon = model.normaliser.transform(got["windows"])
    assert_changed_and_private(model, test.windows, anon, test.subject, "anon apply")


@pytest.mark.parametrize("leak", [1.0, 0.9, 0.5])
def test_the_checks_reject_identity_and_leaky_outputs(trained, leak):
    """The control: an identity anonymiser (leak 1) and outputs mostly made of the input fail."""
    model, _, test, _ = trained
    anon = model.anonymise(test.windows, source=test.subject, seed=0)
    leaky = leak * test.windows + (1 - leak) * anon
    with pytest.raises(AssertionError):
        assert_changed_and_private(model, test.windows, leaky, test.subject, f"leak {leak}")
