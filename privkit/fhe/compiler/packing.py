"""Choosing the packing of a model that does not fit one ciphertext of the smallest ring.

For each candidate preset (smallest first) :func:`compile_packed` tries one ciphertext and, when
that lacks slots, channel groups over several ciphertexts (:mod:`.multi`), and stops at the
first preset that holds the model in one ciphertext. With ``params="auto"`` and more than one
fitting option it keeps the one of least estimated latency (:mod:`.cost`) and records why in
:attr:`EncryptedProgram.choice` (``plan_table()`` prints it).
"""

from __future__ import annotations

from typing import Any

from ...errors import ParameterError, ShapeError, UnsupportedLayerError
from ..params import PRESETS, CKKSParams
from ..program import EncryptedProgram

__all__ = ["compile_packed"]


def _multi_fitting(items: list[Any], input_shape: tuple[int, ...], slots: int, cpc: int | None,
                   max_cts: int | None) -> Any:
    from .multi import plan_multi

    grow = 1
    while True:
        try:
            return plan_multi(items, input_shape, slots, grow, cpc, max_cts)
        except ShapeError as e:
            if "leaves no room for padding" not in str(e) or grow >= slots:
                raise
            grow *= 2


def _describe(prog: EncryptedProgram) -> str:
    n = prog.params.poly_degree
    k = prog.ciphertexts
    return f"{k} ciphertext{'s' if k > 1 else ''} at N={n}"


def compile_packed(ref: Any, items: list[Any], input_shape: tuple[int, ...], candidates: list[CKKSParams],
                   auto: bool, batch: int, sat: Any, max_cts: int | None, cpc: int | None) -> EncryptedProgram:
    """Compile with one or several ciphertexts per activation (see the module docstring)."""
    from .core import _depth_error, _plan_fitting

    forced = cpc is not None
    can_split = batch == 1 and sat is None and max_cts != 1
    if forced and not can_split:
        raise ParameterError(
            f"channels_per_ciphertext splits channels over ciphertexts, which supports batch=1 "
            f"without input_sat (got batch={batch}, input_sat={sat is not None})")
    options: list[EncryptedProgram] = []
    reasons: list[str] = []
    need_depth: int | None = None
    refused: Exception | None = None
    depth_err: Exception | None = None
    for p in candidates:
        if not forced:
            try:
                steps, in_layout, outs = _plan_fitting(items, input_shape, p.slots, batch, sat)
                need = sum(s.depth for s in steps)
                need_depth = need
                if need <= p.depth:
                    options.append(EncryptedProgram(p, steps, in_layout, input_shape, outs // batch, False,
                                                    reference=ref, batch=batch,
                                                    input_encoding=("sat", sat) if sat else None))
                    break  # one ciphertext fits: larger rings only cost more
                reasons.append(f"{p.name}: depth {need} > {p.depth}")
                depth_err = _depth_error(steps, p, auto=auto)
                if not auto:
                    raise depth_err
                continue  # the same depth split over several ciphertexts does not fit either
            except ShapeError as e:
                depth_err = None
                reasons.append(f"{p.name}, 1 ciphertext: {e}")
        if not can_split:
            continue
        try:
            steps, in_layouts, outs, cap = _multi_fitting(items, input_shape, p.slots, cpc, max_cts)
        except UnsupportedLayerError as e:
            refused = e
            reasons.append(f"{p.name}, several ciphertexts: {e}")
            continue
        except ShapeError as e:
            reasons.append(f"{p.name}, several ciphertexts: {e}")
            continue
        need = sum(s.depth for s in steps)
        need_depth = need
        if need > p.depth:
            reasons.append(f"{p.name}, several ciphertexts: depth {need} > {p.depth}")
            if not auto:
                raise _depth_error(steps, p, auto=False)
            continue
        prog = EncryptedProgram(p, steps, in_layouts[0], input_shape, outs, False, reference=ref,
                                input_layouts=in_layouts)
        prog._group_cap = cap
        options.append(prog)
        if forced:
            break
    if not options:
        if depth_err is not None:  # the largest ring held the model in one ciphertext but not its depth
            raise depth_err
        if not can_split:
            raise ShapeError(
                ("the model does not fit any preset: " if auto else f"the model does not fit {candidates[0].name}: ")
                + "; ".join(reasons) + (f"; packing across several ciphertexts supports batch=1 without "
                                        f"input_sat (got batch={batch}, input_sat={sat is not None})"
                                        if max_cts != 1 else ""))
        if refused is not None and all("several" not in r or "does not support" in r for r in reasons):
            raise refused
        fits = [n for n in PRESETS if need_depth is None or CKKSParams.preset(n).depth >= need_depth]
        hint = (f"the model needs {need_depth} levels; presets with that depth: {', '.join(fits) or 'none'}. "
                if need_depth is not None else "")
        raise ShapeError(
            ("the model does not fit any preset: " if auto else f"the model does not fit {candidates[0].name}: ")
            + "; ".join(reasons) + ". " + hint
            + "Fewer channels, a smaller input, strides or pools earlier, or a larger "
              "max_ciphertexts would fit")
    if len(options) == 1:
        best = options[0]
        if auto and best.multi and not forced:
            best.choice = (f"{_describe(best)}: one ciphertext fits no preset of enough depth "
                           f"({'; '.join(reasons)})")
        return best
    from .cost import estimate_seconds

    est = [(estimate_seconds(o)[0], o) for o in options]
    est.sort(key=lambda t: t[0])
    best = est[0][1]
    best.choice = ("chose " + _describe(best) + f" (est. {est[0][0]:.2f} s) over "
                   + ", ".join(f"{_describe(o)} (est. {t:.2f} s)" for t, o in est[1:])
                   + " by the SEAL cost model (privkit.fhe.compiler.cost)")
    return best

