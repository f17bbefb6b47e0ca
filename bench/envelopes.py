"""Cost of sealed key files and authenticated envelopes.

Run:  python bench/envelopes.py [--presets n8192 n16384 n32768] [--repeat 5] [--scrypt-log-n 17]
                                [--with-default-rotations]

1. Sealing / unsealing a key set per preset (SEAL keys): the KDF alone (scrypt at the stated
   cost; one derivation per save and per load), then save (serialise + KDF + AES-256-GCM + atomic
   write with fsync) and load (read + KDF + decrypt + rebuild the SEAL objects + the
   secret/public probe). Key sets are generated with ``rotations=[]`` (relinearisation and
   conjugation keys only) for every preset; ``--with-default-rotations`` adds n8192 and n16384
   key sets with every power-of-two rotation key (n32768 only ever with ``rotations=[]``).
2. Envelope overhead for one fresh ciphertext and a public bundle (``rotations=[]``: relin and
   conjugation keys): bytes the envelope adds to the raw ``to_bytes`` form, and the time of the
   envelope layer itself (``seal_envelope`` = SHA-256 [+ Ed25519 signature], ``open_envelope``
   = parse + SHA-256 [+ verification] + kind/fingerprint checks) on the payloads ``pack_*``
   build, next to the raw serialise/deserialise times (median of ``--repeat``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from privkit.fhe import CKKSParams, KeySet
from privkit.fhe.envelope import (
    generate_signing_key,
    open_envelope,
    pack_ciphertext,
    pack_public_bundle,
    seal_envelope,
)
from privkit.fhe.keyfile import ScryptKDF, read_header

from _timing import median_s  # bench/_timing.py




def seal_rows(name: str, rotations, kdf: ScryptKDF, repeat: int, tmp: str) -> dict:
    params = CKKSParams.preset(name)
    t = time.perf_counter()
    keys = KeySet.generate(params, backend="seal", rotations=rotations)
    gen = time.perf_counter() - t
    path = os.path.join(tmp, f"{name}.keys")
    pw = "benchmark password"
    kdf_s = median_s(lambda: kdf.derive(pw.encode(), os.urandom(16)), repeat)
    save_s = median_s(lambda: keys.save(path, password=pw, kdf=kdf), max(1, repeat // 2))
    load_s = median_s(lambda: KeySet.load(path, password=pw), max(1, repeat // 2))
    info = read_header(path)
    return {
        "preset": name,
        "rot keys": "none" if rotations == [] else f"{len(keys.rotation_steps)} (pow2)",
        "keygen s": gen,
        "key set MB": info.payload_len / 1e6,
        "file MB": os.path.getsize(path) / 1e6,
        "KDF s": kdf_s,
        "save s": save_s,
        "load s": load_s,
    }


def overhead_rows(name: str, repeat: int) -> list[dict]:
    """Envelope layer alone: seal_envelope / open_envelope on the exact payloads pack_* build."""
    params = CKKSParams.preset(name)
    keys = KeySet.generate(params, backend="seal", rotations=[])
    bundle = keys.public_bundle()
    server = bundle.backend
    ct = keys.encrypt(np.random.default_rng(0).uniform(-1, 1, params.slots))
    signer = generate_signing_key()
    pub = signer.public_key()
    from privkit.fhe.keys import PublicBundle

    raw_ct, raw_b = ct.to_bytes(), bundle.to_bytes()
    cases = [
        (
            "ciphertext",
            raw_ct,
            open_envelope(pack_ciphertext(ct)),
            median_s(ct.to_bytes, repeat),
            median_s(lambda: server.deserialize_ciphertext(raw_ct), repeat),
        ),
        (
            "public bundle",
            raw_b,
            open_envelope(pack_public_bundle(bundle)),
            median_s(bundle.to_bytes, repeat),
            median_s(lambda: PublicBundle.from_bytes(raw_b), repeat),
        ),
    ]
    rows = []
    for label, raw, env, ser, de in cases:
        for signed in (False, True):
            sw = signer if signed else None
            blob = seal_envelope(
                env.kind, env.payload, env.fingerprint, meta=env.meta, sign_with=sw
            )
            seal = median_s(
                lambda: seal_envelope(
                    env.kind, env.payload, env.fingerprint, meta=env.meta, sign_with=sw
                ),
                repeat,
            )
            opened = median_s(
                lambda: open_envelope(
                    blob, env.kind, env.fingerprint, verify_with=pub if signed else None
                ),
                repeat,
            )
            rows.append(
                {
                    "preset": name,
                    "artefact": label + (" +Ed25519" if signed else ""),
                    "raw bytes": len(raw),
                    "+bytes": len(blob) - len(raw),
                    "raw to_bytes ms": ser * 1e3,
                    "raw from_bytes ms": de * 1e3,
                    "+seal us": seal * 1e6,
                    "+open us": opened * 1e6,
                }
            )
    return rows


def table(rows: list[dict]) -> None:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    fmt = {
        c: (
            lambda v: (
                f"{v:,.2f}"
                if isinstance(v, float) and abs(v) < 100
                else f"{v:,.0f}"
                if isinstance(v, (int, float))
                else str(v)
            )
        )
        for c in cols
    }
    cells = [[fmt[c](r[c]) if c in r else "" for c in cols] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for x in cells:
        print("| " + " | ".join(v.rjust(w) for v, w in zip(x, widths)) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--presets", nargs="+", default=["n8192", "n16384", "n32768"])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--scrypt-log-n", type=int, default=17)
    ap.add_argument("--with-default-rotations", action="store_true")
    args = ap.parse_args()
    kdf = ScryptKDF(n=2**args.scrypt_log_n)
    print("command: python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {os.cpu_count()} cores, load average {load:.1f}; SEAL via TenSEAL sealapi")
    print(
        f"KDF: {kdf.describe()}, one derivation per save and per load; AES-256-GCM, 4 MiB chunks\n"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.presets:
            rows.append(seal_rows(name, [], kdf, args.repeat, tmp))
            if args.with_default_rotations and name != "n32768":
                rows.append(seal_rows(name, None, kdf, args.repeat, tmp))
            print(f"  ... {name} done", file=sys.stderr, flush=True)
    print(
        "## Sealed key sets (save = serialise + KDF + AES-GCM + atomic write; "
        "load = read + KDF + decrypt + rebuild + probe)"
    )
    table(rows)
    print("\n## Envelope overhead (median; + = what the envelope adds to the raw form)")
    orows = []
    for name in args.presets:
        orows += overhead_rows(name, args.repeat)
    table(orows)


if __name__ == "__main__":
    main()
