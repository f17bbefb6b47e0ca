"""``privkit apnea``: train, run encrypted inference, evaluate; ``demo`` does all three.

    privkit apnea demo [--smoke]                 train on synthetic ECG, compile, encrypted inference
    privkit apnea train --data synthetic --out apnea.privkit
    privkit apnea infer --model apnea.privkit --data synthetic -n 8
    privkit apnea evaluate --model apnea.privkit --data ucddb:/path/to/ucddb --encrypted 20

Model files are privkit envelopes (authenticated; not torch files): name them *.privkit.
Lines marked "privkit: WARNING" on stderr (and "warnings" in --json) flag results that mean
nothing: a classifier that predicts one class for everything, a NaN metric, inputs outside the
range the polynomial approximations were calibrated for.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from ._cli_common import (
    add_json,
    add_smoke,
    bar,
    check_model_path,
    flag_metrics,
    single_thread_torch,
    stages,
    warn,
)


_DEFAULT_PNG = "out/apnea_demo.png"  # out/ is git-ignored
_BACKEND_HELP = "seal: real CKKS encryption; sim: the plaintext simulator (NOT encrypted, fast)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("apnea", help="encrypted sleep-apnea detection on ECG windows",
                       description=__doc__)
    s = p.add_subparsers(dest="apnea_command", metavar="ACTION")

    def common(q: argparse.ArgumentParser, model: bool) -> None:
        q.add_argument("--data", default="synthetic",
                       help="synthetic | ucddb:DIR | apnea-ecg:DIR")
        q.add_argument("--n-windows", type=int, default=600, help="synthetic windows to generate")
        q.add_argument("--effect", type=float, default=2.0,
                       help="synthetic data: strength of the apnea pattern (privkit.data.ecg."
                       "synthetic_ecg; 1 = subtle, 2 = clear)")
        q.add_argument("--seed", type=int, default=0, help="seed of data generation and training")
        add_json(q)
        if model:
            q.add_argument("--model", required=True,
                           help="a model file saved by 'privkit apnea train' (*.privkit)")

    d = s.add_parser("demo", help="train on synthetic ECG, compile, run encrypted inference, report")
    common(d, model=False)
    d.set_defaults(n_windows=1200)  # v2's measured setting (bench/apnea_v2.py): 0.945 on unseen subjects
    d.add_argument("--encrypted", type=int, default=6, help="held-out windows to run encrypted")
    d.add_argument("--epochs", type=int, default=None,
                   help="training epochs (default: v2 at most 60, the count chosen by cross-validation over "
                        "subjects; v1 12; 1 with --smoke)")
    d.add_argument("--backend", default="seal", choices=["seal", "sim"], help=_BACKEND_HELP)
    d.add_argument("--arch", default="v2", choices=["v1", "v2"],
                   help="v2 (the default): trainable quadratic, 3 blocks, global average pool, "
                        "its epoch count cross-validated on held-out subjects; v1: PolyReLU, 2 blocks, flatten + "
                        "linear (less accurate)")
    d.add_argument("--png", default=_DEFAULT_PNG,
                   help="where to save the figure ('' for none)")
    add_smoke(d, "48 windows, 1 epoch, 2 encrypted windows")
    d.set_defaults(func=run_demo)

    t = s.add_parser("train", help="train a detector (plaintext, approximations in the loop)")
    common(t, model=False)
    t.add_argument("--out", required=True, help="model file to write (e.g. apnea.privkit)")
    t.add_argument("--arch", default="v2", choices=["v1", "v2"],
                   help="v2 (the default): trainable quadratic, 3 blocks, global average pool, "
                        "its epoch count cross-validated on held-out subjects (needs subject ids: synthetic data "
                        "and the ECG readers have them); v1: PolyReLU, flatten + linear")
    t.add_argument("--epochs", type=int, default=None,
                   help="training epochs (default: v2 at most 60, the count chosen by cross-validation over "
                        "subjects; v1 12; 1 with --smoke)")
    t.add_argument("--blocks", type=int, default=0,
                   help="conv blocks (0: the architecture's default, v1 2, v2 3)")
    t.add_argument("--pool", choices=["avg", "max"], default="avg",
                   help="pooling (max: a polynomial approximation of max, deeper)")
    add_smoke(t, "48 windows, 1 epoch")
    t.set_defaults(func=run_train)

    i = s.add_parser("infer", help="encrypted inference on windows of a data set")
    common(i, model=True)
    i.add_argument("-n", type=int, default=4, help="windows to run")
    i.add_argument("--backend", default="seal", choices=["seal", "sim"], help=_BACKEND_HELP)
    i.add_argument("--png", default="", help="save a figure of the first window and its logits")
    add_smoke(i, "2 windows")
    i.set_defaults(func=run_infer)

    e = s.add_parser("evaluate", help="plaintext metrics, and encrypted agreement on N windows")
    common(e, model=True)
    e.add_argument("--encrypted", type=int, default=0, help="also run N windows encrypted")
    e.add_argument("--backend", default="seal", choices=["seal", "sim"], help=_BACKEND_HELP)
    add_smoke(e, "48 windows, at most 2 encrypted")
    e.set_defaults(func=run_evaluate)
    from privkit.apps import apnea_deploy_cli  # privkit apnea serve, apnea infer --server URL

    apnea_deploy_cli.extend(s, i)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _load_data(spec: str, n: int, seed: int, effect: float = 2.0) -> Any:
    from privkit.data.ecg import load_ecg_dataset, synthetic_ecg

    if spec == "synthetic":
        return synthetic_ecg(n, seed=seed, effect=effect)
    return load_ecg_dataset(spec)


def _split(data: Any, frac: float, seed: int) -> tuple[Any, Any, bool]:
    """``(train, test, by_subject)``: whole subjects on each side when the data has subject ids
    (at least two), so held-out metrics are on unseen people; else a random split of windows
    (then ``train`` / ``test`` are ``(x, y)`` tuples)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    subj = getattr(data, "subject", None)
    if subj is not None and len(subj) == len(data.y) and len(np.unique(subj)) >= 2:
        ids = rng.permutation(np.unique(subj))
        n_train = min(len(ids) - 1, max(1, int(round(len(ids) * frac))))
        mask = np.isin(np.asarray(subj), ids[:n_train])
        return data.subset(np.flatnonzero(mask)), data.subset(np.flatnonzero(~mask)), True
    idx = rng.permutation(len(data.y))
    cut = int(len(idx) * frac)
    return (data.x[idx[:cut]], data.y[idx[:cut]]), (data.x[idx[cut:]], data.y[idx[cut:]]), False


