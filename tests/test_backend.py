"""The backend contract: every operation on both backends equals its numpy twin, and the
SEAL and simulated backends agree on values, levels and op counts for the same program."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, target
from hypothesis import strategies as st

from privkit.errors import (
    DepthExhaustedError,
    KeyMismatchError,
    MissingKeyError,
    ParameterError,
    SecretKeyRequiredError,
    ShapeError,
    SlotOverflowError,
)
from privkit.fhe import CKKSParams, KeySet, PublicBundle
from privkit.testing import SIM_RTOL, assert_backends_agree, assert_close_encrypted

from .strategies import real_vectors, vector_pairs

P = CKKSParams.preset("n8192")
SLOTS = P.slots


@pytest.fixture(scope="module", params=["sim", "seal"])
def keys(request):
    return KeySet.generate(P, backend=request.param)


def fac(level):
    """The ``s/q`` factor a ciphertext product at ``level`` leaves in the value (the backend
    contract: the scale ``s*s/q`` is declared ``s``); the exact twin of ``mul``/``square``."""
    return P.scale / float(P.primes[level])


def used(out):
    """Levels a result consumed (the depth its SEAL tolerance derives from)."""
    return P.depth - out.level


def padded(x, n=SLOTS):
    out = np.zeros(n, dtype=np.result_type(x, np.float64))
    out[: len(x)] = x
    return out


# -- element-wise ops --------------------------------------------------------------------------

_BINARY = {
    "add": (lambda be, a, b: be.add(a, b), np.add, 0),
    "sub": (lambda be, a, b: be.sub(a, b), np.subtract, 0),
    "mul": (lambda be, a, b: be.mul(a, b), lambda x, y: x * y * fac(P.depth), 1),
}


@pytest.mark.parametrize("op", sorted(_BINARY))
@given(xy=vector_pairs())
@settings(max_examples=15)
def test_binary_ops_match_numpy(keys, op, xy):
    x, y = xy
    fn, ref, depth = _BINARY[op]
    be = keys.backend
    out = fn(be, keys.encrypt(x), keys.encrypt(y))
    assert out.level == P.depth - depth
    err = assert_close_encrypted(keys.decrypt(out), ref(x, y), keys, depth=depth)
    target(err)


@pytest.mark.parametrize("op", ["neg", "square", "add_plain", "mul_plain", "mul_scalar", "mul_int", "add_scalar"])
@given(xy=vector_pairs())
@settings(max_examples=15)
def test_unary_and_plain_ops_match_numpy(keys, op, xy):
    x, y = xy
    be = keys.backend
    ct = keys.encrypt(x)
    table = {
        "neg": (lambda: be.neg(ct), -x, 0),
        "square": (lambda: be.square(ct), x * x * fac(P.depth), 1),
        "add_plain": (lambda: be.add_plain(ct, y), x + y, 0),
        "mul_plain": (lambda: be.mul_plain(ct, y), x * y, 1),
        "mul_scalar": (lambda: be.mul_plain(ct, 0.37), x * 0.37, 1),
        "mul_int": (lambda: be.mul_plain(ct, -3), x * -3, 0),
        "add_scalar": (lambda: be.add_plain(ct, 1.5), x + 1.5, 0),
    }
    fn, expected, depth = table[op]
    out = fn()
    assert out.level == P.depth - depth, f"{op} consumed the wrong number of levels"
    target(assert_close_encrypted(keys.decrypt(out), expected, keys, depth=depth))


def test_add_scalar_keeps_the_tail_zero(keys):
    x = np.arange(5.0)
    out = keys.backend.add_plain(keys.encrypt(x), 2.0).replace(length=8)
    assert_close_encrypted(keys.decrypt(out), np.r_[x + 2.0, 0, 0, 0], keys, depth=0)


@given(x=real_vectors(), k=st.integers(-3 * SLOTS, 3 * SLOTS))
@settings(max_examples=20)
def test_rotate_any_step_matches_numpy_roll(keys, x, k):
    out = keys.backend.rotate(keys.encrypt(x), k).replace(length=SLOTS)
    got = keys.decrypt(out)
    target(assert_close_encrypted(got, np.roll(padded(x), -k), keys, depth=0))


@given(x=real_vectors(max_len=200), n=st.integers(1, 200))
@settings(max_examples=15)
def test_sum_slots(keys, x, n):
    out = keys.backend.sum_slots(keys.encrypt(x), n)
    assert out.length == 1
    assert_close_encrypted(keys.decrypt(out), np.array([padded(x)[:n].sum()]), keys, depth=0, factor=4)


@given(xy=vector_pairs())
@settings(max_examples=10)
def test_conjugate_and_complex_roundtrip(keys, xy):
    x, y = xy
    z = x + 1j * y
    ct = keys.encrypt(z)
    assert ct.is_complex
    assert_close_encrypted(keys.decrypt(ct), z, keys, depth=0)
    assert_close_encrypted(keys.decrypt(keys.backend.conjugate(ct)), np.conj(z), keys, depth=0)


@given(xy=vector_pairs(max_len=32, bound=2.0))
@settings(max_examples=10)
def test_levels_align_automatically(keys, xy):
    x, y = xy
    be = keys.backend
    a = keys.encrypt(x)
    b = be.mul(keys.encrypt(y), keys.encrypt(y))  # one level lower
    out = be.add(a, b)
    assert out.level == b.level
    assert_close_encrypted(keys.decrypt(out), x + y * y * fac(P.depth), keys, depth=1)
    out2 = be.mul(be.mul(a, a), a)  # x^3 through two levels
    assert out2.level == P.depth - 2
    assert_close_encrypted(keys.decrypt(out2), x**3 * fac(P.depth) * fac(P.depth - 1), keys, depth=2)


def test_sugar_operators(keys):
    x = np.linspace(-1, 1, 7)
    a = keys.encrypt(x)
    out = (a * a) - a * 2 + 1.0
    assert_close_encrypted(keys.decrypt(out), x * x * fac(P.depth) - 2 * x + 1.0, keys, depth=1)
    assert_close_encrypted(keys.decrypt(1.0 - a), 1.0 - x, keys, depth=0)


# -- errors ------------------------------------------------------------------------------------


def test_depth_exhaustion_raises_typed_error_with_fix(keys):
    ct = keys.encrypt([0.5, 0.25])
    for _ in range(P.depth):
        ct = keys.backend.square(ct)
    assert ct.level == 0
    with pytest.raises(DepthExhaustedError) as ei:
        keys.backend.square(ct)
    assert ei.value.needed == 1 and ei.value.available == 0
    assert "preset" in str(ei.value)
    with pytest.raises(DepthExhaustedError):
        keys.backend.mul_plain(ct, [0.5, 0.5])
    keys.backend.mul_plain(ct, 2)  # integer scalars stay possible at level 0


def test_require_levels_reports_needed_and_available(keys):
    ct = keys.encrypt([1.0])
    with pytest.raises(DepthExhaustedError) as ei:
        keys.backend.require_levels(ct, P.depth + 2, where="layer 'act3'")
    assert ei.value.needed == P.depth + 2 and ei.value.available == P.depth
    assert "act3" in str(ei.value)


@pytest.mark.parametrize("backend", ["sim", "seal"])
def test_missing_rotation_key_names_the_step(backend):
    k = KeySet.generate(P, backend=backend, rotations=[2, 4], conjugation=False)
    ct = k.encrypt([1.0, 2.0, 3.0])
    k.backend.rotate(ct, 6)  # composes 2 + 4
    with pytest.raises(MissingKeyError, match="rotation by 3"):
        k.backend.rotate(ct, 3)
    with pytest.raises(MissingKeyError, match="conjugation"):
        k.backend.conjugate(ct)


def test_rotation_composition_uses_fewest_keys():
    k = KeySet.generate(P, backend="sim", rotations=[1, 8, -1])
    assert k.backend.rotation_path(9) in ((1, 8), (8, 1))
    assert k.backend.rotation_path(7) in ((8, -1), (-1, 8))
    before = k.backend.counter.total.rotations
    k.backend.rotate(k.encrypt([1.0]), 7)
    assert k.backend.counter.total.rotations - before == 2


def test_oversize_and_bad_inputs(keys):
    with pytest.raises(SlotOverflowError, match=f"{SLOTS} slots"):
        keys.encrypt(np.zeros(SLOTS + 1))
    with pytest.raises(ShapeError, match="1-D"):
        keys.encrypt(np.zeros((2, 3)))
    with pytest.raises(ParameterError, match="NaN"):
        keys.encrypt([1.0, np.nan])
    with pytest.raises(ParameterError, match="magnitude"):
        keys.encrypt([1e9])
    with pytest.raises(ShapeError):
        keys.backend.sum_slots(keys.encrypt([1.0]), 0)


def test_mixed_key_sets_are_refused(keys):
    other = KeySet.generate(P, backend=keys.backend.name)
    a, b = keys.encrypt([1.0]), other.encrypt([1.0])
    with pytest.raises(KeyMismatchError, match="key set"):
        keys.backend.add(a, b)
    with pytest.raises(KeyMismatchError):
        keys.decrypt(b)
    with pytest.raises(KeyMismatchError):
        other.ciphertext_from_bytes(a.to_bytes())


def test_sim_and_seal_cannot_mix():
    s, r = KeySet.generate(P, backend="sim"), KeySet.generate(P, backend="seal", rotations=[])
    with pytest.raises(KeyMismatchError):
        s.backend.mul(s.encrypt([1.0]), r.encrypt([1.0]))


def test_insecure_params_need_explicit_opt_out():
    with pytest.raises(ParameterError, match="allow_insecure=True"):
        CKKSParams(poly_degree=8192, coeff_bits=(60, 40, 40, 40, 60))
    p = CKKSParams(poly_degree=8192, coeff_bits=(60, 40, 40, 40, 60), allow_insecure=True)
    assert not p.secure and p.security_bits < 128
    k = KeySet.generate(p, backend="seal", rotations=[])  # SEAL accepts it only because we opted out
    assert_close_encrypted(k.decrypt(k.encrypt([1.0, 2.0])), np.array([1.0, 2.0]), p, depth=0)


def test_presets_security_table():
    for name, bits in [("n8192", 218), ("n16384", 438), ("n32768", 881)]:
        p = CKKSParams.preset(name)
        assert p.log_qp <= bits and p.security_bits == 128 and p.secure
    assert CKKSParams(poly_degree=16384, coeff_bits=(50, 40, 40, 50)).security_bits == 256
    with pytest.raises(ParameterError, match="unknown preset"):
        CKKSParams.preset("n4096x")
    with pytest.raises(ParameterError, match="power of two"):
        CKKSParams(poly_degree=10000, coeff_bits=(60, 40, 60))


def test_params_primes_match_seal():
    import tenseal.sealapi as sealapi

    for name in ("n8192", "n16384"):
        p = CKKSParams.preset(name)
        assert p.primes == tuple(m.value() for m in sealapi.CoeffModulus.Create(p.poly_degree, list(p.coeff_bits)))


# -- public bundle -----------------------------------------------------------------------------


def test_public_bundle_roundtrip_and_no_secret(keys):
    bundle = keys.public_bundle()
    blob = bundle.to_bytes()
    server = PublicBundle.from_bytes(blob)
    assert server.fingerprint() == keys.key_id
    if keys.backend.name == "seal":
        assert keys.secret_key_bytes() not in blob
        assert set(server.sizes()) == {"public_key", "relin_keys", "galois_keys"}
    x = np.array([0.5, -1.5, 2.0])
    ct = server.backend.deserialize_ciphertext(keys.encrypt(x).to_bytes())
    res = server.backend.add_plain(server.backend.mul(ct, ct), 1.0)
    with pytest.raises(SecretKeyRequiredError):
        server.backend.decrypt(res)
    with pytest.raises(SecretKeyRequiredError):
        server.decrypt(res)
    back = keys.ciphertext_from_bytes(res.to_bytes())
    assert_close_encrypted(keys.decrypt(back), x * x * fac(P.depth) + 1.0, keys, depth=1)
    # the server can also encrypt with the public key, and the client decrypts it
    assert_close_encrypted(keys.decrypt(server.encrypt(x)), x, keys, depth=0)


def test_bundle_refuses_garbage():
    from privkit.errors import EnvelopeError

    with pytest.raises(EnvelopeError):
        PublicBundle.from_bytes(b"not a bundle")
    blob = KeySet.generate(P, backend="sim").public_bundle().to_bytes()
    with pytest.raises(EnvelopeError):
        PublicBundle.from_bytes(blob + b"x")


# -- SEAL vs simulator: same program, same values, levels and counts ---------------------------


def _program(keys, x, y):
    be = keys.backend
    be.counter.reset()
    a, b = keys.encrypt(x), keys.encrypt(y)
    with be.counter.section("block"):
        c = be.mul(a, b)
        c = be.add(c, be.rotate(a, 3))
        c = be.mul_plain(c, y)
        c = be.sub(c, be.square(b))
        c = be.sum_slots(c, len(x))
    return c


@given(xy=vector_pairs(max_len=40, bound=2.0))
@settings(max_examples=8)
def test_seal_and_sim_agree(xy):
    x, y = xy
    outs = {}
    for name in ("sim", "seal"):
        k = _SHARED[name]
        c = _program(k, x, y)
        outs[name] = (k.decrypt(c), c.level, k.backend.counter.sections["block"].as_dict())
    (vs, ls, cs), (vr, lr, cr) = outs["sim"], outs["seal"]
    assert ls == lr
    cs.pop("seconds"), cr.pop("seconds")
    assert cs == cr
    # up to 2*log2(40) rotations, each adding key-switching noise of ~1e-7 relative
    assert_backends_agree(vr, vs, rtol=2e-6)


_SHARED = {}


@pytest.fixture(autouse=True, scope="module")
def _shared_keys():
    _SHARED["sim"] = KeySet.generate(P, backend="sim")
    _SHARED["seal"] = KeySet.generate(P, backend="seal")
    yield
    _SHARED.clear()


def test_sim_noise_is_configurable():
    k = KeySet.generate(P, backend="sim", noise_std=1e-4, seed=0)
    x = np.ones(100)
    err = np.abs(k.decrypt(k.encrypt(x)) - x).max()
    assert 1e-6 < err < 1e-2


@pytest.mark.parametrize("backend", ["sim", "seal"])
def test_exact_zero_results_stay_encrypted_zeros(backend):
    """SEAL refuses 'transparent' results; privkit returns an encryption of zero instead."""
    k = _SHARED[backend]
    be = k.backend
    x = np.array([1.0, -2.0, 3.0])
    a = k.encrypt(x)
    z = be.sub(a, a)
    z2 = be.mul_plain(a, np.zeros(3))
    z3 = be.mul_plain(z, 0.5)
    z4 = be.mul(z, a)
    for ct in (z, z2, z3, z4):
        assert_close_encrypted(k.decrypt(ct), np.zeros(3), k, depth=1)
    assert z2.level == P.depth - 1 and z4.level == P.depth - 1
    assert_close_encrypted(k.decrypt(be.add(z2, a)), x, k, depth=1)


@given(xy=vector_pairs(max_len=30))
@settings(max_examples=10)
def test_mul_plain_sum_rescales_once(keys, xy):
    x, y = xy
    be = keys.backend
    a, b = keys.encrypt(x), be.mul(keys.encrypt(y), keys.encrypt(y))  # different levels: aligned
    before = be.counter.snapshot()
    out = be.mul_plain_sum([(a, y), (b, x), (a, 0.5)])
    after = be.counter.total
    assert after.pt_mults - before.pt_mults == 3 and after.rescales - before.rescales == 1
    assert out.level == b.level - 1
    assert_close_encrypted(keys.decrypt(out), x * y + y * y * fac(P.depth) * x + 0.5 * x, keys, depth=2)


def test_in_process_bundle_shares_key_objects_instead_of_copying():
    """Memory: a bundle made in this process serialises its Galois keys only on demand and its
    server backend shares the client's key objects (N=32768 key sets are several GB)."""
    k = KeySet.generate(P, backend="seal", rotations=[1, 2])
    bundle = k.public_bundle()
    assert bundle.backend._galois is k.backend._galois
    assert not bundle.backend.can_decrypt
    assert set(bundle.sizes()) == {"public_key", "relin_keys", "galois_keys"}
    server = PublicBundle.from_bytes(bundle.to_bytes()).backend
    ct = server.deserialize_ciphertext(k.encrypt([1.0, 2.0, 3.0]).to_bytes())
    assert_close_encrypted(k.decrypt(server.rotate(ct, 1)), np.array([2.0, 3.0, 0.0]), k, depth=0)


