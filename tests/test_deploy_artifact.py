"""Saved programs and client specs (privkit.fhe.artifact) and the in-process Server / Client."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from deploy_models import (
    box_program,
    gap_program,
    image_program_2d,
    image_program_3d,
    small_program,
    tiny_seal_program,
    weights_of,
)

from privkit.deploy import Client, ClientSpec, Server
from privkit.errors import (
    EnvelopeError,
    InputRangeError,
    KeyMismatchError,
    MissingKeyError,
    PlanMismatchError,
    SecretKeyExposureError,
    SecurityDowngradeError,
    UnsupportedLayerError,
)
from privkit.fhe import KeySet
from privkit.fhe.envelope import open_envelope, seal_envelope
from privkit.fhe.program import EncryptedProgram
from privkit.testing import assert_close_encrypted


def _reseal(blob: bytes, edit) -> bytes:
    """Open a program envelope, edit its description, seal it again (a valid digest)."""
    env = open_envelope(blob, "program")
    (hlen,) = struct.unpack_from("<I", env.payload, 0)
    desc = json.loads(env.payload[4 : 4 + hlen])
    data = env.payload[4 + hlen :]
    edit(desc)
    head = json.dumps(desc).encode()
    return seal_envelope("program", struct.pack("<I", len(head)) + head + data, env.fingerprint)


def test_round_trip_sim_is_bit_identical(tmp_path):
    prog = small_program()
    prog.save(tmp_path / "p.pkprog")
    again = EncryptedProgram.load(tmp_path / "p.pkprog")
    assert again.plan_table() == prog.plan_table() and again.input_range == (-4.0, 4.0)
    keys = prog.keygen(backend="sim")
    for x in np.random.default_rng(0).normal(size=(4, 16)):
        a = prog.decrypt_output(keys, prog.run(prog.encrypt_input(keys, x), keys.public_bundle(), allow_insecure=True))
        b = again.decrypt_output(keys, again.run(again.encrypt_input(keys, x), keys.public_bundle(), allow_insecure=True))
        assert np.array_equal(a, b)


@pytest.mark.seal
def test_round_trip_seal_is_bit_identical():
    prog = tiny_seal_program()
    again = EncryptedProgram.from_bytes(prog.to_bytes())
    keys = Client(again.client_spec()).keygen(backend="seal")
    ct = prog.encrypt_input(keys, np.linspace(-1, 1, 16))
    a = keys.decrypt(prog.run(ct, keys.public_bundle(), allow_insecure=True))
    b = keys.decrypt(again.run(ct, keys.public_bundle(), allow_insecure=True))
    assert np.array_equal(a, b)


def test_signed_program(tmp_path):
    from privkit.fhe.envelope import generate_signing_key

    owner, other = generate_signing_key(), generate_signing_key()
    blob = small_program().to_bytes(sign_with=owner)
    assert EncryptedProgram.from_bytes(blob, verify_with=owner.public_key()).depth > 0
    with pytest.raises(EnvelopeError):
        EncryptedProgram.from_bytes(blob, verify_with=other.public_key())


def test_tampered_and_hostile_program_envelopes_are_refused():
    blob = small_program().to_bytes()
    bad = bytearray(blob)
    bad[len(bad) // 2] ^= 1
    with pytest.raises(EnvelopeError):
        EncryptedProgram.from_bytes(bytes(bad))

    def degree(d):  # a different PolyReLU: another depth, so another plan
        d["layers"][2]["args"]["degree"] = 7
    with pytest.raises(PlanMismatchError, match="plan"):
        EncryptedProgram.from_bytes(_reseal(blob, degree))

    def kind(d):
        d["layers"][0]["kind"] = "os.system"
    with pytest.raises(UnsupportedLayerError, match="os.system"):
        EncryptedProgram.from_bytes(_reseal(blob, kind))

    def huge(d):  # declares a weight far larger than the bytes present: refused before allocating
        d["layers"][5]["args"]["in_features"] = 10**7
    with pytest.raises(EnvelopeError, match="needs weight of shape"):
        EncryptedProgram.from_bytes(_reseal(blob, huge))

    def lie(d):
        d["tensors"][0]["nbytes"] += 8
    with pytest.raises(EnvelopeError, match="declared size"):
        EncryptedProgram.from_bytes(_reseal(blob, lie))

    def arg_type(d):
        d["layers"][0]["args"]["stride"] = "1; import os"
    with pytest.raises(EnvelopeError, match="wrong type"):
        EncryptedProgram.from_bytes(_reseal(blob, arg_type))


def test_client_spec_holds_no_weight(tmp_path):
    prog = small_program()
    spec = prog.client_spec()
    spec.save(tmp_path / "spec.env")
    blob = (tmp_path / "spec.env").read_bytes()
    assert ClientSpec.load(tmp_path / "spec.env") == spec
    client = Client(spec)
    client.keygen(backend="sim")
    client.save_keys(tmp_path / "k.keys", "pw")
    ct = client.encrypt(np.zeros(16))
    touched = [blob, client.bundle_envelope(), (tmp_path / "k.keys").read_bytes(),
               json.dumps(spec.to_dict()).encode(), repr(vars(client)).encode()]
    values = [w for w in weights_of(prog) if w not in (0.0, 1.0)]
    assert len(values) > 30
    for w in values:
        for art in touched:
            assert struct.pack("<d", w) not in art and repr(w).encode() not in art, w
    # the check can fail: the saved program does hold them
    full = prog.to_bytes()
    assert all(struct.pack("<d", w) in full for w in values)
    assert ct and client.decrypt  # the client works from the spec alone


def test_client_refuses_inputs_outside_the_calibrated_range():
    client = Client(small_program().client_spec())
    client.keygen(backend="sim")
    with pytest.raises(InputRangeError, match="calibrated"):
        client.encrypt(np.full(16, 9.0))
    with pytest.raises(InputRangeError):
        client.encrypt(np.full(16, np.nan))
    assert client.encrypt(np.full(16, 3.0))


def test_server_matches_the_program_and_refuses_what_it_must():
    prog = small_program()
    server = Server(prog, allow_insecure=True)
    client = Client(prog.client_spec())
    keys = client.keygen(backend="sim")
    kid = server.register(client.bundle_envelope())
    xs = np.random.default_rng(1).normal(size=(3, 16))
    got = client.decrypt(server.infer(client.encrypt_batch(list(xs)), kid))
    want = np.stack([prog.decrypt_output(keys, prog.run(prog.encrypt_input(keys, x), keys.public_bundle(), allow_insecure=True))
                     for x in xs])
    assert np.array_equal(got, want)
    # a secret key set, or its sealed key file, where a public bundle belongs
    with pytest.raises(SecretKeyExposureError):
        server.register(keys)
    with pytest.raises(SecretKeyExposureError):
        server.register(b"\x89PKKEY\r\n" + b"\0" * 64)
    # other parameters, missing rotations, simulator bundles without the opt-in
    other = KeySet.generate("n8192", backend="sim", rotations=prog.rotations)
    with pytest.raises(KeyMismatchError):
        server.register(other.public_bundle().to_envelope())
    few = KeySet.generate(prog.params, backend="sim", rotations=prog.rotations[:1])
    with pytest.raises(MissingKeyError):
        server.register(few.public_bundle().to_envelope())
    with pytest.raises(SecurityDowngradeError, match="SIMULATOR"):
        Server(prog).register(client.bundle_envelope())
    # tampered bundle / ciphertext envelopes; a ciphertext sent for another key set
    bad = bytearray(client.bundle_envelope())
    bad[-40] ^= 1
    with pytest.raises(EnvelopeError):
        server.register(bytes(bad))
    ct = bytearray(client.encrypt(xs[0]))
    ct[len(ct) // 2] ^= 4
    with pytest.raises(EnvelopeError):
        server.infer(bytes(ct), kid)
    c2 = Client(prog.client_spec())
    c2.keygen(backend="sim")
    k2 = server.register(c2.bundle_envelope())
    with pytest.raises(KeyMismatchError):
        server.infer(client.encrypt(xs[0]), k2)
    with pytest.raises(MissingKeyError):
        server.infer(Client(prog.client_spec(), KeySet.generate(
            prog.params, backend="sim", rotations=prog.rotations)).encrypt(xs[0]))


@pytest.mark.seal
def test_server_with_seal_keys_and_key_files(tmp_path):
    prog = tiny_seal_program()
    server = Server(EncryptedProgram.from_bytes(prog.to_bytes()), key_dir=tmp_path / "keys", cache_bytes=1)
    client = Client(prog.client_spec())
    client.keygen()
    client.save_keys(tmp_path / "c.keys", "secret")
    kid = server.register(client.bundle_envelope())
    again = Client(ClientSpec.from_bytes(prog.client_spec().to_bytes()))
    again.load_keys(tmp_path / "c.keys", "secret")
    x = np.linspace(-1, 1, 16)
    out = again.decrypt(server.infer(again.encrypt(x), kid))
    ref = prog._reference(__import__("torch").tensor(x).reshape(1, 1, 16)).detach().numpy()[0]
    assert np.abs(out - ref).max() < 1e-3


def test_a_missing_extra_names_itself(monkeypatch):
    import sys

    from privkit._optional import require
    from privkit.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(MissingDependencyError, match=r"privkit\[distributed\]"):
        require("ray")
    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(MissingDependencyError, match=r"privkit\[serve\]"):
        require("fastapi")


# -- image CNNs: N-D layers, N-D inputs, the summed-area-table input encoding ---------------------
_IMAGE = {"2d": (image_program_2d, (1, 10, 10)), "3d": (image_program_3d, (2, 4, 4, 4)),
          "box_sat": (box_program, (1, 6, 6))}


def _run(prog, keys, x):
    return prog.decrypt_output(keys, prog.run(prog.encrypt_input(keys, x), keys.public_bundle(), allow_insecure=True))


@pytest.mark.parametrize("which", sorted(_IMAGE))
def test_image_program_round_trip_and_client_from_spec(which, tmp_path):
    """Saved and loaded: the same plan, the same layers, bit-identical logits on the simulator;
    a Client built from the ClientSpec alone (no program) encrypts an image and decrypts the
    logits the program gives, which match torch."""
    import torch

    build, shape = _IMAGE[which]
    prog = build()
    prog.save(tmp_path / "p.pkprog")
    again = EncryptedProgram.load(tmp_path / "p.pkprog")
    assert again.plan_table() == prog.plan_table() and again.input_range == prog.input_range
    assert [type(m).__name__ for m in again._reference.modules()] == [type(m).__name__ for m in prog._reference.modules()]
    assert (again.input_encoding is not None) == (which == "box_sat")
    prog.client_spec().save(tmp_path / "spec.env")
    spec = ClientSpec.load(tmp_path / "spec.env")
    assert spec == prog.client_spec() and spec.input_shape == shape
    client = Client(spec)
    keys = client.keygen(backend="sim")
    server = Server(again, allow_insecure=True)
    kid = server.register(client.bundle_envelope())
    lo, hi = prog.input_range
    for x in np.random.default_rng(2).uniform(lo, hi, size=(2, *shape)):
        assert np.array_equal(spec.encode_input(x), prog.encode_input(x))  # one shared encoder
        a, b = _run(prog, keys, x), _run(again, keys, x)
        assert np.array_equal(a, b)
        got = client.decrypt(server.infer(client.encrypt(x), kid))
        assert np.array_equal(got, a)
        with torch.no_grad():
            ref = prog._reference(torch.as_tensor(x[None], dtype=torch.float64)).numpy()[0]
        np.testing.assert_allclose(got, ref, atol=1e-3 * max(1.0, np.abs(ref).max()))


def test_image_client_spec_holds_no_weight():
    prog = image_program_2d()
    art = prog.client_spec().to_bytes()
    values = [w for w in weights_of(prog) if w not in (0.0, 1.0)]
    assert len(values) > 30 and all(struct.pack("<d", w) not in art for w in values)
    full = prog.to_bytes()
    assert all(struct.pack("<d", w) in full for w in values)


def test_sat_client_spec_encodes_summed_area_tables():
    prog = box_program()
    spec = prog.client_spec()
    assert spec.input_encoding["kind"] == "sat"
    x = np.random.default_rng(0).uniform(0, 1, size=(6, 6))
    plain = box_program(input_sat=False).client_spec()
    assert plain.input_encoding is None
    # the SAT of a padded 6x6 holds 8x8 values and its last one is the sum of the input
    vec = spec.encode_input(x)
    assert np.isclose(vec.max(), x.sum()) and not np.array_equal(vec[: plain.encode_input(x).size], plain.encode_input(x))
    with pytest.raises(EnvelopeError, match="client spec"):
        ClientSpec.from_dict(spec.to_dict() | {"input_encoding": {"kind": "sat", "kernel": [10**9, 3],
                                                                   "stride": [1, 1], "pads": [[1, 1], [1, 1]]}})
    with pytest.raises(EnvelopeError, match="client spec"):
        ClientSpec.from_dict(spec.to_dict() | {"input_shape": [1, 1 << 20, 1 << 20]})


def test_hostile_image_layer_entries_are_refused():
    blob = image_program_2d().to_bytes()

    def huge_kernel(d):  # a kernel far larger than the bytes present: refused before allocating
        d["layers"][0]["args"]["kernel_size"] = [4000, 4000]
    with pytest.raises(EnvelopeError, match="needs weight of shape"):
        EncryptedProgram.from_bytes(_reseal(blob, huge_kernel))

    def too_big(d):  # beyond the int bound of an N-D size
        d["layers"][0]["args"]["kernel_size"] = [1 << 30, 3]
    with pytest.raises(EnvelopeError, match="wrong type or is out of range"):
        EncryptedProgram.from_bytes(_reseal(blob, too_big))

    def short(d):  # a 2-D kernel given one size
        d["layers"][0]["args"]["stride"] = [1]
    with pytest.raises(EnvelopeError, match="wrong type"):
        EncryptedProgram.from_bytes(_reseal(blob, short))

    def channels(d):  # per-channel PolyAct told it has 1000 rows
        d["layers"][5]["args"]["channels"] = 1000
    with pytest.raises(EnvelopeError, match="needs coeffs of shape"):
        EncryptedProgram.from_bytes(_reseal(blob, channels))

    def shape(d):
        d["compile"]["input_shape"] = [1, 1 << 20, 1 << 20]
    with pytest.raises(EnvelopeError, match="compile arguments"):
        EncryptedProgram.from_bytes(_reseal(blob, shape))

    def sat(d):
        d["compile"]["input_sat"] = "yes"
    with pytest.raises(EnvelopeError, match="input_sat"):
        EncryptedProgram.from_bytes(_reseal(blob, sat))

    box = box_program().to_bytes()

    def boxes(d):  # more boxes than the kernels have taps
        d["layers"][0]["args"]["n_boxes"] = 10**5
    with pytest.raises(EnvelopeError, match="boxes exceed"):
        EncryptedProgram.from_bytes(_reseal(box, boxes))

    def box_pad(d):
        d["layers"][0]["args"]["padding"] = "reflect"
    with pytest.raises(EnvelopeError, match="wrong type"):
        EncryptedProgram.from_bytes(_reseal(box, box_pad))


def test_box_corners_outside_their_kernel_are_refused():
    """Corners are data: a box reaching outside its kernel is refused, as are masks that
    disagree with the corners (the torch twin and the encrypted program would differ)."""
    blob = box_program().to_bytes()
    env = open_envelope(blob, "program")
    (hlen,) = struct.unpack_from("<I", env.payload, 0)
    desc = json.loads(env.payload[4 : 4 + hlen])
    data = bytearray(env.payload[4 + hlen :])
    t = next(t for t in desc["tensors"] if t["key"].endswith("box_corners"))
    for value, match in ((99, "does not fit"), (0, "does not fit")):
        bad = bytearray(data)
        struct.pack_into("<q", bad, t["offset"] + 8 * 3, value)  # hi of the first box, last axis
        head = json.dumps(desc).encode()
        resealed = seal_envelope("program", struct.pack("<I", len(head)) + head + bytes(bad), env.fingerprint)
        with pytest.raises(EnvelopeError, match=match):
            EncryptedProgram.from_bytes(resealed)
    m = next(t for t in desc["tensors"] if t["key"].endswith("box_masks"))
    bad = bytearray(data)
    first = np.frombuffer(bytes(bad[m["offset"] : m["offset"] + m["nbytes"]]), "<f8")
    i = int(np.argmax(first == 0.0))  # a tap outside the first box
    struct.pack_into("<d", bad, m["offset"] + 8 * i, 1.0)
    head = json.dumps(desc).encode()
    resealed = seal_envelope("program", struct.pack("<I", len(head)) + head + bytes(bad), env.fingerprint)
    with pytest.raises(EnvelopeError, match="masks disagree"):
        EncryptedProgram.from_bytes(resealed)


def test_fuzzed_image_program_descriptions_give_typed_errors():
    """Structure-aware fuzzing of saved image programs: one JSON field of the description set to
    a hostile value (or a key dropped / added / nested deep), the envelope resealed so that its
    digest holds. Every load must succeed or raise a privkit error, in bounded time and memory."""
    from fuzzing import json_mutator, run_fuzz

    def split(b):
        env = open_envelope(b, "program")
        (hlen,) = struct.unpack_from("<I", env.payload, 0)
        return env.fingerprint.encode(), json.loads(env.payload[4 : 4 + hlen]), env.payload[4 + hlen :]

    def join(fp, desc, data):
        head = json.dumps(desc).encode()
        return seal_envelope("program", struct.pack("<I", len(head)) + head + data, fp.decode())

    seeds = [image_program_2d().to_bytes(), box_program().to_bytes(), image_program_3d().to_bytes()]
    stats = run_fuzz(EncryptedProgram.from_bytes, seeds, n=60, time_limit_s=5.0, mem_limit_mb=256,
                     mutators=[json_mutator(split, join)], seed=3, name="image programs")
    stats.assert_clean()
    assert stats.ok >= 3 and stats.typed_errors > 10


def test_fuzzed_image_client_specs_give_typed_errors():
    """The same for client specs (what a client downloads from a server): loading and encoding an
    input either works or raises a privkit error; no OverflowError from a huge int, no
    allocation from a declared layout."""
    from fuzzing import json_mutator, run_fuzz

    def split(b):
        env = open_envelope(b, "client-spec")
        return env.fingerprint.encode(), json.loads(env.payload), b""

    def join(fp, d, _):
        return seal_envelope("client-spec", json.dumps(d).encode(), fp.decode())

    def parse(b):
        spec = ClientSpec.from_bytes(b)
        return spec.encode_input(np.zeros(spec.input_shape))

    seeds = [f().client_spec().to_bytes() for f in (image_program_2d, box_program, image_program_3d)]
    stats = run_fuzz(parse, seeds, n=150, time_limit_s=5.0, mem_limit_mb=256,
                     mutators=[json_mutator(split, join)], seed=1, name="image client specs")
    stats.assert_clean()
    assert stats.ok >= 3 and stats.typed_errors > 50


@pytest.mark.seal
def test_box_sat_program_round_trip_on_seal():
    """Real encryption: a Client with only the spec sends a SAT-encoded image; the reloaded
    program's result is bit-identical to the original's and matches torch."""
    import torch

    prog = box_program()
    again = EncryptedProgram.from_bytes(prog.to_bytes())
    client = Client(ClientSpec.from_bytes(prog.client_spec().to_bytes()))
    keys = client.keygen(backend="seal")
    x = np.random.default_rng(4).uniform(0, 1, size=(1, 6, 6))
    ct = keys.encrypt(client.spec.encode_input(x))
    a = keys.decrypt(prog.run(ct, keys.public_bundle()))
    b = keys.decrypt(again.run(ct, keys.public_bundle()))
    assert np.array_equal(a, b)
    with torch.no_grad():
        ref = prog._reference(torch.as_tensor(x[None], dtype=torch.float64)).numpy()[0]
    assert_close_encrypted(a[:2], ref, prog.params, depth=prog.depth)


def test_global_avg_pool_program_round_trip(tmp_path):
    """The apnea v2 head (PolyAct, GlobalAvgPool1d) saves, loads and runs bit-identically."""
    import torch

    prog = gap_program()
    prog.save(tmp_path / "gap.pkprog")
    again = EncryptedProgram.load(tmp_path / "gap.pkprog")
    assert again.plan_table() == prog.plan_table()
    assert any(type(m).__name__ == "GlobalAvgPool1d" for m in again._reference.modules())
    keys = prog.keygen(backend="sim")
    for x in np.random.default_rng(4).uniform(-2, 2, size=(3, 1, 32)):
        a, b = _run(prog, keys, x), _run(again, keys, x)
        assert np.array_equal(a, b)
        with torch.no_grad():
            ref = prog._reference(torch.as_tensor(x[None], dtype=torch.float64)).numpy()[0]
        np.testing.assert_allclose(a, ref, atol=1e-4 * max(1.0, np.abs(ref).max()))  # sim models CKKS rounding
