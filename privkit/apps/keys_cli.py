"""``privkit keys``: generate sealed key sets, export their public bundle, inspect files.

* ``privkit keys generate --preset n16384 --out client.keys`` asks for a password twice (or reads
  it from the environment variable named by ``--password-env``) and writes the key set sealed
  under it (AES-256-GCM, scrypt; see :mod:`privkit.fhe.keyfile`), mode 0600. It refuses to
  overwrite an existing file unless ``--force``: losing a secret key loses everything encrypted
  under it.
* ``privkit keys export-public --keys client.keys --out bundle.pkb`` writes the public bundle (no
  secret key) as an authenticated envelope for the server.
* ``privkit keys inspect FILE`` prints what a key file or an envelope says about itself: kind,
  format version, fingerprint, sizes, KDF cost. It never decrypts a key file and never prints
  secret material.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from privkit.errors import KeyFileError, ParameterError

from ._cli_common import add_json, stages


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "keys",
        help="generate password-sealed CKKS key sets, export public bundles, inspect files",
        description="Key management for encrypted inference: secret keys live on disk only "
        "encrypted under a password; public bundles travel in authenticated envelopes.",
    )
    ks = p.add_subparsers(dest="keys_command", metavar="ACTION")

    g = ks.add_parser(
        "generate",
        help="generate a key set and write it sealed under a password",
        description="Generates a CKKS key set and writes it to --out encrypted with AES-256-GCM "
        "under a key derived from a password (scrypt by default), atomically, mode 0600.",
    )
    g.add_argument("--preset", default="n16384", help="parameter preset (n8192, n16384, n32768)")
    g.add_argument("--out", required=True, help="key file to write (e.g. client.keys)")
    g.add_argument(
        "--backend",
        default="seal",
        choices=["seal", "sim"],
        help="seal: real encryption; sim: the plaintext simulator (NOT encrypted)",
    )
    g.add_argument(
        "--rotations",
        default="default",
        help="Galois keys: 'default' (every power of two), 'none', or comma-separated steps "
        "(e.g. 1,2,4,-1)",
    )
    g.add_argument("--no-conjugation", action="store_true", help="skip the conjugation key")
    g.add_argument(
        "--password-env",
        metavar="VAR",
        help="read the password from environment variable VAR instead of a prompt",
    )
    g.add_argument(
        "--kdf",
        default="scrypt",
        choices=["scrypt", "argon2id"],
        help="password-based key derivation (scrypt: n=2^17 r=8 p=1)",
    )
    g.add_argument(
        "--public-out", metavar="FILE", help="also write the public bundle envelope to FILE"
    )
    g.add_argument(
        "--insecure-plaintext",
        action="store_true",
        help="write the secret key UNENCRYPTED (throw-away test keys only)",
    )
    g.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    add_json(g)
    g.set_defaults(keys_func=run_generate)

    e = ks.add_parser(
        "export-public",
        help="write the public bundle of a key file as an envelope (for the server)",
        description="Unseals the key file and writes its public bundle (public, relinearisation "
        "and Galois keys and the parameters; never the secret key) as an authenticated envelope.",
    )
    e.add_argument("--keys", required=True, help="sealed key file")
    e.add_argument("--out", required=True, help="envelope to write (e.g. bundle.pkb)")
    e.add_argument(
        "--password-env",
        metavar="VAR",
        help="read the password from environment variable VAR instead of a prompt",
    )
    e.add_argument(
        "--allow-plaintext",
        action="store_true",
        help="accept an UNENCRYPTED key file (refused by default; throw-away test keys only)",
    )
    add_json(e)
    e.set_defaults(keys_func=run_export_public)

    i = ks.add_parser(
        "inspect",
        help="describe a key file or envelope (never prints secrets)",
        description="Prints kind, format version, fingerprint and sizes of a key file or "
        "envelope. Key files are not decrypted; envelopes are integrity-checked.",
    )
    i.add_argument("file", help="key file or envelope")
    add_json(i)
    i.set_defaults(keys_func=run_inspect)

    p.set_defaults(func=lambda args: _dispatch(p, args))


def _dispatch(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    fn = getattr(args, "keys_func", None)
    if fn is None:
        p.print_help(sys.stderr)
        return 2
    return fn(args)


def _password(args: argparse.Namespace, confirm: bool) -> str:
    if args.password_env:
        pw = os.environ.get(args.password_env)
        if pw is None:
            raise ParameterError(f"environment variable {args.password_env} is not set")
        if not pw:
            raise ParameterError(f"environment variable {args.password_env} is empty")
        return pw
    if not sys.stdin.isatty():
        raise ParameterError(
            "no terminal to ask for a password; pass --password-env VAR with the password in "
            "environment variable VAR"
        )
    pw = getpass.getpass("key file password: ")
    if not pw:
        raise ParameterError("empty password")
    if confirm and getpass.getpass("repeat password: ") != pw:
        raise ParameterError("the two passwords differ")
    return pw


def _rotations(spec: str) -> list[int] | None:
    spec = spec.strip().lower()
    if spec == "default":
        return None
    if spec in ("none", ""):
        return []
    try:
        return [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ParameterError(
            f"--rotations must be 'default', 'none' or comma-separated integers, got {spec!r}"
        ) from None


def run_generate(args: argparse.Namespace) -> int:
    from privkit.fhe import KeySet
    from privkit.fhe.envelope import key_fingerprint, pack_public_bundle, write_envelope
    from privkit.fhe.keyfile import Argon2idKDF, InsecureKeyFileWarning, ScryptKDF

    out = Path(args.out)
    if out.exists() and not args.force:
        raise ParameterError(
            f"{str(out)!r} exists; overwriting it would destroy its secret key (and everything "
            "encrypted under it). Choose another --out or pass --force"
        )
    if args.insecure_plaintext and args.password_env:
        raise ParameterError("--insecure-plaintext and --password-env exclude each other")
    password = None if args.insecure_plaintext else _password(args, confirm=True)
    kdf = Argon2idKDF() if args.kdf == "argon2id" else ScryptKDF()
    steps = ["key generation", "sealing (KDF + AES-GCM)"] + (["public bundle"] if args.public_out else [])
    gen_s = seal_s = 0.0
    for step in stages(steps, f"keys ({args.preset}, {args.backend})"):
        t = time.perf_counter()
        if step == "key generation":
            keys = KeySet.generate(
                args.preset,
                backend=args.backend,
                rotations=_rotations(args.rotations),
                conjugation=not args.no_conjugation,
            )
            gen_s = time.perf_counter() - t
        elif step.startswith("sealing"):
            if args.insecure_plaintext:
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", InsecureKeyFileWarning)
                    keys.save(out, insecure_plaintext=True)
                print("privkit: WARNING: the secret key was written WITHOUT encryption",
                      file=sys.stderr)
            else:
                keys.save(out, password=password, kdf=kdf)
            seal_s = time.perf_counter() - t
        else:
            write_envelope(args.public_out, pack_public_bundle(keys.public_bundle()))
    conj = "on" if keys.backend.conjugation else "off"
    how = "unencrypted" if args.insecure_plaintext else kdf.describe()
    if args.json:
        print(json.dumps({
            "key_file": str(out), "bytes": out.stat().st_size, "mode": "0600",
            "params": keys.params.describe(), "backend": args.backend,
            "fingerprint": key_fingerprint(keys), "rotation_keys": len(keys.rotation_steps),
            "conjugation": conj == "on", "protection": how, "generation_s": gen_s,
            "sealing_s": seal_s, "public_bundle": args.public_out,
            "public_bundle_bytes": Path(args.public_out).stat().st_size if args.public_out else None,
        }, indent=2))
        return 0
    print(f"wrote {out} ({out.stat().st_size:,} bytes, mode 0600): {keys.params.describe()}")
    print(f"  key fingerprint {key_fingerprint(keys)}")
    print(
        f"  {len(keys.rotation_steps)} rotation keys, conjugation {conj}; "
        f"generation {gen_s:.2f} s, sealing {seal_s:.2f} s ({how})"
    )
    if args.public_out:
        print(
            f"wrote public bundle {args.public_out} "
            f"({Path(args.public_out).stat().st_size:,} bytes)"
        )
    return 0


def run_export_public(args: argparse.Namespace) -> int:
    from privkit.fhe import KeySet
    from privkit.fhe.envelope import key_fingerprint, pack_public_bundle, write_envelope
    from privkit.fhe.keyfile import read_header

    info = read_header(args.keys)  # structural errors before asking for a password
    password = _password(args, confirm=False) if info.protection != "none" else None
    for _ in stages(["unsealing (KDF + AES-GCM)"], "keys export-public"):
        keys = KeySet.load(args.keys, password=password,
                           allow_plaintext=bool(getattr(args, "allow_plaintext", False)))
    blob = pack_public_bundle(keys.public_bundle())
    write_envelope(args.out, blob)
    if args.json:
        print(json.dumps({"public_bundle": args.out, "bytes": len(blob),
                          "fingerprint": key_fingerprint(keys)}, indent=2))
        return 0
    print(
        f"wrote public bundle {args.out} ({len(blob):,} bytes), key fingerprint "
        f"{key_fingerprint(keys)}"
    )
    return 0


def describe_file(path: str | os.PathLike) -> dict[str, Any]:
    """What ``privkit keys inspect`` prints, as a dict (no secret material, ever)."""
    from privkit.fhe import keyfile
    from privkit.fhe.envelope import is_envelope, open_envelope

    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(keyfile.MAGIC))
    except OSError as e:
        raise ParameterError(f"cannot read {str(path)!r}: {e}") from e
    size = path.stat().st_size
    if head == keyfile.MAGIC:
        info = keyfile.read_header(path)
        return {
            "file": str(path),
            "type": "sealed key set" if info.protection != "none" else "UNENCRYPTED key set",
            "format_version": info.version,
            "protection": info.protection,
            "kdf": info.kdf,
            "backend": info.backend,
            "params": info.params.describe(),
            "fingerprint": info.fingerprint,
            "key_id": info.key_id,
            "rotation_keys": len(info.rotations),
            "conjugation": info.conjugation,
            "file_bytes": size,
            "key_set_bytes": info.payload_len,
            "public_key_bytes": info.public_sizes,
            "permissions": oct(path.stat().st_mode & 0o777),
        }
    if is_envelope(head):
        blob = path.read_bytes()
        env = open_envelope(blob)
        out = {
            "file": str(path),
            "type": "envelope",
            "kind": env.kind,
            "format_version": env.version,
            "fingerprint": env.fingerprint,
            "integrity": "ok (SHA-256)",
            "signed_by": env.signer or "not signed",
            "file_bytes": size,
            "payload_bytes": len(env.payload),
            "overhead_bytes": env.overhead,
            "meta": env.meta,
        }
        if env.kind == "public-bundle":
            from privkit.fhe.keys import PublicBundle

            bundle = PublicBundle.from_bytes(env.payload)
            out["params"] = bundle.params.describe()
            out["public_key_bytes"] = bundle.sizes()
        return out
    raise KeyFileError(f"{str(path)!r} is neither a privkit key file nor a privkit envelope")


def run_inspect(args: argparse.Namespace) -> int:
    d = describe_file(args.file)
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    width = max(len(k) for k in d)
    for k, v in d.items():
        if isinstance(v, dict):
            v = (
                ", ".join(
                    f"{a}={b:,}" if isinstance(b, int) and not isinstance(b, bool) else f"{a}={b}"
                    for a, b in v.items()
                )
                or "-"
            )
        elif v is None:
            v = "-"
        elif isinstance(v, int) and not isinstance(v, bool) and k.endswith("bytes"):
            v = f"{v:,}"
        print(f"{k.replace('_', ' '):<{width}}  {v}")
    return 0
