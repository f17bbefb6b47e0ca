"""A small 3-D CNN with box-filter convolution (``BoxConv3d``) on synthetic volumes, encrypted.

Synthetic volumes (NOT real data): class 0 holds a bright blob in the upper half of the volume,
class 1 in the lower half, plus noise. A Conv3d -> x² -> AvgPool3d -> Flatten -> Linear model is
trained, its convolution replaced by a ``BoxConv3d`` (``replace_conv_with_box``), compiled with
``privkit.fhe.compile`` and run on encrypted volumes; the decrypted logits are compared with the
plaintext box model.

    python examples/box_cnn3d.py             # real CKKS
    python examples/box_cnn3d.py --smoke     # seconds: simulator
"""

from __future__ import annotations

import argparse
import sys

import image_cnns as ic  # examples/image_cnns.py (next to this script)
import numpy as np
import torch
from torch import nn

from privkit import nn as pnn
from privkit.nn import replace_conv_with_box


def volumes(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    g = np.stack(np.mgrid[0:size, 0:size, 0:size], -1) / (size - 1)
    x = np.empty((n, 1, size, size, size), np.float32)
    for i, c in enumerate(y):
        centre = np.array([0.25 + 0.5 * c, *rng.uniform(0.3, 0.7, 2)])
        x[i, 0] = np.exp(-((g - centre) ** 2).sum(-1) / 0.03) + 0.2 * rng.standard_normal((size,) * 3)
    return x, y.astype(np.int64)


def model3d(size: int, channels: int = 2, kernel: int = 3) -> nn.Sequential:
    s = (size - kernel + 1) // 2
    return nn.Sequential(pnn.Conv3d(1, channels, kernel), pnn.Square(), pnn.AvgPool3d(2), pnn.Flatten(),
                         pnn.Linear(channels * s ** 3, 2))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=8, help="volume edge (voxels)")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--tol", type=float, default=0.1)
    ap.add_argument("--backend", default="seal", choices=["seal", "sim"])
    ap.add_argument("--smoke", action="store_true", help="6^3 volumes, simulator, 2 volumes")
    args = ap.parse_args(argv)
    if args.smoke:
        args.size, args.images, args.backend = 6, 2, "sim"
    print(f"SYNTHETIC {args.size}^3 volumes (a blob in the upper or lower half)")
    xtr, ytr = volumes(400, args.size, 0)
    xte, yte = volumes(100, args.size, 1)
    torch.manual_seed(0)
    spatial = model3d(args.size)
    ic.train_classifier(spatial, xtr, ytr, epochs=3 if args.smoke else 10, lr=3e-3)
    box, report = replace_conv_with_box(spatial, tol=args.tol)
    box = ic.as_privkit_layers(box)
    print(report.table())
    print(f"plaintext accuracy: spatial {ic.accuracy(spatial, xte, yte):.1%}, box {ic.accuracy(box, xte, yte):.1%}")
    x = xte[: args.images]
    with torch.no_grad():
        ref = box.double()(torch.as_tensor(x, dtype=torch.float64)).numpy()
    res = ic.run_encrypted(box, x, backend=args.backend)
    print(res["program"].plan_table())
    agree = float((res["logits"].argmax(1) == ref.argmax(1)).mean())
    err = float(np.abs(res["logits"] - ref).max())
    print(f"{args.images} encrypted volumes ({args.backend}{', SIMULATED' if args.backend == 'sim' else ''}): "
          f"ops {res['counts']}, agreement with plaintext {agree:.0%}, max logit error {err:.2e}")
    return 0 if agree == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
