"""What the plaintext cache and the spare-level drop each buy on the apnea v2 model.

Run:  python bench/apnea_latency_levers.py [--rounds 3] [--windows 3]

Trains a v2 ``ApneaDetector`` briefly (latency does not depend on accuracy), compiles it at
N=16384 / 128-bit, and runs real SEAL inference in four configurations, interleaved round by
round so that the machine's load hits them alike: neither lever, the plaintext cache only
(``privkit.fhe.plain_cache``), the spare-level drop only (``EncryptedProgram.start_level``),
both. Prints the median seconds per window of each, and its ratio to "neither".
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from privkit.apps.apnea import ApneaDetector
from privkit.data.ecg import synthetic_ecg
from privkit.fhe.program import EncryptedProgram
from privkit.fhe.seal import _context_for


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--windows", type=int, default=3, help="timed windows per configuration and round")
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # the range tracker's conservative warnings, counted elsewhere
    torch.set_num_threads(1)
    train = synthetic_ecg(300, seed=0, effect=2)
    test = synthetic_ecg(args.windows + 1, seed=1, effect=2)
    det = ApneaDetector(arch="v2", epochs=2, restarts=1, seed=0).fit(train, progress=False)
    prog = det.compile()
    keys = prog.keygen(backend="seal")
    bundle = keys.public_bundle()
    be = bundle.backend
    cache = _context_for(prog.params).plain_cache
    budget = cache.max_bytes
    start_level = EncryptedProgram.start_level
    print(f"program: {prog}\noutput_bound_hint {prog.output_bound_hint:.3g}, tracked worst case "
          f"{prog.output_bound():.3g}, start level {prog.start_level(prog.params.depth)} of "
          f"{prog.params.depth}")
    configs = {"neither": (False, False), "cache only": (True, False), "level drop only": (False, True),
               "both": (True, True)}
    res: dict[str, list[float]] = {k: [] for k in configs}
    try:
        for rnd in range(args.rounds):
            for name, (use_cache, drop) in configs.items():
                cache.max_bytes = budget if use_cache else 0
                cache.clear()
                EncryptedProgram.start_level = start_level if drop else (lambda self, a: a)
                prog.run(prog.encrypt_input(keys, test.x[0][None]), bundle, backend=be)  # warm
                lat = []
                for row in test.x[1:]:
                    ct = prog.encrypt_input(keys, row[None])
                    t = time.perf_counter()
                    prog.run(ct, bundle, backend=be)
                    lat.append(time.perf_counter() - t)
                res[name].append(float(np.median(lat)))
                print(f"round {rnd} {name:<16} median {res[name][-1]:.3f} s/window", flush=True)
    finally:
        EncryptedProgram.start_level = start_level
        cache.max_bytes = budget
    base = np.array(res["neither"])
    print(f"\n{'configuration':<18}{'median s/window':>16}{'ratio to neither':>18}")
    for name, v in res.items():
        print(f"{name:<18}{np.median(v):>16.3f}{np.median(np.array(v) / base):>18.2f}")
    print(f"plaintext cache: {len(cache)} entries, {cache.bytes / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
