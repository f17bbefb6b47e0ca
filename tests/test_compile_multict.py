"""Packing across several ciphertexts (issue 14, item 3): channels split in groups.

Property tests draw random 1-D / 2-D / 3-D stacks (1-3 conv blocks, random channels, kernels,
strides, padding, BatchNorm folds, activations, pools) and compile them with a FORCED small
channel cap (``channels_per_ciphertext``) so the split is really exercised (each test asserts
the program uses more than one ciphertext), then compare the decrypted result with the float64
torch forward on the simulator, within ``assert_close_encrypted``'s bound for the program's
depth. The group machinery with one group reproduces the single-ciphertext program bit for bit;
a model too wide for every preset in one ciphertext compiles and runs; a small SEAL subset uses
real encryption.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cnn_models import build_stack as _build
from cnn_models import torch_forward as _torch_out
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from strategies import cnn_stacks

from privkit import fhe
from privkit import nn as pnn
from privkit.errors import DepthExhaustedError, ShapeError, UnsupportedLayerError
from privkit.fhe.program import EncryptedProgram
from privkit.testing import assert_close_encrypted


def _run(prog, keys, x):
    return prog.decrypt_output(keys, prog.run(prog.encrypt_input(keys, x), keys.public_bundle(),
                                              backend=keys.backend, allow_insecure=keys.backend.name == "sim"))


def _calibrated(model, shape, seed):
    rng = np.random.default_rng(seed)
    pnn.calibrate(model, torch.tensor(rng.uniform(-1, 1, (16, *shape)), dtype=torch.float32))
    return rng


def _check_split(plan, shape, seed, nd, cap, backend="sim", params="auto"):
    widest = max([shape[0]] + [it[2] for it in plan if it[0] == "conv"])
    assume(widest > cap)  # the split must really happen
    model = _build(plan, nd, seed)
    rng = _calibrated(model, shape, seed)
    try:
        prog = fhe.compile(model, input_shape=shape, params=params, channels_per_ciphertext=cap)
    except DepthExhaustedError:
        assume(False)
    except ShapeError as e:
        if "does not fit" not in str(e):
            raise
        assume(False)
    assert prog.multi and prog.ciphertexts > 1 and prog.channels_per_ciphertext <= cap
    x = rng.uniform(-1, 1, shape) * 0.9
    got = _run(prog, prog.keygen(backend=backend), x)
    assert_close_encrypted(got, _torch_out(model, x), prog.params, depth=prog.depth, factor=4.0)
    return prog


@given(case=cnn_stacks(nd=2), cap=st.integers(1, 2))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_random_2d_stacks_split_over_ciphertexts_match_torch(case, cap):
    plan, shape, seed = case
    _check_split(plan, shape, seed, 2, cap)


@given(case=cnn_stacks(nd=1, max_side=24), cap=st.integers(1, 2))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_random_1d_stacks_split_over_ciphertexts_match_torch(case, cap):
    plan, shape, seed = case
    _check_split(plan, shape, seed, 1, cap)


@given(case=cnn_stacks(nd=3, max_blocks=2, max_channels=3))
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_random_3d_stacks_split_over_ciphertexts_match_torch(case):
    plan, shape, seed = case
    _check_split(plan, shape, seed, 3, 1)


@given(case=cnn_stacks(nd=2, max_blocks=2))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_one_group_reproduces_the_single_ciphertext_program_bit_for_bit(case):
    """The group machinery with a cap no layer reaches: same depth, same rotation keys, same
    plan rows and bit-identical logits on the simulator as the single-ciphertext program."""
    plan, shape, seed = case
    model = _build(plan, 2, seed)
    rng = _calibrated(model, shape, seed)
    try:
        single = fhe.compile(model, input_shape=shape, params="n16384")
    except (DepthExhaustedError, ShapeError):
        assume(False)
    grouped = fhe.compile(model, input_shape=shape, params="n16384", channels_per_ciphertext=64)
    assert not single.multi and grouped.multi and grouped.ciphertexts == 1
    assert grouped.depth == single.depth and grouped.rotations == single.rotations
    assert [(s.name, s.kind, s.depth, sorted(s.rotations)) for s in grouped.steps] == \
        [(s.name, s.kind, s.depth, sorted(s.rotations)) for s in single.steps]
    keys = single.keygen(backend="sim")
    x = rng.uniform(-1, 1, shape) * 0.9
    ct = single.encrypt_input(keys, x)
    a = single.decrypt_output(keys, single.run(ct, keys.public_bundle(), allow_insecure=True))
    b = grouped.decrypt_output(keys, grouped.run(ct, keys.public_bundle(), allow_insecure=True))
    assert np.array_equal(a, b)


def test_split_keeps_the_depth_and_uses_the_union_of_rotations():
    torch.manual_seed(0)
    model = torch.nn.Sequential(pnn.Conv2d(2, 6, 3, padding=1), pnn.Square(), pnn.Conv2d(6, 4, 3, stride=2),
                                pnn.PolyReLU(degree=3), pnn.Flatten(), pnn.Linear(4 * 4 * 4, 3)).eval()
    _calibrated(model, (2, 10, 10), 0)
    single = fhe.compile(model, (2, 10, 10), params="n16384")
    split = fhe.compile(model, (2, 10, 10), params="n16384", channels_per_ciphertext=2)
    assert split.depth == single.depth and split.ciphertexts == 3
    assert len(split.input_layouts) == 1  # two input channels fit one ciphertext of 2 channels
    assert set(split.rotations) <= set(single.rotations) | {r % split.params.slots for s in split.steps
                                                             for r in s.rotations}
    rows = split.plan_table()
    assert "[1->3 ct]" in rows and "[3->2 ct]" in rows and "[2->1 ct]" in rows and "up to 3 ciphertexts" in rows


def _wide_model(channels=32):
    """Conv2d(1, C, 3, padding=1) on 28x28: C x 784 values in blocks of 1024 slots."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(pnn.Conv2d(1, channels, 3, padding=1), pnn.Square(), pnn.AvgPool2d(2),
                                pnn.Flatten(), pnn.Linear(channels * 14 * 14, 10, method="bsgs")).eval()
    _calibrated(model, (1, 28, 28), 1)
    return model


