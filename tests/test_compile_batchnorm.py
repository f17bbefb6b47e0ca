"""BatchNorm in every compile strategy, with random shift (beta), weight, running mean and
variance: the compiled program on the noise-free simulator equals the float64 torch forward to
1e-9 relative (``assert_close_encrypted`` with the backend), and a folded BatchNorm costs no level.

Uses the public ``privkit.fhe.compile`` API only. A BatchNorm whose beta were dropped, whose
mean were ignored or whose variance were misread changes the output by far more than 1e-9
(each fixture checks that beta alone moves the output by more than 1e-2), so these tests catch it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings, target
from hypothesis import strategies as st

from privkit import fhe
from privkit import nn as pnn
from privkit.errors import DepthExhaustedError
from privkit.testing import assert_close_encrypted


def randomise_bn(bn: torch.nn.BatchNorm1d, rng: np.random.Generator) -> None:
    """Non-trivial statistics and affine parameters (signs of the weight too)."""
    c = bn.num_features
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(rng.uniform(0.5, 1.5, c) * rng.choice([-1.0, 1.0], c)))
        bn.bias.copy_(torch.tensor(rng.uniform(-1.0, 1.0, c)))
        bn.running_mean.copy_(torch.tensor(rng.uniform(-0.5, 0.5, c)))
        bn.running_var.copy_(torch.tensor(rng.uniform(0.3, 2.0, c)))
    # a visible shift: beta must matter for the output of every fixture
    with torch.no_grad():
        bn.bias.add_(torch.sign(bn.bias) * 0.25)


def _torch_out(model, x, shape):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.double()(torch.tensor(x, dtype=torch.float64).reshape(-1, *shape)).numpy()


def _cases():
    """name -> (builder(), input_shape, params, batch, folded). ``folded``: the BatchNorm must cost
    no level (compare the depth with the same model without it)."""
    return {
        "conv_spatial": (lambda: [pnn.Conv1d(1, 2, 3), torch.nn.BatchNorm1d(2), pnn.Flatten(),
                                  pnn.Linear(2 * 14, 2)], (1, 16), "n8192", 1, True),
        "conv_spatial_strided_padded_2ch": (
            lambda: [pnn.Conv1d(2, 3, 3, stride=2, padding=1), torch.nn.BatchNorm1d(3), pnn.Flatten(),
                     pnn.Linear(3 * 8, 2)], (2, 16), "n8192", 1, True),
        "conv_freq": (lambda: [pnn.Conv1d(1, 2, 5, stride=2, method="freq"), torch.nn.BatchNorm1d(2),
                               pnn.Flatten(), pnn.Linear(2 * 30, 2)], (1, 64), "n16384", 1, True),
        "linear_diag_then_bn": (lambda: [pnn.Conv1d(1, 2, 3), pnn.Flatten(), pnn.Linear(2 * 14, 4, method="diag"),
                                         torch.nn.BatchNorm1d(4)], (1, 16), "n8192", 1, True),
        "linear_dft_then_bn": (lambda: [pnn.Conv1d(1, 2, 3), pnn.Flatten(), pnn.Linear(2 * 14, 4, method="dft"),
                                        torch.nn.BatchNorm1d(4)], (1, 16), "n16384", 1, True),
        "bn_then_polyrelu_range_fold": (
            lambda: [pnn.Conv1d(1, 2, 3), torch.nn.BatchNorm1d(2), pnn.PolyReLU(degree=3), pnn.Flatten(),
                     pnn.Linear(2 * 14, 2)], (1, 16), "n16384", 1, True),
        "unfolded_affine_step": (
            lambda: [pnn.Conv1d(1, 2, 3), torch.nn.Dropout(0.1), torch.nn.BatchNorm1d(2), pnn.PolyReLU(degree=3),
                     pnn.Flatten(), pnn.Linear(2 * 14, 2)], (1, 16), "n16384", 1, False),
        "batched": (lambda: [pnn.Conv1d(1, 2, 3, stride=2), torch.nn.BatchNorm1d(2), pnn.PolyReLU(degree=3),
                             pnn.AvgPool1d(2), pnn.Flatten(), pnn.Linear(2 * 7, 3)], (1, 32), "n16384", 3, True),
    }


CASES = _cases()


def _build(name, seed=0):
    builder, shape, params, batch, folded = CASES[name]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    layers = builder()
    for m in layers:
        if isinstance(m, torch.nn.BatchNorm1d):
            randomise_bn(m, rng)
    model = torch.nn.Sequential(*layers).eval()
    pnn.calibrate(model, torch.tensor(rng.standard_normal((32, *shape)), dtype=torch.float32))
    return model, shape, params, batch, folded, rng


def _run_sim(program, x):
    keys = program.keygen(backend="sim")
    ct = keys.encrypt(program.encode_input(x)) if x.ndim > 1 and x.shape[0] > 1 else program.encrypt_input(keys, x)
    return keys, program.decrypt_output(keys, program.run(ct, keys.public_bundle(), allow_insecure=True))


@pytest.mark.parametrize("name", sorted(CASES))
def test_batchnorm_with_random_beta_matches_torch_in_every_strategy(name):
    model, shape, params, batch, folded, rng = _build(name)
    program = fhe.compile(model, input_shape=shape, params=params, batch=batch)
    x = rng.standard_normal((batch, *shape) if batch > 1 else shape) * 0.9
    keys, got = _run_sim(program, x)
    expected = _torch_out(model, x, shape)
    expected = expected if batch > 1 else expected[0]
    assert got.shape == expected.shape
    assert_close_encrypted(got.ravel(), expected.ravel(), keys, what=f"{name}: compiled BatchNorm model")
    # the fixture is meaningful: the shift alone moves the output well beyond the tolerance
    no_beta = _clone_without_beta(model)
    moved = _torch_out(no_beta, x, shape)
    assert np.abs(moved.ravel() - expected.ravel()).max() > 1e-2, "beta does not reach the output"
    if folded:  # folding costs nothing: same depth as the model without the BatchNorm
        bare = torch.nn.Sequential(*[m for m in model if not isinstance(m, torch.nn.BatchNorm1d)]).eval()
        pnn.calibrate(bare, torch.tensor(rng.standard_normal((32, *shape)), dtype=torch.float32))
        assert program.depth == fhe.compile(bare, input_shape=shape, params=params, batch=batch).depth


def _clone_without_beta(model):
    import copy

    m = copy.deepcopy(model)
    for layer in m:
        if isinstance(layer, torch.nn.BatchNorm1d):
            with torch.no_grad():
                layer.bias.zero_()
    return m


def test_trace_of_a_folded_batchnorm_equals_each_layer():
    """Per-step trace errors against the plaintext twins stay at float rounding (1e-9)."""
    model, shape, params, _, _, rng = _build("bn_then_polyrelu_range_fold", seed=3)
    program = fhe.compile(model, input_shape=shape, params=params)
    keys = program.keygen(backend="sim")
    reps = program.trace(keys, rng.standard_normal(shape))
    errs = [r.max_abs_error for r in reps if r.max_abs_error is not None]
    assert errs and max(errs) < 1e-9


# -- random models with BatchNorm and PolyReLU: compiled == torch to 1e-9 on the simulator --------


@st.composite
def bn_models(draw):
    length = draw(st.integers(16, 48))
    cin = draw(st.integers(1, 2))
    layers, c, n = [], cin, length
    for i in range(draw(st.integers(1, 2))):
        cout = draw(st.integers(1, 3))
        k = draw(st.integers(1, 4))
        s = draw(st.integers(1, 2))
        p = draw(st.integers(0, 1))
        if (n + 2 * p - k) // s + 1 < 4:
            break
        method = draw(st.sampled_from(["spatial", "freq"])) if i == 0 and c == 1 else "spatial"
        layers.append(pnn.Conv1d(c, cout, k, stride=s, padding=p, method=method))
        n, c = (n + 2 * p - k) // s + 1, cout
        if draw(st.booleans()):
            layers.append(torch.nn.BatchNorm1d(c))
        layers.append(pnn.PolyReLU(degree=draw(st.sampled_from([2, 3, 5]))))
        if draw(st.booleans()) and n >= 4:
            layers.append(pnn.AvgPool1d(2))
            n = (n - 2) // 2 + 1
    outs = draw(st.integers(1, 3))
    layers += [pnn.Flatten(), pnn.Linear(c * n, outs, method=draw(st.sampled_from(["diag", "dft"])))]
    if draw(st.booleans()):
        layers.append(torch.nn.BatchNorm1d(outs))
    seed = draw(st.integers(0, 10_000))
    return layers, (cin, length), seed


@given(case=bn_models())
@settings(max_examples=10, suppress_health_check=[HealthCheck.too_slow])
def test_random_bn_relu_models_match_torch_to_1e9_on_sim(case):
    """Catches any coefficient, fold or scale error of the compiled layers (PolyReLU coefficients
    0.1% off, a BatchNorm shift dropped) that the CKKS tolerance of SEAL would hide."""
    layers, shape, seed = case
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    for m in layers:
        if isinstance(m, torch.nn.BatchNorm1d):
            randomise_bn(m, rng)
    model = torch.nn.Sequential(*layers).eval()
    pnn.calibrate(model, torch.tensor(rng.standard_normal((32, *shape)), dtype=torch.float32))
    try:
        program = fhe.compile(model, input_shape=shape, params="auto")
    except DepthExhaustedError:
        assume(False)
    x = rng.standard_normal(shape) * 0.9
    keys, got = _run_sim(program, x)
    target(assert_close_encrypted(got, _torch_out(model, x, shape)[0], keys))


@pytest.mark.parametrize("degree", [3, 5])
def test_wide_range_polyrelu_prefolded_into_the_conv_matches_torch(degree):
    """A PolyReLU whose range is wide enough that the compiler divides its input by the range
    inside the conv before (the unit-interval coefficients then run): still torch's twin to 1e-9
    (a 0.1% error of those coefficients fails here)."""
    torch.manual_seed(degree)
    model = torch.nn.Sequential(pnn.Conv1d(1, 2, 3), pnn.PolyReLU(degree=degree), pnn.Flatten(),
                                pnn.Linear(2 * 14, 2)).eval()
    rng = np.random.default_rng(degree)
    pnn.calibrate(model, torch.tensor(rng.standard_normal((32, 1, 16)) * 20, dtype=torch.float32))
    assert model[1].bound > 4  # wide: the prefold path
    program = fhe.compile(model, input_shape=(1, 16), params="auto")
    assert any("pre-divided" in s.detail for s in program.steps)
    x = rng.standard_normal((1, 16)) * 15
    keys, got = _run_sim(program, x)
    assert_close_encrypted(got, _torch_out(model, x, (1, 16))[0], keys)
