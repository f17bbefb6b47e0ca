"""The VAE networks of :mod:`privkit.apps.svae`: FSVAE (Kamata et al., AAAI 2022) as
:class:`SpikingVAENet`, an ANN VAE of the same shape (:class:`AnnVAENet`), their
:class:`VAEConfig` and the PSP loss term. The app module wraps them as PrivateModels.

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

>>> net = SpikingVAENet(VAEConfig(image_size=16, widths=(4, 8), latent_dim=8, n_steps=2, k=4))
>>> tuple(net.sample(2).shape)
(2, 1, 16, 16)
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import torch
from torch import nn

from ..errors import ParameterError, ShapeError
from .snn import (
    DEFAULT_TAU,
    DEFAULT_THRESHOLD,
    LIFNeuron,
    LIFStep,
    MembraneOutput,
    StepLinear,
    TimeConvTranspose3d,
)

__all__ = ["AnnVAENet", "SpikingVAENet", "VAEConfig", "psp"]


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
