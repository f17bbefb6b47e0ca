"""Depth planner: how many levels a chain of encrypted operators consumes, and whether it fits.

A chain is a list of operator specs (:class:`OpSpec`, or plain dicts ``{"op": ..., **params}``,
or ``(op, params)`` pairs). :func:`op_depth` gives the levels one spec consumes, exactly as the
operator will (each operator's ``*_depth`` function); :func:`plan_depth` walks the chain from a
fresh ciphertext of the given parameters; :func:`check_depth` raises
:class:`~privkit.errors.DepthExhaustedError` naming the step where levels run out, what it
needed, what was left, the presets that would fit the whole chain, and cheaper settings of the
failing step that would fit (lower precision, degree or iterations; a gapped pool layout).

The planner knows the operators listed in its own table (polynomials, sign/ReLU, max/abs,
pooling); no other module registers into it today (the compiler takes each layer's level cost
from its lowering instead). :func:`register_op_depth` teaches it another operator, and
``{"op": "levels", "levels": k}`` stands for anything with a known cost.

>>> chain = [OpSpec.of("relu_poly", degree=7), OpSpec.of("max_pool1d", n=16, iterations=2)]
>>> plan = plan_depth(chain, "n16384")
>>> plan.total, plan.available, plan.fits
(10, 8, False)
>>> print(plan.table())  # doctest: +NORMALIZE_WHITESPACE
step  name        op          levels  level in  level out
0     relu_poly   relu_poly        3         8          5
1     max_pool1d  max_pool1d       7         5         -2  <- exhausted
total 10 of 8 (CKKS N=16384 depth 8): does NOT fit
>>> check_depth(chain, "n16384")
Traceback (most recent call last):
...
privkit.errors.DepthExhaustedError: multiplicative depth exhausted in step 1 'max_pool1d' (max_pool1d): needs 7 more level(s) but the ciphertext has 5 left; steps 0..0 use 3 level(s); with 5 left, step 1 would fit with layout=gapped (4 levels); the whole chain needs 10: presets that fit it: n32768 (depth 19)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ...errors import DepthExhaustedError, ParameterError
from ..params import PRESETS, CKKSParams
from . import poly as _poly
from . import pool as _pool

__all__ = ["DepthPlan", "OpSpec", "check_depth", "op_depth", "plan_depth", "register_op_depth"]


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One step of a chain: the operator name, its settings and an optional label."""

    op: str
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    name: str | None = None

    @classmethod
    def of(cls, op: str, name: str | None = None, **params: Any) -> OpSpec:
        return cls(op, dict(params), name)

    @classmethod
    def coerce(cls, spec: OpSpec | Mapping[str, Any] | tuple[str, Mapping[str, Any]]) -> OpSpec:
        if isinstance(spec, OpSpec):
            return spec
        if isinstance(spec, Mapping):
            d = dict(spec)
            if "op" not in d:
                raise ParameterError(f"an operator spec needs an 'op' key, got {spec!r}")
            op, name = d.pop("op"), d.pop("name", None)
            return cls(str(op), d, name)
        if isinstance(spec, tuple) and len(spec) == 2:
            return cls(str(spec[0]), dict(spec[1]))
        raise ParameterError(f"cannot read an operator spec from {spec!r}")

    @property
    def label(self) -> str:
        return self.name or self.op


def _g(p: Mapping[str, Any], key: str, default: Any) -> Any:
    return p.get(key, default)


