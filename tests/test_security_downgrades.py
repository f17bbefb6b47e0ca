"""Issue 17: every security downgrade is refused by default and accepted only when asked for
explicitly (and then reported); strict parsing of booleans and headers; secret keys never touch
the filesystem; decryption refuses garbage."""

from __future__ import annotations

import json
import os
import struct
import tempfile
import warnings

import numpy as np
import pytest
import torch

import privkit.nn as pnn
from privkit import fhe
from privkit.errors import (
    EnvelopeError,
    InputRangeError,
    InputRangeWarning,
    KeyMismatchError,
    ParameterError,
    PrecisionError,
    ScaleOverflowWarning,
    SecurityDowngradeError,
    ShapeError,
)
from privkit.fhe import CKKSParams, KeySet, PublicBundle
from privkit.fhe.envelope import pack_public_bundle, unpack_public_bundle
from privkit.fhe.keyfile import InsecureKeyFileWarning, ScryptKDF

CHEAP = ScryptKDF(n=2**10)
INSECURE = CKKSParams(poly_degree=4096, coeff_bits=(60, 40, 40, 60), scale_bits=40, allow_insecure=True)


@pytest.fixture(scope="module")
def sim_keys():
    return KeySet.generate("n8192", backend="sim", rotations=[1])


@pytest.fixture(scope="module")
def linear_program():
    torch.manual_seed(0)
    model = torch.nn.Sequential(pnn.Linear(64, 4))
    return fhe.compile(model, input_shape=(1, 64), params="n8192")


# -- 1. plaintext key files ----------------------------------------------------------------------


def test_plaintext_key_file_refused_unless_allow_plaintext(tmp_path, sim_keys):
    path = tmp_path / "k.keys"
    with pytest.warns(InsecureKeyFileWarning):
        sim_keys.save(path, insecure_plaintext=True)
    for kw in ({}, {"password": "whatever"}):
        with pytest.raises(SecurityDowngradeError, match="allow_plaintext=True"):
            KeySet.load(path, **kw)
    with pytest.raises(ParameterError):
        KeySet.load(path, allow_plaintext="yes")  # only a real bool opts in
    with pytest.warns(InsecureKeyFileWarning, match="NOT encrypted"):
        assert KeySet.load(path, allow_plaintext=True).key_id == sim_keys.key_id
    # an encrypted file is unaffected by the flag
    sealed = tmp_path / "s.keys"
    sim_keys.save(sealed, password="pw", kdf=CHEAP)
    assert KeySet.load(sealed, password="pw", allow_plaintext=True).key_id == sim_keys.key_id


# -- 2. simulator and sub-128-bit bundles ----------------------------------------------------------


def test_program_refuses_simulator_bundle_unless_allowed(linear_program, sim_keys):
    keys = linear_program.keygen(backend="sim")
    ct = linear_program.encrypt_input(keys, np.linspace(-1, 1, 64))
    with pytest.raises(SecurityDowngradeError, match="SIMULATOR.*allow_insecure=True"):
        linear_program.run(ct, keys.public_bundle())
    with pytest.raises(SecurityDowngradeError):
        linear_program.run(ct, backend=keys.public_bundle().backend)
    out = linear_program.run(ct, keys.public_bundle(), allow_insecure=True)
    assert linear_program.decrypt_output(keys, out).shape == (4,)
    assert "SIMULATOR" in linear_program.run_notes()["insecure"]
    assert "NOT SECURE" in linear_program.report()


def test_server_refuses_simulator_bundle_envelope(sim_keys):
    blob = pack_public_bundle(sim_keys.public_bundle())
    with pytest.raises(SecurityDowngradeError, match="SIMULATOR"):
        unpack_public_bundle(blob)
    with pytest.raises(SecurityDowngradeError):
        PublicBundle.from_envelope(blob)
    assert unpack_public_bundle(blob, allow_insecure=True).key_id == sim_keys.key_id


