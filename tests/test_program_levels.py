"""Spare levels dropped before the first layer (EncryptedProgram.start_level) and the SEAL
backend's cache of encoded plaintext operands (privkit.fhe.plain_cache)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from deploy_models import gap_program, tiny_seal_program
from test_deploy_artifact import _reseal

from privkit.errors import EnvelopeError, ParameterError
from privkit.fhe.plain_cache import PlainCache, default_cache_bytes
from privkit.fhe.program import MIN_OUTPUT_CAPACITY, OBSERVED_OUTPUT_MARGIN, EncryptedProgram


def _run(prog, keys, x):
    out = prog.run(prog.encrypt_input(keys, x), keys.public_bundle(), allow_insecure=True)
    return out, prog.decrypt_output(keys, out)


def _ref(prog, x):
    with torch.no_grad():
        return prog._reference(torch.as_tensor(x[None], dtype=torch.float64)).numpy()[0]


# -- start level ---------------------------------------------------------------------------------
def test_without_a_range_or_hint_the_result_keeps_one_spare_level():
    prog = gap_program()  # n16384 (depth 8); the program needs 4
    prog.input_range = None
    assert prog.depth == 4 and prog.output_bound() is None
    assert prog.start_level(8) == prog.depth + 1
    keys = prog.keygen(backend="sim")
    x = np.random.default_rng(0).uniform(-2, 2, (1, 32))
    out, got = _run(prog, keys, x)
    assert out.level == 1
    np.testing.assert_allclose(got, _ref(prog, x), atol=1e-4)


def test_a_small_observed_output_leaves_the_result_at_level_0_and_still_matches():
    prog = gap_program()
    x = np.random.default_rng(1).uniform(-2, 2, (20, 1, 32))
    prog.calibrate_input(x)
    seen = max(np.abs(_ref(prog, xi)).max() for xi in x)
    assert prog.output_bound_hint == pytest.approx(seen, rel=1e-9)
    assert OBSERVED_OUTPUT_MARGIN * prog.output_bound_hint < MIN_OUTPUT_CAPACITY
    assert prog.start_level(8) == prog.depth  # level 0 of n16384 holds 2^18
    keys = prog.keygen(backend="sim")
    for xi in x[:3]:
        out, got = _run(prog, keys, xi)
        assert out.level == 0
        np.testing.assert_allclose(got, _ref(prog, xi), atol=1e-4)


def test_a_large_observed_output_or_a_small_first_prime_keeps_the_spare_level():
    prog = gap_program()
    prog.input_range = None  # no tracked worst case: the hint alone decides
    prog.output_bound_hint = 1e3  # x1000 = 1e6 > 2^18: level 0 cannot hold it
    assert prog.start_level(8) > prog.depth
    prog.output_bound_hint = 1e-3
    assert prog.start_level(prog.depth) == prog.depth  # never above what the input has
    small = tiny_seal_program()  # n8192: level 0 holds 255 < MIN_OUTPUT_CAPACITY
    small.output_bound_hint = 1e-3
    assert small.start_level(small.depth + 5) == small.depth + 1


def test_the_tracked_bound_alone_can_allow_level_0():
    prog = gap_program()
    prog.input_range = (-1e-3, 1e-3)  # tiny inputs: the worst case fits level 0
    prog.output_bound_hint = None
    assert 2 * prog.output_bound() < MIN_OUTPUT_CAPACITY
    assert prog.start_level(8) == prog.depth


def test_the_hint_survives_save_and_load_and_a_bad_one_is_refused(tmp_path):
    prog = gap_program()
    prog.output_bound_hint = 0.75
    prog.save(tmp_path / "p.pkprog")
    again = EncryptedProgram.load(tmp_path / "p.pkprog")
    assert again.output_bound_hint == 0.75
    blob = (tmp_path / "p.pkprog").read_bytes()
    for bad in (-1.0, "1e3", float("inf"), [1.0], True):
        def edit(d, bad=bad):
            d["output_bound_hint"] = bad
        with pytest.raises(EnvelopeError, match="output_bound_hint"):
            EncryptedProgram.from_bytes(_reseal(blob, edit))


# -- plaintext cache -------------------------------------------------------------------------------
def test_cache_hits_on_equal_content_and_evicts_the_least_recent():
    c = PlainCache(max_bytes=250)
    made = []

    def make(tag):
        made.append(tag)
        return tag

    a, b, d = np.zeros(4), np.ones(4), np.arange(4.0)
    assert c.get_or_make(a, 2, 2.0, lambda: make("a"), 100) == "a"
    assert c.get_or_make(b, 2, 2.0, lambda: make("b"), 100) == "b"
    assert c.get_or_make(a.copy(), 2, 2.0, lambda: make("a2"), 100) == "a"  # hit; a is now recent
    assert c.get_or_make(a, 1, 2.0, lambda: make("a@1"), 10) == "a@1"  # another level: a miss
    assert c.get_or_make(a, 2, 4.0, lambda: make("a@s"), 10) == "a@s"  # another scale: a miss
    assert c.get_or_make(d, 2, 2.0, lambda: make("d"), 100) == "d"  # evicts b (least recent)
    assert c.bytes <= 250
    assert c.get_or_make(b, 2, 2.0, lambda: make("b2"), 100) == "b2"
    assert made == ["a", "b", "a@1", "a@s", "d", "b2"]
    assert c.get_or_make(np.zeros(4, dtype=np.float32), 2, 2.0, lambda: make("f32"), 1) == "f32"
    assert c.get_or_make(np.zeros(500), 2, 2.0, lambda: make("big"), 1000) == "big"  # too big: not kept
    assert c.get_or_make(np.zeros(500), 2, 2.0, lambda: make("big2"), 1000) == "big2"


def test_cache_off_and_bad_budgets(monkeypatch):
    c = PlainCache(max_bytes=0)
    c.get_or_make(np.zeros(2), 0, 1.0, lambda: 1, 1)
    assert len(c) == 0 and c.hits == 0
    monkeypatch.setenv("PRIVKIT_PLAIN_CACHE_MB", "1.5")
    assert default_cache_bytes() == int(1.5 * 2**20)
    for bad in ("lots", "-1", "nan"):
        monkeypatch.setenv("PRIVKIT_PLAIN_CACHE_MB", bad)
        with pytest.raises(ParameterError, match="PRIVKIT_PLAIN_CACHE_MB"):
            default_cache_bytes()
    with pytest.raises(ParameterError):
        PlainCache(max_bytes=-5)


@pytest.mark.seal
def test_seal_results_are_bit_identical_with_and_without_the_cache():
    from privkit.fhe.seal import _context_for

    prog = tiny_seal_program()
    keys = prog.keygen(backend="seal")
    cache = _context_for(prog.params).plain_cache
    ct = prog.encrypt_input(keys, np.linspace(-1, 1, 16))
    bundle = keys.public_bundle()
    old = cache.max_bytes
    try:
        cache.max_bytes = 0
        cache.clear()
        off = keys.decrypt(prog.run(ct, bundle))
        cache.max_bytes = 64 << 20
        first = keys.decrypt(prog.run(ct, bundle))
        hits = cache.hits
        second = keys.decrypt(prog.run(ct, bundle))
        assert cache.hits > hits and len(cache) > 0
    finally:
        cache.max_bytes = old
        cache.clear()
    assert np.array_equal(off, first) and np.array_equal(first, second)


def test_a_run_with_overflow_risks_warns_once_and_counts_them():
    import warnings

    from privkit.errors import ScaleOverflowWarning

    prog = gap_program()
    prog.input_range = (-1e5, 1e5)  # a tracked worst case far above level 0's capacity,
    prog.output_bound_hint = 1e-3  # and a hint that puts the result there anyway
    assert prog.start_level(8) == prog.depth
    keys = prog.keygen(backend="sim")
    x = np.random.default_rng(5).uniform(-1, 1, (1, 32))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ct = prog.encrypt_input(keys, x).replace(bound=None)  # as received: bounded by the range
        prog.run(ct, keys.public_bundle(), allow_insecure=True)
    risky = [w for w in seen if issubclass(w.category, ScaleOverflowWarning)]
    assert len(risky) == 1 and "EncryptedProgram" in str(risky[0].message)
    assert prog.run_notes()["overflow_risk"] >= 1
    assert "may overflow the scale" in prog.report()
