"""DP-SGD over Opacus with honest accounting.

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

import dataclasses
import logging
import math
import types
import warnings
from typing import Any

import torch
from torch import nn

from ..api import PrivacyReport
from ..errors import (
    AccountantStateError,
    CheckpointError,
    ParameterError,
    PrivacyBudgetExhaustedError,
    PrivacyWarning,  # re-exported: defined in privkit.errors
)
from .accounting import (
    EpsilonResult,
    calibrate_noise,
    compute_epsilon,
    epsilon_from_history,
    steps_within_budget,
    validate_delta,
    validate_history,
)
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

#: Above this epsilon a DP guarantee says nothing useful; reports flag it loudly.
MEANINGFUL_EPSILON = 100.0


# --------------------------------------------------------------------------- config / training


@dataclasses.dataclass
class DPConfig:
    """How to train with DP-SGD: exactly one of ``target_epsilon`` / ``noise_multiplier``.

    ``delta=None`` means 1/N (N = training-set size), the paper's choice; a delta above 1/N
    permits releasing a whole record and is flagged.
    """

    target_epsilon: float | None = None
    noise_multiplier: float | None = None
    delta: float | None = None
    max_grad_norm: float = 1.0
    epochs: int | None = 1
    batch_size: int = 64
    accountant: str = "prv"
    poisson_sampling: bool = True
    grad_sample_mode: str = "fast"

    def __post_init__(self) -> None:
        if (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise ParameterError(
                "DPConfig needs exactly one of target_epsilon or noise_multiplier, got "
                f"target_epsilon={self.target_epsilon}, noise_multiplier={self.noise_multiplier}"
            )
        if self.noise_multiplier is not None and not (
            math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0
        ):
            raise AccountantStateError(
                f"noise_multiplier must be finite and >= 0, got {self.noise_multiplier}"
            )
        if self.target_epsilon is not None and not (
            math.isfinite(self.target_epsilon) and self.target_epsilon > 0
        ):
            raise ParameterError(f"target_epsilon must be > 0, got {self.target_epsilon}")
        if self.delta is not None:
            validate_delta(self.delta)
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise AccountantStateError(
                f"max_grad_norm (the clipping norm) must be finite and > 0, got "
                f"{self.max_grad_norm}: without a finite clip no noise scale bounds one record's "
                "influence"
            )
        if self.epochs is None:
            if self.target_epsilon is not None:
                raise ParameterError(
                    "target_epsilon needs epochs (the noise is calibrated for that schedule); "
                    "give epochs=..., or give noise_multiplier instead"
                )
        elif int(self.epochs) < 1:
            raise ParameterError(f"epochs must be >= 1, got {self.epochs}")
        if int(self.batch_size) < 1:
            raise ParameterError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.accountant not in ("prv", "rdp"):
            raise ParameterError(f"accountant must be 'prv' or 'rdp', got {self.accountant!r}")
        if self.grad_sample_mode not in ("fast", "hooks", "functorch", "ew"):
            raise ParameterError(
                "grad_sample_mode must be 'fast', 'hooks', 'functorch' or 'ew', got "
                f"{self.grad_sample_mode!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class DPTraining:
    """What :func:`make_private` returns: the wrapped model, optimizer and loader, and the engine.

    It unpacks like Opacus' ``make_private`` result (``model, optimizer, loader = make_private(...)``)
    and keeps the rich view: ``get_epsilon()`` / ``epsilon()`` is the privacy spent so far,
    ``report()`` the full :class:`PrivacyReport`, ``checkpoint()`` / ``restore()`` resume a run.

    The budget is ``target_epsilon`` (or, given ``noise_multiplier`` and ``epochs``, the planned
    epsilon). Steps past it raise a :class:`PrivacyWarning` once; with ``stop_at_budget=True`` the
    step that would pass it raises :class:`~privkit.errors.PrivacyBudgetExhaustedError` instead,
    before any noise is drawn or parameter changed.
    """

    module: nn.Module
    optimizer: Any
    data_loader: Any
    engine: Any
    noise_multiplier: float
    max_grad_norm: float
    delta: float
    sample_rate: float
    epochs: int | None
    planned_steps: int | None
    accountant: str = "prv"
    poisson_sampling: bool = True
    target_epsilon: float | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    grad_sample_mode: str = "fast"
    stop_at_budget: bool = False
    dataset_size: int | None = None
    world_size: int = 1
    _cache: dict = dataclasses.field(default_factory=dict, repr=False)
    _allowed: int | None = dataclasses.field(default=None, repr=False)
    _safe: int = dataclasses.field(default=0, repr=False)
    _warned_budget: bool = dataclasses.field(default=False, repr=False)
    _prior: list = dataclasses.field(default_factory=list, repr=False)

    # -- Opacus-style unpacking
    def __iter__(self):
        """``model, optimizer, data_loader = training`` (Opacus' ``make_private`` order)."""
        return iter((self.module, self.optimizer, self.data_loader))

    # -- accounting
    @property
    def history(self) -> list[tuple[float, float, int]]:
        return [tuple(h) for h in self.engine.accountant.history]  # type: ignore[misc]

    @property
    def steps(self) -> int:
        return int(sum(n for _, _, n in self.history))

    def _eps(self, history: list, delta: float) -> EpsilonResult:
        key = (tuple(history), delta)
        if key not in self._cache:
            self._cache.clear()
            self._cache[key] = epsilon_from_history(history, delta, self.accountant)
        return self._cache[key]

    def epsilon(self, delta: float | None = None) -> float:
        """Epsilon spent so far (0 before the first step)."""
        d = self.delta if delta is None else validate_delta(delta)
        return self._eps(self.history, d).epsilon

    def get_epsilon(self, delta: float | None = None) -> float:
        """Epsilon spent so far at ``delta`` (default: this run's delta); Opacus' name.

        >>> # training.get_epsilon() == training.epsilon(); get_epsilon(1e-6) at another delta
        """
        return self.epsilon(delta)

    def planned_epsilon(self) -> float | None:
        """Epsilon after the whole planned schedule (``epochs`` epochs); ``None`` without epochs."""
        if self.planned_steps is None:
            return None
        return self._eps(self._prior + [(self.noise_multiplier, self.sample_rate,
                                         self.planned_steps)], self.delta).epsilon

    def continue_from(self, history: list) -> None:
        """Start this run on top of earlier DP training of the same model (privacy composes):
        the validated ``(noise, sample rate, steps)`` history becomes the accountant's, and the
        budget (planned epsilon) covers the earlier steps plus this run's plan."""
        prior = validate_history(history)
        if self.steps:
            raise AccountantStateError("continue_from() must be called before the first step")
        self.engine.accountant.history = list(prior)
        self._prior = list(prior)
        self._cache.clear()
        self._allowed, self._warned_budget = None, False
        done = sum(n for _, _, n in prior)
        self._safe = done + (self.planned_steps or 0) if self.target_epsilon is None else 0

    @property
    def budget(self) -> float | None:
        """The epsilon this run should not pass: ``target_epsilon``, else the planned epsilon."""
        if self.target_epsilon is not None:
            return float(self.target_epsilon)
        return self.planned_epsilon()

    def _allowed_steps(self) -> int | None:
        """Total steps within the budget (computed once, only when a run nears its plan)."""
        budget = self.budget
        if budget is None:
            return None
        if self._allowed is None:
            hist = self.history
            extra = steps_within_budget(
                hist, noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate,
                budget=budget * (1 + 1e-9), delta=self.delta, accountant=self.accountant,
            )
            self._allowed = sum(n for _, _, n in hist) + extra
        return self._allowed

    @property
    def steps_left(self) -> int | None:
        """Optimizer steps left within the budget (``None`` when there is no budget)."""
        allowed = self._allowed_steps()
        return None if allowed is None else max(0, allowed - self.steps)

    def _before_step(self) -> None:
        if not self.stop_at_budget or self.budget is None:
            return
        if self.steps + 1 <= self._safe:
            return
        allowed = self._allowed_steps()
        if allowed is not None and self.steps + 1 > allowed:
            raise PrivacyBudgetExhaustedError(
                f"stop_at_budget: step {self.steps + 1} would spend more than the budget "
                f"epsilon={self.budget:.4g} (delta={self.delta:g}; {self.steps} steps taken, "
                f"epsilon so far {self.epsilon():.4g}); stop training here, or raise the budget "
                "knowingly with a new make_private call"
            )

    def _after_step(self) -> None:
        if self._warned_budget or self.budget is None or self.steps <= self._safe:
            return
        allowed = self._allowed_steps()
        if allowed is not None and self.steps > allowed:
            self._warned_budget = True
            msg = (
                f"privacy budget passed: {self.steps} steps spend epsilon={self.epsilon():.4g} > "
                f"budget {self.budget:.4g} at delta={self.delta:g} (the budget allowed {allowed} "
                "steps); the report states the epsilon actually spent"
            )
            self.warnings.append(msg)
            warnings.warn(msg, PrivacyWarning, stacklevel=3)

    def _install_budget_guard(self) -> None:
        opt = self.optimizer
        step = opt.step

        def guarded_step(_opt: Any, *args: Any, **kwargs: Any) -> Any:
            self._before_step()
            out = step(*args, **kwargs)
            self._after_step()
            return out

        guarded_step.__doc__ = step.__doc__
        # a bound method (with __func__), as torch's LR schedulers expect of optimizer.step
        opt.step = types.MethodType(guarded_step, opt)

    def report(self) -> PrivacyReport:
        """The privacy report of the steps taken so far (of the plan, before any step)."""
        history = self.history
        planned = not history and self.planned_steps is not None
        if planned:
            history = [(self.noise_multiplier, self.sample_rate, self.planned_steps)]
        res = self._eps(history, self.delta)
        warns = list(self.warnings)
        warns += [w for w in res.warnings if w not in warns]
        if res.epsilon > MEANINGFUL_EPSILON:
            w = tiny_noise_message(self.noise_multiplier, res.epsilon)
            if w not in warns:
                warns.append(w)
        return PrivacyReport(
            kind="dp",
            epsilon=res.epsilon,
            delta=self.delta,
            accountant=res.accountant if not res.fell_back else "rdp (PRV fell back)",
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            sample_rate=self.sample_rate,
            steps=int(sum(n for _, _, n in history)),
            warnings=warns,
            details={
                "accountant_requested": self.accountant,
                "planned_steps": self.planned_steps,
                "epochs": self.epochs,
                "poisson_sampling": self.poisson_sampling,
                "target_epsilon": self.target_epsilon,
                "grad_sample_mode": self.grad_sample_mode,
                "is_plan": planned,
                "world_size": self.world_size,
            },
        )

    # -- checkpoints
    def accountant_state(self) -> dict[str, Any]:
        """The accountant's state (history of (noise, sample rate, steps)) plus the DP settings."""
        from .checkpoint import CHECKPOINT_FORMAT

        history = self.history
        return {
            "format": CHECKPOINT_FORMAT,
            "history": [list(h) for h in history],
            "steps": int(sum(n for _, _, n in history)),
            "mechanism": self.engine.accountant.mechanism(),
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.max_grad_norm,
            "delta": self.delta,
            "sample_rate": self.sample_rate,
            "dataset_size": self.dataset_size,
            "epochs": self.epochs,
            "planned_steps": self.planned_steps,
            "accountant": self.accountant,
        }

    def _validated_history(self, state: Any) -> list[tuple[float, float, int]]:
        from .checkpoint import validate_accountant_state

        history = validate_accountant_state(
            state, mechanism=self.engine.accountant.mechanism(), sample_rate=self.sample_rate,
            dataset_size=self.dataset_size, delta=self.delta,
        )
        restored = sum(n for _, _, n in history)
        if restored < self.steps:
            raise AccountantStateError(
                f"restoring {restored} steps into a run that has taken {self.steps} would lower "
                "the privacy spent; restore a checkpoint before training, not after"
            )
        return history

    def load_accountant_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`accountant_state` returned (resuming a run keeps the budget).

        Raises :class:`~privkit.errors.CheckpointError` / ``AccountantStateError`` for a malformed
        state or one from another run (accountant, sample rate, data-set size, delta)."""
        history = self._validated_history(state)
        self.engine.accountant.history = list(history)
        self._cache.clear()
        self._allowed, self._safe, self._warned_budget = None, 0, False

    def unwrapped_module(self) -> nn.Module:
        m = getattr(self.module, "_module", self.module)
        return getattr(m, "module", m) if self.world_size > 1 or _is_ddp(m) else m

    def checkpoint(self) -> dict[str, Any]:
        """Model, optimizer and accountant state in one dict (``torch.save``-able)."""
        return {
            "model": self.unwrapped_module().state_dict(),
            "optimizer": self.optimizer.original_optimizer.state_dict()
            if hasattr(self.optimizer, "original_optimizer")
            else self.optimizer.state_dict(),
            "accountant": self.accountant_state(),
        }

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Load a :meth:`checkpoint` dict back into this training run.

        Everything is validated before anything changes: the accountant state (see
        :meth:`load_accountant_state`), and an optimizer that counted more steps than the
        accountant (an edited history) is refused. Model / optimizer states that do not fit this
        run raise :class:`~privkit.errors.CheckpointError`."""
        from .checkpoint import optimizer_steps

        if not isinstance(ckpt, dict) or not {"model", "optimizer", "accountant"} <= set(ckpt):
            raise CheckpointError(
                "a DP checkpoint is a dict with 'model', 'optimizer' and 'accountant' (what "
                "DPTraining.checkpoint() returns)"
            )
        history = self._validated_history(ckpt["accountant"])
        opt_steps = optimizer_steps(ckpt["optimizer"])
        counted = sum(n for _, _, n in history)
        if opt_steps is not None and opt_steps > counted:
            raise CheckpointError(
                f"the optimizer state took {opt_steps} steps but the accountant history counts "
                f"{counted}: the privacy history was edited or lost; refusing to resume"
            )
        if not isinstance(ckpt["model"], dict):
            raise CheckpointError("checkpoint 'model' must be a state dict")
        for k, v in ckpt["model"].items():
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(
                torch.isfinite(v).all()
            ):
                raise CheckpointError(
                    f"checkpoint model tensor {str(k)[:60]!r} holds NaN or infinite values: "
                    "the training that wrote it diverged; refusing to resume from it"
                )
        module = self.unwrapped_module()
        opt = getattr(self.optimizer, "original_optimizer", self.optimizer)
        old_model = {k: v.detach().clone() for k, v in module.state_dict().items()}
        old_opt = opt.state_dict()
        try:
            module.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            module.load_state_dict(old_model)
            opt.load_state_dict(old_opt)
            raise CheckpointError(
                f"checkpoint does not fit this model / optimizer: {type(e).__name__}: "
                f"{str(e)[:200]}"
            ) from e
        self.engine.accountant.history = list(history)
        self._cache.clear()
        self._allowed, self._safe, self._warned_budget = None, 0, False


def _is_ddp(m: nn.Module) -> bool:
    from opacus.distributed import DifferentiallyPrivateDistributedDataParallel as DPDDP

    return isinstance(m, (DPDDP, nn.parallel.DistributedDataParallel))


def tiny_noise_message(noise_multiplier: float, epsilon: float) -> str:
    return (
        f"NO MEANINGFUL PRIVACY: noise multiplier {noise_multiplier:g} gives epsilon={epsilon:.4g} "
        f"(> {MEANINGFUL_EPSILON:g}); this is the real epsilon of the noise used, not of a rescaled "
        "one - the model is effectively trained without differential privacy"
    )


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

    inner = mod._module
    allow = mod.grad_accumulation_allowed
    mod._close()
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
