"""Envelopes: round trips for every kind, binding to key fingerprints, Ed25519 signatures, and
every mutation of every kind refused with a typed error (never a crash, never a wrong value)."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from privkit.api import (
    PrivacyReport,
    PrivateModel,
    atomic_write_bytes,
    load_state,
    save_state,
)
from privkit.errors import (
    DataFormatError,
    EnvelopeError,
    KeyMismatchError,
    ParameterError,
    PrivkitError,
)
from privkit.fhe import CKKSParams, KeySet, PublicBundle
from privkit.fhe import envelope as ev
from privkit.fhe.envelope import (
    generate_signing_key,
    key_fingerprint,
    open_envelope,
    pack_ciphertext,
    pack_ciphertexts,
    pack_dataset,
    pack_public_bundle,
    read_envelope,
    seal_envelope,
    signer_id,
    unpack_ciphertext,
    unpack_ciphertexts,
    unpack_dataset,
    unpack_public_bundle,
    write_envelope,
)

from .strategies import apply_mutation, byte_mutations

P = CKKSParams.preset("n8192")
_HYP = settings(
    max_examples=40,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def sim_keys():
    return KeySet.generate(P, backend="sim", rotations=[1])


@pytest.fixture(scope="module")
def seal_keys():
    return KeySet.generate(P, backend="seal", rotations=[], conjugation=False)


@pytest.fixture(scope="module")
def owner():
    return generate_signing_key()


def _reason(e) -> str:
    return getattr(e.value, "reason", None)


# -- generic -------------------------------------------------------------------------------------


def test_seal_open_roundtrip_and_overhead():
    blob = seal_envelope("result", b"payload", "fp-1", meta={"n": 3, "s": "x"})
    env = open_envelope(blob, "result", "fp-1")
    assert (env.kind, env.fingerprint, env.payload, env.meta) == (
        "result",
        "fp-1",
        b"payload",
        {"n": 3, "s": "x"},
    )
    assert env.signer is None and not env.verified
    assert env.size == len(blob) and env.overhead == len(blob) - 7
    assert env.version == ev.FORMAT_VERSION
    assert open_envelope(blob, ("ciphertext", "result")).kind == "result"
    # deterministic: the same inputs give the same bytes
    assert seal_envelope("result", b"payload", "fp-1", meta={"s": "x", "n": 3}) == blob


def test_kind_and_fingerprint_checks():
    blob = seal_envelope("model", b"abc", "svae")
    with pytest.raises(EnvelopeError, match="holds a 'model', expected 'dataset'") as e:
        open_envelope(blob, "dataset")
    assert _reason(e) == "kind"
    with pytest.raises(KeyMismatchError, match="'svae'.*'anon'") as e:
        open_envelope(blob, "model", "anon")
    assert _reason(e) == "fingerprint"


def test_bad_arguments():
    with pytest.raises(ParameterError):
        seal_envelope("secret-key", b"", "fp")
    with pytest.raises(ParameterError):
        seal_envelope("model", b"", "")
    with pytest.raises(ParameterError):
        seal_envelope("model", b"", "caf\u00e9")
    with pytest.raises(ParameterError):
        seal_envelope("model", "text", "fp")
    with pytest.raises(ParameterError):
        seal_envelope("model", b"", "fp", meta={"x": object()})
    with pytest.raises(ParameterError):
        seal_envelope("model", b"", "fp", sign_with=b"\0" * 32)


def test_other_privkit_formats_get_a_useful_message(sim_keys, tmp_path):
    with pytest.raises(EnvelopeError, match="raw privkit object"):
        open_envelope(sim_keys.public_bundle().to_bytes())
    with pytest.raises(EnvelopeError, match="raw privkit object"):
        open_envelope(sim_keys.encrypt([1.0]).to_bytes())
    path = tmp_path / "k.keys"
    from privkit.fhe.keyfile import ScryptKDF

    sim_keys.save(path, password="pw", kdf=ScryptKDF(n=2**10))
    with pytest.raises(EnvelopeError, match="sealed privkit key file"):
        open_envelope(path.read_bytes())
    with pytest.raises(EnvelopeError, match="bad magic"):
        open_envelope(b"GIF89a....")


# -- public bundles ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sim", "seal"])
def test_public_bundle_roundtrip(backend, sim_keys, seal_keys):
    keys = sim_keys if backend == "sim" else seal_keys
    blob = pack_public_bundle(keys.public_bundle())
    # simulator bundles are refused by a server unless explicitly allowed (issue 17)
    bundle = unpack_public_bundle(blob, expected_fingerprint=key_fingerprint(keys),
                                  allow_insecure=backend == "sim")
    assert bundle.to_bytes() == keys.public_bundle().to_bytes()
    assert key_fingerprint(bundle) == key_fingerprint(keys)
    assert not bundle.backend.can_decrypt
    # methods on PublicBundle do the same
    assert PublicBundle.from_envelope(keys.public_bundle().to_envelope(),
                                      allow_insecure=backend == "sim").key_id == keys.key_id
    # the server computes, the client decrypts
    x = np.array([0.5, -1.0, 2.0])
    ct = unpack_ciphertext(pack_ciphertext(keys.encrypt(x)), bundle)
    out = bundle.backend.add_plain(bundle.backend.mul_plain(ct, 2.0), 1.0)
    back = unpack_ciphertext(pack_ciphertext(out, kind="result"), keys, kind="result")
    np.testing.assert_allclose(keys.decrypt(back), 2 * x + 1, atol=1e-4)


def test_pinned_bundle_fingerprint(sim_keys):
    other = KeySet.generate(P, backend="sim")
    with pytest.raises(KeyMismatchError) as e:
        unpack_public_bundle(
            pack_public_bundle(other.public_bundle()),
            expected_fingerprint=key_fingerprint(sim_keys),
        )
    assert key_fingerprint(sim_keys) in str(e.value) and key_fingerprint(other) in str(e.value)


def test_bundle_disagreeing_with_its_fingerprint_is_refused(sim_keys):
    other = KeySet.generate(P, backend="sim")
    blob = seal_envelope(
        "public-bundle", other.public_bundle().to_bytes(), key_fingerprint(sim_keys)
    )
    with pytest.raises(EnvelopeError, match="bundle inside") as e:
        unpack_public_bundle(blob)
    assert _reason(e) == "payload"


@pytest.mark.seal
def test_bundle_with_swapped_public_key_is_refused(seal_keys):
    """A bundle whose key id does not match its public key (keys swapped inside) is refused."""
    other = KeySet.generate(P, backend="seal", rotations=[], conjugation=False)
    b = seal_keys.public_bundle()
    blobs = dict(b._blobs, public_key=other.public_bundle()._blobs["public_key"])
    forged = PublicBundle(b.params, "seal", b.key_id, b.rotation_steps, b.conjugation, blobs)
    with pytest.raises(EnvelopeError, match="altered"):
        PublicBundle.from_bytes(forged.to_bytes())


# -- ciphertexts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sim", "seal"])
def test_ciphertext_roundtrip(backend, sim_keys, seal_keys):
    keys = sim_keys if backend == "sim" else seal_keys
    x = np.linspace(-2, 2, 100)
    ct = keys.backend.mul_plain(keys.encrypt(x), 0.5)
    blob = pack_ciphertext(ct)
    env = open_envelope(blob, "ciphertext", key_fingerprint(keys))
    assert env.meta["count"] == 1 and env.meta["levels"] == [ct.level]
    back = unpack_ciphertext(blob, keys)
    assert (back.level, back.length, back.layout) == (ct.level, ct.length, ct.layout)
    np.testing.assert_allclose(keys.decrypt(back), x / 2, atol=1e-4)


def test_results_hold_several_ciphertexts(sim_keys):
    xs = [np.arange(3.0) + i for i in range(3)]
    blob = pack_ciphertexts([sim_keys.encrypt(x) for x in xs])
    assert open_envelope(blob).kind == "result"
    outs = unpack_ciphertexts(blob, sim_keys)
    for x, c in zip(xs, outs, strict=True):
        np.testing.assert_allclose(sim_keys.decrypt(c), x)
    with pytest.raises(EnvelopeError, match="holds 3 ciphertexts"):
        unpack_ciphertext(blob, sim_keys)
    with pytest.raises(EnvelopeError, match="expected 'ciphertext'"):
        unpack_ciphertexts(blob, sim_keys, kind="ciphertext")


def test_cannot_pack_mixed_key_sets(sim_keys):
    other = KeySet.generate(P, backend="sim")
    with pytest.raises(KeyMismatchError):
        pack_ciphertexts([sim_keys.encrypt([1.0]), other.encrypt([1.0])])
    with pytest.raises(ParameterError):
        pack_ciphertexts([])
    with pytest.raises(ParameterError):
        pack_ciphertext(sim_keys.encrypt([1.0]), kind="model")


@pytest.mark.parametrize("other_kind", ["same params, other keys", "other params", "seal vs sim"])
def test_ciphertext_from_another_key_set_refused_before_computation(
    other_kind, sim_keys, seal_keys, monkeypatch
):
    if other_kind == "same params, other keys":
        other = KeySet.generate(P, backend="sim")
    elif other_kind == "other params":
        other = KeySet.generate("n16384", backend="sim", rotations=[])
    else:
        other = seal_keys
    blob = pack_ciphertext(other.encrypt([1.0, 2.0]))
    target = sim_keys.public_bundle()

    def must_not_run(*a, **k):  # pragma: no cover - must not run
        raise AssertionError("deserialised a ciphertext of another key set")

    monkeypatch.setattr(target.backend, "deserialize_ciphertext", must_not_run)
    with pytest.raises(KeyMismatchError) as e:
        unpack_ciphertext(blob, target)
    msg = str(e.value)
    assert key_fingerprint(other) in msg and key_fingerprint(sim_keys) in msg, msg
    assert _reason(e) == "fingerprint"


# -- signatures ----------------------------------------------------------------------------------


def test_signed_envelopes(sim_keys, owner):
    blob = pack_public_bundle(sim_keys.public_bundle(), sign_with=owner)
    env = open_envelope(blob, verify_with=owner.public_key())
    assert env.verified and env.signer == signer_id(owner)
    assert open_envelope(blob, verify_with=bytes.fromhex(signer_id(owner))).verified  # raw key
    unverified = open_envelope(blob)
    assert unverified.signer == signer_id(owner) and not unverified.verified
    assert unpack_public_bundle(blob, verify_with=owner.public_key(),
                                allow_insecure=True).key_id == sim_keys.key_id

    stranger = generate_signing_key()
    with pytest.raises(EnvelopeError, match="not by the expected key") as e:
        open_envelope(blob, verify_with=stranger.public_key())
    assert _reason(e) == "signature"
    unsigned = pack_public_bundle(sim_keys.public_bundle())
    with pytest.raises(EnvelopeError, match="not signed") as e:
        open_envelope(unsigned, verify_with=owner.public_key())
    assert _reason(e) == "signature"


def test_swapped_bundle_caught_by_signature(sim_keys, owner):
    """An attacker can rebuild a valid digest, but not the owner's signature."""
    attacker_keys = KeySet.generate(P, backend="sim")
    mallory = generate_signing_key()
    # 1. re-signed with the attacker's key
    forged = pack_public_bundle(attacker_keys.public_bundle(), sign_with=mallory)
    with pytest.raises(EnvelopeError, match="not by the expected key"):
        unpack_public_bundle(forged, verify_with=owner.public_key())
    # 2. the attacker keeps the owner's signer id and signature but swaps the payload
    real = pack_public_bundle(sim_keys.public_bundle(), sign_with=owner)
    env = open_envelope(real)
    swapped = ev.seal_envelope(
        "public-bundle",
        attacker_keys.public_bundle().to_bytes(),
        key_fingerprint(attacker_keys),
        meta=env.meta,
        sign_with=mallory,
    )
    head_len = len(swapped) - 96
    head = swapped[:head_len].replace(signer_id(mallory).encode(), signer_id(owner).encode())
    import hashlib

    digest = hashlib.sha256(head).digest()
    spliced = head + digest + real[-64:]
    with pytest.raises(EnvelopeError, match="invalid") as e:
        unpack_public_bundle(spliced, verify_with=owner.public_key())
    assert _reason(e) == "signature"
    # without verify_with the embedded signature is still checked
    with pytest.raises(EnvelopeError, match="invalid"):
        open_envelope(spliced)


