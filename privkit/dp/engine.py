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
import warnings
from typing import Any

import torch
from torch import nn

from ..api import PrivacyReport
from ..errors import ParameterError, PrivacyBudgetError, UnsupportedLayerError

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
#: PRV discretisation points above which we do not even try (memory / time) and use RDP.
_PRV_MAX_POINTS = 20_000_000
_MAX_SIGMA = 1e6


class PrivacyWarning(UserWarning):
    """The privacy guarantee is weaker than it looks (tiny noise, no Poisson sampling...)."""


class DPCompatibilityError(UnsupportedLayerError):
    """A module cannot be trained with DP-SGD as it is; ``problems`` lists (name, reason, fix)."""

    def __init__(self, problems: list[tuple[str, str, str]]) -> None:
        self.problems = list(problems)
        lines = [f"  - {name or '<root>'}: {why}; fix: {fix}" for name, why, fix in self.problems]
        super().__init__(
            f"the model cannot be trained with DP-SGD ({len(self.problems)} problem(s)):\n"
            + "\n".join(lines)
        )


# --------------------------------------------------------------------------- accounting


@dataclasses.dataclass(frozen=True)
class EpsilonResult:
    """An epsilon and how it was obtained."""

    epsilon: float
    accountant: str  # the accountant that produced the number ("prv" or "rdp")
    requested: str  # the accountant asked for
    warnings: tuple[str, ...] = ()

    @property
    def fell_back(self) -> bool:
        return self.accountant != self.requested


def _rdp_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    from opacus.accountants.analysis import rdp as rdp_analysis

    alphas = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [80, 128, 256, 512]
    rdp = sum(
        rdp_analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=alphas)
        for sigma, q, steps in history
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "optimal order is the smallest alpha" for tiny noise
        eps, _ = rdp_analysis.get_privacy_spent(orders=alphas, rdp=rdp, delta=delta)
    return float(eps)


def _prv_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    from opacus.accountants import PRVAccountant
    from opacus.accountants.analysis.prv import PoissonSubsampledGaussianPRV

    acc = PRVAccountant()
    acc.history = [(float(s), float(q), int(n)) for s, q, n in history]
    eps_error, delta_error = 0.01, delta / 1000
    prvs = [PoissonSubsampledGaussianPRV(q, s) for s, q, _ in acc.history]
    with warnings.catch_warnings(), _np_quiet():
        warnings.simplefilter("ignore")
        domain = acc._get_domain(
            prvs=prvs,
            num_self_compositions=[n for _, _, n in acc.history],
            eps_error=eps_error,
            delta_error=delta_error,
        )
        if not math.isfinite(domain.t_max) or domain.size > _PRV_MAX_POINTS:
            raise OverflowError(f"PRV domain of {domain.size} points is too large")
        eps = acc.get_epsilon(delta=delta, eps_error=eps_error, delta_error=delta_error)
    if not math.isfinite(eps):
        raise OverflowError("PRV returned a non-finite epsilon")
    return float(eps)


class _np_quiet:
    def __enter__(self):
        import numpy as np

        self._old = np.seterr(all="ignore")

    def __exit__(self, *exc):
        import numpy as np

        np.seterr(**self._old)


def epsilon_from_history(
    history: list[tuple[float, float, int]], delta: float, accountant: str = "prv"
) -> EpsilonResult:
    """Epsilon of a composition of Poisson-subsampled Gaussian steps ``(sigma, q, steps)``.

    With ``accountant="prv"``, falls back to RDP (and says so in ``warnings``) when PRV cannot
    compute the number: huge epsilons, where its discretisation domain would need more memory than
    any machine has.
    """
    if accountant not in ("prv", "rdp"):
        raise ParameterError(f"accountant must be 'prv' or 'rdp', got {accountant!r}")
    if not 0 < delta < 1:
        raise ParameterError(f"delta must lie in (0, 1), got {delta}")
    history = [(float(s), float(q), int(n)) for s, q, n in history if int(n) > 0]
    if not history:
        return EpsilonResult(0.0, accountant, accountant)
    for s, q, _ in history:
        if s <= 0:
            return EpsilonResult(
                math.inf, accountant, accountant, ("noise multiplier 0: no privacy at all",)
            )
    if accountant == "rdp":
        return EpsilonResult(_rdp_epsilon(history, delta), "rdp", "rdp")
    try:
        return EpsilonResult(_prv_epsilon(history, delta), "prv", "prv")
    except (MemoryError, OverflowError, ValueError, FloatingPointError, RuntimeError) as e:
        eps = _rdp_epsilon(history, delta)
        msg = (
            f"the PRV accountant could not compute epsilon for this schedule ({type(e).__name__}: "
            f"{str(e)[:120]}); epsilon={eps:.4g} is the RDP accountant's bound instead"
        )
        log.info(msg)
        return EpsilonResult(eps, "rdp", "prv", (msg,))


