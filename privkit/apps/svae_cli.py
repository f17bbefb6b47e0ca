"""``privkit svae train | evaluate | sample``: the (DP) spiking VAE from the command line.

Examples::

    privkit svae train --dataset digits --image-size 16 --widths 8,16 --latent 16 --steps 4 \\
        --epochs 3 --dp --target-epsilon 5 --out svae.privkit --png-dir out/
    privkit svae evaluate --model svae.privkit --dataset digits --metrics --attacks --json
    privkit svae sample --model svae.privkit -n 64 --png samples.png

Progress bars (tqdm, on stderr) show the loss and the running epsilon; results go to stdout as a
table, or as JSON with ``--json``. A noise multiplier too small for a meaningful epsilon is
allowed and flagged loudly. ``evaluate`` prints the reconstruction error of the mean image
beside the model's, so that a model that learned nothing shows as one.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from ..errors import ParameterError
from ._cli_common import add_smoke, check_model_path, warn

__all__ = ["register", "save_grid"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("svae", help="DP spiking VAE (FSVAE) and its ANN twin",
                              description=__doc__)
    sub = p.add_subparsers(dest="svae_command", metavar="ACTION")

    def data_args(q: argparse.ArgumentParser) -> None:
        from ..data.images import DATASET_HELP

        q.add_argument("--dataset", default="digits", help=DATASET_HELP)
        q.add_argument("--limit", type=int, default=None, help="use at most this many images")
        q.add_argument("--json", action="store_true", help="print results as JSON")
        q.add_argument("--seed", type=int, default=0, help="seed of data order, noise and sampling")

    t = sub.add_parser("train", help="train a SpikingVAE / AnnVAE, optionally with DP-SGD")
    data_args(t)
    kind = t.add_mutually_exclusive_group()
    kind.add_argument("--spiking", dest="spiking", action="store_true", default=True,
                      help="FSVAE spiking model (default)")
    kind.add_argument("--ann", dest="spiking", action="store_false", help="ANN VAE of the same shape")
    t.add_argument("--image-size", type=int, default=32, help="images are resized to this square")
    t.add_argument("--widths", default="32,64,128,256", help="encoder conv widths (FSVAE: 32,64,128,256)")
    t.add_argument("--latent", type=int, default=128, help="latent units")
    t.add_argument("--steps", type=int, default=16, help="time steps T (FSVAE: 16)")
    t.add_argument("--k", type=int, default=20, help="candidate spikes per latent unit")
    t.add_argument("--norm", default="group", choices=["group", "layer", "batch", "none"],
                   help="normalisation layer (batch norm is not DP-compatible)")
    t.add_argument("--learnable-tau", action="store_true", help="learn the LIF time constants")
    t.add_argument("--epochs", type=int, default=5, help="training epochs")
    t.add_argument("--batch-size", type=int, default=64, help="(expected) batch size")
    t.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    t.add_argument("--dp", action="store_true", help="train with DP-SGD (Opacus)")
    amount = t.add_mutually_exclusive_group()
    amount.add_argument("--target-epsilon", type=float, help="calibrate the noise to this epsilon")
    amount.add_argument("--noise-multiplier", type=float, help="use this noise multiplier")
    t.add_argument("--delta", type=float, default=None, help="default 1/N")
    t.add_argument("--max-grad-norm", type=float, default=1.0, help="clipping norm (paper: 3)")
    t.add_argument("--accountant", default="prv", choices=["prv", "rdp"],
                   help="privacy accountant (prv: tighter; rdp: Opacus' classic)")
    t.add_argument("--out", required=True, help="model file to write (e.g. svae.privkit)")
    t.add_argument("--png-dir", default=None, help="write reconstructions/samples PNG grids here")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--nproc", type=int, default=1,
                   help="DP training on N local processes (torchrun, gloo on CPU); needs --dp; "
                        "--batch-size is the global batch")
    add_smoke(t, "120 digits at 8x8, a tiny model, 1 epoch, the rdp accountant")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="reconstruction MSE, AID, local IS/FD, MIA, attacks")
    data_args(e)
    e.add_argument("--model", required=True, help="model file written by 'privkit svae train'")
    e.add_argument("--metrics", action="store_true",
                   help="AID and IS/FD with a locally trained classifier (not Inception)")
    e.add_argument("--metric-epochs", type=int, default=3,
                   help="epochs of the local classifier behind the metrics")
    e.add_argument("--samples", type=int, default=500, help="generated images for the metrics")
    e.add_argument("--membership", action="store_true", help="membership-inference AUC")
    e.add_argument("--attacks", action="store_true", help="FGSM / C&W / Square table")
    e.add_argument("--attack-n", type=int, default=64, help="images attacked")
    e.add_argument("--png-dir", default=None, help="write a reconstructions PNG grid here")
    add_smoke(e, "at most 60 test images")
    e.set_defaults(func=_evaluate)

    s = sub.add_parser("sample", help="generate images")
    s.add_argument("--model", required=True, help="model file written by 'privkit svae train'")
    s.add_argument("-n", type=int, default=64, help="images to generate")
    s.add_argument("--seed", type=int, default=0, help="seed of the latent samples")
    s.add_argument("--png", default=None, help="PNG grid to write")
    s.add_argument("--npy", default=None, help="write the samples as a .npy array")
    s.add_argument("--json", action="store_true", help="print results as JSON")
    add_smoke(s, "at most 8 images")
    s.set_defaults(func=_sample)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _load_model(path: str):
    import torch

    from .svae import AnnVAE, SpikingVAE

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        kind = blob.get("kind") if isinstance(blob, dict) else None
    except Exception:  # noqa: BLE001 - unreadable: cls.load below raises the DataFormatError
        kind = None
    cls = AnnVAE if kind == AnnVAE.model_kind else SpikingVAE
    return cls.load(path)


def save_grid(images, path: str | Path, nrow: int | None = None, title: str | None = None) -> None:
    """Save images ``(N, C, H, W)`` in [-1, 1] as a PNG grid (matplotlib, Agg backend)."""
    from privkit._optional import require

    matplotlib = require("matplotlib", extra="plots", feature="PNG grids")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    imgs = (np.asarray(images)[:64] + 1) / 2
    n = len(imgs)
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    c, h, w = imgs.shape[1:]
    grid = np.ones((ncol * (h + 1), nrow * (w + 1), c))
    for i, im in enumerate(imgs):
        r, q = divmod(i, nrow)
        grid[r * (h + 1):r * (h + 1) + h, q * (w + 1):q * (w + 1) + w] = im.transpose(1, 2, 0)
    fig = plt.figure(figsize=(max(2, nrow * w / 16), max(2, ncol * h / 16)), dpi=100)
    plt.imshow(grid.squeeze(-1) if c == 1 else grid.clip(0, 1), cmap="gray" if c == 1 else None,
               vmin=0, vmax=1)
    plt.axis("off")
    if title:
        plt.title(title, fontsize=8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def _print(results: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(results, indent=2, default=str))
        return
    width = max(len(k) for k in results) if results else 0
    for k, v in results.items():
        if isinstance(v, dict) or k == "warnings":
            continue
        if isinstance(v, float):
            v = f"{v:.6g}"
        print(f"{k:<{width}}  {v}")
    for w in results.get("warnings", []):
        print(f"!! WARNING: {w}")
    rep = results.get("privacy")
    if isinstance(rep, dict) and rep.get("summary"):
        print()
        print(rep["summary"])


def _launch_torchrun(nproc: int) -> int:
    """Re-run this very command under ``torchrun`` on ``nproc`` local processes."""
    import os
    import subprocess

    argv, skip = [], False
    for a in sys.argv[1:]:  # the workers learn the world size from torchrun's WORLD_SIZE
        if skip or a == "--nproc" or a.startswith("--nproc="):
            skip = a == "--nproc"
            continue
        argv.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "privkit.cli", *argv]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    return subprocess.run(cmd, env=env, check=False).returncode


_SMOKE = {"limit": 120, "image_size": 8, "widths": "4,8", "latent": 4, "steps": 2, "k": 3,
          "batch_size": 40, "epochs": 1, "accountant": "rdp"}


def _grid_title(model: Any, what: str) -> str:
    """What a reader of a grid needs: the model, and its epsilon (or that it has none)."""
    rep = model.privacy_report()
    if rep.kind == "dp":
        eps = f"DP: epsilon={rep.epsilon:.3g}, delta={rep.delta:.2g}"
    else:
        eps = "NOT private (no DP)"
    return f"{model.model_kind}; {eps}\n{what}"


def _train(args: argparse.Namespace) -> int:
    import os

    from ..data.images import load_dataset
    from ..dp.engine import DPConfig, PrivacyWarning
    from .svae import AnnVAE, SpikingVAE, VAEConfig

    check_model_path(args.out)
    if args.smoke:
        for k, v in _SMOKE.items():
            setattr(args, k, v)
    if args.nproc < 1:
        raise ParameterError(f"--nproc must be >= 1, got {args.nproc}")
    if args.nproc > 1 and not args.dp:
        raise ParameterError("--nproc N trains with distributed DP-SGD: add --dp")
    if args.nproc > 1 and "LOCAL_RANK" not in os.environ:
        return _launch_torchrun(args.nproc)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        from ..dp.distributed import init_from_env

        init_from_env()

    if args.dp and args.target_epsilon is None and args.noise_multiplier is None:
        raise ParameterError("--dp needs --target-epsilon E or --noise-multiplier S")
    if not args.dp and (args.target_epsilon is not None or args.noise_multiplier is not None):
        raise ParameterError("--target-epsilon / --noise-multiplier need --dp")
    data = load_dataset(args.dataset, "train", image_size=args.image_size, limit=args.limit,
                        seed=args.seed)
    cfg = VAEConfig(
        in_channels=data.images.shape[1], image_size=args.image_size,
        widths=tuple(int(w) for w in args.widths.split(",")), latent_dim=args.latent,
        n_steps=args.steps, k=args.k, norm=args.norm, learnable_tau=args.learnable_tau,
    )
    model = (SpikingVAE if args.spiking else AnnVAE)(cfg)
    dp = None
    if args.dp:
        dp = DPConfig(target_epsilon=args.target_epsilon, noise_multiplier=args.noise_multiplier,
                      delta=args.delta, max_grad_norm=args.max_grad_norm, epochs=args.epochs,
                      batch_size=args.batch_size, accountant=args.accountant)
    from tqdm import tqdm

    from ..dp.distributed import is_main_process

    main_rank = is_main_process()
    n_batches = max(1, math.ceil(len(data) / args.batch_size))
    bar = tqdm(total=args.epochs * n_batches, desc="svae train", file=sys.stderr,
               disable=args.no_progress or not main_rank, unit="step")

    eps_seen = {"value": None, "step": 0}

    def cb(rec: dict) -> None:
        post = {"epoch": rec["epoch"] + 1, "loss": f"{rec['loss']:.4f}"}
        if "epsilon" in rec:
            # the accountant runs at the end of each epoch (it is not free): say which step the
            # epsilon shown belongs to instead of passing an old value off as the current one
            if rec["epsilon"] != eps_seen["value"]:
                eps_seen.update(value=rec["epsilon"], step=rec.get("step", bar.n + 1))
            post["eps"] = f"{rec['epsilon']:.3g} (at step {eps_seen['step']})"
        bar.set_postfix(post)
        bar.update(1)

    t0 = time.time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PrivacyWarning)
        model.fit(data, dp=dp, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  seed=args.seed, callback=cb, distributed=distributed)
    if bar.n != bar.total:  # Poisson sampling skips empty batches: the bar ends at what ran
        bar.total = bar.n
        bar.refresh()
    bar.close()
    if not main_rank:
        return 0  # rank 0 saves and reports
    shown = set()
    for w in caught:
        if issubclass(w.category, PrivacyWarning) and str(w.message) not in shown:
            shown.add(str(w.message))
            print(f"privkit: WARNING: {w.message}", file=sys.stderr)
    model.save(args.out)
    rep = model.privacy_report()
    results: dict[str, Any] = {
        "model": model.model_kind, "dataset": data.name, "train_images": len(data),
        "epochs": args.epochs, "steps": len(model.history),
        "final_loss": model.history[-1]["loss"] if model.history else float("nan"),
        "wall_s": round(time.time() - t0, 2), "saved": args.out,
    }
    if rep.kind == "dp":
        results.update(epsilon=rep.epsilon, delta=rep.delta, noise_multiplier=rep.noise_multiplier,
                       accountant=rep.accountant)
    results["privacy"] = rep.to_dict() | {"summary": rep.summary()}
    if args.png_dir:
        test = load_dataset(args.dataset, "test", image_size=args.image_size, limit=64)
        rec = model.reconstruct(test.images[:32])
        import numpy as np

        save_grid(np.concatenate([test.images[:32], rec]), Path(args.png_dir) / "reconstructions.png",
                  nrow=8, title=_grid_title(model, "top: held-out input, bottom: reconstruction"))
        save_grid(model.sample(64, seed=args.seed), Path(args.png_dir) / "samples.png", nrow=8,
                  title=_grid_title(model, "samples"))
        results["png_dir"] = args.png_dir
    _print(results, args.json)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from ..data.images import load_dataset

    model = _load_model(check_model_path(args.model))
    size = model.config.image_size
    if args.smoke:
        args.limit = min(args.limit or 60, 60)
    test = load_dataset(args.dataset, "test", image_size=size, limit=args.limit, seed=args.seed)
    metrics = None
    train = None
    if args.metrics or args.membership:
        train = load_dataset(args.dataset, "train", image_size=size, limit=args.limit, seed=args.seed)
    if args.metrics:
        from ..dp.metrics import GenerativeMetrics

        metrics = GenerativeMetrics(epochs=args.metric_epochs, seed=args.seed).fit(
            train.images, train.labels)
    t0 = time.time()
    res = model.evaluate(test, metrics=metrics, n_samples=args.samples,
                         train_data=train if args.membership else None, attacks=args.attacks,
                         attack_n=args.attack_n, seed=args.seed)
    rep = model.privacy_report()
    results: dict[str, Any] = {"model": model.model_kind, "dataset": test.name,
                               "test_images": len(test)} | res
    if "recon_mse" in res:
        import numpy as np

        # a model that learned nothing still reconstructs the average image; print its error
        imgs = np.asarray(test.images, dtype=np.float64)
        base = float(np.mean((imgs - imgs.mean(axis=0, keepdims=True)) ** 2))
        results["recon_mse_mean_image_baseline"] = base
        if not res["recon_mse"] < base:
            msg = (f"reconstruction MSE {res['recon_mse']:.4g} is no better than predicting the "
                   f"mean test image ({base:.4g}): the model reconstructs nothing specific")
            warn(msg)
            results["warnings"] = [msg]
    if metrics is not None:
        results["metrics_note"] = ("is_local / fd_local use a classifier trained locally "
                                   f"(train accuracy {metrics.classifier_accuracy}), not Inception-v3")
    results["wall_s"] = round(time.time() - t0, 2)
    results["privacy"] = rep.to_dict() | {"summary": rep.summary()}
    if args.png_dir:
        import numpy as np

        rec = model.reconstruct(test.images[:32])
        save_grid(np.concatenate([test.images[:32], rec]), Path(args.png_dir) / "reconstructions.png",
                  nrow=8, title=_grid_title(model, "top: input, bottom: reconstruction"))
    _print(results, args.json)
    return 0


def _sample(args: argparse.Namespace) -> int:
    model = _load_model(check_model_path(args.model))
    n = min(args.n, 8) if args.smoke else args.n
    imgs = model.sample(n, seed=args.seed)
    results: dict[str, Any] = {"model": model.model_kind, "n": n, "shape": list(imgs.shape)}
    if args.png:
        save_grid(imgs, args.png, title=_grid_title(model, "samples"))
        results["png"] = args.png
    if args.npy:
        import numpy as np

        np.save(args.npy, imgs)
        results["npy"] = args.npy
    rep = model.privacy_report()
    results["privacy"] = rep.to_dict() | {"summary": rep.summary()}
    _print(results, args.json)
    return 0
