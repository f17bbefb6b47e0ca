"""Benchmark of the IMU anonymiser on synthetic data: utility, privacy, fidelity, speed.

For each strategy (ag, acg, dfi) it prints HAR and ReID accuracy / weighted F1 on real vs
anonymised test windows, the ReID accuracy of an attacker retrained on anonymised training
windows, the DFI transfer rate, MMD, training time and anonymisation throughput, then checks the
targets of issue 8 (frozen ReID <= 2x chance, HAR >= 85% of real, DFI transfer >= 90%) and says
which are missed. The autoencoder and the two judges are trained once and shared by the three
strategies (``IMUAnonymiser.fit(reuse=...)``), so the strategies are compared on equal terms.

    python bench/anonymiser.py                 # default: 8 subjects, 4 activities (~10 min idle)
    python bench/anonymiser.py --paper-only    # the paper's losses only (no extra terms)
    python bench/anonymiser.py --quick         # a few epochs, for a smoke test
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch

from privkit.apps.anonymiser import AnonConfig, IMUAnonymiser
from privkit.data.imu import MinMaxNormaliser, split_recordings, synthetic_imu


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--subjects", type=int, default=8)
    p.add_argument("--activities", type=int, default=4)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--step", type=int, default=32)
    p.add_argument("--identity-strength", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategies", default="ag,acg,dfi")
    p.add_argument("--judge-filters", type=int, default=32,
                   help="tCNN-IMU filters (paper: 64; 32 keeps the CPU bench short)")
    p.add_argument("--ae-epochs", type=int, default=8)
    p.add_argument("--judge-epochs", type=int, default=10)
    p.add_argument("--gan-epochs", type=int, default=8)
    p.add_argument("--attacker-epochs", type=int, default=8)
    p.add_argument("--utility-weight", type=float, default=1.0,
                   help="beyond the paper: auxiliary activity-critic term (0 = off)")
    p.add_argument("--adaptive-weight", type=float, default=1.0,
                   help="beyond the paper: online-attacker term (0 = off)")
    p.add_argument("--paper-only", action="store_true", help="both extra terms off")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="2 epochs per stage")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--progress", action="store_true", help="tqdm bars on stderr")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.paper_only:
        a.utility_weight = a.adaptive_weight = 0.0
    if a.quick:
        a.ae_epochs = a.judge_epochs = a.gan_epochs = a.attacker_epochs = 2

    ds = synthetic_imu(n_subjects=a.subjects, n_activities=a.activities, trials=a.trials,
                       seconds=a.seconds, window=a.window, step=a.step,
                       identity_strength=a.identity_strength, seed=a.seed)
    train, test = split_recordings(ds, 0.34, seed=a.seed)
    norm = MinMaxNormaliser.fit(train.windows)
    train = train.with_windows(norm.transform(train.windows))
    test = test.with_windows(norm.transform(test.windows))
    cfg = AnonConfig(judge_filters=a.judge_filters, ae_epochs=a.ae_epochs,
                     judge_epochs=a.judge_epochs, gan_epochs=a.gan_epochs,
                     utility_weight=a.utility_weight, adaptive_weight=a.adaptive_weight,
                     seed=a.seed, progress=a.progress)
    print(f"# privkit IMU anonymiser bench  (torch {torch.__version__}, {a.threads} threads, "
          f"{platform.processor() or platform.machine()})")
    print(f"# data: synthetic, {a.subjects} subjects, {a.activities} activities "
          f"({', '.join(ds.activity_names)}), {sum(ds.device_channels)} channels "
          f"{ds.device_channels}, window {a.window}; train {len(train)} / test {len(test)} "
          "windows (recording-wise split)")
    print(f"# config: judge filters {a.judge_filters}, epochs ae/judges/gan/attacker "
          f"{a.ae_epochs}/{a.judge_epochs}/{a.gan_epochs}/{a.attacker_epochs}, "
          f"utility_weight {a.utility_weight}, adaptive_weight {a.adaptive_weight} "
          f"({'paper losses only' if a.paper_only else 'paper losses + extra terms'})")
    sys.stdout.flush()

    results, base, pretrain_s = {}, None, 0.0
    for strat in a.strategies.split(","):
        model = IMUAnonymiser(strategy=strat, config=cfg)
        t0 = time.perf_counter()
        model.fit(train, reuse=base)
        fit_s = time.perf_counter() - t0
        if base is None:
            base = model
            gan_s = sum(h["seconds"] for h in model.history_["gan"])
            pretrain_s = fit_s - gan_s
        else:
            gan_s = fit_s
        t0 = time.perf_counter()
        xa = model.anonymise(test.windows, source=test.subject, seed=1)
        wps = len(xa) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        m = model.evaluate(test, attacker_epochs=a.attacker_epochs)
        m.update(train_gan_s=gan_s, eval_s=time.perf_counter() - t0, windows_per_s=wps,
                 gan_epochs_run=len(model.history_["gan"]))
        results[strat] = m
        print(f"# {strat}: GAN {gan_s:.0f} s ({len(model.history_['gan'])} epochs), "
              f"evaluation {m['eval_s']:.0f} s")
        sys.stdout.flush()

    print(f"\npre-training (autoencoder, ReID + HAR judges, utility critic; shared): "
          f"{pretrain_s:.0f} s")
    hdr = (f"{'strategy':<8} {'HAR acc':>13} {'HAR F1':>13} {'ReID acc':>13} {'ReID F1':>13} "
           f"{'retrained':>9} {'chance':>6} {'transfer':>8} {'MMD2':>6} {'GAN s':>6} "
           f"{'win/s':>7}")
    print(hdr)
    print("-" * len(hdr))
    for strat, m in results.items():
        tr = f"{m['dfi_transfer_rate']:.3f}" if "dfi_transfer_rate" in m else "-"
        print(f"{strat:<8} {m['har_acc_real']:.3f}->{m['har_acc_anon']:.3f} "
              f"{m['har_f1_real']:.3f}->{m['har_f1_anon']:.3f} "
              f"{m['reid_acc_real']:.3f}->{m['reid_acc_anon']:.3f} "
              f"{m['reid_f1_real']:.3f}->{m['reid_f1_anon']:.3f} "
              f"{m['reid_retrained_acc']:>9.3f} {m['reid_chance']:>6.3f} {tr:>8} "
              f"{m['mmd_real_vs_anon']:>6.3f} {m['train_gan_s']:>6.0f} {m['windows_per_s']:>7.0f}")
    print("(ReID acc: frozen judge, the paper's protocol; retrained: a fresh ReID trained on "
          "anonymised training windows; for dfi ReID acc is w.r.t. the source subject)")
    print("\ntargets:")
    for strat, m in results.items():
        chance = m["reid_chance"]
        checks = [
            (f"frozen ReID {m['reid_acc_anon']:.3f} <= 2x chance {2 * chance:.3f}",
             m["reid_acc_anon"] <= 2 * chance),
            (f"HAR {m['har_acc_anon']:.3f} >= 85% of real {0.85 * m['har_acc_real']:.3f}",
             m["har_acc_anon"] >= 0.85 * m["har_acc_real"]),
            ((f"retrained ReID {m['reid_retrained_acc']:.3f} (<= 2x chance "
             f"{2 * chance:.3f}?)"), m["reid_retrained_acc"] <= 2 * chance),
        ]
        if "dfi_transfer_rate" in m:
            checks.append((f"DFI transfer {m['dfi_transfer_rate']:.3f} >= 0.90",
                           m["dfi_transfer_rate"] >= 0.9))
        for text, ok in checks:
            print(f"  {strat:<4} {'met   ' if ok else 'MISSED'} {text}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"args": vars(a), "pretrain_s": pretrain_s, "results": results}, fh,
                      indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
