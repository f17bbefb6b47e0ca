"""Identity removal (strategy ``"remove"``, beyond the paper): the window is re-synthesised from
a code that an adversary cannot read the subject from, with a *strength* knob.

The paper's strategies (``ag``, ``acg``, ``dfi``) add a code ``C_z`` to the encoder's code and
train the decoder to fool one frozen ReID judge: what the judge does not use survives, and an
attacker retrained on the output re-identifies (``docs/anonymisation.md``). Here identity is
taken out of the code itself, before the decoder sees it:

* the encoder (initialised from the pre-trained autoencoder, fine-tuned) gives ``C_x``, a dense
  layer squeezes it to a small standardised code ``u`` (``removal_dim`` numbers);
* an **identity adversary** (an MLP) learns the subject from ``u`` while the encoder gets its
  gradient *reversed* (gradient reversal layer, weight ``removal_adv_weight x strength``): the
  encoder learns codes the adversary cannot read identity from;
* an **activity head** learns the activity from ``u`` (so the code keeps it);
* an **information bottleneck**: the decoder sees ``u' = sqrt(1 - s) u + sqrt(s) eps`` with
  ``eps ~ N(0, I)`` drawn per window, and the activity as a one-hot label (the true one in
  training, the head's prediction when anonymising);
* the decoder (initialised from the autoencoder's) re-synthesises the window from ``u'`` and the
  label, trained with ``(1 - s) x`` reconstruction, the discriminator (realism) and the
  activity critic (``removal_utility_weight``; the other strategies' term, with its own weight).

The strength ``s = removal_strength`` moves between an autoencoder with an activity-conditioned
decoder (``s = 0``: utility max, no removal) and an activity-conditional generator (``s = 1``:
the decoder sees only the predicted activity and noise, so the output is a function of the
activity label and randomness alone and re-identification can only come from errors of that
label: the privacy end of the curve).

>>> import torch
>>> from privkit.anon.networks import ConvAutoencoder
>>> gen = RemovalGenerator(ConvAutoencoder(6, 32), n_activities=3, n_subjects=4, dim=8,
...                        strength=0.5)
>>> x = torch.rand(5, 32, 6)
>>> gen(x, torch.randn(5, 8)).shape
torch.Size([5, 32, 6])
>>> gen.identity_logits(gen.squeeze(x)).shape
torch.Size([5, 4])
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ParameterError
from .config import AnonConfig
from .networks import ConvAutoencoder, Discriminator
from .train import _bar, _batches, discriminator_step

__all__ = ["RemovalGenerator", "grad_reverse", "removal_epochs", "train_removal"]


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: float) -> torch.Tensor:  # type: ignore[override]
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.weight * grad, None


def grad_reverse(x: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """Identity forward; the gradient is multiplied by ``-weight`` on the way back.

    >>> x = torch.ones(2, requires_grad=True)
    >>> grad_reverse(x, 3.0).sum().backward()
    >>> x.grad
    tensor([-3., -3.])
    """
    return _GradReverse.apply(x, float(weight))


class RemovalGenerator(nn.Module):
    """Encoder -> small code ``u`` (identity removed in training) -> noisy code + activity label
    -> decoder. ``z`` (shaped ``(B, dim)``) is the bottleneck noise ``eps``."""

    def __init__(self, ae: ConvAutoencoder, *, n_activities: int, n_subjects: int,
                 dim: int = 32, strength: float = 0.5, hidden: int = 128,
                 labeller: nn.Module | None = None) -> None:
        super().__init__()
        if not 0.0 <= strength <= 1.0:
            raise ParameterError(f"removal_strength must be in [0, 1], got {strength}")
        self.ae = ae
        self.n_activities, self.n_subjects = int(n_activities), int(n_subjects)
        self.dim, self.strength = int(dim), float(strength)
        flat = math.prod(ae.code_shape)
        self.squeeze_fc = nn.Linear(flat, self.dim)
        self.norm = nn.BatchNorm1d(self.dim, affine=False)
        self.expand = nn.Linear(self.dim + self.n_activities, flat)
        self.activity_head = nn.Sequential(nn.Linear(self.dim, hidden), nn.ReLU(),
                                           nn.Linear(hidden, self.n_activities))
        self.adversary = nn.Sequential(nn.Linear(self.dim, hidden), nn.ReLU(),
                                       nn.Linear(hidden, hidden), nn.ReLU(),
                                       nn.Linear(hidden, self.n_subjects))
        #: an activity classifier of the real window (frozen; trained before the removal
        #: stage) that labels the windows when anonymising; None: the activity head
        self.labeller = labeller
        if labeller is not None:
            for p in labeller.parameters():
                p.requires_grad_(False)

    @property
    def z_dim(self) -> int:
        return self.dim

    def squeeze(self, x: torch.Tensor) -> torch.Tensor:
        """The standardised small code ``u`` of windows ``x``."""
        return self.norm(self.squeeze_fc(self.ae.encode(x).flatten(1)))

    def identity_logits(self, u: torch.Tensor) -> torch.Tensor:
        return self.adversary(u)

    def synthesise(self, u: torch.Tensor, eps: torch.Tensor, activity: torch.Tensor
                   ) -> torch.Tensor:
        """Decode ``sqrt(1 - s) u + sqrt(s) eps`` with the one-hot ``activity``."""
        s = self.strength
        noisy = math.sqrt(1.0 - s) * u + math.sqrt(s) * eps
        onehot = F.one_hot(activity, self.n_activities).to(u.dtype)
        code = self.expand(torch.cat([noisy, onehot], 1)).view(len(u), *self.ae.code_shape)
        return self.ae.decode(torch.relu(code))

    def forward(self, x: torch.Tensor, z: torch.Tensor,
                activity: torch.Tensor | None = None) -> torch.Tensor:
        """X'; ``activity`` defaults to the activity head's prediction (what anonymising
        uses)."""
        u = self.squeeze(x)
        if activity is None:
            activity = self.predict_activity(x, u)
        return self.synthesise(u, z, activity)

    def predict_activity(self, x: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """The label the decoder gets when anonymising: the labeller's on the real window,
        else the activity head's on the code."""
        if self.labeller is not None:
            was = self.labeller.training
            self.labeller.eval()
            try:
                return self.labeller(x).argmax(1)
            finally:
                self.labeller.train(was)
        return self.activity_head(self.squeeze(x) if u is None else u).argmax(1)


