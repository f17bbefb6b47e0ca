"""ApneaDetector architectures: v2 (trainable quadratic, global average pool) and v1 both train,
compile and run encrypted with decrypted logits equal to the plaintext model's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privkit import nn as pnn
from privkit.apps.apnea import ApneaConfig, ApneaDetector, build_apnea_model
from privkit.data.ecg import synthetic_ecg
from privkit.errors import DataFormatError, ParameterError
from privkit.testing import assert_close_encrypted


@pytest.fixture(scope="module")
def data():
    return synthetic_ecg(96, seed=5, effect=2.0), synthetic_ecg(8, seed=6, effect=2.0)


def _sim_matches(det, x):
    plain = det.logits(x)
    enc, info = det.predict_encrypted(x, backend="sim")
    program = info["program"]
    assert_close_encrypted(enc, plain, program.params, depth=program.depth, factor=4.0)
    assert (enc.argmax(1) == plain.argmax(1)).all()
    return program


def test_v2_trains_compiles_at_n16384_and_matches_plaintext_on_sim(data):
    train, test = data
    det = ApneaDetector(arch="v2", epochs=3, restarts=2, patience=2, seed=1).fit(train, progress=False)
    kinds = [type(m).__name__ for m in det.model]
    assert kinds.count("PolyAct") == 3 and "GlobalAvgPool1d" in kinds and "PolyReLU" not in kinds
    assert det.model[-1].in_features == det.config.channels
    assert {"val_loss", "val_accuracy"} <= set(det.history[0])
    program = _sim_matches(det, test.x[:3])
    assert program.params.name == "n16384" and program.params.security_bits >= 128
    ops = {s.kind: s.depth for s in program.steps}
    assert ops["globalavgpool1d"] == 0 and program.depth <= 8, program.plan_table()
    assert all(s.depth == 1 for s in program.steps if s.kind == "polyact")


def test_v1_still_builds_trains_and_matches_on_sim(data):
    train, test = data
    det = ApneaDetector(arch="v1", epochs=1, finetune_epochs=1, seed=0).fit(train, progress=False)
    assert det.config.arch == "v1" and det.config.n_blocks == 2
    assert any(isinstance(m, pnn.PolyReLU) for m in det.model)
    _sim_matches(det, test.x[:2])
    assert ApneaConfig().arch == "v2" and ApneaConfig.for_arch("v1").restarts == 1
    # a detector saved before v2 existed (no `arch` and none of the later fields) loads as v1
    state = det._get_state()
    for k in ("arch", "val_fraction", "patience", "restarts", "lr_schedule", "min_quadratic",
              "act_penalty", "act_bound"):
        state["config"].pop(k)
    old = ApneaDetector._from_state(state)
    assert old.config.arch == "v1" and old.config.kernel1 == det.config.kernel1
    np.testing.assert_allclose(old.logits(test.x[:4]), det.logits(test.x[:4]), rtol=1e-6, atol=1e-6)


def test_subject_split_holds_out_whole_subjects_and_restarts_need_it(data):
    from privkit.apps.apnea import _subject_split

    train, _ = data
    xs, ys, xv, yv = _subject_split(train, train.x, train.y, 0.25, seed=0)
    assert len(xs) + len(xv) == len(train.x) and len(xv) > 0
    held = set(np.unique(train.subject[np.isin(train.x[:, 0], xv[:, 0])]))
    kept = set(np.unique(train.subject[np.isin(train.x[:, 0], xs[:, 0])]))
    assert not held & kept
    with pytest.raises(ParameterError, match="val_fraction"):
        ApneaDetector(arch="v2", epochs=1, val_fraction=0.0, restarts=2, selection="holdout").fit(train, progress=False)
    for selection in ("holdout", "cv"):
        with pytest.raises(ParameterError, match="subject"):
            ApneaDetector(arch="v2", epochs=1, restarts=1, selection=selection).fit((train.x, train.y), progress=False)
    with pytest.raises(ParameterError, match="arch"):
        ApneaConfig(arch="v3")


def test_activation_penalty_keeps_quadratic_inputs_small(data):
    train, _ = data

    def largest(det):
        seen = []
        hooks = [m.register_forward_pre_hook(lambda _m, i: seen.append(float(i[0].abs().max())))
                 for m in det.model if isinstance(m, pnn.PolyAct)]
        with torch.no_grad():
            det.model(torch.from_numpy(train.x)[:, None, :])
        for h in hooks:
            h.remove()
        return max(seen)

    kw = dict(arch="v2", epochs=4, val_fraction=0.0, restarts=1, act_bound=0.5, seed=2, selection="holdout")
    free = ApneaDetector(act_penalty=0.0, **kw).fit(train, progress=False)
    tight = ApneaDetector(act_penalty=100.0, **kw).fit(train, progress=False)
    assert largest(tight) < largest(free)


def test_v2_save_load_round_trip(tmp_path, data):
    train, test = data
    det = ApneaDetector(arch="v2", epochs=1, restarts=1, seed=0).fit(train, progress=False)
    det.save(tmp_path / "v2.pkd")
    back = ApneaDetector.load(tmp_path / "v2.pkd")
    assert back.config.arch == "v2"
    np.testing.assert_allclose(back.logits(test.x), det.logits(test.x), rtol=1e-6, atol=1e-6)
    # the largest training logit travels with the model and reaches the program
    assert det.output_bound_hint == pytest.approx(float(np.abs(det.logits(train.x)).max()), rel=1e-5)
    assert back.output_bound_hint == det.output_bound_hint
    assert back.compile().output_bound_hint == det.output_bound_hint
    state = back._get_state()
    state["output_bound_hint"] = "huge"
    with pytest.raises(DataFormatError, match="output_bound_hint"):
        ApneaDetector._from_state(state)
    assert len(build_apnea_model(back.config)) == len(det.model)