_DEPTH: dict[str, Callable[[Mapping[str, Any]], int]] = {
    "levels": lambda p: int(p["levels"]),
    "mask": lambda p: 1,
    "relu_composite": lambda p: _poly.relu_composite_depth(
        _g(p, "scale", 1.0), _g(p, "precision_bits", 8), _g(p, "family", "compg"), _g(p, "n", None)),
    "relu_poly": lambda p: _poly.relu_poly_depth(p["degree"], _g(p, "bound", 1.0)),
    "poly_eval": lambda p: _poly.poly_depth(
        p["degree"] if "degree" in p else len(_poly._trim(p["coeffs"])) - 1,
        _g(p, "basis", "power"), _g(p, "interval", (-1.0, 1.0))),
    "sign_composite": lambda p: _poly.sign_composite_depth(
        p["alpha"], p["gap"], _g(p, "bound", 1.0), _g(p, "family", "compg"), _g(p, "n", None)),
    "sqrt": lambda p: _poly.sqrt_depth(_g(p, "iterations", 3), _g(p, "bound", 1.0)),
    "abs_poly": lambda p: _poly.abs_poly_depth(_g(p, "degree", 8), _g(p, "bound", 1.0)),
    "approx_max": lambda p: _poly.approx_max_depth(
        _g(p, "method", "sqrt"), _g(p, "iterations", None), _g(p, "degree", None), _g(p, "bound", 1.0)),
    "max_pool1d": lambda p: _pool.max_pool1d_depth(
        p["n"], _g(p, "kernel", 2), _g(p, "stride", 2), _g(p, "method", "sqrt"), _g(p, "bound", 1.0),
        _g(p, "iterations", None), _g(p, "degree", None), _g(p, "layout", "compact"), _g(p, "gap", 1)),
    "avg_pool1d": lambda p: _pool.avg_pool1d_depth(
        p["n"], _g(p, "kernel", 2), _g(p, "stride", 2), _g(p, "layout", "compact"), _g(p, "gap", 1)),
    "max_pool2d": lambda p: _pool.max_pool2d_depth(
        p["shape"], _g(p, "kernel", 2), _g(p, "stride", None), _g(p, "method", "sqrt"),
        _g(p, "bound", 1.0), _g(p, "iterations", None), _g(p, "degree", None)),
}


def register_op_depth(op: str, fn: Callable[[Mapping[str, Any]], int]) -> None:
    """Teach the planner an operator: ``fn(params) -> levels``."""
    _DEPTH[str(op)] = fn


def op_depth(spec: OpSpec | Mapping[str, Any] | tuple[str, Mapping[str, Any]]) -> int:
    """Levels one operator spec consumes."""
    s = OpSpec.coerce(spec)
    fn = _DEPTH.get(s.op)
    if fn is None:
        raise ParameterError(
            f"the depth planner does not know operator {s.op!r}; known: {sorted(_DEPTH)} "
            "(register_op_depth adds one, or use {'op': 'levels', 'levels': k})"
        )
    try:
        return int(fn(s.params))
    except KeyError as e:
        raise ParameterError(f"operator spec {s.label!r} ({s.op}) lacks the setting {e.args[0]!r}") from e


#: settings tried, in order, for a cheaper variant of a failing step: (key, candidates)
_CHEAPER: list[tuple[str, Callable[[Any], list[Any]]]] = [
    ("layout", lambda v: ["gapped"] if v in (None, "compact") else []),
    ("precision_bits", lambda v: [b for b in range(int(v if v is not None else 8) - 1, 1, -1)]),
    ("iterations", lambda v: list(range(int(v if v is not None else 3) - 1, 0, -1))),
    ("degree", lambda v: list(range(int(v) - 1, 1, -1)) if v is not None else []),
]


def _cheaper(spec: OpSpec, left: int) -> list[str]:
    out = []
    for key, cands in _CHEAPER:
        if key == "layout" and spec.op not in ("max_pool1d", "avg_pool1d"):
            continue
        if key == "precision_bits" and spec.op != "relu_composite":
            continue
        if key == "iterations" and spec.op not in ("sqrt", "approx_max", "max_pool1d", "max_pool2d"):
            continue
        if key == "iterations" and spec.params.get("method", "sqrt") != "sqrt":
            continue
        if key == "degree" and spec.op not in ("relu_poly", "abs_poly", "approx_max", "max_pool1d", "max_pool2d"):
            continue
        if key == "degree" and spec.op != "relu_poly" and spec.params.get("method", "sqrt") != "poly" and spec.op != "abs_poly":
            continue
        for v in cands(spec.params.get(key)):
            if key == "degree" and spec.op != "relu_poly" and v % 2:
                continue
            alt = OpSpec(spec.op, {**spec.params, key: v}, spec.name)
            try:
                d = op_depth(alt)
            except Exception:  # noqa: BLE001, S112 - an invalid variant is simply no suggestion
                continue
            if d <= left:
                out.append(f"{key}={v} ({d} levels)")
                break
    return out


