"""``privkit keys generate | export-public | inspect``."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import stat

import numpy as np
import pytest

from privkit.cli import build_parser, main
from privkit.fhe import KeySet
from privkit.fhe import keyfile as kf
from privkit.fhe.envelope import (
    key_fingerprint,
    pack_ciphertext,
    unpack_ciphertext,
    unpack_public_bundle,
)

PW = "s3cret passphrase"

GEN = ("generate", "--preset", "n8192")


def run_keys(*argv: str) -> int:
    """``privkit keys ARGV...`` in-process; its exit code."""
    return main(["keys", *argv])


@pytest.fixture
def cheap_kdf(monkeypatch):
    """The CLI's default scrypt cost (2^17) takes ~0.7 s; tests use 2^10 unless they check it."""

    @dataclasses.dataclass(frozen=True)
    class CheapScrypt(kf.ScryptKDF):
        n: int = 2**10

    monkeypatch.setattr(kf, "ScryptKDF", CheapScrypt)
    return CheapScrypt


@pytest.fixture
def env_pw(monkeypatch):
    monkeypatch.setenv("PRIVKIT_TEST_PW", PW)
    return "PRIVKIT_TEST_PW"


def test_keys_subcommand_is_registered():
    args = build_parser().parse_args(["keys", "inspect", "x"])
    assert args.command == "keys" and args.file == "x"


def test_generate_sim(tmp_path, env_pw, cheap_kdf, capsys):
    out = tmp_path / "client.keys"
    rc = run_keys(*GEN, "--backend", "sim", "--rotations", "1,2,-1", "--password-env", env_pw, "--out", str(out))
    assert rc == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    keys = KeySet.load(out, password=PW)
    assert keys.rotation_steps == frozenset({1, 2, -1})
    text = capsys.readouterr().out
    assert key_fingerprint(keys) in text and PW not in text


@pytest.mark.seal
def test_generate_export_inspect_seal(tmp_path, env_pw, cheap_kdf, capsys):
    keys_path, pub, pub2 = tmp_path / "c.keys", tmp_path / "b.pkb", tmp_path / "b2.pkb"
    assert run_keys(*GEN, "--rotations", "none", "--no-conjugation", "--password-env", env_pw, "--out", str(keys_path), "--public-out", str(pub)) == 0
    assert run_keys("export-public", "--keys", str(keys_path), "--out", str(pub2), "--password-env", env_pw) == 0
    assert pub.read_bytes() == pub2.read_bytes()
    keys = KeySet.load(keys_path, password=PW)
    bundle = unpack_public_bundle(pub2.read_bytes(), expected_fingerprint=key_fingerprint(keys))
    x = np.array([1.0, -0.5])
    ct = unpack_ciphertext(pack_ciphertext(bundle.encrypt(x)), keys)
    np.testing.assert_allclose(keys.decrypt(ct), x, atol=1e-5)
    capsys.readouterr()

    secret_hex = keys.secret_key_bytes()[:64].hex()
    assert run_keys("inspect", str(keys_path), "--json") == 0
    d = json.loads(capsys.readouterr().out)
    assert d["type"] == "sealed key set" and d["protection"] == "aes-256-gcm"
    assert d["fingerprint"] == key_fingerprint(keys) and d["format_version"] == 1
    assert d["kdf"].startswith("scrypt") and d["permissions"] == "0o600"
    assert d["file_bytes"] == keys_path.stat().st_size
    assert run_keys("inspect", str(pub2)) == 0
    text = capsys.readouterr().out
    assert "public-bundle" in text and key_fingerprint(keys) in text and "public_key=" in text
    for out in (json.dumps(d), text):
        assert secret_hex not in out and PW not in out


def test_default_cost_is_stated(tmp_path, env_pw, capsys):
    out = tmp_path / "c.keys"
    assert run_keys(*GEN, "--backend", "sim", "--rotations", "none", "--password-env", env_pw, "--out", str(out)) == 0
    assert "scrypt n=2^17 r=8 p=1" in capsys.readouterr().out
    assert run_keys("inspect", str(out)) == 0
    assert "scrypt n=2^17 r=8 p=1 (128 MiB)" in capsys.readouterr().out


