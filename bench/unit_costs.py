"""Per-operation CKKS costs on SEAL per ring size: the table behind ``params="auto"``'s choice
between one ciphertext at a large ring and several at a smaller one
(:data:`privkit.fhe.compiler.cost.UNIT_COSTS`).

For every preset it times (the FASTEST of ``--repeat`` runs: on a shared machine the minimum is
the robust estimate of an operation's own cost) a rotation, a plaintext product (a slot vector,
encoded, multiplied and rescaled, as the compiled operators call it), a ciphertext product
(relinearised, rescaled) and an addition at levels 1, 2, 4, 8... and the preset's top level
(key switching grows faster than linearly with the level, so the model interpolates between
measured levels). It prints the rows to paste into ``cost.py``.

    python bench/unit_costs.py              # all presets
    python bench/unit_costs.py --repeat 5 --presets n8192 n16384
"""

from __future__ import annotations

import argparse
import shlex
import sys

import numpy as np

import time

from privkit.fhe import KeySet
from privkit.fhe.params import CKKSParams


def min_s(fn, repeat: int) -> float:
    """Fastest wall time of ``fn`` over ``repeat`` runs, after one warm-up run."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measure(preset: str, repeat: int) -> dict[str, dict[int, float]]:
    p = CKKSParams.preset(preset)
    keys = KeySet.generate(p, backend="seal", rotations=[1])
    be = keys.backend
    rng = np.random.default_rng(0)
    ct_top = keys.encrypt(rng.uniform(-1, 1, p.slots))
    vec = rng.uniform(-1, 1, p.slots)
    times: dict[str, dict[int, float]] = {"rotation": {}, "pt_mult": {}, "ct_mult": {}, "add": {}}
    levels = sorted({lv for lv in (1, 2, 4, 8, 16) if lv < p.depth} | {p.depth})
    for lv in levels:
        ct = be.mod_switch_to(ct_top, lv) if lv < ct_top.level else ct_top
        times["rotation"][lv] = min_s(lambda: be.rotate(ct, 1), repeat)
        times["pt_mult"][lv] = min_s(lambda: be.mul_plain(ct, vec), repeat)
        times["ct_mult"][lv] = min_s(lambda: be.mul(ct, ct), repeat)
        times["add"][lv] = min_s(lambda: be.add(ct, ct), repeat)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=["n8192", "n16384", "n32768"])
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv))
    print("N -> op -> {level: fastest seconds}, SEAL via TenSEAL")
    for preset in args.presets:
        n = CKKSParams.preset(preset).poly_degree
        costs = measure(preset, args.repeat)
        print(f"    {n}: {{")
        for op, t in costs.items():
            print(f'        "{op}": {{' + ", ".join(f"{lv}: {v:.3e}" for lv, v in t.items()) + "},")
        print("    },")


if __name__ == "__main__":
    main()
