"""privkit.nn: torch layers whose forward is the exact plaintext twin of their encrypted form.

Build an ordinary ``torch.nn.Sequential`` from these layers, train it (the approximations are
inside training), ``calibrate`` it, and compile it with :func:`privkit.fhe.compile`.
"""

from __future__ import annotations

from .activations import PolyAct, Square
from .box import BoxConv1d, BoxConv2d, BoxConv3d, BoxReplacementReport, replace_conv_with_box
from .calibrate import calibrate
from .compat import Incompatibility, check_fhe_compatible, make_fhe_compatible
from .layers import (
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    Conv1d,
    Conv2d,
    Conv3d,
    Flatten,
    GlobalAvgPool1d,
    Linear,
    register_layer,
    registered_layers,
)
from .nonlinear import ApproxMaxPool1d, ApproxMaxPool2d, PolyReLU

__all__ = [
    "BoxConv1d",
    "BoxConv2d",
    "BoxConv3d",
    "BoxReplacementReport",
    "replace_conv_with_box",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "Linear",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "GlobalAvgPool1d",
    "Flatten",
    "PolyReLU",
    "PolyAct",
    "Square",
    "ApproxMaxPool1d",
    "ApproxMaxPool2d",
    "calibrate",
    "check_fhe_compatible",
    "make_fhe_compatible",
    "register_layer",
    "registered_layers",
    "Incompatibility",
]
