"""``privkit client``: the client role from a shell (keys, encrypt, send, decrypt).

    privkit client keys --server URL --out client.keys [--password-env VAR]
        fetch the client spec (written next to the keys as client.keys.spec), make keys with
        exactly its rotations, seal them, register the public bundle; prints the key id
    privkit client encrypt --keys client.keys INPUT.npy --out input.env
    privkit client send --server URL --keys client.keys input.env --out result.env
    privkit client decrypt --keys client.keys result.env [--json]

INPUT.npy holds one input (the model's input shape) or several (a leading axis). The client never
receives the model: only its spec (parameters, rotations, layout, input range).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from privkit.apps._cli_common import add_json

    p = sub.add_parser("client", help="encrypt, send and decrypt against an inference server",
                       description=__doc__)
    s = p.add_subparsers(dest="client_command", metavar="ACTION")

    def keyfile(q: argparse.ArgumentParser) -> None:
        q.add_argument("--keys", required=True, help="sealed key file (spec beside it: KEYS.spec)")
        q.add_argument("--password-env", default=None, metavar="VAR",
                       help="read the key-file password from environment variable VAR")
        q.add_argument("--insecure-plaintext", action="store_true",
                       help="key file without a password (tests only)")

    k = s.add_parser("keys", help="fetch the spec, make and seal keys, register the public bundle")
    k.add_argument("--server", required=True, help="server URL, e.g. http://127.0.0.1:8000")
    k.add_argument("--out", required=True, help="key file to write")
    k.add_argument("--password-env", default=None, metavar="VAR",
                   help="read the key-file password from environment variable VAR")
    k.add_argument("--insecure-plaintext", action="store_true",
                   help="key file without a password (tests only)")
    k.add_argument("--backend", default="seal", choices=["seal", "sim"],
                   help="sim: NO encryption (tests; the server must run with --allow-insecure)")
    add_json(k)
    k.set_defaults(func=run_keys)

    e = s.add_parser("encrypt", help="encrypt inputs (.npy) into a ciphertext envelope")
    keyfile(e)
    e.add_argument("input", help=".npy file: one input or a stack of them")
    e.add_argument("--out", required=True, help="ciphertext envelope to write")
    add_json(e)
    e.set_defaults(func=run_encrypt)

    n = s.add_parser("send", help="post a ciphertext envelope, write the result envelope")
    keyfile(n)
    n.add_argument("--server", required=True, help="server URL, e.g. http://127.0.0.1:8000")
    n.add_argument("ciphertext", help="ciphertext envelope made by 'privkit client encrypt'")
    n.add_argument("--out", required=True, help="result envelope to write")
    add_json(n)
    n.set_defaults(func=run_send)

    d = s.add_parser("decrypt", help="decrypt a result envelope and print the logits")
    keyfile(d)
    d.add_argument("result", help="result envelope returned by the server")
    add_json(d)
    d.set_defaults(func=run_decrypt)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _password(args: argparse.Namespace) -> str | None:
    from privkit.errors import ParameterError

    if args.insecure_plaintext:
        return None
    if args.password_env:
        pw = os.environ.get(args.password_env)
        if not pw:
            raise ParameterError(f"environment variable {args.password_env} is not set")
        return pw
    import getpass

    return getpass.getpass("key file password: ")


def _client(args: argparse.Namespace):
    from privkit.deploy import Client, ClientSpec

    client = Client(ClientSpec.load(args.keys + ".spec"))
    client.load_keys(args.keys, _password(args), allow_plaintext=args.insecure_plaintext)
    return client


def run_keys(args: argparse.Namespace) -> int:
    from privkit.deploy import Client
    from privkit.deploy.remote import HTTPClient

    with HTTPClient(args.server) as http:
        spec = http.model()
        client = Client(spec)
        client.keygen(backend=args.backend)
        spec.save(args.out + ".spec")
        client.save_keys(args.out, _password(args), insecure_plaintext=args.insecure_plaintext)
        key_id = http.register(client.bundle_envelope())
    if args.json:
        print(json.dumps({"key_id": key_id, "keys": args.out, "spec": args.out + ".spec",
                          "backend": args.backend}))
    else:
        print(key_id)
    print(f"keys: {args.out}; spec: {args.out}.spec; registered as {key_id}", file=sys.stderr)
    return 0


def run_encrypt(args: argparse.Namespace) -> int:
    import numpy as np

    from privkit.fhe.envelope import write_envelope

    client = _client(args)
    x = np.load(args.input, allow_pickle=False)
    c, length = client.spec.input_shape
    single = tuple(x.shape) == (c, length) or (x.ndim == 1 and c == 1)
    write_envelope(args.out, client.encrypt(x) if single else client.encrypt_batch(list(x)))
    if args.json:
        print(json.dumps({"ciphertext": args.out, "inputs": 1 if single else int(x.shape[0]),
                          "bytes": os.path.getsize(args.out)}))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def run_send(args: argparse.Namespace) -> int:
    from privkit.deploy.remote import HTTPClient
    from privkit.fhe.envelope import write_envelope

    client = _client(args)
    with open(args.ciphertext, "rb") as fh:
        blob = fh.read()
    with HTTPClient(args.server) as http:
        write_envelope(args.out, http.infer(client.key_id, blob))
    if args.json:
        print(json.dumps({"result": args.out, "bytes": os.path.getsize(args.out),
                          "key_id": client.key_id}))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def run_decrypt(args: argparse.Namespace) -> int:
    client = _client(args)
    with open(args.result, "rb") as fh:
        out = client.decrypt(fh.read())
    if args.json:
        print(json.dumps({"logits": out.tolist()}))
    else:
        print(out)
    return 0
