"""``privkit serve MODEL``: the HTTP inference server for a saved program.

    privkit serve model.pkprog --host 127.0.0.1 --port 8000 [--workers N] [--key-dir DIR]
    privkit serve model.pkprog --ray ADDRESS            # computations on a Ray cluster

MODEL is a program saved with ``EncryptedProgram.save`` (or ``privkit apnea serve``). Clients
fetch the client spec (``GET /model``), register their public bundle (``POST /keys``) and post
ciphertext envelopes (``POST /infer/KEY_ID``); see docs/deployment.md.
"""

from __future__ import annotations

import argparse
import sys


def add_server_options(p: argparse.ArgumentParser) -> None:
    """The options shared by ``privkit serve`` and ``privkit apnea serve``."""
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU count)")
    p.add_argument("--key-dir", default=None, help="where registered public bundles are stored")
    p.add_argument("--max-queue", type=int, default=64, help="waiting inputs before answering 503")
    p.add_argument("--max-request-mb", type=float, default=64.0, help="largest ciphertext request")
    p.add_argument("--max-bundle-mb", type=float, default=2048.0, help="largest public bundle")
    p.add_argument("--cache-mb", type=float, default=4096.0, help="bundle bytes each worker caches")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="compute on a Ray cluster ('auto', 'ray://host:10001'; 'local' starts one)")
    p.add_argument("--allow-insecure", action="store_true",
                   help="accept simulator or sub-128-bit bundles (NO real encryption; tests and "
                        "demos only)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON line on stdout when the server starts (url, model, model id)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a saved encrypted program over HTTP",
                       description=__doc__)
    p.add_argument("model", help="a saved program (EncryptedProgram.save)")
    add_server_options(p)
    p.set_defaults(func=run_serve)


def serve_program(path: str, args: argparse.Namespace) -> int:
    from privkit.deploy.http import serve

    pool = None
    key_dir = args.key_dir
    if args.ray:
        import tempfile

        from privkit.deploy.ray import RayPool

        key_dir = key_dir or tempfile.mkdtemp(prefix="privkit-keys-")
        pool = RayPool(path, key_dir, None if args.ray == "local" else args.ray,
                       workers=args.workers or 2, allow_insecure=args.allow_insecure)
    where = f"Ray {args.ray}" if args.ray else f"{args.workers or 'one per CPU'} worker processes"
    print(f"privkit serve: {path} on http://{args.host}:{args.port} ({where})", file=sys.stderr)
    if getattr(args, "json", False):
        import json

        from privkit.fhe.artifact import load_program

        info = {"url": f"http://{args.host}:{args.port}", "model": path,
                "model_id": load_program(path).client_spec().model_id,
                "workers": args.workers, "ray": args.ray, "insecure": bool(args.allow_insecure)}
        print(json.dumps(info), flush=True)
    serve(path, host=args.host, port=args.port, key_dir=key_dir, workers=args.workers,
          max_queue=args.max_queue, max_request_bytes=int(args.max_request_mb * 2**20),
          max_bundle_bytes=int(args.max_bundle_mb * 2**20), cache_bytes=int(args.cache_mb * 2**20),
          allow_insecure=args.allow_insecure, pool=pool)
    return 0


def run_serve(args: argparse.Namespace) -> int:
    return serve_program(args.model, args)