def compute_epsilon(
    *, noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str = "prv"
) -> EpsilonResult:
    """Epsilon of ``steps`` DP-SGD steps at ``sample_rate`` with ``noise_multiplier``."""
    if not 0 < sample_rate <= 1:
        raise ParameterError(f"sample_rate must lie in (0, 1], got {sample_rate}")
    return epsilon_from_history([(noise_multiplier, sample_rate, steps)], delta, accountant)


def calibrate_noise(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "prv",
    rel_tol: float = 0.005,
) -> float:
    """The noise multiplier whose epsilon is within ``rel_tol`` below ``target_epsilon``.

    Raises :class:`PrivacyBudgetError` when no noise multiplier up to 1e6 reaches the target.
    """
    if not (target_epsilon > 0 and math.isfinite(target_epsilon)):
        raise ParameterError(f"target_epsilon must be a positive number, got {target_epsilon}")

    def eps(s: float) -> float:
        return compute_epsilon(
            noise_multiplier=s, sample_rate=sample_rate, steps=steps, delta=delta,
            accountant=accountant,
        ).epsilon

    hi = 1.0
    e_hi = eps(hi)
    while e_hi > target_epsilon:
        hi *= 2
        if hi > _MAX_SIGMA:
            raise PrivacyBudgetError(
                f"target epsilon {target_epsilon} at delta={delta} cannot be reached with "
                f"{steps} steps at sample rate {sample_rate:.4g}: even noise multiplier "
                f"{_MAX_SIGMA:g} gives more; raise the target, train fewer steps or use a "
                "smaller sample rate (batch)"
            )
        e_hi = eps(hi)
    lo = hi / 2 if hi > 1.0 else 0.0
    if lo == 0.0:
        # search downwards geometrically for a sigma whose epsilon is above the target
        lo = 0.5
        while eps(lo) <= target_epsilon:
            hi, e_hi = lo, eps(lo)
            lo /= 2
            if lo < 1e-6:
                return hi
    for _ in range(100):
        if target_epsilon - e_hi <= rel_tol * target_epsilon:
            break
        mid = math.sqrt(lo * hi) if lo > 0 else hi / 2
        e_mid = eps(mid)
        if e_mid <= target_epsilon:
            hi, e_hi = mid, e_mid
        else:
            lo = mid
    return hi


# --------------------------------------------------------------------------- validation


def _qualname(m: nn.Module) -> str:
    t = type(m)
    return t.__name__ if t.__module__.startswith("torch.") else f"{t.__module__}.{t.__name__}"


