"""Small calibrated models shared by the deploy tests."""

from __future__ import annotations

import torch

from privkit import fhe
from privkit import nn as pnn


def small_model(seed: int = 0) -> torch.nn.Sequential:
    """conv -> BatchNorm (folded) -> PolyReLU -> avg pool -> linear: every saved-state kind."""
    torch.manual_seed(seed)
    m = torch.nn.Sequential(pnn.Conv1d(1, 2, 3), torch.nn.BatchNorm1d(2), pnn.PolyReLU(degree=3),
                            pnn.AvgPool1d(2), pnn.Flatten(), pnn.Linear(2 * 7, 2))
    with torch.no_grad():
        m[1].running_mean.uniform_(-0.2, 0.2)
        m[1].running_var.uniform_(0.5, 1.5)
        m[1].weight.uniform_(0.5, 1.5)
        m[1].bias.uniform_(-0.1, 0.1)
    m.eval()
    pnn.calibrate(m, torch.randn(64, 1, 16))
    return m


def small_program(seed: int = 0, params: str = "n16384"):
    prog = fhe.compile(small_model(seed), input_shape=(1, 16), params=params)
    prog.input_range = (-4.0, 4.0)
    return prog


def tiny_seal_program():
    """Depth 3, fits n8192 (fast real-SEAL tests)."""
    torch.manual_seed(1)
    m = torch.nn.Sequential(pnn.Conv1d(1, 2, 3), pnn.AvgPool1d(2), pnn.Flatten(), pnn.Linear(2 * 7, 2))
    return fhe.compile(m, input_shape=(1, 16), params="n8192")


def weights_of(program) -> list[float]:
    """Every float in the model's state (weights, biases, BatchNorm statistics, bounds)."""
    out = []
    for t in program._reference.state_dict().values():
        if t.dtype.is_floating_point:
            out += [float(v) for v in t.detach().double().flatten()]
    return out
