"""Several ciphertexts at a small ring vs one ciphertext at a large ring, and what ``auto`` picks.

A Fashion-MNIST CNN ``Conv2d(1, C, 3, padding=1) -> x² -> AvgPool2d(2) -> Flatten -> Linear(., 10)``
has ``C x 28 x 28`` activations in channel blocks of 1024 slots: with ``C = 16`` they need 16384
slots, more than one ciphertext holds below N=32768 (the single-ciphertext compiler needed the
largest ring); with ``C = 32`` (``--channels 32``) no ring holds them in one ciphertext.
The model is trained briefly, then compiled

* with several ciphertexts at every smaller ring that holds its depth (N=8192: 4096 slots,
  4 channels per ciphertext; N=16384: 8 channels per ciphertext);
* with ONE ciphertext at the smallest ring that holds it (``max_ciphertexts=1``), when one does;
* with ``params="auto"`` (the cost model of ``privkit.fhe.compiler.cost`` picks),

and every program runs the same test images on SEAL: latency per image (median), operation
counts, the model's estimate, predicted-class agreement and max logit error vs the plaintext
model, in one run.

    python bench/multi_ct.py                 # 8 images, real CKKS (SEAL)
    python bench/multi_ct.py --smoke         # 2 images, short training
    python bench/multi_ct.py --backend sim   # simulator (counts exact, times not)

Data: Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (never downloaded); when it
is absent the run says so and uses a SYNTHETIC labelled set.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]

import image_cnns as ic  # noqa: E402

from privkit import fhe  # noqa: E402
from privkit import nn as pnn  # noqa: E402
from privkit.errors import DepthExhaustedError, ShapeError  # noqa: E402
from privkit.fhe.compiler.cost import estimate_seconds  # noqa: E402


def wide_cnn(channels: int) -> torch.nn.Sequential:
    return torch.nn.Sequential(pnn.Conv2d(1, channels, 3, padding=1), pnn.Square(), pnn.AvgPool2d(2),
                               pnn.Flatten(), pnn.Linear(channels * 14 * 14, 10, method="bsgs"))


def run(label: str, program, images: np.ndarray, plain: np.ndarray, backend: str) -> dict:
    est, _ = estimate_seconds(program)
    r = ic.run_program(program, images, backend=backend)
    logits, secs, counts = r["logits"], r["seconds"], r["counts"]
    return {"label": label, "N": program.params.poly_degree, "cts": program.ciphertexts,
            "keys": len(program.rotations), "median_s": statistics.median(secs), "est_s": est,
            "agree": float((logits.argmax(1) == plain.argmax(1)).mean()),
            "max_err": float(np.abs(logits - plain).max()), **counts}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--train", type=int, default=6000, help="training images (one epoch)")
    ap.add_argument("--backend", default="seal", choices=["seal", "sim"])
    ap.add_argument("--smoke", action="store_true", help="2 images, 1000 training images")
    args = ap.parse_args(argv)
    if args.smoke:
        args.images, args.train = 2, 1000
    print("command: python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]))
    train, test = ic.load_train_test(args.train, args.images)
    model = wide_cnn(args.channels)
    ic.train_classifier(model, train.images, train.labels, epochs=1)
    print(f"data: {train.name}; plaintext accuracy on {len(test.labels)} test images: "
          f"{ic.accuracy(model, test.images, test.labels):.3f}")
    with torch.no_grad():
        plain = model.double()(torch.as_tensor(test.images, dtype=torch.float64)).numpy()
    shape = tuple(test.images.shape[1:])

    def compiled(**kw):
        prog = fhe.compile(model, shape, **kw)
        prog.calibrate_input(train.images[:256])
        return prog

    configs = []
    for preset in ("n8192", "n16384", "n32768"):
        try:
            prog = compiled(params=preset)
        except (ShapeError, DepthExhaustedError) as e:
            print(f"{preset}: does not compile: {e}")
            continue
        if prog.multi:
            configs.append((f"{prog.ciphertexts} cts @ {preset}", prog))
    for preset in ("n8192", "n16384", "n32768"):
        try:
            configs.append((f"1 ct @ {preset}", compiled(params=preset, max_ciphertexts=1)))
            break
        except (ShapeError, DepthExhaustedError):
            continue
    else:
        print("one ciphertext: no preset holds the model")
    auto = compiled(params="auto")
    print(f"auto: {auto.choice or 'one option only'}")
    rows = [run(label, prog, test.images, plain, args.backend) for label, prog in configs]
    head = (f"{'packing':<18}{'N':>7}{'cts':>5}{'keys':>6}{'rots':>7}{'pt*ct':>7}{'ct*ct':>7}"
            f"{'median s':>10}{'est. s':>9}{'agree':>7}{'max|err|':>10}")
    print(f"backend: {args.backend}; {len(test.labels)} images; C={args.channels}")
    print(head)
    for r in rows:
        print(f"{r['label']:<18}{r['N']:>7}{r['cts']:>5}{r['keys']:>6}{r['rotations']:>7}{r['pt_mults']:>7}"
              f"{r['ct_mults']:>7}{r['median_s']:>10.3f}{r['est_s']:>9.3f}{r['agree']:>7.2f}{r['max_err']:>10.2e}")
    fastest = min(rows, key=lambda r: r["median_s"])
    picked = f"{auto.ciphertexts} cts @ {auto.params.name}" if auto.multi else f"1 ct @ {auto.params.name}"
    print(f"auto picked: {picked}; measured fastest: {fastest['label']}"
          f" -> the cost model chose {'RIGHT' if fastest['label'] == picked else 'WRONG'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
