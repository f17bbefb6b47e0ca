"""Polynomial activations: ``PolyAct`` (fixed or trainable ``a0 + a1 x + ... + ad x^d``) and
``Square`` (CryptoNets' / TenSEAL's ``x^2``).

They are exact (no approximation, so no calibrated range): the encrypted program computes the
same polynomial. Their lowering (``polyact`` in :mod:`privkit.fhe.compiler.rules.activation`)
runs a quadratic in ONE level by folding ``sqrt(|a2|)`` and the linear term into the conv or
linear layer before it, degree 3 in two levels and degree 4 in three.

>>> import torch
>>> act = PolyAct(coeffs=[0.0, 0.0, 1.0])
>>> act(torch.tensor([[-2.0, 3.0]])).tolist()
[[4.0, 9.0]]
>>> PolyAct(degree=2, learnable=True, per_channel=True, channels=4).coeffs.shape
torch.Size([4, 3])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ParameterError
from .layers import FHELayer, register_layer

__all__ = ["PolyAct", "Square"]

#: default coefficients: 0.5 x + 0.25 x^2 (a smooth ReLU-like start, HE-friendly networks' usual)
_DEFAULT = (0.0, 0.5, 0.25)


@register_layer
class PolyAct(nn.Module, FHELayer):
    """Polynomial activation ``sum_i coeffs[i] * x**i`` (lowest degree first), degree 1-4.

    Args:
        coeffs: the coefficients; None starts from ``0.5 x + 0.25 x^2`` (padded with zeros to
            ``degree``). With ``per_channel`` one row per channel (or one row, repeated).
        degree: used when ``coeffs`` is None.
        learnable: the coefficients are a trained ``nn.Parameter`` (else a buffer).
        per_channel: one polynomial per channel (axis 1 of the input: conv channels or linear
            features); needs ``channels``.
        channels: the number of channels when ``per_channel``.
    """

    def __init__(self, coeffs: Sequence[float] | Any = None, degree: int = 2, learnable: bool = False,
                 per_channel: bool = False, channels: int | None = None) -> None:
        super().__init__()
        if coeffs is None:
            if not 1 <= int(degree) <= 4:
                raise ParameterError(f"PolyAct degree must be in 1..4, got {degree}")
            base = (list(_DEFAULT) + [0.0] * 4)[: int(degree) + 1]
            c = torch.tensor(base, dtype=torch.float64)[None]
        else:
            c = torch.as_tensor(coeffs, dtype=torch.float64)
            c = c[None] if c.ndim == 1 else c
        if c.ndim != 2 or not 2 <= c.shape[1] <= 5:
            raise ParameterError(
                f"PolyAct coeffs must be (degree + 1,) or (channels, degree + 1) with degree 1..4, got shape "
                f"{tuple(c.shape)}")
        if not c.is_meta and not torch.isfinite(c).all():  # meta: a shape-only build (loading)
            raise ParameterError("PolyAct coeffs must be finite")
        if per_channel:
            if channels is None or int(channels) < 1:
                raise ParameterError("PolyAct(per_channel=True) needs channels=<number of channels>")
            if c.shape[0] == 1:
                c = c.repeat(int(channels), 1)
            elif c.shape[0] != int(channels):
                raise ParameterError(f"PolyAct: {c.shape[0]} coefficient rows for {channels} channels")
        elif c.shape[0] != 1:
            raise ParameterError("PolyAct: several coefficient rows need per_channel=True")
        c = c.float()
        if learnable:
            self.coeffs = nn.Parameter(c)
        else:
            self.register_buffer("coeffs", c)
        self.per_channel = bool(per_channel)
        self.learnable = bool(learnable)

    @property
    def degree(self) -> int:
        return int(self.coeffs.shape[1]) - 1

    @property
    def depth(self) -> int:
        """Levels of the encrypted form on its own (asked of the lowering registry); a
        quadratic after a conv / linear layer costs one level once the compiler folds it."""
        from ..fhe.compiler.lowering import lowering_depth

        return int(lowering_depth(self.fhe_spec()))

    def extra_repr(self) -> str:
        rows = self.coeffs.detach().double().tolist()
        shown = rows[0] if len(rows) == 1 else f"{len(rows)} channels"
        return f"coeffs={shown}, learnable={self.learnable}, depth={self.depth}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.coeffs.to(x.dtype)
        if self.per_channel:
            if x.ndim < 2 or x.shape[1] != c.shape[0]:
                raise ParameterError(f"PolyAct has {c.shape[0]} channels, the input {tuple(x.shape)}")
            c = c.reshape((1, c.shape[0]) + (1,) * (x.ndim - 2) + (c.shape[1],))
        else:
            c = c[0]
        y = torch.zeros_like(x) + c[..., -1]
        for i in range(c.shape[-1] - 2, -1, -1):
            y = y * x + c[..., i]
        return y

    def fhe_spec(self) -> dict[str, Any]:
        return {"op": "polyact", "coeffs": self.coeffs.detach().double().cpu().numpy()}


@register_layer
class Square(PolyAct):
    """``x^2``, CryptoNets' / TenSEAL's activation: one ciphertext square (one level)."""

    def __init__(self) -> None:
        super().__init__(coeffs=[0.0, 0.0, 1.0])

    def extra_repr(self) -> str:
        return f"depth={self.depth}"