def test_signed_ciphertexts(sim_keys, owner):
    blob = pack_ciphertext(sim_keys.encrypt([1.0]), sign_with=owner)
    ct = unpack_ciphertext(blob, sim_keys, verify_with=owner.public_key())
    assert sim_keys.decrypt(ct)[0] == pytest.approx(1.0)


# -- models and datasets ---------------------------------------------------------------------------


class _Tiny(PrivateModel):
    model_kind = "tiny-test-model"

    def __init__(self, w=None):
        import torch

        self.w = torch.arange(6.0).reshape(2, 3) if w is None else w

    def fit(self, *a, **k):
        return self

    def evaluate(self, *a, **k):
        return {}

    def privacy_report(self):
        return PrivacyReport(kind="none")

    def _get_state(self):
        return {"w": self.w, "note": "hello"}

    @classmethod
    def _from_state(cls, state):
        assert state["note"] == "hello"
        return cls(state["w"])


def test_model_checkpoint_is_a_model_envelope(tmp_path, owner):
    import torch

    path = tmp_path / "m.pkm"
    _Tiny().save(path)
    env = read_envelope(path, "model", "tiny-test-model")
    assert env.meta["model_kind"] == "tiny-test-model"
    assert torch.equal(_Tiny.load(path).w, _Tiny().w)
    # signed
    _Tiny().save(path, sign_with=owner)
    assert torch.equal(_Tiny.load(path, verify_with=owner.public_key()).w, _Tiny().w)
    with pytest.raises(EnvelopeError, match="not by the expected key"):
        _Tiny.load(path, verify_with=generate_signing_key().public_key())


