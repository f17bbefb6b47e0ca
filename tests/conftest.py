"""Shared pytest configuration: hypothesis profiles and seeds that reproduce."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# both `from .strategies import x` and `from strategies import x` work in test modules
sys.path.insert(0, str(Path(__file__).parent))

# 'dev' explores; 'ci' is derandomised so CI runs are reproducible. Select with
# HYPOTHESIS_PROFILE=dev|ci (CI sets ci).
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=25, print_blob=True)
settings.register_profile("dev", deadline=None, max_examples=25, print_blob=True)
settings.register_profile("thorough", deadline=None, max_examples=300, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(autouse=True)
def _seed_everything(request):
    """Seed numpy/random/torch per test from the test's name, and print it so failures reproduce."""
    seed = abs(hash(request.node.nodeid)) % (2**31) if os.environ.get("PRIVKIT_RANDOM_SEEDS") else 1234
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    print(f"[seed {seed}]")
    yield
