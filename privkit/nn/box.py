"""Box-filter convolutions: ``BoxConv1d/2d/3d`` and the tool that swaps every ``ConvNd`` for one.

Every kernel ``W[o, i]`` of the layer is a weighted sum of boxes,
``W[o, i] = sum_j alpha_j 1[lo_j <= k < hi_j]`` (:mod:`privkit.fhe.ops.boxes`), and ``forward``
convolves with exactly that kernel, so training and evaluation see what the encrypted layer
(:func:`privkit.fhe.ops.sat.conv_sat`, ``m`` multiplications per output instead of
``prod(kernel_size)``) computes.

**Design.** The boxes (corners) are fixed when the layer is built; the scales ``alpha`` are an
``nn.Parameter`` (one per box) and train like ordinary weights. So a layer can be

* converted from a trained convolution (:meth:`BoxConv2d.from_conv`: greedy boxes + least-squares
  scales for each kernel, then optionally fine-tuned), or
* trained directly: ``BoxConv2d(3, 8, 5)`` draws PyTorch's default initial kernels, fits boxes to
  them with ``tol`` / ``max_boxes``, and from then on learns the scales.

:meth:`boxsets` returns the current ``C_out x C_in`` grid of :class:`BoxFilterSet` that
:func:`~privkit.fhe.ops.sat.conv_sat` takes, and :meth:`forward_encrypted` runs it.
Only ``groups=1``, ``dilation=1`` and zero padding are supported.

>>> import torch
>>> conv = torch.nn.Conv2d(2, 3, 3, padding=1)
>>> box = BoxConv2d.from_conv(conv, tol=0.0)          # exact: as many boxes as needed
>>> x = torch.randn(1, 2, 6, 6)
>>> bool(torch.allclose(box(x), conv(x), atol=1e-5))
True
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ParameterError, ShapeError, UnsupportedLayerError
from ..fhe.ops.boxes import Box, BoxFilterSet, approximate_kernel

__all__ = [
    "BoxConv1d",
    "BoxConv2d",
    "BoxConv3d",
    "BoxReplacementReport",
    "replace_conv_with_box",
]

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_FUNC = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _tuple(v: Any, n: int, what: str) -> tuple[int, ...]:
    if isinstance(v, (int, np.integer)):
        return (int(v),) * n
    t = tuple(int(a) for a in v)
    if len(t) != n:
        raise ShapeError(f"{what} needs {n} entries, got {v!r}")
    return t


class _BoxConvNd(nn.Module):
    ndim: int = 0

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = 0,
        bias: bool = True,
        *,
        tol: float = 0.01,
        max_boxes: int | None = None,
        boxsets: Sequence[Sequence[BoxFilterSet]] | None = None,
    ) -> None:
        super().__init__()
        n = self.ndim
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _tuple(kernel_size, n, "kernel_size")
        self.stride = _tuple(stride, n, "stride")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ParameterError(f"padding must be an int, a tuple, 'same' or 'valid', got {padding!r}")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ParameterError("padding='same' needs stride 1")
            self.padding: tuple[int, ...] | str = padding
        else:
            self.padding = _tuple(padding, n, "padding")
        self.tol, self.max_boxes = tol, max_boxes
        if boxsets is None:  # direct training: fit boxes to PyTorch's default initial kernels
            init = _CONV[n](self.in_channels, self.out_channels, self.kernel_size, bias=bias)
            boxsets = _approximate_weight(init.weight.detach(), tol, max_boxes)
            init_bias = None if init.bias is None else init.bias.detach().clone()
        else:
            init_bias = torch.zeros(self.out_channels) if bias else None
        self._set_boxes(boxsets)
        self.bias = nn.Parameter(init_bias) if init_bias is not None else None

    # -- boxes <-> tensors ---------------------------------------------------------------------
    def _set_boxes(self, boxsets: Sequence[Sequence[BoxFilterSet]]) -> None:
        co, ci = self.out_channels, self.in_channels
        if len(boxsets) != co or any(len(r) != ci for r in boxsets):
            raise ShapeError(f"boxsets must be a {co} x {ci} grid (out x in channels)")
        masks, pair, alphas, corners = [], [], [], []
        for o in range(co):
            for i in range(ci):
                bs = boxsets[o][i]
                if bs.shape != self.kernel_size:
                    raise ShapeError(f"box set of shape {bs.shape} for a {self.kernel_size} kernel")
                for b in bs.boxes:
                    m = torch.zeros(self.kernel_size, dtype=torch.float32)
                    m[b.slices] = 1.0
                    masks.append(m)
                    pair.append(o * ci + i)
                    alphas.append(b.alpha)
                    corners.append(list(b.lo) + list(b.hi))
        k = self.kernel_size
        self.register_buffer("box_masks", torch.stack(masks) if masks else torch.zeros((0,) + k))
        self.register_buffer("box_pair", torch.tensor(pair, dtype=torch.long))
        self.register_buffer("box_corners", torch.tensor(corners, dtype=torch.long).reshape(-1, 2 * self.ndim))
        self.alpha = nn.Parameter(torch.tensor(alphas, dtype=torch.float32))

    def dense_weight(self) -> torch.Tensor:
        """The kernels ``(C_out, C_in, *kernel_size)`` rebuilt from the boxes and scales."""
        co, ci = self.out_channels, self.in_channels
        w = torch.zeros((co * ci,) + self.kernel_size, dtype=self.alpha.dtype, device=self.alpha.device)
        scaled = self.alpha.view((-1,) + (1,) * self.ndim) * self.box_masks.to(self.alpha.dtype)
        w = w.index_add(0, self.box_pair, scaled)
        return w.view((co, ci) + self.kernel_size)

    def boxsets(self) -> list[list[BoxFilterSet]]:
        """The current ``C_out x C_in`` grid of box sets (scales as trained) for ``conv_sat``."""
        n = self.ndim
        grid: list[list[list[Box]]] = [[[] for _ in range(self.in_channels)] for _ in range(self.out_channels)]
        alphas = self.alpha.detach().double().cpu().numpy()
        for j, (p, c) in enumerate(zip(self.box_pair.tolist(), self.box_corners.tolist())):
            o, i = divmod(p, self.in_channels)
            grid[o][i].append(Box(tuple(c[:n]), tuple(c[n:]), float(alphas[j])))
        return [[BoxFilterSet(self.kernel_size, boxes) for boxes in row] for row in grid]

    @property
    def num_boxes(self) -> int:
        return int(self.alpha.numel())

    @property
    def multiplications_per_output(self) -> int:
        """Scalar multiplications per output position (all output channels), SAT vs spatial."""
        return self.num_boxes

    @property
    def spatial_multiplications_per_output(self) -> int:
        return self.out_channels * self.in_channels * int(np.prod(self.kernel_size))

    # -- forwards ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.dense_weight().to(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        return _FUNC[self.ndim](x, w, b, stride=self.stride, padding=self.padding)

    def fhe_padding(self) -> Any:
        return self.padding

    def forward_encrypted(self, backend: Any, ct_or_cts: Any, input_shape: Sequence[int], *,
                          layout: str = "simd", section: str | None = None) -> Any:
        """The encrypted twin: :func:`privkit.fhe.ops.sat.conv_sat` with this layer's boxes."""
        from ..fhe.ops.sat import conv_sat

        bias = None if self.bias is None else self.bias.detach().double().cpu().numpy()
        return conv_sat(backend, ct_or_cts, self.boxsets(), input_shape, self.stride, self.padding,
                        layout=layout, bias=bias, section=section)

    def fhe_spec(self) -> dict[str, Any]:
        """What a compiler needs (a plain dict); ``op`` is ``"box_conv{n}d"`` (its levels: the
        lowering registry, ``privkit.fhe.compiler.lowering_depth(spec)``)."""
        grid = self.boxsets()
        return {
            "op": f"box_conv{self.ndim}d",
            "boxsets": grid,
            "kernel_size": self.kernel_size,
            "bias": None if self.bias is None else self.bias.detach().double().cpu().numpy(),
            "stride": self.stride,
            "padding": self.padding,
        }

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, bias={self.bias is not None}, boxes={self.num_boxes} "
            f"({self.num_boxes}/{self.spatial_multiplications_per_output} multiplications per output)"
        )

    # -- construction from a trained convolution -------------------------------------------------
    @classmethod
    def from_conv(cls, conv: nn.Module, tol: float = 0.01, max_boxes: int | None = None) -> _BoxConvNd:
        """Approximate every kernel of a trained ``nn.ConvNd`` by boxes (bias copied)."""
        want = _CONV[cls.ndim]
        if not isinstance(conv, want):
            raise UnsupportedLayerError(f"{cls.__name__}.from_conv needs a torch.nn.{want.__name__}, got {type(conv).__name__}")
        if conv.groups != 1 or any(d != 1 for d in conv.dilation) or conv.padding_mode != "zeros":
            raise UnsupportedLayerError(
                f"box convolution supports groups=1, dilation=1 and zero padding; got groups={conv.groups}, "
                f"dilation={conv.dilation}, padding_mode={conv.padding_mode!r}"
            )
        grid = _approximate_weight(conv.weight.detach(), tol, max_boxes)
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    bias=conv.bias is not None, tol=tol, max_boxes=max_boxes, boxsets=grid)
        if conv.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(conv.bias.detach().float())
        return layer.to(conv.weight.device)

    def kernel_errors(self, reference: torch.Tensor) -> np.ndarray:
        """Relative L2 error of each kernel against ``reference`` ``(C_out, C_in, *K)``."""
        ref = reference.detach().double().cpu().numpy()
        got = self.dense_weight().detach().double().cpu().numpy()
        num = np.sqrt(((ref - got) ** 2).reshape(ref.shape[0], ref.shape[1], -1).sum(-1))
        den = np.sqrt((ref**2).reshape(ref.shape[0], ref.shape[1], -1).sum(-1))
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def _approximate_weight(weight: torch.Tensor, tol: float, max_boxes: int | None) -> list[list[BoxFilterSet]]:
    w = weight.detach().double().cpu().numpy()
    grid = []
    for o in range(w.shape[0]):
        row = []
        for i in range(w.shape[1]):
            k = w[o, i]
            if not np.any(k):
                row.append(BoxFilterSet(k.shape, []))  # a zero kernel needs no box
            else:
                row.append(approximate_kernel(k, max_boxes=max_boxes, tol=tol))
        grid.append(row)
    return grid


