"""Encrypted apnea detection in three roles: the client never sees the model, the server never
sees the ECG.

    python examples/apnea_client_server.py [--smoke] [--backend seal|sim] [--workdir DIR]

1. **Model owner**: trains a detector on synthetic ECG, compiles it, saves the program
   (``apnea.pkprog``, weights inside: it goes to the server only) and the client spec
   (``spec.env``: parameters, rotations, input layout and range; no weight).
2. **Client** (a function that is handed the path of ``spec.env`` and nothing else): makes keys
   with exactly the spec's rotations, seals them in ``client.keys``, writes its public bundle and
   one encrypted window (``bundle.env``, ``input.env``).
3. **Server** (a separate process, ``--serve``): loads the program, registers the bundle (a secret
   key set would be refused), computes, writes ``result.env``.
4. **Client** decrypts ``result.env``. For this demo only, the model owner's plaintext model is run
   on the same window to show that the encrypted answer matches.

For the same flow over HTTP see ``privkit serve`` / ``privkit client`` (docs/deployment.md).
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


def serve(workdir: Path, allow_insecure: bool) -> None:
    """The server: program + public bundle + ciphertext in, encrypted logits out.

    A simulator bundle (``--backend sim``) is refused unless the server is started with
    ``--allow-insecure``: its "ciphertexts" are plaintext numbers."""
    from privkit.deploy import Server
    from privkit.fhe.program import EncryptedProgram

    server = Server(EncryptedProgram.load(workdir / "apnea.pkprog"), allow_insecure=allow_insecure)
    key_id = server.register((workdir / "bundle.env").read_bytes())
    t = time.perf_counter()
    result = server.infer((workdir / "input.env").read_bytes(), key_id)
    (workdir / "result.env").write_bytes(result)
    (workdir / "server.json").write_text(json.dumps({"run_s": time.perf_counter() - t}))


def client_encrypt(spec_path: Path, window: np.ndarray, workdir: Path, backend: str) -> None:
    """The client, first half: only the spec; keys, bundle and ciphertext out."""
    from privkit.deploy import Client, ClientSpec

    client = Client(ClientSpec.load(spec_path))
    client.keygen(backend=backend)
    client.save_keys(workdir / "client.keys", "example password (use a real one)")
    (workdir / "bundle.env").write_bytes(client.bundle_envelope())
    (workdir / "input.env").write_bytes(client.encrypt(window))


def client_decrypt(spec_path: Path, workdir: Path) -> np.ndarray:
    """The client, second half: its sealed keys and the result envelope -> logits."""
    from privkit.deploy import Client, ClientSpec

    client = Client(ClientSpec.load(spec_path))
    client.load_keys(workdir / "client.keys", "example password (use a real one)")
    return client.decrypt((workdir / "result.env").read_bytes())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny training run (CI)")
    ap.add_argument("--backend", default="seal", choices=["seal", "sim"])
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--allow-insecure", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(Path(args.serve), args.allow_insecure)
        return 0

    from privkit.apps.apnea import ApneaDetector
    from privkit.data.ecg import synthetic_ecg

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="privkit-apnea-"))
    workdir.mkdir(parents=True, exist_ok=True)
    # -- model owner --------------------------------------------------------------------------
    data = synthetic_ecg(48 if args.smoke else 400, seed=0)
    det = ApneaDetector(**({"epochs": 1, "restarts": 1} if args.smoke else {}))  # v2
    det.fit(data, progress=False)
    det.save(workdir / "model.privkit")
    program = det.compile()
    program.save(workdir / "apnea.pkprog")  # for the server
    program.client_spec().save(workdir / "spec.env")  # for the client: no weights
    # -- client -------------------------------------------------------------------------------
    window = synthetic_ecg(1, seed=123).x[0]
    client_encrypt(workdir / "spec.env", window, workdir, args.backend)
    # -- server (another process) -------------------------------------------------------------
    # the simulator is an explicit choice (--backend sim): the server must be told to accept it
    insecure = ["--allow-insecure"] if args.backend == "sim" else []
    subprocess.run([sys.executable, __file__, "--serve", str(workdir), *insecure], check=True)
    # -- client -------------------------------------------------------------------------------
    logits = client_decrypt(workdir / "spec.env", workdir)
    plain = det.logits(window)[0]  # the owner's check, for this demo only
    run_s = json.loads((workdir / "server.json").read_text())["run_s"]
    sizes = {f: os.path.getsize(workdir / f) for f in ("spec.env", "bundle.env", "input.env", "result.env")}
    print(f"server run: {run_s:.2f} s; the client received the spec ({sizes['spec.env']:,} bytes, no "
          f"weights); sent bundle {sizes['bundle.env']:,} and ciphertext {sizes['input.env']:,}; "
          f"got back {sizes['result.env']:,}")
    print(f"decrypted logits {np.round(logits, 5)}; plaintext {np.round(plain, 5)}; "
          f"max |diff| {np.abs(logits - plain).max():.2e}")
    same = int(logits.argmax()) == int(plain.argmax())
    print("prediction:", "apnea" if logits.argmax() else "normal", "(matches plaintext)" if same else "(MISMATCH)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
