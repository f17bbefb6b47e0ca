"""Calibration: record the input range of every approximated non-linearity.

Polynomial approximations are valid on a bounded interval only. ``calibrate(model, data)`` runs
the model on representative inputs and sets each calibrated layer's ``bound`` to the largest
input magnitude seen times ``margin``; the encrypted program then scales inputs by that bound.

>>> import torch
>>> from privkit import nn as pnn
>>> m = torch.nn.Sequential(pnn.Conv1d(1, 2, 3), pnn.PolyReLU(degree=3), pnn.Flatten(), pnn.Linear(12, 2))
>>> bounds = pnn.calibrate(m, torch.randn(16, 1, 8))
>>> list(bounds) == ["1"] and m[1].is_calibrated
True
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["calibrate"]


def calibrate(model: torch.nn.Module, data: Any, *, margin: float = 1.1, batch_size: int = 256) -> dict[str, float]:
    """Set the input bound of every calibrated layer from ``data``; returns name -> bound.

    ``data``: a tensor of inputs (batch first) or an iterable of tensors / (x, y) batches. A
    layer's output depends on its own bound, so layers are calibrated in order, one pass each;
    layers not calibrated yet use a provisional bound (the batch's own range) meanwhile.
    """
    from .nonlinear import CALIBRATED

    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, CALIBRATED)]
    batches = list(_batches(data, batch_size))
    was_training = model.training
    model.eval()
    for _, m in layers:
        m.frozen_.fill_(False)
        m._calibrating = True
    out: dict[str, float] = {}
    try:
        for name, layer in layers:
            seen = [0.0]
            hook = layer.register_forward_pre_hook(
                lambda mod, inp: seen.__setitem__(0, max(seen[0], float(mod.observe(inp[0]))))
            )
            try:
                with torch.no_grad():
                    for batch in batches:
                        model(batch)
            finally:
                hook.remove()
            layer.set_bound(max(seen[0], 1e-6) * margin)
            layer._calibrating = False
            out[name] = float(layer.bound)
    finally:
        for _, m in layers:
            m._calibrating = False
        model.train(was_training)
    return out


def _batches(data: Any, batch_size: int):
    if isinstance(data, torch.Tensor):
        for i in range(0, len(data), batch_size):
            yield data[i : i + batch_size]
        return
    for item in data:
        yield item[0] if isinstance(item, (tuple, list)) else item