def range_counts(model: Any, x: Any) -> dict[str, dict[str, float]]:
    """Per calibrated layer (PolyReLU, approximate max pool): how many input values fall outside
    the range its polynomial was calibrated for, on the windows ``x``. Outside that range the
    encrypted result is garbage, so a non-zero count is reported, never hidden."""
    import copy

    import numpy as np
    import torch

    ref = copy.deepcopy(model).double().eval()
    counts: dict[str, dict[str, float]] = {}
    hooks = []
    for name, m in ref.named_modules():
        if hasattr(m, "bound") and hasattr(m, "is_calibrated") and float(m.bound) > 0:
            def hook(mod, inp, out, name=name):
                v = inp[0].detach()
                c = counts.setdefault(name, {"bound": float(mod.bound), "outside": 0, "values": 0,
                                             "max_abs": 0.0})
                c["outside"] += int((v.abs() > mod.bound).sum())
                c["values"] += int(v.numel())
                c["max_abs"] = max(c["max_abs"], float(v.abs().max()) if v.numel() else 0.0)
            hooks.append(m.register_forward_hook(hook))
    try:
        import warnings

        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # counted here instead
            ref(torch.from_numpy(np.asarray(x, dtype=np.float64))[:, None, :])
    finally:
        for h in hooks:
            h.remove()
    return counts