def test_a_model_too_wide_for_every_ring_compiles_and_runs_split():
    """32 channels x 28x28 need 32768 slots: no preset holds them in one ciphertext (it failed
    before); split they run at a smaller ring and match torch."""
    model = _wide_model(32)
    with pytest.raises(ShapeError, match="does not fit any preset"):
        fhe.compile(model, (1, 28, 28), params="auto", max_ciphertexts=1)
    prog = fhe.compile(model, (1, 28, 28), params="auto")
    assert prog.multi and prog.ciphertexts > 1 and len(prog.input_layouts) == 1
    assert "auto:" in prog.plan_table()
    keys = prog.keygen(backend="sim")
    x = np.random.default_rng(3).uniform(0, 1, (1, 28, 28))
    got = _run(prog, keys, x)
    assert_close_encrypted(got, _torch_out(model, x), prog.params, depth=prog.depth, factor=4.0)
    reports = prog.trace(keys, x)
    assert all(r.max_abs_error is None or r.max_abs_error < 1e-3 for r in reports)


def test_auto_compares_one_large_ring_with_several_ciphertexts():
    """16 channels fit one ciphertext at N=32768 only: auto estimates both and says why."""
    from privkit.fhe.compiler.cost import estimate_seconds

    model = _wide_model(16)
    prog = fhe.compile(model, (1, 28, 28), params="auto")
    assert prog.choice.startswith("chose ") and "N=32768" in prog.choice and "est." in prog.choice
    one = fhe.compile(model, (1, 28, 28), params="n32768", max_ciphertexts=1)
    assert not one.multi
    t_prog, counts = estimate_seconds(prog)
    t_one, _ = estimate_seconds(one)
    assert t_prog <= t_one and counts["rotations"] > 0


def test_max_ciphertexts_is_a_limit():
    model = _wide_model(16)
    with pytest.raises(ShapeError, match="max_ciphertexts=2"):
        fhe.compile(model, (1, 28, 28), params="n8192", max_ciphertexts=2)
    assert fhe.compile(model, (1, 28, 28), params="n8192", max_ciphertexts=4).ciphertexts == 4


def test_input_wider_than_one_ciphertext_is_encrypted_in_groups():
    torch.manual_seed(2)
    model = torch.nn.Sequential(pnn.Conv1d(5, 3, 3, padding=1), pnn.Square(), pnn.Flatten(),
                                pnn.Linear(3 * 12, 2)).eval()
    rng = _calibrated(model, (5, 12), 2)
    prog = fhe.compile(model, (5, 12), params="n16384", channels_per_ciphertext=2)
    assert len(prog.input_layouts) == 3 and [lay.channels for lay in prog.input_layouts] == [2, 2, 1]
    keys = prog.keygen(backend="sim")
    x = rng.uniform(-1, 1, (5, 12))
    cts = prog.encrypt_input(keys, x)
    assert isinstance(cts, list) and len(cts) == 3
    got = prog.decrypt_output(keys, prog.run(cts, keys.public_bundle(), allow_insecure=True))
    assert_close_encrypted(got, _torch_out(model, x), prog.params, depth=prog.depth, factor=4.0)
    with pytest.raises(ShapeError, match="3 ciphertext"):
        prog.run(cts[0], keys.public_bundle(), allow_insecure=True)
    with pytest.raises(ShapeError, match="ONE input ciphertext"):
        prog.client_spec()


