"""DP parameters, accountant histories and checkpoints are validated with typed errors (issue 17):
no negative epsilon, no infinite clip or noise, no hang on a NaN sigma, no silent budget reset,
no silent resume into another data set; and a fuzz test over mutated checkpoints."""

from __future__ import annotations

import copy
import math
import time
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from privkit.dp import (
    DPConfig,
    PrivacyWarning,
    compute_epsilon,
    epsilon_from_history,
    make_private,
)
from privkit.errors import AccountantStateError, CheckpointError, PrivkitError

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


def _setup(n=96, batch=32, seed=0, opt="adam"):
    torch.manual_seed(seed)
    x = torch.randn(n, 3)
    y = x.sum(1)
    model = nn.Linear(3, 1)
    o = (torch.optim.Adam if opt == "adam" else torch.optim.SGD)(model.parameters(), lr=0.01)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)
    return model, o, loader


def _train(training, steps):
    m, o, dl = training
    done = 0
    while done < steps:
        for xb, yb in dl:
            o.zero_grad()
            ((m(xb).squeeze(-1) - yb) ** 2).mean().backward()
            o.step()
            done += 1
            if done == steps:
                return


def _trained(steps=4, **kw):
    model, opt, loader = _setup(**kw)
    tr = make_private(model, opt, loader, noise_multiplier=1.0, delta=1e-5, max_grad_norm=1.0,
                      accountant="rdp")
    _train(tr, steps)
    return tr


def test_large_delta_never_gives_negative_epsilon():
    res = compute_epsilon(noise_multiplier=1.0, sample_rate=0.1, steps=10, delta=0.5)
    assert res.epsilon >= 0.0
    model, opt, loader = _setup()
    with pytest.warns(PrivacyWarning, match="delta"):
        tr = make_private(model, opt, loader, noise_multiplier=1.0, delta=0.5, max_grad_norm=1.0,
                          epochs=1)
    assert tr.report().epsilon >= 0.0


@pytest.mark.parametrize("delta", [0.0, 1.0, -1e-5, 2.0, math.nan, math.inf, "1e-5", True])
def test_delta_outside_open_unit_interval_is_refused(delta):
    with pytest.raises(AccountantStateError, match="delta"):
        epsilon_from_history([(1.0, 0.1, 10)], delta)
    model, opt, loader = _setup()
    with pytest.raises(PrivkitError):
        make_private(model, opt, loader, noise_multiplier=1.0, delta=delta, max_grad_norm=1.0)


@pytest.mark.parametrize("clip", [math.inf, math.nan, 0.0, -1.0])
def test_non_finite_or_non_positive_clip_is_refused(clip):
    model, opt, loader = _setup()
    with pytest.raises(AccountantStateError, match="max_grad_norm"):
        make_private(model, opt, loader, noise_multiplier=1.0, delta=1e-5, max_grad_norm=clip)


@pytest.mark.parametrize("sigma", [math.inf, math.nan, -0.5])
def test_non_finite_noise_is_refused(sigma):
    with pytest.raises(AccountantStateError, match="noise_multiplier"):
        DPConfig(noise_multiplier=sigma)
    model, opt, loader = _setup()
    with pytest.raises(AccountantStateError):
        make_private(model, opt, loader, noise_multiplier=sigma, delta=1e-5, max_grad_norm=1.0)


@pytest.mark.parametrize("entry", [
    (math.nan, 0.1, 10), (math.inf, 0.1, 10), (1.0, math.nan, 10), (1.0, 0.0, 10),
    (1.0, 1.5, 10), (1.0, 0.1, -3), (1.0, 0.1, 2.5), (1.0, 0.1, 10**12), ("1", 0.1, 10),
    (1e300, 0.1, 10), (1e-300, 0.1, 1),
])
def test_bad_history_entries_fail_fast(entry):
    t = time.perf_counter()
    with pytest.raises(AccountantStateError):
        epsilon_from_history([entry], 1e-5)
    assert time.perf_counter() - t < 1.0


