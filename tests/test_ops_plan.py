"""The depth planner agrees with the operators (levels they really consume) and explains where a
chain runs out of levels and what would fit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privkit.errors import DepthExhaustedError, ParameterError
from privkit.fhe import CKKSParams, KeySet
from privkit.fhe.ops import plan as PN
from privkit.fhe.ops import poly as P
from privkit.fhe.ops import pool as PL

P32 = CKKSParams.preset("n32768")

_SPECS = st.one_of(
    st.builds(lambda b, s: PN.OpSpec.of("relu_composite", scale=s, precision_bits=b),
              st.integers(2, 7), st.sampled_from([1.0, 4.0])),
    st.builds(lambda d, b: PN.OpSpec.of("relu_poly", degree=d, bound=b), st.integers(1, 15),
              st.sampled_from([1.0, 2.0, 30.0])),
    st.builds(lambda d: PN.OpSpec.of("approx_max", iterations=d), st.integers(1, 3)),
    st.builds(lambda d, lay: PN.OpSpec.of("max_pool1d", n=32, iterations=d, layout=lay),
              st.integers(1, 2), st.sampled_from(["compact", "gapped"])),
    st.builds(lambda lay: PN.OpSpec.of("avg_pool1d", n=32, layout=lay), st.sampled_from(["compact", "gapped"])),
    st.builds(lambda d: PN.OpSpec.of("sqrt", iterations=d), st.integers(1, 4)),
)


def _run(be, ct, spec):
    p = dict(spec.params)
    if spec.op == "relu_composite":
        return P.relu_composite(be, ct, p["scale"], p["precision_bits"])
    if spec.op == "relu_poly":
        return P.relu_poly(be, ct, p["degree"], p["bound"])
    if spec.op == "approx_max":
        return P.approx_max(be, ct, be.rotate(ct, 1), iterations=p["iterations"])
    if spec.op == "max_pool1d":
        return PL.max_pool1d(be, ct, 32, iterations=p["iterations"], layout=p["layout"]).replace(length=32, layout=ct.layout)
    if spec.op == "avg_pool1d":
        return PL.avg_pool1d(be, ct, 32, layout=p["layout"]).replace(length=32, layout=ct.layout)
    if spec.op == "sqrt":
        return P.sqrt(be, be.mul_plain(ct, 0) + 0.5, p["iterations"])
    raise AssertionError(spec.op)


@given(chain=st.lists(_SPECS, min_size=1, max_size=4))
@settings(max_examples=25)
def test_planner_predicts_the_levels_operators_consume(chain):
    keys = KeySet.generate(P32, backend="sim")
    be = keys.backend
    plan = PN.plan_depth(chain, P32)
    ct = keys.encrypt(np.linspace(-0.5, 0.5, 32))
    for i, spec in enumerate(chain):
        if plan.rows[i]["level_out"] < 0:
            with pytest.raises(DepthExhaustedError):
                _run(be, ct, spec)
            assert plan.failing_step == i and not plan.fits
            with pytest.raises(DepthExhaustedError, match=f"step {i}"):
                PN.check_depth(chain, P32)
            return
        ct = _run(be, ct, spec)
        assert ct.level == plan.rows[i]["level_out"], spec
    assert plan.fits and PN.check_depth(chain, P32) is not None


def test_error_names_the_step_and_what_fits():
    chain = [{"op": "relu_poly", "degree": 7, "name": "act1"},
             {"op": "levels", "levels": 1, "name": "conv2"},
             {"op": "relu_composite", "precision_bits": 8, "name": "act2"}]
    with pytest.raises(DepthExhaustedError) as ei:
        PN.check_depth(chain, "n16384")
    msg = str(ei.value)
    assert "step 2 'act2' (relu_composite)" in msg and "4 left" in msg
    assert "precision_bits=4" in msg and "n32768" in msg
    plan = PN.plan_depth(chain, "n32768")
    assert plan.fits and plan.total == 3 + 1 + 13 and plan.spare == 2
    assert "fits" in plan.table()


def test_unknown_ops_and_registration():
    with pytest.raises(ParameterError, match="does not know"):
        PN.op_depth({"op": "softmax"})
    with pytest.raises(ParameterError, match="lacks the setting"):
        PN.op_depth(("relu_poly", {}))
    PN.register_op_depth("conv_test", lambda p: 1 + int(p.get("extra", 0)))
    assert PN.op_depth(PN.OpSpec.of("conv_test", extra=2)) == 3
    assert PN.plan_depth([("conv_test", {})] * 3, "n8192", start_level=2).failing_step == 2
