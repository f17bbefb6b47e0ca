"""Strategy "remove" (privkit.anon.removal): trains, saves/loads, typed errors."""

import numpy as np
import pytest
import torch

from privkit.anon.removal import grad_reverse
from privkit.apps.anonymiser import AnonConfig, IMUAnonymiser
from privkit.data.imu import MinMaxNormaliser, split_recordings, synthetic_imu
from privkit.errors import ParameterError

TINY = dict(ae_epochs=1, judge_epochs=1, gan_epochs=2, judge_filters=8, progress=False,
            selection_critics=1, removal_dim=8)


@pytest.mark.parametrize("bad", [{"removal_strength": -0.1}, {"removal_strength": 1.5},
                                 {"removal_strength": True}, {"removal_dim": 0},
                                 {"removal_adv_weight": -1.0}, {"removal_lr": 0.0}])
def test_bad_removal_settings_are_typed_errors(bad):
    with pytest.raises(ParameterError, match=next(iter(bad))):
        AnonConfig(**bad)


def test_grad_reverse_flips_and_scales_the_gradient():
    x = torch.ones(3, requires_grad=True)
    (2.0 * grad_reverse(x, 0.5)).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3,), -1.0))


def test_remove_trains_saves_and_loads(tmp_path):
    ds = synthetic_imu(n_subjects=3, n_activities=2, trials=2, seconds=8, window=32, step=16)
    train, test = split_recordings(ds, test_fraction=0.5)
    norm = MinMaxNormaliser.fit(train.windows)
    train = train.with_windows(norm.transform(train.windows))
    x = norm.transform(test.windows)
    model = IMUAnonymiser(strategy="remove", config=AnonConfig(**TINY, removal_strength=0.7))
    model.fit(train)
    xa = model.anonymise(x, seed=3)
    assert xa.shape == x.shape and 0.0 <= float(xa.min()) and float(xa.max()) <= 1.0
    assert not np.allclose(xa, x)
    with pytest.raises(ParameterError, match="target"):
        model.anonymise(x, target=0)
    path = tmp_path / "remove.privkit"
    model.save(path)
    again = IMUAnonymiser.load(path)
    assert again.strategy == "remove" and again.config.removal_strength == 0.7
    np.testing.assert_allclose(again.anonymise(x, seed=3), xa, atol=1e-6)


def test_remove_trains_extra_epochs_only_while_none_is_feasible():
    ds = synthetic_imu(n_subjects=3, n_activities=2, trials=2, seconds=8, window=32, step=16)
    train = ds.with_windows(MinMaxNormaliser.fit(ds.windows).transform(ds.windows))
    never = AnonConfig(**TINY, select_extra_epochs=2, select_reid_factor=1e-9)
    model = IMUAnonymiser(strategy="remove", config=never).fit(train)
    hist = model.history_["gan"]
    assert len(hist) == 4 and not any(h["feasible"] for h in hist)  # 2 + 2 extra
    assert sum(h["selected"] for h in hist) == 1
    # the same run with the "score" rule never trains past gan_epochs
    score = AnonConfig(**TINY, select_extra_epochs=2, select_reid_factor=1e-9,
                       selection="score")
    assert len(IMUAnonymiser(strategy="remove", config=score).fit(train).history_["gan"]) == 2


def test_selector_budget():
    from privkit.anon.selection import EpochSelector

    sel = EpochSelector(AnonConfig(gan_epochs=3, select_extra_epochs=2), n_subjects=4)
    assert sel.max_epochs == 5 and not sel.past_budget(2) and sel.past_budget(3) is False
    sel.update(0, {"score": 0.5, "activity_ratio": 0.95, "reid": 0.1})  # feasible: 0.1 <= 0.4
    assert sel.found_feasible and sel.past_budget(3) and not sel.past_budget(2)
