"""privkit.dp.engine: accounting against Opacus, calibration, tiny noise, checkpoints."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from privkit.dp import (
    DPConfig,
    PrivacyWarning,
    calibrate_noise,
    compute_epsilon,
    make_private,
)
from privkit.errors import ParameterError, PrivacyBudgetError

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


def _setup(n=256, batch=32, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(n, 4)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) + 0.1 * torch.randn(n)
    ds = torch.utils.data.TensorDataset(x, y)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch)
    return model, opt, loader


def _train(training, steps):
    done = 0
    while done < steps:
        for xb, yb in training.data_loader:
            if len(xb) == 0:
                continue
            training.optimizer.zero_grad()
            loss = ((training.module(xb).squeeze(-1) - yb) ** 2).mean()
            loss.backward()
            training.optimizer.step()
            done += 1
            if done >= steps:
                break
    return loss.item()


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_epsilon_matches_opacus_accountant(accountant):
    from opacus.accountants import create_accountant

    model, opt, loader = _setup()
    tr = make_private(model, opt, loader, noise_multiplier=1.1, delta=1e-5, max_grad_norm=1.0,
                      epochs=1, accountant=accountant)
    _train(tr, 5)
    assert tr.steps == 5
    ref = create_accountant(accountant)
    for _ in range(5):
        ref.step(noise_multiplier=1.1, sample_rate=1 / len(loader))
    assert tr.epsilon() == pytest.approx(ref.get_epsilon(delta=1e-5), rel=1e-6)
    # and Opacus' own engine agrees with what we report
    assert tr.engine.get_epsilon(1e-5) == pytest.approx(tr.epsilon(), rel=1e-6)
    rep = tr.report()
    assert rep.kind == "dp" and rep.steps == 5 and rep.accountant == accountant
    assert rep.noise_multiplier == 1.1 and rep.max_grad_norm == 1.0
    assert rep.sample_rate == pytest.approx(1 / len(loader))


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_target_epsilon_calibration_within_one_percent(accountant):
    model, opt, loader = _setup()
    tr = make_private(model, opt, loader, target_epsilon=3.0, delta=1e-5, max_grad_norm=1.0,
                      epochs=4, accountant=accountant)
    eps = tr.planned_epsilon()
    assert abs(eps - 3.0) / 3.0 <= 0.01
    assert eps <= 3.0 + 1e-9
    # the planned report before any step describes the whole schedule
    assert tr.report().epsilon == pytest.approx(eps)
    assert tr.report().steps == 4 * len(loader)


def test_paper_noise_gives_huge_epsilon_and_warns():
    # the DP-SVAE paper's schedule: N=60000, batch 250, 150 epochs = 36,000 steps, delta = 1/N
    N = 60000
    res = compute_epsilon(noise_multiplier=0.001, sample_rate=250 / N, steps=36000, delta=1 / N)
    assert res.epsilon > 1e9
    assert res.fell_back and res.accountant == "rdp" and res.warnings  # PRV cannot compute it
    ds = torch.utils.data.TensorDataset(torch.zeros(N, 1))
    loader = torch.utils.data.DataLoader(ds, batch_size=250)
    model = nn.Linear(1, 1)
    with pytest.warns(PrivacyWarning, match="NO MEANINGFUL PRIVACY"):
        tr = make_private(model, torch.optim.SGD(model.parameters(), lr=0.1), loader,
                          noise_multiplier=0.001, delta=1 / N, max_grad_norm=3.0, epochs=150)
    rep = tr.report()
    assert rep.steps == 36000 and rep.epsilon > 1e9
    assert "fell back" in rep.accountant
    assert any("NO MEANINGFUL PRIVACY" in w for w in rep.warnings)
    assert any("PRV accountant could not" in w for w in rep.warnings)
    assert "WARNING" in rep.summary()


def test_paper_targets_need_real_noise():
    N = 60000
    s10 = calibrate_noise(target_epsilon=10, delta=1 / N, sample_rate=250 / N, steps=36000,
                          accountant="rdp")
    assert 0.6 < s10 < 0.9  # ~0.71 by PRV, a bit more by RDP: hundreds of times the paper's 0.001


def test_unreachable_epsilon_raises():
    model, opt, loader = _setup(n=64, batch=64)
    with pytest.raises(PrivacyBudgetError, match="cannot be reached"):
        make_private(model, opt, loader, target_epsilon=1e-9, delta=1e-12, max_grad_norm=1.0,
                     epochs=100000, accountant="rdp")


def test_bad_settings_raise():
    with pytest.raises(ParameterError):
        DPConfig()
    with pytest.raises(ParameterError):
        DPConfig(target_epsilon=1.0, noise_multiplier=1.0)
    with pytest.raises(ParameterError):
        DPConfig(noise_multiplier=1.0, accountant="gdp-ish")
    with pytest.raises(ParameterError):
        DPConfig(noise_multiplier=1.0, delta=1.5)


def test_accountant_state_round_trips_through_checkpoint(tmp_path):
    model, opt, loader = _setup()
    tr = make_private(model, opt, loader, noise_multiplier=1.0, delta=1e-5, max_grad_norm=1.0,
                      epochs=2)
    _train(tr, 6)
    eps = tr.epsilon()
    path = tmp_path / "ckpt.pt"
    torch.save(tr.checkpoint(), path)
    model2, opt2, loader2 = _setup(seed=1)
    tr2 = make_private(model2, opt2, loader2, noise_multiplier=1.0, delta=1e-5, max_grad_norm=1.0,
                       epochs=2)
    assert tr2.epsilon() == 0.0
    tr2.restore(torch.load(path, weights_only=True))
    assert tr2.steps == 6 and tr2.epsilon() == pytest.approx(eps)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    _train(tr2, 2)  # resumed training keeps counting
    assert tr2.steps == 8 and tr2.epsilon() > eps


def test_short_dp_run_lowers_loss():
    model, opt, loader = _setup(n=512, batch=64)
    tr = make_private(model, opt, loader, noise_multiplier=0.8, delta=1e-4, max_grad_norm=1.0,
                      epochs=5)
    xb, yb = next(iter(torch.utils.data.DataLoader(loader.dataset, batch_size=512)))
    with torch.no_grad():
        before = ((model(xb).squeeze(-1) - yb) ** 2).mean().item()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _train(tr, 40)
    with torch.no_grad():
        after = ((model(xb).squeeze(-1) - yb) ** 2).mean().item()
    assert after < 0.7 * before
