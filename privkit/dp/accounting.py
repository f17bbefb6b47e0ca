"""Privacy accounting: the epsilon of a composition of Poisson-subsampled Gaussian DP-SGD steps.

The PRV accountant (Gopi et al.) by default, falling back to the RDP bound, and saying so, when PRV
cannot compute (huge epsilons make its discretisation domain explode). Every history entry
``(noise multiplier, sample rate, steps)`` is validated first (:func:`validate_history`): a NaN or
infinite noise, a sample rate outside (0, 1] or a negative step count is a
:class:`~privkit.errors.AccountantStateError`, never a hang or a negative epsilon.

>>> res = compute_epsilon(noise_multiplier=1.0, sample_rate=0.01, steps=1000, delta=1e-5)
>>> round(res.epsilon, 1), res.accountant
(1.8, 'prv')
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings

from ..errors import AccountantStateError, ParameterError, PrivacyBudgetError
from ._opacus import prv_domain

__all__ = [
    "EpsilonResult",
    "calibrate_noise",
    "compute_epsilon",
    "epsilon_from_history",
    "steps_within_budget",
    "validate_delta",
    "validate_history",
]

log = logging.getLogger(__name__)

_PRV_MAX_POINTS = 20_000_000
_MAX_SIGMA = 1e6



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
        domain = prv_domain(
            acc,
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


#: Bounds of a history entry's step count and of the number of entries (a restored state beyond
#: them is refused rather than handed to an accountant that would run for hours).
MAX_STEPS = 10**9
MAX_HISTORY = 10_000
#: Noise multipliers are 0 (no privacy) or in [MIN_SIGMA, _MAX_SIGMA]; sample rates in
#: [MIN_SAMPLE_RATE, 1]. Outside, the accountants' floating point breaks down (overflow, 0/0).
MIN_SIGMA = 1e-6
MIN_SAMPLE_RATE = 1e-12
#: At most this many distinct (noise, sample rate) pairs in a history: each costs the accountants
#: up to ~0.3 s (RDP's fractional orders), so a longer (restored) history would stall epsilon.
MAX_PAIRS = 16
#: Below this noise multiplier PRV's domain explodes (and its answer is astronomically large
#: anyway): RDP directly, said aloud.
_PRV_MIN_SIGMA = 0.05
#: PRV composes one discretised distribution per pair (seconds each); above this many pairs the
#: RDP bound is used, said aloud.
_PRV_MAX_PAIRS = 4


def validate_delta(delta: object, what: str = "delta") -> float:
    """``delta`` as a float in (0, 1), or an :class:`AccountantStateError` saying why not.

    >>> validate_delta(1e-5)
    1e-05
    """
    if isinstance(delta, bool) or not isinstance(delta, (int, float)):
        raise AccountantStateError(f"{what} must be a number in (0, 1), got {delta!r}")
    d = float(delta)
    if not (0.0 < d < 1.0):
        raise AccountantStateError(
            f"{what} must lie in (0, 1) (typically <= 1/N for N training records), got {delta!r}"
        )
    return d


def _number(x: object, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise AccountantStateError(f"{what} must be a number, got {type(x).__name__} {x!r:.60}")
    return float(x)


def validate_history(history: object) -> list[tuple[float, float, int]]:
    """The accountant history ``[(noise multiplier, sample rate, steps), ...]`` checked entry by
    entry: finite noise >= 0, sample rate in (0, 1], integer steps in [1, 1e9]. Raises
    :class:`AccountantStateError` naming the entry and the field.

    >>> validate_history([(1.0, 0.01, 100)])
    [(1.0, 0.01, 100)]
    """
    if not isinstance(history, (list, tuple)):
        raise AccountantStateError(
            f"accountant history must be a list of (noise, sample_rate, steps), got "
            f"{type(history).__name__}"
        )
    if len(history) > MAX_HISTORY:
        raise AccountantStateError(
            f"accountant history has {len(history)} entries (> {MAX_HISTORY}); refusing it"
        )
    out = []
    for i, entry in enumerate(history):
        if not isinstance(entry, (list, tuple)) or len(entry) != 3:
            raise AccountantStateError(
                f"accountant history entry {i} must be (noise, sample_rate, steps), got {entry!r:.80}"
            )
        s = _number(entry[0], f"history[{i}] noise multiplier")
        q = _number(entry[1], f"history[{i}] sample rate")
        n = entry[2]
        if isinstance(n, float) and n.is_integer():
            n = int(n)
        if isinstance(n, bool) or not isinstance(n, int):
            raise AccountantStateError(f"history[{i}] steps must be an integer, got {n!r:.60}")
        if not (math.isfinite(s) and (s == 0 or MIN_SIGMA <= s <= _MAX_SIGMA)):
            raise AccountantStateError(
                f"history[{i}] noise multiplier must be 0 or in [{MIN_SIGMA:g}, {_MAX_SIGMA:g}], "
                f"got {s}"
            )
        if not (math.isfinite(q) and MIN_SAMPLE_RATE <= q <= 1):
            raise AccountantStateError(
                f"history[{i}] sample rate must lie in [{MIN_SAMPLE_RATE:g}, 1], got {q}"
            )
        if not 1 <= n <= MAX_STEPS:
            raise AccountantStateError(
                f"history[{i}] steps must lie in [1, {MAX_STEPS}], got {n}"
            )
        out.append((s, q, n))
    return out


def epsilon_from_history(
    history: list[tuple[float, float, int]], delta: float, accountant: str = "prv"
) -> EpsilonResult:
    """Epsilon of a composition of Poisson-subsampled Gaussian steps ``(sigma, q, steps)``.

    With ``accountant="prv"``, falls back to RDP (and says so in ``warnings``) when PRV cannot
    compute the number: huge epsilons, where its discretisation domain would need more memory than
    any machine has. The history is validated (:func:`validate_history`; entries with 0 steps are
    dropped) and the result is never negative (a large delta can make an accountant's estimate
    dip below 0; epsilon 0 is then the honest answer).
    """
    if accountant not in ("prv", "rdp"):
        raise ParameterError(f"accountant must be 'prv' or 'rdp', got {accountant!r}")
    delta = validate_delta(delta)
    if isinstance(history, (list, tuple)):
        history = [h for h in history
                   if not (isinstance(h, (list, tuple)) and len(h) == 3 and h[2] == 0)]
    history = _merged(validate_history(history))
    if len(history) > MAX_PAIRS:
        raise AccountantStateError(
            f"accountant history has {len(history)} distinct (noise, sample rate) pairs "
            f"(> {MAX_PAIRS}); privkit refuses it rather than spend minutes composing them"
        )
    if not history:
        return EpsilonResult(0.0, accountant, accountant)
    for s, _q, _ in history:
        if s <= 0:
            return EpsilonResult(
                math.inf, accountant, accountant, ("noise multiplier 0: no privacy at all",)
            )
    if accountant == "rdp":
        return EpsilonResult(_safe_rdp(history, delta), "rdp", "rdp")
    try:
        if len(history) > _PRV_MAX_PAIRS:
            raise OverflowError(f"{len(history)} distinct (noise, sample rate) pairs")
        if min(sig for sig, _, _ in history) < _PRV_MIN_SIGMA:
            raise OverflowError(f"noise multiplier below {_PRV_MIN_SIGMA}")
        return EpsilonResult(max(0.0, _prv_epsilon(history, delta)), "prv", "prv")
    except (MemoryError, OverflowError, ValueError, FloatingPointError, RuntimeError,
            ZeroDivisionError) as e:
        eps = _safe_rdp(history, delta)
        msg = (
            f"the PRV accountant could not compute epsilon for this schedule ({type(e).__name__}: "
            f"{str(e)[:120]}); epsilon={eps:.4g} is the RDP accountant's bound instead"
        )
        log.info(msg)
        return EpsilonResult(eps, "rdp", "prv", (msg,))


def _merged(history: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """Entries with the same (noise, sample rate) merged (composition does not depend on order)."""
    counts: dict[tuple[float, float], int] = {}
    for s, q, n in history:
        counts[(s, q)] = counts.get((s, q), 0) + n
    return [(s, q, n) for (s, q), n in counts.items()]


def _safe_rdp(history: list[tuple[float, float, int]], delta: float) -> float:
    try:
        eps = _rdp_epsilon(history, delta)
    except (OverflowError, ZeroDivisionError, FloatingPointError, ValueError) as e:
        raise PrivacyBudgetError(
            f"the accountant cannot compute epsilon for this history ({type(e).__name__}: "
            f"{str(e)[:80]})"
        ) from e
    if math.isnan(eps):
        raise PrivacyBudgetError("the accountant returned NaN for this history")
    return max(0.0, eps)


def compute_epsilon(
    *, noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str = "prv"
) -> EpsilonResult:
    """Epsilon of ``steps`` DP-SGD steps at ``sample_rate`` with ``noise_multiplier``."""
    if not 0 < sample_rate <= 1:
        raise ParameterError(f"sample_rate must lie in (0, 1], got {sample_rate}")
    return epsilon_from_history([(noise_multiplier, sample_rate, steps)], delta, accountant)


def steps_within_budget(
    history: list[tuple[float, float, int]], *, noise_multiplier: float, sample_rate: float,
    budget: float, delta: float, accountant: str = "prv", limit: int = MAX_STEPS,
) -> int:
    """How many more steps at ``(noise_multiplier, sample_rate)`` after ``history`` keep epsilon
    at or below ``budget`` (a bisection over the step count: about log2(limit) accountant calls).

    >>> steps_within_budget([], noise_multiplier=2.0, sample_rate=0.1, budget=2.0, delta=1e-5,
    ...                     accountant="rdp")
    59
    """
    def eps(k: int) -> float:
        extra = [(noise_multiplier, sample_rate, k)] if k else []
        return epsilon_from_history(list(history) + extra, delta, accountant).epsilon

    if eps(0) > budget:
        return 0
    lo, hi = 0, 1
    while eps(hi) <= budget:
        lo, hi = hi, hi * 2
        if hi > limit:
            return limit
    while hi - lo > 1:  # eps(lo) <= budget < eps(hi)
        mid = (lo + hi) // 2
        if eps(mid) <= budget:
            lo = mid
        else:
            hi = mid
    return lo


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
