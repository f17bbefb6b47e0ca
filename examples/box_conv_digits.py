"""Replace every convolution of a small CNN by box convolutions and report the accuracy change.

The paper's Table 2 ("Efficient Convolution Operator in FHE Using Summed Area Table"): train a
CNN, approximate each kernel by box filters (greedy boxes + least-squares scales), and compare
test accuracy and multiplications. Here: scikit-learn's 8x8 digits (bundled, no download), a
CNN with a 5x5 and a 3x3 convolution, tolerances 1% / 5% / 20% kernel error, and optionally a
short fine-tuning of the box scales (the boxes stay fixed, ``alpha`` trains). Finally one test
image goes through the first box layer encrypted (simulator by default, ``--seal`` for real CKKS)
to show that the encrypted layer computes what the torch layer computes.

    python examples/box_conv_digits.py            # full run (~1 min on 2 CPU cores)
    python examples/box_conv_digits.py --smoke    # tiny run for CI (< 60 s)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from privkit.fhe import KeySet
from privkit.fhe.ops import sat as cs
from privkit.nn.box import replace_conv_with_box


def make_model() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 5, padding=2),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 10),
    )


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def train(model: nn.Module, x, y, epochs: int, lr: float = 3e-3, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny run (CI)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--finetune", type=int, default=3, help="epochs of box-scale fine-tuning (0: none)")
    ap.add_argument("--seal", action="store_true", help="run the encrypted check with real CKKS (SEAL)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32)[:, None]
    y = torch.tensor(d.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n_test = 360
    xt, yt, xs, ys = x[perm[n_test:]], y[perm[n_test:]], x[perm[:n_test]], y[perm[:n_test]]
    if args.smoke:  # a subset keeps CI under a minute even on a busy machine
        xt, yt = xt[:400], yt[:400]
    epochs = 2 if args.smoke else args.epochs
    finetune = min(args.finetune, 1) if args.smoke else args.finetune
    tols = [0.05] if args.smoke else [0.01, 0.05, 0.2]

    model = make_model()
    train(model, xt, yt, epochs)
    base = accuracy(model, xs, ys)
    print(f"digits: {len(xt)} train / {len(xs)} test images, CNN conv 5x5 (1->8) + conv 3x3 (8->16), {epochs} epochs")
    print(f"\n{'model':<28}{'test acc':>9}{'change':>9}{'mults/out':>11}{'saved':>8}{'mean kernel err':>17}")
    print(f"{'spatial convolutions':<28}{base:>9.2%}{'':>9}{sum(m.weight[0].numel() * m.out_channels for m in model if isinstance(m, nn.Conv2d)):>11}")
    boxed_model = None
    for tol in tols:
        boxed, rep = replace_conv_with_box(model, tol=tol)
        acc = accuracy(boxed, xs, ys)
        bm, sm = rep.multiplications
        err = np.mean([r["mean_error"] for r in rep.rows])
        print(f"{f'box convs, tol {tol:.0%}':<28}{acc:>9.2%}{acc - base:>+9.2%}{bm:>11}{1 - bm / sm:>8.1%}{err:>17.2%}")
        if finetune:
            train(boxed, xt, yt, finetune, lr=1e-3, seed=1)  # trains the scales, boxes fixed
            acc2 = accuracy(boxed, xs, ys)
            print(f"{f'  + {finetune} epoch(s) scale tuning':<28}{acc2:>9.2%}{acc2 - base:>+9.2%}{bm:>11}{1 - bm / sm:>8.1%}")
        boxed_model = boxed_model or boxed
    print("\nper layer (first tolerance):")
    print(replace_conv_with_box(model, tol=tols[0])[1].table())

    # the first box layer, encrypted, on one test image
    layer = boxed_model[0]
    img = xs[0, 0].double().numpy()
    geo = cs.sat_geometry(img.shape, layer.kernel_size, layer.stride, layer.padding)
    grid = layer.boxsets()
    keys = KeySet.generate("n8192", backend="seal" if args.seal else "sim",
                           rotations=cs.required_rotations(grid, img.shape, layer.stride, layer.padding))
    keys.backend.counter.reset()
    outs = layer.forward_encrypted(keys.backend, keys.encrypt(geo.pack(img)), img.shape, section="box_conv1")
    got = np.array([geo.unpack(keys.decrypt(o)) for o in outs])
    with torch.no_grad():
        want = layer(xs[:1])[0].double().numpy()
    kind = "SEAL (real CKKS)" if args.seal else "simulator (not encryption)"
    print(f"\nencrypted first layer ({kind}, SIMD layout): max |encrypted - torch| = {np.abs(got - want).max():.2e}")
    print(keys.backend.counter.table(["box_conv1"]))
    print(f"\ndone in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
