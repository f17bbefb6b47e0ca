"""What :func:`privkit.dp.make_private` returns: :class:`DPTraining`, the wrapped model, optimizer
and loader with the accountant's history, the budget guard, the privacy report and checkpoints."""

from __future__ import annotations

import dataclasses
import logging
import types
import warnings
from typing import Any

import torch
from torch import nn

from ..api import PrivacyReport
from ..errors import (
    AccountantStateError,
    CheckpointError,
    PrivacyBudgetExhaustedError,
    PrivacyWarning,
)
from ._opacus import is_ddp as _is_ddp
from .accounting import (
    EpsilonResult,
    epsilon_from_history,
    steps_within_budget,
    validate_delta,
    validate_history,
)
from .config import MEANINGFUL_EPSILON, tiny_noise_message

__all__ = ["DPTraining"]

log = logging.getLogger(__name__)


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
