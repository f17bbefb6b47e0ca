"""Fully connected layers: the paper's DFT-DC slot sum vs the diagonal (BSGS) method and the
hybrid rotate-and-sum, latency and rotations.

Run:  python bench/linear.py [--preset n8192] [--shapes 2x256 2x2048 16x256 64x256 128x1024]
                             [--dft-max-out 16]

SealBackend (real encryption), one ciphertext holding x (n values), ``y = W @ x + b`` in the
first m slots. linear_dft runs one DFT (2 levels, bit-reversed output) per output node, so it
is measured only up to --dft-max-out outputs. Each method gets exactly its Galois keys.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from privkit.fhe import CKKSParams, KeySet, ops


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="n8192")
    ap.add_argument("--shapes", nargs="+", default=["2x256", "2x2048", "16x256", "64x256", "128x1024"])
    ap.add_argument("--dft-max-out", type=int, default=16)
    args = ap.parse_args(argv)
    params = CKKSParams.preset(args.preset)
    slots = params.slots
    print("command: python bench/linear.py " + " ".join(sys.argv[1:] if argv is None else argv))
    print(f"params: {params.describe()}; cpus={os.cpu_count()}; load={os.getloadavg()[0]:.1f}")
    head = (f"{'m x n':>10} {'method':>7} | {'seconds':>8} {'rots':>5} {'keys':>5} {'pt*ct':>6} "
            f"{'depth':>5} | {'max err':>8}  auto={'':<6}")
    print(head)
    print("-" * len(head))
    rng = np.random.default_rng(0)
    for shape in args.shapes:
        m, n = (int(v) for v in shape.split("x"))
        W = rng.uniform(-1, 1, (m, n)) / np.sqrt(n)
        b = rng.uniform(-1, 1, m)
        x = rng.uniform(-1, 1, n)
        want = W @ x + b
        auto = ops.linear_method(m, n, slots)
        for method in ("dft", "diag", "hybrid"):
            if method == "dft" and m > args.dft_max_out:
                print(f"{shape:>10} {method:>7} | {'(skipped: m DFTs)':>30}")
                continue
            steps = ops.required_rotations_linear((m, n), n, slots, method, levels=2)
            keys = KeySet.generate(params, rotations=steps)
            be = keys.backend
            ct = keys.encrypt(x)
            t = time.perf_counter()
            if method == "dft":
                out = ops.linear_dft(be, ct, W, b, n, levels=2)
            else:
                out = ops.linear_diag(be, ct, W, b, n, method=method)
            dt = time.perf_counter() - t
            c = be.counter.total
            err = float(np.abs(keys.decrypt(out) - want).max())
            print(f"{shape:>10} {method:>7} | {dt:>8.3f} {c.rotations:>5} {len(steps):>5} "
                  f"{c.pt_mults:>6} {c.depth:>5} | {err:>8.1e}  {auto if method == 'diag' else ''}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
