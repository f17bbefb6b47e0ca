"""Operation counting for encrypted programs.

Every backend owns an :class:`OpCounter`. Each homomorphic operation records itself (kind, input
and output level); ``with counter.section("conv1"):`` attributes what happens inside to a named
section (sections nest as ``"block1/conv"``), so operators and compiled programs get per-layer
tables of adds, plaintext-ciphertext products, ciphertext products, rotations, rescales, depth
consumed and seconds for free.

>>> c = OpCounter()
>>> with c.section("layer"):
...     c.record("add"); c.record("rotation", in_level=3, out_level=3)
...     c.record("ct_mult", in_level=3, out_level=2)
>>> c.sections["layer"].adds, c.sections["layer"].rotations, c.sections["layer"].depth
(1, 1, 1)
>>> c.total.ct_mults
1
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator

__all__ = ["OpCounts", "OpCounter", "OP_KINDS"]

#: op kind -> OpCounts field
OP_KINDS = {
    "add": "adds",
    "pt_mult": "pt_mults",
    "ct_mult": "ct_mults",
    "rotation": "rotations",
    "rescale": "rescales",
    "encrypt": "encrypts",
}


@dataclasses.dataclass
class OpCounts:
    """Counts of one section (or of everything)."""

    adds: int = 0
    pt_mults: int = 0
    ct_mults: int = 0
    rotations: int = 0
    rescales: int = 0
    encrypts: int = 0
    seconds: float = 0.0
    max_in_level: int | None = None
    min_out_level: int | None = None

    @property
    def depth(self) -> int:
        """Levels consumed: highest input level seen minus lowest output level."""
        if self.max_in_level is None or self.min_out_level is None:
            return 0
        return max(0, self.max_in_level - self.min_out_level)

    @property
    def total_ops(self) -> int:
        return self.adds + self.pt_mults + self.ct_mults + self.rotations

    def _levels(self, in_level: int | None, out_level: int | None) -> None:
        if in_level is not None:
            self.max_in_level = in_level if self.max_in_level is None else max(self.max_in_level, in_level)
        if out_level is not None:
            self.min_out_level = (
                out_level if self.min_out_level is None else min(self.min_out_level, out_level)
            )

    def merge(self, other: OpCounts) -> None:
        for f in ("adds", "pt_mults", "ct_mults", "rotations", "rescales", "encrypts", "seconds"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self._levels(other.max_in_level, other.min_out_level)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "adds": self.adds,
            "pt_mults": self.pt_mults,
            "ct_mults": self.ct_mults,
            "rotations": self.rotations,
            "rescales": self.rescales,
            "depth": self.depth,
            "seconds": round(self.seconds, 6),
        }


class OpCounter:
    """Counts operations in total and per (nested) named section."""

    def __init__(self) -> None:
        self.total = OpCounts()
        self.sections: dict[str, OpCounts] = {}
        self._stack: list[str] = []

    def reset(self) -> None:
        self.total = OpCounts()
        self.sections = {}
        self._stack = []

    @property
    def current(self) -> str | None:
        return "/".join(self._stack) if self._stack else None

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[OpCounts]:
        """Attribute the operations inside the ``with`` block to ``name`` (nested: joined by /)."""
        self._stack.append(str(name))
        key = "/".join(self._stack)
        counts = self.sections.setdefault(key, OpCounts())
        t0 = time.perf_counter()
        try:
            yield counts
        finally:
            counts.seconds += time.perf_counter() - t0
            self._stack.pop()

    def record(
        self, kind: str, n: int = 1, in_level: int | None = None, out_level: int | None = None
    ) -> None:
        field = OP_KINDS[kind]
        targets = [self.total]
        for i in range(1, len(self._stack) + 1):
            targets.append(self.sections["/".join(self._stack[:i])])
        for t in targets:
            setattr(t, field, getattr(t, field) + n)
            t._levels(in_level, out_level)

    def snapshot(self) -> OpCounts:
        """A copy of the totals (to diff before/after an operator)."""
        return dataclasses.replace(self.total)

    def table(self, sections: list[str] | None = None) -> str:
        """A plain-text table of the sections (or all), one row each, plus the total."""
        names = sections if sections is not None else list(self.sections)
        head = f"{'section':<28}{'adds':>8}{'pt*ct':>8}{'ct*ct':>8}{'rots':>8}{'rescl':>8}{'depth':>7}{'sec':>10}"
        rows = [head, "-" * len(head)]
        for name in names + ["TOTAL"]:
            c = self.total if name == "TOTAL" else self.sections[name]
            secs = sum(self.sections[n].seconds for n in names if "/" not in n) if name == "TOTAL" else c.seconds
            rows.append(
                f"{name[:27]:<28}{c.adds:>8}{c.pt_mults:>8}{c.ct_mults:>8}{c.rotations:>8}"
                f"{c.rescales:>8}{c.depth:>7}{secs:>10.3f}"
            )
        return "\n".join(rows)
