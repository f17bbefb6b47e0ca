"""Self-tests of the fuzz harness (tests/fuzzing.py): it must catch each kind of finding."""

from __future__ import annotations

import json
import time

import pytest
from fuzzing import check_one, json_mutator, run_fuzz

from privkit.errors import DataFormatError


def _strict(b: bytes):
    if not b.startswith(b"OK"):
        raise DataFormatError("bad magic")
    return b[2:]


def test_clean_parser_counts_inputs_and_typed_errors():
    stats = run_fuzz(_strict, [b"OK1234", b"OKabcdef"], n=200, time_limit_s=1.0, mem_limit_mb=16)
    assert stats.inputs == 200 and stats.clean
    assert stats.typed_errors > 0 and stats.ok > 0
    assert stats.ok + stats.typed_errors == 200


def test_untyped_exception_is_a_crash():
    def parse(b):
        return b[10]  # IndexError on short inputs
    stats = run_fuzz(parse, b"0123456789AB", n=100, time_limit_s=1.0, mem_limit_mb=16)
    assert stats.crashes > 0 and "IndexError" in stats.findings[0].detail
    with pytest.raises(AssertionError, match="crashes="):
        stats.assert_clean()


def test_hang_is_interrupted_and_counted():
    def parse(b):
        while True:
            time.sleep(0.01)
    outcome, detail, elapsed, _ = check_one(parse, b"x", time_limit_s=0.1)
    assert outcome == "hang" and elapsed < 2.0


def test_memory_bomb_is_counted():
    def parse(b):
        return bytearray(64 * 2**20)
    outcome, detail, _, peak = check_one(parse, b"x", time_limit_s=5, mem_limit_mb=8)
    assert outcome == "memory" and peak >= 64


def test_wrong_result_is_counted():
    outcome, _, _, _ = check_one(lambda b: 1, b"x", check=lambda d, r: (_ for _ in ()).throw(AssertionError("no")))
    assert outcome == "wrong"


def test_json_mutator_changes_fields_and_is_deterministic():
    def split(b):
        return b"H", json.loads(b[1:]), b""
    def join(p, o, s):
        return p + json.dumps(o).encode()
    m = json_mutator(split, join)
    import random
    seed = b'H{"gap": 1, "n": 4, "shape": [2, 2]}'
    outs = [m(random.Random(i), seed) for i in range(30)]
    assert any(o != seed for o in outs)
    assert outs == [m(random.Random(i), seed) for i in range(30)]
