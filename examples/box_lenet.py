"""A LeNet-style CNN run encrypted with box-filter and with spatial convolution, same weights.

Train Conv2d -> x² -> AvgPool2d -> Conv2d -> x² -> AvgPool2d -> Flatten -> Linear (Fashion-MNIST
when the Debian package ``dataset-fashion-mnist`` is installed, else a labelled synthetic set),
swap the first convolution for a ``BoxConv2d`` with :func:`privkit.nn.replace_conv_with_box`
(the compiler runs box convolutions on unit-gap layouts: before any stride or pool), compile both
models (the box one also with ``input_sat``: the client sends summed-area tables) and run the
same encrypted images through each: latency, plaintext-ciphertext multiplications, rotations and
agreement with the plaintext models.

    python examples/box_lenet.py             # real CKKS, 4 images
    python examples/box_lenet.py --smoke     # seconds: small images, simulator

The full measurement is ``bench/box_cnn.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import image_cnns as ic  # examples/image_cnns.py (next to this script)
import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--tol", type=float, default=0.1, help="relative kernel error of the box fit")
    ap.add_argument("--backend", default="seal", choices=["seal", "sim"])
    ap.add_argument("--smoke", action="store_true", help="16x16 synthetic images, simulator, 1 image")
    args = ap.parse_args(argv)
    size = 28
    if args.smoke:
        args.images, args.epochs, args.backend, size = 1, 1, "sim", 16
        train, test = ic.synthetic_images(300, size=size, seed=0), ic.synthetic_images(20, size=size, seed=1)
        print("smoke: SYNTHETIC 16x16 images")
    else:
        train, test = ic.load_images("train", 20000), ic.load_images("test", None)
        if train.name == "synthetic":
            print("NOTE: Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist): SYNTHETIC images")
    torch.manual_seed(0)
    kernel = 3 if args.smoke else 5
    spatial = ic.lenet((2, 4) if args.smoke else (4, 8), kernel, hidden=None, size=size)
    ic.train_classifier(spatial, train.images, train.labels, epochs=args.epochs)
    box, report = ic.box_first_conv(spatial, tol=args.tol)
    box = ic.as_privkit_layers(box)
    print(report.table())
    x = test.images[: args.images]
    ok = True
    rows = []
    for name, model, in_sat in (("spatial", spatial, False), ("box", box, False), ("box+inSAT", box, True)):
        with torch.no_grad():
            ref = model.double()(torch.as_tensor(x, dtype=torch.float64)).numpy()
        res = ic.run_encrypted(model, x, backend=args.backend, input_sat=in_sat)
        agree = float((res["logits"].argmax(1) == ref.argmax(1)).mean())
        err = float(np.abs(res["logits"] - ref).max())
        ok &= agree == 1.0
        acc = ic.accuracy(model.float(), test.images, test.labels)
        rows.append((name, statistics.median(res["seconds"]), res["counts"]["pt_mults"],
                     res["counts"]["rotations"], res["program"].depth, acc, agree, err))
    print(f"{'conv':<9}{'s/img':>8}{'pt*ct':>7}{'rots':>6}{'levels':>7}{'plain acc':>10}{'agree':>7}{'max err':>10}"
          f"   [{args.backend}{': SIMULATED, times are not CKKS times' if args.backend == 'sim' else ''}]")
    for r in rows:
        print(f"{r[0]:<9}{r[1]:>8.3f}{r[2]:>7}{r[3]:>6}{r[4]:>7}{r[5]:>10.1%}{r[6]:>7.0%}{r[7]:>10.2e}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
