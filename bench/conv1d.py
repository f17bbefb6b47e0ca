"""1-D convolution: frequency domain (DFT -> Hadamard -> inverse DFT) vs rotation-based spatial,
latency and op counts (the ICPR 2024 apnea paper's Table 4 style).

Run:  python bench/conv1d.py [--preset n16384] [--n 2048] [--kernels 3 8 16 32]
                             [--channels 1 4 8] [--channel-kernel 8] [--mode valid]

SealBackend (real encryption). Each row: one encrypted signal of n samples per input channel
(one ciphertext per channel), PyTorch conv1d semantics (cross-correlation), stride 1, random
weights. Columns: seconds, adds, plaintext-ciphertext products, ciphertext-ciphertext products,
rotations (key switches), levels consumed, max |error| vs numpy. One KeySet holds exactly the
Galois keys both methods need (``required_rotations_*``).
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
    ap.add_argument("--preset", default="n16384")
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--kernels", type=int, nargs="+", default=[3, 8, 16, 32])
    ap.add_argument("--channels", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--channel-kernel", type=int, default=8)
    ap.add_argument("--mode", default="valid")
    args = ap.parse_args(argv)
    params = CKKSParams.preset(args.preset)
    n, slots = args.n, params.slots
    print("command: python bench/conv1d.py " + " ".join(sys.argv[1:] if argv is None else argv))
    print(f"params: {params.describe()}; cpus={os.cpu_count()}; load={os.getloadavg()[0]:.1f}")
    configs = [(1, K) for K in args.kernels] + [(c, args.channel_kernel) for c in args.channels if c > 1]
    rng = np.random.default_rng(0)
    steps: set[int] = set()
    kernels = {}
    for C, K in configs:
        k = rng.uniform(-1, 1, (C, C, K)) / np.sqrt(C * K)
        kernels[(C, K)] = k
        steps |= set(ops.required_rotations_conv_freq(n, k, 1, args.mode, slots=slots,
                                                      available=params.depth))
        steps |= set(ops.required_rotations_conv_spatial((n,), (K,), 1, args.mode, slots=slots))
    t = time.perf_counter()
    keys = KeySet.generate(params, rotations=sorted(steps))
    print(f"keygen: {len(steps)} Galois keys in {time.perf_counter() - t:.1f} s")
    be = keys.backend
    head = (f"{'C_in=C_out':>10} {'K':>3} {'method':>8} | {'seconds':>8} {'adds':>6} {'pt*ct':>6} "
            f"{'ct*ct':>6} {'rots':>5} {'depth':>5} | {'max err':>8}")
    print(head)
    print("-" * len(head))
    for C, K in configs:
        k = kernels[(C, K)]
        x = rng.uniform(-1, 1, (C, n))
        want = ops.conv1d_spatial_ref(x, k, n, 1, args.mode)
        cts = [keys.encrypt(v) for v in x]
        for method in ("freq", "spatial"):
            fn = ops.conv1d_freq if method == "freq" else ops.conv1d_spatial
            be.counter.reset()
            t = time.perf_counter()
            outs = fn(be, cts, k, n, 1, args.mode)
            dt = time.perf_counter() - t
            c = be.counter.total
            err = max(float(np.abs(keys.decrypt(o) - w).max()) for o, w in zip(outs, want))
            print(f"{C:>10} {K:>3} {method:>8} | {dt:>8.2f} {c.adds:>6} {c.pt_mults:>6} "
                  f"{c.ct_mults:>6} {c.rotations:>5} {c.depth:>5} | {err:>8.1e}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
