"""Sealed key files: round trips, wrong passwords, every kind of damage refused with a typed error
saying which, no plaintext secret on disk, atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from privkit.errors import (
    KeyFileError,
    KeyMismatchError,
    ParameterError,
    PrivkitError,
    SecurityDowngradeError,
)
from privkit.fhe import CKKSParams, KeySet
from privkit.fhe import keyfile as kf
from privkit.fhe.envelope import key_fingerprint, pack_public_bundle
from privkit.fhe.keyfile import (
    Argon2idKDF,
    InsecureKeyFileWarning,
    ScryptKDF,
    argon2id_available,
    load_keyset,
    open_keyset,
    read_header,
    save_keyset,
    seal_keyset,
)

from .strategies import apply_mutation, byte_mutations

P = CKKSParams.preset("n8192")
CHEAP = ScryptKDF(n=2**10, r=8, p=1)  # tests only: ~2 ms per derivation
PW = "correct horse battery staple"
_HYP = settings(
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def seal_keys():
    return KeySet.generate(P, backend="seal", rotations=[], conjugation=False)


@pytest.fixture(scope="module")
def sim_keys():
    return KeySet.generate(P, backend="sim", rotations=[1, 2, -1])


def _sealed(keys, **kw) -> bytes:
    kw.setdefault("kdf", CHEAP)
    return b"".join(seal_keyset(keys, PW, **kw))


def _reason(exc_info) -> str:
    return getattr(exc_info.value, "reason", None)


# -- round trips ---------------------------------------------------------------------------------


def test_roundtrip_sim(tmp_path, sim_keys):
    path = tmp_path / "client.keys"
    sim_keys.save(path, password=PW, kdf=CHEAP)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    back = KeySet.load(path, password=PW)
    assert back.key_id == sim_keys.key_id
    assert back.rotation_steps == sim_keys.rotation_steps
    assert back.params == sim_keys.params
    x = np.arange(5.0)
    np.testing.assert_allclose(
        back.decrypt(back.backend.rotate(back.encrypt(x), 1)),
        np.roll(np.r_[x, np.zeros(P.slots - 5)], -1)[:5],
    )
    # ciphertexts of the original key set are accepted by the reloaded one and vice versa
    np.testing.assert_allclose(back.decrypt(sim_keys.encrypt(x)), x)
    np.testing.assert_allclose(sim_keys.decrypt(back.encrypt(x)), x)


@pytest.mark.seal
def test_roundtrip_seal(tmp_path, seal_keys):
    path = tmp_path / "client.keys"
    seal_keys.save(path, password=PW, kdf=CHEAP)
    back = KeySet.load(path, password=PW)
    assert back.key_id == seal_keys.key_id
    assert key_fingerprint(back) == key_fingerprint(seal_keys)
    assert back.public_bundle().to_bytes() == seal_keys.public_bundle().to_bytes()
    assert back.secret_key_bytes() == seal_keys.secret_key_bytes()
    x = np.linspace(-1, 1, 64)
    np.testing.assert_allclose(back.decrypt(seal_keys.encrypt(x)), x, atol=1e-5)
    np.testing.assert_allclose(seal_keys.decrypt(back.encrypt(x)), x, atol=1e-5)
    ct = back.backend.mul(back.encrypt(x), back.encrypt(x))
    np.testing.assert_allclose(back.decrypt(ct), x * x, atol=1e-4)
    # the reloaded bundle is public only
    assert not back.public_bundle().backend.can_decrypt


def test_default_kdf_is_scrypt_2_17(tmp_path, sim_keys):
    path = tmp_path / "k.keys"
    sim_keys.save(path, password=PW)
    info = read_header(path)
    assert info.protection == "aes-256-gcm"
    assert info.kdf == "scrypt n=2^17 r=8 p=1 (128 MiB)"
    assert KeySet.load(path, password=PW).key_id == sim_keys.key_id


@pytest.mark.skipif(not argon2id_available(), reason="cryptography without Argon2id")
def test_argon2id_roundtrip(tmp_path, sim_keys):
    path = tmp_path / "k.keys"
    sim_keys.save(path, password=PW, kdf=Argon2idKDF(iterations=1, lanes=1, memory_cost=1024))
    assert read_header(path).kdf.startswith("argon2id")
    assert KeySet.load(path, password=PW).key_id == sim_keys.key_id
    with pytest.raises(KeyFileError) as e:
        KeySet.load(path, password="nope")
    assert _reason(e) == "wrong-password"


def test_unicode_password_is_normalised(tmp_path, sim_keys):
    path = tmp_path / "k.keys"
    sim_keys.save(path, password="caf\u00e9", kdf=CHEAP)  # precomposed
    assert KeySet.load(path, password="cafe\u0301").key_id == sim_keys.key_id  # decomposed
    assert KeySet.load(path, password="caf\u00e9".encode()).key_id == sim_keys.key_id


def test_header_states_public_facts_only(sim_keys):
    info = read_header(_sealed(sim_keys))
    assert info.key_id == sim_keys.key_id
    assert info.params == P
    assert info.rotations == tuple(sorted(sim_keys.rotation_steps))
    assert info.fingerprint == key_fingerprint(sim_keys)


# -- passwords -----------------------------------------------------------------------------------


def test_wrong_password(sim_keys):
    blob = _sealed(sim_keys)
    with pytest.raises(KeyFileError, match="wrong password") as e:
        open_keyset(blob, "Correct horse battery staple")
    assert _reason(e) == "wrong-password"


def test_password_required_to_open(sim_keys):
    with pytest.raises(KeyFileError, match="password-protected") as e:
        open_keyset(_sealed(sim_keys), None)
    assert _reason(e) == "password-required"


def test_saving_without_password_is_refused(tmp_path, sim_keys):
    path = tmp_path / "k.keys"
    with pytest.raises(ParameterError, match="without a password"):
        sim_keys.save(path)
    with pytest.raises(ParameterError, match="empty"):
        sim_keys.save(path, password="")
    with pytest.raises(ParameterError, match="not both"):
        sim_keys.save(path, password=PW, insecure_plaintext=True)
    assert not path.exists() and not list(tmp_path.iterdir())


def test_insecure_plaintext_warns_and_roundtrips(tmp_path, sim_keys):
    path = tmp_path / "k.keys"
    with pytest.warns(InsecureKeyFileWarning, match="WITHOUT encryption"):
        sim_keys.save(path, insecure_plaintext=True)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read_header(path).protection == "none"
    # refused by default (issue 17: a swapped-in plaintext file must not be accepted silently)
    with pytest.raises(SecurityDowngradeError, match="allow_plaintext=True"):
        KeySet.load(path)
    with pytest.raises(SecurityDowngradeError, match="allow_plaintext=True"):
        KeySet.load(path, password=PW)
    with pytest.warns(InsecureKeyFileWarning, match="NOT encrypted"):
        back = KeySet.load(path, allow_plaintext=True)
    assert back.key_id == sim_keys.key_id


def test_bad_kdf_costs_refused(sim_keys):
    for bad in ({"n": 1000}, {"n": 2**9}, {"n": 2**21}, {"r": 0}, {"p": 99}):
        with pytest.raises(ParameterError):
            ScryptKDF(**bad)
    with pytest.raises(ParameterError):
        Argon2idKDF(memory_cost=4)
    with pytest.raises(ParameterError):
        b"".join(seal_keyset(sim_keys, PW, kdf="scrypt"))


# -- no plaintext secret on disk -----------------------------------------------------------------


@pytest.mark.seal
def test_sealed_file_holds_no_plaintext_secret(tmp_path, seal_keys):
    path = tmp_path / "k.keys"
    seal_keys.save(path, password=PW, kdf=CHEAP)
    data = path.read_bytes()
    secret = seal_keys.secret_key_bytes()
    assert len(secret) > 10_000
    assert secret not in data
    # not even a 32-byte window of it (sampled all along the key)
    for i in range(0, len(secret) - 32, 997):
        assert secret[i : i + 32] not in data, f"secret key bytes {i}..{i + 32} found in the file"
    assert PW.encode() not in data
    # control: the same search finds the key in an insecure plaintext file
    plain = tmp_path / "plain.keys"
    with pytest.warns(InsecureKeyFileWarning):
        seal_keys.save(plain, insecure_plaintext=True)
    assert secret in plain.read_bytes()


def test_sim_sealed_file_holds_no_plaintext_secret(sim_keys):
    # the simulator's "secret" is its key id, which the header states on purpose; the body must
    # still be ciphertext: the bundle header (JSON) must not be readable
    blob = _sealed(sim_keys)
    body = blob[len(blob) - read_header(blob).body_len :]
    assert b"rotations" not in body and b"PKBUNDLE" not in body


# -- damage: each case with the reason it reports --------------------------------------------------


def _header_bounds(blob: bytes) -> tuple[int, int]:
    (hlen,) = struct.unpack_from("<I", blob, 10)
    return 14, 14 + hlen


def test_damage_reasons(sim_keys, seal_keys):
    blob = _sealed(seal_keys, chunk_size=64 * 1024)
    h0, h1 = _header_bounds(blob)
    cases = {
        "truncated": [
            blob[:5],
            blob[:12],
            blob[: h1 - 3],
            blob[: h1 + 10],
            blob[:-1],
            blob[: len(blob) // 2],
        ],
        "appended": [blob + b"\0", blob + blob[-100:]],
        "header": [
            blob[: h0 + 3] + bytes([blob[h0 + 3] ^ 1]) + blob[h0 + 4 :],
            blob[: h1 + 5] + bytes([blob[h1 + 5] ^ 1]) + blob[h1 + 6 :],
        ],
        "corrupted": [
            blob[:-20] + bytes([blob[-20] ^ 0x40]) + blob[-19:],
            blob[: h1 + 40] + bytes([blob[h1 + 40] ^ 1]) + blob[h1 + 41 :],
        ],
        "not-a-key-file": [
            b"hello world, this is not a key file",
            b"",
            pack_public_bundle(sim_keys.public_bundle()),
        ],
        "version": [blob[:8] + struct.pack("<H", 2) + blob[10:]],
    }
    for reason, blobs in cases.items():
        for b in blobs:
            with pytest.raises(KeyFileError) as e:
                open_keyset(b, PW)
            assert _reason(e) == reason, (reason, str(e.value))


def test_missing_file(tmp_path):
    with pytest.raises(KeyFileError, match="no key file") as e:
        load_keyset(tmp_path / "nope.keys", PW)
    assert _reason(e) == "missing"


def _rewrite_header(blob: bytes, change) -> bytes:
    """What an attacker can do: edit the header and recompute its (unkeyed) checksum."""
    h0, h1 = _header_bounds(blob)
    header = json.loads(blob[h0:h1])
    change(header)
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    head = blob[:10] + struct.pack("<I", len(raw)) + raw
    return head + hashlib.sha256(head).digest() + blob[h1 + 32 :]


def test_header_is_bound_to_the_encrypted_keys(sim_keys, seal_keys):
    """Changing the stated parameters or key id (with a valid checksum) fails authentication."""
    blob = _sealed(seal_keys)
    other = KeySet.generate("n16384", backend="sim", rotations=[])

    def swap_params(h):
        h["params"] = other.params.to_dict()
        h["params_fingerprint"] = other.params.fingerprint()

    def swap_key(h):
        h["key_id"] = sim_keys.key_id

    def swap_rotations(h):
        h["rotations"] = [1, 2, 4]

    for change in (swap_params, swap_key, swap_rotations):
        with pytest.raises(KeyFileError) as e:
            open_keyset(_rewrite_header(blob, change), PW)
        assert _reason(e) == "corrupted", str(e.value)


def test_hostile_kdf_cost_refused_before_derivation(sim_keys, monkeypatch):
    blob = _sealed(sim_keys)

    def huge(h):
        h["kdf"]["n"] = 2**40

    def boom(*a, **k):  # pragma: no cover - must not run
        raise AssertionError("KDF ran with a hostile cost")

    monkeypatch.setattr(ScryptKDF, "derive", boom)
    with pytest.raises(KeyFileError) as e:
        open_keyset(_rewrite_header(blob, huge), PW)
    assert _reason(e) == "header"


@pytest.mark.seal
def test_chunks_cannot_be_reordered(seal_keys):
    chunk = 64 * 1024
    blob = _sealed(seal_keys, chunk_size=chunk)
    body_at = len(blob) - read_header(blob).body_len
    c = chunk + 16
    a, b = body_at, body_at + c
    swapped = blob[:a] + blob[b : b + c] + blob[a:b] + blob[b + c :]
    with pytest.raises(KeyFileError, match="chunk 1 of") as e:
        open_keyset(swapped, PW)
    assert _reason(e) == "corrupted"
    assert open_keyset(blob, PW).key_id == seal_keys.key_id


@pytest.mark.seal
@given(m=byte_mutations())
@_HYP
def test_every_mutation_of_a_sealed_seal_key_file_is_refused(seal_keys, m):
    blob = _sealed_seal_cache(seal_keys)
    bad = apply_mutation(blob, m)
    with pytest.raises(KeyFileError):
        open_keyset(bad, PW)


@given(m=byte_mutations())
@_HYP
def test_every_mutation_of_a_sealed_sim_key_file_is_refused(sim_keys, m):
    blob = _CACHE.setdefault(("sim", sim_keys.key_id), _sealed(sim_keys, chunk_size=1024))
    with pytest.raises(KeyFileError):
        open_keyset(apply_mutation(blob, m), PW)


@given(m=byte_mutations())
@_HYP
def test_every_mutation_of_a_plaintext_key_file_is_refused(sim_keys, m):
    key = ("plain", sim_keys.key_id)
    if key not in _CACHE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureKeyFileWarning)
            _CACHE[key] = b"".join(seal_keyset(sim_keys, insecure_plaintext=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyFileWarning)
        with pytest.raises(KeyFileError):
            open_keyset(apply_mutation(_CACHE[key], m), None, allow_plaintext=True)


_CACHE: dict = {}


def _sealed_seal_cache(keys) -> bytes:
    key = ("seal", keys.key_id)
    if key not in _CACHE:
        _CACHE[key] = _sealed(keys, chunk_size=256 * 1024)
    return _CACHE[key]


# -- rebuilding from parts -------------------------------------------------------------------------


@pytest.mark.seal
def test_from_parts_refuses_a_foreign_secret(seal_keys):
    other = KeySet.generate(P, backend="seal", rotations=[], conjugation=False)
    with pytest.raises(KeyMismatchError, match="does not belong"):
        KeySet.from_parts(seal_keys.public_bundle(), other.secret_key_bytes())
    back = KeySet.from_parts(seal_keys.public_bundle(), seal_keys.secret_key_bytes())
    assert back.key_id == seal_keys.key_id
    # the original bundle did not gain the ability to decrypt
    assert not seal_keys.public_bundle().backend.can_decrypt


def test_from_parts_sim(sim_keys):
    other = KeySet.generate(P, backend="sim")
    with pytest.raises(KeyMismatchError):
        KeySet.from_parts(sim_keys.public_bundle(), other.secret_key_bytes())
    back = KeySet.from_parts(sim_keys.public_bundle(), sim_keys.secret_key_bytes())
    assert back.decrypt(sim_keys.encrypt([3.0]))[0] == pytest.approx(3.0)


# -- atomic writes -------------------------------------------------------------------------------


def _interrupt_after(monkeypatch, n_chunks: int):
    real = kf._encrypt_chunks

    def flaky(*args, **kwargs):
        for i, c in enumerate(real(*args, **kwargs)):
            if i == n_chunks:
                raise KeyboardInterrupt("simulated crash mid-write")
            yield c

    monkeypatch.setattr(kf, "_encrypt_chunks", flaky)


def test_interrupted_save_leaves_no_file(tmp_path, sim_keys, monkeypatch):
    path = tmp_path / "k.keys"
    _interrupt_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        save_keyset(sim_keys, path, PW, kdf=CHEAP, chunk_size=1024)
    assert list(tmp_path.iterdir()) == [], "a partial or temporary file was left behind"


def test_interrupted_save_keeps_the_old_file(tmp_path, sim_keys, monkeypatch):
    path = tmp_path / "k.keys"
    sim_keys.save(path, password=PW, kdf=CHEAP)
    before = path.read_bytes()
    _interrupt_after(monkeypatch, 1)
    other = KeySet.generate(P, backend="sim")
    with pytest.raises(KeyboardInterrupt):
        save_keyset(other, path, PW, kdf=CHEAP, chunk_size=1024)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["k.keys"]
    assert KeySet.load(path, PW).key_id == sim_keys.key_id


def test_failed_fsync_leaves_no_file(tmp_path, sim_keys, monkeypatch):
    path = tmp_path / "k.keys"

    def bad_fsync(fd):
        raise OSError(5, "simulated I/O error")

    monkeypatch.setattr(os, "fsync", bad_fsync)
    with pytest.raises(OSError):
        sim_keys.save(path, password=PW, kdf=CHEAP)
    assert list(tmp_path.iterdir()) == []


def test_errors_are_privkit_errors():
    assert issubclass(KeyFileError, PrivkitError)
