"""Compile-and-run equivalence: decrypted program output == torch forward of the same model."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings, target
from hypothesis import strategies as st

from privkit import fhe
from privkit import nn as pnn
from privkit.errors import (
    DepthExhaustedError,
    MissingKeyError,
    ParameterError,
    ShapeError,
    UnsupportedLayerError,
)
from privkit.fhe import KeySet
from privkit.testing import assert_close_encrypted


def _torch_out(model, x, shape):
    with torch.no_grad():
        return model.double()(torch.tensor(x, dtype=torch.float64).reshape(1, *shape)).numpy()[0]


def test_contract_example_runs_and_matches_torch():
    """The exact snippet of the issue's contract, on the simulator (SEAL in the slow test)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        pnn.Conv1d(1, 2, 5, stride=2, method="freq"), pnn.PolyReLU(degree=3),
        pnn.ApproxMaxPool1d(2), pnn.Flatten(), pnn.Linear(2 * 63, 2))
    pnn.calibrate(model, torch.randn(64, 1, 256))
    program = fhe.compile(model, input_shape=(1, 256), params="auto")
    keys = program.keygen(backend="sim")
    x = np.random.default_rng(0).standard_normal(256)
    out = program.run(keys.encrypt(x), keys.public_bundle(), allow_insecure=True)
    logits = program.decrypt_output(keys, out)
    assert logits.shape == (2,)
    expected = model(torch.tensor(x).view(1, 1, 256)).detach().numpy()[0]  # float64, as in the contract
    assert_close_encrypted(logits, expected, program.params, depth=program.depth)


@st.composite
def small_models(draw):
    """Random stacks of privkit layers within the depth budget of n32768."""
    length = draw(st.integers(24, 96))
    cin = draw(st.integers(1, 2))
    layers, c, n = [], cin, length
    blocks = draw(st.integers(1, 2))
    for _ in range(blocks):
        cout = draw(st.integers(1, 3))
        k = draw(st.integers(1, 5))
        s = draw(st.integers(1, 2))
        p = draw(st.integers(0, 1))
        if (n + 2 * p - k) // s + 1 < 4:
            break
        first = not layers
        layers.append(pnn.Conv1d(c, cout, k, stride=s, padding=p,
                                 method=draw(st.sampled_from(["spatial", "freq"])) if first and c == 1 else "spatial"))
        n = (n + 2 * p - k) // s + 1
        c = cout
        if draw(st.booleans()):
            layers.append(torch.nn.BatchNorm1d(c))
        layers.append(pnn.PolyReLU(degree=draw(st.sampled_from([2, 3, 5]))))
        pool = draw(st.sampled_from(["avg", "max", "none"]))
        if pool != "none" and n >= 4:
            layers.append(pnn.AvgPool1d(2) if pool == "avg" else pnn.ApproxMaxPool1d(2, degree=4))
            n = (n - 2) // 2 + 1
    layers += [pnn.Flatten(), pnn.Linear(c * n, draw(st.integers(1, 3)), method=draw(st.sampled_from(["diag", "dft"])))]
    seed = draw(st.integers(0, 10_000))
    torch.manual_seed(seed)
    model = torch.nn.Sequential(*layers)
    for m in model:
        if isinstance(m, torch.nn.BatchNorm1d):  # non-trivial folded statistics
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    model.eval()
    return model, (cin, length), seed


@given(case=small_models())
@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
def test_random_models_compile_and_match_torch_on_sim(case):
    model, shape, seed = case
    rng = np.random.default_rng(seed)
    pnn.calibrate(model, torch.tensor(rng.standard_normal((32, *shape)), dtype=torch.float32))
    try:
        program = fhe.compile(model, input_shape=shape, params="auto")
    except DepthExhaustedError:
        assume(False)
    keys = program.keygen(backend="sim")
    x = rng.standard_normal(shape) * 0.9
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = _torch_out(model, x, shape)
    got = program.decrypt_output(keys, program.run(program.encrypt_input(keys, x), keys.public_bundle(), allow_insecure=True))
    target(assert_close_encrypted(got, expected, program.params, depth=program.depth))


def test_batchnorm_is_folded_without_a_level():
    torch.manual_seed(1)
    model = torch.nn.Sequential(pnn.Conv1d(1, 2, 3), torch.nn.BatchNorm1d(2), pnn.Flatten(), pnn.Linear(2 * 14, 2))
    model[1].running_mean.fill_(0.3)
    model[1].running_var.fill_(2.0)
    model.eval()
    program = fhe.compile(model, input_shape=(1, 16), params="n8192")
    assert program.depth == 3  # conv 1 + linear 2: the batch norm costs nothing
    keys = program.keygen(backend="sim")
    x = np.linspace(-1, 1, 16)
    got = program.decrypt_output(keys, program.run(keys.encrypt(x), keys.public_bundle(), allow_insecure=True))
    assert_close_encrypted(got, _torch_out(model, x, (1, 16)), "n8192", depth=3)


