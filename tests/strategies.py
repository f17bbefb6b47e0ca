"""Shared hypothesis strategies. Each section belongs to the module it tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

# -- foundation (backends) -------------------------------------------------------------------


def real_vectors(max_len: int = 64, bound: float = 4.0, min_len: int = 1):
    """1-D float64 arrays with finite values in [-bound, bound]."""
    return hnp.arrays(
        np.float64,
        st.integers(min_len, max_len),
        elements=st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=32),
    )


def vector_pairs(max_len: int = 64, bound: float = 4.0):
    """Two real vectors of the same length."""
    return st.integers(1, max_len).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.float64, n, elements=st.floats(-bound, bound, width=32)),
            hnp.arrays(np.float64, n, elements=st.floats(-bound, bound, width=32)),
        )
    )
