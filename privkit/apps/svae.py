"""The DP spiking VAE: FSVAE (Kamata et al., AAAI 2022) and an ANN VAE of the same shape, trainable
with DP-SGD through :mod:`privkit.dp` and honest about the epsilon.

FSVAE as published (MNIST config): 32x32 inputs in [-1, 1] repeated over T = 16 steps, T kept as
the last tensor axis ``(N, C, H, W, T)``; an encoder of 4 conv layers (3x3, stride 2; 32/64/128/256
channels) each with a normalisation and LIF neurons; a linear layer to a 128-unit latent; posterior
and prior 3-layer spiking MLPs emitting k = 20 candidate spikes per latent unit, ``z_t`` drawn as one
of them (a Bernoulli of their mean), autoregressively over t; a decoder mirroring the encoder with
transposed convs; the output the membrane of a non-firing neuron accumulated over t, through tanh.
The loss is the MSE plus the distance between the post-synaptic potentials of the posterior and
prior rates; both terms are per-sample, so DP-SGD applies.

Every size is configurable (``widths``, ``latent_dim``, ``n_steps``, ``k``, ``image_size``) so that
CPU runs finish. In DP mode the normalisation must be per-sample: ``norm="group"`` (default) or
``"layer"``; ``"batch"`` is allowed for non-private training only and :func:`privkit.dp.check_module`
rejects it, by name, for DP.

>>> from privkit.apps.svae import SpikingVAE
>>> m = SpikingVAE(image_size=16, widths=(4, 8), latent_dim=8, n_steps=2, k=4)
>>> m.sample(2).shape
(2, 1, 16, 16)
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..api import PrivacyReport, PrivateModel, check_config, check_plain, check_state_tensors
from ..dp.engine import DPConfig, DPTraining, check_module, make_private
from ..dp.grad_samplers import StepLinear
from ..dp.snn import (
    DEFAULT_TAU,
    DEFAULT_THRESHOLD,
    LIFNeuron,
    LIFStep,
    MembraneOutput,
    TimeConvTranspose3d,
)
from ..errors import DataFormatError, ParameterError, ShapeError

__all__ = ["AnnVAE", "AnnVAENet", "SpikingVAE", "SpikingVAENet", "VAEConfig", "psp"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class VAEConfig:
    """Architecture and loss settings shared by :class:`SpikingVAE` and :class:`AnnVAE`.

    The defaults are FSVAE's MNIST configuration; scale ``widths`` / ``latent_dim`` / ``n_steps``
    down for CPU runs. ``distance_weight=None`` means ``1 / (latent_dim * n_steps)`` (the FSVAE code
    averages the PSP distance over latent units and steps); ``kl_weight=None`` (ANN) means
    ``1 / (C * H * W)``.

    ``threshold_norm=True`` (FSVAE's threshold-dependent normalisation, tdBN) starts every
    normalisation of the spiking network with gain ``alpha * threshold`` (alpha = 1 in the encoder,
    latent and decoder layers, 2 in the posterior / prior MLPs) instead of 1, so that membrane
    inputs have a spread comparable to the firing threshold: with unit-variance inputs and threshold
    0.2 most neurons either fire at every step or never, and sit outside the surrogate-gradient
    window (see docs/dp.md, "Why the spiking VAE learned slowly"). The ANN ignores it.
    """

    in_channels: int = 1
    image_size: int = 32
    widths: tuple[int, ...] = (32, 64, 128, 256)
    latent_dim: int = 128
    n_steps: int = 16
    k: int = 20
    norm: str = "group"
    groups: int = 8
    tau: float = DEFAULT_TAU
    threshold: float = DEFAULT_THRESHOLD
    learnable_tau: bool = False
    psp_tau: float = 2.0
    distance_weight: float | None = None
    scheduled_sampling: float = 0.0
    kl_weight: float | None = None
    threshold_norm: bool = True

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        if not self.widths:
            raise ParameterError("widths must name at least one conv layer")
        if self.image_size % (2 ** len(self.widths)) != 0:
            raise ParameterError(
                f"image_size {self.image_size} must be divisible by 2^len(widths) = "
                f"{2 ** len(self.widths)} (each conv layer halves it)"
            )
        if self.norm not in ("group", "layer", "batch", "none"):
            raise ParameterError(f"norm must be 'group', 'layer', 'batch' or 'none', got {self.norm!r}")
        if self.n_steps < 1 or self.k < 1 or self.latent_dim < 1:
            raise ParameterError("n_steps, k and latent_dim must be >= 1")
        if not 0.0 <= self.scheduled_sampling <= 1.0:
            raise ParameterError("scheduled_sampling is a probability in [0, 1]")

    @property
    def bottom(self) -> int:
        return self.image_size // (2 ** len(self.widths))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        return d


#: limits on the config fields of a loaded model (checked before anything is built)
_LIMITS: dict[str, tuple[float, float]] = {
    "in_channels": (1, 64), "image_size": (1, 2048), "widths": (1, 4096),
    "latent_dim": (1, 1 << 16), "n_steps": (1, 4096), "k": (1, 4096), "groups": (1, 4096),
    "tau": (0, 1e6), "threshold": (-1e6, 1e6), "psp_tau": (0, 1e6),
    "distance_weight": (0, 1e6), "scheduled_sampling": (0, 1), "kl_weight": (0, 1e6),
}


def _norm(kind: str, channels: int, groups: int, dims: int = 3, gain: float = 1.0) -> nn.Module:
    """A normalisation over channels. ``dims`` is the number of spatial/time axes after C; ``gain``
    is the initial value of its affine weight (the output's standard deviation at initialisation)."""
    norm: nn.Module
    if kind == "group" and dims <= 1:
        # feature vectors (N, F) or (N, F, T): a per-sample norm over small groups of features
        # would erase what distinguishes samples (e.g. groups of 2 latent units x T equal steps
        # normalise to +-1); normalise over all features (LayerNorm) instead
        norm = nn.GroupNorm(1, channels)
    elif kind == "group":
        g = math.gcd(channels, groups) or 1
        norm = nn.GroupNorm(g, channels)
    elif kind == "layer":
        norm = nn.GroupNorm(1, channels)  # LayerNorm over (C, ...) per sample
    elif kind == "batch":
        norm = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}.get(dims, nn.BatchNorm1d)(channels)
    else:
        return nn.Identity()
    if gain != 1.0:
        with torch.no_grad():
            norm.weight.fill_(gain)
    return norm


def psp(x: torch.Tensor, tau_s: float = 2.0) -> torch.Tensor:
    """Post-synaptic potential over the last axis: ``p_t = p_{t-1} + (x_t - p_{t-1}) / tau_s``."""
    steps = x.unbind(-1)
    out, p = [], torch.zeros_like(steps[0])
    for xt in steps:
        p = p + (xt - p) / tau_s
        out.append(p)
    return torch.stack(out, -1)


# --------------------------------------------------------------------------- spiking network


class _SpikingMLP(nn.Module):
    """3-layer spiking MLP run one time step at a time with explicit LIF state."""

    def __init__(self, d_in: int, d_hidden: int, d_mid: int, d_out: int, cfg: VAEConfig) -> None:
        super().__init__()
        # StepLinear: called once per time step; DP-SGD forms its per-sample gradient once per pass
        self.l1 = StepLinear(d_in, d_hidden)
        gain = 2 * cfg.threshold if cfg.threshold_norm else 1.0  # tdBN with alpha = 2, as in FSVAE
        self.n1 = _norm(cfg.norm, d_hidden, cfg.groups, dims=0, gain=gain)
        self.l2 = StepLinear(d_hidden, d_mid)
        self.n2 = _norm(cfg.norm, d_mid, cfg.groups, dims=0, gain=gain)
        self.l3 = StepLinear(d_mid, d_out)
        self.cfg = cfg

    def step(self, x: torch.Tensor, state: list[torch.Tensor | None]) -> tuple[torch.Tensor, list]:
        c = self.cfg
        tau = torch.tensor(c.tau, dtype=x.dtype, device=x.device)
        h = self.n1(self.l1(x))
        m1 = torch.zeros_like(h) if state[0] is None else state[0]
        s1, m1 = LIFStep.apply(h, m1, tau, c.threshold, 1.0)
        h = self.n2(self.l2(s1))
        m2 = torch.zeros_like(h) if state[1] is None else state[1]
        s2, m2 = LIFStep.apply(h, m2, tau, c.threshold, 1.0)
        h = self.l3(s2)
        m3 = torch.zeros_like(h) if state[2] is None else state[2]
        s3, m3 = LIFStep.apply(h, m3, tau, c.threshold, 1.0)
        return s3, [m1, m2, m3]


class SpikingVAENet(nn.Module):
    """The FSVAE network. ``forward(x, noise=None)`` returns the per-sample loss ``(N,)``.

    ``noise`` (optional) fixes the randomness: a dict with ``"q"`` and ``"p"`` uniform tensors of
    shape ``(N, T, latent)`` (candidate choice of posterior / prior) and ``"sched"`` ``(N, T)``
    (scheduled sampling); tests pass it so a batch and its samples one by one see the same draws.
    """

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, L = cfg, cfg.latent_dim
        g = c.threshold if c.threshold_norm else 1.0  # tdBN's alpha * threshold, alpha = 1
        enc: list[nn.Module] = []
        ch = c.in_channels
        for w in c.widths:
            enc += [
                nn.Conv3d(ch, w, (3, 3, 1), stride=(2, 2, 1), padding=(1, 1, 0), bias=c.norm == "none"),
                _norm(c.norm, w, c.groups, gain=g),
                self._lif(w),
            ]
            ch = w
        self.encoder = nn.Sequential(*enc)
        feat = c.widths[-1] * c.bottom * c.bottom
        self.before_latent = nn.Linear(feat, L)
        self.before_latent_norm = _norm(c.norm, L, c.groups, dims=1, gain=g)
        self.before_latent_lif = self._lif(None)
        self.posterior = _SpikingMLP(2 * L, 2 * L, 4 * L, L * c.k, c)
        self.prior = _SpikingMLP(L, 2 * L, 4 * L, L * c.k, c)
        self.decoder_input = nn.Linear(L, feat)
        self.decoder_input_norm = _norm(c.norm, c.widths[-1], c.groups, gain=g)
        self.decoder_input_lif = self._lif(c.widths[-1])
        dec: list[nn.Module] = []
        rev = list(reversed(c.widths))
        for a, b in itertools.pairwise(rev):
            dec += [
                TimeConvTranspose3d(a, b, bias=c.norm == "none"),
                _norm(c.norm, b, c.groups, gain=g),
                self._lif(b),
            ]
        w0 = c.widths[0]
        dec += [
            TimeConvTranspose3d(w0, w0, bias=c.norm == "none"),
            _norm(c.norm, w0, c.groups, gain=g),
            self._lif(w0),
            nn.Conv3d(w0, c.in_channels, (3, 3, 1), padding=(1, 1, 0)),
        ]
        self.decoder = nn.Sequential(*dec)
        self.membrane_output = MembraneOutput()

    def _lif(self, channels: int | None) -> LIFNeuron:
        c = self.cfg
        return LIFNeuron(c.tau, c.threshold, learnable_tau=c.learnable_tau,
                         channels=channels if c.learnable_tau else None)

    # -- pieces
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)`` -> encoder spikes ``(N, latent, T)``."""
        c = self.cfg
        if x.dim() != 4 or tuple(x.shape[1:]) != (c.in_channels, c.image_size, c.image_size):
            raise ShapeError(
                f"expected images (N, {c.in_channels}, {c.image_size}, {c.image_size}), got "
                f"{tuple(x.shape)}"
            )
        xt = x.unsqueeze(-1).expand(*x.shape, c.n_steps)  # direct encoding: repeat over T
        h = self.encoder(xt)  # (N, C', h, w, T)
        n, T = h.shape[0], h.shape[-1]
        h = h.reshape(n, -1, T).transpose(1, 2)  # (N, T, F)
        h = self.before_latent(h).transpose(1, 2)  # (N, L, T)
        return self.before_latent_lif(self.before_latent_norm(h))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent spikes ``(N, latent, T)`` -> images ``(N, C, H, W)`` in [-1, 1]."""
        c = self.cfg
        n, T = z.shape[0], z.shape[-1]
        h = self.decoder_input(z.transpose(1, 2))  # (N, T, F)
        h = h.transpose(1, 2).reshape(n, c.widths[-1], c.bottom, c.bottom, T)
        h = self.decoder_input_lif(self.decoder_input_norm(h))
        h = self.decoder(h)
        return torch.tanh(self.membrane_output(h))

    @staticmethod
    def _pick(cand: torch.Tensor, u: torch.Tensor, k: int) -> torch.Tensor:
        """One of the k candidate spikes per latent unit (a Bernoulli of their mean)."""
        idx = (u * k).long().clamp_(max=k - 1).unsqueeze(-1)
        return torch.gather(cand, -1, idx).squeeze(-1)

    def _noise(self, n: int, like: torch.Tensor) -> dict[str, torch.Tensor]:
        T, L = self.cfg.n_steps, self.cfg.latent_dim
        return {
            "q": torch.rand(n, T, L, device=like.device, dtype=like.dtype),
            "p": torch.rand(n, T, L, device=like.device, dtype=like.dtype),
            "sched": torch.rand(n, T, device=like.device, dtype=like.dtype),
        }

    def latent(self, x: torch.Tensor, noise: dict | None = None, scheduled: float = 0.0):
        """Posterior sample ``z`` and the posterior / prior rates, each ``(N, latent, T)``."""
        c = self.cfg
        enc = self.encode(x)
        n, L, T, k = x.shape[0], c.latent_dim, c.n_steps, c.k
        noise = noise or self._noise(n, enc)
        z_prev = torch.zeros(n, L, dtype=enc.dtype, device=enc.device)
        zp_prev = z_prev
        sq: list = [None, None, None]
        sp: list = [None, None, None]
        zs, qs, ps = [], [], []
        enc_t = enc.unbind(-1)
        for t in range(T):
            cand_q, sq = self.posterior.step(torch.cat([enc_t[t], z_prev], 1), sq)
            cand_q = cand_q.view(n, L, k)
            # prior sees the posterior's previous z (teacher forcing), or with probability
            # `scheduled` its own previous sample (scheduled sampling)
            if scheduled > 0:
                use_own = (noise["sched"][:, t] < scheduled).to(enc.dtype).unsqueeze(1)
                p_in = use_own * zp_prev + (1 - use_own) * z_prev
            else:
                p_in = z_prev
            cand_p, sp = self.prior.step(p_in, sp)
            cand_p = cand_p.view(n, L, k)
            z = self._pick(cand_q, noise["q"][:, t], k)
            zp_prev = self._pick(cand_p, noise["p"][:, t], k)
            zs.append(z)
            qs.append(cand_q.mean(-1))
            ps.append(cand_p.mean(-1))
            z_prev = z
        return torch.stack(zs, -1), torch.stack(qs, -1), torch.stack(ps, -1)

    def per_sample_loss(self, x: torch.Tensor, noise: dict | None = None,
                        scheduled: float | None = None) -> torch.Tensor:
        c = self.cfg
        sched = c.scheduled_sampling if scheduled is None else scheduled
        z, q, p = self.latent(x, noise, sched if self.training else 0.0)
        x_hat = self.decode(z)
        recon = ((x_hat - x) ** 2).flatten(1).mean(1)
        dist = ((psp(q, c.psp_tau) - psp(p, c.psp_tau)) ** 2).sum((1, 2))
        w = c.distance_weight if c.distance_weight is not None else 1.0 / (c.latent_dim * c.n_steps)
        return recon + w * dist

    def forward(self, x: torch.Tensor, noise: dict | None = None) -> torch.Tensor:
        return self.per_sample_loss(x, noise)

    def reconstruct(self, x: torch.Tensor, noise: dict | None = None) -> torch.Tensor:
        z, _, _ = self.latent(x, noise, 0.0)
        return self.decode(z)

    @torch.no_grad()
    def spike_rates(self, x: torch.Tensor, noise: dict | None = None) -> dict[str, float]:
        """Mean firing rate of every spiking layer on images ``x``, in forward order (encoder,
        latent, posterior / prior candidates, sampled ``z``, decoder). A layer near 0 or 1 passes
        little information; a diagnostic for training, not part of the loss."""
        rates: dict[str, float] = {}

        def hook(mod: nn.Module, inp: Any, out: torch.Tensor, name: str = "") -> None:
            rates[name] = float(out.mean())

        hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: hook(mod, inp, out, name))
                 for name, m in self.named_modules() if isinstance(m, LIFNeuron)]
        try:
            z, q, p = self.latent(x, noise, 0.0)
            rates.update(posterior=float(q.mean()), prior=float(p.mean()), z=float(z.mean()))
            self.decode(z)
        finally:
            for h in hooks:
                h.remove()
        return rates

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        c = self.cfg
        dev = next(self.parameters()).device
        dt = next(self.parameters()).dtype
        z_prev = torch.zeros(n, c.latent_dim, device=dev, dtype=dt)
        sp: list = [None, None, None]
        zs = []
        for _ in range(c.n_steps):
            cand, sp = self.prior.step(z_prev, sp)
            cand = cand.view(n, c.latent_dim, c.k)
            u = torch.rand(n, c.latent_dim, generator=generator, device=dev, dtype=dt)
            z_prev = self._pick(cand, u, c.k)
            zs.append(z_prev)
        return self.decode(torch.stack(zs, -1))