class BoxConv1d(_BoxConvNd):
    """1-D box convolution (see the module docstring)."""

    ndim = 1


class BoxConv2d(_BoxConvNd):
    """2-D box convolution (see the module docstring)."""

    ndim = 2


class BoxConv3d(_BoxConvNd):
    """3-D box convolution (see the module docstring)."""

    ndim = 3


_BOX = {1: BoxConv1d, 2: BoxConv2d, 3: BoxConv3d}


@dataclasses.dataclass
class BoxReplacementReport:
    """What :func:`replace_conv_with_box` changed, one row per replaced convolution."""

    rows: list[dict[str, Any]]

    @property
    def boxes(self) -> int:
        return sum(r["boxes"] for r in self.rows)

    @property
    def multiplications(self) -> tuple[int, int]:
        """(box, spatial) scalar multiplications per output position, summed over layers."""
        return sum(r["boxes"] for r in self.rows), sum(r["spatial_mults"] for r in self.rows)

    def table(self) -> str:
        head = f"{'layer':<20}{'kernel':>12}{'boxes':>8}{'spatial':>9}{'saved':>8}{'mean err':>10}{'max err':>9}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(
                f"{r['name'][:19]:<20}{'x'.join(map(str, r['kernel'])):>12}{r['boxes']:>8}{r['spatial_mults']:>9}"
                f"{1 - r['boxes'] / r['spatial_mults']:>8.1%}{r['mean_error']:>10.3%}{r['max_error']:>9.3%}"
            )
        return "\n".join(lines)


