"""DP-SGD over Opacus with honest accounting: :func:`make_private`, the single entry point.

The settings live in :mod:`privkit.dp.config` (:class:`DPConfig`), the result in
:mod:`privkit.dp.training` (:class:`DPTraining`), the accountants in :mod:`privkit.dp.accounting`
and the module checks in :mod:`privkit.dp.validator`; their names are re-exported here.

:func:`make_private` wraps Opacus' ``PrivacyEngine`` and returns a :class:`DPTraining` that knows
the epsilon *of the noise actually used*: the PRV accountant (Gopi et al.) by default, falling back
to the RDP bound, and saying so, when PRV cannot compute (huge epsilons make its discretisation
domain explode). A noise multiplier too small for any meaningful epsilon is allowed (it is what
some papers used) but flagged loudly, in a :class:`PrivacyWarning` and in ``report().warnings``.

Before Opacus sees the model, :func:`validate_module` rejects what breaks DP-SGD that Opacus lets
through: every batch-statistics normalisation (``BatchNorm*`` including ``affine=False`` and
subclasses, ``SyncBatchNorm``, ``InstanceNorm`` with running statistics), which mixes samples of a
batch or leaks them through running buffers, and trainable modules whose per-sample gradients
Opacus cannot compute - each by qualified name, with the fix.

By default the per-sample clipping runs in privkit's ``"fast"`` mode (:mod:`privkit.dp.fastclip`:
ghost / direct per-sample norms and book-keeping clipped sums, the same update as Opacus' hooks
mode at a fraction of its memory traffic); Opacus' own modes stay available.

>>> sigma_eps = compute_epsilon(noise_multiplier=1.0, sample_rate=0.01, steps=1000, delta=1e-5)
>>> round(sigma_eps.epsilon, 1), sigma_eps.accountant
(1.8, 'prv')
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from ..errors import (  # PrivacyWarning re-exported: defined in privkit.errors
    ParameterError,
    PrivacyWarning,
)
from ._opacus import close_hooks, inner_module
from .accounting import (
    EpsilonResult,
    calibrate_noise,
    compute_epsilon,
    epsilon_from_history,
    steps_within_budget,  # noqa: F401  (re-exported with the accounting names above)
    validate_delta,  # noqa: F401
    validate_history,  # noqa: F401
)
from .config import MEANINGFUL_EPSILON, DPConfig, tiny_noise_message
from .training import DPTraining
from .validator import DPCompatibilityError, check_module, validate_module

__all__ = [
    "MEANINGFUL_EPSILON",
    "DPCompatibilityError",
    "DPConfig",
    "DPTraining",
    "EpsilonResult",
    "PrivacyWarning",
    "calibrate_noise",
    "check_module",
    "compute_epsilon",
    "epsilon_from_history",
    "make_private",
    "validate_module",
]

log = logging.getLogger(__name__)


def _to_fast_clipping(mod, opt):
    """Swap Opacus' hooks-mode module and optimizer for privkit's fast-clipping pair, keeping the
    optimizer's settings, noise generator and the accountant's step hook (see fastclip.py).
    A distributed Opacus optimizer becomes the distributed fast optimizer (noise on rank 0 only,
    one all-reduce of the flat gradient)."""
    from opacus.optimizers import DistributedDPOptimizer

    from .fastclip import (
        DistributedFastClipOptimizer,
        FastClipModule,
        FastClipOptimizer,
    )

    inner = inner_module(mod)
    allow = mod.grad_accumulation_allowed
    close_hooks(mod)
    fast = FastClipModule(inner, batch_first=mod.batch_first, loss_reduction=mod.loss_reduction)
    if not allow:
        fast.forbid_grad_accumulation()
    cls = DistributedFastClipOptimizer if isinstance(opt, DistributedDPOptimizer) \
        else FastClipOptimizer
    new = cls(
        opt.original_optimizer, noise_multiplier=opt.noise_multiplier,
        max_grad_norm=opt.max_grad_norm, expected_batch_size=opt.expected_batch_size,
        loss_reduction=opt.loss_reduction, generator=opt.generator, secure_mode=opt.secure_mode,
        module=fast,
    )
    new.attach_step_hook(opt.step_hook)
    return fast, new


def make_private(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    data_loader: torch.utils.data.DataLoader,
    *,
    target_epsilon: float | None = None,
    noise_multiplier: float | None = None,
    delta: float | None = None,
    max_grad_norm: float,
    epochs: int | None = None,
    accountant: str = "prv",
    poisson_sampling: bool = True,
    grad_sample_mode: str = "fast",
    stop_at_budget: bool = False,
    distributed: bool = False,
    batch_first: bool = True,
    loss_reduction: str = "mean",
    noise_generator: torch.Generator | None = None,
) -> DPTraining:
    """Make ``module`` / ``optimizer`` / ``data_loader`` DP-SGD ready; exactly one of
    ``target_epsilon`` (the noise is calibrated to land within 1% below it after ``epochs``) or
    ``noise_multiplier`` (then ``epochs`` is optional: without it the epsilon reported is the one
    spent so far, with no plan).

    ``delta=None`` means 1/N (N = the data loader's data-set size). ``grad_sample_mode``:
    ``"fast"`` (default) computes per-sample gradient norms of linear and conv layers without
    storing per-sample gradients and the clipped sum by book-keeping (:mod:`privkit.dp.fastclip`;
    the same mechanism and update as Opacus, checked by tests); ``"hooks"``, ``"functorch"`` and
    ``"ew"`` are Opacus' own modes. ``"fast"`` allows one backward pass per optimizer step.
    privkit's conv grad samplers are registered with Opacus here
    (:func:`privkit.dp.register_grad_samplers`), not on import.

    ``stop_at_budget=True``: the optimizer step that would pass the budget (``target_epsilon``,
    or the planned epsilon) raises :class:`~privkit.errors.PrivacyBudgetExhaustedError` before it
    changes anything; otherwise passing it raises one :class:`PrivacyWarning`.

    ``distributed=True`` (``torch.distributed`` initialised, e.g. by ``torchrun``): the model is
    wrapped in Opacus' ``DPDDP``, each rank Poisson-samples its shard at the global sample rate
    ``1 / len(data_loader)`` (``DistributedUniformWithReplacementSampler``), noise is added once
    per step in total (on rank 0) and the noisy sum is all-reduced; every rank's accountant holds
    the same global history. Pass the same loader (global batch size) on every rank.

    The result unpacks as ``model, optimizer, data_loader``. Raises
    :class:`DPCompatibilityError` for modules that break DP-SGD, :class:`PrivacyBudgetError` for
    an unreachable target, :class:`ParameterError` / ``AccountantStateError`` for bad settings.
    """
    from opacus import PrivacyEngine

    from .grad_samplers import register_grad_samplers

    try:
        n_data = len(data_loader.dataset)
    except (TypeError, AttributeError):
        n_data = None
    if delta is None:
        if not n_data:
            raise ParameterError("delta is required when the data loader's data set has no length")
        delta = 1.0 / n_data
    cfg = DPConfig(
        target_epsilon=target_epsilon, noise_multiplier=noise_multiplier, delta=delta,
        max_grad_norm=max_grad_norm, epochs=epochs, accountant=accountant,
        poisson_sampling=poisson_sampling, grad_sample_mode=grad_sample_mode,
    )
    if loss_reduction not in ("mean", "sum"):
        raise ParameterError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")
    n_batches = len(data_loader)
    if n_batches < 1:
        raise ParameterError("the data loader is empty")
    sample_rate = 1.0 / n_batches
    steps = int(cfg.epochs * n_batches) if cfg.epochs is not None else None
    register_grad_samplers()
    check_module(module, grad_sample_mode=grad_sample_mode)
    world_size = 1
    if distributed:
        from .distributed import wrap_distributed

        if not poisson_sampling:
            raise ParameterError("distributed=True needs poisson_sampling=True")
        module, world_size = wrap_distributed(module)

    warns: list[str] = []
    if n_data and delta > 1.0 / n_data:
        warns.append(
            f"delta={delta:.3g} > 1/N={1.0 / n_data:.3g}: such a delta allows publishing whole "
            "records; use delta <= 1/N (ideally much smaller)"
        )
    if not poisson_sampling:
        warns.append(
            "poisson_sampling=False: the accountant assumes Poisson sampling, so epsilon is only "
            "an approximation for shuffled fixed-size batches"
        )
    if target_epsilon is not None:
        sigma = calibrate_noise(
            target_epsilon=target_epsilon, delta=delta, sample_rate=sample_rate,
            steps=steps, accountant=accountant,  # type: ignore[arg-type]
        )
    else:
        sigma = float(noise_multiplier)  # type: ignore[arg-type]

    try:
        with warnings.catch_warnings():
            # Opacus' "Secure RNG turned off" notice: privkit, like Opacus by default, uses torch's
            # ordinary RNG for the noise (fine for research; see docs/dp.md)
            warnings.filterwarnings("ignore", message=".*Secure RNG turned off.*")
            warnings.filterwarnings("ignore", category=UserWarning, module="opacus.*")
            engine = PrivacyEngine(accountant=accountant)
            mod, opt, dl = engine.make_private(
                module=module, optimizer=optimizer, data_loader=data_loader,
                noise_multiplier=sigma, max_grad_norm=max_grad_norm,
                poisson_sampling=poisson_sampling, batch_first=batch_first,
                loss_reduction=loss_reduction, noise_generator=noise_generator,
                grad_sample_mode="hooks" if grad_sample_mode == "fast" else grad_sample_mode,
            )
            if grad_sample_mode == "fast":
                mod, opt = _to_fast_clipping(mod, opt)
    except NotImplementedError as e:
        raise DPCompatibilityError([("", f"Opacus cannot wrap the model: {e}", "see message")]) from e
    training = DPTraining(
        module=mod, optimizer=opt, data_loader=dl, engine=engine, noise_multiplier=sigma,
        max_grad_norm=float(max_grad_norm), delta=float(delta), sample_rate=sample_rate,
        epochs=None if epochs is None else int(epochs), planned_steps=steps,
        accountant=accountant, poisson_sampling=poisson_sampling, target_epsilon=target_epsilon,
        warnings=warns, grad_sample_mode=grad_sample_mode, stop_at_budget=bool(stop_at_budget),
        dataset_size=n_data, world_size=world_size,
    )
    # steps up to the plan are within the budget by construction (calibrated / planned), so the
    # exact bisection for the allowed step count only runs when a run goes past its plan
    training._safe = steps or 0
    training._install_budget_guard()
    if steps is not None:
        planned = training._eps([(sigma, sample_rate, steps)], float(delta))
        if planned.epsilon > MEANINGFUL_EPSILON:
            msg = tiny_noise_message(sigma, planned.epsilon)
            training.warnings.append(msg)
            warnings.warn(msg, PrivacyWarning, stacklevel=2)
    else:
        one_epoch = training._eps([(sigma, sample_rate, n_batches)], float(delta))
        if one_epoch.epsilon > MEANINGFUL_EPSILON:
            msg = tiny_noise_message(sigma, one_epoch.epsilon) + " (after one epoch)"
            training.warnings.append(msg)
            warnings.warn(msg, PrivacyWarning, stacklevel=2)
    for w in warns:
        warnings.warn(w, PrivacyWarning, stacklevel=2)
    return training