# --------------------------------------------------------------------------- ANN network


class AnnVAENet(nn.Module):
    """A conventional VAE with FSVAE's shape (same convs, widths, latent size; no time axis).

    ``forward(x, noise=None)`` returns the per-sample loss (MSE + ``kl_weight`` * KL); ``noise``
    (``(N, latent)`` standard normal) fixes the reparameterisation draw.
    """

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, L = cfg, cfg.latent_dim
        enc: list[nn.Module] = []
        ch = c.in_channels
        for w in c.widths:
            enc += [nn.Conv2d(ch, w, 3, stride=2, padding=1), _norm(c.norm, w, c.groups, 2),
                    nn.LeakyReLU(0.2)]
            ch = w
        self.encoder = nn.Sequential(*enc)
        feat = c.widths[-1] * c.bottom * c.bottom
        self.fc_mu = nn.Linear(feat, L)
        self.fc_logvar = nn.Linear(feat, L)
        self.decoder_input = nn.Linear(L, feat)
        dec: list[nn.Module] = []
        rev = list(reversed(c.widths))
        for a, b in itertools.pairwise(rev):
            dec += [nn.ConvTranspose2d(a, b, 3, stride=2, padding=1, output_padding=1),
                    _norm(c.norm, b, c.groups, 2), nn.LeakyReLU(0.2)]
        w0 = c.widths[0]
        dec += [nn.ConvTranspose2d(w0, w0, 3, stride=2, padding=1, output_padding=1),
                _norm(c.norm, w0, c.groups, 2), nn.LeakyReLU(0.2),
                nn.Conv2d(w0, c.in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.cfg
        if x.dim() != 4 or tuple(x.shape[1:]) != (c.in_channels, c.image_size, c.image_size):
            raise ShapeError(
                f"expected images (N, {c.in_channels}, {c.image_size}, {c.image_size}), got "
                f"{tuple(x.shape)}"
            )
        h = self.encoder(x).flatten(1)
        return self.fc_mu(h), self.fc_logvar(h).clamp(-10, 10)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        h = self.decoder_input(z).view(z.shape[0], c.widths[-1], c.bottom, c.bottom)
        return torch.tanh(self.decoder(h))

    def per_sample_loss(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        c = self.cfg
        mu, logvar = self.encode(x)
        eps = torch.randn_like(mu) if noise is None else noise
        z = mu + eps * torch.exp(0.5 * logvar)
        x_hat = self.decode(z)
        recon = ((x_hat - x) ** 2).flatten(1).mean(1)
        kl = -0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum(1)
        w = c.kl_weight if c.kl_weight is not None else 1.0 / (c.in_channels * c.image_size ** 2)
        return recon + w * kl

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.per_sample_loss(x, noise)

    def reconstruct(self, x: torch.Tensor, noise: Any = None) -> torch.Tensor:
        mu, _ = self.encode(x)
        return self.decode(mu)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        p = next(self.parameters())
        z = torch.randn(n, self.cfg.latent_dim, generator=generator, device=p.device, dtype=p.dtype)
        return self.decode(z)


# --------------------------------------------------------------------------- PrivateModel


def _as_tensor(data: Any) -> torch.Tensor:
    imgs = getattr(data, "images", data)
    if isinstance(imgs, np.ndarray):
        imgs = torch.from_numpy(np.ascontiguousarray(imgs, dtype=np.float32))
    if not isinstance(imgs, torch.Tensor):
        raise ParameterError(f"expected images (ImageData, ndarray or tensor), got {type(data)}")
    return imgs.float()


class _VAEModel(PrivateModel):
    net_class: ClassVar[type[nn.Module]]

    def __init__(self, config: VAEConfig | None = None, **kwargs: Any) -> None:
        if config is not None and kwargs:
            raise ParameterError("pass either a VAEConfig or keyword settings, not both")
        self.config = config or VAEConfig(**kwargs)
        self.net = self.net_class(self.config)
        self.net.eval()
        self.history: list[dict[str, float]] = []
        self.dp_state: dict[str, Any] | None = None
        self.dp_config: dict[str, Any] | None = None
        self._report: PrivacyReport | None = None
        self.trained_without_dp = False
        self.train_size: int | None = None

    # ---------------------------------------------------------------- training
    def fit(
        self,
        data: Any,
        *,
        dp: DPConfig | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        seed: int = 0,
        callback: Callable[[dict[str, float]], None] | None = None,
        distributed: bool = False,
    ) -> _VAEModel:
        """Train on ``data`` (ImageData / array / tensor of images in [-1, 1]) with AdamW.

        With ``dp=DPConfig(...)`` training is DP-SGD (Opacus) and ``epochs`` / ``batch_size`` come
        from the config; the epsilon of the whole training (earlier DP fits included) is in
        :meth:`privacy_report`. ``callback`` receives a dict per step (epoch, step, loss, epsilon).
        ``distributed=True`` (DP only, torch.distributed initialised): distributed DP-SGD, see
        :func:`privkit.dp.make_private`; ``batch_size`` is the global batch.
        """
        if distributed and dp is None:
            raise ParameterError("distributed training is DP-SGD only: pass dp=DPConfig(...)")
        x = _as_tensor(data)
        c = self.config
        if tuple(x.shape[1:]) != (c.in_channels, c.image_size, c.image_size):
            raise ShapeError(
                f"data images have shape {tuple(x.shape[1:])}, the model expects "
                f"({c.in_channels}, {c.image_size}, {c.image_size}); resize the data "
                "(load_dataset(..., image_size=...)) or build the model for it"
            )
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        ds = torch.utils.data.TensorDataset(x)
        if dp is not None:
            epochs = int(dp.epochs) if dp.epochs is not None else epochs
            batch_size = int(dp.batch_size)
        epochs = int(epochs or 1)
        batch_size = int(batch_size or 64)
        loader = torch.utils.data.DataLoader(ds, batch_size=min(batch_size, len(ds)), shuffle=True,
                                             generator=g, drop_last=False)
        net = self.net
        net.train()
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
        training: DPTraining | None = None
        if dp is not None:
            check_module(net, grad_sample_mode=dp.grad_sample_mode)
            delta = dp.delta if dp.delta is not None else 1.0 / len(ds)
            training = make_private(
                net, opt, loader, target_epsilon=dp.target_epsilon,
                noise_multiplier=dp.noise_multiplier, delta=delta, max_grad_norm=dp.max_grad_norm,
                epochs=epochs, accountant=dp.accountant, poisson_sampling=dp.poisson_sampling,
                grad_sample_mode=dp.grad_sample_mode, distributed=distributed,
            )
            if self.dp_state is not None:
                # privacy composes: keep counting from the earlier DP training on this model (the
                # history of (noise, sample rate, steps) means the same to either accountant)
                training.continue_from(self.dp_state["history"])
            if self.trained_without_dp:
                training.warnings.append(
                    "this model was trained earlier WITHOUT differential privacy: no DP guarantee "
                    "holds for it, whatever epsilon says"
                )
            model, opt, loader = training.module, training.optimizer, training.data_loader
            self.dp_config = dataclasses.asdict(dp) | {"delta": delta}
        else:
            model = net
            self.trained_without_dp = True
        step = 0
        eps = 0.0
        try:
            with warnings.catch_warnings():
                # Opacus' hooks on modules whose inputs need no grad make torch warn each step
                warnings.filterwarnings("ignore", message=".*Full backward hook is firing.*")
                warnings.filterwarnings("ignore", message=".*Using a non-full backward hook.*")
                for epoch in range(epochs):
                    n_batches = len(loader)
                    for i, (xb,) in enumerate(loader):
                        if len(xb) == 0 and not distributed:
                            continue  # Poisson sampling drew an empty batch: nothing is released
                        opt.zero_grad(set_to_none=True)
                        loss = model(xb).mean()
                        loss.backward()
                        opt.step()
                        step += 1
                        rec = {"epoch": epoch, "step": step, "loss": float(loss.detach())}
                        if training is not None:
                            # the accountant is exact but not free (PRV ~0.1-1 s): refresh the
                            # running epsilon at the end of each epoch
                            if i == n_batches - 1 or step == 1:
                                eps = training.epsilon()
                            rec["epsilon"] = eps
                        self.history.append(rec)
                        if callback:
                            callback(rec)
        finally:
            if training is not None:
                self.dp_state = training.accountant_state()
                self._report = training.report()
                closer = getattr(training.module, "_close", None)
                if closer:
                    closer()
            net.eval()
        self.train_size = len(ds)
        return self

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def reconstruct(self, data: Any, batch_size: int = 256, seed: int | None = 0) -> np.ndarray:
        """Reconstructions (same shape as the input, in [-1, 1])."""
        x = _as_tensor(data)
        if seed is not None:
            torch.manual_seed(seed)
        self.net.eval()
        out = [self.net.reconstruct(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros_like(x.numpy())

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batch_size: int = 256) -> np.ndarray:
        """``n`` generated images ``(n, C, H, W)`` in [-1, 1]."""
        g = torch.Generator().manual_seed(seed)
        self.net.eval()
        out = [self.net.sample(min(batch_size, n - i), generator=g) for i in range(0, n, batch_size)]
        return torch.cat(out).numpy()

    @torch.no_grad()
    def per_sample_loss(self, data: Any, batch_size: int = 256, seed: int = 0) -> np.ndarray:
        """The training loss of each image (what a membership-inference attacker thresholds)."""
        x = _as_tensor(data)
        torch.manual_seed(seed)
        self.net.eval()
        return torch.cat([self.net.per_sample_loss(x[i:i + batch_size])
                          for i in range(0, len(x), batch_size)]).numpy()

    def evaluate(
        self,
        data: Any,
        *,
        metrics: Any = None,
        n_samples: int = 1000,
        train_data: Any = None,
        attacks: bool = False,
        attack_n: int = 64,
        seed: int = 0,
    ) -> dict[str, float]:
        """Reconstruction MSE on ``data``; with ``metrics`` (a fitted
        :class:`privkit.dp.metrics.GenerativeMetrics`) AID and local-classifier IS/FD of
        ``n_samples`` samples; with ``train_data`` the membership-inference AUC (train vs ``data``);
        with ``attacks`` the FGSM / C&W / Square reconstruction losses on ``attack_n`` images."""
        x = _as_tensor(data)
        rec = self.reconstruct(x, seed=seed)
        out: dict[str, float] = {"recon_mse": float(np.mean((rec - x.numpy()) ** 2))}
        if metrics is not None:
            gen = self.sample(n_samples, seed=seed)
            out.update(metrics.evaluate(gen, real=x.numpy()))
        if train_data is not None:
            from ..dp.attacks import membership_inference

            mia = membership_inference(self, train_data, x, seed=seed)
            out["mia_auc"] = mia["auc"]
            out["mia_advantage"] = mia["advantage"]
        if attacks:
            from ..dp.attacks import attack_table

            for name, res in attack_table(self.net, x[:attack_n], seed=seed).items():
                out[f"{name}_loss"] = res["loss"]
                out[f"{name}_increase"] = res["increase"]
            out["clean_loss"] = res["clean_loss"]
        return out

    # ---------------------------------------------------------------- privacy
    def privacy_report(self) -> PrivacyReport:
        if self._report is not None:
            r = dataclasses.replace(self._report, warnings=list(self._report.warnings))
            if self.trained_without_dp and not any("WITHOUT" in w for w in r.warnings):
                r.warnings.append("part of the training ran WITHOUT differential privacy")
            return r
        return PrivacyReport(kind="none", details={"trained": bool(self.history)})

    # ---------------------------------------------------------------- state
    def _get_state(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "weights": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "dp_state": self.dp_state,
            "dp_config": self.dp_config,
            "report": self._report.to_dict() if self._report else None,
            "history": self.history,
            "trained_without_dp": self.trained_without_dp,
            "train_size": self.train_size,
        }

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> _VAEModel:
        # everything is checked before a real network is built
        where = cls.__name__
        cfg = check_config(VAEConfig, state.get("config"), _LIMITS, where)
        with torch.device("meta"):
            ref = cls.net_class(cfg)
        check_state_tensors(ref.state_dict(), state.get("weights"), where)
        for key in ("dp_state", "dp_config", "report"):
            check_plain(state.get(key), f"{where} {key}", kind=(dict, type(None)))
        history = check_plain(state.get("history") or [], f"{where} history", kind=list)
        train_size = state.get("train_size")
        if train_size is not None and (isinstance(train_size, bool)
                                       or not isinstance(train_size, int) or train_size < 0):
            raise DataFormatError(f"{where}: train_size must be a count, got {train_size!r}"[:200])
        if not isinstance(state.get("trained_without_dp", False), bool):
            raise DataFormatError(f"{where}: trained_without_dp must be true or false")
        rep = state.get("report")
        if rep:
            names = {f.name for f in dataclasses.fields(PrivacyReport)}
            if set(rep) - names:
                raise DataFormatError(f"{where}: unknown privacy report fields "
                                      f"{sorted(set(rep) - names)[:5]}")
            for k, v in rep.items():
                if k in ("kind", "scheme", "accountant", "judge", "server_sees"):
                    ok = v is None or isinstance(v, str)
                elif k in ("warnings", "coeff_modulus_bits"):
                    ok = v is None or isinstance(v, (list, tuple))
                elif k == "details":
                    ok = isinstance(v, dict)
                else:
                    ok = v is None or (isinstance(v, (int, float)) and math.isfinite(v))
                if not ok:
                    raise DataFormatError(f"{where}: privacy report field {k!r} = {v!r}"[:200])
        m = cls(cfg)
        m.net.load_state_dict(state["weights"])
        m.dp_state = state.get("dp_state")
        m.dp_config = state.get("dp_config")
        m._report = PrivacyReport(**rep) if rep else None
        m.history = list(history)
        m.trained_without_dp = bool(state.get("trained_without_dp"))
        m.train_size = train_size
        return m


class SpikingVAE(_VAEModel):
    """The Fully Spiking VAE (FSVAE) as a :class:`PrivateModel` (see the module docstring)."""

    model_kind: ClassVar[str] = "svae-spiking"
    net_class = SpikingVAENet

    @torch.no_grad()
    def spike_rates(self, data: Any, n: int = 256, seed: int = 0) -> dict[str, float]:
        """Mean firing rate per spiking layer on the first ``n`` images of ``data`` (see
        :meth:`SpikingVAENet.spike_rates`)."""
        x = _as_tensor(data)[:n]
        torch.manual_seed(seed)
        self.net.eval()
        return self.net.spike_rates(x)


class AnnVAE(_VAEModel):
    """An ANN VAE with FSVAE's shape (the paper's non-spiking baseline)."""

    model_kind: ClassVar[str] = "svae-ann"
    net_class = AnnVAENet