def _range_warnings(counts: dict[str, dict[str, float]], n: int) -> list[str]:
    out = []
    for name, c in counts.items():
        if c["outside"]:
            out.append(f"layer {name}: {c['outside']} of {c['values']} input values on {n} windows "
                       f"are OUTSIDE the calibrated range [-{c['bound']:.3g}, {c['bound']:.3g}] "
                       f"(max |x| {c['max_abs']:.3g}): encrypted outputs there are unreliable; "
                       "recalibrate on representative data")
    for line in out:
        warn(line)
    return out


def _encrypted_eval(det: Any, x: Any, y: Any, backend: str, progress: bool = True) -> dict[str, Any]:
    import resource

    import numpy as np

    from privkit.apps.apnea import binary_metrics

    t = time.perf_counter()
    program = det.compile()
    compile_s = time.perf_counter() - t
    plain = det.logits(x)
    keys, keygen_s = None, 0.0
    for _ in stages(["key generation"], f"apnea: {backend} keys", disable=not progress):
        t = time.perf_counter()
        keys = program.keygen(backend=backend)
        keygen_s = time.perf_counter() - t
    enc_rows, lat = [], []
    for row in bar(list(x), desc="apnea: encrypt, run, decrypt", disable=not progress,
                   unit="window"):
        out, info = det.predict_encrypted(row[None], keys=keys, backend=backend)
        enc_rows.append(out[0])
        lat += info["latency_s"]
    enc = np.array(enc_rows).reshape(len(x), -1)
    info = {"latency_s": lat, "keygen_s": keygen_s, "keys": keys, "program": program}
    agree = float(np.mean(plain.argmax(1) == enc.argmax(1))) if len(x) else float("nan")
    err = np.abs(plain - enc)
    counts = range_counts(det.model, x) if len(x) else {}
    metrics = binary_metrics(y, enc.argmax(1))
    warns = flag_metrics(metrics, "encrypted predictions") + _range_warnings(counts, len(x))
    return {
        "windows": int(len(x)),
        "backend": backend + (" (SIMULATED, not encrypted)" if backend == "sim" else ""),
        "params": program.params.describe(),
        "security_bits": program.params.security_bits,
        "depth_used": program.depth,
        "rotation_keys": len(program.rotations),
        "compile_s": compile_s,
        "keygen_s": keygen_s,
        "latency_s_mean": float(np.mean(lat)) if lat else float("nan"),
        "latency_s_max": float(np.max(lat)) if lat else float("nan"),
        "agreement": agree,
        "max_logit_error": float(err.max()) if err.size else float("nan"),
        "mean_logit_error": float(err.mean()) if err.size else float("nan"),
        "encrypted_metrics": metrics,
        "out_of_range": {k: int(v["outside"]) for k, v in counts.items()},
        "warnings": warns,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "_plain": plain,
        "_enc": enc,
        "_info": info,
    }


def _print_table(title: str, rows: dict[str, Any]) -> None:
    print(f"\n{title}")
    for k, v in rows.items():
        if k.startswith("_") or k == "warnings":
            continue
        if isinstance(v, float):
            v = f"{v:.4g}"
        elif isinstance(v, dict):
            v = ", ".join(f"{a}={b:.3f}" if isinstance(b, float) else f"{a}={b}" for a, b in v.items())
        print(f"  {k:<22} {v}")
    for w in rows.get("warnings", []):
        print(f"  !! WARNING: {w}")


