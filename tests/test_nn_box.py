"""BoxConv1d/2d/3d torch layers and the ConvNd -> BoxConvNd replacement tool."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from privkit.errors import ParameterError, ShapeError, UnsupportedLayerError
from privkit.fhe import KeySet
from privkit.fhe.ops import sat as cs
from privkit.nn.box import BoxConv1d, BoxConv2d, BoxConv3d, replace_conv_with_box
from privkit.testing import assert_close_encrypted

_LAYERS = {1: (torch.nn.Conv1d, BoxConv1d), 2: (torch.nn.Conv2d, BoxConv2d), 3: (torch.nn.Conv3d, BoxConv3d)}


@settings(max_examples=15)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.integers(0, 1), st.integers(0, 10_000))
def test_exact_boxes_reproduce_the_convolution(ndim, c_in, c_out, stride, padding, seed):
    torch.manual_seed(seed)
    conv_cls, box_cls = _LAYERS[ndim]
    conv = conv_cls(c_in, c_out, 3, stride=stride, padding=padding).double()
    box = box_cls.from_conv(conv, tol=0.0).double()
    x = torch.randn((2, c_in) + (6,) * ndim, dtype=torch.float64)
    torch.testing.assert_close(box(x), conv(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_forward_is_exactly_the_sat_convolution(ndim):
    torch.manual_seed(ndim)
    conv_cls, box_cls = _LAYERS[ndim]
    box = box_cls.from_conv(conv_cls(2, 3, 4, stride=2, padding=1), tol=0.05).double()
    x = torch.randn((1, 2) + (9,) * ndim, dtype=torch.float64)
    got = box(x)[0].detach().numpy()
    bias = box.bias.detach().numpy()
    want = cs.conv_sat_ref(x[0].numpy(), box.boxsets(), 2, 1, bias=bias)
    np.testing.assert_allclose(got, want, atol=1e-9)
    # the box set grid and the dense kernel agree
    dense = np.array([[b.dense() for b in row] for row in box.boxsets()])
    np.testing.assert_allclose(dense, box.dense_weight().detach().numpy(), atol=1e-12)
    assert box.num_boxes == sum(len(b) for row in box.boxsets() for b in row)


def test_approximation_error_and_savings():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 7)
    box = BoxConv2d.from_conv(conv, tol=0.01)
    errs = box.kernel_errors(conv.weight)
    assert errs.shape == (4, 3) and np.all(errs < 0.01)
    assert box.num_boxes < box.spatial_multiplications_per_output
    coarse = BoxConv2d.from_conv(conv, max_boxes=3, tol=0.0)
    assert coarse.num_boxes == 3 * 12 and np.all(coarse.kernel_errors(conv.weight) > errs)


@pytest.mark.parametrize("layout", ["simd", "element"])
def test_encrypted_forward_matches_torch(layout):
    torch.manual_seed(1)
    box = BoxConv2d.from_conv(torch.nn.Conv2d(2, 2, 3, padding=1), tol=0.01)
    keys = KeySet.generate("n8192", backend="sim")
    x = torch.rand(1, 2, 5, 6)
    want = box.double()(x.double())[0].detach().numpy()  # the float64 twin of the lowering
    if layout == "simd":
        geo = cs.sat_geometry((5, 6), (3, 3), 1, 1)
        outs = box.forward_encrypted(keys.backend, [keys.encrypt(geo.pack(c)) for c in x[0].double().numpy()], (5, 6))
        got = np.array([geo.unpack(keys.decrypt(o)) for o in outs])
    else:
        cts = cs.encrypt_elements(keys, x[0].double().numpy())
        got = cs.decrypt_elements(keys, box.forward_encrypted(keys.backend, cts, (5, 6), layout="element"))
    assert_close_encrypted(got, want, keys)
    spec = box.fhe_spec()
    from privkit.fhe.compiler import lowering_depth

    # the SAT's level plus the output placement's, from the lowering registry
    assert spec["op"] == "box_conv2d" and lowering_depth(spec) == 2 and len(spec["boxsets"]) == 2


def test_scales_train_and_boxes_stay_fixed():
    torch.manual_seed(2)
    target = torch.nn.Conv2d(1, 1, 5, padding=2)
    box = BoxConv2d(1, 1, 5, padding=2, max_boxes=12, tol=0.0)
    corners = box.box_corners.clone()
    opt = torch.optim.Adam(box.parameters(), lr=0.05)
    x = torch.randn(16, 1, 10, 10)
    with torch.no_grad():
        y = target(x)
    loss0 = float(torch.mean((box(x) - y) ** 2).detach())
    for _ in range(100):
        opt.zero_grad()
        loss = torch.mean((box(x) - y) ** 2)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * loss0
    assert torch.equal(box.box_corners, corners)
    assert {n for n, _ in box.named_parameters()} == {"alpha", "bias"}


def test_replace_every_conv_and_report():
    torch.manual_seed(3)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Sequential(torch.nn.Conv2d(3, 2, 5)),
        torch.nn.Flatten(),
    )
    new, report = replace_conv_with_box(model, tol=0.01)
    assert isinstance(model[0], torch.nn.Conv2d)  # original untouched
    assert isinstance(new[0], BoxConv2d) and isinstance(new[2][0], BoxConv2d)
    assert [r["name"] for r in report.rows] == ["0", "2.0"]
    assert all(r["max_error"] < 0.01 for r in report.rows)
    box_m, spatial_m = report.multiplications
    assert box_m == report.boxes and spatial_m == 3 * 9 + 6 * 25
    assert "saved" in report.table()
    x = torch.randn(2, 1, 8, 8)
    rel = torch.linalg.norm(new(x) - model(x)) / torch.linalg.norm(model(x))
    assert rel < 0.05
    same, _ = replace_conv_with_box(model, inplace=True)
    assert same is model and isinstance(model[0], BoxConv2d)


def test_zero_kernels_need_no_boxes():
    conv = torch.nn.Conv1d(2, 2, 3)
    with torch.no_grad():
        conv.weight[0, 1].zero_()
    box = BoxConv1d.from_conv(conv)
    assert len(box.boxsets()[0][1]) == 0
    x = torch.randn(1, 2, 9)
    assert torch.allclose(box(x), conv(x), atol=0.05)


def test_bad_layers_raise():
    with pytest.raises(UnsupportedLayerError):
        BoxConv2d.from_conv(torch.nn.Conv2d(2, 2, 3, groups=2))
    with pytest.raises(UnsupportedLayerError):
        BoxConv2d.from_conv(torch.nn.Conv2d(1, 1, 3, dilation=2))
    with pytest.raises(UnsupportedLayerError):
        BoxConv2d.from_conv(torch.nn.Conv1d(1, 1, 3))
    with pytest.raises(UnsupportedLayerError):
        replace_conv_with_box(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, padding_mode="circular")))
    with pytest.raises(ShapeError):
        BoxConv2d(1, 1, (3, 3, 3))
    with pytest.raises(ParameterError):
        BoxConv2d(1, 1, 3, stride=2, padding="same")
    conv = torch.nn.Conv2d(1, 1, 3)
    with torch.no_grad():
        conv.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ParameterError):
        replace_conv_with_box(torch.nn.Sequential(conv))


def test_replace_conv_with_box_takes_privkit_conv_subclasses():
    """privkit.nn.Conv1d/2d/3d are nn.ConvNd subclasses: they are replaced too, with the same
    output for kernels the boxes represent exactly."""
    from privkit import nn as pnn

    torch.manual_seed(0)
    model = torch.nn.Sequential(pnn.Conv2d(1, 2, 3, padding=1), pnn.Square(), pnn.Conv2d(2, 1, 2)).double()
    with torch.no_grad():  # integer kernels: exact box decompositions exist
        for m in (model[0], model[2]):
            m.weight.copy_(torch.randint(-2, 3, m.weight.shape).double())
    box, report = replace_conv_with_box(model, tol=0.0)
    assert [type(m).__name__ for m in box] == ["BoxConv2d", "Square", "BoxConv2d"]
    assert [r["name"] for r in report.rows] == ["0", "2"] and max(r["max_error"] for r in report.rows) < 1e-9
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        np.testing.assert_allclose(box.double()(x).numpy(), model(x).numpy(), atol=1e-5)
    c1 = torch.nn.Sequential(pnn.Conv1d(1, 1, 3))
    assert type(replace_conv_with_box(c1)[0][0]).__name__ == "BoxConv1d"
