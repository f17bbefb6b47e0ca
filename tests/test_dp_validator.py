"""privkit's validator rejects what breaks DP-SGD, including what Opacus lets through."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from privkit.dp import DPCompatibilityError, DPConfig, check_module, validate_module
from privkit.errors import UnsupportedLayerError


class MyBN(nn.BatchNorm2d):
    pass


class Trainable(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))
        self.register_buffer("count", torch.zeros(()))

    def forward(self, x):
        return x * self.w


def _names(module):
    return {name for name, _, _ in validate_module(module)}


def test_opacus_lets_affine_free_batchnorm_through_but_privkit_does_not():
    from opacus.validators import ModuleValidator

    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, affine=False), nn.ReLU())
    assert ModuleValidator.validate(model, strict=False) == []  # the hole
    with pytest.raises(DPCompatibilityError) as ei:
        check_module(model)
    msg = str(ei.value)
    assert "1:" in msg and "BatchNorm2d (affine=False)" in msg and "GroupNorm" in msg
    assert isinstance(ei.value, UnsupportedLayerError)


@pytest.mark.parametrize(
    "layer",
    [
        nn.BatchNorm1d(4),
        nn.BatchNorm3d(4, affine=False),
        nn.BatchNorm2d(4, affine=False, track_running_stats=False),
        MyBN(4, affine=False),
        nn.SyncBatchNorm(4, affine=False),
        nn.LazyBatchNorm2d(affine=False),
        nn.InstanceNorm2d(4, track_running_stats=True),
        nn.InstanceNorm1d(4, affine=True, track_running_stats=True),
    ],
)
def test_batch_statistics_norms_rejected_by_qualified_name(layer):
    model = nn.Sequential()
    model.add_module("block", nn.Sequential(nn.Identity(), layer))
    problems = validate_module(model)
    assert "block.1" in {p[0] for p in problems}
    assert any("GroupNorm" in p[2] or "track_running_stats=False" in p[2] for p in problems)


def test_per_sample_norms_accepted():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.LayerNorm([4, 6, 6]),
                          nn.InstanceNorm2d(4, affine=True), nn.Flatten(), nn.Linear(144, 2))
    assert validate_module(model) == []


def test_modules_opacus_cannot_handle_rejected():
    model = nn.Module()
    model.rnn = nn.LSTM(3, 4)
    model.custom = Trainable()
    names = _names(model)
    assert {"rnn", "custom"} <= names
    frozen = Trainable()
    frozen.w.requires_grad_(False)
    assert validate_module(frozen) == []
    ew = validate_module(nn.Sequential(nn.ConvTranspose2d(2, 2, 3)), grad_sample_mode="ew")
    assert ew and ew[0][0] == "0"


def test_svae_with_batch_norm_rejected_for_dp_and_fine_without():
    from privkit.apps.svae import SpikingVAE

    m = SpikingVAE(image_size=8, widths=(4,), latent_dim=4, n_steps=2, k=2, norm="batch")
    x = torch.rand(16, 1, 8, 8) * 2 - 1
    with pytest.raises(DPCompatibilityError, match=r"encoder\.1"):
        m.fit(x, dp=DPConfig(noise_multiplier=1.0, batch_size=8))
    m.fit(x, epochs=1, batch_size=8)  # non-private training may use batch norm
    assert m.privacy_report().kind == "none"
