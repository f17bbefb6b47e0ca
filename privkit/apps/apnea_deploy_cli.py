"""``privkit apnea serve`` and ``privkit apnea infer --server URL``.

    privkit apnea serve --model apnea.privkit [--port 8000] [--workers N]   # the model owner's server
    privkit apnea infer --server http://127.0.0.1:8000 --keys client.keys --data synthetic -n 8

``apnea serve`` compiles the detector, saves the program (``--program``, default MODEL.pkprog)
and serves it. ``apnea infer --server`` is a client that holds only its keys and the client spec
fetched from the server: it makes keys on first use (``--keys``, sealed; the spec is stored
beside them), encrypts the windows, posts them, decrypts the logits.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def extend(sub: argparse._SubParsersAction, infer: argparse.ArgumentParser) -> None:
    """Add ``apnea serve`` and the ``--server`` mode of ``apnea infer``."""
    from privkit.apps.serve_cli import add_server_options

    s = sub.add_parser("serve", help="compile a trained detector and serve it over HTTP",
                       description=__doc__)
    s.add_argument("--model", required=True, help="a model saved by 'privkit apnea train'")
    s.add_argument("--program", default=None, help="where to save the program (default MODEL.pkprog)")
    s.add_argument("--params", default="auto", help="CKKS preset or 'auto'")
    add_server_options(s)
    s.set_defaults(func=run_serve)

    infer.add_argument("--server", default=None, metavar="URL",
                       help="client mode: run on this server (the model is not needed)")
    infer.add_argument("--keys", default="apnea-client.keys", help="client mode: sealed key file")
    infer.add_argument("--password-env", default=None, metavar="VAR",
                       help="client mode: read the key-file password from environment variable VAR")
    infer.add_argument("--insecure-plaintext", action="store_true",
                       help="client mode: key file without a password (tests only)")
    for action in infer._actions:  # --model is the server's business in client mode
        if action.dest == "model":
            action.required = False
    previous = infer.get_default("func")
    infer.set_defaults(func=lambda a: run_remote(a) if a.server else _need_model(a, previous))


def _need_model(args: argparse.Namespace, run: Any) -> int:
    from privkit.errors import ParameterError

    if not args.model:
        raise ParameterError("give --model (local inference) or --server URL (client mode)")
    return run(args)


def run_serve(args: argparse.Namespace) -> int:
    from privkit.apps.apnea import ApneaDetector
    from privkit.apps.serve_cli import serve_program

    det = ApneaDetector.load(args.model)
    program = det.compile(args.params)
    path = args.program or os.path.splitext(args.model)[0] + ".pkprog"
    program.save(path)
    print(f"saved program {path} ({program.params.describe()}, depth {program.depth})", file=sys.stderr)
    return serve_program(path, args)


def run_remote(args: argparse.Namespace) -> int:
    import numpy as np

    from privkit.apps.apnea_cli import _load_data
    from privkit.apps.client_cli import _password
    from privkit.deploy import Client, ClientSpec
    from privkit.deploy.remote import HTTPClient

    data = _load_data(args.data, max(args.n, 8), args.seed, args.effect)
    x, y = data.x[: args.n], data.y[: args.n]
    with HTTPClient(args.server) as http:
        spec = http.model()
        have = os.path.exists(args.keys) and os.path.exists(args.keys + ".spec")
        if have and ClientSpec.load(args.keys + ".spec").model_id == spec.model_id:
            client = Client(spec)
            client.load_keys(args.keys, _password(args), allow_plaintext=args.insecure_plaintext)
        else:
            client = Client(spec)
            client.keygen(backend=args.backend)
            spec.save(args.keys + ".spec")
            client.save_keys(args.keys, _password(args), insecure_plaintext=args.insecure_plaintext)
        key_id = http.register(client.bundle_envelope())
        logits = np.atleast_2d(client.decrypt(http.infer(key_id, client.encrypt_batch(list(x)))))
    pred = logits.argmax(1)
    from privkit.apps.apnea import binary_metrics

    out = {"server": args.server, "key_id": key_id, "windows": int(len(x)),
           "logits": logits.tolist(), "metrics": binary_metrics(y, pred)}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for i, (row, p) in enumerate(zip(logits, pred)):
            print(f"  window {i}: logits {np.round(row, 4)} -> {'apnea' if p else 'normal'}")
        print("  " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in out["metrics"].items()))
    return 0
