"""Strategy "remove" (privkit.anon.removal): trains, saves/loads, typed errors."""

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from privkit.anon.removal import grad_reverse
from privkit.apps.anonymiser import AnonConfig, IMUAnonymiser
from privkit.data.imu import MinMaxNormaliser, split_recordings, synthetic_imu
from privkit.errors import ParameterError

TINY = dict(ae_epochs=1, judge_epochs=1, gan_epochs=2, judge_filters=8, progress=False,
            selection_critics=1, removal_dim=8, removal_min_steps=0)


@pytest.mark.parametrize("bad", [{"removal_strength": -0.1}, {"removal_strength": 1.5},
                                 {"removal_strength": True}, {"removal_dim": 0},
                                 {"removal_adv_weight": -1.0}, {"removal_lr": 0.0},
                                 {"removal_labels": "oracle"}])
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


@settings(max_examples=10, deadline=None)
@given(strength=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
@example(strength=1.0, seed=0)
@example(strength=0.0, seed=1)
def test_synthesise_matches_its_reference(strength, seed):
    """decode(expand([sqrt(1-s) u + sqrt(s) eps, onehot(a)])) written out by hand."""
    from privkit.anon.networks import ConvAutoencoder
    from privkit.anon.removal import RemovalGenerator

    torch.manual_seed(seed)
    gen = RemovalGenerator(ConvAutoencoder(6, 32), n_activities=3, n_subjects=4, dim=5,
                           strength=strength).eval()
    x, eps = torch.rand(4, 32, 6), torch.randn(4, 5)
    a = torch.tensor([0, 2, 1, 2])
    with torch.no_grad():
        u = gen.squeeze(x)
        mixed = (1 - strength) ** 0.5 * u + strength ** 0.5 * eps
        code = gen.expand(torch.cat([mixed, torch.nn.functional.one_hot(a, 3).float()], 1))
        want = gen.ae.decode(torch.relu(code.view(4, *gen.ae.code_shape)))
        torch.testing.assert_close(gen.synthesise(u, eps, a), want, rtol=1e-5, atol=1e-6)
        # at full strength the window itself no longer matters, only (activity, noise)
        other = gen.synthesise(gen.squeeze(torch.rand(4, 32, 6)), eps, a)
        if strength == 1.0:
            torch.testing.assert_close(other, want, rtol=0, atol=0)
        elif strength < 0.99:
            assert not torch.allclose(other, want)


def test_full_strength_defeats_the_retrained_attacker_that_reads_the_autoencoder():
    """Synthetic subjects a feature attacker re-identifies perfectly: it still does on the
    pre-trained autoencoder's reconstructions (the paper's starting point), and falls to about
    chance on ``remove`` at strength 1, whose output depends on the window only through the
    predicted activity."""
    from privkit.anon.attackers import attack_suite

    torch.manual_seed(0)
    ds = synthetic_imu(n_subjects=5, n_activities=3, trials=2, seconds=10, window=32, step=16,
                       seed=0)
    train, test = split_recordings(ds, test_fraction=0.5, seed=0)
    norm = MinMaxNormaliser.fit(train.windows)
    train = train.with_windows(norm.transform(train.windows))
    test = test.with_windows(norm.transform(test.windows))

    def attack(x_tr, x_te):
        return attack_suite(x_tr, train.subject, x_te, test.subject,
                            kinds=("features",))["features"]["acc"]

    cfg = AnonConfig(**{**TINY, "ae_epochs": 8, "judge_epochs": 2, "gan_epochs": 2,
                        "judge_arch": "cnn1d"}, removal_strength=1.0)
    model = IMUAnonymiser(strategy="remove", config=cfg).fit(train)
    with torch.no_grad():
        def ae(x):
            return model.ae_pretrained(torch.as_tensor(x, dtype=torch.float32)).numpy()
        leaked = attack(ae(train.windows), ae(test.windows))
    removed = attack(model.anonymise(train.windows, seed=1), model.anonymise(test.windows, seed=2))
    chance = 1 / 5
    assert attack(train.windows, test.windows) >= 0.9  # the data really identifies people
    assert leaked >= 0.8, leaked
    assert removed <= chance + 0.12, removed


def test_labels_come_from_the_critic_or_the_head(tmp_path):
    ds = synthetic_imu(n_subjects=3, n_activities=2, trials=2, seconds=8, window=32, step=16)
    train = ds.with_windows(MinMaxNormaliser.fit(ds.windows).transform(ds.windows))
    x = torch.as_tensor(train.windows[:20])
    critic = IMUAnonymiser(strategy="remove", config=AnonConfig(**TINY)).fit(train)
    gen = critic.generator
    assert critic.config.removal_labels == "critic" and gen.labeller is not None
    with torch.no_grad():  # the labeller is the utility critic, frozen, and labels real windows
        torch.testing.assert_close(gen.labeller(x), critic.utility_critic(x))
        torch.testing.assert_close(gen.predict_activity(x), gen.labeller(x).argmax(1))
    assert not any(p.requires_grad for p in gen.labeller.parameters())
    head = IMUAnonymiser(strategy="remove",
                         config=AnonConfig(**TINY, removal_labels="head",
                                           removal_utility_weight=0.0))
    head.fit(train)
    assert head.generator.labeller is None and head.utility_critic is None
    with torch.no_grad():
        got = head.generator.predict_activity(x)
        want = head.generator.activity_head(head.generator.squeeze(x)).argmax(1)
    torch.testing.assert_close(got, want)
    # a file saved before the labeller existed (no removal_labels) loads as "head"
    head.save(tmp_path / "h.privkit")
    from privkit.api import load_state, save_state

    state = load_state(tmp_path / "h.privkit", IMUAnonymiser.model_kind)
    del state["config"]["removal_labels"]
    save_state(tmp_path / "old.privkit", IMUAnonymiser.model_kind, state)
    old = IMUAnonymiser.load(tmp_path / "old.privkit")
    assert old.config.removal_labels == "head" and old.generator.labeller is None


def test_small_data_sets_get_more_removal_epochs_within_a_cap():
    from privkit.anon.removal import removal_epochs

    cfg = AnonConfig(gan_epochs=5, removal_min_steps=60, batch_size=16)
    assert removal_epochs(cfg, 16 * 40) == 5          # 40 steps per epoch: gan_epochs suffice
    assert removal_epochs(cfg, 16 * 4) == 15          # 4 steps per epoch: 60 steps need 15
    assert removal_epochs(cfg, 10) == 20              # capped at 4 x gan_epochs
    assert removal_epochs(AnonConfig(gan_epochs=5, removal_min_steps=0), 10) == 5
    with pytest.raises(ParameterError, match="removal_min_steps"):
        AnonConfig(removal_min_steps=-1)
    ds = synthetic_imu(n_subjects=3, n_activities=2, trials=2, seconds=8, window=32, step=16)
    train = ds.with_windows(MinMaxNormaliser.fit(ds.windows).transform(ds.windows))
    cfg = AnonConfig(**{**TINY, "removal_min_steps": 10_000, "batch_size": 16},
                     select_extra_epochs=0, selection="score", patience=100)
    hist = IMUAnonymiser(strategy="remove", config=cfg).fit(train).history_["gan"]
    assert len(hist) == 4 * cfg.gan_epochs  # the budget grew, to its cap
