"""Per-operation CKKS costs on SEAL per ring size: the table behind ``params="auto"``'s choice
between one ciphertext at a large ring and several at a smaller one
(:data:`privkit.fhe.compiler.cost.UNIT_COSTS`).

For every preset it times (median of ``--repeat``) a rotation, a plaintext product (a slot vector,
encoded, multiplied and rescaled, as the compiled operators call it), a ciphertext product
(relinearised, rescaled) and an addition, at level 1 and at the preset's top level, and fits
``seconds = a + b * level`` per operation. It prints the rows to paste into ``cost.py``.

    python bench/unit_costs.py              # all presets
    python bench/unit_costs.py --repeat 5 --presets n8192 n16384
"""

from __future__ import annotations

import argparse
import shlex
import sys

import numpy as np

from _timing import median_s

from privkit.fhe import KeySet
from privkit.fhe.params import CKKSParams


def measure(preset: str, repeat: int) -> dict[str, tuple[float, float]]:
    p = CKKSParams.preset(preset)
    keys = KeySet.generate(p, backend="seal", rotations=[1])
    be = keys.backend
    rng = np.random.default_rng(0)
    ct_top = keys.encrypt(rng.uniform(-1, 1, p.slots))
    vec = rng.uniform(-1, 1, p.slots)
    out: dict[str, tuple[float, float]] = {}
    times: dict[str, dict[int, float]] = {"rotation": {}, "pt_mult": {}, "ct_mult": {}, "add": {}}
    levels = (1, p.depth)
    for lv in levels:
        ct = be.mod_switch_to(ct_top, lv) if lv < ct_top.level else ct_top
        times["rotation"][lv] = median_s(lambda: be.rotate(ct, 1), repeat)
        times["pt_mult"][lv] = median_s(lambda: be.mul_plain(ct, vec), repeat)
        times["ct_mult"][lv] = median_s(lambda: be.mul(ct, ct), repeat)
        times["add"][lv] = median_s(lambda: be.add(ct, ct), repeat)
    lo, hi = levels
    for op, t in times.items():
        b = (t[hi] - t[lo]) / (hi - lo) if hi > lo else 0.0
        out[op] = (t[lo] - b * lo, b)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=["n8192", "n16384", "n32768"])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv))
    print("seconds = a + b * level (fitted at level 1 and the top level), SEAL via TenSEAL")
    for preset in args.presets:
        n = CKKSParams.preset(preset).poly_degree
        costs = measure(preset, args.repeat)
        row = ", ".join(f'"{op}": ({a:.3e}, {b:.3e})' for op, (a, b) in costs.items())
        print(f"    {n}: {{{row}}},")


if __name__ == "__main__":
    main()