def test_multi_ciphertext_program_saves_loads_and_serves(tmp_path):
    from privkit.deploy import Client, Server

    model = _wide_model(8)
    prog = fhe.compile(model, (1, 28, 28), params="n8192", channels_per_ciphertext=2)
    prog.calibrate_input(np.random.default_rng(0).uniform(0, 1, (8, 1, 28, 28)))
    prog.save(tmp_path / "p.pkprog")
    again = EncryptedProgram.load(tmp_path / "p.pkprog")
    assert again.plan_table() == prog.plan_table() and again.ciphertexts == 4
    client = Client(again.client_spec())
    keys = client.keygen(backend="sim")
    server = Server(again, allow_insecure=True)
    kid = server.register(client.bundle_envelope())
    x = np.random.default_rng(4).uniform(0, 1, (1, 28, 28))
    a = prog.decrypt_output(keys, prog.run(prog.encrypt_input(keys, x), keys.public_bundle(), allow_insecure=True))
    got = client.decrypt(server.infer(client.encrypt(x), kid))
    assert np.array_equal(got, a)
    assert_close_encrypted(got, _torch_out(model, x), prog.params, depth=prog.depth, factor=4.0)


def test_errors_say_what_would_fit():
    # too deep for n8192 and too wide for one ciphertext at n16384: says the levels and presets
    torch.manual_seed(3)
    deep = torch.nn.Sequential(pnn.Conv2d(1, 32, 3, padding=1), pnn.Square(), pnn.Conv2d(32, 32, 3, padding=1),
                               pnn.Square(), pnn.Flatten(), pnn.Linear(32 * 28 * 28, 2)).eval()
    _calibrated(deep, (1, 28, 28), 3)
    with pytest.raises(ShapeError, match="does not fit n8192") as e:
        fhe.compile(deep, (1, 28, 28), params="n8192", max_ciphertexts=4)
    assert "max_ciphertexts=4" in str(e.value) and "larger max_ciphertexts" in str(e.value)
    with pytest.raises(DepthExhaustedError):
        fhe.compile(deep, (1, 28, 28), params="n8192")
    # a batch or a summed-area-table input cannot be split
    with pytest.raises(ShapeError, match="batch=2"):
        fhe.compile(_wide_model(32), (1, 28, 28), params="auto", batch=2)


def test_a_lowering_without_groups_is_refused_clearly():
    class Half(torch.nn.Module):
        def forward(self, x):
            return x * 0.5

        def fhe_spec(self):
            return {"op": "half_it"}

    @fhe.register_lowering("half_it")
    class HalfLowering(fhe.Lowering):
        def depth(self, spec):
            return 1

        def plan(self, spec, ctx):
            return fhe.Lowered(1, [], ctx.layout, lambda be, ct: be.mul_plain(ct, 0.5), "x/2")

    try:
        torch.manual_seed(4)
        model = torch.nn.Sequential(pnn.Conv1d(1, 4, 3), Half(), pnn.Flatten(), pnn.Linear(4 * 14, 2)).eval()
        single = fhe.compile(model, (1, 16), params="n16384")  # one ciphertext: works as before
        assert not single.multi
        with pytest.raises(UnsupportedLayerError, match="does not support packing across several"):
            fhe.compile(model, (1, 16), params="n16384", channels_per_ciphertext=1)
    finally:
        fhe.unregister_lowering("half_it")


@pytest.mark.parametrize("nd", [1, 2])
def test_split_on_seal(nd):
    """Real encryption: a forced split (one channel per ciphertext) matches torch."""
    pytest.importorskip("tenseal")
    torch.manual_seed(5)
    conv = pnn.Conv1d if nd == 1 else pnn.Conv2d
    avg = pnn.AvgPool1d if nd == 1 else pnn.AvgPool2d
    shape = (2, 12) if nd == 1 else (2, 6, 6)
    feats = 3 * (6 if nd == 1 else 9)
    model = torch.nn.Sequential(conv(2, 3, 3, padding=1), pnn.Square(), avg(2), pnn.Flatten(),
                                pnn.Linear(feats, 2, method="bsgs")).eval()
    rng = _calibrated(model, shape, 5)
    prog = fhe.compile(model, shape, params="n8192", channels_per_ciphertext=1)
    assert prog.ciphertexts == 3 and len(prog.input_layouts) == 2
    x = rng.uniform(-1, 1, shape)
    got = _run(prog, prog.keygen(backend="seal"), x)
    assert_close_encrypted(got, _torch_out(model, x), prog.params, depth=prog.depth, factor=4.0)
