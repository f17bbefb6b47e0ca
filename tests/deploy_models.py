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


def _bn_stats(bn: torch.nn.Module) -> None:
    with torch.no_grad():
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.1, 0.1)


def image_program_2d(seed: int = 0):
    """Conv2d -> BatchNorm2d -> Square -> AvgPool2d -> Conv2d -> learnable per-channel PolyAct ->
    ApproxMaxPool2d -> Flatten -> Linear(bsgs), on (1, 10, 10)."""
    torch.manual_seed(seed)
    m = torch.nn.Sequential(
        pnn.Conv2d(1, 2, 3, padding=1), torch.nn.BatchNorm2d(2), pnn.Square(), pnn.AvgPool2d(2),
        pnn.Conv2d(2, 2, 2, stride=1), pnn.PolyAct([0.1, 0.5, 0.2], learnable=True, per_channel=True, channels=2),
        pnn.ApproxMaxPool2d(2, degree=4), pnn.Flatten(), pnn.Linear(2 * 2 * 2, 3, method="bsgs"))
    _bn_stats(m[1])
    with torch.no_grad():
        m[5].coeffs.add_(torch.rand_like(m[5].coeffs) * 0.1)
    m.eval()
    pnn.calibrate(m, torch.rand(32, 1, 10, 10))
    prog = fhe.compile(m, input_shape=(1, 10, 10), params="n32768")
    prog.input_range = (0.0, 1.0)
    return prog


def image_program_3d(seed: int = 0):
    """Conv3d -> BatchNorm3d -> Square -> AvgPool3d -> Flatten -> Linear on (2, 4, 4, 4)."""
    torch.manual_seed(seed)
    m = torch.nn.Sequential(pnn.Conv3d(2, 2, 2), torch.nn.BatchNorm3d(2), pnn.Square(), pnn.AvgPool3d(3),
                            pnn.Flatten(), pnn.Linear(2, 2))
    _bn_stats(m[1])
    m.eval()
    prog = fhe.compile(m, input_shape=(2, 4, 4, 4), params="n16384")
    prog.input_range = (-1.0, 1.0)
    return prog


def box_program(seed: int = 0, input_sat: bool = True):
    """BoxConv2d (boxes fitted to a random conv) as the first layer, the client sending SATs."""
    torch.manual_seed(seed)
    box = pnn.BoxConv2d.from_conv(torch.nn.Conv2d(1, 2, 3, padding=1), max_boxes=3)
    m = torch.nn.Sequential(box, pnn.Square(), pnn.Flatten(), pnn.Linear(2 * 6 * 6, 2, method="bsgs")).eval()
    prog = fhe.compile(m, input_shape=(1, 6, 6), params="n16384", input_sat=input_sat)
    prog.input_range = (0.0, 1.0)
    return prog


def gap_program(seed: int = 0):
    """The apnea v2 head: Conv1d -> learnable PolyAct -> GlobalAvgPool1d -> Flatten -> Linear."""
    torch.manual_seed(seed)
    m = torch.nn.Sequential(pnn.Conv1d(1, 3, 5, stride=2), pnn.PolyAct(degree=2, learnable=True, per_channel=True, channels=3),
                            pnn.GlobalAvgPool1d(), pnn.Flatten(), pnn.Linear(3, 2))
    m.eval()
    prog = fhe.compile(m, input_shape=(1, 32), params="n16384")
    prog.input_range = (-2.0, 2.0)
    return prog
