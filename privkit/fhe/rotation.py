"""Composing a rotation from the Galois keys that exist: the shortest sequence of available steps
whose sum is the wanted rotation modulo the slot count (breadth-first search over slot offsets).

>>> shortest_rotation_path(3, [1, 2], 8)
(1, 2)
>>> shortest_rotation_path(7, [-1], 8)
(-1,)
>>> shortest_rotation_path(1, [2], 8) is None
True
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

__all__ = ["shortest_rotation_path"]


def shortest_rotation_path(t: int, rotation_steps: Iterable[int], slots: int) -> tuple[int, ...] | None:
    """Steps from ``rotation_steps`` (fewest) that compose a left rotation by ``t`` (``0 < t <
    slots``) over ``slots`` cyclic slots, or None when no composition reaches it."""
    steps = sorted({s for s in rotation_steps if s % slots})
    prev: dict[int, tuple[int, int]] = {0: (0, 0)}
    queue = collections.deque([0])
    found = False
    while queue and not found:
        node = queue.popleft()
        for s in steps:
            nxt = (node + s) % slots
            if nxt not in prev:
                prev[nxt] = (node, s)
                if nxt == t:
                    found = True
                    break
                queue.append(nxt)
    if not found:
        return None
    path = []
    node = t
    while node != 0:
        node, s = prev[node]
        path.append(s)
    return tuple(reversed(path))
