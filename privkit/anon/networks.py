"""Networks of the IMU anonymiser, shaped from the data (channels per device, window length).

All networks take windows ``x`` shaped ``(B, T, C)`` (time, channels) with values in [0, 1] and
treat them as one-plane images ``(B, 1, T, C)``:

* :class:`ConvAutoencoder` - encoder of 3 convolutions (16, 32, 64 channels, kernel 4, stride 2,
  BN + ReLU, dropout 0.1 after layers 2 and 3), a 1x1 bottleneck convolution + ReLU giving the
  code ``C_x``; a mirrored decoder of 3 transposed convolutions ending in a sigmoid. Kernels are
  ``(4, 4)`` over (time, channels) when the channel axis is wide enough to be halved three times
  (>= 16 channels), else ``(4, 1)`` (time only), so that a 4-wide kernel never mixes too few
  channels; ``channel_kernel`` forces either. Inputs are edge-padded to a multiple of 8 and the
  output cropped back, so any window length works.
* :class:`LatentMapper` - z (32-d), optionally joined with a subject embedding, through dense
  LeakyReLU layers to a code ``C_z`` of the encoder's code shape.
* :class:`Generator` - ``C = C_x + C_z`` (``ag``/``acg``) or
  ``C = (C_x - mean code of the source subject) + C_z(z, target)`` (``dfi``), then the decoder.
* :class:`Discriminator` - 3 convolutions + BN + ReLU, a fully connected layer; returns logits
  (the sigmoid is applied by :meth:`Discriminator.prob` or folded into the BCE loss).
* :class:`TCNNIMU` - the tCNN-IMU classifier used as ReID judge and HAR judge: one branch per
  body-worn device of 4 convolutions (64 filters, ``(5, 1)`` kernels, max-pooling after the 2nd
  and 4th) and a dense layer, branches fused by an MLP.

>>> import torch
>>> ae = ConvAutoencoder(n_channels=12, window=50)
>>> x = torch.rand(3, 50, 12)
>>> ae(x).shape, ae.code_shape
(torch.Size([3, 50, 12]), (64, 7, 12))
>>> net = TCNNIMU(device_channels=(6, 6), window=50, n_classes=5, filters=16)
>>> net(x).shape
torch.Size([3, 5])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ShapeError

__all__ = [
    "TCNNIMU",
    "ConvAutoencoder",
    "Discriminator",
    "Generator",
    "LatentMapper",
    "channel_kernel_for",
]


def channel_kernel_for(n_channels: int, n_layers: int = 3) -> int:
    """4 if the channel axis can be halved ``n_layers`` times keeping >= 2 channels, else 1."""
    return 4 if n_channels >= 2 ** (n_layers + 1) else 1


def _check_input(x: torch.Tensor, window: int, n_channels: int, who: str) -> None:
    if x.ndim != 3 or x.shape[1] != window or x.shape[2] != n_channels:
        raise ShapeError(
            f"{who} expects windows shaped (batch, {window}, {n_channels}), got {tuple(x.shape)}"
        )


class ConvAutoencoder(nn.Module):
    """Convolutional (denoising) autoencoder; ``encode`` gives the code C_x, ``decode`` inverts."""

    def __init__(
        self,
        n_channels: int,
        window: int,
        *,
        channels: Sequence[int] = (16, 32, 64),
        kernel: int = 4,
        channel_kernel: int | str = "auto",
        dropout: float = 0.1,
        bottleneck: int = 64,
    ) -> None:
        super().__init__()
        if len(channels) != 3:
            raise ShapeError(f"ConvAutoencoder needs 3 encoder channel counts, got {channels}")
        if kernel % 2 or kernel < 2:
            raise ShapeError(f"kernel must be even (stride-2 halving), got {kernel}")
        self.n_channels, self.window = int(n_channels), int(window)
        kc = channel_kernel_for(n_channels) if channel_kernel == "auto" else int(channel_kernel)
        if kc not in (1, kernel):
            raise ShapeError(f"channel_kernel must be 1, {kernel} or 'auto', got {channel_kernel}")
        self.kc = kc
        sc, pc = (2, kernel // 2 - 1) if kc > 1 else (1, 0)
        k, s, p = (kernel, kc), (2, sc), (kernel // 2 - 1, pc)
        self.t_pad = (-window) % 8
        self.c_pad = (-n_channels) % 8 if kc > 1 else 0
        c1, c2, c3 = (int(c) for c in channels)
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c1, k, s, p), nn.BatchNorm2d(c1), nn.ReLU(),
            nn.Conv2d(c1, c2, k, s, p), nn.BatchNorm2d(c2), nn.ReLU(), nn.Dropout(dropout),
            nn.Conv2d(c2, c3, k, s, p), nn.BatchNorm2d(c3), nn.ReLU(), nn.Dropout(dropout),
            nn.Conv2d(c3, bottleneck, 1), nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(bottleneck, c2, k, s, p), nn.BatchNorm2d(c2), nn.ReLU(),
            nn.ConvTranspose2d(c2, c1, k, s, p), nn.BatchNorm2d(c1), nn.ReLU(),
            nn.ConvTranspose2d(c1, 1, k, s, p), nn.Sigmoid(),
        )
        tp, cp = window + self.t_pad, n_channels + self.c_pad
        self.code_shape: tuple[int, int, int] = (
            int(bottleneck), tp // 8, cp // 8 if kc > 1 else cp
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.window, self.n_channels, "ConvAutoencoder")
        h = x.unsqueeze(1)
        if self.t_pad or self.c_pad:
            h = F.pad(h, (0, self.c_pad, 0, self.t_pad), mode="replicate")
        return self.encoder(h.contiguous(memory_format=torch.channels_last))

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        out = self.decoder(code)
        return out[:, 0, : self.window, : self.n_channels]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class LatentMapper(nn.Module):
    """z (and optionally a subject embedding) -> dense LeakyReLU layers -> a code C_z."""

    def __init__(
        self,
        code_shape: Sequence[int],
        *,
        z_dim: int = 32,
        n_subjects: int | None = None,
        embed_dim: int = 16,
        hidden: Sequence[int] = (128, 256),
        slope: float = 0.2,
    ) -> None:
        super().__init__()
        self.code_shape = tuple(int(c) for c in code_shape)
        self.z_dim = int(z_dim)
        self.embed = nn.Embedding(n_subjects, embed_dim) if n_subjects else None
        d = z_dim + (embed_dim if n_subjects else 0)
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(d, h), nn.LeakyReLU(slope)]
            d = h
        layers.append(nn.Linear(d, math.prod(self.code_shape)))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, subject: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if subject is None:
                raise ShapeError("this LatentMapper is subject-conditioned: pass subject labels")
            z = torch.cat([z, self.embed(subject)], dim=1)
        return self.net(z).view(len(z), *self.code_shape)


class Generator(nn.Module):
    """Autoencoder + latent mapper: ``X' = decode(C_x [- mu_source] + C_z(z[, subject]))``.

    ``code_means`` (``(n_subjects, *code_shape)``, a buffer) holds the mean code of every
    training subject for identity transfer (``dfi``). With ``add_target_mean`` (beyond the
    paper) ``dfi`` uses ``C = C_x - mu_source + mu_target + C_z(z, target)``: the mapper then
    learns a correction to a plain mean-code swap instead of the whole target code, which is
    the same family of codes (``C_z`` is free) but starts from a code the decoder knows.
    """

    def __init__(self, ae: ConvAutoencoder, mapper: LatentMapper, n_subjects: int = 0, *,
                 add_target_mean: bool = False) -> None:
        super().__init__()
        self.ae, self.mapper = ae, mapper
        self.add_target_mean = bool(add_target_mean)
        self.register_buffer("code_means", torch.zeros(max(n_subjects, 1), *ae.code_shape))

    @property
    def z_dim(self) -> int:
        return self.mapper.z_dim

    def code(
        self,
        x: torch.Tensor,
        z: torch.Tensor,
        *,
        condition: torch.Tensor | None = None,
        source: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The combined code C. ``condition`` feeds the mapper's subject embedding (the subject
        for ``acg``, the target for ``dfi``); ``source`` subtracts that subject's mean code (and,
        with ``add_target_mean``, the condition's mean code is added)."""
        c = self.ae.encode(x)
        if source is not None:
            c = c - self.code_means[source]
            if self.add_target_mean and condition is not None:
                c = c + self.code_means[condition]
        return c + self.mapper(z, condition)

    def forward(self, x, z, *, condition=None, source=None) -> torch.Tensor:
        return self.ae.decode(self.code(x, z, condition=condition, source=source))