# -- scale bookkeeping: SEAL and the simulator agree to 1e-7, and both equal the exact twin ------


def _product_program(keys, x, y):
    """Every level, every kind of product and an automatic level alignment, no rotation (whose
    key-switching noise would hide a 1e-7 difference)."""
    be = keys.backend
    a, b = keys.encrypt(x), keys.encrypt(y)
    c = be.mul(a, b)                      # level d-1, factor f(d)
    c = be.add(c, be.mul_plain(a, y))     # both at d-1
    c = be.square(c)                      # d-2, f(d-1)
    c = be.mul_plain_sum([(c, x), (b, 0.75)])  # b aligned from d to d-2, then d-3
    c = be.sub(c, be.mul_plain(a, 0.5))   # aligned to d-3
    return c


def _product_program_ref(x, y):
    d = P.depth
    c = x * y * fac(d) + x * y
    c = c * c * fac(d - 1)
    c = c * x + y * 0.75
    return c - 0.5 * x


@given(xy=vector_pairs(max_len=32, bound=2.0))
@settings(max_examples=6)
def test_seal_and_sim_agree_to_1e7_on_products(xy):
    """Same program on both backends: values agree to SEAL_SIM_RTOL (1e-7) relative, so a
    scale-bookkeeping difference between them (the s/q factors are 1.3e-7 to 7.3e-7 at n8192)
    shows; the simulator equals the exact twin to SIM_RTOL (1e-9)."""
    x, y = xy
    sim = _product_program(_SHARED["sim"], x, y)
    seal = _product_program(_SHARED["seal"], x, y)
    assert sim.level == seal.level == P.depth - 3
    vs, vr = _SHARED["sim"].decrypt(sim), _SHARED["seal"].decrypt(seal)
    assert_close_encrypted(vs, _product_program_ref(x, y), _SHARED["sim"])
    assert_close_encrypted(vr, _product_program_ref(x, y), _SHARED["seal"], depth=used(seal))
    assert_backends_agree(vr, vs)