def validate_module(module: nn.Module, *, grad_sample_mode: str = "hooks") -> list[tuple[str, str, str]]:
    """Problems that make ``module`` unfit for DP-SGD: a list of ``(qualified name, why, fix)``.

    Beyond Opacus' own ``ModuleValidator``: every batch-statistics normalisation, whatever its
    ``affine`` flag (``BatchNorm1d/2d/3d``, their lazy and sync variants and subclasses,
    ``InstanceNorm`` / other ``_NormBase`` modules that track running statistics), and trainable
    modules whose per-sample gradient Opacus cannot compute (trainable modules that also hold
    buffers; in ``"ew"`` mode anything but Linear / Conv / Embedding / norms).
    """
    from torch.nn.modules.batchnorm import _BatchNorm, _NormBase
    from torch.nn.modules.instancenorm import _InstanceNorm

    problems: list[tuple[str, str, str]] = []
    norm_fix = "use nn.GroupNorm (per-sample statistics), nn.LayerNorm, or no normalisation"
    for name, m in module.named_modules():
        kind = _qualname(m)
        if isinstance(m, _BatchNorm):
            problems.append((
                name,
                (f"{kind} (affine={m.affine}) normalises with batch statistics, which mixes the "
                "samples of a batch (one sample's data changes every other sample's gradient) and "
                "leaks them through its running mean/variance"),
                norm_fix,
            ))
        elif isinstance(m, _InstanceNorm) and m.track_running_stats:
            problems.append((
                name,
                (f"{kind} with track_running_stats=True accumulates running statistics of the "
                "private data outside DP-SGD"),
                "set track_running_stats=False, or " + norm_fix,
            ))
        elif isinstance(m, _NormBase) and not isinstance(m, _InstanceNorm) and getattr(
            m, "track_running_stats", False
        ):
            problems.append((name, f"{kind} keeps running statistics of the private data", norm_fix))
    # modules Opacus cannot compute per-sample gradients for
    seen = {p[0] for p in problems}
    for name, m in module.named_modules():
        if name in seen:
            continue
        own = [p for p in m.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        if isinstance(m, (nn.RNNBase,)):
            problems.append((
                name, f"{_qualname(m)} has no per-sample gradient support in Opacus",
                "use opacus.layers.DPLSTM / DPGRU / DPRNN",
            ))
            continue
        if list(m.buffers(recurse=False)):
            problems.append((
                name,
                (f"{_qualname(m)} has trainable parameters and buffers: Opacus cannot compute its "
                "per-sample gradients (and the buffers would not be private)"),
                "move the buffers out of the trainable module or freeze its parameters",
            ))
            continue
        if grad_sample_mode == "ew":
            ok = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding, nn.GroupNorm,
                  nn.LayerNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
            if type(m) not in ok:
                problems.append((
                    name, f"{_qualname(m)} is not supported by expanded weights ('ew') mode",
                    "use grad_sample_mode='hooks' or 'functorch'",
                ))
    # Opacus' own validator (catches what it knows about; messages kept verbatim)
    try:
        from opacus.validators import ModuleValidator

        for err in ModuleValidator.validate(module, strict=False):
            msg = str(err)
            if "BatchNorm" in msg and any("BatchNorm" in p[1] for p in problems):
                continue
            problems.append(("", f"Opacus: {msg}", "see the Opacus message"))
    except Exception as e:  # noqa: BLE001  # pragma: no cover - opacus internals changed
        log.debug("opacus validator failed: %s", e)
    return problems


def check_module(module: nn.Module, *, grad_sample_mode: str = "hooks") -> None:
    """Raise :class:`DPCompatibilityError` if :func:`validate_module` finds any problem."""
    problems = validate_module(module, grad_sample_mode=grad_sample_mode)
    if problems:
        raise DPCompatibilityError(problems)


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
    epochs: int = 1
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
        if self.noise_multiplier is not None and not self.noise_multiplier >= 0:
            raise ParameterError(f"noise_multiplier must be >= 0, got {self.noise_multiplier}")
        if self.target_epsilon is not None and not self.target_epsilon > 0:
            raise ParameterError(f"target_epsilon must be > 0, got {self.target_epsilon}")
        if self.delta is not None and not 0 < self.delta < 1:
            raise ParameterError(f"delta must lie in (0, 1), got {self.delta}")
        if not self.max_grad_norm > 0:
            raise ParameterError(f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        if int(self.epochs) < 1:
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

    Train with ``training.module``, ``training.optimizer`` and ``training.data_loader`` as usual;
    ``epsilon()`` is the privacy spent so far, ``report()`` the full :class:`PrivacyReport`.
    """

    module: nn.Module
    optimizer: Any
    data_loader: Any
    engine: Any
    noise_multiplier: float
    max_grad_norm: float
    delta: float
    sample_rate: float
    epochs: int
    planned_steps: int
    accountant: str = "prv"
    poisson_sampling: bool = True
    target_epsilon: float | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    grad_sample_mode: str = "fast"
    _cache: dict = dataclasses.field(default_factory=dict, repr=False)

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
        return self._eps(self.history, self.delta if delta is None else delta).epsilon

    def planned_epsilon(self) -> float:
        """Epsilon after the whole planned schedule (``epochs`` epochs)."""
        return self._eps([(self.noise_multiplier, self.sample_rate, self.planned_steps)],
                         self.delta).epsilon

    def report(self) -> PrivacyReport:
        """The privacy report of the steps taken so far (of the plan, before any step)."""
        history = self.history
        planned = not history
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
            },
        )

    # -- checkpoints
    def accountant_state(self) -> dict[str, Any]:
        """The accountant's state (history of (noise, sample rate, steps)) plus the DP settings."""
        return {
            "history": [list(h) for h in self.history],
            "mechanism": self.engine.accountant.mechanism(),
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.max_grad_norm,
            "delta": self.delta,
            "sample_rate": self.sample_rate,
            "epochs": self.epochs,
            "planned_steps": self.planned_steps,
            "accountant": self.accountant,
        }

    def load_accountant_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`accountant_state` returned (resuming a run keeps the budget)."""
        if state.get("mechanism") != self.engine.accountant.mechanism():
            raise ParameterError(
                f"checkpoint accountant {state.get('mechanism')!r} differs from this run's "
                f"{self.engine.accountant.mechanism()!r}"
            )
        self.engine.accountant.history = [
            (float(s), float(q), int(n)) for s, q, n in state["history"]
        ]
        self._cache.clear()

    def unwrapped_module(self) -> nn.Module:
        return getattr(self.module, "_module", self.module)

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
        """Load a :meth:`checkpoint` dict back into this training run."""
        self.unwrapped_module().load_state_dict(ckpt["model"])
        opt = getattr(self.optimizer, "original_optimizer", self.optimizer)
        opt.load_state_dict(ckpt["optimizer"])
        self.load_accountant_state(ckpt["accountant"])


def tiny_noise_message(noise_multiplier: float, epsilon: float) -> str:
    return (
        f"NO MEANINGFUL PRIVACY: noise multiplier {noise_multiplier:g} gives epsilon={epsilon:.4g} "
        f"(> {MEANINGFUL_EPSILON:g}); this is the real epsilon of the noise used, not of a rescaled "
        "one - the model is effectively trained without differential privacy"
    )


def _to_fast_clipping(mod, opt):
    """Swap Opacus' hooks-mode module and optimizer for privkit's fast-clipping pair, keeping the
    optimizer's settings, noise generator and the accountant's step hook (see fastclip.py)."""
    from .fastclip import FastClipModule, FastClipOptimizer

    inner = mod._module
    allow = mod.grad_accumulation_allowed
    mod._close()
    fast = FastClipModule(inner, batch_first=mod.batch_first, loss_reduction=mod.loss_reduction)
    if not allow:
        fast.forbid_grad_accumulation()
    new = FastClipOptimizer(
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
    delta: float,
    max_grad_norm: float,
    epochs: int,
    accountant: str = "prv",
    poisson_sampling: bool = True,
    grad_sample_mode: str = "fast",
) -> DPTraining:
    """Make ``module`` / ``optimizer`` / ``data_loader`` DP-SGD ready; exactly one of
    ``target_epsilon`` (the noise is calibrated to land within 1% below it after ``epochs``) or
    ``noise_multiplier``.

    ``grad_sample_mode``: ``"fast"`` (default) computes per-sample gradient norms of linear and
    conv layers without storing per-sample gradients and the clipped sum by book-keeping
    (:mod:`privkit.dp.fastclip`; the same mechanism and update as Opacus, checked by tests);
    ``"hooks"``, ``"functorch"`` and ``"ew"`` are Opacus' own modes. ``"fast"`` allows one
    backward pass per optimizer step (no gradient accumulation over several batches).

    Raises :class:`DPCompatibilityError` for modules that break DP-SGD,
    :class:`PrivacyBudgetError` for an unreachable target, :class:`ParameterError` for bad settings.
    """
    from opacus import PrivacyEngine

    cfg = DPConfig(
        target_epsilon=target_epsilon, noise_multiplier=noise_multiplier, delta=delta,
        max_grad_norm=max_grad_norm, epochs=epochs, accountant=accountant,
        poisson_sampling=poisson_sampling, grad_sample_mode=grad_sample_mode,
    )
    if delta is None:
        raise ParameterError("delta is required (typically 1/N or smaller)")
    n_batches = len(data_loader)
    if n_batches < 1:
        raise ParameterError("the data loader is empty")
    sample_rate = 1.0 / n_batches
    steps = int(cfg.epochs * n_batches)
    check_module(module, grad_sample_mode=grad_sample_mode)

    warns: list[str] = []
    try:
        n_data = len(data_loader.dataset)
    except TypeError:
        n_data = None
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
            target_epsilon=target_epsilon, delta=delta, sample_rate=sample_rate, steps=steps,
            accountant=accountant,
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
                poisson_sampling=poisson_sampling,
                grad_sample_mode="hooks" if grad_sample_mode == "fast" else grad_sample_mode,
            )
            if grad_sample_mode == "fast":
                mod, opt = _to_fast_clipping(mod, opt)
    except NotImplementedError as e:
        raise DPCompatibilityError([("", f"Opacus cannot wrap the model: {e}", "see message")]) from e
    training = DPTraining(
        module=mod, optimizer=opt, data_loader=dl, engine=engine, noise_multiplier=sigma,
        max_grad_norm=float(max_grad_norm), delta=float(delta), sample_rate=sample_rate,
        epochs=int(epochs), planned_steps=steps, accountant=accountant,
        poisson_sampling=poisson_sampling, target_epsilon=target_epsilon, warnings=warns,
        grad_sample_mode=grad_sample_mode,
    )
    planned = training._eps([(sigma, sample_rate, steps)], float(delta))
    if planned.epsilon > MEANINGFUL_EPSILON:
        msg = tiny_noise_message(sigma, planned.epsilon)
        training.warnings.append(msg)
        warnings.warn(msg, PrivacyWarning, stacklevel=2)
    for w in warns:
        warnings.warn(w, PrivacyWarning, stacklevel=2)
    return training