class Discriminator(nn.Module):
    """3 conv (BN + ReLU) + FC; outputs logits (``prob`` applies the sigmoid)."""

    def __init__(
        self,
        n_channels: int,
        window: int,
        *,
        channels: Sequence[int] = (16, 32, 64),
        kernel: int = 4,
        channel_kernel: int | str = "auto",
    ) -> None:
        super().__init__()
        self.n_channels, self.window = int(n_channels), int(window)
        kc = channel_kernel_for(n_channels) if channel_kernel == "auto" else int(channel_kernel)
        sc, pc = (2, kernel // 2 - 1) if kc > 1 else (1, 0)
        k, s, p = (kernel, kc), (2, sc), (kernel // 2 - 1, pc)
        layers: list[nn.Module] = []
        cin = 1
        for c in channels:
            layers += [nn.Conv2d(cin, int(c), k, s, p), nn.BatchNorm2d(int(c)), nn.ReLU()]
            cin = int(c)
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            n = self.features(torch.zeros(2, 1, window, n_channels)).numel() // 2
        self.fc = nn.Linear(n, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.window, self.n_channels, "Discriminator")
        h = (2.0 * x.unsqueeze(1) - 1.0).contiguous(memory_format=torch.channels_last)
        return self.fc(self.features(h).flatten(1)).squeeze(1)

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(x))


class _Branch(nn.Module):
    def __init__(self, n_ch: int, window: int, filters: int, kernel: int, fc: int, pool: bool):
        super().__init__()
        pad = (kernel // 2, 0)
        layers: list[nn.Module] = []
        cin = 1
        for i in range(4):
            layers += [nn.Conv2d(cin, filters, (kernel, 1), 1, pad), nn.ReLU()]
            cin = filters
            if pool and i in (1, 3):
                layers.append(nn.MaxPool2d((2, 1)))
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            n = self.features(torch.zeros(1, 1, window, n_ch)).numel()
        self.fc = nn.Sequential(nn.Linear(n, fc), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x.contiguous(memory_format=torch.channels_last))
        return self.fc(h.flatten(1))


class TCNNIMU(nn.Module):
    """tCNN-IMU: one convolutional branch per device, fused by an MLP (ReID and HAR judges)."""

    def __init__(
        self,
        device_channels: Sequence[int],
        window: int,
        n_classes: int,
        *,
        filters: int = 64,
        kernel: int = 5,
        fc: int = 128,
        dropout: float = 0.3,
        pool: bool | str = "auto",
    ) -> None:
        super().__init__()
        self.device_channels = tuple(int(c) for c in device_channels)
        self.window, self.n_classes = int(window), int(n_classes)
        use_pool = window >= 16 if pool == "auto" else bool(pool)
        self.branches = nn.ModuleList(
            _Branch(c, window, filters, kernel, fc, use_pool) for c in self.device_channels
        )
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(fc * len(self.device_channels), fc), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(fc, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.window, sum(self.device_channels), "TCNNIMU")
        # [0, 1] windows are centred to [-1, 1]: all-positive inputs leave ReLU networks
        # stuck at chance level for several epochs
        parts = torch.split(2.0 * x.unsqueeze(1) - 1.0, self.device_channels, dim=3)
        return self.head(torch.cat([b(p) for b, p in zip(self.branches, parts)], dim=1))
