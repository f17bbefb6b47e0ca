"""The lowering registry and N-D encrypted CNNs: compiled programs == torch forward.

Property tests draw random stacks of the 2-D / 3-D layers (channels 1-4, kernels 1-3, strides
1-3, padding 0-1, 1-3 conv blocks, BatchNorm folds, Square / PolyAct / PolyReLU, average and
max pools) and compare the decrypted program output with the float64 torch forward on the
simulator; a small SEAL subset uses real encryption. ``PROPERTY_TESTS`` maps every registered
lowering kind to the test that covers it: a kind registered without one fails the contract test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cnn_models import build_stack as _build
from cnn_models import torch_forward as _torch_out
from hypothesis import HealthCheck, assume, given, settings, target
from hypothesis import strategies as st
from strategies import cnn_stacks, poly_act_coeffs

from privkit import fhe
from privkit import nn as pnn
from privkit.errors import DepthExhaustedError, ShapeError, UnsupportedLayerError
from privkit.testing import assert_close_encrypted

#: lowering kind -> "module::test" that checks it against its torch forward
PROPERTY_TESTS = {
    "conv1d": "test_compile::test_random_models_compile_and_match_torch_on_sim",
    "conv2d": "test_compile_nd::test_random_2d_stacks_match_torch_on_sim",
    "conv3d": "test_compile_nd::test_random_3d_stacks_match_torch_on_sim",
    "linear": "test_compile::test_random_models_compile_and_match_torch_on_sim",
    "flatten": "test_compile_nd::test_random_2d_stacks_match_torch_on_sim",
    "identity": "test_compile::test_unfolded_batchnorm_blocks_the_range_fold",
    "batchnorm": "test_compile_nd::test_batchnorm_2d_folded_with_shift_and_unfolded",
    "relu": "test_compile_nd::test_random_2d_stacks_match_torch_on_sim",
    "polyact": "test_compile_nd::test_polyact_any_coefficients_match_torch",
    "avgpool1d": "test_compile::test_random_models_compile_and_match_torch_on_sim",
    "avgpool2d": "test_compile_nd::test_random_2d_stacks_match_torch_on_sim",
    "avgpool3d": "test_compile_nd::test_random_3d_stacks_match_torch_on_sim",
    "maxpool1d": "test_compile::test_random_models_compile_and_match_torch_on_sim",
    "maxpool2d": "test_compile_nd::test_maxpool2d_matches_torch",
    "box_conv1d": "test_compile_nd::test_box_conv_matches_torch",
    "box_conv2d": "test_compile_nd::test_box_conv_matches_torch",
    "box_conv3d": "test_compile_nd::test_box_conv_matches_torch",
    "globalavgpool1d": "test_compile_nd::test_global_avg_pool_1d_matches_torch",
}


def test_every_registered_lowering_has_a_property_test():
    import importlib

    kinds = set(fhe.registered_lowerings())
    missing = sorted(kinds - set(PROPERTY_TESTS))
    assert not missing, f"registered lowerings without a property test: {missing} (add them to PROPERTY_TESTS)"
    for kind, ref in PROPERTY_TESTS.items():
        mod, name = ref.split("::")
        assert callable(getattr(importlib.import_module(mod), name, None)), f"{kind}: {ref} does not exist"


#: one small instance of every registered privkit layer: ``register_layer`` enrols a class in the
#: contract below, and a registered class without an entry here fails it
LAYER_EXAMPLES = {
    "Conv1d": lambda: pnn.Conv1d(1, 2, 3),
    "Conv2d": lambda: pnn.Conv2d(1, 2, 3),
    "Conv3d": lambda: pnn.Conv3d(1, 2, 3),
    "Linear": lambda: pnn.Linear(4, 2),
    "AvgPool1d": lambda: pnn.AvgPool1d(2),
    "AvgPool2d": lambda: pnn.AvgPool2d(2),
    "AvgPool3d": lambda: pnn.AvgPool3d(2),
    "GlobalAvgPool1d": lambda: pnn.GlobalAvgPool1d(),
    "Flatten": lambda: pnn.Flatten(),
    "PolyAct": lambda: pnn.PolyAct([0.0, 1.0, 0.5]),
    "Square": lambda: pnn.Square(),
    "PolyReLU": lambda: pnn.PolyReLU(bound=2.0),
    "ApproxMaxPool1d": lambda: pnn.ApproxMaxPool1d(2, bound=2.0),
    "ApproxMaxPool2d": lambda: pnn.ApproxMaxPool2d(2, bound=2.0),
}


def test_every_registered_layer_lowers_to_a_property_tested_kind():
    """The layer contract: every class enrolled with ``privkit.nn.register_layer`` passes the
    validator, and its ``fhe_spec()`` names a registered lowering whose property test
    (``PROPERTY_TESTS``) compares the compiled program with the torch forward."""
    registered = pnn.registered_layers()
    missing = sorted(set(registered) - set(LAYER_EXAMPLES))
    assert not missing, f"registered layers without an example: {missing} (add them to LAYER_EXAMPLES)"
    kinds = set(fhe.registered_lowerings())
    for name, cls in registered.items():
        layer = LAYER_EXAMPLES[name]()
        assert type(layer) is cls, name
        kind = layer.fhe_spec()["op"]
        assert kind in kinds, f"{name}: fhe_spec() kind {kind!r} has no registered lowering"
        assert kind in PROPERTY_TESTS, f"{name}: kind {kind!r} has no property test"
        assert pnn.check_fhe_compatible(torch.nn.Sequential(layer)) == [], name



def _compile_run(model, shape, seed, params="auto", backend="sim", batch=1, skip_deep=False, input_sat=False):
    rng = np.random.default_rng(seed)
    pnn.calibrate(model, torch.tensor(rng.uniform(-1, 1, (16, *shape)), dtype=torch.float32))
    try:
        program = fhe.compile(model, input_shape=shape, params=params, batch=batch, input_sat=input_sat)
    except DepthExhaustedError:
        if not skip_deep:
            raise
        assume(False)
    except ShapeError as e:  # a drawn model too large for every preset (one ciphertext)
        if not skip_deep or "does not fit any preset" not in str(e):
            raise
        assume(False)
    keys = program.keygen(backend=backend)
    x = rng.uniform(-1, 1, shape if batch == 1 else (batch, *shape)) * 0.9
    got = program.decrypt_output(keys, program.run(program.encrypt_input(keys, x), keys.public_bundle(), allow_insecure=backend == "sim"))
    return program, x, got


def _check(model, shape, seed, **kw):
    program, x, got = _compile_run(model, shape, seed, **kw)
    expected = _torch_out(model, x) if kw.get("batch", 1) == 1 else np.stack([_torch_out(model, xi) for xi in x])
    return program, assert_close_encrypted(got, expected, program.params, depth=program.depth, factor=4.0)


@given(case=cnn_stacks(nd=2))
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_2d_stacks_match_torch_on_sim(case):
    plan, shape, seed = case
    model = _build(plan, 2, seed)
    target(_check(model, shape, seed, skip_deep=True)[1])


@given(case=cnn_stacks(nd=3, max_blocks=2, max_channels=2))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_3d_stacks_match_torch_on_sim(case):
    plan, shape, seed = case
    model = _build(plan, 3, seed)
    target(_check(model, shape, seed, skip_deep=True)[1])


@given(coeffs=poly_act_coeffs(1, 4, channels=3), per_channel=st.booleans(),
       where=st.sampled_from(["after_conv", "first", "after_linear"]), seed=st.integers(0, 999))
@settings(deadline=None)
def test_polyact_any_coefficients_match_torch(coeffs, per_channel, where, seed):
    """Random coefficients of both signs, degrees 1-4, per layer or per channel; folded into the
    conv / linear before it, or evaluated on its own (first layer)."""
    torch.manual_seed(seed)
    c = coeffs if per_channel else coeffs[:1]
    if where == "after_linear":
        act = pnn.PolyAct(coeffs=c if not per_channel else c, per_channel=per_channel,
                          channels=3 if per_channel else None)
        model = torch.nn.Sequential(pnn.Conv2d(1, 2, 3, stride=2), pnn.Flatten(), pnn.Linear(2 * 9, 3), act,
                                    pnn.Linear(3, 2))
        shape = (1, 7, 7)
    elif where == "first":
        act = pnn.PolyAct(coeffs=c, per_channel=per_channel, channels=3 if per_channel else None)
        model = torch.nn.Sequential(act, pnn.Conv2d(3, 2, 2), pnn.Flatten(), pnn.Linear(2 * 16, 2))
        shape = (3, 5, 5)
    else:
        act = pnn.PolyAct(coeffs=c, per_channel=per_channel, channels=3 if per_channel else None)
        model = torch.nn.Sequential(pnn.Conv2d(2, 3, 3, padding=1), act, pnn.Flatten(), pnn.Linear(3 * 25, 2))
        shape = (2, 5, 5)
    program, err = _check(model.eval(), shape, seed)
    step = next(s for s in program.steps if s.kind == "polyact")
    d = len(c[0]) - 1
    if where != "first":  # folded into the layer before: minimum depth
        assert step.depth == {1: 0, 2: 1, 3: 2, 4: 3}[d], program.plan_table()
    assert step.depth == act.depth or where != "first"
    target(err)


def test_square_after_conv_costs_one_level_and_tenseal_tutorial_model_runs():
    """TenSEAL's tutorial CNN (Conv2d(1,4,k7,s3) -> x^2 -> Linear(256,64) -> x^2 -> Linear(64,10))."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(pnn.Conv2d(1, 4, 7, stride=3), pnn.Square(), pnn.Flatten(), pnn.Linear(256, 64),
                                pnn.Square(), pnn.Linear(64, 10)).eval()
    program, x, got = _compile_run(model, (1, 28, 28), 0, batch=2)
    assert program.depth == 7 and program.params.name == "n16384"
    assert [s.depth for s in program.steps] == [1, 1, 2, 1, 2]
    assert got.shape == (2, 10)
    expected = np.stack([_torch_out(model, xi) for xi in x])
    assert_close_encrypted(got, expected, program.params, depth=program.depth)