def test_model_file_errors(tmp_path):
    path = tmp_path / "m.pkm"
    with pytest.raises(DataFormatError, match="does not exist"):
        load_state(path, "x")
    save_state(path, "kind-a", {"v": 1})
    assert load_state(path, "kind-a") == {"v": 1}
    with pytest.raises(DataFormatError, match="holds a 'kind-a' model, not a 'kind-b'"):
        load_state(path, "kind-b")
    blob = path.read_bytes()
    path.write_bytes(blob[:-10])
    with pytest.raises(DataFormatError, match="truncated") as e:
        load_state(path, "kind-a")
    assert isinstance(e.value.__cause__, EnvelopeError)
    path.write_bytes(b"PK\x03\x04 a zip file, say an old torch checkpoint")
    with pytest.raises(DataFormatError, match="no privkit envelope"):
        load_state(path, "kind-a")
    path.write_bytes(seal_envelope("dataset", b"x", "kind-a"))
    with pytest.raises(DataFormatError, match="'dataset' envelope"):
        load_state(path, "kind-a")


def test_dataset_roundtrip(owner):
    arrays = {
        "x": np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32),
        "y": np.arange(10),
        "names": np.array(["a", "bb"]),
    }
    blob = pack_dataset(arrays, fingerprint="anonymiser-v1", meta={"subjects": 24}, sign_with=owner)
    out, meta = unpack_dataset(
        blob, expected_fingerprint="anonymiser-v1", verify_with=owner.public_key()
    )
    assert set(out) == set(arrays)
    for k in arrays:
        np.testing.assert_array_equal(out[k], arrays[k])
        assert out[k].dtype == arrays[k].dtype
    assert meta["subjects"] == 24 and meta["arrays"]["x"] == ["float32", [10, 3]]
    with pytest.raises(ParameterError):
        pack_dataset({"o": np.array([object()])})
    with pytest.raises(ParameterError):
        pack_dataset({})


