"""Fuzz / property tests for every reader and model loader (issue 17).

Any mutated input must give a privkit error or a valid result, within a time limit per input
(``TIMEOUT_S``, in a forked worker that is killed on a hang) and a memory limit (``MEM_MB`` of
resident-set growth per input, ``RLIMIT_AS`` as a hard cap); see ``tests/fuzz_readers.py``.
The default run does ``DEFAULT_N`` examples per format; ``-m slow`` runs ``SLOW_N`` per format
and prints the counts (inputs, typed errors, correct results, crashes, hangs, memory).
"""

from __future__ import annotations

import copy
import gzip
import io
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_readers import Fuzzer, env_examples, mutate, op_strategy
from fuzz_seeds import READERS, model_states, seeds

TIMEOUT_S = 10.0
MEM_MB = 256
DEFAULT_N = {"idx": 300, "cifar": 300, "folder": 200, "edf": 300, "respevt": 200, "wfdb": 300,
             "apn": 300, "motionsense": 200, "lara": 200, "model": 100}
SLOW_N = 2000


@pytest.fixture(scope="module")
def fuzzer():
    seeds()  # built once in the parent, inherited by the forked worker
    _states()  # imports the apps before the fork: the first input does not pay for them
    f = Fuzzer(READERS, timeout_s=TIMEOUT_S, mem_budget_mb=MEM_MB)
    yield f
    f.close()


# ------------------------------------------------------------------------------- strategies


def _idx(mode_ops):
    mode, ops = mode_ops
    seed = seeds()["idx"]
    if mode == "raw":
        return mutate(seed, ops)
    if mode == "gz-inner":  # a well-formed gzip of a mutated IDX (header lies, sizes wrap)
        return gzip.compress(mutate(seed, ops), compresslevel=1)
    return mutate(gzip.compress(seed), ops)  # a corrupt gzip


def _strategy(fmt: str):
    s = seeds()
    ops = op_strategy()
    if fmt == "idx":
        return st.tuples(st.sampled_from(["raw", "gz-inner", "gz-outer"]), ops).map(_idx)
    if fmt == "cifar":
        return st.tuples(st.sampled_from(["cifar2", "cifar4", "cifar5"]), ops).map(
            lambda t: mutate(s[t[0]], t[1]))
    if fmt == "folder":
        return st.tuples(st.sampled_from(["png", "jpeg", "bmp"]), ops).map(
            lambda t: (t[0], mutate(s[t[0]], t[1])))
    if fmt in ("edf", "respevt"):
        return ops.map(lambda o: mutate(s[fmt], o))
    if fmt == "apn":
        return ops.map(lambda o: {**s["wfdb"], "apn": mutate(s["wfdb"]["apn"], o)})
    if fmt == "wfdb":
        return st.tuples(st.sampled_from(["hea", "dat"]), ops).map(
            lambda t: {**s["wfdb"], t[0]: mutate(s["wfdb"][t[0]], t[1])})
    if fmt in ("motionsense", "lara"):
        names = sorted(s[fmt])
        return st.tuples(st.sampled_from(names), ops).map(
            lambda t: {**s[fmt], t[0]: mutate(s[fmt][t[0]], t[1])})
    if fmt == "model":
        return st.one_of(_model_state_strategy(), _model_bytes_strategy())
    raise KeyError(fmt)


_STATES: dict = {}


def _states():
    if not _STATES:
        _STATES.update(model_states())
    return _STATES


def _hostile_values():
    import torch

    return [None, True, -1, 0, 1, 3, 40000, 2**63, -(2**63), 1e308, math.nan, math.inf, -math.inf,
            0.5, "x", "x" * 300, "avg", [], {}, [1, 2, 3], [40000] * 3, [-1, 0], {"a": 1},
            {"lo": [0.0], "hi": [1.0]}, torch.zeros(0), torch.zeros(3, 3), torch.zeros(2, 2, 2),
            torch.full((2,), math.nan), torch.zeros(2, dtype=torch.int64), torch.zeros(1, 40000),
            torch.zeros(4, dtype=torch.complex64)]


def _paths(state):
    import torch

    out = [("top", k) for k in state]
    for k, v in state.items():
        if isinstance(v, dict):
            out += [("sub", k, kk) for kk in v][:60]
            out += [("tensor", k, kk) for kk, vv in v.items() if isinstance(vv, torch.Tensor)][:60]
    return out


def _apply(name, path_i, value_i, action):
    import torch

    kind, state = _states()[name]
    state = copy.deepcopy(state)
    paths = _paths(state)
    path = paths[path_i % len(paths)]
    hostile = _hostile_values()
    container = state if path[0] == "top" else state[path[1]]
    key = path[-1]
    if action == "delete":
        container.pop(key, None)
    elif action == "junk":
        container["junk_" + str(key)] = hostile[value_i % len(hostile)]
    elif action == "reshape" and isinstance(container.get(key), torch.Tensor):
        t = container[key]
        container[key] = torch.zeros(tuple(s + 1 for s in t.shape) or (2,), dtype=t.dtype)
    else:
        container[key] = copy.deepcopy(hostile[value_i % len(hostile)])
    return (kind, "state", state)


def _model_state_strategy():
    return st.builds(_apply, st.sampled_from(["apnea", "vae", "anon"]), st.integers(0, 500),
                     st.integers(0, 100), st.sampled_from(["replace", "delete", "junk", "reshape"]))


def _torch_bytes(name):
    import torch

    kind, state = _states()[name]
    buf = io.BytesIO()
    from privkit.api import _MAGIC

    torch.save({"magic": _MAGIC, "kind": {"apnea": "apnea-detector"}.get(name, ""), "format": 1,
                "state": state}, buf)
    return buf.getvalue()


def _model_bytes_strategy():
    def build(name, ops):
        from privkit.apps.anonymiser import IMUAnonymiser
        from privkit.apps.apnea import ApneaDetector
        from privkit.apps.svae import AnnVAE

        cls = {"apnea": ApneaDetector, "vae": AnnVAE, "anon": IMUAnonymiser}[name]
        import torch

        from privkit.api import _MAGIC

        buf = io.BytesIO()
        torch.save({"magic": _MAGIC, "kind": cls.model_kind, "format": 1,
                    "state": _states()[name][1]}, buf)
        return (name, "bytes", mutate(buf.getvalue(), ops))

    return st.builds(build, st.sampled_from(["apnea", "vae", "anon"]), op_strategy())


# ------------------------------------------------------------------------------------- tests


def _fuzz(fuzzer: Fuzzer, fmt: str, n: int) -> None:
    @settings(max_examples=n, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(_strategy(fmt))
    def run(data):
        outcome, detail = fuzzer.run(fmt, data)
        assert outcome in ("typed", "ok"), f"{fmt}: {outcome}: {detail}"

    run()
    print(fuzzer.tally.line(fmt))
    assert fuzzer.tally.failures(fmt) == 0
    assert sum(fuzzer.tally.counts[fmt].values()) >= min(n, 50)  # the inputs really ran


FORMATS = list(DEFAULT_N)


@pytest.mark.parametrize("fmt", FORMATS)
def test_fuzz_reader(fuzzer, fmt):
    _fuzz(fuzzer, fmt, env_examples(DEFAULT_N[fmt]))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_fuzz_reader_slow(fuzzer, fmt):
    _fuzz(fuzzer, fmt, env_examples(SLOW_N))
