"""The one door to Opacus internals: everything privkit needs that Opacus does not publish (private
attributes and functions, class checks) goes through a small function here, so an Opacus upgrade
that moves them breaks one module, not the engine and the clipping code.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["close_hooks", "generate_noise", "grad_sample_module", "grad_sampler_table", "inner_module", "is_ddp", "prv_domain", "uncount_forward"]


def is_ddp(m: nn.Module) -> bool:
    """True for a model wrapped by Opacus' DPDDP or torch's DistributedDataParallel."""
    from opacus.distributed import DifferentiallyPrivateDistributedDataParallel as DPDDP

    return isinstance(m, (DPDDP, nn.parallel.DistributedDataParallel))


def grad_sample_module(module: nn.Module, **kwargs: Any) -> Any:
    """Opacus' ``GradSampleModule`` around ``module`` (per-sample gradients in ``p.grad_sample``)."""
    from opacus.grad_sample import GradSampleModule

    return GradSampleModule(module, **kwargs)


def grad_sampler_table() -> dict[type, Any]:
    """Opacus' registry of grad samplers (layer class -> sampler), which its own
    ``register_grad_sampler`` decorator fills; privkit writes its samplers into it."""
    from opacus.grad_sample import GradSampleModule

    return GradSampleModule.GRAD_SAMPLERS


def inner_module(gsm: Any) -> nn.Module:
    """The model an Opacus ``GradSampleModule`` wraps (its private ``_module``)."""
    return gsm._module


def close_hooks(gsm: Any) -> None:
    """Remove an Opacus ``GradSampleModule``'s hooks and per-sample state (its private ``_close``)."""
    gsm._close()


def uncount_forward(param: Any) -> None:
    """Undo Opacus' count of one forward pass on ``param`` (its private ``_forward_counter``)."""
    param._forward_counter -= 1


def generate_noise(**kwargs: Any) -> Any:
    """Opacus' Gaussian noise of a DP optimizer step (the private ``_generate_noise``)."""
    from opacus.optimizers.optimizer import _generate_noise

    return _generate_noise(**kwargs)


def prv_domain(accountant: Any, **kwargs: Any) -> Any:
    """The discretisation domain a PRV accountant would use (its private ``_get_domain``), so its
    size can be checked before the (possibly huge) computation runs."""
    return accountant._get_domain(**kwargs)