def test_batchnorm_2d_folded_with_shift_and_unfolded():
    torch.manual_seed(4)
    bn = torch.nn.BatchNorm2d(2)
    bn.running_mean.fill_(0.3)
    bn.running_var.fill_(2.0)
    bn.weight.data.fill_(1.5)
    bn.bias.data.fill_(-0.7)  # beta: a fold that forgot the shift fails here
    model = torch.nn.Sequential(pnn.Conv2d(1, 2, 3), bn, pnn.Flatten(), pnn.Linear(2 * 16, 2)).eval()
    program, err = _check(model, (1, 6, 6), 4)
    assert program.depth == 3  # the batch norm costs nothing
    bn2 = torch.nn.BatchNorm2d(1)
    bn2.running_mean.fill_(-0.2)
    bn2.bias.data.fill_(0.4)
    model = torch.nn.Sequential(bn2, pnn.Conv2d(1, 2, 3), pnn.Flatten(), pnn.Linear(2 * 16, 2)).eval()
    program, err = _check(model, (1, 6, 6), 5)
    assert [s.kind for s in program.steps][0] == "batchnorm" and program.depth == 4


@given(k=st.integers(2, 3), s=st.integers(1, 2), side=st.integers(5, 9), seed=st.integers(0, 999))
@settings(max_examples=4, deadline=None)
def test_maxpool2d_matches_torch(k, s, side, seed):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(pnn.Conv2d(1, 2, 2), pnn.ApproxMaxPool2d(k, s, degree=4), pnn.Flatten(),
                                pnn.Linear(2 * ((side - 1 - k) // s + 1) ** 2, 2)).eval()
    target(_check(model, (1, side, side), seed)[1])


def test_trace_reports_per_layer_errors_with_folded_scalings():
    torch.manual_seed(7)
    model = torch.nn.Sequential(pnn.Conv2d(1, 2, 3, padding=1), pnn.PolyAct(coeffs=[0.1, -0.5, -0.8]),
                                pnn.AvgPool2d(2), pnn.Flatten(), pnn.Linear(2 * 9, 2)).eval()
    program = fhe.compile(model, input_shape=(1, 6, 6), params="n16384")
    keys = program.keygen(backend="sim")
    reps = program.trace(keys, np.random.default_rng(0).uniform(-1, 1, (1, 6, 6)))
    errs = [r.max_abs_error for r in reps]
    assert all(e is not None and e < 1e-4 for e in errs), program.report()  # CKKS noise of the sim


@given(nd=st.sampled_from([1, 2, 2, 3]), cin=st.integers(1, 3), cout=st.integers(1, 3), k=st.integers(1, 4),
       s=st.integers(1, 2), p=st.integers(0, 1), side=st.integers(4, 9), bn=st.booleans(),
       act=st.sampled_from(["square", "polyact", "none"]), batch=st.integers(1, 2), input_sat=st.booleans(),
       seed=st.integers(0, 999))
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_box_conv_matches_torch(nd, cin, cout, k, s, p, side, bn, act, batch, input_sat, seed):
    """BoxConv1d/2d/3d (boxes fitted to a random conv, some inexact) through the summed-area table
    (server-side, or the client's with ``input_sat``), with a folded BatchNorm / activation scale
    and several inputs per ciphertext."""
    if nd == 3:
        side, k, cin, cout, batch = min(side, 5), min(k, 3), min(cin, 2), min(cout, 2), 1
    assume(side + 2 * p >= k)
    torch.manual_seed(seed)
    conv = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[nd](cin, cout, k, stride=s, padding=p)
    box = {1: pnn.BoxConv1d, 2: pnn.BoxConv2d, 3: pnn.BoxConv3d}[nd].from_conv(conv, max_boxes=4)
    layers = [box]
    if bn:
        norm = {1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm2d, 3: torch.nn.BatchNorm3d}[nd](cout)
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.bias.data.uniform_(-0.5, 0.5)
        layers.append(norm)
    if act == "square":
        layers.append(pnn.Square())
    elif act == "polyact":
        layers.append(pnn.PolyAct(coeffs=[0.2, -0.4, 0.7]))
    n_out = (side + 2 * p - k) // s + 1
    layers += [pnn.Flatten(), pnn.Linear(cout * n_out ** nd, 2)]
    model = torch.nn.Sequential(*layers).eval()
    program, x, got = _compile_run(model, (cin,) + (side,) * nd, seed, batch=batch, skip_deep=True,
                                   input_sat=input_sat)
    assert program.client_info()["input_encoding"] == ("sat" if input_sat else "values")
    step = program.steps[0]
    assert step.kind == f"box_conv{nd}d" and step.depth == box_depth(box)
    assert [s.depth for s in program.steps[1:]][:1] == ([1] if act != "none" else [2])  # folds: no extra level
    expected = _torch_out(model, x) if batch == 1 else np.stack([_torch_out(model, xi) for xi in x])
    target(assert_close_encrypted(got, expected, program.params, depth=program.depth, factor=4.0))


def box_depth(box):
    from privkit.fhe.ops.sat import conv_sat_depth

    return conv_sat_depth(box.boxsets()) + 1


@given(ch=st.integers(1, 3), side=st.integers(2, 6), gap=st.integers(1, 3), outs=st.integers(1, 40),
       seed=st.integers(0, 999))
@settings(deadline=None)
def test_linear_bsgs_matches_numpy_and_ref(ch, side, gap, outs, seed):
    """The hybrid-diagonal FC on a gapped 2-D layout with dirty non-element slots."""
    from privkit.fhe import KeySet
    from privkit.fhe.ops import packed, packed_fc

    rng = np.random.default_rng(seed)
    lay = packed.PackedLayout.grid(ch, (side, side), (side * gap * 2, gap), 0)
    keys = KeySet.generate("n8192", backend="sim", rotations=packed_fc.linear_bsgs_rotations(outs, lay, 4096))
    x = rng.uniform(-1, 1, (ch, side * side))
    vec = packed.pack(x, lay, 4096)
    junk = rng.uniform(-5, 5, 4096)
    junk[packed.valid_slots(lay)] = 0
    w, b = rng.uniform(-1, 1, (outs, ch * side * side)), rng.uniform(-1, 1, outs)
    ct = packed_fc.linear_bsgs(keys.backend, keys.encrypt(vec + junk), w, b, lay)
    assert ct.level == keys.encrypt(vec).level - 1  # one level
    want = w @ x.ravel() + b
    got = keys.decrypt(ct)
    np.testing.assert_allclose(packed_fc.linear_bsgs_ref(vec + junk, w, b, lay)[:outs].real, want, atol=1e-9)
    target(assert_close_encrypted(got, want, "n8192", depth=1))


# -- registry and errors ------------------------------------------------------------------------


def test_user_registered_lowering_compiles_and_runs():
    class Double(torch.nn.Module):
        def forward(self, x):
            return 2 * x

        def fhe_spec(self):
            return {"op": "test_double"}

    @fhe.register_lowering("test_double")
    class DoubleLowering(fhe.Lowering):
        def depth(self, spec):
            return 1

        def plan(self, spec, ctx):
            return fhe.Lowered(1, [], ctx.layout, lambda be, ct: be.mul_plain(ct, 2.0), "x2")

    try:
        model = torch.nn.Sequential(pnn.Conv2d(1, 1, 2), Double(), pnn.Flatten(), pnn.Linear(9, 2)).eval()
        _check(model, (1, 4, 4), 1)
    finally:
        fhe.unregister_lowering("test_double")
    with pytest.raises(UnsupportedLayerError, match="test_double"):
        fhe.compile(model, input_shape=(1, 4, 4))


def test_layer_without_lowering_names_it_and_lists_the_kinds():
    class Odd(torch.nn.Module):
        def forward(self, x):
            return x

        def fhe_spec(self):
            return {"op": "odd_kind"}

    from privkit.fhe.compiler.core import _items

    with pytest.raises(UnsupportedLayerError, match=r"1 \(Odd\).*odd_kind.*conv2d.*polyact"):
        _items([("0", pnn.Conv2d(1, 1, 2)), ("1", Odd())])
    with pytest.raises(UnsupportedLayerError, match="Odd"):
        fhe.compile(torch.nn.Sequential(pnn.Conv2d(1, 1, 2), Odd(), pnn.Flatten(), pnn.Linear(9, 1)),
                    input_shape=(1, 4, 4))


def test_input_sat_needs_a_first_box_conv():
    from privkit.errors import ParameterError

    model = torch.nn.Sequential(pnn.Conv2d(1, 1, 2), pnn.Flatten(), pnn.Linear(9, 1)).eval()
    with pytest.raises(ParameterError, match="BoxConv"):
        fhe.compile(model, input_shape=(1, 4, 4), input_sat=True)


def test_too_deep_2d_model_names_the_layer_and_what_fits():
    layers = [pnn.Conv2d(1, 1, 2)]
    for _ in range(5):
        layers += [pnn.PolyAct(coeffs=[0.1, 0.2, 0.3, 0.4]), pnn.AvgPool2d(1)]
    model = torch.nn.Sequential(*layers, pnn.Flatten(), pnn.Linear(9, 1)).eval()
    with pytest.raises(DepthExhaustedError) as ei:
        fhe.compile(model, input_shape=(1, 4, 4), params="n16384")
    msg = str(ei.value)
    assert "layer '" in msg and "n16384" in msg and "n32768" in msg


def test_make_fhe_compatible_maps_2d_and_3d_layers():
    torch.manual_seed(9)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.BatchNorm2d(2), torch.nn.ReLU(),
                                torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(2 * 9, 2)).eval()
    model[1].running_mean.fill_(0.2)
    x = torch.rand(1, 1, 6, 6)
    plain = torch.nn.Sequential(*[torch.nn.Identity() if i == 2 else m for i, m in enumerate(model)])
    before = plain(x).detach().clone()  # the torch model without its ReLU
    pnn.make_fhe_compatible(model)
    assert isinstance(model[0], pnn.Conv2d) and isinstance(model[3], pnn.AvgPool2d)
    assert isinstance(model[2], pnn.PolyReLU) and isinstance(model[5], pnn.Linear)
    assert pnn.check_fhe_compatible(model) == []
    model[2] = torch.nn.Identity()  # the rest keeps the trained weights exactly
    torch.testing.assert_close(model(x), before)
    m3 = pnn.make_fhe_compatible(torch.nn.Sequential(torch.nn.Conv3d(1, 1, 2), torch.nn.AvgPool3d(2),
                                                     torch.nn.MaxPool2d(2)))
    assert isinstance(m3[0], pnn.Conv3d) and isinstance(m3[1], pnn.AvgPool3d)
    assert isinstance(m3[2], pnn.ApproxMaxPool2d)
    _check(model, (1, 6, 6), 9)


def test_layer_depths_come_from_the_registry():
    assert pnn.Square().depth == 1
    assert pnn.PolyAct(coeffs=[0, 1, 2, 3]).depth == 2
    assert pnn.PolyAct(coeffs=[0, 1, 2, 3, 4]).depth == 3
    assert "depth=1" in repr(pnn.Conv2d(1, 1, 2))
    assert "depth=2" in repr(pnn.Linear(2, 2))


@pytest.mark.seal
def test_seal_2d_program_matches_torch():
    """Real encryption: a padded 2-D conv, per-channel PolyAct folded into it, average pool."""
    torch.manual_seed(8)
    model = torch.nn.Sequential(pnn.Conv2d(1, 2, 3, padding=1, stride=2), pnn.PolyAct(
        coeffs=[[0.1, 0.5, 0.3], [0.0, -0.2, 0.6]], per_channel=True, channels=2), pnn.AvgPool2d(2),
        pnn.Flatten(), pnn.Linear(2 * 4, 3)).eval()
    program, err = _check(model, (1, 9, 9), 8, params="n16384", backend="seal")
    assert program.depth == 4  # conv 1, the quadratic 1 (folded), pool 0, linear 2


@pytest.mark.seal
def test_seal_box_conv_program_matches_torch():
    """Real encryption: a BoxConv2d (summed-area table) with a folded Square, as a first layer."""
    torch.manual_seed(10)
    box = pnn.BoxConv2d.from_conv(torch.nn.Conv2d(1, 2, 3, padding=1), max_boxes=3)
    model = torch.nn.Sequential(box, pnn.Square(), pnn.Flatten(), pnn.Linear(2 * 36, 2)).eval()
    program, err = _check(model, (1, 6, 6), 10, params="n16384", backend="seal")  # server-side SAT
    assert [s.kind for s in program.steps] == ["box_conv2d", "polyact", "linear"]


def test_learnable_per_channel_polyact_trains_and_compiles():
    torch.manual_seed(11)
    act = pnn.PolyAct(degree=2, learnable=True, per_channel=True, channels=2)
    model = torch.nn.Sequential(pnn.Conv2d(1, 2, 3), act, pnn.Flatten(), pnn.Linear(2 * 16, 2))
    before = act.coeffs.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 2, (8,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    assert act.coeffs.grad is not None and not torch.equal(act.coeffs.detach(), before)
    program, err = _check(model.eval(), (1, 6, 6), 11)
    assert next(s for s in program.steps if s.kind == "polyact").depth == 1


@given(length=st.integers(4, 70), cin=st.integers(1, 3), cout=st.integers(1, 4), k=st.integers(1, 4),
       stride=st.integers(1, 3), head=st.sampled_from(["linear", "square"]), batch=st.sampled_from([1, 2]),
       seed=st.integers(0, 999))
@settings(deadline=None)
def test_global_avg_pool_1d_matches_torch(length, cin, cout, k, stride, head, batch, seed):
    """Mean over the length axis by a logarithmic rotate-and-sum on the gapped layout (any
    length, not only powers of two); the 1/L folded into the next linear layer (0 levels), or
    one scalar product (1 level) when a non-affine layer (a square) comes next."""
    assume((length - k) // stride + 1 >= 1)
    torch.manual_seed(seed)
    layers = [pnn.Conv1d(cin, cout, k, stride=stride),
              pnn.PolyAct(degree=2, learnable=True, per_channel=True, channels=cout), pnn.GlobalAvgPool1d()]
    if head == "square":
        layers.append(pnn.Square())
    model = torch.nn.Sequential(*layers, pnn.Flatten(), pnn.Linear(cout, 2)).eval()
    program, err = _check(model, (cin, length), seed, batch=batch)
    step = next(s for s in program.steps if s.kind == "globalavgpool1d")
    assert step.depth == (0 if head == "linear" else 1), program.plan_table()
    n = (length - k) // stride + 1
    assert len(step.rotations) <= 2 * max(1, n).bit_length()
    target(err)


def test_global_avg_pool_window_sum_plan_covers_every_element():
    from privkit.fhe.compiler.rules.pool import window_sum_plan

    for n in range(1, 130):
        doublings, offsets = window_sum_plan(n)
        covered = []
        for i, off in enumerate(offsets):
            if off >= 0:
                covered += list(range(off, off + 2**i))
        assert sorted(covered) == list(range(n)), n


def test_global_avg_pool_folds_into_a_conv_and_torch_adaptive_pool_maps():
    torch.manual_seed(3)
    model = torch.nn.Sequential(pnn.Conv1d(1, 2, 3), pnn.GlobalAvgPool1d(), pnn.Conv1d(2, 2, 1),
                                pnn.Flatten(), pnn.Linear(2, 2)).eval()
    program, err = _check(model, (1, 12), 3)
    # a conv is affine too: the 1/L folds into it; make_fhe_compatible maps AdaptiveAvgPool1d(1)
    assert next(s for s in program.steps if s.kind == "globalavgpool1d").depth == 0
    tm = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten(),
                             torch.nn.Linear(2, 2))
    pnn.make_fhe_compatible(tm)
    assert isinstance(tm[1], pnn.GlobalAvgPool1d)
    with pytest.raises(ShapeError, match="does not accept"):  # 2-D data: torch refuses it first
        fhe.compile(torch.nn.Sequential(pnn.Conv2d(1, 1, 2), pnn.GlobalAvgPool1d(), pnn.Flatten(),
                                        pnn.Linear(1, 2)), input_shape=(1, 4, 4))


@given(k=st.integers(1, 40), cin=st.integers(1, 3), cout=st.integers(1, 4), stride=st.integers(1, 8),
       pad=st.integers(0, 2), seed=st.integers(0, 999))
@settings(deadline=None)
def test_long_1d_kernels_use_baby_giant_taps_and_match_torch(k, cin, cout, stride, pad, seed):
    """A 1-D kernel of k taps is split into baby and giant rotations when that rotates less
    (k=32 on one input channel: 10 rotations instead of 31); same result as torch."""
    from privkit.fhe.ops.packed import _split_1d

    length = k + 3 * stride + 5
    torch.manual_seed(seed)
    model = torch.nn.Sequential(pnn.Conv1d(cin, cout, k, stride=stride, padding=pad), pnn.Flatten(),
                                pnn.Linear(cout * ((length + 2 * pad - k) // stride + 1), 2)).eval()
    program, err = _check(model, (cin, length), seed)
    n_deltas = 1 if cin == 1 and cout > 1 else cin + cout - 1
    nb = _split_1d(k, n_deltas)
    if nb is not None:  # cheaper than one rotation per tap
        assert 3 * (nb - 1 + n_deltas * -(-k // nb) - 1) < 2 * (k - 1 + n_deltas - 1)
    target(err)


def test_first_apnea_conv_rotations_drop_with_baby_giant_taps():
    from privkit.fhe.ops.packed import PackedLayout, conv_packed_rotations

    lay = PackedLayout(1, 1408, 1, 2048, clean=True)
    # 1 -> 4 channels, k=32: 7 baby + 3 giant steps + 2 to replicate the input (was 31 + 2)
    assert len(conv_packed_rotations((4, 1, 32), lay, 8, 0, 8192)) == 12
