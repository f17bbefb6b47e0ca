"""Spiking layers: LIF semantics, surrogate gradient, vmap, per-sample gradients vs an oracle."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from privkit.dp.snn import LIFNeuron, LIFStep, MembraneOutput, lif
from privkit.testing import assert_per_sample_gradients

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


def test_lif_dynamics_match_fsvae_equation():
    torch.manual_seed(0)
    x = torch.rand(2, 5, 6) * 0.4
    spikes = LIFNeuron(tau=0.25, threshold=0.2)(x)
    # reference: u_t = tau * u_{t-1} * (1 - o_{t-1}) + x_t, o_t = u_t >= thr
    u = torch.zeros(2, 5)
    o = torch.zeros(2, 5)
    ref = []
    for t in range(6):
        u = 0.25 * u * (1 - o) + x[..., t]
        o = (u >= 0.2).float()
        ref.append(o)
    assert torch.equal(spikes, torch.stack(ref, -1))


def test_explicit_state_and_surrogate_gradient():
    x = torch.tensor([0.1, 0.25, 0.9, -0.5], requires_grad=True)
    spk, mem = lif(x, torch.zeros(4))
    assert spk.tolist() == [0.0, 1.0, 1.0, 0.0]
    assert mem.tolist()[1:3] == [0.0, 0.0]  # hard reset
    (g,) = torch.autograd.grad(spk.sum(), x)
    # rectangular surrogate: 1 inside |u - 0.2| < 0.5, 0 outside
    assert g.tolist() == [1.0, 1.0, 0.0, 0.0]


def test_lif_step_under_vmap_and_grad():
    from torch.func import grad, vmap

    x = torch.randn(5, 3, dtype=torch.float64)
    mem = torch.randn(5, 3, dtype=torch.float64) * 0.1
    tau = torch.tensor(0.3, dtype=torch.float64)

    def f(tau, xi, mi):
        s, m = LIFStep.apply(xi, mi, tau, 0.2, 1.0)
        return (s * 2 + m).sum()

    per_sample = vmap(grad(f), in_dims=(None, 0, 0))(tau, x, mem)
    ref = []
    for i in range(5):
        t = tau.clone().requires_grad_(True)
        ref.append(torch.autograd.grad(f(t, x[i], mem[i]), t)[0])
    ref = torch.stack(ref)
    assert torch.allclose(per_sample, ref)


class _SpikingNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 3, (3, 3, 1), padding=(1, 1, 0))
        self.norm = nn.GroupNorm(1, 3)
        self.lif1 = LIFNeuron(learnable_tau=True, channels=3)
        self.lin = nn.Linear(3 * 16, 4)
        self.lif2 = LIFNeuron(learnable_tau=True)
        self.out = MembraneOutput()

    def forward(self, x):
        h = self.lif1(self.norm(self.conv(x)))  # (N, 3, 4, 4, T)
        n, T = h.shape[0], h.shape[-1]
        h = self.lin(h.reshape(n, -1, T).transpose(1, 2)).transpose(1, 2)  # (N, 4, T)
        return self.out(self.lif2(h * 3)).pow(2).sum(1)


@pytest.mark.parametrize("mode", ["hooks", "functorch"])
def test_spiking_layer_per_sample_gradients_equal_micro_batch_oracle(mode):
    torch.manual_seed(0)
    net = _SpikingNet().double()
    x = torch.randn(4, 1, 4, 4, 5, dtype=torch.float64)
    oracle = assert_per_sample_gradients(net, lambda m, i: m(x[i]).sum(), len(x), mode=mode,
                                         atol=1e-10, rtol=1e-5)
    assert oracle[list(oracle)[-1]].abs().sum() > 0
    assert oracle["lif1.tau_logit"].abs().sum() > 0


@pytest.mark.parametrize(
    "layer",
    [
        nn.Conv3d(2, 3, (3, 3, 1), stride=(2, 2, 1), padding=(1, 1, 0)),  # time-sliced
        nn.Conv3d(2, 3, (3, 3, 2), padding=(1, 0, 1)),  # not time-sliced
        nn.Conv3d(2, 3, (3, 3, 1), padding="same"),  # string padding: Opacus' own sampler
        "time-transpose",  # privkit's TimeConvTranspose3d
        nn.ConvTranspose3d(2, 3, (2, 2, 2)),
    ],
)
def test_time_sliced_conv_grad_samplers_equal_oracle(layer):
    from opacus import GradSampleModule

    import privkit.dp

    privkit.dp.register_grad_samplers()  # explicit: importing privkit.dp changes nothing
    from privkit.dp import grad_samplers, snn

    assert GradSampleModule.GRAD_SAMPLERS[nn.Conv3d] is grad_samplers.conv_grad_sample
    assert GradSampleModule.GRAD_SAMPLERS[snn.TimeConvTranspose3d] is (
        grad_samplers.conv_transpose_grad_sample)
    torch.manual_seed(0)
    if layer == "time-transpose":
        layer = snn.TimeConvTranspose3d(2, 3)
    layer = layer.double()
    x = torch.randn(3, 2, 6, 6, 4, dtype=torch.float64)
    w = torch.randn_like(layer(x))
    assert_per_sample_gradients(layer, lambda m, i: (m(x[i]) * w[i]).sum(), len(x), atol=1e-10, rtol=1e-5)
