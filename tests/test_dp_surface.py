"""privkit.dp's Opacus-compatible surface: unpacking, get_epsilon, optional epochs, budget warning
and stop_at_budget, fix(), explicit grad-sampler registration, an Opacus tutorial script."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from torch import nn

from privkit.dp import (
    PrivacyWarning,
    compute_epsilon,
    fix,
    make_private,
    validate_module,
)
from privkit.errors import ParameterError, PrivacyBudgetExhaustedError

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


def _setup(n=128, batch=32, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(n, 4)
    y = (x[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)
    return model, opt, loader


def _steps(model, optimizer, loader, steps):
    done = 0
    while done < steps:
        for xb, yb in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()
            done += 1
            if done == steps:
                return


def test_unpacks_and_get_epsilon_without_epochs_or_delta():
    model, opt, loader = _setup()
    training = make_private(model, opt, loader, noise_multiplier=1.0, max_grad_norm=1.0,
                            accountant="rdp")
    m, o, dl = training  # Opacus' order
    assert m is training.module and o is training.optimizer and dl is training.data_loader
    assert training.delta == pytest.approx(1 / 128)  # delta=None -> 1/N
    assert training.epochs is None and training.planned_epsilon() is None
    assert training.get_epsilon() == 0.0
    rep = training.report()
    assert rep.steps == 0 and rep.epsilon == 0.0  # no plan: the epsilon spent so far
    _steps(m, o, dl, 5)
    ref = compute_epsilon(noise_multiplier=1.0, sample_rate=0.25, steps=5, delta=1 / 128,
                          accountant="rdp").epsilon
    assert training.get_epsilon() == pytest.approx(ref, rel=1e-9)
    assert training.get_epsilon(1e-6) > training.get_epsilon()  # smaller delta, larger epsilon
    assert training.report().steps == 5


def test_lr_scheduler_wraps_the_guarded_step():
    model, opt, loader = _setup()
    m, o, dl = training = make_private(model, opt, loader, noise_multiplier=1.0,
                                       max_grad_norm=1.0, accountant="rdp", epochs=1)
    sched = torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5)
    for xb, yb in dl:
        o.zero_grad()
        nn.functional.cross_entropy(m(xb), yb).backward()
        o.step()
        sched.step()
    assert training.steps == len(loader)
    assert o.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** len(loader))


def test_target_epsilon_still_needs_epochs():
    model, opt, loader = _setup()
    with pytest.raises(ParameterError, match="needs epochs"):
        make_private(model, opt, loader, target_epsilon=3.0, delta=1e-5, max_grad_norm=1.0)


def test_training_past_the_target_warns_once():
    model, opt, loader = _setup()
    training = make_private(model, opt, loader, target_epsilon=3.0, delta=1e-5,
                            max_grad_norm=1.0, epochs=1, accountant="rdp")
    m, o, dl = training
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        _steps(m, o, dl, len(loader))  # the planned epoch: no warning
        assert not [w for w in rec if issubclass(w.category, PrivacyWarning)]
        _steps(m, o, dl, 2 * len(loader))  # two more epochs
    budget = [w for w in rec if issubclass(w.category, PrivacyWarning)]
    assert len(budget) == 1 and "privacy budget passed" in str(budget[0].message)
    assert training.get_epsilon() > 3.0
    assert any("privacy budget passed" in w for w in training.report().warnings)


def test_stop_at_budget_refuses_the_step_that_would_pass_it():
    model, opt, loader = _setup()
    training = make_private(model, opt, loader, target_epsilon=3.0, delta=1e-5,
                            max_grad_norm=1.0, epochs=1, accountant="rdp", stop_at_budget=True)
    m, o, dl = training
    allowed = training.steps_left
    assert allowed >= len(loader)
    _steps(m, o, dl, allowed)
    assert training.get_epsilon() <= 3.0 and training.steps_left == 0
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(PrivacyBudgetExhaustedError, match="stop_at_budget"):
        _steps(m, o, dl, 1)
    assert training.steps == allowed  # nothing was released
    for a, b in zip(before, model.parameters(), strict=True):
        assert torch.equal(a, b)
    # and the bound is tight: one more step would indeed pass the target
    over = compute_epsilon(noise_multiplier=training.noise_multiplier, sample_rate=0.25,
                           steps=allowed + 1, delta=1e-5, accountant="rdp").epsilon
    assert over > 3.0


def test_fix_replaces_batch_statistics_norms_and_reports_each():
    model = nn.Sequential(
        nn.Conv2d(3, 12, 3), nn.BatchNorm2d(12), nn.ReLU(),
        nn.Sequential(nn.Conv2d(12, 6, 3), nn.SyncBatchNorm(6, affine=False)),
        nn.InstanceNorm2d(6, affine=True, track_running_stats=True),
        nn.Flatten(), nn.LazyLinear(2),
    )
    model(torch.randn(2, 3, 8, 8))
    assert len(validate_module(model)) >= 3
    fixed, changes = fix(model, return_changes=True)
    assert fixed is model
    names = [c[0] for c in changes]
    assert sorted(names) == ["1", "3.1", "4"]
    assert isinstance(model[1], nn.GroupNorm) and model[1].num_groups == 12
    assert isinstance(model[3][1], nn.GroupNorm) and not model[3][1].affine
    assert isinstance(model[4], nn.InstanceNorm2d) and not model[4].track_running_stats
    assert validate_module(model) == []
    # a root BatchNorm is replaced and returned
    root = fix(nn.BatchNorm1d(10))
    assert isinstance(root, nn.GroupNorm) and root.num_groups == 10
    # the fixed model trains with DP-SGD
    x = torch.randn(16, 3, 8, 8)
    ds = torch.utils.data.TensorDataset(x, torch.randint(0, 2, (16,)))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    m, o, dl = make_private(model, opt, torch.utils.data.DataLoader(ds, batch_size=8),
                            noise_multiplier=1.0, max_grad_norm=1.0)
    _steps(m, o, dl, 2)


def test_import_leaves_opacus_samplers_untouched():
    code = textwrap.dedent("""
        import torch
        from torch import nn
        from opacus import GradSampleModule
        before = dict(GradSampleModule.GRAD_SAMPLERS)
        import privkit.dp
        assert GradSampleModule.GRAD_SAMPLERS == before, "import privkit.dp changed Opacus"
        privkit.dp.register_grad_samplers()
        from privkit.dp.grad_samplers import conv_grad_sample
        assert GradSampleModule.GRAD_SAMPLERS[nn.Conv3d] is conv_grad_sample
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