def test_average_pool_scale_is_folded_forward():
    torch.manual_seed(2)
    model = torch.nn.Sequential(pnn.Conv1d(1, 1, 3), pnn.AvgPool1d(2), pnn.Flatten(), pnn.Linear(7, 1))
    program = fhe.compile(model, input_shape=(1, 16), params="n8192")
    assert [s.depth for s in program.steps] == [1, 0, 2]
    keys = program.keygen(backend="sim")
    x = np.linspace(-1, 1, 16)
    reps = program.trace(keys, x)
    assert all(r.max_abs_error is not None and r.max_abs_error < 1e-9 for r in reps)


@pytest.mark.seal
def test_seal_program_matches_torch_and_sim():
    torch.manual_seed(3)
    model = torch.nn.Sequential(pnn.Conv1d(1, 3, 4, stride=2), pnn.PolyReLU(degree=2), pnn.AvgPool1d(2),
                                pnn.Flatten(), pnn.Linear(3 * 14, 2))
    pnn.calibrate(model, torch.randn(32, 1, 60))
    program = fhe.compile(model, input_shape=(1, 60), params="auto")
    assert program.params.name == "n16384" and program.depth <= 8
    x = np.random.default_rng(3).standard_normal(60)
    expected = _torch_out(model, x, (1, 60))
    for backend in ("sim", "seal"):
        keys = program.keygen(backend=backend)
        assert keys.rotation_steps == frozenset(program.rotations)
        got = program.decrypt_output(keys, program.run(keys.encrypt(x), keys.public_bundle(), allow_insecure=True))
        assert_close_encrypted(got, expected, program.params, depth=program.depth)


# -- errors -----------------------------------------------------------------------------------


def test_unsupported_layers_are_listed_by_name():
    model = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Sequential(torch.nn.Linear(12, 2), torch.nn.Softmax(dim=1)))
    problems = pnn.check_fhe_compatible(model)
    names = {p.name for p in problems}
    assert {"0", "1", "2", "3.0", "3.1"} <= names
    with pytest.raises(UnsupportedLayerError, match="3.1 \\(Softmax\\)"):
        fhe.compile(model, input_shape=(1, 8))
    pnn.make_fhe_compatible(model)
    assert {p.name for p in pnn.check_fhe_compatible(model)} == {"3.1"}


def test_too_deep_model_names_the_layer():
    layers = [pnn.Conv1d(1, 1, 2)]
    for _ in range(4):
        layers += [pnn.PolyReLU(degree=7), pnn.ApproxMaxPool1d(2, method="sqrt", iterations=6)]
    model = torch.nn.Sequential(*layers, pnn.Flatten(), pnn.Linear(1, 1))
    pnn.calibrate(model, torch.randn(8, 1, 32))
    with pytest.raises(DepthExhaustedError) as ei:
        fhe.compile(model, input_shape=(1, 32), params="n16384")
    msg = str(ei.value)
    assert "layer '" in msg and "n16384" in msg and "PolyReLU degree" in msg
    assert ei.value.needed > ei.value.available == 8
    with pytest.raises(DepthExhaustedError, match="no preset is deep enough"):
        fhe.compile(model, input_shape=(1, 32), params="auto")


def test_uncalibrated_and_bad_shapes():
    model = torch.nn.Sequential(pnn.Conv1d(1, 1, 2), pnn.PolyReLU(), pnn.Flatten(), pnn.Linear(7, 1))
    with pytest.raises(ParameterError, match="calibrate"):
        fhe.compile(model, input_shape=(1, 8))
    pnn.calibrate(model, torch.randn(4, 1, 8))
    with pytest.raises(ShapeError):
        fhe.compile(model, input_shape=(1, 9))
    program = fhe.compile(model, input_shape=(1, 8))
    keys = program.keygen(backend="sim")
    with pytest.raises(ShapeError, match="expects input of shape"):
        program.encode_input(np.zeros(9))
    with pytest.raises(ShapeError):
        program.run(keys.encrypt(np.zeros(300)), keys.public_bundle(), allow_insecure=True)


def test_missing_keys_and_foreign_params_are_refused():
    model = torch.nn.Sequential(pnn.Conv1d(1, 2, 3), pnn.Flatten(), pnn.Linear(2 * 6, 2))
    program = fhe.compile(model, input_shape=(1, 8), params="n8192")
    bare = KeySet.generate("n8192", backend="sim", rotations=[])
    with pytest.raises(MissingKeyError, match="program.keygen"):
        program.run(bare.encrypt(np.zeros(8)), bare.public_bundle(), allow_insecure=True)
    other = KeySet.generate("n16384", backend="sim")
    from privkit.errors import KeyMismatchError

    with pytest.raises(KeyMismatchError, match="compiled for"):
        program.run(other.encrypt(np.zeros(8)), other.public_bundle(), allow_insecure=True)