def removal_epochs(cfg: AnonConfig, n_train: int) -> int:
    """The removal stage's epoch budget: ``gan_epochs``, or more on a small data set so that
    at least ``removal_min_steps`` optimiser steps are taken, but never more than
    ``4 x gan_epochs`` (a tiny data set must not turn into thousands of epochs).

    >>> cfg = AnonConfig(gan_epochs=20, removal_min_steps=1500, batch_size=64)
    >>> removal_epochs(cfg, 1500), removal_epochs(cfg, 9000), removal_epochs(cfg, 100)
    (66, 20, 80)
    """
    per_epoch = max(n_train // cfg.batch_size if n_train >= cfg.batch_size else 1, 1)
    return min(max(cfg.gan_epochs, math.ceil(cfg.removal_min_steps / per_epoch)),
               4 * cfg.gan_epochs)


def train_removal(
    gen: RemovalGenerator,
    disc: Discriminator,
    x_train: torch.Tensor,
    a_train: torch.Tensor,
    s_train: torch.Tensor,
    cfg: AnonConfig,
    *,
    validate: Callable[..., dict[str, float]],
    selector: Any,
    utility_critic: nn.Module | None = None,
) -> list[dict[str, float]]:
    """Train the removal generator (all of it, encoder included) against the discriminator, the
    identity adversary (through gradient reversal) and the activity critic; keeps the epoch
    ``selector`` prefers (:class:`~privkit.anon.selection.EpochSelector`, scored by
    ``validate(gen, None)``). Returns one dict per epoch."""
    s = gen.strength
    g = torch.Generator().manual_seed(cfg.seed + 7)
    if utility_critic is not None:
        utility_critic.eval()
        for p in utility_critic.parameters():
            p.requires_grad_(False)
    main = [p for n, p in gen.named_parameters()
            if not n.startswith(("adversary.", "labeller."))]
    opt_g = torch.optim.Adam(main, lr=cfg.removal_lr)
    opt_a = torch.optim.Adam(gen.adversary.parameters(), lr=cfg.removal_lr)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.999))
    lam = cfg.removal_adv_weight * s
    use_u = utility_critic is not None and cfg.removal_utility_weight > 0
    best_state, history = None, []
    bar = _bar(cfg.gan_epochs, "gan[remove]", cfg)
    for epoch in range(selector.max_epochs):
        if selector.past_budget(epoch):
            break  # extra epochs only while no epoch has been feasible (as train_gan)
        if epoch == cfg.gan_epochs:
            bar.total = selector.max_epochs
            bar.set_description("gan[remove] (extra: none feasible yet)")
            bar.refresh()
        t0 = time.perf_counter()
        gen.train()
        disc.train()
        sums = {"loss_d": 0.0, "loss_g": 0.0, "adv_acc": 0.0, "rec": 0.0, "n": 0}
        for idx in _batches(len(x_train), cfg.batch_size, g):
            xb, ab, sb = x_train[idx], a_train[idx], s_train[idx]
            u = gen.squeeze(xb)
            eps = torch.randn(u.shape, generator=g)
            fake = gen.synthesise(u, eps, ab)
            loss_d = discriminator_step(disc, opt_d, xb, fake)
            # the identity adversary on a detached code (it always keeps up with the encoder)
            adv_logits = gen.identity_logits(u.detach())
            loss_a = F.cross_entropy(adv_logits, sb)
            opt_a.zero_grad()
            loss_a.backward()
            opt_a.step()
            # generator: encoder, squeeze, heads, decoder
            d_out = disc(fake)
            rec = F.mse_loss(fake, xb)
            loss_g = (F.binary_cross_entropy_with_logits(d_out, torch.ones_like(d_out))
                      + cfg.removal_rec_weight * (1.0 - s) * rec
                      + F.cross_entropy(gen.activity_head(u), ab))
            if lam > 0:
                # reversed gradient: the encoder makes the (frozen-for-this-step) adversary wrong
                loss_g = loss_g + F.cross_entropy(gen.identity_logits(grad_reverse(u, lam)), sb)
            if use_u:
                loss_g = loss_g + cfg.removal_utility_weight * F.cross_entropy(
                    utility_critic(fake), ab)
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
            gen.adversary.zero_grad(set_to_none=True)
            sums["loss_d"] += loss_d.item()
            sums["loss_g"] += loss_g.item()
            sums["rec"] += rec.item()
            sums["adv_acc"] += float((adv_logits.argmax(1) == sb).float().mean())
            sums["n"] += 1
        gen.eval()
        val = validate(gen, None)
        n = max(sums["n"], 1)
        rec_ = {"epoch": epoch, **{k: v / n for k, v in sums.items() if k != "n"}, **val,
                "seconds": time.perf_counter() - t0}
        history.append(rec_)
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in val.items()})
        rec_["feasible"] = float(selector.feasible(val))
        if selector.update(epoch, val):
            best_state = (copy.deepcopy(gen.state_dict()), copy.deepcopy(disc.state_dict()))
        elif selector.stop:
            break
    bar.close()
    selector.restore(history, best_state, gen, disc)
    return history
