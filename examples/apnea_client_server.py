"""Encrypted apnea detection across a process boundary: the server never sees the ECG.

    python examples/apnea_client_server.py [--smoke] [--backend seal|sim] [--workdir DIR]

1. The model owner trains a detector on synthetic ECG and compiles it (server side).
2. The client generates a key set from the program's public description, encrypts one window
   and writes ONLY the public bundle and the ciphertext to files.
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


def serve(workdir: Path) -> None:
    """The server: model + public bundle + ciphertext in, encrypted logits out."""
    from privkit.apps.apnea import ApneaDetector
    from privkit.fhe import PublicBundle

    det = ApneaDetector.load(workdir / "model.pt")
    program = det.compile()
    bundle = PublicBundle.from_bytes((workdir / "bundle.bin").read_bytes())
    backend = bundle.backend
    assert not backend.can_decrypt, "the server must not be able to decrypt"
    ct = backend.deserialize_ciphertext((workdir / "input.ct").read_bytes())
    t = time.perf_counter()
    out = program.run(ct, bundle)
    (workdir / "result.ct").write_bytes(out.to_bytes())
    (workdir / "server.json").write_text(json.dumps({"run_s": time.perf_counter() - t}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny training run (CI)")
    ap.add_argument("--backend", default="seal", choices=["seal", "sim"])
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(Path(args.serve))
        return 0

    from privkit.apps.apnea import ApneaDetector
    from privkit.data.ecg import synthetic_ecg

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
    (workdir / "bundle.bin").write_bytes(keys.public_bundle().to_bytes())
    (workdir / "input.ct").write_bytes(program.encrypt_input(keys, window).to_bytes())
    # -- server (another process) -------------------------------------------------------------
    subprocess.run([sys.executable, __file__, "--serve", str(workdir)], check=True)
    # -- client -------------------------------------------------------------------------------
    out = keys.ciphertext_from_bytes((workdir / "result.ct").read_bytes())
    logits = program.decrypt_output(keys, out)
    plain = det.logits(window)[0]
    run_s = json.loads((workdir / "server.json").read_text())["run_s"]
    sizes = {f: os.path.getsize(workdir / f) for f in ("bundle.bin", "input.ct", "result.ct")}
    print(f"server run: {run_s:.2f} s; bytes sent: bundle {sizes['bundle.bin']:,}, "
          f"ciphertext {sizes['input.ct']:,}; returned {sizes['result.ct']:,}")
    print(f"decrypted logits {np.round(logits, 5)}; plaintext {np.round(plain, 5)}; "
          f"max |diff| {np.abs(logits - plain).max():.2e}")
    same = int(logits.argmax()) == int(plain.argmax())
    print("prediction:", "apnea" if logits.argmax() else "normal", "(matches plaintext)" if same else "(MISMATCH)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