def _figure(path: str, window: Any, plain: Any, enc: Any, label: int, backend: str) -> None:
    from privkit._optional import require

    import numpy as np

    matplotlib = require("matplotlib", extra="plots", feature="the apnea figure (--png)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["normal", "apnea"]
    pred_plain, pred_enc = int(np.argmax(plain)), int(np.argmax(enc))
    err = float(np.max(np.abs(np.asarray(plain) - np.asarray(enc))))
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [3, 1]})
    t = np.arange(len(window)) / 128.0
    a.plot(t, window, lw=0.7)
    a.set_xlabel("time (s)")
    a.set_ylabel("ECG (normalised)")
    ok = "correct" if pred_enc == label else "WRONG"
    a.set_title(f"ECG window: true class {names[label]}; decrypted prediction {names[pred_enc]} "
                f"({ok})", fontsize=10)
    xs = np.arange(2)
    b.bar(xs - 0.18, plain, 0.36, label=f"plaintext (pred. {names[pred_plain]})")
    b.bar(xs + 0.18, enc, 0.36, label=f"decrypted (pred. {names[pred_enc]})")
    b.axhline(0, color="k", lw=0.5)
    b.set_xticks(xs, names)
    kind = "SIMULATED, not encrypted" if backend == "sim" else "CKKS"
    b.set_title(f"logits ({kind})\nmax |plain - decrypted| = {err:.2e}", fontsize=9)
    b.legend(fontsize=7)
    fig.tight_layout()
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _check_png(args: argparse.Namespace) -> None:
    """Fail before the work when a figure was asked for and matplotlib is missing; without the
    plots extra the default figure is skipped with a warning."""
    if not args.png:
        return
    from privkit._optional import require
    from privkit.errors import MissingDependencyError

    try:
        require("matplotlib", extra="plots", feature="the apnea figure (--png)")
    except MissingDependencyError as e:
        if args.png != _DEFAULT_PNG:
            raise
        warn(f"no figure: {e}")
        args.png = ""