def test_restored_nan_sigma_or_empty_history_is_refused():
    tr = _trained()
    ckpt = tr.checkpoint()
    for mutate, err in [
        (lambda c: c["accountant"]["history"][0].__setitem__(0, math.nan), AccountantStateError),
        (lambda c: c["accountant"]["history"][0].__setitem__(0, math.inf), AccountantStateError),
        (lambda c: c["accountant"]["history"][0].__setitem__(2, -4), AccountantStateError),
        (lambda c: c["accountant"].__setitem__("history", []), CheckpointError),  # steps != 0
        (lambda c: c["accountant"].update(history=[], steps=0), CheckpointError),  # Adam: 4 steps
        (lambda c: c["accountant"].__setitem__("steps", -4), CheckpointError),
        (lambda c: c["accountant"].pop("format"), CheckpointError),
        (lambda c: c["accountant"].__setitem__("delta", 0.5), CheckpointError),
        (lambda c: c.pop("optimizer"), CheckpointError),
        (lambda c: c["model"].__setitem__("weight", torch.zeros(5, 5)), CheckpointError),
    ]:
        bad = copy.deepcopy(ckpt)
        mutate(bad)
        model, opt, loader = _setup(seed=1)
        fresh = make_private(model, opt, loader, noise_multiplier=1.0, delta=1e-5,
                             max_grad_norm=1.0, accountant="rdp")
        w0 = model.weight.detach().clone()
        with pytest.raises(err):
            fresh.restore(bad)
        assert fresh.steps == 0 and torch.equal(model.weight, w0)  # nothing half-restored


def test_resuming_into_another_dataset_size_is_refused():
    tr = _trained()
    ckpt = tr.checkpoint()
    # same batch count (same sample rate) but 95 records instead of 96
    model, opt, loader = _setup(n=95)
    other = make_private(model, opt, loader, noise_multiplier=1.0, delta=1e-5, max_grad_norm=1.0,
                         accountant="rdp")
    with pytest.raises(CheckpointError, match="96 records but this run has 95"):
        other.restore(ckpt)
    model, opt, loader = _setup(n=96, batch=16)  # other batch size: other sample rate
    other = make_private(model, opt, loader, noise_multiplier=1.0, delta=1e-5, max_grad_norm=1.0,
                         accountant="rdp")
    with pytest.raises(CheckpointError, match="sample rate"):
        other.restore(ckpt)


def test_restore_cannot_lower_the_spent_budget():
    tr = _trained(steps=4)
    ckpt = tr.checkpoint()
    _train(tr, 3)
    with pytest.raises(AccountantStateError, match="lower the privacy spent"):
        tr.load_accountant_state(ckpt["accountant"])
    assert tr.steps == 7


# ------------------------------------------------------------------------------- fuzz

_JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-10**13, 10**13),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_KEYS = ["format", "history", "steps", "mechanism", "noise_multiplier", "max_grad_norm", "delta",
         "sample_rate", "dataset_size", "epochs", "planned_steps", "accountant"]


@st.composite
def _mutations(draw):
    """A list of edits of an accountant state: replace / delete a key, or edit a history entry."""
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["replace", "delete", "entry", "append", "scale"]))
        if kind == "replace":
            edits.append((kind, draw(st.sampled_from(_KEYS)), draw(_JUNK)))
        elif kind == "delete":
            edits.append((kind, draw(st.sampled_from(_KEYS)), None))
        elif kind == "entry":
            edits.append((kind, draw(st.integers(0, 2)), draw(_JUNK)))
        elif kind == "append":
            edits.append((kind, None, [draw(st.floats(0, 5)), draw(st.floats(0, 1)),
                                       draw(st.integers(-5, 10**10))]))
        else:
            edits.append((kind, draw(st.sampled_from(["steps", "sample_rate", "delta"])),
                          draw(st.floats(0, 3))))
    return edits


def _apply(state, edits):
    for kind, key, value in edits:
        if kind == "replace":
            state[key] = value
        elif kind == "delete":
            state.pop(key, None)
        elif kind == "entry" and isinstance(state.get("history"), list) and state["history"]:
            entry = state["history"][0]
            if isinstance(entry, list) and len(entry) == 3:
                entry[key] = value
        elif kind == "append" and isinstance(state.get("history"), list):
            state["history"].append(value)
        elif kind == "scale" and isinstance(state.get(key), (int, float)):
            state[key] = type(state[key])(state[key] * value) if key == "steps" else \
                state[key] * value
    return state


_BASE = {}
_COUNTS: dict[str, dict[str, int]] = {}


def _count(test: str, outcome: str) -> None:
    c = _COUNTS.setdefault(test, {"inputs": 0, "typed_errors": 0, "accepted": 0})
    c["inputs"] += 1
    c[outcome] += 1


def _base():
    if not _BASE:
        tr = _trained(steps=5)
        _BASE["state"] = tr.accountant_state()
        model, opt, loader = _setup(seed=2)
        _BASE["fresh"] = make_private(model, opt, loader, noise_multiplier=1.0, delta=1e-5,
                                      max_grad_norm=1.0, accountant="rdp")
    return _BASE["state"], _BASE["fresh"]


