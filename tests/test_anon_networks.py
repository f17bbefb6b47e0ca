"""Shapes through every anonymiser network and the exact DFI code arithmetic."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from privkit.anon.networks import (
    TCNNIMU,
    ConvAutoencoder,
    Discriminator,
    Generator,
    LatentMapper,
    channel_kernel_for,
)
from privkit.anon.train import (
    AnonConfig,
    adaptive_term,
    build_generator,
    content_term,
    generator_loss,
    random_targets,
)
from privkit.errors import ParameterError, ShapeError

SHAPES = [  # (device_channels, window)
    ((12,), 64),      # MotionSense: one phone, 12 channels
    ((6,) * 5, 100),  # LARa: five devices of 6 channels, 1 s at 100 Hz
    ((6, 6), 50),
    ((3,), 33),       # odd window length
    ((1,), 8),
    ((9, 7), 17),     # devices of different widths
]


@pytest.mark.parametrize("devices, window", SHAPES)
def test_shapes_through_every_network(devices, window):
    c = sum(devices)
    x = torch.rand(3, window, c)
    ae = ConvAutoencoder(c, window).eval()
    out = ae(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    code = ae.encode(x)
    assert tuple(code.shape[1:]) == ae.code_shape
    assert ae.kc == channel_kernel_for(c) == (4 if c >= 16 else 1)
    for subjects in (None, 5):
        mapper = LatentMapper(ae.code_shape, n_subjects=subjects)
        cz = mapper(torch.randn(3, 32), None if subjects is None else torch.tensor([0, 4, 2]))
        assert cz.shape == code.shape
    gen = Generator(ae, LatentMapper(ae.code_shape), n_subjects=5).eval()
    assert gen(x, torch.randn(3, 32)).shape == x.shape
    assert Discriminator(c, window)(x).shape == (3,)
    for n_classes in (2, 7):
        assert TCNNIMU(devices, window, n_classes, filters=8)(x).shape == (3, n_classes)


def test_knobs_change_the_networks():
    ae = ConvAutoencoder(30, 64, channels=(8, 16, 24), bottleneck=12, channel_kernel=1)
    assert ae.code_shape == (12, 8, 30) and ae.kc == 1
    ae4 = ConvAutoencoder(12, 64, channel_kernel=4)
    assert ae4.code_shape == (64, 8, 2) and ae4(torch.rand(2, 64, 12)).shape == (2, 64, 12)
    with pytest.raises(ShapeError):
        ConvAutoencoder(12, 64, channel_kernel=3)
    net = TCNNIMU((6, 6), 64, 4, filters=16, kernel=3, fc=32)
    assert len(net.branches) == 2
    assert net.branches[0].features[0].kernel_size == (3, 1)


def test_networks_reject_wrong_shapes():
    ae = ConvAutoencoder(12, 64)
    with pytest.raises(ShapeError, match=r"\(batch, 64, 12\)"):
        ae(torch.rand(2, 12, 64))
    with pytest.raises(ShapeError):
        TCNNIMU((6, 6), 64, 3)(torch.rand(2, 64, 10))
    with pytest.raises(ShapeError, match="subject"):
        LatentMapper((4, 2, 2), n_subjects=3)(torch.randn(2, 32))


def test_dfi_code_arithmetic_is_exact():
    torch.manual_seed(0)
    cfg = AnonConfig.paper()  # the paper's code: C_x - mean(source) + C_z
    ae = ConvAutoencoder(6, 32, bottleneck=8).eval()
    gen = build_generator(ae, "dfi", n_subjects=4, cfg=cfg).eval()
    means = torch.randn(4, *ae.code_shape)
    gen.code_means.copy_(means)
    x, z = torch.rand(5, 32, 6), torch.randn(5, cfg.z_dim)
    src, tgt = torch.tensor([0, 1, 2, 3, 1]), torch.tensor([3, 2, 1, 0, 0])
    with torch.no_grad():
        code = gen.code(x, z, condition=tgt, source=src)
        expected = ae.encode(x) - means[src] + gen.mapper(z, tgt)
        assert torch.equal(code, expected)
        # the decoder sees exactly that code
        assert torch.equal(gen(x, z, condition=tgt, source=src), ae.decode(expected))
        # subtracting then adding back the source mean is the identity on the code
        back = gen.code(x, z, condition=tgt, source=src) + means[src] - gen.mapper(z, tgt)
        torch.testing.assert_close(back, ae.encode(x), rtol=0, atol=1e-5)


def test_generator_losses_follow_the_paper():
    cfg = AnonConfig(ag_m=0.9)
    d = torch.tensor([0.3, -1.0])
    reid = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    y = torch.tensor([0, 2])
    adv = torch.nn.functional.binary_cross_entropy_with_logits(d, torch.ones(2), reduction="none")
    p = torch.softmax(reid, 1)[torch.arange(2), y]
    torch.testing.assert_close(generator_loss("ag", d, reid, y, cfg),
                               (adv * (0.9 * p + 0.1)).mean())
    ce = torch.nn.functional.cross_entropy(reid, y, reduction="none")
    torch.testing.assert_close(generator_loss("dfi", d, reid, y, cfg), (adv * ce).mean())
    with pytest.raises(ParameterError):
        AnonConfig(ag_m=1.5)


def test_random_targets_never_the_source():
    src = torch.arange(8).repeat(50)
    t = random_targets(src, 8, torch.Generator().manual_seed(0))
    assert (t != src).all() and set(t.tolist()) == set(range(8))
    with pytest.raises(ParameterError):
        random_targets(torch.zeros(3, dtype=torch.long), 1)


def test_dfi_target_mean_adds_the_target_mean_code():
    torch.manual_seed(1)
    ae = ConvAutoencoder(6, 32, bottleneck=8).eval()
    plain = build_generator(ae, "dfi", 4, AnonConfig(dfi_target_mean=False)).eval()
    swap = build_generator(ae, "dfi", 4, AnonConfig(dfi_target_mean=True)).eval()
    assert not plain.add_target_mean and swap.add_target_mean
    assert not build_generator(ae, "acg", 4, AnonConfig(dfi_target_mean=True)).add_target_mean
    swap.mapper.load_state_dict(plain.mapper.state_dict())
    means = torch.randn(4, *ae.code_shape)
    plain.code_means.copy_(means)
    swap.code_means.copy_(means)
    x, z = torch.rand(5, 32, 6), torch.randn(5, 32)
    src, tgt = torch.tensor([0, 1, 2, 3, 1]), torch.tensor([3, 2, 1, 0, 0])
    with torch.no_grad():
        diff = swap.code(x, z, condition=tgt, source=src) - plain.code(x, z, condition=tgt,
                                                                        source=src)
    torch.testing.assert_close(diff, means[tgt], rtol=0, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 9), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_adaptive_terms(k, n, seed):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(n, k, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    p = torch.softmax(logits, 1)[torch.arange(n), y].mean()
    torch.testing.assert_close(adaptive_term("prob", logits, y), p)
    conf = adaptive_term("confusion", logits, y)
    # KL(uniform || p) >= 0, zero exactly for a uniform prediction, independent of the label
    assert float(conf) > 0
    torch.testing.assert_close(conf, adaptive_term("confusion", logits, (y + 1) % k))
    flat = torch.zeros(n, k) + torch.randn(n, 1, generator=g)
    assert abs(float(adaptive_term("confusion", flat, y))) < 1e-5
    # a more confident attacker costs the generator more
    assert float(adaptive_term("confusion", 2 * logits, y)) > float(conf)


def test_extra_terms_reject_bad_settings():
    with pytest.raises(ParameterError, match="adaptive_loss"):
        AnonConfig(adaptive_loss="entropy")
    with pytest.raises(ParameterError, match="adaptive_loss"):
        adaptive_term("entropy", torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    for bad in ({"utility_weight": -1}, {"content_weight": -0.1}, {"attacker_steps": 0},
                {"warmup_epochs": -1}, {"attacker_reset": -2}):
        with pytest.raises(ParameterError):
            AnonConfig(**bad)
    x = torch.rand(3, 8, 2)
    assert float(content_term(x, x)) == 0.0
    torch.testing.assert_close(content_term(x, x + 0.5), torch.tensor(0.25))
