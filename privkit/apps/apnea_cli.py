"""``privkit apnea``: train, run encrypted inference, evaluate; ``demo`` does all three.

    privkit apnea demo [--smoke]                 train on synthetic ECG, compile, encrypted inference
    privkit apnea train --data synthetic --out apnea.pt
    privkit apnea infer --model apnea.pt --data synthetic -n 8
    privkit apnea evaluate --model apnea.pt --data ucddb:/path/to/ucddb --encrypted 20
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("apnea", help="encrypted sleep-apnea detection on ECG windows",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s = p.add_subparsers(dest="apnea_command", metavar="ACTION")

    def common(q: argparse.ArgumentParser, model: bool) -> None:
        q.add_argument("--data", default="synthetic",
                       help="synthetic | ucddb:DIR | apnea-ecg:DIR (default: synthetic)")
        q.add_argument("--n-windows", type=int, default=600, help="synthetic windows to generate")
        q.add_argument("--effect", type=float, default=2.0,
                       help="synthetic data: strength of the apnea pattern (privkit.data.ecg."
                       "synthetic_ecg; 1 = subtle, 2 = clear; default 2)")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--json", action="store_true", help="print results as JSON")
        if model:
            q.add_argument("--model", required=True, help="a model saved by 'privkit apnea train'")

    d = s.add_parser("demo", help="train on synthetic ECG, compile, run encrypted inference, report")
    common(d, model=False)
    d.add_argument("--encrypted", type=int, default=6, help="held-out windows to run encrypted")
    d.add_argument("--epochs", type=int, default=None)
    d.add_argument("--backend", default="seal", choices=["seal", "sim"])
    d.add_argument("--png", default="apnea_demo.png", help="where to save the figure ('' for none)")
    d.add_argument("--smoke", action="store_true", help="tiny sizes (CI): seconds, not minutes")
    d.set_defaults(func=run_demo)

    t = s.add_parser("train", help="train a detector (plaintext, approximations in the loop)")
    common(t, model=False)
    t.add_argument("--out", required=True, help="where to save the model")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--blocks", type=int, default=2)
    t.add_argument("--pool", choices=["avg", "max"], default="avg")
    t.add_argument("--smoke", action="store_true")
    t.set_defaults(func=run_train)

    i = s.add_parser("infer", help="encrypted inference on windows of a data set")
    common(i, model=True)
    i.add_argument("-n", type=int, default=4, help="windows to run")
    i.add_argument("--backend", default="seal", choices=["seal", "sim"])
    i.add_argument("--png", default="", help="save a figure of the first window and its logits")
    i.set_defaults(func=run_infer)

    e = s.add_parser("evaluate", help="plaintext metrics, and encrypted agreement on N windows")
    common(e, model=True)
    e.add_argument("--encrypted", type=int, default=0, help="also run N windows encrypted")
    e.add_argument("--backend", default="seal", choices=["seal", "sim"])
    e.set_defaults(func=run_evaluate)
    from privkit.apps import apnea_deploy_cli  # privkit apnea serve, apnea infer --server URL

    apnea_deploy_cli.extend(s, i)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _load_data(spec: str, n: int, seed: int, effect: float = 2.0) -> Any:
    from privkit.data.ecg import load_ecg_dataset, synthetic_ecg

    if spec == "synthetic":
        return synthetic_ecg(n, seed=seed, effect=effect)
    return load_ecg_dataset(spec)


def _split(data: Any, frac: float, seed: int) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(data.y))
    cut = int(len(idx) * frac)
    return (data.x[idx[:cut]], data.y[idx[:cut]]), (data.x[idx[cut:]], data.y[idx[cut:]])


def _encrypted_eval(det: Any, x: np.ndarray, y: np.ndarray, backend: str) -> dict[str, Any]:
    import resource

    t = time.perf_counter()
    program = det.compile()
    compile_s = time.perf_counter() - t
    plain = det.logits(x)
    enc, info = det.predict_encrypted(x, backend=backend)
    agree = float(np.mean(plain.argmax(1) == enc.argmax(1)))
    err = np.abs(plain - enc)
    from privkit.apps.apnea import binary_metrics

    return {
        "windows": int(len(x)),
        "backend": backend + (" (SIMULATED, not encrypted)" if backend == "sim" else ""),
        "params": program.params.describe(),
        "security_bits": program.params.security_bits,
        "depth_used": program.depth,
        "rotation_keys": len(program.rotations),
        "compile_s": compile_s,
        "keygen_s": info["keygen_s"],
        "latency_s_mean": float(np.mean(info["latency_s"])),
        "latency_s_max": float(np.max(info["latency_s"])),
        "agreement": agree,
        "max_logit_error": float(err.max()),
        "mean_logit_error": float(err.mean()),
        "encrypted_metrics": binary_metrics(y, enc.argmax(1)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "_plain": plain,
        "_enc": enc,
        "_info": info,
    }


def _print_table(title: str, rows: dict[str, Any]) -> None:
    print(f"\n{title}")
    for k, v in rows.items():
        if k.startswith("_"):
            continue
        if isinstance(v, float):
            v = f"{v:.4g}"
        elif isinstance(v, dict):
            v = ", ".join(f"{a}={b:.3f}" if isinstance(b, float) else f"{a}={b}" for a, b in v.items())
        print(f"  {k:<22} {v}")


def _figure(path: str, window: np.ndarray, plain: np.ndarray, enc: np.ndarray, label: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.2), gridspec_kw={"width_ratios": [3, 1]})
    t = np.arange(len(window)) / 128.0
    a.plot(t, window, lw=0.7)
    a.set_xlabel("time (s)")
    a.set_title(f"ECG window (label: {'apnea' if label else 'normal'})")
    xs = np.arange(2)
    b.bar(xs - 0.18, plain, 0.36, label="plaintext")
    b.bar(xs + 0.18, enc, 0.36, label="decrypted")
    b.set_xticks(xs, ["normal", "apnea"])
    b.set_title("logits")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_demo(args: argparse.Namespace) -> int:
    from privkit.apps.apnea import ApneaDetector
    from privkit.data.ecg import synthetic_ecg

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
    det = ApneaDetector(epochs=epochs, finetune_epochs=0 if args.smoke else 2, seed=args.seed)
    det.fit((xtr, ytr), progress=not args.json)
    train_s = time.perf_counter() - t
    plain_metrics = det.evaluate((xte, yte))
    res = _encrypted_eval(det, xte[:n_enc], yte[:n_enc], args.backend)
    program = res["_info"]["program"]
    keys = res["_info"]["keys"]
    program.trace(keys, xte[0])
    if args.png:
        _figure(args.png, xte[0], res["_plain"][0], res["_enc"][0], int(yte[0]))
    report = det.privacy_report()
    if args.json:
        print(json.dumps({"train_s": train_s, "plaintext": plain_metrics,
                          "encrypted": {k: v for k, v in res.items() if not k.startswith("_")},
                          "layers": program.layer_reports(), "privacy": report.to_dict()}, indent=2,
                         default=float))
        return 0
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
    from privkit.apps.apnea import ApneaDetector

    data = _load_data(args.data, 48 if args.smoke else args.n_windows, args.seed, args.effect)
    (xtr, ytr), (xte, yte) = _split(data, 0.8, args.seed)
    epochs = args.epochs if args.epochs is not None else (1 if args.smoke else 12)
    det = ApneaDetector(epochs=epochs, blocks=args.blocks, pool=args.pool, seed=args.seed,
                        finetune_epochs=0 if args.smoke else 2)
    det.fit((xtr, ytr), progress=not args.json)
    det.save(args.out)
    metrics = det.evaluate((xte, yte))
    if args.json:
        print(json.dumps({"model": args.out, "held_out": metrics}, indent=2))
    else:
        _print_table(f"saved {args.out}; held-out metrics:", metrics)
    return 0


def run_infer(args: argparse.Namespace) -> int:
    from privkit.apps.apnea import ApneaDetector

    det = ApneaDetector.load(args.model)
    data = _load_data(args.data, max(args.n, 8), args.seed, args.effect)
    res = _encrypted_eval(det, data.x[: args.n], data.y[: args.n], args.backend)
    if args.png:
        _figure(args.png, data.x[0], res["_plain"][0], res["_enc"][0], int(data.y[0]))
    if args.json:
        out = {k: v for k, v in res.items() if not k.startswith("_")}
        out["logits"] = res["_enc"].tolist()
        print(json.dumps(out, indent=2, default=float))
    else:
        _print_table(f"encrypted inference on {args.n} windows:", res)
        for i, (p, e) in enumerate(zip(res["_plain"], res["_enc"])):
            print(f"  window {i}: plaintext {np.round(p, 4)}  decrypted {np.round(e, 4)}")
    return 0 if res["agreement"] == 1.0 else 1


def run_evaluate(args: argparse.Namespace) -> int:
    from privkit.apps.apnea import ApneaDetector

    det = ApneaDetector.load(args.model)
    data = _load_data(args.data, args.n_windows, args.seed, args.effect)
    out: dict[str, Any] = {"plaintext": det.evaluate(data)}
    if args.encrypted:
        res = _encrypted_eval(det, data.x[: args.encrypted], data.y[: args.encrypted], args.backend)
        out["encrypted"] = {k: v for k, v in res.items() if not k.startswith("_")}
    if args.json:
        print(json.dumps(out, indent=2, default=float))
    else:
        _print_table("plaintext metrics:", out["plaintext"])
        if "encrypted" in out:
            _print_table("encrypted:", out["encrypted"])
    return 0
