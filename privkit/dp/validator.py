"""Which modules DP-SGD can train, and a fixer for the usual offenders.

:func:`validate_module` rejects what breaks DP-SGD that Opacus lets through: every
batch-statistics normalisation (``BatchNorm*`` including ``affine=False`` and subclasses,
``SyncBatchNorm``, ``InstanceNorm`` with running statistics), which mixes samples of a batch or
leaks them through running buffers, and trainable modules whose per-sample gradients Opacus cannot
compute - each by qualified name, with the fix. :func:`fix` replaces the batch-statistics norms
with ``GroupNorm`` (as Opacus' ``ModuleValidator.fix`` does) and reports each change.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from ..errors import DPCompatibilityError  # re-exported: defined in privkit.errors

__all__ = ["DPCompatibilityError", "check_module", "fix", "validate_module"]

log = logging.getLogger(__name__)


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


def _groups(channels: int, max_groups: int = 32) -> int:
    """The largest divisor of ``channels`` up to ``max_groups``."""
    return max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)


def fix(module: nn.Module, *, max_groups: int = 32, return_changes: bool = False) -> Any:
    """Replace every batch-statistics normalisation with a per-sample one, as Opacus'
    ``ModuleValidator.fix`` does: ``BatchNorm*`` / ``SyncBatchNorm`` -> ``GroupNorm`` over the same
    channels (the largest divisor of the channel count up to ``max_groups`` groups, same
    ``eps`` and ``affine``), ``InstanceNorm`` with running statistics -> the same norm without them.

    Returns the fixed module (the same object unless the root itself is replaced); each change is
    logged and, with ``return_changes=True``, also returned as ``(name, old, new)`` strings. The
    new norms start from fresh parameters (GroupNorm is not BatchNorm: retrain, do not reuse the
    BatchNorm statistics). Lazy norms must be materialised first (one forward pass).

    >>> from torch import nn
    >>> m, changes = fix(nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8)), return_changes=True)
    >>> type(m[1]).__name__, m[1].num_groups
    ('GroupNorm', 8)
    >>> ", ".join(name for name, old, new in changes)
    '1'
    >>> validate_module(m)
    []
    """
    from torch.nn.modules.batchnorm import _BatchNorm, _LazyNormBase
    from torch.nn.modules.instancenorm import _InstanceNorm

    changes: list[tuple[str, str, str]] = []

    def replacement(name: str, m: nn.Module) -> nn.Module | None:
        if isinstance(m, _LazyNormBase) and m.has_uninitialized_params():
            raise DPCompatibilityError([(
                name, f"{_qualname(m)} is lazy and not materialised yet",
                "run one forward pass before fix(), or use an explicit norm",
            )])
        if isinstance(m, _BatchNorm):
            c = int(m.num_features)
            g = _groups(c, max_groups)
            new: nn.Module = nn.GroupNorm(g, c, eps=m.eps, affine=m.affine)
        elif isinstance(m, _InstanceNorm) and m.track_running_stats:
            new = type(m)(m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                          track_running_stats=False)
            if m.affine:
                new.load_state_dict({"weight": m.weight.detach(), "bias": m.bias.detach()})
        else:
            return None
        ref = next(iter(m.parameters()), None)
        if ref is not None:
            new = new.to(device=ref.device, dtype=ref.dtype)
        changes.append((name or "<root>", repr(m), repr(new)))
        log.info("privkit.dp.fix: %s: %r -> %r", name or "<root>", m, new)
        return new

    root = replacement("", module)
    if root is not None:
        module = root
    else:
        for name, parent in list(module.named_modules()):
            for child_name, child in list(parent.named_children()):
                full = f"{name}.{child_name}" if name else child_name
                new = replacement(full, child)
                if new is not None:
                    setattr(parent, child_name, new)
    return (module, changes) if return_changes else module