# An Opacus tutorial-style script; only its first line differs between the two runs.
TUTORIAL = '''
{import_line}
import torch
from torch import nn

torch.manual_seed(0)
x = torch.randn(256, 10)
y = (x[:, 0] + x[:, 1] > 0).long()
train_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 2))
optimizer = torch.optim.SGD(model.parameters(), lr=0.5)

privacy_engine = PrivacyEngine()
model, optimizer, train_loader = privacy_engine.make_private(
    module=model,
    optimizer=optimizer,
    data_loader=train_loader,
    noise_multiplier=1.1,
    max_grad_norm=1.0,
)
criterion = nn.CrossEntropyLoss()
for epoch in range(3):
    for data, target in train_loader:
        optimizer.zero_grad()
        loss = criterion(model(data), target)
        loss.backward()
        optimizer.step()
epsilon = privacy_engine.get_epsilon(1e-5)
with torch.no_grad():
    accuracy = (model(x).argmax(1) == y).float().mean().item()
'''


def _run_tutorial(import_line):
    ns: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(TUTORIAL.format(import_line=import_line), ns)  # noqa: S102 - our own script
    return ns


def test_opacus_tutorial_script_runs_unchanged_except_the_import():
    theirs = _run_tutorial("from opacus import PrivacyEngine")
    ours = _run_tutorial("from privkit.dp import PrivacyEngine")
    # same steps (3 epochs x 4 batches), same accountant (PRV): the same epsilon
    assert ours["privacy_engine"].training.steps == 12
    assert ours["epsilon"] == pytest.approx(theirs["epsilon"], rel=1e-6)
    assert 0 < ours["epsilon"] < 10
    assert ours["accuracy"] > 0.6  # it trains (a linearly separable toy task)


@pytest.mark.parametrize("mode", ["fast", "hooks"])
def test_empty_poisson_batch_steps_with_noise_only(mode):
    """An empty Poisson batch is a step like any other: zero clipped sum plus the noise, counted
    by the accountant (a distributed rank with an empty local batch must not crash)."""
    torch.manual_seed(0)
    model = nn.Linear(100, 50)
    ds = torch.utils.data.TensorDataset(torch.randn(64, 100))
    m, o, dl = training = make_private(
        model, torch.optim.SGD(model.parameters(), lr=0.1), torch.utils.data.DataLoader(ds, 16),
        noise_multiplier=1.0, max_grad_norm=1.0, accountant="rdp", grad_sample_mode=mode)
    o.zero_grad()
    m(torch.zeros(0, 100)).sum().backward()
    o.step()
    assert training.steps == 1
    g = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    assert g.std().item() == pytest.approx(1.0 / 16, rel=0.05)  # sigma * C / expected batch
    xb, = next(iter(dl))  # and the next, non-empty step works
    o.zero_grad()
    m(xb).sum().backward()
    o.step()
    assert training.steps == 2
