"""Issue 17 for the deployment artefacts (issue 15): mutation fuzzing of saved programs and client
specs with the harness of tests/fuzzing.py.

Contract: every mutated input gives a privkit error, or a program / spec that passes its check,
within a time limit per input and a memory limit. Structure-aware mutators edit the JSON
description inside the envelope (layer kinds, constructor arguments, tensor sizes and offsets,
compile arguments, the saved plan) and re-seal the envelope, so the mutations reach the artefact
parser behind the integrity check. The default run feeds 150 inputs per format; ``-m slow`` runs
``PRIVKIT_FUZZ_N`` (default 2,000) per format and prints the counts.
"""

from __future__ import annotations

import json
import os
import struct

import pytest
import torch
from fuzzing import json_mutator, run_fuzz

from privkit import fhe
from privkit import nn as pnn
from privkit.fhe import envelope as ev
from privkit.fhe.artifact import ClientSpec, program_from_bytes

SLOW_N = int(os.environ.get("PRIVKIT_FUZZ_N", "2000"))
MEM_MB = 256


@pytest.fixture(scope="module")
def program_blob():
    torch.manual_seed(0)
    model = torch.nn.Sequential(pnn.Conv1d(1, 2, 3), torch.nn.BatchNorm1d(2), pnn.PolyReLU(degree=3),
                                pnn.AvgPool1d(2), pnn.Flatten(), pnn.Linear(2 * 7, 2)).eval()
    pnn.calibrate(model, torch.randn(16, 1, 16))
    prog = fhe.compile(model, input_shape=(1, 16), params="auto")
    prog.input_range = (-4.0, 4.0)
    return prog.to_bytes()


def _opened(b: bytes):
    env = ev.open_envelope(b)
    return env.kind, env.fingerprint, dict(env.meta or {}), env.payload


def _program_split(b: bytes):
    kind, fp, meta, payload = _opened(b)
    (hlen,) = struct.unpack_from("<I", payload, 0)
    desc = json.loads(payload[4 : 4 + hlen])
    return json.dumps([kind, fp, meta]).encode(), desc, payload[4 + hlen :]


def _program_join(prefix: bytes, desc, data: bytes) -> bytes:
    kind, fp, meta = json.loads(prefix)
    head = json.dumps(desc, sort_keys=True, separators=(",", ":")).encode()
    return ev.seal_envelope(kind, struct.pack("<I", len(head)) + head + data, fp, meta=meta)


def _spec_split(b: bytes):
    kind, fp, meta, payload = _opened(b)
    return json.dumps([kind, fp, meta]).encode(), json.loads(payload), b""


def _spec_join(prefix: bytes, d, _s: bytes) -> bytes:
    kind, fp, meta = json.loads(prefix)
    return ev.seal_envelope(kind, json.dumps(d).encode(), fp, meta=meta)


PROGRAM_DESC = json_mutator(_program_split, _program_join)
SPEC_DESC = json_mutator(_spec_split, _spec_join)


def _check_program(_data: bytes, prog) -> None:
    # what loads must be a usable program: a plan whose depth fits its parameters
    assert prog.depth <= prog.params.depth and prog.steps
    prog.client_spec()


def _check_spec(_data: bytes, spec) -> None:
    assert spec.input_layout.span <= spec.params.slots
    assert spec.out_features >= 1 and spec.batch >= 1


def _cases(program_blob):
    spec_blob = program_from_bytes(program_blob).client_spec().to_bytes()
    return {
        "saved programs": (program_from_bytes, program_blob, (PROGRAM_DESC,), _check_program),
        "client specs": (ClientSpec.from_bytes, spec_blob, (SPEC_DESC,), _check_spec),
    }


@pytest.mark.parametrize("fmt", ["saved programs", "client specs"])
def test_fuzz_deploy_artefacts(fmt, program_blob):
    parse, seed, mutators, check = _cases(program_blob)[fmt]
    stats = run_fuzz(parse, seed, n=150, time_limit_s=5.0, mem_limit_mb=MEM_MB,
                     mutators=mutators, check=check, name=fmt, seed=23)
    stats.assert_clean()
    assert stats.typed_errors > 0  # the mutations reached the parser and were refused


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["saved programs", "client specs"])
def test_fuzz_deploy_artefacts_slow(fmt, program_blob, capsys):
    parse, seed, mutators, check = _cases(program_blob)[fmt]
    stats = run_fuzz(parse, seed, n=SLOW_N, time_limit_s=5.0, mem_limit_mb=MEM_MB,
                     mutators=mutators, check=check, name=fmt, seed=29)
    with capsys.disabled():
        print("\n" + stats.summary())
    stats.assert_clean()
