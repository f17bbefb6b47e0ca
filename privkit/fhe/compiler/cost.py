"""A simple latency model of compiled programs, for ``params="auto"``'s packing choice.

``estimate_seconds(program)`` runs the program once on the simulator (exact operation counts
per layer, no encryption) and prices every operation with :data:`UNIT_COSTS`: seconds of one
SEAL operation at ring size ``N`` and level ``l``, ``a + b * l``, measured once per ring by

    python bench/unit_costs.py

(SEAL through TenSEAL, one thread; the numbers are a model, not a promise: real runs add
plaintext-encoding caches, memory traffic and the machine's load). Each layer's operations are
priced at the level its input has when the program runs (:meth:`EncryptedProgram.start_level`).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

__all__ = ["UNIT_COSTS", "unit_cost", "estimate_seconds"]

#: N -> op -> {level: median seconds of one operation} (from ``python bench/unit_costs.py``, see
#: the module docstring); levels in between are interpolated linearly, beyond them extrapolated
#: from the last two
UNIT_COSTS: dict[int, dict[str, dict[int, float]]] = {
    8192: {"rotation": {1: 1.2e-3, 3: 2.7e-3}, "pt_mult": {1: 5.1e-4, 3: 9.0e-4},
           "ct_mult": {1: 1.6e-3, 3: 7.6e-3}, "add": {1: 3.9e-5, 3: 6.8e-5}},
}


def unit_cost(n: int, op: str, level: int) -> float:
    """Seconds of one ``op`` ("rotation", "pt_mult", "ct_mult", "add") at ring ``n``, ``level``.

    A ring missing from the table is extrapolated from the nearest one (cost ~ N log N).

    >>> unit_cost(8192, "rotation", 1) < unit_cost(8192, "rotation", 3)
    True
    """
    near = n if n in UNIT_COSTS else min(UNIT_COSTS, key=lambda k: abs(np.log2(k) - np.log2(n)))
    table = UNIT_COSTS[near][op]
    lv = sorted(table)
    t = [table[v] for v in lv]
    if len(lv) == 1:
        cost = t[0]
    elif level <= lv[-1]:
        cost = float(np.interp(max(level, 0), lv, t))
    else:  # beyond the top measured level: the slope of the last two
        cost = t[-1] + (t[-1] - t[-2]) / (lv[-1] - lv[-2]) * (level - lv[-1])
    return max(cost, 0.0) * ((n * np.log2(n)) / (near * np.log2(near)))


def estimate_seconds(program: Any) -> tuple[float, dict[str, int]]:
    """(estimated seconds of one :meth:`run` on SEAL, total operation counts) of ``program``."""
    from ..keys import KeySet

    keys = KeySet.generate(program.params, backend="sim", rotations=program.rotations,
                           conjugation=program.conjugation)
    cts = [keys.encrypt(np.zeros(lay.span)) for lay in program.input_layouts]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program.run(cts if program.multi else cts[0], keys.public_bundle(), backend=keys.backend,
                    allow_insecure=True)
    reports = program._last
    n = program.params.poly_degree
    total = 0.0
    counts = {"rotations": 0, "pt_mults": 0, "ct_mults": 0, "adds": 0}
    for r in reports:
        lv = r.level_after + r.depth
        total += (r.rotations * unit_cost(n, "rotation", lv) + r.pt_mults * unit_cost(n, "pt_mult", lv)
                  + r.ct_mults * unit_cost(n, "ct_mult", lv) + r.adds * unit_cost(n, "add", lv))
        for k in counts:
            counts[k] += getattr(r, k)
    program._last = []
    return total, counts