@pytest.mark.seal
def test_sub_128_bit_bundle_refused_unless_allowed():
    torch.manual_seed(0)
    program = fhe.compile(torch.nn.Sequential(pnn.Linear(64, 4)), input_shape=(1, 64), params=INSECURE)
    keys = program.keygen()
    assert keys.params.security_bits < 128
    blob = pack_public_bundle(keys.public_bundle())
    with pytest.raises(SecurityDowngradeError, match="69-bit"):
        unpack_public_bundle(blob)
    bundle = unpack_public_bundle(blob, allow_insecure=True)
    ct = program.encrypt_input(keys, np.linspace(-1, 1, 64))
    with pytest.raises(SecurityDowngradeError, match="below 128"):
        program.run(ct, bundle)
    out = program.run(ct, bundle, allow_insecure=True)
    assert program.decrypt_output(keys, out).shape == (4,)
    assert "below 128" in program.report()


def test_secure_seal_bundle_needs_no_flag(linear_program):
    keys = linear_program.keygen()
    bundle = unpack_public_bundle(pack_public_bundle(keys.public_bundle()))
    out = linear_program.run(linear_program.encrypt_input(keys, np.zeros(64)), bundle)
    assert linear_program.run_notes()["insecure"] is None
    assert "NOT SECURE" not in linear_program.report()
    assert np.all(np.isfinite(linear_program.decrypt_output(keys, out)))


# -- 3. what a server is handed ------------------------------------------------------------------


def test_secret_keyset_instead_of_bundle_is_refused(linear_program):
    keys = linear_program.keygen(backend="sim")
    ct = linear_program.encrypt_input(keys, np.zeros(64))
    with pytest.raises(ParameterError, match="SECRET key"):
        linear_program.run(ct, keys, allow_insecure=True)
    with pytest.raises(ParameterError, match="PublicBundle"):
        linear_program.run(ct, "bundle.env", allow_insecure=True)


def test_ciphertext_of_the_wrong_length_is_refused(linear_program):
    keys = linear_program.keygen(backend="sim")
    with pytest.raises(ShapeError, match="10 values but the program expects 64"):
        linear_program.run(keys.encrypt(np.zeros(10)), keys.public_bundle(), allow_insecure=True)


# -- 4. strict booleans and fields ---------------------------------------------------------------


@pytest.mark.parametrize("value", ["false", "true", "False", 0, 1, None, [], "0"])
def test_allow_insecure_accepts_only_real_booleans(value):
    d = CKKSParams.preset("n8192").to_dict()
    d["allow_insecure"] = value
    with pytest.raises(ParameterError, match="allow_insecure"):
        CKKSParams.from_dict(d)
    with pytest.raises(ParameterError):
        CKKSParams(poly_degree=8192, coeff_bits=(49, 40, 40, 40, 49), allow_insecure=value)
    d["allow_insecure"] = False
    assert CKKSParams.from_dict(d).allow_insecure is False


@pytest.mark.parametrize("field,value", [
    ("poly_degree", 8192.0), ("poly_degree", "8192"), ("poly_degree", True),
    ("scale_bits", 40.5), ("coeff_bits", "49,40"), ("coeff_bits", [49, 40.0, 40, 40, 49]),
    ("name", 7), ("extra", 1),
])
def test_params_fields_must_have_their_type(field, value):
    d = CKKSParams.preset("n8192").to_dict()
    d[field] = value
    with pytest.raises(ParameterError):
        CKKSParams.from_dict(d)


def _bundle_with_blobs(keys, extra):
    b = keys.public_bundle()
    blobs = dict(b._blobs)
    blobs.update(extra)
    return PublicBundle(b.params, b.backend_name, b.key_id, b.rotation_steps, b.conjugation, blobs).to_bytes()


@pytest.mark.parametrize("name", ["sk", "secret_key", "Secret_Key", "SECRET", "extra"])
def test_bundle_with_unknown_or_secret_blobs_is_refused(sim_keys, name):
    raw = _bundle_with_blobs(sim_keys, {name: b"\x01" * 32})
    with pytest.raises(EnvelopeError, match="refusing a public bundle") as e:
        PublicBundle.from_bytes(raw)
    if "secret" in name.lower() or name == "sk":
        assert "SECRET" in str(e.value)


def _ct_with_header(keys, edit):
    blob = keys.encrypt(np.arange(4.0)).to_bytes()
    (hlen,) = struct.unpack("<I", blob[4:8])
    header = json.loads(blob[8 : 8 + hlen])
    edit(header)
    raw = json.dumps(header).encode()
    return blob[:4] + struct.pack("<I", len(raw)) + raw + blob[8 + hlen :]


