"""Apnea detector v2 side by side: privkit v2 (plaintext and encrypted), the v1 default and an
unconstrained plaintext ReLU CNN, trained on the same synthetic windows, tested on unseen subjects.

Run:  python bench/apnea_v2.py [--train 1200] [--test 400] [--encrypted 200] [--seeds 0,1,2,3,4]

* v2: ``ApneaDetector(arch="v2")`` (3 conv blocks, trainable per-channel quadratic, average
  pools, global average pool, linear 4->2; subject-held-out early stopping, best of 5 restarts).
* v1: ``ApneaDetector(arch="v1")`` (the previous default: PolyReLU degree 3, 2 blocks, flatten + linear).
* ReLU CNN: Conv 16/32/32 channels, BatchNorm, ReLU, max pooling, global average pool; 20 epochs
  of AdamW with a cosine decay (plaintext only: it has no encrypted form at this depth).
* Encrypted: real CKKS (SEAL, N=16384, 128-bit) on the first ``--encrypted`` test windows, one
  window per ciphertext; agreement with the plaintext v2 and latency per window (server run only);
  v1 on ``--v1-encrypted`` windows for its latency.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

from privkit.apps.apnea import ApneaDetector, binary_metrics
from privkit.data.ecg import synthetic_ecg


def relu_cnn(seed: int) -> torch.nn.Module:
    nn = torch.nn
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv1d(1, 16, 16, stride=4), nn.BatchNorm1d(16), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(16, 32, 8, stride=2), nn.BatchNorm1d(32), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(32, 32, 8, stride=2), nn.BatchNorm1d(32), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(32, 2))


def train_relu(train, seed: int, epochs: int = 20) -> torch.nn.Module:
    m = relu_cnn(seed)
    opt = torch.optim.AdamW(m.parameters(), 3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs, eta_min=3e-5)
    xt, yt = torch.from_numpy(train.x)[:, None], torch.from_numpy(train.y)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        m.train()
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(xt[idx]), yt[idx]).backward()
            opt.step()
        sched.step()
    return m.eval()


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=1200)
    ap.add_argument("--test", type=int, default=400)
    ap.add_argument("--encrypted", type=int, default=200, help="test windows run under SEAL (0: none)")
    ap.add_argument("--v1-encrypted", type=int, default=10, help="test windows of v1 run under SEAL (latency)")
    ap.add_argument("--effect", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", default="", help="e.g. 0,1,2,3,4: plaintext v2 accuracy spread")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("command: python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]))
    print(f"machine: {os.cpu_count()} cores; torch and SEAL single-threaded")
    train = synthetic_ecg(args.train, seed=args.seed, effect=args.effect)
    test = synthetic_ecg(args.test, seed=args.seed + 1, effect=args.effect)  # unseen subjects
    print(f"data: {args.train} training windows, {args.test} test windows of unseen subjects (effect {args.effect})")
    rows = []

    t = time.perf_counter()
    v2 = ApneaDetector(arch="v2", seed=args.seed).fit(train, progress=False)
    v2_s = time.perf_counter() - t
    p2 = v2.compile()
    m2 = v2.evaluate(test)
    rows.append(("privkit v2, plaintext", m2, n_params(v2.model), p2.depth, f"{v2_s:.0f} s"))
    t = time.perf_counter()
    v1 = ApneaDetector(arch="v1", seed=args.seed).fit(train, progress=False)
    v1_s = time.perf_counter() - t
    p1 = v1.compile()
    rows.append(("privkit v1 (previous default), plaintext", v1.evaluate(test), n_params(v1.model), p1.depth, f"{v1_s:.0f} s"))
    t = time.perf_counter()
    relu = train_relu(train, args.seed)
    relu_s = time.perf_counter() - t
    with torch.no_grad():
        rp = relu(torch.from_numpy(test.x)[:, None]).argmax(1).numpy()
    mr = binary_metrics(test.y, rp)
    rows.append(("ReLU CNN 16/32/32 (plaintext only)", mr, n_params(relu), None, f"{relu_s:.0f} s"))

    print("\n" + p2.plan_table())
    print(f"v2 program: {p2}")
    enc_line = None
    if args.encrypted > 0:
        n = min(args.encrypted, len(test.x))
        keys = p2.keygen()
        bundle = keys.public_bundle()
        plain = v2.logits(test.x[:n])
        enc, lat = [], []
        for i, row in enumerate(test.x[:n]):
            ct = p2.encrypt_input(keys, row)
            t = time.perf_counter()
            out = p2.run(ct, bundle, backend=bundle.backend)
            lat.append(time.perf_counter() - t)
            enc.append(p2.decrypt_output(keys, out))
            if (i + 1) % 25 == 0:
                e = np.array(enc)
                print(f"  {i + 1} windows: agreement {np.mean(e.argmax(1) == plain[: i + 1].argmax(1)) * 100:.1f}%, "
                      f"median latency {np.median(lat):.2f} s", flush=True)
        enc = np.array(enc)
        agree = np.mean(enc.argmax(1) == plain.argmax(1))
        me = binary_metrics(test.y[:n], enc.argmax(1))
        mp = binary_metrics(test.y[:n], plain.argmax(1))
        rows.append((f"privkit v2, encrypted ({n} windows)", me, n_params(v2.model), p2.depth,
                     f"{np.median(lat):.2f} s/window"))
        enc_line = (f"encrypted vs plaintext v2 on {n} windows: agreement {agree * 100:.2f}% "
                    f"({int(round(agree * n))}/{n}), max |logit error| {np.abs(enc - plain).max():.2e}, "
                    f"plaintext accuracy on the same windows {mp['accuracy']:.4f}; latency median "
                    f"{np.median(lat):.2f} s, max {np.max(lat):.2f} s per window ({p2.params.describe()})")

    if args.v1_encrypted > 0:
        n1 = min(args.v1_encrypted, len(test.x))
        enc1, info1 = v1.predict_encrypted(test.x[:n1])
        agree1 = np.mean(enc1.argmax(1) == v1.logits(test.x[:n1]).argmax(1))
        rows.append((f"privkit v1, encrypted ({n1} windows)", binary_metrics(test.y[:n1], enc1.argmax(1)),
                     n_params(v1.model), p1.depth, f"{np.median(info1['latency_s']):.2f} s/window"))
        print(f"v1 encrypted vs plaintext on {n1} windows: agreement {agree1 * 100:.1f}%, median latency "
              f"{np.median(info1['latency_s']):.2f} s per window ({p1.params.describe()})")
    print(f"\n{'model':<38}{'accuracy':>9}{'sens':>7}{'spec':>7}{'params':>8}{'depth':>7}  time")
    for name, m, npar, depth, tm in rows:
        print(f"{name:<38}{m['accuracy']:>9.4f}{m['sensitivity']:>7.3f}{m['specificity']:>7.3f}{npar:>8}"
              f"{'-' if depth is None else depth:>7}  {tm}")
    print(f"v2 / ReLU CNN accuracy (plaintext): {m2['accuracy'] / mr['accuracy'] * 100:.1f}% (target >= 98%)")
    if enc_line:
        print(enc_line)
    if args.seeds:
        accs = []
        for s in (int(v) for v in args.seeds.split(",")):
            acc = ApneaDetector(arch="v2", seed=s).fit(train, progress=False).evaluate(test)["accuracy"]
            racc = binary_metrics(test.y, train_relu(train, s)(torch.from_numpy(test.x)[:, None]).argmax(1).numpy())["accuracy"]
            accs.append((s, acc, racc))
            print(f"seed {s}: v2 plaintext {acc:.4f}, ReLU CNN {racc:.4f}", flush=True)
        a = np.array([v for _, v, _ in accs])
        r = np.array([v for _, _, v in accs])
        print(f"v2 over seeds {args.seeds}: mean {a.mean():.4f}, min {a.min():.4f}, max {a.max():.4f}; "
              f"ReLU CNN mean {r.mean():.4f}, min {r.min():.4f}, max {r.max():.4f}")


if __name__ == "__main__":
    main()
