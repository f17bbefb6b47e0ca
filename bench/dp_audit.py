"""Benchmark: the canary membership-inference audit (privkit.dp.audit), issue 16.

A small MLP on sklearn's digits (8x8, 1797 images): 500 clean training images plus a random half
of 200 mislabeled canaries. Trained non-privately (Adam, long: it overfits), and with DP-SGD at
epsilon 1 and 8 (privkit.dp.make_private, noise calibrated over the schedule), and with the noise
dropped while the accountant still counts it (the bug the audit must catch). Per model: the
membership-inference AUC over the canaries, the empirical epsilon lower bound (one-run audit,
Steinke et al. 2023, 95% confidence) and the accountant's epsilon.

Targets: the non-private model's lower bound > 1; every DP model's lower bound <= its accountant
epsilon; the no-noise model's lower bound > its accountant epsilon (the audit fails).

    python bench/dp_audit.py [--seeds 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from privkit.dp.audit import audit_classifier


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0", help="comma-separated seeds")
    ap.add_argument("--np-epochs", type=int, default=150)
    ap.add_argument("--dp-epochs", type=int, default=60)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = (d.data / 16.0).astype(np.float32), d.target
    print(f"# command: python bench/dp_audit.py {' '.join(sys.argv[1:])}")
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"threads {torch.get_num_threads()}")

    def drop_noise(training):
        training.optimizer._noise_std = lambda: 0.0

    runs = [("non-private", {"epochs": args.np_epochs, "lr": 3e-3}),
            ("dp eps=1", {"target_epsilon": 1.0, "epochs": args.dp_epochs}),
            ("dp eps=8", {"target_epsilon": 8.0, "epochs": args.dp_epochs}),
            ("no-noise bug (claims eps=1)", {"target_epsilon": 1.0, "epochs": args.dp_epochs,
                                                 "tamper": drop_noise})]
    rows = []
    print(f"{'model':30s} {'seed':>4s} {'MIA AUC':>8s} {'eps LB':>7s} {'acct eps':>9s} "
          f"{'guesses':>9s} {'verdict':>10s} {'s':>6s}")
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name, kw in runs:
            t = time.time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = audit_classifier(x, y, 10, seed=seed, **kw)
            wall = time.time() - t
            claim = "none" if r.accountant_epsilon is None else f"{r.accountant_epsilon:.3g}"
            verdict = "pass" if r.passed else "FAIL"
            print(f"{name:30s} {seed:4d} {r.auc:8.3f} {r.epsilon_lower_bound:7.3f} {claim:>9s} "
                  f"{r.correct:>4d}/{r.guesses:<4d} {verdict:>10s} {wall:6.1f}", flush=True)
            rows.append({"model": name, "seed": seed, "auc": r.auc,
                         "epsilon_lower_bound": r.epsilon_lower_bound,
                         "accountant_epsilon": r.accountant_epsilon, "correct": r.correct,
                         "guesses": r.guesses, "passed": r.passed, "wall_s": round(wall, 1)})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