def replace_conv_with_box(
    model: nn.Module, tol: float = 0.01, max_boxes: int | None = None, *, inplace: bool = False,
) -> tuple[nn.Module, BoxReplacementReport]:
    """Replace every ``nn.Conv1d/2d/3d`` of ``model`` (subclasses included, such as
    ``privkit.nn.Conv2d``) by the matching ``BoxConvNd``.

    Returns the new model (a deep copy unless ``inplace``) and a :class:`BoxReplacementReport`
    (boxes, multiplications saved and kernel errors per layer). Compare the two models'
    accuracy to get the paper's Table 2 (see ``examples/box_conv_digits.py``).

    Raises:
        UnsupportedLayerError: a convolution with groups, dilation or non-zero padding mode.
    """
    target = model if inplace else copy.deepcopy(model)
    rows = []
    for name, mod in list(target.named_modules()):
        for child_name, child in list(mod.named_children()):
            for n, cls in _CONV.items():
                if isinstance(child, cls):
                    try:
                        box = _BOX[n].from_conv(child, tol=tol, max_boxes=max_boxes)
                    except (ParameterError, ShapeError) as e:
                        raise type(e)(f"layer {name + '.' if name else ''}{child_name}: {e}") from e
                    err = box.kernel_errors(child.weight)
                    rows.append({
                        "name": f"{name}.{child_name}" if name else child_name,
                        "kernel": tuple(child.kernel_size),
                        "boxes": box.num_boxes,
                        "spatial_mults": box.spatial_multiplications_per_output,
                        "mean_error": float(err.mean()),
                        "max_error": float(err.max()),
                    })
                    setattr(mod, child_name, box)
    return target, BoxReplacementReport(rows)