def test_write_and_read_envelope(tmp_path, sim_keys):
    path = tmp_path / "bundle.pkb"
    write_envelope(path, pack_public_bundle(sim_keys.public_bundle()))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert read_envelope(path, "public-bundle").fingerprint == key_fingerprint(sim_keys)
    with pytest.raises(ParameterError):
        write_envelope(path, b"raw bytes")


# -- mutations: every kind of file, every kind of damage -------------------------------------------


def _model_blob():
    import io

    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.ones(4)}, buf)
    return seal_envelope("model", buf.getvalue(), "m", meta={"model_kind": "m"})


_BLOBS: dict = {}


def _blob(kind, sim_keys, seal_keys, owner):
    if kind not in _BLOBS:
        x = np.linspace(-1, 1, 32)
        _BLOBS[kind] = {
            "public-bundle (seal)": lambda: pack_public_bundle(seal_keys.public_bundle()),
            "public-bundle (sim, signed)": lambda: pack_public_bundle(
                sim_keys.public_bundle(), sign_with=owner
            ),
            "ciphertext (seal)": lambda: pack_ciphertext(seal_keys.encrypt(x)),
            "ciphertext (sim)": lambda: pack_ciphertext(sim_keys.encrypt(x)),
            "result (seal, 2)": lambda: pack_ciphertexts(
                [seal_keys.encrypt(x), seal_keys.encrypt(-x)]
            ),
            "model": _model_blob,
            "dataset": lambda: pack_dataset({"a": np.arange(20.0)}),
        }[kind]()
    return _BLOBS[kind]