def test_generate_refuses_to_overwrite(tmp_path, env_pw, cheap_kdf, capsys):
    out = tmp_path / "c.keys"
    args = [
        "keys",
        "generate",
        "--preset",
        "n8192",
        "--backend",
        "sim",
        "--password-env",
        env_pw,
        "--out",
        str(out),
    ]
    assert main(args) == 0
    first = KeySet.load(out, password=PW).key_id
    capsys.readouterr()
    assert main(args) == 1
    assert "exists" in capsys.readouterr().err
    assert KeySet.load(out, password=PW).key_id == first
    assert main(args + ["--force"]) == 0
    assert KeySet.load(out, password=PW).key_id != first


def test_wrong_password_and_missing_env(tmp_path, env_pw, cheap_kdf, capsys, monkeypatch):
    out = tmp_path / "c.keys"
    assert run_keys(*GEN, "--backend", "sim", "--password-env", env_pw, "--out", str(out)) == 0
    monkeypatch.setenv("OTHER_PW", "not it")
    capsys.readouterr()
    assert run_keys("export-public", "--keys", str(out), "--out", str(tmp_path / "b"), "--password-env", "OTHER_PW") == 1
    assert "wrong password" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    monkeypatch.delenv("OTHER_PW")
    assert run_keys("export-public", "--keys", str(out), "--out", str(tmp_path / "b"), "--password-env", "OTHER_PW") == 1
    assert "OTHER_PW is not set" in capsys.readouterr().err


def test_prompts_for_password(tmp_path, cheap_kdf, monkeypatch, capsys):
    out = tmp_path / "c.keys"

    class _Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdin", _Tty())
    answers = iter([PW, PW])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert (
        run_keys(*GEN, "--backend", "sim", "--out", str(out)) == 0
    )
    assert KeySet.load(out, password=PW)
    answers = iter([PW, PW + "x"])
    assert run_keys(*GEN, "--backend", "sim", "--out", str(tmp_path / "d.keys")) == 1
    assert "differ" in capsys.readouterr().err
    assert not (tmp_path / "d.keys").exists()


def test_no_terminal_and_no_env_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(PW + "\n"))
    assert run_keys(*GEN, "--backend", "sim", "--out", str(tmp_path / "c.keys")) == 1
    assert "--password-env" in capsys.readouterr().err


def test_insecure_plaintext(tmp_path, capsys):
    out = tmp_path / "c.keys"
    assert run_keys(*GEN, "--backend", "sim", "--insecure-plaintext", "--out", str(out)) == 0
    assert "WITHOUT encryption" in capsys.readouterr().err
    assert run_keys("inspect", str(out)) == 0
    assert "UNENCRYPTED" in capsys.readouterr().out


def test_inspect_refuses_damaged_or_foreign_files(tmp_path, env_pw, cheap_kdf, capsys):
    junk = tmp_path / "junk"
    junk.write_bytes(b"nothing to see")
    assert run_keys("inspect", str(junk)) == 1
    assert "neither" in capsys.readouterr().err
    out, pub = tmp_path / "c.keys", tmp_path / "b.pkb"
    assert run_keys(*GEN, "--backend", "sim", "--password-env", env_pw, "--out", str(out), "--public-out", str(pub)) == 0
    capsys.readouterr()
    pub.write_bytes(pub.read_bytes()[:-3])
    assert run_keys("inspect", str(pub)) == 1
    assert "truncated" in capsys.readouterr().err
    out.write_bytes(out.read_bytes() + b"junk")
    assert run_keys("inspect", str(out)) == 1
    assert "unexpected bytes" in capsys.readouterr().err
    assert run_keys("inspect", str(tmp_path / "missing")) == 1
    assert main(["keys"]) == 2
