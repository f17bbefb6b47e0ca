"""Latency of every backend operation per preset, key-generation time and object sizes.

Run:  python bench/fhe_ops.py [--presets n8192 n16384 n32768] [--repeat 7] [--backend seal]

Prints one table per preset: median latency (ms) of each operation on a full ciphertext at the
top level (products at the top level too, i.e. the most expensive level), and the sizes of a
ciphertext, the public bundle and one Galois key. Rotation "by a large step" is measured with a
dedicated key and without one (composed from power-of-two keys).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from privkit.fhe import CKKSParams, KeySet
from privkit.fhe.keys import default_rotations

from _timing import median_s  # bench/_timing.py


def median_ms(fn, repeat: int) -> float:
    return median_s(fn, repeat) * 1e3


def bench_preset(name: str, backend: str, repeat: int) -> None:
    params = CKKSParams.preset(name)
    big = params.slots // 2 - 3  # a large step with many set bits: composed from ~log2(slots) keys
    big_keyed = params.slots // 3
    rotations = default_rotations(params) + [big_keyed]
    t = time.perf_counter()
    keys = KeySet.generate(params, backend=backend, rotations=rotations)
    keygen_s = time.perf_counter() - t
    be = keys.backend
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, params.slots)
    y = rng.uniform(-1, 1, params.slots)
    a, b = keys.encrypt(x), keys.encrypt(y)
    rows = [
        ("encrypt", lambda: keys.encrypt(x)),
        ("decrypt", lambda: keys.decrypt(a)),
        ("add", lambda: be.add(a, b)),
        ("sub", lambda: be.sub(a, b)),
        ("neg", lambda: be.neg(a)),
        ("add_plain (vector)", lambda: be.add_plain(a, y)),
        ("mul_plain (vector, +rescale)", lambda: be.mul_plain(a, y)),
        ("mul_plain (scalar, +rescale)", lambda: be.mul_plain(a, 0.37)),
        ("mul_plain (integer, free)", lambda: be.mul_plain(a, 3)),
        ("mul (relin + rescale)", lambda: be.mul(a, b)),
        ("square (relin + rescale)", lambda: be.square(a)),
        ("rotate by 1 (own key)", lambda: be.rotate(a, 1)),
        (f"rotate by {big_keyed} (own key)", lambda: be.rotate(a, big_keyed)),
        (f"rotate by {big} (composed, {len(be.rotation_path(big))} keys)", lambda: be.rotate(a, big)),
        ("conjugate", lambda: be.conjugate(a)),
        ("sum_slots (all slots)", lambda: be.sum_slots(a, params.slots)),
    ]
    bundle = keys.public_bundle()
    sizes = bundle.sizes()
    n_galois = len(rotations) + 1  # + conjugation
    print(f"\n## {params.describe()}  [{be.name}{' SIMULATED' if be.simulated else ''}]")
    print(f"key generation ({n_galois} Galois keys): {keygen_s:.2f} s")
    print(f"{'operation':<44}{'median ms':>12}")
    for label, fn in rows:
        print(f"{label:<44}{median_ms(fn, repeat):>12.2f}", flush=True)
    print(f"{'ciphertext (top level) bytes':<44}{len(a.to_bytes()):>12,}")
    print(f"{'ciphertext (last level) bytes':<44}{len(be.mod_switch_to(a, 0).to_bytes()):>12,}")
    print(f"{'public bundle bytes':<44}{len(bundle.to_bytes()):>12,}")
    if "galois_keys" in sizes:
        print(f"{'one Galois key (bytes, average)':<44}{sizes['galois_keys'] // n_galois:>12,}")
    print(f"{'relinearisation key bytes':<44}{sizes.get('relin_keys', 0):>12,}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["n8192", "n16384", "n32768"])
    ap.add_argument("--backend", default="seal", choices=["seal", "sim"])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    print("command: python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]))
    print(f"machine: {os.cpu_count()} cores; SEAL via TenSEAL sealapi, single-threaded")
    for name in args.presets:
        bench_preset(name, args.backend, args.repeat)


if __name__ == "__main__":
    main()
