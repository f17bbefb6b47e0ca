"""The Gaussian noise of DP-SGD is really added, at the right scale, on every optimizer path.

On a loss whose gradients are exactly zero, the clipped sum is zero, so after one step every
gradient coordinate is pure noise divided by the batch size: ``N(0, (sigma * C / B)**2)``.

Statistical test (stated tolerance): over ``n`` coordinates the sample standard deviation must be
within 10% of ``sigma * C / B`` and the mean within ``5 * std / sqrt(n)`` of 0. With ``n >= 2000``
the sample std has a relative standard error of ``1/sqrt(2n) <= 1.6%``, so 10% is more than six
standard errors (false-alarm probability below 1e-9 per check), while a missing noise term (std
0), noise of a wrong scale (x B, x 0.5, ...) or noise on only some parameters fails at once.
Every parameter tensor must also receive non-zero noise.

Paths: ``grad_sample_mode="fast"`` with one flat buffer (all parameters share a dtype), the fast
per-parameter path (parameters of different dtypes), and Opacus' ``"hooks"`` mode.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from privkit.dp import fastclip
from privkit.dp.engine import make_private

REL_STD_TOL = 0.10


class Flat(nn.Module):
    """A conv + linear model of float32 parameters (2,000+ coordinates)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 6, 5)
        self.fc = nn.Linear(6 * 12, 32)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


class MixedDtypes(nn.Module):
    """float64 and float32 parameters: no common flat buffer (the per-parameter path)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(16, 64).double()
        self.b = nn.Linear(64, 24)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x.double())).float())


def _one_zero_gradient_step(model, x, sigma, clip, mode, batch):
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr = make_private(model, torch.optim.SGD(model.parameters(), lr=1.0), loader,
                          noise_multiplier=sigma, delta=1e-5, max_grad_norm=clip, epochs=1,
                          poisson_sampling=False, grad_sample_mode=mode)
    (xb,) = next(iter(tr.data_loader))
    assert len(xb) == batch
    tr.optimizer.zero_grad()
    with warnings.catch_warnings():  # hooks mode: "Full backward hook is firing ..." (input needs no grad)
        warnings.filterwarnings("ignore", message="Full backward hook")
        (tr.module(xb).sum() * 0.0).backward()  # every per-sample gradient is exactly zero
    tr.optimizer.step()
    grads = {name: p.grad.detach().double().clone() for name, p in tr.module.named_parameters()}
    assert tr.steps == 1 and tr.history == [(sigma, batch / len(x), 1)]
    assert tr.sample_rate == pytest.approx(batch / len(x))  # what the planned epsilon uses
    return tr, grads


def assert_noise_std(grads: dict[str, torch.Tensor], expected_std: float, what: str) -> float:
    """Sample std within REL_STD_TOL of ``expected_std`` and mean near 0; every tensor noisy."""
    for name, g in grads.items():
        assert torch.count_nonzero(g) == g.numel(), f"{what}: parameter {name!r} got no noise"
    flat = torch.cat([g.reshape(-1) for g in grads.values()])
    n = flat.numel()
    assert n >= 2000, "too few coordinates for the stated tolerance"
    std = float(flat.std())
    mean = float(flat.mean())
    rel = abs(std / expected_std - 1.0)
    assert rel < REL_STD_TOL, (
        f"{what}: noise std {std:.4g}, expected sigma*C/B = {expected_std:.4g} "
        f"(relative error {rel:.1%} > {REL_STD_TOL:.0%} over {n} coordinates)")
    assert abs(mean) < 5 * expected_std / math.sqrt(n), f"{what}: noise mean {mean:.3g} is not 0"
    for name, g in grads.items():  # large tensors one by one: noise on every parameter
        if g.numel() >= 1000:
            r = abs(float(g.std()) / expected_std - 1.0)
            assert r < 3 * REL_STD_TOL, f"{what}: parameter {name!r} noise std off by {r:.1%}"
    return rel


CASES = {
    "fast_flat": (Flat, lambda: torch.randn(48, 1, 16), "fast"),
    "fast_per_parameter_mixed_dtypes": (MixedDtypes, lambda: torch.randn(48, 16, dtype=torch.float64), "fast"),
    "hooks": (Flat, lambda: torch.randn(48, 1, 16), "hooks"),
}


@pytest.mark.parametrize("sigma,clip,batch", [(1.3, 0.7, 8), (0.5, 2.0, 16)])
@pytest.mark.parametrize("path", sorted(CASES))
def test_zero_gradient_step_adds_noise_of_std_sigma_c_over_b(path, sigma, clip, batch):
    build, data, mode = CASES[path]
    torch.manual_seed(7)
    model = build()
    tr, grads = _one_zero_gradient_step(model, data(), sigma, clip, mode, batch)
    if path.startswith("fast"):
        assert isinstance(tr.optimizer, fastclip.FastClipOptimizer)
        assert tr.optimizer._uniform == (path == "fast_flat")
    assert_noise_std(grads, sigma * clip / batch, path)


@pytest.mark.parametrize("path", sorted(CASES))
def test_zero_noise_multiplier_adds_nothing(path):
    """The control: the same step with sigma = 0 leaves exact zeros (the noise above is the
    mechanism's, nothing else)."""
    build, data, mode = CASES[path]
    torch.manual_seed(7)
    _, grads = _one_zero_gradient_step(build(), data(), 0.0, 1.0, mode, 8)
    assert all(torch.count_nonzero(g) == 0 for g in grads.values())


def test_noise_is_fresh_each_step():
    """Two steps draw independent noise (a reused draw would correlate perfectly)."""
    torch.manual_seed(3)
    model = Flat()
    x = torch.randn(32, 1, 16)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr = make_private(model, torch.optim.SGD(model.parameters(), lr=1.0), loader,
                          noise_multiplier=1.0, delta=1e-5, max_grad_norm=1.0, epochs=1,
                          poisson_sampling=False, grad_sample_mode="fast")
    draws = []
    for (xb,) in list(tr.data_loader)[:2]:
        tr.optimizer.zero_grad()
        (tr.module(xb).sum() * 0.0).backward()
        tr.optimizer.step()
        draws.append(torch.cat([p.grad.detach().reshape(-1).clone() for p in tr.module.parameters()]))
    corr = float(torch.corrcoef(torch.stack(draws))[0, 1])
    assert abs(corr) < 0.1