def _set_layout(field, value):
    def edit(h):
        h["layout"][field] = value
    return edit


@pytest.mark.parametrize("edit", [
    _set_layout("gap", "x"), _set_layout("gap", 0.5), _set_layout("gap", 0), _set_layout("gap", 10**9),
    _set_layout("offset", -1), _set_layout("channels", None), _set_layout("channel_stride", True),
    lambda h: h["layout"].pop("gap"), lambda h: h["layout"].update(bogus=1),
    lambda h: h.pop("level"), lambda h: h.pop("layout"), lambda h: h.update(level=1.0),
    lambda h: h.update(length="4"), lambda h: h.update(complex="false"), lambda h: h.update(extra=1),
    lambda h: h.update(layout=json.loads("[" * 40 + "]" * 40)),
])
def test_inner_ciphertext_header_is_parsed_strictly(sim_keys, edit):
    with pytest.raises(EnvelopeError):
        sim_keys.ciphertext_from_bytes(_ct_with_header(sim_keys, edit))


def test_deeply_nested_ciphertext_header_is_a_typed_error(sim_keys):
    deep = "[" * 100_000 + "]" * 100_000
    blob = sim_keys.encrypt(np.arange(4.0)).to_bytes()
    (hlen,) = struct.unpack("<I", blob[4:8])
    raw = ('{"layout": ' + deep + "}").encode()
    bad = blob[:4] + struct.pack("<I", len(raw)) + raw + blob[8 + hlen :]
    with pytest.raises(EnvelopeError):
        sim_keys.ciphertext_from_bytes(bad)


# -- 5. decryption refuses garbage ----------------------------------------------------------------


@pytest.mark.seal
def test_relabelled_ciphertext_raises_key_mismatch():
    a = KeySet.generate("n8192", rotations=[], conjugation=False)
    b = KeySet.generate("n8192", rotations=[], conjugation=False)

    def relabel(h):
        h["key_id"] = b.key_id

    ct = b.ciphertext_from_bytes(_ct_with_header(a, relabel))
    with pytest.raises(KeyMismatchError, match="another key set"):
        b.decrypt(ct)
    # the genuine one still decrypts
    np.testing.assert_allclose(a.decrypt(a.ciphertext_from_bytes(a.encrypt(np.arange(4.0)).to_bytes())),
                               np.arange(4.0), atol=1e-4)


@pytest.mark.seal
def test_scale_overflow_warns_then_raises_precision_error():
    keys = KeySet.generate("n8192", rotations=[], conjugation=False)
    be = keys.backend
    x = keys.encrypt(np.full(16, 200.0))
    with pytest.warns(ScaleOverflowWarning, match="overflow"):
        y = be.square(be.square(be.square(x)))
    assert be.range_stats["overflow_risk"] >= 1
    with pytest.raises(PrecisionError, match="overflowed"):
        keys.decrypt(y)
    # a product that fits decrypts normally, without warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScaleOverflowWarning)
        z = be.square(keys.encrypt(np.full(16, 3.0)))
        np.testing.assert_allclose(keys.decrypt(z), 9.0, atol=1e-3)


def test_simulator_mirrors_the_overflow_checks(sim_keys):
    be = sim_keys.backend
    x = sim_keys.encrypt(np.full(16, 200.0))
    with pytest.warns(ScaleOverflowWarning):
        y = be.square(be.square(be.square(x)))
    with pytest.raises(PrecisionError):
        sim_keys.decrypt(y)


# -- 6. client-side input range --------------------------------------------------------------------


