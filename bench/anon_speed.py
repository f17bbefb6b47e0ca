"""How long the IMU anonymiser's default schedule takes on 10,000 windows of 128 x 6 (issue 21).

It builds synthetic IMU data with one 6-channel device and 128-sample windows, takes exactly
``--windows`` of them, fits ``IMUAnonymiser(strategy, AnonConfig(**overrides))`` and prints the
wall time of each stage (autoencoder, ReID and HAR judges, critics, GAN/removal), the number of
epochs each ran, and the total beside the target (10 minutes on this 2-core machine). Stage
times come from timing the training functions themselves, so nothing is estimated.

    python bench/anon_speed.py                          # AnonConfig(), the default strategy
    python bench/anon_speed.py --strategy remove        # the identity-removal strategy
    python bench/anon_speed.py --windows 2000 --set gan_epochs=4   # a quicker look
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections import defaultdict

import numpy as np
import torch

import privkit.apps.anonymiser as app_mod
from privkit.apps.anonymiser import AnonConfig, IMUAnonymiser
from privkit.data.imu import MinMaxNormaliser, synthetic_imu

TARGET_S = 600.0


def _timed(table: dict, name: str, fn):
    """Wrap ``fn`` so every call adds its wall time to ``table[label]``."""
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            label = kwargs.get("name", name) if name == "train_classifier" else name
            table[label] += time.perf_counter() - t0
    return wrapper


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--windows", type=int, default=10_000)
    p.add_argument("--strategy", default=None, help="default: IMUAnonymiser's default")
    p.add_argument("--set", action="append", default=[], metavar="NAME=JSON",
                   help="an AnonConfig field, e.g. --set gan_epochs=10")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    overrides = {k: json.loads(v) for k, v in (s.partition("=")[::2] for s in a.set)}
    overrides.setdefault("progress", False)
    cfg = AnonConfig(seed=a.seed, **overrides)

    # 10 subjects x 4 activities x trials recordings of 60 s at 50 Hz, window 128 step 64:
    # 45 windows per recording; enough trials to exceed the requested count
    per_rec = (60 * 50 - 128) // 64 + 1
    trials = max(1, -(-a.windows // (10 * 4 * per_rec)))
    ds = synthetic_imu(n_subjects=10, n_activities=4, trials=trials, seconds=60.0, n_devices=1,
                       window=128, step=64, seed=a.seed)
    if len(ds) < a.windows:
        p.error(f"the generator gave {len(ds)} windows, fewer than --windows {a.windows}")
    pick = np.sort(np.random.default_rng(a.seed).permutation(len(ds))[:a.windows])
    ds = ds.subset(pick)
    ds = ds.with_windows(MinMaxNormaliser.fit(ds.windows).transform(ds.windows))

    stages: dict[str, float] = defaultdict(float)
    # the training functions as the anonymiser module calls them
    names = ("pretrain_autoencoder", "train_classifier", "train_gan", "train_removal")
    saved = [(app_mod, name, getattr(app_mod, name)) for name in names]
    for mod, name, fn in saved:
        setattr(mod, name, _timed(stages, name, fn))
    model = IMUAnonymiser(config=cfg) if a.strategy is None else \
        IMUAnonymiser(strategy=a.strategy, config=cfg)
    load0 = os.getloadavg()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    try:
        model.fit(ds)
    finally:
        for mod, name, fn in saved:
            setattr(mod, name, fn)
    total = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    load1 = os.getloadavg()
    t1 = time.perf_counter()
    model.anonymise(ds.windows, source=ds.subject, seed=1)
    anon_s = time.perf_counter() - t1

    h = model.history_
    print(f"# IMU anonymiser speed: {len(ds)} windows of {ds.windows.shape[1]} x "
          f"{ds.windows.shape[2]}, strategy {model.strategy}, {a.threads} threads, torch "
          f"{torch.__version__}, {os.cpu_count()} cores")
    print(f"# config: {'AnonConfig() defaults' if not overrides else overrides}; epochs "
          f"ae/judges/gan {cfg.ae_epochs}/{cfg.judge_epochs}/{cfg.gan_epochs}, judges "
          f"{cfg.judge_arch} ({cfg.judge_filters} filters)")
    print(f"{'stage':<28} {'seconds':>8} {'share':>6}")
    for name, s in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"{name:<28} {s:>8.1f} {s / total:>6.1%}")
    other = total - sum(stages.values())
    print(f"{'other (setup, code means)':<28} {other:>8.1f} {other / total:>6.1%}")
    print(f"{'fit total':<28} {total:>8.1f}   (CPU time of this process: {cpu:.0f} s; on a "
          "loaded machine the wall time is inflated by the other jobs)")
    print(f"GAN epochs run: {len(h['gan'])} of {cfg.gan_epochs} (early stopping: patience "
          f"{cfg.patience})")
    print(f"anonymising all {len(ds)} windows afterwards: {anon_s:.1f} s "
          f"({len(ds) / anon_s:.0f} windows/s)")
    ok = total <= TARGET_S
    print(f"target: fit <= {TARGET_S:.0f} s on 10,000 windows: {'met' if ok else 'MISSED'} "
          f"({total:.0f} s = {total / 60:.1f} min)")
    print(f"load average (1/5/15 min) at start {'/'.join(f'{v:.1f}' for v in load0)}, "
          f"at end {'/'.join(f'{v:.1f}' for v in load1)}")
    print("command: python " + " ".join(shlex.quote(x) for x in
                                        ["bench/anon_speed.py", *(argv or sys.argv[1:])]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
