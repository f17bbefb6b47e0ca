"""Validation of DP training checkpoints before anything is restored.

A checkpoint carries the privacy spent so far. Restoring one that was edited, truncated or written
by another run must not lower that number silently: :func:`validate_accountant_state` checks every
field (history entries, declared step count, delta, clip, noise, sample rate, data-set size)
against itself and against the run it is restored into, and :func:`optimizer_steps` reads the step
count an optimizer state records (Adam-family optimizers keep one), so a checkpoint whose optimizer
took more steps than its accountant counted is refused. Every refusal is a
:class:`~privkit.errors.CheckpointError` or :class:`~privkit.errors.AccountantStateError` naming
the field.

>>> state = {"format": 1, "mechanism": "prv", "history": [[1.0, 0.125, 8]], "steps": 8,
...          "noise_multiplier": 1.0, "max_grad_norm": 1.0, "delta": 1e-5,
...          "sample_rate": 0.125, "dataset_size": 256}
>>> validate_accountant_state(state, mechanism="prv", sample_rate=0.125, dataset_size=256,
...                           delta=1e-5)
[(1.0, 0.125, 8)]
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import AccountantStateError, CheckpointError
from .accounting import validate_delta, validate_history

__all__ = ["CHECKPOINT_FORMAT", "optimizer_steps", "validate_accountant_state"]

#: Version of :meth:`privkit.dp.DPTraining.accountant_state`'s layout.
CHECKPOINT_FORMAT = 1


def _finite_positive(x: object, what: str, allow_zero: bool = False) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise AccountantStateError(f"checkpoint {what} must be a number, got {x!r:.60}")
    v = float(x)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise AccountantStateError(f"checkpoint {what} must be finite and > 0, got {v}")
    return v


def validate_accountant_state(
    state: object, *, mechanism: str, sample_rate: float, dataset_size: int | None, delta: float,
) -> list[tuple[float, float, int]]:
    """The validated history of ``state`` (what ``DPTraining.accountant_state()`` returned), or a
    typed error when it is malformed or belongs to a run with another accountant, sample rate,
    data-set size or delta."""
    if not isinstance(state, dict):
        raise CheckpointError(f"accountant state must be a dict, got {type(state).__name__}")
    fmt = state.get("format")
    if fmt != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"accountant state format {fmt!r} is not {CHECKPOINT_FORMAT}: this checkpoint was not "
            "written by this privkit version's DPTraining.checkpoint(); it cannot be resumed"
        )
    if state.get("mechanism") != mechanism:
        raise CheckpointError(
            f"checkpoint accountant {state.get('mechanism')!r:.40} differs from this run's "
            f"{mechanism!r}; resume with accountant={state.get('mechanism')!r:.40}"
        )
    history = validate_history(state.get("history"))
    steps = state.get("steps")
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise CheckpointError(f"checkpoint 'steps' must be an integer, got {steps!r:.60}")
    total = sum(n for _, _, n in history)
    if steps != total:
        raise CheckpointError(
            f"checkpoint declares {steps} steps but its accountant history adds up to {total}; "
            "the file was edited or truncated"
        )
    _finite_positive(state.get("noise_multiplier"), "noise_multiplier", allow_zero=True)
    _finite_positive(state.get("max_grad_norm"), "max_grad_norm")
    d = validate_delta(state.get("delta"), "checkpoint delta")
    if not math.isclose(d, delta, rel_tol=1e-9):
        raise CheckpointError(
            f"checkpoint delta {d:g} differs from this run's {delta:g}; resume with delta={d:g}"
        )
    q = _finite_positive(state.get("sample_rate"), "sample_rate")
    if not math.isclose(q, sample_rate, rel_tol=1e-9):
        raise CheckpointError(
            f"checkpoint sample rate {q:.6g} differs from this run's {sample_rate:.6g}: the data "
            "loader has another batch size or data-set size; resume with the same data and batch"
        )
    n = state.get("dataset_size")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise CheckpointError(f"checkpoint dataset_size must be a positive integer, got {n!r:.60}")
    if n is not None and dataset_size is not None and n != dataset_size:
        raise CheckpointError(
            f"checkpoint was trained on {n} records but this run has {dataset_size}: resuming into "
            "another data set makes the accountant's sample rate wrong; resume with the same data"
        )
    return history


def optimizer_steps(opt_state: object) -> int | None:
    """The largest ``step`` an optimizer ``state_dict()`` records (Adam-family), else ``None``.

    >>> import torch
    >>> p = torch.nn.Parameter(torch.zeros(2)); o = torch.optim.Adam([p])
    >>> p.grad = torch.ones(2); o.step(); optimizer_steps(o.state_dict())
    1
    """
    if not isinstance(opt_state, dict):
        raise CheckpointError(f"optimizer state must be a dict, got {type(opt_state).__name__}")
    st = opt_state.get("state")
    if not isinstance(st, dict):
        raise CheckpointError("optimizer state has no 'state' dict")
    best = None
    for v in st.values():
        if not isinstance(v, dict) or "step" not in v:
            continue
        s: Any = v["step"]
        try:
            s = float(s.item() if hasattr(s, "item") else s)
        except (TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"optimizer state step {s!r:.40} is not a number") from e
        if not math.isfinite(s) or s < 0:
            raise CheckpointError(f"optimizer state step {s} is not a finite count")
        best = int(s) if best is None else max(best, int(s))
    return best
