"""Issue 17: mutation fuzzing of the FHE artefacts (envelopes incl. the inner ciphertext header,
key files, public bundles) with the harness of tests/fuzzing.py.

Contract: every mutated input gives a privkit error or a result that passes its check, within a
time limit per input and a memory limit; crashes (untyped exceptions), hangs, memory blow-ups and
wrong results are counted and must all be 0.

Structure-aware mutators rebuild what an attacker can rebuild (JSON headers, length fields, the
SHA-256 digest of an envelope, the header checksum of a key file), so mutations reach the parsers
behind the integrity checks instead of all dying at the digest.

The default run feeds a few hundred inputs in total (about 10-20 s); ``-m slow`` runs
``PRIVKIT_FUZZ_N`` (default 2,000) per format and prints the counts.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import warnings

import numpy as np
import pytest
from fuzzing import json_mutator, run_fuzz

from privkit.errors import PrivkitError
from privkit.fhe import KeySet, PublicBundle
from privkit.fhe import envelope as ev
from privkit.fhe import keyfile as kf
from privkit.fhe.backend import Ciphertext, Layout

CHEAP = kf.ScryptKDF(n=2**10)
SLOW_N = int(os.environ.get("PRIVKIT_FUZZ_N", "2000"))
TIME_LIMIT = 2.0
MEM_MB = 256


@pytest.fixture(scope="module")
def sim_keys():
    return KeySet.generate("n8192", backend="sim", rotations=[1, 2])


@pytest.fixture(scope="module")
def seal_keys():
    return KeySet.generate("n8192", backend="seal", rotations=[], conjugation=False)


# -- rebuilders (what an attacker can recompute) ----------------------------------------------------


def _env_split(b: bytes):
    """(prefix-less) envelope -> ("", {"header": h, "rest": payload+tag}, "")."""
    if b[:8] != ev.MAGIC:
        raise ValueError("no envelope")
    _, _, hlen = struct.unpack("<8sHI", b[:14])
    header = json.loads(b[14 : 14 + hlen])
    return b"", header, b[14 + hlen :]


def _env_join(_p: bytes, header, rest: bytes) -> bytes:
    """Re-serialise the header, fix payload_len's neighbours and recompute the digest."""
    raw = json.dumps(header, separators=(",", ":")).encode()
    head = struct.pack("<8sHI", ev.MAGIC, 1, len(raw)) + raw
    plen = header.get("payload_len") if isinstance(header, dict) else None
    if type(plen) is int and 0 <= plen <= len(rest) - 32:
        payload, tail = rest[:plen], rest[plen + 32 :]
    else:
        payload, tail = rest[:-32], b""
    return head + payload + hashlib.sha256(head + payload).digest() + tail


ENVELOPE_HEADER = json_mutator(_env_split, _env_join)


def _reseal(kind: str, payload: bytes, fp: str, meta: dict) -> bytes:
    return ev.seal_envelope(kind, payload, fp, meta=meta)


def _ct_split(b: bytes):
    if b[:4] != b"PKCT":
        raise ValueError("no ciphertext")
    (hlen,) = struct.unpack("<I", b[4:8])
    return b"", json.loads(b[8 : 8 + hlen]), b[8 + hlen :]