@pytest.mark.parametrize("level", range(1, P.depth + 1))
def test_each_level_product_factor_matches_seal(level):
    """A ciphertext product at every level carries exactly s/q(level) on both backends."""
    x = np.linspace(-1.5, 1.7, 11)
    vals = {}
    for name in ("sim", "seal"):
        k = _SHARED[name]
        a = k.backend.mod_switch_to(k.encrypt(x), level)
        out = k.backend.mul(a, a)
        vals[name] = k.decrypt(out)
        assert_close_encrypted(vals[name], x * x * fac(level), k, depth=1 + P.depth - level)
    assert_backends_agree(vals["seal"], vals["sim"])
    # and plaintext products carry none (the plaintext is encoded at the dropped prime's scale)
    for name in ("sim", "seal"):
        k = _SHARED[name]
        a = k.backend.mod_switch_to(k.encrypt(x), level)
        prod = k.backend.mul_plain(a, 0.3 + 0.1 * x)
        # adding a ciphertext of the same level: SEAL requires both to carry the same real scale
        total = k.backend.add(prod, k.backend.mod_switch_to(k.encrypt(x), level - 1))
        vals[name] = k.decrypt(total)
        assert_close_encrypted(vals[name], (0.3 + 0.1 * x) * x + x, k, depth=1)
    assert_backends_agree(vals["seal"], vals["sim"])


def test_sim_tolerance_is_tight():
    """The helper gives the noise-free simulator 1e-9 relative, SEAL the CKKS tolerance."""
    k = _SHARED["sim"]
    x = np.array([1.0, -2.0, 3.0])
    with pytest.raises(AssertionError, match="noise-free simulator"):
        assert_close_encrypted(x * (1 + 1e-7), x, k)
    assert_close_encrypted(x * (1 + 1e-7), x, _SHARED["seal"], depth=0)
    assert_close_encrypted(x * (1 + SIM_RTOL / 10), x, k)
    noisy = KeySet.generate(P, backend="sim", noise_std=1e-9, seed=0)
    assert_close_encrypted(x * (1 + 1e-7), x, noisy, depth=0)  # a noisy simulator is CKKS-like
