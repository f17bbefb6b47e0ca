"""Encrypted apnea detection across a process boundary: the server never sees the ECG.

    python examples/apnea_client_server.py [--smoke] [--backend seal|sim] [--workdir DIR]

1. The model owner trains a detector on synthetic ECG and compiles it (server side).
2. The client generates a key set from the program's public description, encrypts one window
   and writes ONLY the public bundle and the ciphertext to files, each in an authenticated
   envelope bound to the key set's fingerprint.
3. A separate server process (``--serve``) loads the model, reads those files, runs the program
   with public keys only and writes the encrypted result.
4. The client decrypts the result and compares it with the plaintext model.

The server process is started with ``subprocess``; it gets file paths and nothing else: no
secret key, no plaintext input.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def serve(workdir: Path, allow_insecure: bool = False) -> None:
    """The server: model + public bundle + ciphertext in, encrypted logits out.

    A simulator bundle (``--backend sim``) is refused unless the server is started with
    ``--allow-insecure``: its "ciphertexts" are plaintext numbers."""
    from privkit.apps.apnea import ApneaDetector
    from privkit.fhe.envelope import pack_ciphertext, unpack_ciphertext, unpack_public_bundle

    det = ApneaDetector.load(workdir / "model.pt")
    program = det.compile()
    bundle = unpack_public_bundle((workdir / "bundle.env").read_bytes(), allow_insecure=allow_insecure)
    backend = bundle.backend
    assert not backend.can_decrypt, "the server must not be able to decrypt"
    # refused (KeyMismatchError) if made under other keys or parameters than the bundle's
    ct = unpack_ciphertext((workdir / "input.env").read_bytes(), bundle)
    t = time.perf_counter()
    out = program.run(ct, bundle, allow_insecure=allow_insecure)
    if program.run_notes()["insecure"]:
        print(f"server: NOT SECURE, accepted with --allow-insecure: {program.run_notes()['insecure']}")
    (workdir / "result.env").write_bytes(pack_ciphertext(out, kind="result"))
    (workdir / "server.json").write_text(json.dumps({"run_s": time.perf_counter() - t}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny training run (CI)")
    ap.add_argument("--backend", default="seal", choices=["seal", "sim"])
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--allow-insecure", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(Path(args.serve), allow_insecure=args.allow_insecure)
        return 0

    from privkit.apps.apnea import ApneaDetector
    from privkit.data.ecg import synthetic_ecg
    from privkit.fhe.envelope import pack_ciphertext, pack_public_bundle, unpack_ciphertext

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="privkit-apnea-"))
    workdir.mkdir(parents=True, exist_ok=True)
    # -- model owner --------------------------------------------------------------------------
    data = synthetic_ecg(48 if args.smoke else 400, seed=0)
    det = ApneaDetector(epochs=1 if args.smoke else 10, finetune_epochs=0 if args.smoke else 2)
    det.fit(data, progress=False)
    det.save(workdir / "model.pt")
    program = det.compile()
    # -- client -------------------------------------------------------------------------------
    keys = program.keygen(backend=args.backend)
    window = synthetic_ecg(1, seed=123).x[0]
    (workdir / "bundle.env").write_bytes(pack_public_bundle(keys.public_bundle()))
    (workdir / "input.env").write_bytes(pack_ciphertext(program.encrypt_input(keys, window)))
    # -- server (another process) -------------------------------------------------------------
    # the simulator is an explicit choice (--backend sim): the server must be told to accept it
    insecure = ["--allow-insecure"] if args.backend == "sim" else []
    subprocess.run([sys.executable, __file__, "--serve", str(workdir), *insecure], check=True)
    # -- client -------------------------------------------------------------------------------
    out = unpack_ciphertext((workdir / "result.env").read_bytes(), keys, kind="result")
    logits = program.decrypt_output(keys, out)
    plain = det.logits(window)[0]
    run_s = json.loads((workdir / "server.json").read_text())["run_s"]
    sizes = {f: os.path.getsize(workdir / f) for f in ("bundle.env", "input.env", "result.env")}
    print(f"server run: {run_s:.2f} s; bytes sent: bundle {sizes['bundle.env']:,}, "
          f"ciphertext {sizes['input.env']:,}; returned {sizes['result.env']:,}")
    print(f"decrypted logits {np.round(logits, 5)}; plaintext {np.round(plain, 5)}; "
          f"max |diff| {np.abs(logits - plain).max():.2e}")
    same = int(logits.argmax()) == int(plain.argmax())
    print("prediction:", "apnea" if logits.argmax() else "normal", "(matches plaintext)" if same else "(MISMATCH)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
