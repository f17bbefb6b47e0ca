"""Homomorphic DFT latency: factorised (Cooley-Tukey, grouped into levels, BSGS) vs the naive
matrix methods, in the same run (the ICPR 2024 apnea paper's Table 1 as ratios: 2048 in 5.2 s vs
855.9 s by plain matrix multiplication, 165x).

Run:  python bench/dft.py [--preset n8192] [--sizes 128 256 512 1024 2048 4096]
                          [--naive-max 2048] [--rowwise-max 256] [--levels 3]

Methods (SealBackend, real encryption; one complex DFT of a random real signal in [-1, 1]):
* factored/natural  : ``ops.dft(backend, ct, n)`` (the contract: natural in, natural out)
* factored/bitrev   : natural in, bit-reversed out (what the convolutions use)
* naive/diagonal    : the dense DFT matrix by the diagonal method (n products, n-1 rotations by
                      one step, computed incrementally; one level)
* naive/rowwise     : the paper-style plain matrix product: per output k, products with row k,
                      a rotate-and-sum, a mask to slot 0, and a rotation into place (2 levels)
Sizes above --naive-max / --rowwise-max are *extrapolated* from the measured per-operation cost
of the largest measured size (marked "~"); everything else is measured once, after warm-up.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from privkit.fhe import CKKSParams, KeySet, ops


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def rowwise(be, ct, n):
    """Paper-style matrix product, one output row at a time (keys: powers of two, -1)."""
    j = np.arange(n)
    acc = None
    for k in range(n - 1, -1, -1):
        row = np.exp(-2j * np.pi * k * j / n)
        s = be.sum_slots(be.mul_plain(ct, row), n)
        r = be.mul_plain(s, np.array([1.0]))
        acc = r if acc is None else be.add(be.rotate(acc, -1), r)
    return acc.replace(length=n, is_complex=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="n8192")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024, 2048, 4096])
    ap.add_argument("--naive-max", type=int, default=2048)
    ap.add_argument("--rowwise-max", type=int, default=256)
    ap.add_argument("--levels", type=int, default=3)
    args = ap.parse_args(argv)
    params = CKKSParams.preset(args.preset)
    print("command: python bench/dft.py " + " ".join(sys.argv[1:] if argv is None else argv))
    print(f"params: {params.describe()}; cpus={os.cpu_count()}; load={os.getloadavg()[0]:.1f}")
    rng = np.random.default_rng(0)
    rows = []
    per_diag = per_row = None
    for n in args.sizes:
        if n > params.slots:
            print(f"skip n={n}: more than {params.slots} slots")
            continue
        x = rng.uniform(-1, 1, n)
        want = np.fft.fft(x)
        res = {"n": n}
        for name, kw in [("natural", {}), ("bitrev", {"out_order": "bitrev"})]:
            rots = ops.required_rotations_dft(n, params.slots, levels=args.levels, **kw)
            keys = KeySet.generate(params, rotations=rots)
            be = keys.backend
            ct = keys.encrypt(x)
            ops.dft(be, ct, n, levels=args.levels, **kw)  # warm-up (plans are cached)
            be.counter.reset()
            out, dt = timed(ops.dft, be, ct, n, levels=args.levels, **kw)
            ref = ops.dft_ref(x, n, **kw)
            c = be.counter.total
            res[name] = (dt, c.rotations, c.pt_mults, c.depth, float(np.abs(keys.decrypt(out) - ref).max()))
            res[name + "_keys"] = len(rots)
        if n <= args.naive_max:
            rots = ops.required_rotations_dft(n, params.slots, method="naive")
            keys = KeySet.generate(params, rotations=rots)
            be = keys.backend
            ct = keys.encrypt(x)
            be.counter.reset()
            out, dt = timed(ops.dft, be, ct, n, method="naive")
            c = be.counter.total
            res["naive"] = (dt, c.rotations, c.pt_mults, 1, float(np.abs(keys.decrypt(out) - want).max()), "")
            per_diag = dt / n
        elif per_diag is not None:
            res["naive"] = (per_diag * n, n - 1, n, 1, float("nan"), "~")
        if n <= args.rowwise_max:
            steps = [1 << i for i in range(int(np.log2(n)))] + [-1]
            keys = KeySet.generate(params, rotations=steps)
            be = keys.backend
            ct = keys.encrypt(x)
            be.counter.reset()
            out, dt = timed(rowwise, be, ct, n)
            c = be.counter.total
            res["rowwise"] = (dt, c.rotations, c.pt_mults, 2, float(np.abs(keys.decrypt(out) - want).max()), "")
            per_row = (dt / n, np.log2(n))
        elif per_row is not None:
            t_row, lg = per_row
            est = t_row * n * (np.log2(n) + 2) / (lg + 2)  # rotations per row grow with log2 n
            res["rowwise"] = (est, n * (int(np.log2(n)) + 1), 2 * n, 2, float("nan"), "~")
        rows.append(res)
        print(f"  done n={n}", file=sys.stderr, flush=True)

    head = (f"{'n':>5} | {'factored natural s':>18} {'rot':>4} {'pt':>4} {'lv':>3} | "
            f"{'factored bitrev s':>17} {'rot':>4} {'pt':>4} | {'naive diag s':>12} | "
            f"{'rowwise s':>10} | {'diag/nat':>8} {'row/nat':>8} | {'max err':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        nat, br = r["natural"], r["bitrev"]
        nv, rw = r.get("naive"), r.get("rowwise")
        nv_s = f"{'~' if nv and nv[5] else ''}{nv[0]:.2f}" if nv else "-"
        rw_s = f"{'~' if rw and rw[5] else ''}{rw[0]:.1f}" if rw else "-"
        ratio_n = f"{nv[0] / nat[0]:.0f}x" if nv else "-"
        ratio_r = f"{rw[0] / nat[0]:.0f}x" if rw else "-"
        print(f"{r['n']:>5} | {nat[0]:>18.3f} {nat[1]:>4} {nat[2]:>4} {nat[3]:>3} | "
              f"{br[0]:>17.3f} {br[1]:>4} {br[2]:>4} | {nv_s:>12} | {rw_s:>10} | "
              f"{ratio_n:>8} {ratio_r:>8} | {max(nat[4], br[4]):>8.1e}")
    print("(~ = extrapolated from the largest measured size; rot/pt = rotations / plaintext "
          "products; lv = levels)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
