"""``privkit demo``: a tour of the encrypted primitives with their error against numpy."""

from __future__ import annotations

import argparse
import json
import time

from ._cli_common import add_json, add_smoke, bar


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="encrypt a vector, run basic CKKS operations, print error vs numpy and latency",
        description="Generates keys, encrypts a random vector, runs add, plaintext multiply, "
        "rotation, slot sum and a ciphertext product, decrypts, and prints each result's max "
        "error against numpy with its latency.",
    )
    p.add_argument("--preset", default="n8192", help="parameter preset (n8192, n16384, n32768)")
    p.add_argument("--backend", default="seal", choices=["seal", "sim"],
                   help="seal: real CKKS encryption; sim: the plaintext simulator (NOT encrypted)")
    p.add_argument("--length", type=int, default=1024, help="number of values to encrypt")
    p.add_argument("--seed", type=int, default=0, help="seed of the random test vectors")
    add_smoke(p, "64 values")
    add_json(p)
    p.set_defaults(func=run)


def demo_rows(preset: str, backend: str, length: int, seed: int,
              progress: bool = False) -> tuple[list[dict], str]:
    import numpy as np

    from privkit.fhe import CKKSParams, KeySet
    from privkit.fhe.keys import default_rotations

    rng = np.random.default_rng(seed)
    params = CKKSParams.coerce(preset)
    ops = bar(total=9, desc="demo: keygen + 8 operations", disable=not progress, unit="op")
    t0 = time.perf_counter()
    # powers of two (any rotation composes from them) plus a dedicated key for 5
    keys = KeySet.generate(params, backend=backend, rotations=default_rotations(params) + [5])
    keygen = time.perf_counter() - t0
    ops.update(1)
    be = keys.backend
    if length > keys.params.slots:
        from privkit.errors import SlotOverflowError

        raise SlotOverflowError(f"--length {length} exceeds the {keys.params.slots} slots of {preset}")
    x = rng.uniform(-1, 1, length)
    y = rng.uniform(-1, 1, length)
    rows = []

    def step(name, fn, expected):
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
        got = keys.decrypt(out)
        rows.append(
            {
                "operation": name,
                "max_abs_error": float(np.max(np.abs(got - expected))),
                "latency_ms": dt * 1e3,
                "level": out.level,
            }
        )
        ops.update(1)
        return out

    a = step("encrypt", lambda: keys.encrypt(x), x)
    b = keys.encrypt(y)
    step("add", lambda: be.add(a, b), x + y)
    step("multiply plain", lambda: be.mul_plain(a, y), x * y)
    xp = np.zeros(keys.params.slots)
    xp[:length] = x
    step("rotate by 5", lambda: be.rotate(a, 5).replace(length=length), np.roll(xp, -5)[:length])
    step("rotate by 7 (composed)", lambda: be.rotate(a, 7).replace(length=length), np.roll(xp, -7)[:length])
    step("sum slots", lambda: be.sum_slots(a, length), np.array([x.sum()]))
    step("multiply ciphertexts", lambda: be.mul(a, b), x * y)
    step("x^2 + x*y + 1", lambda: be.add_plain(be.add(be.square(a), be.mul(a, b)), 1.0), x * x + x * y + 1)
    ops.close()
    header = (
        f"{'simulated (NOT encrypted)' if be.simulated else 'encrypted'} with {keys.params.describe()}; "
        f"key generation {keygen:.2f} s; {length} values"
    )
    return rows, header


def run(args: argparse.Namespace) -> int:
    length = min(args.length, 64) if args.smoke else args.length
    rows, header = demo_rows(args.preset, args.backend, length, args.seed, progress=True)
    if args.json:
        print(json.dumps({"setup": header, "results": rows}, indent=2))
        return 0
    print(header)
    print(f"{'operation':<26}{'max |error|':>14}{'latency ms':>12}{'level':>7}")
    for r in rows:
        print(f"{r['operation']:<26}{r['max_abs_error']:>14.3e}{r['latency_ms']:>12.2f}{r['level']:>7}")
    return 0
