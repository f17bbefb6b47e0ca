"""``privkit anon train | apply | evaluate``: the IMU anonymiser on the command line.

Data: ``--data synthetic`` (seeded synthetic IMU with subject signatures), ``motionsense:DIR``,
``watch`` (the real smartwatch data of the pinned seglearn package, ``privkit[realdata]``)
or ``lara:DIR``. The data are windowed, split recording-wise (every subject on both sides) and
scaled to [0, 1] with a normaliser fitted on the training split; the model file keeps the
normaliser and the data settings, so ``apply`` and ``evaluate`` rebuild the same split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._cli_common import add_json, add_smoke, check_model_path, warn

if TYPE_CHECKING:  # the CLI imports torch and the anonymiser only when a command runs
    from ..data.imu import IMUDataset, MinMaxNormaliser
    from .anonymiser import IMUAnonymiser

__all__ = ["prepare_data", "register", "results_table", "save_plots"]

# --smoke: tiny networks, 2 epochs per stage, no extra GAN epochs, one selection critic, and a
# small synthetic data set (SMOKE_DATA); ~15 s on 2 cores instead of the 296 s it took when only
# the networks were shrunk (the default data and up to 8 extra GAN epochs dominated)
_SMOKE = {"ae_epochs": 2, "judge_epochs": 2, "gan_epochs": 2, "judge_filters": 8, "judge_fc": 32,
          "ae_channels": (8, 16, 16), "bottleneck": 16, "disc_channels": (8, 16, 16),
          "mapper_hidden": (64,), "batch_size": 32, "select_extra_epochs": 0,
          "selection_critics": 1, "patience": 2, "removal_min_steps": 0}
SMOKE_DATA = {"subjects": 4, "activities": 3, "seconds": 6.0}
_DATA_DEFAULTS = {"subjects": 8, "activities": 4, "seconds": 12.0}


def prepare_data(spec: dict[str, Any], normaliser: MinMaxNormaliser | None = None
                 ) -> tuple[IMUDataset, IMUDataset, MinMaxNormaliser]:
    """Load, window, split recording-wise and normalise (fitted on train unless given)."""
    from ..data.imu import MinMaxNormaliser, load_imu, split_recordings

    extra = {}
    if spec["data"] == "synthetic":
        extra = {"n_subjects": spec["subjects"], "n_activities": spec["activities"],
                 "seconds": spec["seconds"]}
    ds = load_imu(spec["data"], window=spec.get("window"), step=spec.get("step"),
                  seed=spec["seed"], **extra)
    train, test = split_recordings(ds, spec["test_fraction"], seed=spec["seed"])
    norm = normaliser or MinMaxNormaliser.fit(train.windows)
    return (train.with_windows(norm.transform(train.windows)),
            test.with_windows(norm.transform(test.windows)), norm)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def results_table(m: dict[str, float], strategy: str) -> str:
    """The metrics as an aligned text table (real vs anonymised)."""
    rows = [
        ("HAR accuracy", m.get("har_acc_real"), m.get("har_acc_anon")),
        ("HAR weighted F1", m.get("har_f1_real"), m.get("har_f1_anon")),
        ("ReID accuracy (frozen judge)", m.get("reid_acc_real"), m.get("reid_acc_anon")),
        ("ReID weighted F1 (frozen judge)", m.get("reid_f1_real"), m.get("reid_f1_anon")),
        ("ReID accuracy (retrained attacker)", m.get("reid_reference_acc"),
         m.get("reid_retrained_acc")),
        *((f"  ... attacker {k[len('reid_attack_'):-len('_acc')]}", None, v)
          for k, v in m.items() if k.startswith("reid_attack_") and k.endswith("_acc")),
        ("HAR accuracy (retrained model)", m.get("har_reference_acc"),
         m.get("har_retrained_acc")),
        ("ReID chance level", m.get("reid_chance"), m.get("reid_chance")),
        ("HAR chance level", m.get("har_chance"), m.get("har_chance")),
    ]
    if "dfi_transfer_rate" in m:
        rows.append(("DFI transfer rate", None, m["dfi_transfer_rate"]))
    rows.append(("MMD^2 to real test windows", m.get("mmd_real_train_vs_test"),
                 m.get("mmd_real_vs_anon")))
    w = max(len(r[0]) for r in rows)
    out = [f"strategy: {strategy}   test windows: {int(m.get('n_test', 0))}",
           f"{'metric':<{w}}  {'real':>8}  {'anonymised':>10}", "-" * (w + 22)]
    out += [f"{name:<{w}}  {_fmt(a):>8}  {_fmt(b):>10}" for name, a, b in rows]
    out.append(f"(MMD 'real' column: real train vs real test, for scale; retrained 'real' "
               "column: the same models trained on real windows, the reference a judge should "
               f"reach; throughput {m.get('anonymise_windows_per_s', 0):.0f} windows/s)")
    return "\n".join(out)


def save_plots(model: IMUAnonymiser, m: dict[str, float], test: IMUDataset,
               outdir: str | Path) -> list[str]:
    """Two PNGs: HAR/ReID bars before vs after (with chance lines), one window real vs
    anonymised."""
    import numpy as np

    from privkit._optional import require

    matplotlib = require("matplotlib", extra="plots", feature="anonymiser plots (--plots)")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = ["HAR", "ReID (frozen)", "ReID (retrained)"]
    # the retrained attacker has no 'real' bar: it is trained and tested on anonymised windows
    before = [m.get("har_acc_real", 0), m.get("reid_acc_real", 0), float("nan")]
    after = [m.get("har_acc_anon", 0), m.get("reid_acc_anon", 0), m.get("reid_retrained_acc", 0)]
    xs = np.arange(len(names))
    ax.bar(xs - 0.2, before, 0.4, label="real")
    ax.bar(xs + 0.2, after, 0.4, label="anonymised")
    if m.get("har_chance"):
        ax.hlines(m["har_chance"], -0.45, 0.45, color="tab:green", ls=":", lw=1.2,
                  label=f"HAR chance ({m['har_chance']:.2f})")
    ax.hlines(m.get("reid_chance", 0), 0.55, 2.45, color="k", ls="--", lw=1,
              label=f"ReID chance ({m.get('reid_chance', 0):.2f})")
    ax.set_xticks(xs, names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title(f"IMU anonymisation ({model.strategy})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = outdir / "anon_bars.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    paths.append(str(p))

    x = test.windows[:1]
    xa = model.anonymise(x, source=test.subject[:1], seed=0)
    n_ch = min(3, x.shape[2])
    fig, axes = plt.subplots(n_ch, 1, figsize=(7, 1.8 * n_ch), sharex=True, squeeze=False)
    for c in range(n_ch):
        a = axes[c][0]
        a.plot(x[0, :, c], label="real")
        a.plot(xa[0, :, c], label="anonymised")
        a.set_ylabel(test.channel_names[c] if c < len(test.channel_names) else f"ch{c}",
                     fontsize=7)
    axes[0][0].legend(fontsize=8)
    axes[-1][0].set_xlabel("sample")
    fig.suptitle(f"one window, subject {test.subject[0]}, activity "
                 f"{test.activity_names[test.activity[0]]}")
    fig.tight_layout()
    p = outdir / "anon_window.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    paths.append(str(p))
    return paths


def _spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    spec = {"data": args.data, "window": args.window, "step": args.step, "seed": args.seed,
            "test_fraction": args.test_fraction, "subjects": args.subjects,
            "activities": args.activities, "seconds": args.seconds}
    if getattr(args, "smoke", False) and args.data == "synthetic":
        # smaller synthetic data, unless the option was given (differs from its default)
        spec.update({k: v for k, v in SMOKE_DATA.items() if spec[k] == _DATA_DEFAULTS[k]})
    return spec


def flag_anon_metrics(m: dict[str, float]) -> list[str]:
    """Marked warnings when the numbers of an evaluation mean nothing: a judge at chance on
    *real* windows (then 'at chance after anonymisation' says nothing), or a NaN metric."""
    import math

    out = []
    for judge, what in (("har", "HAR judge: activity (utility)"),
                        ("reid", "frozen ReID judge: privacy")):
        real, chance = m.get(f"{judge}_acc_real"), m.get(f"{judge}_chance")
        if real is not None and chance is not None and real <= chance + 0.02:
            out.append(f"{what} numbers mean nothing: the judge is AT CHANCE on REAL windows "
                       f"(accuracy {real:.3f}, chance {chance:.3f}); train it longer "
                       "(--judge-epochs) or use more data")
    nan = [k for k, v in m.items() if isinstance(v, float) and math.isnan(v)]
    if nan:
        out.append(f"NaN metrics (undefined, not zero): {', '.join(nan)}")
    for line in out:
        warn(line)
    return out


def _report(model: IMUAnonymiser, m: dict[str, float], test: IMUDataset,
            args: argparse.Namespace) -> None:
    warns = flag_anon_metrics(m)
    plots = save_plots(model, m, test, args.plots) if args.plots else []
    if args.json:
        print(json.dumps({"strategy": model.strategy, "metrics": m,
                          "privacy_report": model.privacy_report().to_dict(),
                          "plots": plots, "warnings": warns}, indent=2, default=float))
    else:
        print(results_table(m, model.strategy))
        for w in warns:
            print(f"!! WARNING: {w}")
        print(model.privacy_report().summary())
        for p in plots:
            print(f"wrote {p}")


def _cmd_train(args: argparse.Namespace) -> int:
    from ..anon.train import BEYOND_PAPER, PAPER
    from .anonymiser import AnonConfig, IMUAnonymiser

    check_model_path(args.out)
    spec = _spec_from_args(args)
    train, test, norm = prepare_data(spec)
    over = {k: v for k, v in {
        "ae_epochs": args.ae_epochs, "judge_epochs": args.judge_epochs,
        "gan_epochs": args.gan_epochs, "judge_filters": args.judge_filters,
        "utility_weight": args.utility_weight, "adaptive_weight": args.adaptive_weight,
        "checkpoint_dir": args.checkpoint_dir, "removal_strength": args.strength,
        "judge_arch": args.judge_arch}.items() if v is not None}
    base = _SMOKE if args.smoke else {}
    if getattr(args, "extras", False):
        base = {**BEYOND_PAPER, **base}
    elif getattr(args, "paper", False):
        base = {**PAPER, **base}
    cfg = AnonConfig(**{**base, **over, "seed": args.seed, "progress": not args.quiet})
    model = IMUAnonymiser(config=cfg) if args.strategy is None else \
        IMUAnonymiser(strategy=args.strategy, config=cfg)
    model.normaliser, model.data_spec = norm, spec
    model.fit(train)
    if not args.no_eval:
        m = model.evaluate(test, attacker_epochs=2 if args.smoke else None)
        _report(model, m, test, args)
    elif args.json:
        print(json.dumps({"strategy": model.strategy, "saved": args.out,
                          "privacy_report": model.privacy_report().to_dict()}, default=float))
    model.save(args.out)
    print(f"saved {args.out}", file=sys.stderr)
    return 0


def _load(args: argparse.Namespace) -> tuple[IMUAnonymiser, IMUDataset, IMUDataset]:
    from .anonymiser import IMUAnonymiser

    model = IMUAnonymiser.load(check_model_path(args.model))
    spec = dict(model.data_spec)
    if args.data:
        spec["data"] = args.data
    train, test, _ = prepare_data(spec, normaliser=model.normaliser)
    return model, train, test  # type: ignore[return-value]


def _cmd_apply(args: argparse.Namespace) -> int:
    model, train, test = _load(args)
    ds = test if args.split == "test" else train
    windows, source = ds.windows, ds.subject
    if args.smoke:
        windows, source = windows[:32], source[:32]
    xa, tgt = model.anonymise(windows, source=source, target=args.target,
                              seed=args.seed, return_target=True)
    norm = model.normaliser
    n = len(xa)
    out = {"windows": norm.inverse(xa) if norm else xa, "activity": ds.activity[:n],
           "subject": source}
    if tgt is not None:
        out["target"] = tgt
    from privkit.fhe.envelope import pack_dataset, write_envelope

    # an authenticated dataset envelope (read back with privkit.fhe.envelope.unpack_dataset)
    write_envelope(args.out, pack_dataset(out, meta={"kind": "anonymised IMU windows",
                                                     "strategy": model.strategy}))
    if args.json:
        print(json.dumps({"windows": n, "strategy": model.strategy, "split": args.split,
                          "out": args.out, "format": "privkit dataset envelope"}))
    else:
        print(f"anonymised {n} windows ({model.strategy}) -> {args.out} (dataset envelope)")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    model, train, test = _load(args)
    epochs = 2 if args.smoke and args.attacker_epochs is None else args.attacker_epochs
    m = model.evaluate(test, train=train, retrain_attacker=not args.no_attacker,
                       attacker_epochs=epochs)
    _report(model, m, test, args)
    return 0


def register(subparsers: Any) -> None:
    """Add ``anon`` with ``train``, ``apply`` and ``evaluate`` to the privkit CLI."""
    p = subparsers.add_parser(
        "anon", help="IMU anonymisation (GAN around a convolutional autoencoder)",
        description="Anonymise windowed IMU data so that activities stay recognisable but "
        "subjects cannot be re-identified (remove, the default; the paper's ag, acg) or are "
        "re-identified as a chosen target (dfi). Privacy is empirical: see the "
        "retrained-attacker row.")
    sub = p.add_subparsers(dest="anon_command", metavar="ACTION", required=True)

    def data_opts(q: argparse.ArgumentParser, required: bool) -> None:
        q.add_argument("--data", required=required, default=None,
                       help="synthetic | motionsense:DIR | lara:DIR | watch (real smartwatch data; privkit[realdata])"
                       + ("" if required else " (default: what the model was trained on)"))

    def out_opts(q: argparse.ArgumentParser) -> None:
        add_json(q)
        q.add_argument("--plots", metavar="DIR",
                       help="write PNGs here (accuracy bars with chance lines, one window)")

    t = sub.add_parser("train", help="train an anonymiser and save it",
                       description="Window, split recording-wise, normalise, pre-train the "
                       "autoencoder and the ReID/HAR judges, train the GAN, evaluate, save.")
    data_opts(t, True)
    t.add_argument("--strategy", choices=("ag", "acg", "dfi", "remove"), default=None,
                   help="ag: adversarial generalisation; acg: adversarial classification "
                   "(subject predicted as someone else); dfi: deep feature injection (transfer "
                   "to a chosen target subject); remove: identity removed from the code "
                   "(beyond the paper, strength --strength) (default: IMUAnonymiser's)")
    t.add_argument("--strength", type=float, default=None,
                   help="remove: removal strength in [0, 1] (0: autoencoder, 1: activity and "
                        "noise only; default AnonConfig's)")
    t.add_argument("--judge-arch", choices=("tcnn", "cnn1d"), default=None,
                   help="ReID/HAR judges and critics: tcnn (the paper's) or cnn1d (a plain 1-D "
                        "CNN, stronger on real data) (default AnonConfig's)")
    t.add_argument("--out", required=True, help="model file to write (e.g. anon.privkit)")
    t.add_argument("--window", type=int, default=None,
                   help="window length in samples (default: the data set's)")
    t.add_argument("--step", type=int, default=None,
                   help="window step in samples (default: the data set's)")
    t.add_argument("--seed", type=int, default=0, help="seed of data split and training")
    t.add_argument("--test-fraction", type=float, default=0.34,
                   help="fraction of each subject's recordings held out for testing")
    t.add_argument("--subjects", type=int, default=_DATA_DEFAULTS["subjects"],
                   help="synthetic: number of subjects (--smoke: 4)")
    t.add_argument("--activities", type=int, default=_DATA_DEFAULTS["activities"],
                   help="synthetic: number of activities (--smoke: 3)")
    t.add_argument("--seconds", type=float, default=_DATA_DEFAULTS["seconds"],
                   help="synthetic: seconds per trial (--smoke: 6)")
    t.add_argument("--ae-epochs", type=int, help="autoencoder epochs (default: AnonConfig's, 15)")
    t.add_argument("--judge-epochs", type=int,
                   help="epochs of the HAR and ReID judges (default: AnonConfig's, 15)")
    t.add_argument("--gan-epochs", type=int, help="GAN epochs (default: AnonConfig's, 20)")
    t.add_argument("--judge-filters", type=int,
                   help="filters of the judges and critics (default AnonConfig's, 32; the paper's tCNN: 64)")
    losses = t.add_mutually_exclusive_group()
    losses.add_argument("--extras", action="store_true",
                        help="beyond the paper: every extra term on at the bench's settings "
                             "(AnonConfig.beyond_paper(): also the online attacker). The "
                             "default, AnonConfig(), already adds an auxiliary activity critic "
                             "and, for dfi, the mean-code swap to the paper's losses")
    losses.add_argument("--paper", action="store_true",
                        help="the paper's losses only (AnonConfig.paper(): no activity critic, "
                             "no mean-code swap); model selection is the default's")
    t.add_argument("--utility-weight", type=float,
                   help="beyond the paper: weight of an auxiliary activity critic term")
    t.add_argument("--adaptive-weight", type=float,
                   help="beyond the paper: weight of the online (retrained) attacker term")
    t.add_argument("--checkpoint-dir", help="save (and resume) stage checkpoints here")
    add_smoke(t, "tiny networks, 2 epochs per stage, 4 synthetic subjects")
    t.add_argument("--no-eval", action="store_true", help="skip the evaluation")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    out_opts(t)
    t.set_defaults(func=_cmd_train)

    a = sub.add_parser("apply", help="anonymise a data split with a saved model",
                       description="Write anonymised windows (original units) with their "
                       "labels to an authenticated dataset envelope (privkit.fhe.envelope.unpack_dataset).")
    a.add_argument("--model", required=True, help="model file written by 'privkit anon train'")
    data_opts(a, False)
    a.add_argument("--out", required=True, help="dataset envelope to write (e.g. anon.env)")
    a.add_argument("--split", choices=("test", "train"), default="test",
                   help="which split of the model's data to anonymise")
    a.add_argument("--target", type=int, default=None,
                   help="dfi: the subject to transfer to (default: a random other subject)")
    a.add_argument("--seed", type=int, default=0, help="seed of the generator's noise and targets")
    add_smoke(a, "the first 32 windows")
    add_json(a)
    a.set_defaults(func=_cmd_apply)

    e = sub.add_parser("evaluate", help="evaluate a saved model on its test split",
                       description="HAR and ReID accuracy / weighted F1 on real vs anonymised "
                       "windows, DFI transfer rate, a retrained attacker, MMD.")
    e.add_argument("--model", required=True, help="model file written by 'privkit anon train'")
    data_opts(e, False)
    e.add_argument("--attacker-epochs", type=int, default=None,
                   help="epochs of the retrained attacker (default: the judges' epochs)")
    e.add_argument("--no-attacker", action="store_true",
                   help="skip the retrained attacker (faster, overstates privacy)")
    add_smoke(e, "2 attacker epochs")
    out_opts(e)
    e.set_defaults(func=_cmd_evaluate)
