"""Benchmark: distributed DP-SGD (make_private(distributed=True)) on 1 vs 2 local processes.

Same global batch (``--batch``) and data: steps per second and epsilon of a DP-SGD run of
``--steps`` steps on an MLP over synthetic data, in one process and in 2 gloo processes on
127.0.0.1 (CPU); then the noise check: the variance of the gradient after DP-SGD steps on a zero
loss (pure noise) in both settings against the theory (sigma * C / B)^2 per coordinate, B the
expected global batch. Noise added per rank instead of once would double the 2-process variance.

    python bench/dp_ddp.py [--steps 60] [--batch 256] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import time
import warnings

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

N, D_IN, HIDDEN, CLASSES, SIGMA, CLIP = 8192, 256, 512, 10, 1.1, 1.0


def _run(distributed: bool, steps: int, batch: int, zero_loss: bool) -> dict:
    from privkit.dp import make_private

    torch.manual_seed(0)
    x = torch.randn(N, D_IN)
    y = torch.randint(0, CLASSES, (N,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)
    model = nn.Sequential(nn.Linear(D_IN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES))
    opt = torch.optim.SGD(model.parameters(), lr=0.0 if zero_loss else 0.05)
    rank = torch.distributed.get_rank() if distributed else 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m, o, dl = tr = make_private(
            model, opt, loader, noise_multiplier=SIGMA, max_grad_norm=CLIP, delta=1e-5,
            distributed=distributed, noise_generator=torch.Generator().manual_seed(7 + rank))
        done, t0, grads = 0, None, []
        while done < steps:
            for xb, yb in dl:
                if done == 3:
                    t0 = time.perf_counter()  # after warm-up
                o.zero_grad()
                out = m(xb)
                loss = 0.0 * out.sum() if zero_loss else nn.functional.cross_entropy(out, yb)
                loss.backward()
                o.step()
                if zero_loss:
                    grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
                done += 1
                if done == steps:
                    break
        wall = time.perf_counter() - t0
    res = {"steps_per_s": (steps - 3) / wall, "epsilon": tr.get_epsilon(), "steps": tr.steps,
           "history": [list(h) for h in tr.history]}
    if zero_loss:
        g = torch.stack(grads).double()
        res["noise_var"] = float(g.var())
        res["n_values"] = g.numel()
    return res


def _worker(rank: int, world: int, port: int, out: str, steps: int, batch: int) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                         rank=rank, world_size=world)
    try:
        res = {"train": _run(True, steps, batch, False), "noise": _run(True, 20, batch, True)}
        if rank == 0:
            with open(out, "w") as f:
                json.dump(res, f)
    finally:
        torch.distributed.destroy_process_group()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=256, help="global batch (expected)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import torch.multiprocessing as mp

    torch.set_num_threads(1)
    print(f"# command: python bench/dp_ddp.py {' '.join(sys.argv[1:])}")
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, 1 thread per process; MLP {D_IN}-{HIDDEN}-{CLASSES}, "
          f"N={N}, global batch {args.batch}, sigma {SIGMA}, clip {CLIP}, fast clipping")
    one = {"train": _run(False, args.steps, args.batch, False),
           "noise": _run(False, 20, args.batch, True)}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rank0.json")
        mp.spawn(_worker, args=(2, port, out, args.steps, args.batch), nprocs=2, join=True)
        with open(out) as f:
            two = json.load(f)
    expected = (SIGMA * CLIP / args.batch) ** 2
    print(f"{'processes':>9s} {'steps/s':>8s} {'epsilon':>8s} {'steps':>6s} "
          f"{'noise var / theory':>19s} {'(+- 3 sd)':>10s}")
    rows = []
    for n, r in ((1, one), (2, two)):
        ratio = r["noise"]["noise_var"] / expected
        sd = (2 / r["noise"]["n_values"]) ** 0.5
        print(f"{n:9d} {r['train']['steps_per_s']:8.2f} {r['train']['epsilon']:8.4f} "
              f"{r['train']['steps']:6d} {ratio:19.4f} {3 * sd:10.4f}")
        rows.append({"processes": n, **r["train"], "noise_var": r["noise"]["noise_var"],
                     "noise_var_theory": expected, "ratio": ratio})
    same_eps = abs(one["train"]["epsilon"] - two["train"]["epsilon"]) <= 1e-9 * one["train"]["epsilon"]
    print(f"same epsilon: {same_eps}; same history: "
          f"{one['train']['history'] == two['train']['history']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
