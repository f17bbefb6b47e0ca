"""grad_sample_mode='fast' (privkit.dp.fastclip) gives Opacus' hooks-mode DP-SGD update.

With the noise multiplier at 0 the update is the clipped per-sample gradient sum divided by the
expected batch size; both modes must produce it to float64 rounding, for models mixing linear,
conv, transposed-conv, norm and multi-call layers, in both the clipped and unclipped regimes, with
both the ghost and the direct per-sample norms. With noise, the accountant sees the same steps.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from privkit.dp import fastclip, make_private
from privkit.dp.grad_samplers import StepLinear
from privkit.testing import micro_batch_gradients


class _Mixed(nn.Module):
    """conv -> groupnorm -> conv (reflect) -> transposed conv -> linear -> layernorm, plus a
    recurrent part (a linear and a layernorm called at every step)."""

    def __init__(self, dims: int = 2, channels: int = 3, steps: int = 3):
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
        convt = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[dims]
        self.c1 = conv(1, channels, 3, stride=2, padding=1)
        self.norm = nn.GroupNorm(1, channels)
        self.c2 = conv(channels, 4, 3, padding=1, padding_mode="reflect", groups=1)
        self.t1 = convt(4, 2, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.fc = nn.Linear(2, 3)
        self.ln = nn.LayerNorm(3)
        self.rec = StepLinear(3, 3)
        self.rec_norm = nn.LayerNorm(3)
        self.steps = steps

    def forward(self, x):
        h = torch.tanh(self.norm(self.c1(x)))
        h = torch.tanh(self.c2(h))
        h = self.t1(h)  # (N, 2, ...)
        h = self.ln(self.fc(h.flatten(2).transpose(1, 2)))  # (N, P, 3): linear over positions
        s = h.mean(1)
        for _ in range(self.steps):
            s = torch.tanh(self.rec_norm(self.rec(s)) + s)
        return (h.pow(2).mean((1, 2)) + s.pow(2).sum(1))  # per-sample loss (N,)


def _private(mode: str, model: nn.Module, x: torch.Tensor, clip: float):
    """A noise-free DP-SGD run (SGD, lr 1) on a copy of ``model``, one batch of all of ``x``."""
    m = copy.deepcopy(model)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=len(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_private(m, torch.optim.SGD(m.parameters(), lr=1.0), loader,
                            noise_multiplier=0.0, delta=1e-5, max_grad_norm=clip, epochs=1,
                            poisson_sampling=False, grad_sample_mode=mode)


def _grads_after_one_step(tr) -> list[torch.Tensor]:
    grads = [p.grad.detach().clone() for p in tr.module.parameters()]
    assert tr.steps == 1
    tr.module._close()
    return grads


def _update(mode: str, model: nn.Module, x: torch.Tensor, clip: float) -> list[torch.Tensor]:
    tr = _private(mode, model, x, clip)
    tr.optimizer.zero_grad()
    tr.module(x).mean().backward()
    tr.optimizer.step()
    return _grads_after_one_step(tr)


@settings(max_examples=12, deadline=None)
@given(dims=st.integers(1, 3), n=st.integers(1, 5), clip=st.sampled_from([1e-3, 0.3, 1e6]),
       seed=st.integers(0, 2**31 - 1))
def test_fast_mode_update_equals_hooks_mode(dims, n, clip, seed):
    torch.manual_seed(seed)
    model = _Mixed(dims).double()
    size = {1: (12,), 2: (6, 5), 3: (4, 4, 3)}[dims]
    x = torch.randn(n, 1, *size, dtype=torch.float64)
    fast = _update("fast", model, x, clip)
    hooks = _update("hooks", model, x, clip)
    for a, b in zip(fast, hooks, strict=True):
        assert torch.allclose(a, b, atol=1e-12, rtol=1e-9), (a - b).abs().max()


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("ghost,keep,way", [
    (True, True, None), (False, True, "offset"), (False, True, "batch-groups"),
    (False, False, "gconv"),
])
def test_ghost_and_direct_norms_agree(monkeypatch, dims, ghost, keep, way):
    """Force every layer onto one norm path (ghost, or per-sample gradients kept for the clipped
    sum, or formed for the norm and then recomputed by a convolution backward) and one way of
    forming per-sample conv gradients; the update must not change."""
    from privkit.dp import grad_samplers

    torch.manual_seed(0)
    model = _Mixed(dims).double()
    x = torch.randn(4, 1, *{1: (12,), 2: (6, 5), 3: (4, 4, 3)}[dims], dtype=torch.float64)
    ref = _update("hooks", model, x, 0.05)
    monkeypatch.setattr(fastclip, "_use_ghost", lambda *a: ghost)
    monkeypatch.setattr(fastclip, "_KEEP_MAX_ELEMENTS", (1 << 30) if keep else 0)
    monkeypatch.setattr(grad_samplers, "_FORCE", way)
    got = _update("fast", model, x, 0.05)
    for a, b in zip(got, ref, strict=True):
        assert torch.allclose(a, b, atol=1e-12, rtol=1e-9)


def test_svae_fast_equals_hooks():
    """The spiking VAE (LIF time loop, learnable-free) trains with the same update in both modes."""
    from privkit.apps.svae import SpikingVAENet, VAEConfig

    torch.manual_seed(0)
    cfg = VAEConfig(image_size=8, widths=(2, 4), latent_dim=4, n_steps=3, k=2)
    net = SpikingVAENet(cfg).double()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64) * 2 - 1
    noise = net._noise(3, x)

    class Fixed(nn.Module):  # fixed latent draws so both modes see the same forward
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, xb):
            return self.net(xb, noise)

    fast = _update("fast", Fixed(), x, 0.1)
    hooks = _update("hooks", Fixed(), x, 0.1)
    for a, b in zip(fast, hooks, strict=True):
        assert torch.allclose(a, b, atol=1e-10, rtol=1e-8)


def test_fast_mode_noise_and_accounting():
    torch.manual_seed(0)
    model = _Mixed(2)
    x = torch.randn(40, 1, 6, 5)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tr = make_private(model, opt, loader, noise_multiplier=1.0, delta=1e-5, max_grad_norm=1.0,
                      epochs=1, grad_sample_mode="fast")
    assert isinstance(tr.optimizer, fastclip.FastClipOptimizer)
    steps = 0
    for (xb,) in tr.data_loader:
        if len(xb) == 0:
            continue
        tr.optimizer.zero_grad()
        tr.module(xb).mean().backward()
        tr.optimizer.step()
        steps += 1
    assert tr.steps == steps > 0
    assert tr.history == [(1.0, 0.25, steps)]
    assert 0 < tr.epsilon() < float("inf")


def test_fast_mode_refuses_two_backward_passes_per_step():
    torch.manual_seed(0)
    model = _Mixed(1)
    x = torch.randn(8, 1, 12)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=4)
    tr = make_private(model, torch.optim.SGD(model.parameters(), lr=0.1), loader,
                      noise_multiplier=1.0, delta=1e-5, max_grad_norm=1.0, epochs=1,
                      grad_sample_mode="fast", poisson_sampling=False)
    tr.module(x[:4]).mean().backward()
    with pytest.raises(ValueError, match="one backward pass per optimizer step"):
        tr.module(x[4:]).mean().backward()


def test_unused_parameter_raises():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 1)
            self.b = nn.Linear(3, 1)

        def forward(self, x):
            return self.a(x).squeeze(1)

    model = Unused()
    x = torch.randn(4, 3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=4)
    tr = make_private(model, torch.optim.SGD(model.parameters(), lr=0.1), loader,
                      noise_multiplier=1.0, delta=1e-5, max_grad_norm=1.0, epochs=1,
                      grad_sample_mode="fast", poisson_sampling=False)
    tr.module(x).mean().backward()
    with pytest.raises(ValueError, match="got no per-sample gradient"):
        tr.optimizer.step()


def _virtual_step_grads(mode: str, model: nn.Module, x: torch.Tensor, physical: int):
    """One logical batch split by Opacus' BatchMemoryManager into physical batches whose steps
    are skipped until the last; returns the gradients the real step used."""
    from opacus.utils.batch_memory_manager import BatchMemoryManager

    tr = _private(mode, model, x, 0.05)
    with BatchMemoryManager(data_loader=tr.data_loader, max_physical_batch_size=physical,
                            optimizer=tr.optimizer) as mem_loader:
        for (xb,) in mem_loader:
            tr.optimizer.zero_grad()
            tr.module(xb).mean().backward()
            tr.optimizer.step()
    return _grads_after_one_step(tr)


def test_fast_mode_virtual_steps_equal_hooks_mode():
    """Physical batches under BatchMemoryManager: the skipped steps accumulate the clipped sums
    (one flat buffer in fast mode) and the real step gives hooks mode's update."""
    torch.manual_seed(0)
    model = _Mixed(2).double()
    x = torch.randn(7, 1, 6, 5, dtype=torch.float64)
    fast = _virtual_step_grads("fast", model, x, 3)
    hooks = _virtual_step_grads("hooks", model, x, 3)
    whole = _virtual_step_grads("fast", model, x, 7)
    for a, b, c in zip(fast, hooks, whole, strict=True):
        assert torch.allclose(a, b, atol=1e-12, rtol=1e-9)
        assert torch.allclose(a, c, atol=1e-12, rtol=1e-9)


