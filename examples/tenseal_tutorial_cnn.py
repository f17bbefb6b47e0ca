"""TenSEAL's tutorial CNN, trained and run encrypted with privkit, end to end.

Conv2d(1, 4, kernel 7, stride 3) -> x² -> Flatten -> Linear(256, 64) -> x² -> Linear(64, 10)
(the model of TenSEAL's "Encrypted Convolution on MNIST" tutorial), trained on Fashion-MNIST
when the Debian package ``dataset-fashion-mnist`` is installed (else on a clearly labelled
synthetic set), compiled with ``privkit.fhe.compile``, run on encrypted test images and compared
with the plaintext model (agreement of the classes, max logit error, accuracy).

    python examples/tenseal_tutorial_cnn.py                 # 3 epochs, 20 images, real CKKS
    python examples/tenseal_tutorial_cnn.py --smoke         # seconds: simulator, 2 images

The head-to-head with TenSEAL's own API on the same weights is ``bench/peer_tenseal.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import image_cnns as ic  # examples/image_cnns.py (next to this script)
import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train-limit", type=int, default=None)
    ap.add_argument("--backend", default="seal", choices=["seal", "sim"])
    ap.add_argument("--params", default="auto")
    ap.add_argument("--smoke", action="store_true", help="tiny run (simulator, 2 images, 500 training images)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.images, args.epochs, args.backend = 2, 1, "sim"
        args.train_limit = args.train_limit or 500
    train, test = ic.load_train_test(args.train_limit)
    torch.manual_seed(0)
    model = ic.tenseal_tutorial_model()
    ic.train_classifier(model, train.images, train.labels, epochs=args.epochs)
    x, y = test.images[: args.images], test.labels[: args.images]
    print(f"trained on {len(train)} {train.name} images; plaintext accuracy on {len(test)} test images: "
          f"{ic.accuracy(model, test.images, test.labels):.3f}")
    with torch.no_grad():
        ref = model.double()(torch.as_tensor(x, dtype=torch.float64)).numpy()
    t = time.perf_counter()
    res = ic.run_encrypted(model, x, params=args.params, backend=args.backend)
    prog = res["program"]
    print(f"compiled: {prog}")
    print(prog.plan_table())
    pred = res["logits"].argmax(1)
    agree = float((pred == ref.argmax(1)).mean())
    err = float(np.abs(res["logits"] - ref).max())
    print(f"{args.images} encrypted images ({args.backend}{', SIMULATED' if args.backend == 'sim' else ''}): "
          f"{statistics.median(res['seconds']):.3f} s per image (median server time), "
          f"ops per image {res['counts']}, total {time.perf_counter() - t:.1f} s")
    print(f"agreement with plaintext: {agree:.1%}, max logit error {err:.2e}, "
          f"accuracy plaintext {float((ref.argmax(1) == y).mean()):.1%} / encrypted {float((pred == y).mean()):.1%}")
    return 0 if agree == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
