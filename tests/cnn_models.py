"""Random CNN stacks built from the plans of ``strategies.cnn_stacks`` (shared by the compiler
property tests), and the torch forward they are compared with."""

from __future__ import annotations

import warnings

import torch

from privkit import nn as pnn


def build_stack(plan, nd, seed):
    torch.manual_seed(seed)
    conv = {1: pnn.Conv1d, 2: pnn.Conv2d, 3: pnn.Conv3d}[nd]
    bn = {1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm2d, 3: torch.nn.BatchNorm3d}[nd]
    avg = {1: pnn.AvgPool1d, 2: pnn.AvgPool2d, 3: pnn.AvgPool3d}[nd]
    layers = []
    for item in plan:
        kind = item[0]
        if kind == "conv":
            _, c, co, k, s, p = item
            layers.append(conv(c, co, k, stride=s, padding=p))
        elif kind == "bn":
            m = bn(item[1])
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
            layers.append(m)
        elif kind == "square":
            layers.append(pnn.Square())
        elif kind == "polyact":
            coeffs, per_ch = item[1], item[2]
            layers.append(pnn.PolyAct(coeffs=coeffs if per_ch else coeffs[0], per_channel=per_ch,
                                      channels=len(coeffs) if per_ch else None))
        elif kind == "relu":
            layers.append(pnn.PolyReLU(degree=3))
        elif kind == "avg":
            layers.append(avg(2))
        elif kind == "max":
            layers.append(pnn.ApproxMaxPool2d(2, degree=4))
        elif kind == "linear":
            layers += [pnn.Flatten(), pnn.Linear(item[1], item[2], method=item[3])]
    return torch.nn.Sequential(*layers).eval()


def torch_forward(model, x):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.double()(torch.tensor(x, dtype=torch.float64)[None]).numpy()[0]