def _open_typed(kind, blob, sim_keys, seal_keys, owner):
    if kind.startswith("public-bundle"):
        return unpack_public_bundle(
            blob, verify_with=owner.public_key() if "signed" in kind else None, allow_insecure=True
        )
    if kind.startswith(("ciphertext", "result")):
        keys = seal_keys if "seal" in kind else sim_keys
        return [keys.decrypt(c) for c in unpack_ciphertexts(blob, keys)]
    if kind == "dataset":
        return unpack_dataset(blob)
    return open_envelope(blob, "model", "m")


_MUTATED_KINDS = [
    "public-bundle (seal)",
    "public-bundle (sim, signed)",
    "ciphertext (seal)",
    "ciphertext (sim)",
    "result (seal, 2)",
    "model",
    "dataset",
]


@pytest.mark.parametrize("kind", _MUTATED_KINDS)
def test_unmutated_blobs_open(kind, sim_keys, seal_keys, owner):
    assert (
        _open_typed(kind, _blob(kind, sim_keys, seal_keys, owner), sim_keys, seal_keys, owner)
        is not None
    )


@pytest.mark.parametrize("kind", _MUTATED_KINDS)
@given(m=byte_mutations())
@_HYP
def test_every_mutation_is_refused_with_a_typed_error(kind, m, sim_keys, seal_keys, owner):
    bad = apply_mutation(_blob(kind, sim_keys, seal_keys, owner), m)
    with pytest.raises(PrivkitError) as e:
        _open_typed(kind, bad, sim_keys, seal_keys, owner)
    assert isinstance(e.value, (EnvelopeError, KeyMismatchError))


def test_model_file_mutations_are_data_format_errors(tmp_path):
    path = tmp_path / "m.pkm"
    save_state(path, "k", {"v": 2})
    blob = path.read_bytes()
    for i in (0, 9, 20, len(blob) // 2, len(blob) - 1):
        path.write_bytes(blob[:i] + bytes([blob[i] ^ 4]) + blob[i + 1 :])
        with pytest.raises(DataFormatError):
            load_state(path, "k")


# -- atomic writes -------------------------------------------------------------------------------


def test_atomic_write_interrupted_mid_write(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old content")

    def chunks():
        yield b"new " * 1000
        raise RuntimeError("simulated crash mid-write")

    with pytest.raises(RuntimeError):
        atomic_write_bytes(path, chunks())
    assert path.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    atomic_write_bytes(path, [b"a", b"b", b"c"], mode=0o600)
    assert path.read_bytes() == b"abc" and stat.S_IMODE(os.stat(path).st_mode) == 0o600
