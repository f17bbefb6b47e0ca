"""DP-SGD across ``torch.distributed`` ranks (``make_private(..., distributed=True)``).

The mechanism is the one-process mechanism, split over ranks:

* sampling: each rank owns a fixed shard of the data and keeps each of its records with the
  global sample rate ``q = 1 / len(data_loader)`` (Opacus' ``DistributedUniformWithReplacementSampler``),
  so the union of the local batches is a Poisson sample of the whole data set at rate ``q``;
* clipping: per sample, on the rank that drew it;
* noise: ONE Gaussian draw per step in total, ``N(0, (sigma * C)^2)`` added on rank 0 only, then
  the noisy sum is all-reduced, so the summed gradient has the noise of a one-process step;
* accounting: every rank's accountant records ``(sigma, q, 1)`` per step: one history, with the
  global sample rate (the ranks' histories are identical; rank 0 reports).

The model is wrapped in Opacus' ``DPDDP`` (which broadcasts rank 0's parameters at wrap time);
gradients are synchronised by the DP optimizer after noising, not by DDP's backward hooks, which
would average per-batch gradients before clipping.

:func:`init_from_env` sets up the process group from ``torchrun``'s environment (gloo on CPU).
"""

from __future__ import annotations

import os

from torch import nn

from ..errors import ParameterError

__all__ = ["init_from_env", "is_main_process", "wrap_distributed"]


def wrap_distributed(module: nn.Module) -> tuple[nn.Module, int]:
    """``(DPDDP(module), world_size)``; raises :class:`ParameterError` when ``torch.distributed``
    is not initialised."""
    import torch.distributed as dist
    from opacus.distributed import DifferentiallyPrivateDistributedDataParallel as DPDDP

    if not (dist.is_available() and dist.is_initialized()):
        raise ParameterError(
            "distributed=True needs an initialised torch.distributed process group: launch with "
            "torchrun (or `privkit svae train --nproc N`) and call "
            "privkit.dp.distributed.init_from_env() / torch.distributed.init_process_group first"
        )
    if isinstance(module, (DPDDP, nn.parallel.DistributedDataParallel)):
        raise ParameterError(
            "pass the bare model with distributed=True; privkit wraps it in DPDDP itself (a DDP "
            "wrapper would average gradients before per-sample clipping)"
        )
    return DPDDP(module), dist.get_world_size()


def init_from_env(backend: str | None = None) -> tuple[int, int]:
    """Initialise ``torch.distributed`` from torchrun's environment variables (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``); ``backend`` defaults to gloo (CPU).
    Returns ``(rank, world_size)``; ``(0, 1)`` without a torchrun environment."""
    import torch.distributed as dist

    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group(backend=backend or "gloo")
    return dist.get_rank(), dist.get_world_size()


def is_main_process() -> bool:
    """True on rank 0 (or without torch.distributed): the rank that writes files and prints."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