def _ct_join(_p: bytes, header, rest: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return b"PKCT" + struct.pack("<I", len(raw)) + raw + rest


CT_HEADER = json_mutator(_ct_split, _ct_join)


def _inner_ct_mutator(rng, blob: bytes) -> bytes:
    """Mutate the inner ciphertext header of a one-ciphertext envelope, then re-seal it."""
    try:
        env = ev.open_envelope(blob)
        payload = env.payload
        (ln,) = struct.unpack_from("<Q", payload, 4)
        ct = CT_HEADER(rng, payload[12 : 12 + ln])
        new = payload[:4] + struct.pack("<Q", len(ct)) + ct + payload[12 + ln :]
        return _reseal(env.kind, new, env.fingerprint, env.meta)
    except (PrivkitError, struct.error, ValueError):
        return blob


def _keyfile_split(b: bytes):
    if b[:8] != kf.MAGIC:
        raise ValueError("no key file")
    _, _, hlen = struct.unpack("<8sHI", b[:14])
    return b"", json.loads(b[14 : 14 + hlen]), b[14 + hlen + 32 :]


def _keyfile_join(_p: bytes, header, body: bytes) -> bytes:
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    head = struct.pack("<8sHI", kf.MAGIC, 1, len(raw)) + raw
    return head + hashlib.sha256(head).digest() + body


KEYFILE_HEADER = json_mutator(_keyfile_split, _keyfile_join)


def _plain_keyfile_body(rng, blob: bytes) -> bytes:
    """Mutate the body of an UNENCRYPTED key file and recompute its digest and length: what an
    attacker who swaps in a plaintext file can do; reaches the key-set payload parser."""
    from fuzzing import mutate

    try:
        _, header, body = _keyfile_split(blob)
        if header.get("protection") != "none":
            return blob
        body = mutate(rng, body)
        header["payload_sha256"] = hashlib.sha256(body).hexdigest()
        header["payload_len"] = len(body)
        return _keyfile_join(b"", header, body)
    except (ValueError, AttributeError, KeyError):
        return blob


def _bundle_split(b: bytes):
    if b[:8] != b"PKBUNDLE":
        raise ValueError("no bundle")
    (hlen,) = struct.unpack("<I", b[8:12])
    return b"", json.loads(b[12 : 12 + hlen]), b[12 + hlen :]


def _bundle_join(_p: bytes, header, rest: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return b"PKBUNDLE" + struct.pack("<I", len(raw)) + raw + rest


BUNDLE_HEADER = json_mutator(_bundle_split, _bundle_join)


# -- parsers under test and their checks -------------------------------------------------------------


def _check_ct(ct: Ciphertext, be) -> None:
    assert isinstance(ct, Ciphertext) and ct.backend is be
    assert 0 <= ct.level <= be.depth and 0 <= ct.length <= be.slots
    assert isinstance(ct.layout, Layout) and ct.layout.gap >= 1
    assert isinstance(ct.is_complex, bool)


def _envelope_parser(sim_keys, seal_keys=None):
    def parse(b: bytes):
        env = ev.open_envelope(b)
        if env.kind == "public-bundle":
            bundle = ev.unpack_public_bundle(b, allow_insecure=True)
            bundle.backend  # builds the backend (loads SEAL keys)
            return bundle
        if env.kind in ("ciphertext", "result"):
            keys = sim_keys if env.meta.get("backend") == "sim" or seal_keys is None else seal_keys
            cts = ev.unpack_ciphertexts(b, keys)
            for c in cts:
                _check_ct(c, keys.backend)
            return [keys.decrypt(c) for c in cts]
        if env.kind == "dataset":
            return ev.unpack_dataset(b)
        return env
    return parse


def _check_decrypted(_data, result):
    if isinstance(result, list):
        for v in result:
            assert isinstance(v, np.ndarray) and np.all(np.isfinite(v))


def _envelope_seeds(sim_keys, owner=None):
    x = np.linspace(-1, 1, 16)
    seeds = [
        ev.pack_ciphertext(sim_keys.encrypt(x)),
        ev.pack_ciphertexts([sim_keys.encrypt(x), sim_keys.encrypt(-x)], kind="result"),
        ev.pack_public_bundle(sim_keys.public_bundle()),
        ev.pack_dataset({"a": np.arange(6.0).reshape(2, 3), "b": np.array([1, 2], dtype=np.int32)}),
    ]
    if owner is not None:
        seeds.append(ev.pack_public_bundle(sim_keys.public_bundle(), sign_with=owner))
    return seeds


def _report(stats) -> None:
    print(stats.summary())
    stats.assert_clean()


# -- default-run fuzz tests (a few hundred inputs in total) -------------------------------------------


def test_fuzz_envelopes(sim_keys):
    stats = run_fuzz(_envelope_parser(sim_keys), _envelope_seeds(sim_keys), n=300,
                     time_limit_s=TIME_LIMIT, mem_limit_mb=MEM_MB,
                     mutators=(ENVELOPE_HEADER, _inner_ct_mutator), check=_check_decrypted,
                     name="envelopes", seed=1)
    _report(stats)
    assert stats.typed_errors > 0 and stats.ok > 0


def test_fuzz_inner_ciphertext_header(sim_keys):
    blob = sim_keys.encrypt(np.arange(8.0)).to_bytes()
    be = sim_keys.backend

    def parse(b):
        ct = sim_keys.ciphertext_from_bytes(b)
        _check_ct(ct, be)
        return sim_keys.decrypt(ct)

    stats = run_fuzz(parse, blob, n=300, time_limit_s=TIME_LIMIT, mem_limit_mb=MEM_MB,
                     mutators=(CT_HEADER, CT_HEADER), check=_check_decrypted, name="ciphertext", seed=2)
    _report(stats)


def _keyfile_parser(b: bytes):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kf.InsecureKeyFileWarning)
        kf.read_header(b)
        return kf.open_keyset(b, "pw", allow_plaintext=True)


def _keyfile_seeds(keys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kf.InsecureKeyFileWarning)
        plain = b"".join(kf.seal_keyset(keys, insecure_plaintext=True))
    return [b"".join(kf.seal_keyset(keys, "pw", kdf=CHEAP, chunk_size=1024)), plain]


def _check_keys(keys):
    def check(_data, result):
        assert isinstance(result, KeySet)
        assert result.key_id == keys.key_id  # authenticated: a mutated file never yields other keys
    return check


def test_fuzz_key_files(sim_keys):
    stats = run_fuzz(_keyfile_parser, _keyfile_seeds(sim_keys), n=200, time_limit_s=TIME_LIMIT,
                     mem_limit_mb=MEM_MB, mutators=(KEYFILE_HEADER, _plain_keyfile_body),
                     check=_check_keys(sim_keys),
                     name="key files", seed=3)
    _report(stats)


def _bundle_parser(b: bytes):
    bundle = PublicBundle.from_bytes(b)
    bundle.backend  # SEAL parses the keys here
    return bundle


def _check_bundle(_data, bundle):
    assert not bundle.backend.can_decrypt
    assert set(bundle._eager) <= PublicBundle.ALLOWED_BLOBS[bundle.backend_name]


@pytest.mark.seal
def test_fuzz_public_bundles(sim_keys, seal_keys):
    seeds = [sim_keys.public_bundle().to_bytes(), seal_keys.public_bundle().to_bytes()]
    stats = run_fuzz(_bundle_parser, seeds, n=100, time_limit_s=TIME_LIMIT, mem_limit_mb=MEM_MB,
                     mutators=(BUNDLE_HEADER,), check=_check_bundle, name="public bundles", seed=4)
    _report(stats)


@pytest.mark.seal
def test_fuzz_seal_ciphertext_envelopes(sim_keys, seal_keys):
    seed = ev.pack_ciphertext(seal_keys.encrypt(np.linspace(-1, 1, 16)))
    stats = run_fuzz(_envelope_parser(sim_keys, seal_keys), seed, n=80, time_limit_s=TIME_LIMIT,
                     mem_limit_mb=MEM_MB, mutators=(_inner_ct_mutator, ENVELOPE_HEADER),
                     check=_check_decrypted, name="seal ciphertexts", seed=5)
    _report(stats)


# -- slow: >= 2,000 inputs per format, counts printed ----------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["envelopes", "ciphertext", "key files", "public bundles",
                                 "seal ciphertexts", "seal key files"])