def run_demo(args: argparse.Namespace) -> int:
    single_thread_torch()
    from privkit.apps.apnea import ApneaDetector
    from privkit.data.ecg import synthetic_ecg

    _check_png(args)

    n = 48 if args.smoke else args.n_windows
    epochs = args.epochs if args.epochs is not None else (1 if args.smoke else 12)
    n_enc = min(args.encrypted, 2) if args.smoke else args.encrypted
    # train and test on different synthetic subjects (different seeds)
    train = synthetic_ecg(n, seed=args.seed, effect=args.effect)
    test = synthetic_ecg(max(n // 3, 8), seed=args.seed + 1000, effect=args.effect)
    (xtr, ytr), (xte, yte) = (train.x, train.y), (test.x, test.y)
    print(f"privkit apnea demo: synthetic ECG (effect {args.effect}), {len(ytr)} training windows, "
          f"{len(yte)} test windows of unseen subjects ({xtr.shape[1]} samples at 128 Hz)", file=sys.stderr)
    t = time.perf_counter()
    if getattr(args, "arch", "v2") == "v2":  # its own schedule; the subjects give the cross-validation folds
        kw = {"epochs": args.epochs} if args.epochs is not None else {}
        if args.smoke:
            kw.update(epochs=1, restarts=1)
        det = ApneaDetector(arch="v2", seed=args.seed, **kw)
        det.fit(train, progress=True)
    else:
        det = ApneaDetector(arch="v1", epochs=epochs, finetune_epochs=0 if args.smoke else 2, seed=args.seed)
        det.fit((xtr, ytr), progress=True)
    train_s = time.perf_counter() - t
    plain_metrics = det.evaluate((xte, yte))
    plain_metrics["warnings"] = flag_metrics(plain_metrics, "plaintext test set")
    res = _encrypted_eval(det, xte[:n_enc], yte[:n_enc], args.backend)
    program = res["_info"]["program"]
    keys = res["_info"]["keys"]
    program.trace(keys, xte[0])
    if args.png:
        _figure(args.png, xte[0], res["_plain"][0], res["_enc"][0], int(yte[0]), args.backend)
    report = det.privacy_report()
    if args.json:
        print(json.dumps({"train_s": train_s, "plaintext": plain_metrics,
                          "encrypted": {k: v for k, v in res.items() if not k.startswith("_")},
                          "layers": program.layer_reports(), "privacy": report.to_dict(),
                          "figure": args.png or None}, indent=2, default=float))
        return 0 if res["agreement"] == 1.0 else 1
    _print_table(f"Plaintext model (trained {train_s:.1f} s, approximations in the loop), test set:",
                 plain_metrics)
    _print_table(f"Encrypted inference on {res['windows']} held-out windows:", res)
    print("\nPer-layer table (last window; errors vs the torch forward on the first test window):")
    print(program.report())
    print("\n" + report.summary())
    if args.png:
        print(f"\nfigure: {os.path.abspath(args.png)}")
    return 0 if res["agreement"] == 1.0 else 1


def run_train(args: argparse.Namespace) -> int:
    single_thread_torch()
    from privkit.apps.apnea import ApneaDetector
    from privkit.errors import ParameterError

    check_model_path(args.out)
    data = _load_data(args.data, 48 if args.smoke else args.n_windows, args.seed, args.effect)
    train, test, by_subject = _split(data, 0.8, args.seed)
    if args.arch == "v2":
        if not by_subject:
            raise ParameterError("--arch v2 cross-validates on held-out subjects, and these data carry "
                                 "no subject ids (or only one subject); use --arch v1")
        kw: dict[str, Any] = {"epochs": args.epochs} if args.epochs is not None else {}
        if args.smoke:
            kw.update(epochs=1, restarts=1)
        det = ApneaDetector(arch="v2", blocks=args.blocks, pool=args.pool, seed=args.seed, **kw)
    else:
        epochs = args.epochs if args.epochs is not None else (1 if args.smoke else 12)
        det = ApneaDetector(arch="v1", epochs=epochs, blocks=args.blocks, pool=args.pool, seed=args.seed,
                            finetune_epochs=0 if args.smoke else 2)
        if by_subject:
            train = (train.x, train.y)
    det.fit(train, progress=True)
    det.save(args.out)
    metrics = det.evaluate(test)
    what = "held-out subjects" if by_subject else "held-out windows (subjects also seen in training)"
    metrics["warnings"] = flag_metrics(metrics, what)
    if args.json:
        print(json.dumps({"model": args.out, "held_out": metrics}, indent=2))
    else:
        _print_table(f"saved {args.out}; held-out metrics:", metrics)
    return 0


def run_infer(args: argparse.Namespace) -> int:
    from privkit.apps.apnea import ApneaDetector

    _check_png(args)
    det = ApneaDetector.load(check_model_path(args.model))
    n = min(args.n, 2) if args.smoke else args.n
    data = _load_data(args.data, max(n, 8), args.seed, args.effect)
    res = _encrypted_eval(det, data.x[:n], data.y[:n], args.backend)
    if args.png:
        _figure(args.png, data.x[0], res["_plain"][0], res["_enc"][0], int(data.y[0]), args.backend)
    if args.json:
        out = {k: v for k, v in res.items() if not k.startswith("_")}
        out["logits"] = res["_enc"].tolist()
        print(json.dumps(out, indent=2, default=float))
    else:
        import numpy as np

        _print_table(f"encrypted inference on {n} windows:", res)
        for i, (p, e) in enumerate(zip(res["_plain"], res["_enc"])):
            print(f"  window {i}: plaintext {np.round(p, 4)}  decrypted {np.round(e, 4)}")
    return 0 if res["agreement"] == 1.0 else 1


def run_evaluate(args: argparse.Namespace) -> int:
    from privkit.apps.apnea import ApneaDetector

    det = ApneaDetector.load(check_model_path(args.model))
    data = _load_data(args.data, 48 if args.smoke else args.n_windows, args.seed, args.effect)
    plain = det.evaluate(data)
    plain["warnings"] = flag_metrics(plain, "plaintext")
    out: dict[str, Any] = {"plaintext": plain}
    n_enc = min(args.encrypted, 2) if args.smoke else args.encrypted
    if n_enc:
        res = _encrypted_eval(det, data.x[:n_enc], data.y[:n_enc], args.backend)
        out["encrypted"] = {k: v for k, v in res.items() if not k.startswith("_")}
    if args.json:
        print(json.dumps(out, indent=2, default=float))
    else:
        _print_table("plaintext metrics:", out["plaintext"])
        if "encrypted" in out:
            _print_table("encrypted:", out["encrypted"])
    return 0
