"""Fuzz / property tests for every reader and model loader (issue 17).

Any mutated input must give a privkit error or a valid result, within a time limit per input
(``TIMEOUT_S``, in a forked worker that is killed on a hang) and a memory limit (``MEM_MB`` of
resident-set growth per input, ``RLIMIT_AS`` as a hard cap); see ``tests/fuzz_readers.py``.
The default run does ``DEFAULT_N`` examples per format; ``-m slow`` runs ``SLOW_N`` per format
and prints the counts (inputs, typed errors, correct results, crashes, hangs, memory).
"""

from __future__ import annotations

import gzip

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_readers import Fuzzer, env_examples, mutate, op_strategy
from fuzz_seeds import READERS, preload, seeds

TIMEOUT_S = 10.0
MODEL_TIMEOUT_S = 30.0  # building the anonymiser's five networks takes ~1 s on a quiet core
MEM_MB = 256
DEFAULT_N = {"idx": 300, "cifar": 300, "folder": 200, "edf": 300, "respevt": 200, "wfdb": 300,
             "apn": 300, "motionsense": 200, "lara": 200, "model": 100}
SLOW_N = 2000


@pytest.fixture(scope="module")
def fuzzer():
    f = Fuzzer(READERS, timeout_s=TIMEOUT_S, mem_budget_mb=MEM_MB,
               timeouts={"model": MODEL_TIMEOUT_S}, preload=preload)
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


def _model_state_strategy():
    return st.tuples(st.just("state"), st.sampled_from(["apnea", "vae", "anon"]),
                     st.integers(0, 500), st.integers(0, 100),
                     st.sampled_from(["replace", "delete", "junk", "reshape"]))


def _model_bytes_strategy():
    return st.tuples(st.just("bytes"), st.sampled_from(["apnea", "vae", "anon"]), op_strategy())


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
