"""The client sends ciphertexts at the program's start level (ClientSpec.encrypt_level): the
spare levels the server would drop unused are never uploaded."""

from __future__ import annotations

import json

import numpy as np
import pytest
from deploy_models import small_program, tiny_seal_program

from privkit.deploy import Client, ClientSpec, Server
from privkit.errors import EnvelopeError
from privkit.fhe.envelope import open_envelope, seal_envelope, unpack_ciphertexts


def _spec_dict(spec: ClientSpec) -> dict:
    return json.loads(open_envelope(spec.to_bytes(), "client-spec").payload)


def test_spec_names_the_start_level_and_the_client_sends_it():
    prog = small_program()  # depth 4 at n16384 (8 levels): spare levels to drop
    spec = prog.client_spec()
    assert spec.encrypt_level == prog.start_level(prog.params.depth) < prog.params.depth
    assert _spec_dict(spec)["encrypt_level"] == spec.encrypt_level
    client = Client(ClientSpec.from_bytes(spec.to_bytes()))
    keys = client.keygen(backend="sim")
    server = Server(prog, allow_insecure=True)
    kid = server.register(client.bundle_envelope())
    xs = np.random.default_rng(3).uniform(-3, 3, size=(3, 16))
    env = client.encrypt_batch(list(xs))
    assert [c.level for c in unpack_ciphertexts(env, keys, kind="ciphertext")] == [spec.encrypt_level] * 3
    got = client.decrypt(server.infer(env, kid))
    want = np.stack([prog.decrypt_output(keys, prog.run(prog.encrypt_input(keys, x), keys.public_bundle(),
                                                        allow_insecure=True)) for x in xs])
    assert np.array_equal(got, want)  # same result as a fresh upload, bit for bit on Sim


def test_a_program_without_spare_levels_sends_fresh_ciphertexts():
    prog = tiny_seal_program()  # depth 3 on n8192 (3 levels): nothing to drop
    spec = prog.client_spec()
    assert prog.depth == prog.params.depth and spec.encrypt_level is None
    client = Client(spec)
    keys = client.keygen(backend="sim")
    env = client.encrypt(np.zeros(16))
    assert [c.level for c in unpack_ciphertexts(env, keys, kind="ciphertext")] == [prog.params.depth]


def test_old_specs_without_the_field_load_and_bad_levels_are_refused():
    spec = small_program().client_spec()
    d = _spec_dict(spec)
    d.pop("encrypt_level")
    old = ClientSpec.from_dict(d)
    assert old.encrypt_level is None
    for bad in (-1, spec.params.depth + 1, 1.5, True, "2"):
        with pytest.raises(EnvelopeError, match="client spec"):
            ClientSpec.from_dict(dict(d, encrypt_level=bad))
    blob = seal_envelope("client-spec", json.dumps(dict(d, encrypt_level=99)).encode(), "x")
    with pytest.raises(EnvelopeError):
        ClientSpec.from_bytes(blob)


@pytest.mark.seal
def test_seal_upload_shrinks_and_results_match():
    prog = small_program()
    spec = prog.client_spec()
    client = Client(spec)
    client.keygen()
    server = Server(prog)
    kid = server.register(client.bundle_envelope())
    x = np.linspace(-2, 2, 16)
    small = client.encrypt(x)
    fresh_spec = ClientSpec.from_dict(dict(_spec_dict(spec), encrypt_level=None))
    big = Client(fresh_spec, client.keys).encrypt(x)
    primes_sent, primes_fresh = spec.encrypt_level + 1, spec.params.depth + 1
    assert len(small) < len(big) * (primes_sent + 0.5) / primes_fresh
    a, b = client.decrypt(server.infer(small, kid)), client.decrypt(server.infer(big, kid))
    ref = prog._reference(__import__("torch").tensor(x).reshape(1, 1, 16)).detach().numpy()[0]
    assert np.abs(a - ref).max() < 1e-3 and np.abs(a - b).max() < 1e-6
