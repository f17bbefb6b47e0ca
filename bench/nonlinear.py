"""Encrypted non-linearities: latency, levels, operation counts and approximation error.

Run:  python bench/nonlinear.py [--presets n16384 n32768] [--backend seal|sim] [--quick]

For each preset (SEAL by default), on a full ciphertext of values uniform in [-1, 1]:

* ``relu_composite`` at precisions 2^-4 .. 2^-10 (scale 1; family CompG);
* ``relu_poly`` at degrees 2 .. 15 (bound 1);
* ``approx_max`` (sqrt method) with d = 1 .. 6 iterations, and the poly method (degree 8);
* ``max_pool1d`` kernel 2 stride 2 on a 16-element signal, compact and gapped layouts, with the
  sqrt method (d = 1 .. 4 where the depth allows) and the poly method (degree 8);
* ``avg_pool1d`` (exact baseline).

Columns: levels consumed, ciphertext products, plaintext products, additions, rotations, all ops
(adds + pt + ct + rotations, as the paper counts), latency (one run, seconds), the maximal error
of the approximation against the exact function on [-1, 1] (dense grid / 200k random pairs; the
same for every preset, since the encrypted operator computes the twin's polynomial) and the
maximal |encrypted - plaintext twin| of this run. Settings a preset cannot afford are listed as
"needs N levels". Galois keys: only those the pools need (n32768 keys are ~220 MB each).

The paper (ICPR 2024, Table 4; HEAAN, 128 threads) reports ReLU: 15 adds, 11 pt-ct mults,
27 ops, 17.1 s; max-pool: 43 adds, 36 pt-ct, 31 ct-ct mults, 111 ops, 25.1 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from privkit.fhe import CKKSParams, KeySet
from privkit.fhe.ops import poly as P
from privkit.fhe.ops import pool as PL

RNG = np.random.default_rng(0)
GRID = np.linspace(-1, 1, 200001)
PAIRS_A = np.concatenate([RNG.uniform(-1, 1, 200000), GRID[::10]])
PAIRS_B = np.concatenate([RNG.uniform(-1, 1, 200000), RNG.uniform(-1, 1, GRID[::10].size)])
N_POOL = 16


def relu_err(fn) -> float:
    return float(np.abs(fn(GRID) - np.maximum(GRID, 0)).max())


def max_err(fn) -> float:
    return float(np.abs(fn(PAIRS_A, PAIRS_B) - np.maximum(PAIRS_A, PAIRS_B)).max())


def settings() -> list[dict]:
    """(section, label, depth, run(be, ct) -> ct, twin(x) -> y, error vs exact)."""
    rows: list[dict] = []
    for bits in range(4, 11):
        rows.append({
            "group": "relu_composite", "label": f"2^-{bits}", "depth": P.relu_composite_depth(1.0, bits),
            "run": lambda be, ct, b=bits: P.relu_composite(be, ct, 1.0, b),
            "twin": lambda x, b=bits: P.relu_composite_ref(x, 1.0, b),
            "err": lambda b=bits: relu_err(lambda x: P.relu_composite_ref(x, 1.0, b)),
            "extra": f"polys {[len(p) - 1 for p in P.relu_plan(bits)]}"})
    for deg in range(2, 16):
        rows.append({
            "group": "relu_poly", "label": f"deg {deg}", "depth": P.relu_poly_depth(deg, 1.0),
            "run": lambda be, ct, d=deg: P.relu_poly(be, ct, d, 1.0),
            "twin": lambda x, d=deg: P.relu_poly_ref(x, d, 1.0),
            "err": lambda d=deg: relu_err(lambda x: P.relu_poly_ref(x, d, 1.0)), "extra": ""})
    for d in range(1, 7):
        rows.append({
            "group": "max (sqrt)", "label": f"d={d}", "depth": P.approx_max_depth("sqrt", d),
            "run": lambda be, ct, d=d: P.approx_max(be, ct, be.rotate(ct, 1), "sqrt", d),
            "twin": lambda x, d=d: P.approx_max_ref(x, np.append(x[1:], x[:1]), "sqrt", d),
            "err": lambda d=d: max_err(lambda a, b: P.approx_max_ref(a, b, "sqrt", d)), "extra": ""})
    rows.append({
        "group": "max (poly)", "label": "deg 8", "depth": P.approx_max_depth("poly", degree=8),
        "run": lambda be, ct: P.approx_max(be, ct, be.rotate(ct, 1), "poly", degree=8),
        "twin": lambda x: P.approx_max_ref(x, np.append(x[1:], x[:1]), "poly", degree=8),
        "err": lambda: max_err(lambda a, b: P.approx_max_ref(a, b, "poly", degree=8)), "extra": ""})
    n = N_POOL
    for layout in ("gapped", "compact"):
        variants = [("sqrt", {"iterations": d}, f"sqrt d={d}") for d in range(1, 5)]
        variants.append(("poly", {"degree": 8}, "poly deg 8"))
        for method, kw, lab in variants:
            rows.append({
                "group": f"max_pool1d {layout}", "label": lab,
                "depth": PL.max_pool1d_depth(n, 2, 2, method, layout=layout, **kw),
                "run": lambda be, ct, m=method, kw=kw, lay=layout: PL.max_pool1d(
                    be, ct.replace(length=n), n, 2, 2, m, layout=lay, **kw),
                "twin": lambda x, m=method, kw=kw: PL.max_pool1d_ref(x[:n], 2, 2, m, **kw),
                "err": lambda m=method, kw=kw: max_err(
                    lambda a, b: PL.max_pool1d_ref(np.stack([a, b], -1), 2, 2, m, **kw)[..., 0]),
                "extra": "", "layout": layout})
        rows.append({
            "group": f"avg_pool1d {layout}", "label": "exact", "depth": PL.avg_pool1d_depth(n, 2, 2, layout),
            "run": lambda be, ct, lay=layout: PL.avg_pool1d(be, ct.replace(length=n), n, 2, 2, layout=lay),
            "twin": lambda x: PL.avg_pool1d_ref(x[:n], 2, 2), "err": lambda: 0.0, "extra": "", "layout": layout})
    return rows


def decode(vec: np.ndarray, row: dict, twin: np.ndarray) -> np.ndarray:
    if row.get("layout") == "gapped":
        return vec[0 : 2 * twin.size : 2]
    return vec[: twin.size]


def bench_preset(name: str, backend: str, rows: list[dict], errs: dict[int, float]) -> None:
    params = CKKSParams.preset(name)
    rot = sorted(set(PL.required_rotations(N_POOL, 2, 2, "compact")) | {1})
    t = time.perf_counter()
    keys = KeySet.generate(params, backend=backend, rotations=rot, conjugation=False)
    keygen = time.perf_counter() - t
    be = keys.backend
    x = RNG.uniform(-1, 1, params.slots)
    ct = keys.encrypt(x)
    print(f"\n## {params.describe()}  [{be.name}{' SIMULATED' if be.simulated else ''}]")
    print(f"key generation ({len(rot)} Galois keys: {rot}): {keygen:.1f} s")
    head = (f"{'operator':<20}{'setting':<12}{'levels':>7}{'ct*ct':>7}{'pt*ct':>7}{'adds':>6}{'rots':>6}"
            f"{'ops':>6}{'sec':>8}{'err vs exact':>14}{'|enc-twin|':>12}  notes")
    print(head)
    print("-" * len(head))
    for i, row in enumerate(rows):
        lead = f"{row['group']:<20}{row['label']:<12}"
        if row["depth"] > params.depth:
            print(f"{lead}{'needs ' + str(row['depth']) + ' levels (has ' + str(params.depth) + ')':>41}"
                  f"{'':>8}{errs[i]:>14.2e}")
            continue
        be.counter.reset()
        t = time.perf_counter()
        out = row["run"](be, ct)
        sec = time.perf_counter() - t
        c = be.counter.total
        assert params.depth - out.level == row["depth"], (row["group"], row["label"])
        twin = np.asarray(row["twin"](x))
        vec = keys.decrypt(out.replace(length=params.slots))
        got = decode(vec, row, twin) if "layout" in row else vec[: twin.size]
        enc_err = float(np.abs(got - twin).max())
        print(f"{lead}{row['depth']:>7}{c.ct_mults:>7}{c.pt_mults:>7}{c.adds:>6}{c.rotations:>6}"
              f"{c.total_ops:>6}{sec:>8.2f}{errs[i]:>14.2e}{enc_err:>12.1e}  {row['extra']}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["n16384", "n32768"])
    ap.add_argument("--backend", default="seal", choices=["seal", "sim"])
    ap.add_argument("--quick", action="store_true", help="a few settings per operator only")
    args = ap.parse_args()
    print("command: python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]))
    print(f"machine: {os.cpu_count()} cores; SEAL via TenSEAL sealapi, single-threaded")
    rows = settings()
    if args.quick:
        keep = {"2^-4", "2^-6", "deg 2", "deg 7", "deg 15", "d=1", "d=3", "sqrt d=1", "sqrt d=2", "exact", "deg 8"}
        rows = [r for r in rows if r["label"] in keep]
    t = time.perf_counter()
    errs = {i: r["err"]() for i, r in enumerate(rows)}
    print(f"approximation errors on [-1, 1] computed in {time.perf_counter() - t:.1f} s "
          f"(ReLU: 200001-point grid; max / max-pool: 220001 random pairs)")
    for name in args.presets:
        bench_preset(name, args.backend, rows, errs)
    print("\npaper (ICPR 2024, Table 4; HEAAN, 128 threads):")
    print("  ReLU      15 adds, 11 pt-ct mults,               27 ops in all, 17.1 s")
    print("  max-pool  43 adds, 36 pt-ct mults, 31 ct-ct mults, 111 ops in all, 25.1 s")


if __name__ == "__main__":
    main()
