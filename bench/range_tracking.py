"""Per-operation cost of range tracking (issue 17): each op with and without the magnitude bound.

    python bench/range_tracking.py [--preset n16384] [--backend sim|seal] [--repeat 2000]

The bound is a float64 vector of ``slots`` entries updated by every operation (one or two numpy
passes) and checked against the level's capacity (one mean). Prints microseconds per op, off -> on.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from privkit.fhe import KeySet


def per_op_us(keys: KeySet, repeat: int, track: bool) -> dict[str, float]:
    be = keys.backend
    x = keys.encrypt(np.linspace(-1, 1, 256))
    if not track:
        x = x.replace(bound=None)
    w = np.linspace(-1, 1, be.slots)
    ops = {"add": lambda: be.add(x, x), "rotate": lambda: be.rotate(x, 1),
           "mul_plain": lambda: be.mul_plain(x, w), "mul": lambda: be.mul(x, x)}
    out = {}
    for name, fn in ops.items():
        fn()
        t = time.perf_counter()
        for _ in range(repeat):
            fn()
        out[name] = (time.perf_counter() - t) / repeat * 1e6
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="n16384")
    ap.add_argument("--backend", default="sim", choices=["sim", "seal"])
    ap.add_argument("--repeat", type=int, default=2000)
    args = ap.parse_args()
    keys = KeySet.generate(args.preset, backend=args.backend, rotations=[1])
    off, on = per_op_us(keys, args.repeat, False), per_op_us(keys, args.repeat, True)
    print(f"command: python {' '.join(sys.argv)}")
    print(f"{'op':<10}{'untracked us':>14}{'tracked us':>12}{'overhead us':>13}")
    for k in on:
        print(f"{k:<10}{off[k]:>14.1f}{on[k]:>12.1f}{on[k] - off[k]:>13.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
