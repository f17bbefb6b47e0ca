"""A simple latency model of compiled programs, for ``params="auto"``'s packing choice.

``estimate_seconds(program)`` runs the program once on the simulator (exact operation counts
per layer, no encryption) and prices every operation with :data:`UNIT_COSTS`: seconds of one
SEAL operation at ring size ``N`` and level ``l``, ``a + b * l``, measured once per ring by

    python bench/unit_costs.py

(SEAL through TenSEAL; the numbers are a model, not a promise: real runs add
plaintext-encoding caches, memory traffic and the machine's load). Each layer's operations are
priced at the level its input has when the program runs (:meth:`EncryptedProgram.start_level`).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

__all__ = ["UNIT_COSTS", "unit_cost", "estimate_seconds"]

#: N -> op -> {level: seconds of one operation} (the fastest of 15 runs, printed by
#: ``python bench/unit_costs.py`` on 2026-12-05, SEAL via TenSEAL on a shared 2-core x86
#: machine); levels in between are interpolated linearly, beyond them extrapolated
#: from the last two
UNIT_COSTS: dict[int, dict[str, dict[int, float]]] = {
    8192: {
        "rotation": {1: 1.168e-03, 2: 1.871e-03, 3: 2.667e-03},
        "pt_mult": {1: 4.954e-04, 2: 7.209e-04, 3: 8.890e-04},
        "ct_mult": {1: 1.596e-03, 2: 2.615e-03, 3: 3.505e-03},
        "add": {1: 3.933e-05, 2: 5.892e-05, 3: 7.270e-05},
    },
    16384: {
        "rotation": {1: 2.305e-03, 2: 3.786e-03, 4: 7.759e-03, 8: 2.432e-02},
        "pt_mult": {1: 1.037e-03, 2: 1.445e-03, 4: 2.437e-03, 8: 4.422e-03},
        "ct_mult": {1: 3.318e-03, 2: 5.231e-03, 4: 1.068e-02, 8: 2.899e-02},
        "add": {1: 6.890e-05, 2: 1.102e-04, 4: 2.307e-04, 8: 4.713e-04},
    },
    32768: {
        "rotation": {1: 5.069e-03, 2: 8.558e-03, 4: 1.853e-02, 8: 5.150e-02, 16: 1.532e-01, 19: 2.113e-01},
        "pt_mult": {1: 2.119e-03, 2: 3.117e-03, 4: 5.077e-03, 8: 8.911e-03, 16: 1.751e-02, 19: 2.299e-02},
        "ct_mult": {1: 7.274e-03, 2: 1.191e-02, 4: 2.447e-02, 8: 6.068e-02, 16: 1.727e-01, 19: 2.332e-01},
        "add": {1: 1.681e-04, 2: 3.008e-04, 4: 5.245e-04, 8: 1.010e-03, 16: 1.775e-03, 19: 2.102e-03},
    },
}


def unit_cost(n: int, op: str, level: int) -> float:
    """Seconds of one ``op`` ("rotation", "pt_mult", "ct_mult", "add") at ring ``n``, ``level``.

    A ring missing from the table is extrapolated from the nearest one (cost ~ N log N).

    >>> unit_cost(8192, "rotation", 1) < unit_cost(8192, "rotation", 3) < unit_cost(32768, "rotation", 3)
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
    return float(max(cost, 0.0) * ((n * np.log2(n)) / (near * np.log2(near))))


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
