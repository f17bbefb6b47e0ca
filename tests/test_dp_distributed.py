"""Distributed DP-SGD (make_private(distributed=True)) on 2 gloo processes on 127.0.0.1.

Checked against one process with the same global batch:
* the same epsilon (one accountant history with the global sample rate);
* the same noise variance on the summed gradient, measured on zero gradients: noise added once
  per step in total, not once per rank. With P parameters and K steps the sample variance of the
  n = P * K noise values has relative standard deviation sqrt(2 / n) (~0.5% here); the tolerance
  is 6%, so a per-rank noise bug (+100%) or missing noise (-100%) fails and chance does not.
"""

from __future__ import annotations

import json
import os
import socket
import warnings

import pytest
import torch
from torch import nn

N, BATCH, P_IN, P_OUT, STEPS, SIGMA, CLIP = 512, 64, 200, 50, 8, 1.3, 0.7


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _zero_grad_run(distributed: bool, grad_sample_mode: str):
    """K steps of DP-SGD on a zero loss: the gradient after each step is pure noise."""
    from privkit.dp import make_private

    torch.manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(N, P_IN))
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH)
    model = nn.Linear(P_IN, P_OUT)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    rank = torch.distributed.get_rank() if distributed else 0
    gen = torch.Generator().manual_seed(1000 + rank)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr = make_private(model, opt, loader, noise_multiplier=SIGMA, max_grad_norm=CLIP,
                          delta=1e-5, distributed=distributed, grad_sample_mode=grad_sample_mode,
                          noise_generator=gen, accountant="rdp")
        m, o, dl = tr
        grads, batches = [], []
        while len(grads) < STEPS:
            for (xb,) in dl:
                o.zero_grad()
                (0.0 * m(xb).sum()).backward()
                o.step()
                grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone())
                batches.append(len(xb))
                if len(grads) == STEPS:
                    break
    g = torch.stack(grads)
    return {
        "var": float(g.double().var()), "mean": float(g.double().mean()),
        "first": g[0, :5].tolist(), "history": [list(h) for h in tr.history],
        "epsilon": tr.get_epsilon(), "batches": batches,
        "sampler": type(dl.batch_sampler).__name__, "world_size": tr.world_size,
    }


def _worker(rank: int, world: int, port: int, out_dir: str, mode: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        res = _zero_grad_run(True, mode)
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(res, f)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("mode", ["fast", pytest.param("hooks", marks=pytest.mark.slow)])
def test_two_processes_same_epsilon_and_noise_variance_as_one(tmp_path, mode):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), mode), nprocs=2, join=True)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    one = _zero_grad_run(False, mode)

    # sampling: Poisson per rank over its shard, at the global rate
    assert r0["sampler"] == "DistributedUniformWithReplacementSampler"
    assert r0["world_size"] == 2
    # one accountant history with the global sample rate 1/len(loader) = BATCH/N
    assert r0["history"] == r1["history"] == one["history"] == [[SIGMA, BATCH / N, STEPS]]
    assert r0["epsilon"] == pytest.approx(one["epsilon"], rel=1e-12)
    # after the all-reduce every rank holds the same (noisy) gradient
    assert r0["first"] == pytest.approx(r1["first"], abs=1e-7)
    # noise on the gradient: std sigma * C / B per coordinate, with B the expected global batch
    expected = (SIGMA * CLIP / BATCH) ** 2
    for res in (r0, one):
        assert res["var"] == pytest.approx(expected, rel=0.06), (res["var"], expected)
        assert abs(res["mean"]) < 5 * (expected / (STEPS * (P_IN + 1) * P_OUT)) ** 0.5
    # the local batches are about half the global one
    local = sum(r0["batches"]) / len(r0["batches"])
    assert 0.3 * BATCH < local < 0.7 * BATCH


def test_distributed_without_process_group_is_a_typed_error():
    from privkit.dp import make_private
    from privkit.errors import ParameterError

    model = nn.Linear(2, 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)),
                                         batch_size=4)
    with pytest.raises(ParameterError, match="torchrun"):
        make_private(model, torch.optim.SGD(model.parameters(), lr=0.1), loader,
                     noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-3, distributed=True)


@pytest.mark.slow
def test_svae_train_nproc_2_launches_torchrun(tmp_path):
    """`privkit svae train --nproc 2` runs distributed DP-SGD under torchrun (gloo, CPU)."""
    import subprocess
    import sys

    out = tmp_path / "m.pt"
    cmd = [sys.executable, "-m", "privkit.cli", "svae", "train", "--dataset", "digits",
           "--image-size", "8", "--widths", "4,8", "--latent", "4", "--steps", "2", "--k", "4",
           "--epochs", "1", "--batch-size", "64", "--limit", "256", "--dp",
           "--noise-multiplier", "1.0", "--nproc", "2", "--out", str(out), "--no-progress",
           "--json"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=root, env=env,
                         check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout)
    assert report["privacy"]["details"]["world_size"] == 2
    assert report["steps"] == 4 and report["privacy"]["sample_rate"] == 0.25
    assert out.exists()