def test_freq_conv_after_the_first_layer_is_refused_clearly():
    model = torch.nn.Sequential(pnn.Conv1d(1, 2, 3), pnn.Conv1d(2, 2, 3, method="freq"), pnn.Flatten(),
                                pnn.Linear(2 * 12, 1))
    with pytest.raises(UnsupportedLayerError, match="method='spatial'"):
        fhe.compile(model, input_shape=(1, 16))


def test_polyrelu_warns_beyond_its_calibrated_range():
    layer = pnn.PolyReLU(degree=3, bound=1.0).eval()
    with pytest.warns(RuntimeWarning, match="exceeds the calibrated bound"):
        layer(torch.tensor([2.0]))


def test_calibrate_sets_bounds_in_order():
    torch.manual_seed(0)
    model = torch.nn.Sequential(pnn.Conv1d(1, 2, 3), pnn.PolyReLU(degree=3), pnn.Conv1d(2, 2, 3),
                                pnn.PolyReLU(degree=3), pnn.Flatten(), pnn.Linear(2 * 12, 1))
    x = torch.randn(64, 1, 16)
    bounds = pnn.calibrate(model, x, margin=1.0)
    assert set(bounds) == {"1", "3"}
    with torch.no_grad():
        h = model[0](x)
        assert bounds["1"] == pytest.approx(float(h.abs().max()), rel=1e-6)
        h = model[2](model[1](h))
        assert bounds["3"] == pytest.approx(float(h.abs().max()), rel=1e-6)


@given(batch=st.integers(2, 4), seed=st.integers(0, 999))
@settings(max_examples=6, deadline=None)
def test_batched_program_runs_several_inputs_in_one_ciphertext(batch, seed):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(pnn.Conv1d(1, 2, 3, stride=2), pnn.PolyReLU(degree=3), pnn.AvgPool1d(2),
                                pnn.Conv1d(2, 2, 2), pnn.Flatten(), pnn.Linear(2 * 6, 3))
    pnn.calibrate(model, torch.randn(16, 1, 32))
    single = fhe.compile(model, input_shape=(1, 32), params="n16384")
    program = fhe.compile(model, input_shape=(1, 32), params="n16384", batch=batch)
    assert program.depth == single.depth
    keys = program.keygen(backend="sim")
    x = np.random.default_rng(seed).standard_normal((batch, 32))
    got = program.decrypt_output(keys, program.run(keys.encrypt(program.encode_input(x)), keys.public_bundle(), allow_insecure=True))
    assert got.shape == (batch, 3)
    expected = np.stack([_torch_out(model, row, (1, 32)) for row in x])
    assert_close_encrypted(got.ravel(), expected.ravel(), program.params, depth=program.depth)
    with pytest.raises(ShapeError):
        program.encode_input(x[:1])


def test_wide_relu_range_is_folded_into_the_conv_without_a_level():
    """A PolyReLU with a large bound costs no extra level: 1/B goes into the conv before it."""
    torch.manual_seed(5)
    model = torch.nn.Sequential(pnn.Conv1d(1, 2, 3), torch.nn.BatchNorm1d(2), pnn.PolyReLU(degree=3),
                                pnn.Flatten(), pnn.Linear(2 * 14, 2))
    model[1].running_var.fill_(0.01)  # activations ~10x larger than the input
    model.eval()
    pnn.calibrate(model, torch.randn(32, 1, 16))
    assert model[2].bound > 4
    program = fhe.compile(model, input_shape=(1, 16), params="n16384")
    assert [s.depth for s in program.steps] == [1, 2, 2]
    keys = program.keygen(backend="sim")
    x = np.linspace(-1, 1, 16)
    got = program.decrypt_output(keys, program.run(keys.encrypt(x), keys.public_bundle(), allow_insecure=True))
    assert_close_encrypted(got, _torch_out(model, x, (1, 16)), program.params, depth=program.depth)
    assert all(r.max_abs_error < 1e-9 for r in program.trace(keys, x) if r.max_abs_error is not None)


def test_unfolded_batchnorm_blocks_the_range_fold():
    torch.manual_seed(6)
    model = torch.nn.Sequential(pnn.Conv1d(1, 2, 3), torch.nn.Dropout(0.1), torch.nn.BatchNorm1d(2),
                                pnn.PolyReLU(degree=3), pnn.Flatten(), pnn.Linear(2 * 14, 2))
    model[2].running_var.fill_(0.01)
    model[2].running_mean.fill_(0.5)
    model.eval()
    pnn.calibrate(model, torch.randn(32, 1, 16))
    program = fhe.compile(model, input_shape=(1, 16), params="n16384")
    keys = program.keygen(backend="sim")
    x = np.linspace(-1, 1, 16)
    got = program.decrypt_output(keys, program.run(keys.encrypt(x), keys.public_bundle(), allow_insecure=True))
    assert_close_encrypted(got, _torch_out(model, x, (1, 16)), program.params, depth=program.depth)
