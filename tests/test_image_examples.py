"""The image examples' models (examples/image_cnns.py, box_cnn3d.py) compile and match torch on
the simulator; fast (untrained weights, few images). Long runs are in bench/."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from privkit import nn as pnn
from privkit.testing import assert_close_encrypted

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
import box_cnn3d
import image_cnns as ic


def _run_sim(model, images, input_sat=False):
    model = model.double().eval()
    res = ic.run_encrypted(model, images, backend="sim", input_sat=input_sat)
    with torch.no_grad():
        ref = model(torch.as_tensor(images, dtype=torch.float64)).numpy()
    return res, ref


def test_tenseal_tutorial_model_compiles_bsgs_and_matches_torch():
    torch.manual_seed(0)
    model = ic.tenseal_tutorial_model()
    assert model[3].method == "bsgs" and model[5].method == "bsgs"
    x = ic.synthetic_images(3, seed=0).images
    res, ref = _run_sim(model, x)
    prog = res["program"]
    assert prog.depth == 5 and prog.params.security_bits >= 128
    assert_close_encrypted(res["logits"], ref, res["program"].params, depth=res["program"].depth)
    # the diagonal method gives the same logits with more rotations
    diag = ic.tenseal_tutorial_model(linear_method="diag")
    diag.load_state_dict(model.state_dict())
    res2, _ = _run_sim(diag, x[:1])
    assert_close_encrypted(res2["logits"][0], ref[0], res2["program"].params, depth=res2["program"].depth)
    assert res2["counts"]["rotations"] > res["counts"]["rotations"]


@pytest.mark.parametrize("input_sat", [False, True])
def test_lenet_with_a_box_first_conv_matches_torch(input_sat):
    torch.manual_seed(1)
    spatial = ic.lenet((2, 3), 3, hidden=None, size=14)
    box, report = ic.box_first_conv(spatial, tol=0.1)
    assert type(box[0]) is pnn.BoxConv2d and type(box[3]) is pnn.Conv2d and len(report.rows) == 1
    x = ic.synthetic_images(2, size=14, seed=2).images
    res, ref = _run_sim(box, x, input_sat=input_sat)
    assert res["program"].client_info()["input_encoding"] == ("sat" if input_sat else "values")
    assert_close_encrypted(res["logits"], ref, res["program"].params, depth=res["program"].depth)
    res_s, ref_s = _run_sim(spatial, x)
    assert_close_encrypted(res_s["logits"], ref_s, res_s["program"].params, depth=res_s["program"].depth)


def test_box_cnn3d_model_matches_torch():
    torch.manual_seed(2)
    spatial = box_cnn3d.model3d(6)
    box, report = pnn.replace_conv_with_box(spatial, tol=0.1)
    assert type(box[0]) is pnn.BoxConv3d and report.rows
    x, _ = box_cnn3d.volumes(2, 6, seed=3)
    res, ref = _run_sim(box, x)
    assert_close_encrypted(res["logits"], ref, res["program"].params, depth=res["program"].depth)


def test_load_images_reads_fashion_mnist_or_says_synthetic(tmp_path):
    d = ic.load_images("test", 5, directory=tmp_path)  # an empty folder: labelled synthetic
    assert d.name == "synthetic" and d.images.shape == (5, 1, 28, 28)
    with pytest.raises(Exception, match="Fashion-MNIST is not in"):
        ic.load_images("test", 5, directory=tmp_path, allow_synthetic=False)
    if ic.fashion_mnist_available():
        real = ic.load_images("test", 5)
        assert real.name == "fashion-mnist" and real.images.shape == (5, 1, 28, 28)
        assert np.all(np.abs(real.images) <= 1.0)