def test_fast_mode_ignores_forward_passes_without_backward():
    """A forward pass in training mode whose output is dropped (e.g. a monitoring pass) leaves
    nothing behind: the next step equals a clean one."""
    torch.manual_seed(0)
    model = _Mixed(2).double()
    x = torch.randn(5, 1, 6, 5, dtype=torch.float64)
    ref = _update("fast", model, x, 0.05)
    tr = _private("fast", model, x, 0.05)
    tr.module(x[:2] + 1.0)  # dropped
    tr.optimizer.zero_grad()
    tr.module(x).mean().backward()
    tr.optimizer.step()
    for a, b in zip(_grads_after_one_step(tr), ref, strict=True):
        assert torch.allclose(a, b, atol=1e-12, rtol=1e-9)


def test_fast_mode_gradients_are_views_of_one_noisy_buffer():
    """With noise, every parameter gets noise of std noise_multiplier * clip / batch (checked on
    a frozen-data step whose clipped sum is zero: all-zero inputs and a bias-free model)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(50, 40, bias=False), nn.Linear(40, 30, bias=False))
    x = torch.zeros(8, 50)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr = make_private(model, torch.optim.SGD(model.parameters(), lr=1.0), loader,
                          noise_multiplier=2.0, delta=1e-5, max_grad_norm=0.5, epochs=1,
                          poisson_sampling=False)
    tr.optimizer.zero_grad()
    tr.module(x).sum().backward()
    tr.optimizer.step()
    grads = torch.cat([p.grad.flatten() for p in tr.module.parameters()])
    assert grads.numel() == 50 * 40 + 40 * 30
    # std 2.0 * 0.5 / 8 = 0.125 (mean loss reduction); 3200 draws give it to a few percent
    assert abs(grads.std().item() - 0.125) < 0.01
    assert abs(grads.mean().item()) < 0.01


@settings(max_examples=20, deadline=None)
@given(kind=st.sampled_from(["group", "layer"]), dims=st.integers(0, 3), k=st.integers(1, 3),
       n=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_norm_layer_samples_equal_batch_of_one(kind, dims, k, n, seed):
    """Per-sample affine gradients of GroupNorm / LayerNorm (any input rank, LayerNorm over
    several trailing dimensions) equal each sample's own gradient, computed alone in float64."""
    torch.manual_seed(seed)
    spatial = tuple(range(3, 3 + dims))
    if kind == "group":
        layer = nn.GroupNorm(2, 4).double()
        shape = (n, 4, *spatial)
    else:
        shape = (n, 3, *spatial)
        layer = nn.LayerNorm(shape[len(shape) - min(k, len(shape) - 1):]).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(shape, dtype=torch.float64)
    g = torch.randn_like(layer(x))
    got = fastclip._norm_samples(layer, [(x, g)])
    oracle = micro_batch_gradients(layer, lambda m, i: (m(x[i]) * g[i]).sum(), n)
    for name, p in layer.named_parameters():
        for i in range(n):
            assert torch.allclose(got[p][i], oracle[name][i], atol=1e-12), (kind, shape)


def test_fast_mode_mixed_parameter_dtypes_equal_hooks_mode():
    """Parameters of different dtypes cannot share one flat buffer: the per-parameter path gives
    hooks mode's update."""

    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 3).double()
            self.b = nn.Linear(3, 2)

        def forward(self, x):
            return self.b(torch.tanh(self.a(x)).float()).double().pow(2).sum(1)

    torch.manual_seed(0)
    model = Mixed()
    x = torch.randn(5, 4, dtype=torch.float64)
    fast, hooks = _update("fast", model, x, 0.05), _update("hooks", model, x, 0.05)
    assert [g.dtype for g in fast] == [torch.float64] * 2 + [torch.float32] * 2
    for a, b in zip(fast, hooks, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
