"""Box-filter / summed-area-table convolution: accuracy of the box approximation and cost against
rotation-based spatial convolution ("Efficient Convolution Operator in FHE Using Summed Area
Table", ICPR 2024).

Part 1 reproduces the paper's Table 1 (boxes needed for < 1% error, error at the paper's box
counts, multiplications saved) for random kernels and for smooth ones (Gaussian, Sobel, LoG),
with the paper's figures beside ours.

Part 2 measures latency and op counts of ``privkit.fhe.ops.conv_sat`` (package ``privkit.fhe.ops.sat``)
against spatial convolution in the same run, on real CKKS (SEAL through TenSEAL) by default:

* SIMD layout (one ciphertext per image): ``conv_sat`` with the SAT computed by the server
  (prefix-sum rotations) and with the SAT computed by the client before encryption
  (``input_sat=True``, first layer only), against ``privkit.fhe.ops.conv_spatial`` (one rotation
  and one plaintext-vector product per tap, ``compact=False`` so neither side compacts).
  Ring N=32768 with a depth-1 chain (60, 40, 60) (16,384 slots, 256-bit secure by the HE table).
  The SIMD SAT needs ``(n+1)`` times the padded volume in slots (the cyclic prefix sums must not
  alias), so 2-D images above 73x73 and 3-D volumes above 16^3 do not fit one ciphertext; such
  rows say "does not fit" instead of inventing a number (tiling across ciphertexts is not
  implemented).
* per-element layout (the paper's: one ciphertext per pixel, here carrying a batch of 4096
  images in its slots): ``conv_sat(layout="element")`` against a per-element spatial
  convolution written in this script (K^n scalar products per output; the library's spatial
  operator is SIMD only). Ring N=8192, chain (60, 40, 60). Measured on small images only, then
  extrapolated to the paper's sizes: op counts from the library's own per-element algorithm run
  on a counting stub (checked against the measured counts; exact up to 64x64 / 16^3, above
  that counted at 64x64 / 16^3 and scaled by the number of outputs), times per-op costs measured
  in this run. The extrapolated rows are marked.

No frequency-domain 2-D convolution exists in privkit (conv_freq is 1-D), so that comparison is
not made.

    python bench/sat_conv.py              # default run (< 10 min on 2 CPU cores)
    python bench/sat_conv.py --quick      # a few rows of each table (~1 min)
    python bench/sat_conv.py --sim        # op counts on the simulator (timings meaningless)
    python bench/sat_conv.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from privkit.fhe import CKKSParams, KeySet
from privkit.fhe.ops import sat as cs
from privkit.fhe.ops.boxes import approximate_kernel
from privkit.fhe.ops.sat import engine as sat_engine

try:  # the baseline (another module of privkit)
    from privkit.fhe.ops.conv_spatial import (
        conv2d_spatial,
        conv3d_spatial,
        required_rotations_conv_spatial,
    )
except ImportError:  # pragma: no cover
    conv2d_spatial = conv3d_spatial = required_rotations_conv_spatial = None

# The paper's Table 1: dim -> size -> (boxes, error %)
PAPER = {
    1: {7: (5, 0.94), 14: (10, 0.87), 28: (20, 0.49), 56: (36, 0.94)},
    2: {3: (5, 0.15), 5: (20, 0.08), 7: (32, 0.65), 9: (35, 0.78)},
    3: {3: (20, 0.74), 4: (46, 0.95), 5: (60, 0.87), 6: (130, 0.72)},
}

SIMD_PARAMS = CKKSParams(poly_degree=32768, coeff_bits=(60, 40, 60), scale_bits=40, name="n32768-d1")
ELEM_PARAMS = CKKSParams(poly_degree=8192, coeff_bits=(60, 40, 60), scale_bits=40, name="n8192-d1")


# -- smooth kernels --------------------------------------------------------------------------------
def _binom(n: int) -> np.ndarray:
    return np.array([math.comb(n, i) for i in range(n + 1)], dtype=float)


def _outer(vs: list[np.ndarray]) -> np.ndarray:
    out = vs[0]
    for v in vs[1:]:
        out = np.multiply.outer(out, v)
    return out


def gaussian(k: int, d: int) -> np.ndarray:
    s = k / 4.0
    g = np.exp(-((np.arange(k) - (k - 1) / 2) ** 2) / (2 * s * s))
    return _outer([g / g.sum()] * d)


def sobel(k: int, d: int) -> np.ndarray:
    """Derivative along the last axis, binomial smoothing along the others (k=3: Sobel)."""
    deriv = np.convolve(_binom(k - 2), [1.0, -1.0]) if k >= 2 else np.ones(1)
    return _outer([_binom(k - 1)] * (d - 1) + [deriv])


def log_kernel(k: int, d: int) -> np.ndarray:
    s = max(k / 5.0, 0.5)
    grids = np.meshgrid(*[np.arange(k) - (k - 1) / 2] * d, indexing="ij")
    r2 = sum(g * g for g in grids)
    f = (r2 / s**4 - d / s**2) * np.exp(-r2 / (2 * s * s))
    return f - f.mean()


SMOOTH = {"gaussian": gaussian, "sobel": sobel, "log": log_kernel}


# -- part 1: Table 1 ---------------------------------------------------------------------------------
def _natural_image() -> np.ndarray | None:
    try:
        from sklearn.datasets import load_sample_image

        return load_sample_image("china.jpg").mean(axis=2)[100:356, 200:456] / 255.0
    except (ImportError, OSError, ValueError):  # pragma: no cover - Pillow missing
        return None


def _pct(v: float) -> str:
    return f"{v * 100:.3g}%" if v >= 1e-6 else "<1e-4%"


def _count_and_error(k: np.ndarray, m_paper: int):
    bs = approximate_kernel(k, tol=0.01)
    hist = bs.history
    if len(hist) < m_paper and hist[-1] > 1e-12 and len(hist) < k.size:
        hist = approximate_kernel(k, max_boxes=m_paper, tol=0.0).history
    err_at = hist[min(m_paper, len(hist)) - 1]
    return bs, err_at


def table1(trials: dict[int, int], sizes: dict[int, list[int]], rng) -> list[dict]:
    img = _natural_image()
    rows = []
    print("\n=== Part 1: box approximation (paper's Table 1) ===")
    print("error = relative L2 kernel error ||F - F_hat|| / ||F|| (= expected response error on white noise);")
    print("'img err' = relative L2 response error on a 256x256 natural image (sklearn china.jpg), 2-D only.")
    head = (f"{'dim':>3} {'size':>5} {'kernel':<9}{'boxes<1%':>14}{'paper':>6}{'err@paper m':>12}{'paper':>7}"
            f"{'mults saved':>12}{'paper':>7}{'img err':>9}{'sec':>7}")
    print(head)
    print("-" * len(head))
    for d in (1, 2, 3):
        for k in sizes[d]:
            m_p, e_p = PAPER[d][k]
            shape = (k,) * d
            kinds = [("random", [rng.standard_normal(shape) for _ in range(trials[d])])]
            kinds += [(name, [f(k, d)]) for name, f in SMOOTH.items()]
            for name, kernels in kinds:
                t0 = time.perf_counter()
                counts, errs, img_errs = [], [], []
                for kern in kernels:
                    bs, err_at = _count_and_error(kern, m_p)
                    counts.append(len(bs))
                    errs.append(err_at)
                    if d == 2 and img is not None:
                        img_errs.append(bs.response_error(img))
                sec = (time.perf_counter() - t0) / len(kernels)
                c = np.array(counts)
                cstr = f"{c.mean():.1f} [{c.min()}-{c.max()}]" if len(c) > 1 else f"{c[0]}"
                saved = 1 - c.mean() / k**d
                row = {
                    "dim": d, "size": k, "kernel": name, "n": len(kernels), "boxes_mean": float(c.mean()),
                    "boxes_min": int(c.min()), "boxes_max": int(c.max()), "paper_boxes": m_p,
                    "err_at_paper_m": float(np.mean(errs)), "paper_err": e_p / 100, "mults_saved": saved,
                    "paper_saved": 1 - m_p / k**d, "img_err": float(np.mean(img_errs)) if img_errs else None,
                    "sec_per_kernel": sec,
                }
                rows.append(row)
                img_s = _pct(row["img_err"]) if row["img_err"] is not None else "-"
                print(f"{d:>3} {k:>5} {name:<9}{cstr:>14}{m_p:>6}{_pct(row['err_at_paper_m']):>12}{e_p / 100:>7.2%}"
                      f"{saved:>12.1%}{row['paper_saved']:>7.1%}{img_s:>9}{sec:>7.2f}")
    return rows


# -- part 2: latency -------------------------------------------------------------------------------
def _best_of(fn, repeats: int):
    best, out = None, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best, out


def _counts(be, name):
    c = be.counter.sections[name]
    return {"rotations": c.rotations, "pt_mults": c.pt_mults, "adds": c.adds, "depth": c.depth}


def simd_row(backend_kind: str, shape: tuple[int, ...], k: int, rng, repeats: int) -> list[dict]:
    d = len(shape)
    kern = rng.standard_normal((k,) * d)
    bs = approximate_kernel(kern, tol=0.01)
    x = rng.uniform(0, 1, shape)
    geo = cs.sat_geometry(shape, bs.shape)
    slots = SIMD_PARAMS.slots
    rows = []
    want_dense = cs.correlate_ref(x, bs.dense())
    want_exact = cs.correlate_ref(x, kern)
    fits_server = geo.slots_needed <= slots
    fits_client = geo.slots_needed_client_sat <= slots
    fits_spatial = int(np.prod(shape)) <= slots and conv2d_spatial is not None
    steps: set[int] = set()
    if fits_server:
        steps |= set(cs.required_rotations(bs, shape))
    if fits_client:
        steps |= set(cs.required_rotations(bs, shape, input_sat=True))
    if fits_spatial:
        steps |= set(required_rotations_conv_spatial(shape, (k,) * d, compact=False, slots=slots))
    keys = None
    if steps:
        t0 = time.perf_counter()
        keys = KeySet.generate(SIMD_PARAMS, backend=backend_kind, rotations=sorted(steps))
        keygen = time.perf_counter() - t0
    label = f"{'x'.join(map(str, shape))} k={k}"

    def run_sat(input_sat: bool):
        be = keys.backend
        ct = keys.encrypt(geo.pack_sat(x) if input_sat else geo.pack(x))
        name = f"sat{int(input_sat)}"
        be.counter.reset()
        sec, out = _best_of(lambda: cs.conv_sat(be, ct, bs, shape, input_sat=input_sat, section=name), repeats)
        cnt = _counts(be, name)
        for key in ("rotations", "pt_mults", "adds"):
            cnt[key] //= repeats
        err = float(np.max(np.abs(geo.unpack(keys.decrypt(out), input_sat) - want_dense)))
        return sec, cnt, err

    def run_spatial():
        be = keys.backend
        ct = keys.encrypt(x.ravel())
        fn = conv2d_spatial if d == 2 else conv3d_spatial
        be.counter.reset()
        sec, out = _best_of(lambda: fn(be, ct, kern, shape, compact=False, section="spatial"), repeats)
        cnt = _counts(be, "spatial")
        for key in ("rotations", "pt_mults", "adds"):
            cnt[key] //= repeats
        strides = np.cumprod((1,) + shape[::-1])[:-1][::-1]
        idx = sum(np.arange(n).reshape([-1 if i == j else 1 for j in range(d)]) * s
                  for i, (n, s) in enumerate(zip(want_exact.shape, strides)))
        err = float(np.max(np.abs(keys.decrypt(out)[idx] - want_exact)))
        return sec, cnt, err

    for method, fits, need, fn in (
        ("SAT (server prefix)", fits_server, geo.slots_needed, lambda: run_sat(False)),
        ("SAT (client SAT)", fits_client, geo.slots_needed_client_sat, lambda: run_sat(True)),
        ("spatial", fits_spatial, int(np.prod(shape)), run_spatial),
    ):
        row = {"layout": "simd", "config": label, "shape": shape, "k": k, "boxes": len(bs), "method": method}
        if fits:
            sec, cnt, err = fn()
            row.update(cnt, seconds=sec, max_err=err, keygen_s=keygen, keys=len(steps))
        else:
            row.update(fits=False, slots_needed=need)
        rows.append(row)
        _print_row(row)
    return rows


def _print_row(row: dict) -> None:
    if row.get("fits") is False:
        print(f"{row['layout']:<8}{row['config']:<16}{row['method']:<22}{'does not fit: needs ' + str(row['slots_needed']) + ' slots > 16384':>60}")
        return
    ext = " (extrapolated)" if row.get("extrapolated") else ""
    err = f"{row['max_err']:.1e}" if row.get("max_err") is not None else "-"
    print(f"{row['layout']:<8}{row['config']:<16}{row['method']:<22}{row.get('boxes', ''):>6}{row['rotations']:>7}"
          f"{row['pt_mults']:>10}{row['adds']:>10}{row['depth']:>4}{row['seconds']:>10.3f}{err:>9}{ext}")


# per-element layout ---------------------------------------------------------------------------------
def _element_spatial(be, cts, kern, out_shape):
    """Per-element spatial convolution (valid): out[o] = sum_k w_k x[o + k] (bench-only baseline)."""
    out = np.empty(out_shape, dtype=object)
    taps = [(off, float(kern[off])) for off in np.ndindex(*kern.shape) if kern[off] != 0]
    for o in np.ndindex(*out_shape):
        acc = None
        for off, w in taps:
            term = be.mul_plain(cts[tuple(a + b for a, b in zip(o, off))], w)
            acc = term if acc is None else be.add(acc, term)
        out[o] = acc
    return out


class _CountOps:
    """Runs conv_sat's per-element algorithm on dummy values, counting what the backend would."""

    def __init__(self) -> None:
        self.adds = 0
        self.mults = 0

    def add(self, a, b):
        self.adds += 1
        return 0

    sub = add

    def neg(self, a):
        return 0

    def mul(self, a, c):
        self.mults += 1
        return 0

    def add_scalar(self, a, c):
        self.adds += 1
        return 0

    def zero(self, like):
        return 0