def test_client_checks_inputs_against_calibrated_range(linear_program):
    keys = linear_program.keygen(backend="sim")
    rng = np.random.default_rng(0)
    lo, hi = linear_program.calibrate_input(rng.uniform(-1, 1, (32, 64)))
    assert -1.1 <= lo < -0.9 and 0.9 < hi <= 1.1
    x = rng.uniform(-1, 1, 64)
    x[:5] = 50.0
    with pytest.warns(InputRangeWarning, match="5 of 64 input values"):
        ct = linear_program.encrypt_input(keys, x)
    assert linear_program.last_input_out_of_range == 5
    linear_program.run(ct, keys.public_bundle(), allow_insecure=True)
    assert linear_program.run_notes()["inputs_out_of_range"] == 5
    assert "5 input value(s) outside the calibrated range" in linear_program.report()
    with pytest.raises(InputRangeError):
        linear_program.encode_input(x, on_range="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputRangeWarning)
        linear_program.encode_input(x, on_range="ignore")
        linear_program.encode_input(np.clip(x, -1, 1))
    assert linear_program.last_input_out_of_range == 0
    linear_program.input_range = None


def test_polyrelu_far_outside_its_range_is_counted_on_the_encrypted_path():
    torch.manual_seed(0)
    model = torch.nn.Sequential(pnn.Linear(16, 8), pnn.PolyReLU(degree=3), pnn.Linear(8, 2))
    pnn.calibrate(model, torch.randn(64, 1, 16) * 0.1)
    program = fhe.compile(model, input_shape=(1, 16), params="n16384")
    keys = program.keygen(backend="sim")
    program.calibrate_input(np.random.default_rng(0).standard_normal((64, 16)) * 0.1)
    with pytest.warns(InputRangeWarning):
        ct = program.encrypt_input(keys, np.full(16, 30.0))
    program.run(ct, keys.public_bundle(), allow_insecure=True)
    notes = program.run_notes()
    assert notes["inputs_out_of_range"] == 16
    assert notes["approx_inputs_may_exceed"] > 0


# -- 7. secret keys never touch the filesystem ------------------------------------------------------


def _assert_no_secret_in_new_files(before, dirs, secret):
    """Other processes share /tmp: new files there are allowed, but none of ours (privkit-*)
    and none holding a window of the secret key."""
    for d in dirs:
        for name in _listing(d) - before[d]:
            assert not name.startswith("privkit"), f"{d}/{name} appeared during serialisation"
            p = os.path.join(d, name)
            try:
                if not os.path.isfile(p) or os.path.getsize(p) > 64 << 20:
                    continue
                with open(p, "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            for i in range(0, len(secret) - 32, 4099):
                assert secret[i : i + 32] not in data, f"secret key bytes found in {p}"


def _listing(d):
    try:
        return set(os.listdir(d))
    except OSError:
        return set()


@pytest.mark.seal
def test_secret_key_serialisation_never_touches_the_filesystem(tmp_path, monkeypatch):
    from privkit.fhe import seal as seal_mod
    from privkit.fhe.keyfile import open_keyset, seal_keyset

    assert seal_mod._HAS_MEMFD, "this platform should serialise through memfd"
    dirs = [tempfile.gettempdir(), "/dev/shm", str(tmp_path)]
    before = {d: _listing(d) for d in dirs}
    with monkeypatch.context() as m:
        def refuse(*a, **k):
            raise AssertionError("a temporary file was created during key (de)serialisation")

        for name in ("mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryFile",
                     "SpooledTemporaryFile"):
            m.setattr(tempfile, name, refuse)
        keys = KeySet.generate("n8192", rotations=[1])
        secret = keys.secret_key_bytes()
        sealed = b"".join(seal_keyset(keys, "pw", kdf=CHEAP))  # serialises every key
        back = open_keyset(sealed, "pw")  # deserialises every key, checks the secret
        assert back.secret_key_bytes() == secret
        _assert_no_secret_in_new_files(before, dirs, secret)
    # writing the sealed file: the only new file is the target (atomic rename of a sealed temp)
    path = tmp_path / "client.keys"
    keys.save(path, password="pw", kdf=CHEAP)
    assert KeySet.load(path, password="pw").key_id == keys.key_id
    _assert_no_secret_in_new_files(before, dirs[:2], secret)
    assert _listing(tmp_path) - before[str(tmp_path)] == {"client.keys"}
    data = path.read_bytes()
    for i in range(0, len(secret) - 32, 4099):
        assert secret[i : i + 32] not in data


def test_memfile_is_wiped_before_close():
    from privkit.fhe import seal as seal_mod

    with seal_mod._memfile() as (fd, path):
        os.write(fd, b"secret" * 100)
        kept = fd
    with pytest.raises(OSError):
        os.fstat(kept)  # closed


# -- 8. validate before allocating: dataset envelopes ------------------------------------------------


def _npz_bomb(declared_mib: int = 512) -> bytes:
    """A deflated .npz whose one array expands to ``declared_mib`` MiB of zeros (streamed)."""
    import io
    import zipfile

    from numpy.lib import format as npf

    buf = io.BytesIO()
    n = declared_mib << 20
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as fh:
            npf.write_array_header_1_0(fh, {"descr": "<u1", "fortran_order": False, "shape": (n,)})
            chunk = bytes(8 << 20)
            for _ in range(n // len(chunk)):
                fh.write(chunk)
    return buf.getvalue()


_BOMB: dict = {}


def test_dataset_decompression_bomb_refused_before_allocating():
    import tracemalloc

    from privkit.fhe.envelope import seal_envelope, unpack_dataset

    if "blob" not in _BOMB:
        _BOMB["blob"] = seal_envelope("dataset", _npz_bomb(512), "dataset")
    blob = _BOMB["blob"]
    assert len(blob) < 1 << 20  # about 0.5 MB on disk
    tracemalloc.start()
    try:
        with pytest.raises(EnvelopeError, match="above the limit"):
            unpack_dataset(blob)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MiB allocated before refusing"


def test_dataset_declared_shape_must_match_the_member_size():
    import io
    import zipfile

    from numpy.lib import format as npf

    from privkit.fhe.envelope import pack_dataset, seal_envelope, unpack_dataset

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        with zf.open("x.npy", "w") as fh:  # declares 10**9 floats, holds 8 bytes
            npf.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False, "shape": (10**9,)})
            fh.write(b"\0" * 8)
    with pytest.raises(EnvelopeError, match="declares shape"):
        unpack_dataset(seal_envelope("dataset", buf.getvalue(), "dataset"))
    # object arrays are refused too; a real dataset round-trips (C and Fortran order)
    a = np.arange(12.0).reshape(3, 4)
    arrays, _ = unpack_dataset(pack_dataset({"a": a, "f": np.asfortranarray(a), "s": np.array(["x", "yz"])}))
    np.testing.assert_array_equal(arrays["a"], a)
    np.testing.assert_array_equal(arrays["f"], a)
    assert arrays["s"].tolist() == ["x", "yz"]


# -- 9. the tracked bound is sound (the contract the warnings rest on) ---------------------------------

from hypothesis import given, settings
from hypothesis import strategies as st


@given(seed=st.integers(0, 2**31), ops=st.lists(st.sampled_from(
    ["add", "sub", "neg", "add_plain", "mul_plain", "mul_plain_int", "mul", "square", "rotate",
     "conj", "sum_slots", "mul_plain_sum"]), min_size=1, max_size=6))
@settings(deadline=None)
def test_tracked_bound_covers_every_decrypted_value(sim_keys, seed, ops):
    rng = np.random.default_rng(seed)
    be = sim_keys.backend
    a = sim_keys.encrypt(rng.uniform(-2, 2, 32))
    b = sim_keys.encrypt(rng.uniform(-2, 2, 32))
    for op in ops:
        w = rng.uniform(-1.5, 1.5, 32)
        if a.level == 0 and op in ("mul_plain", "mul", "square", "mul_plain_sum"):
            continue
        a = {
            "add": lambda: be.add(a, b), "sub": lambda: be.sub(a, b), "neg": lambda: be.neg(a),
            "add_plain": lambda: be.add_plain(a, w), "mul_plain": lambda: be.mul_plain(a, w),
            "mul_plain_int": lambda: be.mul_plain(a, 3), "mul": lambda: be.mul(a, b),
            "square": lambda: be.square(a), "rotate": lambda: be.rotate(a, 1),
            "conj": lambda: be.conjugate(a), "sum_slots": lambda: be.sum_slots(a, 8),
            "mul_plain_sum": lambda: be.mul_plain_sum([(a, w), (b, -w)]),
        }[op]()
    full = be._decrypt_raw(a.data, a.level)
    assert np.all(np.abs(full) <= a.bound * (1 + 1e-9) + 1e-9), ops