@settings(deadline=None)
@given(_mutations())
def test_fuzz_mutated_accountant_state_gives_typed_error_or_correct_epsilon(edits):
    state, fresh = _base()
    fresh.engine.accountant.history = []  # a run about to resume
    fresh._cache.clear()
    bad = _apply(copy.deepcopy(state), edits)
    t = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fresh.load_accountant_state(bad)
            eps = fresh.epsilon()
    except PrivkitError:
        _count("accountant_state", "typed_errors")
    else:
        _count("accountant_state", "accepted")
        # accepted: the state is self-consistent and the epsilon is the one of its history
        assert sum(n for _, _, n in fresh.history) == bad["steps"]
        assert eps == epsilon_from_history(bad["history"], 1e-5, "rdp").epsilon
        assert eps >= 0 and not math.isnan(eps)
    assert time.perf_counter() - t < 5.0


_TENSORS = st.one_of(
    st.builds(lambda shape: torch.zeros(shape), st.lists(st.integers(0, 4), max_size=3)),
    st.just(torch.tensor([float("nan")])), st.just(torch.zeros(1, 3, dtype=torch.int64)),
)


@st.composite
def _ckpt_mutations(draw):
    """Edits of a whole checkpoint: model tensors, optimizer state, top-level keys."""
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["model", "model_key", "opt_step", "opt_junk", "top"]))
        if kind == "model":
            edits.append((kind, draw(st.sampled_from(["weight", "bias"])), draw(_TENSORS)))
        elif kind == "model_key":
            edits.append((kind, draw(st.text(max_size=6)), draw(st.one_of(_TENSORS, _JUNK))))
        elif kind == "opt_step":
            edits.append((kind, None, draw(st.one_of(
                st.integers(-5, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                st.builds(torch.tensor, st.floats(-10, 1e6)), _JUNK))))
        elif kind == "opt_junk":
            edits.append((kind, draw(st.sampled_from(["state", "param_groups"])), draw(_JUNK)))
        else:
            edits.append((kind, draw(st.sampled_from(["model", "optimizer", "accountant"])),
                          draw(_JUNK)))
    return edits


def _apply_ckpt(ckpt, edits):
    for kind, key, value in edits:
        if kind in ("model", "model_key") and isinstance(ckpt.get("model"), dict):
            ckpt["model"][key] = value
        elif kind == "opt_step" and isinstance(ckpt.get("optimizer"), dict):
            st_ = ckpt["optimizer"].get("state")
            if isinstance(st_, dict):
                for v in st_.values():
                    if isinstance(v, dict):
                        v["step"] = value
        elif kind == "opt_junk" and isinstance(ckpt.get("optimizer"), dict):
            ckpt["optimizer"][key] = value
        elif kind == "top":
            ckpt[key] = value
    return ckpt


@settings(deadline=None)
@given(_ckpt_mutations())
def test_fuzz_mutated_checkpoint_restores_fully_or_raises_typed_error(edits):
    if "ckpt" not in _BASE:
        _BASE["ckpt"] = _trained(steps=5).checkpoint()
        model, opt, loader = _setup(seed=3)
        _BASE["target"] = (model, make_private(model, opt, loader, noise_multiplier=1.0,
                                               delta=1e-5, max_grad_norm=1.0, accountant="rdp"))
    model, tr = _BASE["target"]
    tr.engine.accountant.history = []
    tr._cache.clear()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bad = _apply_ckpt(copy.deepcopy(_BASE["ckpt"]), edits)
    t = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tr.restore(bad)
    except PrivkitError:
        _count("checkpoint", "typed_errors")
        # refused: nothing changed
        assert tr.steps == 0
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k]), k
    else:
        _count("checkpoint", "accepted")
        assert tr.steps == 5 and tr.epsilon() > 0
        for k, v in model.state_dict().items():
            assert torch.equal(v, bad["model"][k].to(v.dtype))
    assert time.perf_counter() - t < 5.0


# ``-m slow``: 2,000 inputs per fuzzer; the counts are printed (run with -s to see them)
@pytest.mark.slow
@settings(deadline=None, max_examples=2000)
@given(_mutations())
def test_fuzz_accountant_state_2000(edits):
    test_fuzz_mutated_accountant_state_gives_typed_error_or_correct_epsilon.hypothesis.inner_test(
        edits)


@pytest.mark.slow
@settings(deadline=None, max_examples=2000)
@given(_ckpt_mutations())
def test_fuzz_checkpoint_2000(edits):
    test_fuzz_mutated_checkpoint_restores_fully_or_raises_typed_error.hypothesis.inner_test(edits)


@pytest.mark.slow
def test_fuzz_counts_report():
    """Prints the fuzz counts of the slow runs above (crashes and hangs would have failed them)."""
    for name, c in sorted(_COUNTS.items()):
        print(f"DP fuzz {name}: {c['inputs']} inputs, {c['typed_errors']} typed errors, "
              f"{c['accepted']} accepted with a correct result, 0 crashes, 0 hangs (> 5 s)")
    assert _COUNTS, "run with the slow fuzz tests"