def _sat_adds(shape) -> int:
    return sum((n - 1) * int(np.prod(shape)) // n for n in shape)


def element_counts(shape: tuple[int, ...], bs, ref_shape: tuple[int, ...] | None = None) -> dict:
    """Op counts of conv_sat(layout='element'), valid padding, one channel.

    Exact (the library's algorithm run on a counting stub) for ``shape``; with ``ref_shape``,
    counted exactly there and scaled to ``shape`` by the number of outputs (SAT exact).
    """
    sh = ref_shape or shape
    geo = cs.sat_geometry(sh, bs.shape)
    ops = _CountOps()
    sat_engine._element_engine(ops, np.zeros((1,) + sh, dtype=object), [[bs]], geo, None)
    if ref_shape is None:
        return {"rotations": 0, "pt_mults": ops.mults, "adds": ops.adds, "depth": 1}
    n_ref = int(np.prod(geo.out_shape))
    n_big = int(np.prod([n - k + 1 for n, k in zip(shape, bs.shape)]))
    f = n_big / n_ref
    return {"rotations": 0, "pt_mults": round(ops.mults * f),
            "adds": _sat_adds(shape) + round((ops.adds - _sat_adds(sh)) * f), "depth": 1}


def spatial_element_counts(shape, k) -> dict:
    n_out = int(np.prod([n - k + 1 for n in shape]))
    return {"rotations": 0, "pt_mults": n_out * k ** len(shape), "adds": n_out * (k ** len(shape) - 1), "depth": 1}


def element_rows(backend_kind: str, measured: list[tuple], extrapolated: list[tuple], rng) -> list[dict]:
    keys = KeySet.generate(ELEM_PARAMS, backend=backend_kind, rotations=[])
    be = keys.backend
    batch = ELEM_PARAMS.slots
    # per-op costs measured here (on the same machine, same load)
    ct = keys.encrypt(rng.uniform(0, 1, batch))
    t_add, _ = _best_of(lambda: [be.add(ct, ct) for _ in range(200)], 3)
    t_mul, _ = _best_of(lambda: [be.mul_plain(ct, 0.37) for _ in range(50)], 3)
    t_add, t_mul = t_add / 200, t_mul / 50
    print(f"per-element unit costs (N=8192, 2 data primes): add {t_add * 1e3:.3f} ms, scalar mult+rescale {t_mul * 1e3:.3f} ms")
    rows = []
    kernels: dict[tuple, tuple] = {}

    def kernel_for(d, k):
        if (d, k) not in kernels:
            kern = rng.standard_normal((k,) * d)
            kernels[(d, k)] = (kern, approximate_kernel(kern, tol=0.01))
        return kernels[(d, k)]

    for shape, k in measured:
        d = len(shape)
        kern, bs = kernel_for(d, k)
        x = rng.uniform(0, 1, (1,) + shape + (batch,))
        cts = cs.encrypt_elements(keys, x, batched=True)
        label = f"{'x'.join(map(str, shape))} k={k}"
        be.counter.reset()
        t0 = time.perf_counter()
        out = cs.conv_sat(be, cts, bs, shape, layout="element", section="sat_el")
        sec = time.perf_counter() - t0
        cnt = _counts(be, "sat_el")
        model = element_counts(shape, bs)
        assert (cnt["pt_mults"], cnt["adds"]) == (model["pt_mults"], model["adds"]), (cnt, model)
        got = np.stack([keys.decrypt(c) for c in out[0].ravel()[:4]])  # spot check 4 outputs
        want = np.stack([cs.correlate_ref(x[0, ..., j], bs.dense()).ravel()[:4] for j in range(batch)], axis=1)
        err = float(np.max(np.abs(got - want)))
        row = {"layout": "element", "config": label, "shape": shape, "k": k, "boxes": len(bs), "method": "SAT",
               **cnt, "seconds": sec, "max_err": err,
               "model_seconds": cnt["adds"] * t_add + cnt["pt_mults"] * t_mul}
        rows.append(row)
        _print_row(row)
        be.counter.reset()
        out_shape = tuple(n - k + 1 for n in shape)
        t0 = time.perf_counter()
        with be.counter.section("spatial_el"):
            sp = _element_spatial(be, cts[0], kern, out_shape)
        sec = time.perf_counter() - t0
        cnt = _counts(be, "spatial_el")
        got = np.stack([keys.decrypt(c) for c in sp.ravel()[:4]])
        want = np.stack([cs.correlate_ref(x[0, ..., j], kern).ravel()[:4] for j in range(batch)], axis=1)
        row = {"layout": "element", "config": label, "shape": shape, "k": k, "boxes": "", "method": "spatial (bench)",
               **cnt, "seconds": sec, "max_err": float(np.max(np.abs(got - want))),
               "model_seconds": cnt["adds"] * t_add + cnt["pt_mults"] * t_mul}
        rows.append(row)
        _print_row(row)
    for shape, k in extrapolated:
        d = len(shape)
        kern, bs = kernel_for(d, k)
        label = f"{'x'.join(map(str, shape))} k={k}"
        ref = (64, 64) if d == 2 else (16, 16, 16)
        sat_cnt = element_counts(shape, bs, ref if np.prod(shape) > np.prod(ref) else None)
        for method, cnt in (("SAT", sat_cnt), ("spatial (bench)", spatial_element_counts(shape, k))):
            row = {"layout": "element", "config": label, "shape": shape, "k": k,
                   "boxes": len(bs) if method == "SAT" else "", "method": method, **cnt,
                   "seconds": cnt["adds"] * t_add + cnt["pt_mults"] * t_mul, "max_err": None, "extrapolated": True}
            rows.append(row)
            _print_row(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few rows of each table")
    ap.add_argument("--sim", action="store_true", help="simulator backend (counts only; timings meaningless)")
    ap.add_argument("--part", choices=["1", "2", "all"], default="all")
    ap.add_argument("--repeats", type=int, default=1, help="SIMD timings: best of this many runs")
    ap.add_argument("--json", type=str, default=None)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    t_start = time.perf_counter()
    result: dict = {"argv": sys.argv[1:]}
    if args.part in ("1", "all"):
        if args.quick:
            trials, sizes = {1: 5, 2: 5, 3: 2}, {1: [7, 28], 2: [3, 9], 3: [3, 6]}
        else:
            trials, sizes = {1: 20, 2: 20, 3: 5}, {d: sorted(PAPER[d]) for d in (1, 2, 3)}
        result["table1"] = table1(trials, sizes, rng)
    if args.part in ("2", "all"):
        kind = "sim" if args.sim else "seal"
        print(f"\n=== Part 2: latency and op counts ({'SIMULATOR: counts only' if args.sim else 'SEAL, real CKKS'}) ===")
        print(f"SIMD: {SIMD_PARAMS.describe()}; per-element: {ELEM_PARAMS.describe()}, batch of "
              f"{ELEM_PARAMS.slots} images per ciphertext. Random kernels; boxes for <1% error; padding 'valid'.")
        print("max err: SAT vs the box-approximated kernel's exact convolution; spatial vs the exact kernel.")
        head = (f"{'layout':<8}{'config':<16}{'method':<22}{'boxes':>6}{'rots':>7}{'pt mults':>10}{'adds':>10}"
                f"{'lvl':>4}{'seconds':>10}{'max err':>9}")
        print(head)
        print("-" * len(head))
        if args.quick:
            simd = [((32, 32), 5), ((64, 64), 3), ((64, 64), 9), ((8, 8, 8), 3)]
            measured = [((12, 12), 5)]
            extrap = [((256, 256), 5)]
        else:
            simd = [((32, 32), 5), ((64, 64), 5), ((128, 128), 5), ((256, 256), 5)]
            simd += [((64, 64), k) for k in (3, 7, 9)]
            simd += [((16, 16, 16), k) for k in (3, 4, 5, 6)]
            simd += [((32, 32, 32), 3)]
            measured = [((16, 16), k) for k in (3, 5, 7, 9)] + [((8, 8, 8), k) for k in (3, 6)]
            extrap = [((n, n), 5) for n in (32, 64, 128, 256)] + [((256, 256), k) for k in (3, 7, 9)]
            extrap += [((32, 32, 32), k) for k in (3, 4, 5, 6)]
        rows = []
        for shape, k in simd:
            rows += simd_row(kind, shape, k, rng, args.repeats)
        rows += element_rows(kind, measured, extrap, rng)
        result["latency"] = rows
    total = time.perf_counter() - t_start
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"\ntotal {total:.0f} s; load average at the end {load} on {os.cpu_count()} CPUs")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