@dataclasses.dataclass
class DepthPlan:
    """The planner's answer: one row per step and whether the chain fits."""

    params: CKKSParams
    start_level: int
    rows: list[dict[str, Any]]
    specs: list[OpSpec]

    @property
    def total(self) -> int:
        return sum(r["levels"] for r in self.rows)

    @property
    def available(self) -> int:
        return self.start_level

    @property
    def fits(self) -> bool:
        return self.total <= self.start_level

    @property
    def spare(self) -> int:
        return self.start_level - self.total

    @property
    def failing_step(self) -> int | None:
        """Index of the first step that runs out of levels (None when the chain fits)."""
        for i, r in enumerate(self.rows):
            if r["level_out"] < 0:
                return i
        return None

    def presets_that_fit(self) -> list[str]:
        return [n for n in PRESETS if CKKSParams.preset(n).depth >= self.total]

    def table(self) -> str:
        w = max([len("name")] + [len(r["name"]) for r in self.rows]) + 2
        wo = max([len("op")] + [len(r["op"]) for r in self.rows]) + 2
        lines = [f"{'step':<6}{'name':<{w}}{'op':<{wo}}{'levels':>6}{'level in':>10}{'level out':>11}"]
        fail = self.failing_step
        for i, r in enumerate(self.rows):
            mark = "  <- exhausted" if i == fail else ""
            lines.append(f"{i:<6}{r['name']:<{w}}{r['op']:<{wo}}{r['levels']:>6}{r['level_in']:>10}"
                         f"{r['level_out']:>11}{mark}")
        verdict = "fits" if self.fits else "does NOT fit"
        lines.append(f"total {self.total} of {self.available} (CKKS N={self.params.poly_degree} depth "
                     f"{self.params.depth}): {verdict}")
        return "\n".join(lines)

    def error(self) -> DepthExhaustedError | None:
        i = self.failing_step
        if i is None:
            return None
        r, spec = self.rows[i], self.specs[i]
        left = r["level_in"]
        hints = [f"steps 0..{i - 1} use {self.start_level - left} level(s)" if i else "it is the first step"]
        alt = _cheaper(spec, left)
        if alt:
            hints.append(f"with {left} left, step {i} would fit with " + " or ".join(alt))
        fit = self.presets_that_fit()
        hints.append(f"the whole chain needs {self.total}: presets that fit it: "
                     + (", ".join(f"{n} (depth {CKKSParams.preset(n).depth})" for n in fit) if fit
                        else "none (use fewer or cheaper non-linearities, or split the network)"))
        return DepthExhaustedError(
            needed=r["levels"], available=left, where=f"step {i} {r['name']!r} ({r['op']})",
            hint="; ".join(hints),
        )

    def raise_if_exhausted(self) -> DepthPlan:
        err = self.error()
        if err is not None:
            raise err
        return self


def plan_depth(
    chain: Iterable[OpSpec | Mapping[str, Any] | tuple[str, Mapping[str, Any]]],
    params: CKKSParams | str,
    start_level: int | None = None,
) -> DepthPlan:
    """Levels of every step of ``chain`` from a ciphertext at ``start_level`` (default: fresh)."""
    p = CKKSParams.coerce(params)
    level = p.depth if start_level is None else int(start_level)
    specs = [OpSpec.coerce(s) for s in chain]
    rows = []
    for s in specs:
        d = op_depth(s)
        rows.append({"name": s.label, "op": s.op, "levels": d, "level_in": level, "level_out": level - d})
        level -= d
    return DepthPlan(p, p.depth if start_level is None else int(start_level), rows, specs)


def check_depth(
    chain: Iterable[OpSpec | Mapping[str, Any] | tuple[str, Mapping[str, Any]]],
    params: CKKSParams | str,
    start_level: int | None = None,
) -> DepthPlan:
    """:func:`plan_depth`, raising :class:`DepthExhaustedError` (where, what, what would fit)."""
    return plan_depth(chain, params, start_level).raise_if_exhausted()
