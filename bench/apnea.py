"""Encrypted apnea detection: agreement, errors, latency, memory, amortised latency, accuracy.

Run:  python bench/apnea.py [--windows 200] [--train 1200] [--epochs 12] [--batch 2]
                            [--data-dir ucddb:/path | apnea-ecg:/path]

1. Trains the default ApneaDetector on synthetic ECG (approximations in the loop).
2. Runs real CKKS (SEAL) inference on ``--windows`` held-out windows: agreement of encrypted and
   plaintext predictions, max / mean logit error, latency per window, peak memory.
3. Per-layer mean absolute error on one window beside the ECG paper's per-layer MAE.
4. Amortised latency with ``--batch`` windows packed into one ciphertext (a larger preset).
5. Accuracy / sensitivity / specificity of the plaintext and the encrypted predictions.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np
import torch

from privkit.apps.apnea import ApneaDetector, binary_metrics
from privkit.data.ecg import load_ecg_dataset, synthetic_ecg
from privkit.fhe.compiler import compile as fhe_compile

PAPER = {
    "per_layer_mae": "0.010 / 0.102 / 0.011 / 0 (conv blocks 1-3, FC)",
    "latency": "14,571 s per encrypted inference, 128 threads (HEAAN)",
    "metrics": "accuracy 99.50%, sensitivity 97.10%, specificity 99.10% (UCDDB)",
}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=200, help="held-out windows run encrypted")
    ap.add_argument("--train", type=int, default=1200, help="synthetic training windows")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=2, help="windows per ciphertext for the amortised run")
    ap.add_argument("--data-dir", default=None, help="ucddb:DIR or apnea-ecg:DIR: also report real data")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--effect", type=float, default=2.0, help="synthetic apnea-pattern strength")
    ap.add_argument("--skip-single", action="store_true", help="only the amortised (batched) run")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("command: python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]))
    print(f"machine: {os.cpu_count()} cores; SEAL single-threaded")

    train = synthetic_ecg(args.train, seed=args.seed, effect=args.effect)
    test = synthetic_ecg(args.windows, seed=args.seed + 1, effect=args.effect)  # unseen subjects
    t = time.perf_counter()
    det = ApneaDetector(arch="v1", epochs=args.epochs, seed=args.seed).fit(train, progress=False)
    print(f"\ntraining: {args.train} synthetic windows (effect {args.effect}), test: {args.windows} "
          f"windows of unseen subjects; {args.epochs}+{det.config.finetune_epochs} epochs, "
          f"{time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    program = det.compile()
    print(f"compile: {time.perf_counter() - t:.2f} s; {program}")
    print(program.plan_table())

    plain = det.logits(test.x)
    if not args.skip_single:
        single(args, det, program, test, plain)
    if args.batch > 1:
        amortised(args, det, test, plain)
    if args.data_dir:
        print(f"\n## Real data: {args.data_dir}")
        real = load_ecg_dataset(args.data_dir)
        print(det.evaluate(real))


def single(args, det, program, test, plain) -> None:
    t = time.perf_counter()
    keys = program.keygen()
    keygen_s = time.perf_counter() - t
    bundle = keys.public_bundle()
    bundle_bytes = len(bundle.to_bytes())
    server = bundle.backend
    enc, lat = [], []
    for row in test.x:
        ct = program.encrypt_input(keys, row)
        t = time.perf_counter()
        out = program.run(ct, bundle, backend=server)
        lat.append(time.perf_counter() - t)
        enc.append(program.decrypt_output(keys, out))
    enc = np.array(enc)
    err = np.abs(enc - plain)
    agree = np.mean(enc.argmax(1) == plain.argmax(1))
    ct_bytes = len(program.encrypt_input(keys, test.x[0]).to_bytes())
    print(f"\n## Encrypted inference, {len(test.x)} held-out windows, {program.params.describe()}")
    print(f"{'agreement (encrypted vs plaintext)':<40}{agree * 100:.2f}% ({int(agree * len(test.x))}/{len(test.x)})")
    print(f"{'max |logit error|':<40}{err.max():.3e}")
    print(f"{'mean |logit error|':<40}{err.mean():.3e}")
    print(f"{'smallest plaintext logit margin':<40}{np.abs(plain[:, 1] - plain[:, 0]).min():.3e}")
    print(f"{'latency per window: median / max':<40}{np.median(lat):.2f} s / {np.max(lat):.2f} s")
    print(f"{'key generation':<40}{keygen_s:.1f} s ({len(program.rotations)} Galois keys)")
    print(f"{'public bundle / input ciphertext':<40}{bundle_bytes / 2**20:.1f} MiB / {ct_bytes / 2**20:.2f} MiB")
    print(f"{'peak memory (RSS) so far':<40}{rss_mb():.0f} MiB")
    print(f"paper: {PAPER['latency']}")

    program.trace(keys, test.x[0])
    print("\n## Per-layer error on one window (decrypted activation vs torch forward)")
    print(program.report())
    print(f"paper per-layer MAE: {PAPER['per_layer_mae']}")

    print("\n## Accuracy on synthetic held-out windows")
    pm = binary_metrics(test.y, plain.argmax(1))
    em = binary_metrics(test.y, enc.argmax(1))
    for name, m in (("plaintext", pm), ("encrypted", em)):
        print(f"{name:<12} accuracy {m['accuracy']:.4f}  sensitivity {m['sensitivity']:.4f}  "
              f"specificity {m['specificity']:.4f}  (n={m['n']})")
    print(f"paper (UCDDB): {PAPER['metrics']}")

    args.single_latency = float(np.median(lat))
    del keys, bundle, server  # free the key material before the larger batched key set


def amortised(args, det, test, plain) -> None:
    """Several windows in one ciphertext. N=32768 key sets are large (about 171 MB per Galois
    key), so the program runs on the client's own backend here: the same computation and
    latency as on a server, with one copy of the keys in memory instead of three."""
    print(f"\n## Amortised latency: {args.batch} windows per ciphertext")
    try:
        bprog = fhe_compile(det.model, input_shape=(1, det.config.window), params="auto", batch=args.batch)
    except Exception as e:  # report what does not fit, honestly
        print(f"batch {args.batch} does not fit: {e}")
        return
    t = time.perf_counter()
    bkeys = bprog.keygen()
    print(f"{bprog.params.describe()}; {len(bprog.rotations)} Galois keys generated in "
          f"{time.perf_counter() - t:.1f} s")
    blat, bagree = [], []
    nb = min(4, len(test.x) // args.batch)
    for j in range(nb):
        xs = test.x[j * args.batch : (j + 1) * args.batch]
        ct = bkeys.encrypt(bprog.encode_input(xs))
        t = time.perf_counter()
        out = bprog.run(ct, backend=bkeys.backend)
        blat.append(time.perf_counter() - t)
        logits = bprog.decrypt_output(bkeys, out)
        bagree.extend(logits.argmax(1) == plain[j * args.batch : (j + 1) * args.batch].argmax(1))
    med = float(np.median(blat))
    single = getattr(args, "single_latency", None)
    print(f"latency per ciphertext {med:.2f} s -> {med / args.batch:.2f} s per window"
          + (f" (single-window program at N=16384: {single:.2f} s)" if single else "")
          + f"; agreement {np.mean(bagree) * 100:.1f}% on {len(bagree)} windows; peak RSS {rss_mb():.0f} MiB")


if __name__ == "__main__":
    main()
