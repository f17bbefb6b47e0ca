"""Benchmark of the IMU anonymiser on synthetic and real data: utility, privacy, fidelity, speed.

For each strategy (the paper's ag, acg, dfi and ``remove`` once per ``--strengths`` value) it
prints HAR and ReID accuracy / weighted F1 on real vs anonymised test windows, the attacker suite
retrained on anonymised training windows, the DFI transfer rate, MMD, training time and
anonymisation throughput, then checks the targets (issue 21: best retrained attacker <= 2x
chance with frozen HAR >= 90% of real; issue 8: frozen ReID <= 2x chance, HAR >= 85% of real,
DFI transfer >= 90%) and says which are missed. The autoencoder, the judges and the critics are
trained once and shared by all strategies (``IMUAnonymiser.fit(reuse=...)``), so the strategies
are compared on equal terms. ``--png`` draws the privacy/utility plane (``--replot`` redraws it
from ``--json`` files). Epochs and judges default to ``AnonConfig()``'s.

    python bench/anonymiser.py --data watch,synthetic --modes default --png tradeoff.png
    python bench/anonymiser.py                  # default: modes default and extras
    python bench/anonymiser.py --modes default  # AnonConfig(), what IMUAnonymiser uses
    python bench/anonymiser.py --modes paper    # the paper's losses only
    python bench/anonymiser.py --modes extras   # every beyond-the-paper term
    python bench/anonymiser.py --quick         # a few epochs, for a smoke test
    python bench/anonymiser.py --data synthetic,watch --modes default --judge-arch cnn1d \
        --ae-epochs 10 --judge-epochs 10 --gan-epochs 6 --attacker-epochs 10   # issue 21

``--data`` picks the data: ``synthetic`` (built-in, recording-wise split) and/or ``watch``
(the real smartwatch IMU of seglearn 1.2.5, :func:`privkit.data.read_seglearn_watch`, 10
subjects, 7 exercises, 128-sample windows; split in time inside every recording with
:func:`privkit.data.splits.split_time`; skipped with a message when seglearn is absent).
Privacy is measured twice: the frozen ReID judge (the paper's protocol) and the attacker suite
(:func:`privkit.anon.attackers.attack_suite`: tCNN, plain 1-D CNN, feature model, each trained
from scratch on anonymised training windows and tested on anonymised test windows; the best is
quoted). Utility likewise: the frozen HAR judge and the best activity model retrained on
anonymised windows. The same suite on real windows gives the reference accuracy the judges
should reach (judge quality = judge / reference).

Three modes, each with its own pre-training, printed one after the other: ``default``
(``AnonConfig()``: the paper's losses plus the auxiliary activity critic and, for dfi, the
mean-code swap), ``paper`` (``AnonConfig.paper()``: the paper's losses only) and ``extras`` (every
beyond-the-paper term on at ``AnonConfig.beyond_paper()``'s settings: also the online attacker
warm-started from the ReID judge and trained on real + anonymised windows with a confusion loss,
and model selection that counts the online attacker after a warm-up). In every mode model
selection scores activity with the selection critics (the lowest of their accuracy ratios), never
with the HAR judge, and keeps the best epoch among those meeting the validation privacy and
activity constraints (``AnonConfig.selection``; ``--set selection='"score"'`` for the old rule).
It prints the kept epoch, what it measured, the targets and whether each is met, the wall time,
the load average and the command.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import sys
import textwrap
import time

import torch

from privkit.anon.train import BEYOND_PAPER, PAPER
from privkit.apps.anonymiser import AnonConfig, IMUAnonymiser
from privkit.data.imu import MinMaxNormaliser, split_recordings, synthetic_imu
from privkit.data.splits import split_time


def expand_strategies(strategies: str, strengths: str) -> list[tuple[str, float | None]]:
    """``"ag,remove"`` with strengths ``"0.25,0.5"`` -> ag, remove@0.25, remove@0.5 (labels and
    the removal strength of each run; ``remove@0.3`` names one strength directly)."""
    out: list[tuple[str, float | None]] = []
    for item in [x for x in strategies.split(",") if x]:
        name, _, value = item.partition("@")
        if name == "remove":
            for v in ([float(value)] if value else
                      [float(x) for x in strengths.split(",") if x]):
                out.append((f"remove@{v:g}", v))
        else:
            out.append((name, None))
    return out


def write_png(runs: dict, path: str, command: str) -> None:
    """The privacy/utility plane: one point per method and per removal strength, one panel per
    data set and mode. x: best retrained attacker's ReID accuracy in multiples of chance; y:
    frozen HAR accuracy in % of real; the target region (x <= 2, y >= 90%) is shaded."""
    from privkit._optional import require

    matplotlib = require("matplotlib", extra="plots", feature="the privacy/utility plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(max(6.5, 5.6 * len(runs)), 5.0),
                             squeeze=False)
    for ax, (key, r) in zip(axes[0], runs.items()):
        xs, ys = [], []
        offsets = [(6, 4), (6, -11), (-10, 9), (-10, -15)]  # labels of close points apart
        for i, (strat, m) in enumerate(r["results"].items()):
            x = m["reid_retrained_acc"] / m["reid_chance"]
            y = 100 * m["har_acc_anon"] / max(m["har_acc_real"], 1e-9)
            xs.append(x)
            ys.append(y)
            remove = "remove" in strat
            ax.plot(x, y, "o" if remove else "s", color="tab:blue" if remove else "tab:red",
                    ms=7)
            dx, dy = offsets[i % len(offsets)]
            ax.annotate(strat, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=8,
                        ha="left" if dx > 0 else "right")
        raw = next(iter(r["results"].values()))
        x_raw = raw.get("reid_reference_acc", float("nan")) / raw["reid_chance"]
        ax.plot(x_raw, 100, "k^", ms=7)
        ax.annotate("raw data", (x_raw, 100), textcoords="offset points", xytext=(5, -10),
                    fontsize=8)
        top = max(ys + [100]) + 5
        ax.fill_between([0, 2], 90, top, color="tab:green", alpha=0.12, label="target")
        ax.axvline(1, color="grey", lw=0.8, ls=":")
        ax.set_xlim(0, max(xs + [x_raw, 2.5]) * 1.1)
        ax.set_ylim(min(ys + [85]) - 5, top)
        ax.set_xlabel("best retrained attacker ReID (x chance)  [less is more private]")
        ax.set_ylabel("frozen HAR accuracy (% of real)  [more is more useful]")
        ax.set_title(key, fontsize=9)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("privkit IMU anonymiser: privacy vs utility\nsquares: the paper's strategies, "
                 "circles: remove@strength", fontsize=9)
    wrapped = textwrap.wrap(command, 140)
    fig.text(0.01, 0.005, "\n".join(wrapped), fontsize=6, family="monospace")
    fig.tight_layout(rect=(0, 0.015 * (len(wrapped) + 1), 1, 0.93))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_mode(a, mode: str, extra: dict, ds, train, test, data_desc: str) -> dict:
    """Pre-train, train every strategy and evaluate under one mode; prints its tables."""
    cfg = AnonConfig(judge_filters=a.judge_filters, ae_epochs=a.ae_epochs,
                     judge_epochs=a.judge_epochs, gan_epochs=a.gan_epochs, seed=a.seed,
                     progress=a.progress, judge_arch=a.judge_arch, **extra)
    print(f"\n######## mode: {mode}")
    print(f"# privkit IMU anonymiser bench  (torch {torch.__version__}, {a.threads} threads, "
          f"{platform.processor() or platform.machine()})")
    print(f"# data: {data_desc}, {ds.n_subjects} subjects, {ds.n_activities} activities "
          f"({', '.join(ds.activity_names)}), {sum(ds.device_channels)} channels "
          f"{ds.device_channels}, window {ds.windows.shape[1]}; train {len(train)} / test "
          f"{len(test)} windows")
    print(f"# config: judges {a.judge_arch}, filters {a.judge_filters}, epochs "
          "ae/judges/gan/attacker "
          f"{a.ae_epochs}/{a.judge_epochs}/{a.gan_epochs}/{a.attacker_epochs}; "
          + ("AnonConfig() defaults" if not extra else
             "AnonConfig() with " + ", ".join(f"{k}={v}" for k, v in extra.items())))
    sys.stdout.flush()

    results, histories, base, pretrain_s = {}, {}, None, 0.0
    for strat, strength in expand_strategies(a.strategies, a.strengths):
        model = IMUAnonymiser(strategy=strat.split("@")[0], config=cfg if strength is None
                              else dataclasses.replace(cfg, removal_strength=strength))
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
        m = model.evaluate(test, attacker_epochs=a.attacker_epochs,
                           attackers=tuple(a.attackers.split(",")))
        hist = model.history_["gan"]
        kept = next((h for h in hist if h.get("selected")), None)
        m.update(train_gan_s=gan_s, eval_s=time.perf_counter() - t0, windows_per_s=wps,
                 gan_epochs_run=len(hist),
                 gan_epoch_kept=-1 if kept is None else kept["epoch"],
                 gan_kept_feasible=bool(kept and kept.get("feasible")))
        results[strat] = m
        histories[strat] = hist
        how = "feasible" if m["gan_kept_feasible"] else "no feasible epoch: best score"
        print(f"# {strat}: GAN {gan_s:.0f} s ({len(hist)} epochs, kept epoch "
              f"{m['gan_epoch_kept']}, {how}), evaluation {m['eval_s']:.0f} s")
        sys.stdout.flush()

    print(f"\npre-training (autoencoder, ReID + HAR judges, utility and selection critics; "
          "shared): "
          f"{pretrain_s:.0f} s")
    hdr = (f"{'strategy':<11} {'HAR acc':>13} {'HAR F1':>13} {'ReID acc':>13} {'ReID F1':>13} "
           f"{'retrained':>9} {'chance':>6} {'transfer':>8} {'MMD2':>6} {'GAN s':>6} "
           f"{'win/s':>7}")
    print(hdr)
    print("-" * len(hdr))
    for strat, m in results.items():
        tr = f"{m['dfi_transfer_rate']:.3f}" if "dfi_transfer_rate" in m else "-"
        print(f"{strat:<11} {m['har_acc_real']:.3f}->{m['har_acc_anon']:.3f} "
              f"{m['har_f1_real']:.3f}->{m['har_f1_anon']:.3f} "
              f"{m['reid_acc_real']:.3f}->{m['reid_acc_anon']:.3f} "
              f"{m['reid_f1_real']:.3f}->{m['reid_f1_anon']:.3f} "
              f"{m['reid_retrained_acc']:>9.3f} {m['reid_chance']:>6.3f} {tr:>8} "
              f"{m['mmd_real_vs_anon']:>6.3f} {m['train_gan_s']:>6.0f} {m['windows_per_s']:>7.0f}")
    print("(ReID acc: frozen judge, the paper's protocol; retrained: the best attacker of the "
          "suite trained from scratch on anonymised training windows; for dfi ReID acc is "
          "w.r.t. the source subject)")
    kinds = a.attackers.split(",")
    first = next(iter(results.values()))
    print(f"\njudge quality on real test windows (judge / best from-scratch model on real "
          f"windows): ReID {first['reid_acc_real']:.3f} / {first.get('reid_reference_acc', 0):.3f}"
          f" (chance {first['reid_chance']:.3f}), HAR {first['har_acc_real']:.3f} / "
          f"{first.get('har_reference_acc', 0):.3f} (chance {first['har_chance']:.3f})")
    hdr2 = (f"{'strategy':<11} {'HAR frozen':>10} {'HAR retr.':>9} {'HAR chance':>10} "
            f"{'ReID frozen':>11} " + " ".join(f"{'ReID ' + k:>13}" for k in kinds)
            + f" {'best':>8} {'ReID chance':>11}")
    print(hdr2)
    print("-" * len(hdr2))
    for strat, m in results.items():
        best = max(kinds, key=lambda k: m[f"reid_attack_{k}_acc"])
        print(f"{strat:<11} {m['har_acc_anon']:>10.3f} {m.get('har_retrained_acc', float('nan')):>9.3f} "
              f"{m['har_chance']:>10.3f} {m['reid_acc_anon']:>11.3f} "
              + " ".join(f"{m[f'reid_attack_{k}_acc']:>13.3f}" for k in kinds)
              + f" {best:>8} {m['reid_chance']:>11.3f}")
    print(f"{'raw':<11} {first['har_acc_real']:>10.3f} {first.get('har_reference_acc', float('nan')):>9.3f} "
          f"{first['har_chance']:>10.3f} {first['reid_acc_real']:>11.3f} "
          + " ".join(f"{first.get(f'reid_reference_{k}_acc', float('nan')):>13.3f}" for k in kinds)
          + f" {'ref ' + format(first.get('reid_reference_acc', float('nan')), '.3f'):>8} "
          f"{first['reid_chance']:>11.3f}")
    print("(HAR retr.: the best activity model of the suite retrained on anonymised windows; the "
          "raw row: the suite trained and tested on real windows, 'ref' its best)")
    print("\ntargets:")
    for strat, m in results.items():
        chance = m["reid_chance"]
        checks = [
            (f"frozen ReID {m['reid_acc_anon']:.3f} <= 2x chance {2 * chance:.3f}",
             m["reid_acc_anon"] <= 2 * chance),
            ((f"frozen HAR {m['har_acc_anon']:.3f} >= 90% of real "
              f"{0.9 * m['har_acc_real']:.3f} (issue 21)"),
             m["har_acc_anon"] >= 0.9 * m["har_acc_real"]),
            (f"HAR {m['har_acc_anon']:.3f} >= 85% of real {0.85 * m['har_acc_real']:.3f}",
             m["har_acc_anon"] >= 0.85 * m["har_acc_real"]),
            ((f"best retrained attacker ReID {m['reid_retrained_acc']:.3f} <= 2x chance "
             f"{2 * chance:.3f} (issue 21)"), m["reid_retrained_acc"] <= 2 * chance),
        ]
        if "dfi_transfer_rate" in m:
            checks.append((f"DFI transfer {m['dfi_transfer_rate']:.3f} >= 0.90",
                           m["dfi_transfer_rate"] >= 0.9))
        for text, ok in checks:
            print(f"  {strat:<4} {'met   ' if ok else 'MISSED'} {text}")
    return {"config": cfg.to_dict(), "pretrain_s": pretrain_s, "results": results,
            "data": data_desc, "gan_history": histories}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="synthetic",
                   help="comma-separated: synthetic, watch (real smartwatch data of seglearn "
                        "1.2.5; skipped when it is not installed)")
    p.add_argument("--watch-step", type=int, default=64,
                   help="watch data: window step (windows are 128 samples)")
    defaults = AnonConfig()
    p.add_argument("--judge-arch", default=defaults.judge_arch, choices=("tcnn", "cnn1d"),
                   help="ReID/HAR judges and critics (default AnonConfig's)")
    p.add_argument("--attackers", default="tcnn,cnn1d,features",
                   help="the attacker suite (privkit.anon.attackers.ATTACKERS)")
    p.add_argument("--subjects", type=int, default=8)
    p.add_argument("--activities", type=int, default=4)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--step", type=int, default=32)
    p.add_argument("--identity-strength", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategies", default="ag,acg,dfi,remove",
                   help="comma-separated; 'remove' runs once per --strengths value, "
                        "'remove@0.3' one strength")
    p.add_argument("--strengths", default="0.25,0.5,0.75",
                   help="removal strengths for 'remove' (AnonConfig.removal_strength)")
    p.add_argument("--png", help="write the privacy/utility plot here (matplotlib: the plots "
                                 "extra)")
    p.add_argument("--replot", metavar="JSON[,JSON]",
                   help="no training: draw --png from the --json files of earlier runs (their "
                        "panels side by side)")
    p.add_argument("--judge-filters", type=int, default=defaults.judge_filters,
                   help="filters of the judges and critics (default AnonConfig's; the paper's "
                        "tCNN: 64)")
    p.add_argument("--ae-epochs", type=int, default=defaults.ae_epochs)
    p.add_argument("--judge-epochs", type=int, default=defaults.judge_epochs)
    p.add_argument("--gan-epochs", type=int, default=defaults.gan_epochs,
                   help="GAN epochs, and the removal stage's before removal_min_steps")
    p.add_argument("--attacker-epochs", type=int, default=15,
                   help="epochs of the evaluation attacker (retrained on anonymised train)")
    p.add_argument("--utility-weight", type=float, default=BEYOND_PAPER["utility_weight"],
                   help="beyond the paper: auxiliary activity-critic term (0 = off)")
    p.add_argument("--adaptive-weight", type=float, default=BEYOND_PAPER["adaptive_weight"],
                   help="beyond the paper: online-attacker term (0 = off)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=JSON",
                   help="any other AnonConfig field, in every mode, e.g. --set gen_lr=1e-4")
    p.add_argument("--modes", default="default,extras",
                   help="comma-separated: default (AnonConfig()), paper (the paper's losses "
                        "only), extras (every beyond-the-paper term)")
    p.add_argument("--paper-only", action="store_true", help="same as --modes paper")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="2 epochs per stage")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--progress", action="store_true", help="tqdm bars on stderr")
    a = p.parse_args(argv)
    if a.replot:
        if not a.png:
            p.error("--replot needs --png")
        runs, commands = {}, []
        for path in a.replot.split(","):
            with open(path) as fh:
                saved = json.load(fh)
            stem = os.path.splitext(os.path.basename(path))[0]
            for key, r in saved["runs"].items():
                runs[f"{stem}: {key}"] = r
            commands.append(saved.get("command", path))
        write_png(runs, a.png, " ; ".join(commands))
        print(f"privacy/utility plot of {len(runs)} run(s) written to {a.png}")
        return 0
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    torch.set_num_threads(a.threads)
    # sigmoid outputs near 0 can be subnormal floats, which make CPU convolutions many times
    # slower (dfi on the watch data: 20x); flushing them to 0 changes no figure that matters
    torch.set_flush_denormal(True)
    sets = {}
    for item in a.set:
        name, _, value = item.partition("=")
        sets[name] = json.loads(value)
    mode_extra = {
        "default": dict(sets),
        "paper": {**PAPER, **sets},
        "extras": {**BEYOND_PAPER, "utility_weight": a.utility_weight,
                   "adaptive_weight": a.adaptive_weight, **sets},
    }
    modes = ["paper"] if a.paper_only else [m for m in a.modes.split(",") if m]
    for m in modes:
        if m not in mode_extra:
            p.error(f"--modes: unknown mode {m!r} ({', '.join(mode_extra)})")
    if a.quick:
        a.ae_epochs = a.judge_epochs = a.gan_epochs = a.attacker_epochs = 2

    datasets = []
    for kind in [d for d in a.data.split(",") if d]:
        if kind == "synthetic":
            ds = synthetic_imu(n_subjects=a.subjects, n_activities=a.activities, trials=a.trials,
                               seconds=a.seconds, window=a.window, step=a.step,
                               identity_strength=a.identity_strength, seed=a.seed)
            train, test = split_recordings(ds, 0.34, seed=a.seed)
            desc = "synthetic (recording-wise split)"
        elif kind == "watch":
            from privkit.data.watch import read_seglearn_watch
            from privkit.errors import MissingDependencyError

            try:
                ds = read_seglearn_watch(window=128, step=a.watch_step)
            except MissingDependencyError as e:
                print(f"\n######## data: watch skipped: {e}")
                continue
            train, test = split_time(ds, 0.5, gap=max(0, -(-128 // a.watch_step) - 1))
            desc = (f"real smartwatch IMU (seglearn 1.2.5 watch_dataset.npy, 50 Hz, step "
                    f"{a.watch_step}; time split inside every recording)")
        else:
            p.error(f"--data: unknown data {kind!r} (synthetic, watch)")
        norm = MinMaxNormaliser.fit(train.windows)
        datasets.append((kind, desc, ds, train.with_windows(norm.transform(train.windows)),
                         test.with_windows(norm.transform(test.windows))))
    runs = {}
    for kind, desc, ds, train, test in datasets:
        for mode in modes:
            key = mode if len(datasets) == 1 else f"{kind}/{mode}"
            print(f"\n######## data: {kind}")
            runs[key] = run_mode(a, mode, mode_extra[mode], ds, train, test, desc)
    if len(runs) > 1:
        print("\n######## side by side (HAR anon / frozen ReID anon / retrained ReID / transfer)")
        for strat, _ in expand_strategies(a.strategies, a.strengths):
            cells = []
            for mode, r in runs.items():
                m = r["results"][strat]
                tr = f" / {m['dfi_transfer_rate']:.3f}" if "dfi_transfer_rate" in m else ""
                cells.append(f"{mode}: {m['har_acc_anon']:.3f} / {m['reid_acc_anon']:.3f} / "
                             f"{m['reid_retrained_acc']:.3f}{tr}")
            print(f"  {strat:<4} " + "   ".join(cells))
    wall = time.perf_counter() - t_start
    load_end = os.getloadavg()
    print(f"\nwall time {wall:.0f} s ({wall / 60:.1f} min); load average (1/5/15 min) at start "
          f"{'/'.join(f'{v:.1f}' for v in load_start)}, at end "
          f"{'/'.join(f'{v:.1f}' for v in load_end)}; {os.cpu_count()} cores")
    command = "python " + " ".join(shlex.quote(x) for x in
                                   ["bench/anonymiser.py", *(argv or sys.argv[1:])])
    print("command: " + command)
    if a.png and runs:
        write_png(runs, a.png, command)
        print(f"privacy/utility plot written to {a.png}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"args": vars(a), "runs": runs, "wall_s": wall, "load_start": load_start,
                       "load_end": load_end, "command": command}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