def test_fuzz_slow(fmt, sim_keys, seal_keys, capsys):
    from privkit.fhe.envelope import generate_signing_key

    be = sim_keys.backend

    def ct_parse(b):
        ct = sim_keys.ciphertext_from_bytes(b)
        _check_ct(ct, be)
        return sim_keys.decrypt(ct)

    cfg = {
        "envelopes": (_envelope_parser(sim_keys), _envelope_seeds(sim_keys, generate_signing_key()),
                      (ENVELOPE_HEADER, _inner_ct_mutator), _check_decrypted),
        "ciphertext": (ct_parse, [sim_keys.encrypt(np.arange(8.0)).to_bytes()], (CT_HEADER,),
                       _check_decrypted),
        "key files": (_keyfile_parser, _keyfile_seeds(sim_keys),
                      (KEYFILE_HEADER, _plain_keyfile_body), _check_keys(sim_keys)),
        "public bundles": (_bundle_parser, [sim_keys.public_bundle().to_bytes(),
                                            seal_keys.public_bundle().to_bytes()],
                           (BUNDLE_HEADER,), _check_bundle),
        "seal ciphertexts": (_envelope_parser(sim_keys, seal_keys),
                             [ev.pack_ciphertext(seal_keys.encrypt(np.linspace(-1, 1, 16)))],
                             (_inner_ct_mutator, ENVELOPE_HEADER), _check_decrypted),
        "seal key files": (_keyfile_parser, _keyfile_seeds(seal_keys),
                           (KEYFILE_HEADER, _plain_keyfile_body), _check_keys(seal_keys)),
    }[fmt]
    parse, seeds, mutators, check = cfg
    stats = run_fuzz(parse, seeds, n=SLOW_N, time_limit_s=5.0, mem_limit_mb=MEM_MB,
                     mutators=mutators, check=check, name=fmt, seed=17)
    with capsys.disabled():
        print("\n" + stats.summary())
    stats.assert_clean()


# -- hypothesis: hostile JSON in any field of the inner ciphertext header -----------------------------

from fuzzing import check_one
from hypothesis import given, settings
from hypothesis import strategies as st

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_CT_FIELDS = ["backend", "key_id", "params", "level", "length", "complex", "layout",
              "layout.gap", "layout.offset", "layout.channels", "layout.channel_stride"]


@given(field=st.sampled_from(_CT_FIELDS), value=_json_values, drop=st.booleans())
@settings(deadline=None, max_examples=60)
def test_hostile_inner_header_values_give_typed_errors_or_valid_ciphertexts(sim_keys, field, value, drop):
    blob = sim_keys.encrypt(np.arange(8.0)).to_bytes()
    _, header, rest = _ct_split(blob)
    target, key = (header["layout"], field.split(".")[1]) if "." in field else (header, field)
    original = target[key]
    if drop:
        target.pop(key)
    else:
        target[key] = value
    be = sim_keys.backend

    def parse(b):
        ct = sim_keys.ciphertext_from_bytes(b)
        _check_ct(ct, be)
        return sim_keys.decrypt(ct)

    outcome, detail, _, _ = check_one(parse, _ct_join(b"", header, rest), time_limit_s=TIME_LIMIT,
                                      mem_limit_mb=MEM_MB, check=_check_decrypted)
    assert outcome in ("ok", "typed"), detail
    if outcome == "ok":  # only a value of the right type and range can pass
        assert not drop
        assert type(value) in (int, bool) or value == original
