"""Training pipeline of the IMU anonymiser: autoencoder, judges, GAN per strategy.

Stages (each seeded, with a tqdm progress bar on stderr, early stopping on a validation split
and an optional checkpoint):

1. :func:`pretrain_autoencoder` - denoising autoencoder (Gaussian input noise, MSE), cosine
   learning-rate schedule, best validation MSE kept.
2. :func:`train_classifier` - the tCNN-IMU ReID judge (subjects) and HAR judge (activities),
   trained on real windows, best validation accuracy kept, then frozen.
3. :func:`train_gan` - the encoder frozen; the decoder, the latent mapper and the discriminator
   train with the strategy's generator loss (the paper's, :func:`generator_loss`):

   * ``ag``:  ``L_G = BCE(D[X'], 1) * (m * p_ReID(y | X') + b)``, ``m + b = 1``;
   * ``acg``: the same, the mapper also gets the subject embedding;
   * ``dfi``: ``C = (C_x - mean code of the source) + C_z(z, target)``,
     ``L_G = BCE(D[X'], 1) * CE(ReID[X'], target)``.

   Beyond the paper, switchable. ``AnonConfig()`` turns on ``utility_weight`` (3) and
   ``dfi_target_mean``; :meth:`AnonConfig.paper` switches them off (the paper's losses only,
   :data:`PAPER`) and :meth:`AnonConfig.beyond_paper` turns every term on at the bench's
   settings (:data:`BEYOND_PAPER`):

   * ``utility_weight``: ``+ w * CE(U[X'], activity)``, U an auxiliary activity critic trained
     on real data *separately from the HAR judge* (the HAR judge never gives a gradient);
   * ``adaptive_weight``: ``+ w * adaptive_term(A[X'])``, A an *online attacker*, a ReID network
     retrained on the generator's outputs during GAN training (``attacker_steps`` updates per
     batch, optionally on real windows too: ``attacker_real``; started from the ReID judge's
     weights with ``attacker_init="reid"``; re-initialised every ``attacker_reset`` epochs);
     ``adaptive_loss`` is ``"prob"`` (mean probability of the true subject) or ``"confusion"``
     (``KL(uniform || p_A)``);
   * ``content_weight``: ``+ w * MSE(X', X)``;
   * ``dfi_target_mean``: ``C = C_x - mu_source + mu_target + C_z(z, target)`` for ``dfi``
     (the mapper learns a correction to a mean-code swap).

   Model selection (:class:`EpochSelector`) scores every epoch on a validation split.
   Activity is the lowest accuracy ratio (anonymised / real) of ``selection_critics`` activity
   networks trained on real data, never the HAR judge (the independent judge of
   :meth:`IMUAnonymiser.evaluate`) nor the utility critic (which the generator trains against).
   Privacy is the frozen ReID judge's accuracy (``ag``/``acg``) or transfer rate (``dfi``).
   With ``selection="constrained"`` (default) an epoch is *feasible* when its ReID accuracy is
   at most ``select_reid_factor`` x chance (or its transfer rate at least
   ``select_transfer_min``) and its activity ratio at least ``select_activity_min``; the
   feasible epoch with the best combined score (below) is kept, patience counts only from the first
   feasible epoch, and up to ``select_extra_epochs`` more epochs are trained while none is
   feasible. Without a feasible epoch (and with ``selection="score"``) the best combined score
   ``activity ratio - privacy`` is kept, privacy being the frozen ReID's normalised accuracy
   above chance or ``1 - transfer rate``; with ``select_attacker`` the online attacker's
   normalised accuracy above chance on the held-out anonymised windows is added to it, and
   epochs before ``warmup_epochs`` are never kept.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..api import load_state, save_state
from ..errors import ParameterError
from .config import (
    ADAPTIVE_LOSSES,
    BEYOND_PAPER,
    JUDGE_ARCHS,
    PAPER,
    PAPER_STRATEGIES,
    SELECTIONS,
    STRATEGIES,
    AnonConfig,
)
from .networks import TCNNIMU, ConvAutoencoder, Discriminator, Generator, LatentMapper
from .selection import EpochSelector, select_epoch

__all__ = [
    "ADAPTIVE_LOSSES",
    "BEYOND_PAPER",
    "JUDGE_ARCHS",
    "PAPER",
    "PAPER_STRATEGIES",
    "SELECTIONS",
    "STRATEGIES",
    "AnonConfig",
    "EpochSelector",
    "adaptive_term",
    "build_generator",
    "compute_code_means",
    "content_term",
    "generate",
    "generator_loss",
    "predict",
    "pretrain_autoencoder",
    "random_targets",
    "select_epoch",
    "train_classifier",
    "train_gan",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def discriminator_step(disc: nn.Module, opt: torch.optim.Optimizer, real: torch.Tensor,
                       fake: torch.Tensor) -> torch.Tensor:
    """One update of the real-vs-anonymised discriminator (``fake`` is detached); its loss."""
    d_real, d_fake = disc(real), disc(fake.detach())
    loss = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
            + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


def _batches(n: int, batch: int, gen: torch.Generator, drop_last: bool = True):
    perm = torch.randperm(n, generator=gen)
    stop = n - n % batch if (drop_last and n >= batch) else n
    for i in range(0, stop, batch):
        idx = perm[i:i + batch]
        if len(idx) >= 2:
            yield idx


def _bar(total: int, desc: str, cfg: AnonConfig):
    return tqdm(total=total, desc=desc, disable=not cfg.progress, leave=False, dynamic_ncols=True)


def _ckpt(cfg: AnonConfig, name: str) -> Path | None:
    return Path(cfg.checkpoint_dir) / f"{name}.pt" if cfg.checkpoint_dir else None


def _maybe_resume(cfg: AnonConfig, name: str, module: nn.Module) -> bool:
    path = _ckpt(cfg, name)
    if path is None or not path.is_file():
        return False
    module.load_state_dict(load_state(path, "anon-checkpoint")["module"])
    log.info("resumed %s from %s", name, path)
    return True


def _save_ckpt(cfg: AnonConfig, name: str, module: nn.Module, **extra: Any) -> None:
    path = _ckpt(cfg, name)
    if path is not None:
        save_state(path, "anon-checkpoint", {"module": module.state_dict(), **extra})


@torch.no_grad()
def predict(net: nn.Module, x: torch.Tensor, batch: int = 512) -> np.ndarray:
    """Class predictions of a classifier (eval mode restored afterwards)."""
    was = net.training
    net.eval()
    out = torch.cat([net(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])
    net.train(was)
    return out.cpu().numpy()


def random_targets(source: np.ndarray | torch.Tensor, n_subjects: int,
                   gen: torch.Generator | None = None) -> torch.Tensor:
    """A target subject for every window, uniformly among the subjects other than its source."""
    src = torch.as_tensor(np.asarray(source), dtype=torch.long)
    if n_subjects < 2:
        raise ParameterError("identity transfer needs at least two subjects")
    shift = torch.randint(1, n_subjects, src.shape, generator=gen)
    return (src + shift) % n_subjects


# --------------------------------------------------------------------------------------------
# stage 1: autoencoder
# --------------------------------------------------------------------------------------------


def pretrain_autoencoder(ae: ConvAutoencoder, x_train: torch.Tensor, x_val: torch.Tensor,
                         cfg: AnonConfig) -> list[float]:
    """Denoising pre-training (MSE to the clean window); returns validation MSE per epoch."""
    if _maybe_resume(cfg, "autoencoder", ae):
        return []
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    opt = torch.optim.Adam(ae.parameters(), lr=cfg.ae_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(cfg.ae_epochs, 1))
    best, best_state, history, bad = math.inf, copy.deepcopy(ae.state_dict()), [], 0
    bar = _bar(cfg.ae_epochs, "autoencoder", cfg)
    for _ in range(cfg.ae_epochs):
        ae.train()
        for idx in _batches(len(x_train), cfg.batch_size, gen):
            xb = x_train[idx]
            noisy = (xb + cfg.ae_noise * torch.randn(xb.shape, generator=gen)).clamp(0, 1)
            loss = F.mse_loss(ae(noisy), xb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        ae.eval()
        with torch.no_grad():
            val = float(F.mse_loss(ae(x_val), x_val))
        history.append(val)
        bar.update(1)
        bar.set_postfix(val_mse=f"{val:.4g}")
        if val < best - 1e-7:
            best, best_state, bad = val, copy.deepcopy(ae.state_dict()), 0
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    bar.close()
    ae.load_state_dict(best_state)
    ae.eval()
    _save_ckpt(cfg, "autoencoder", ae)
    return history


# --------------------------------------------------------------------------------------------
# stage 2: judges
# --------------------------------------------------------------------------------------------


def train_classifier(net: TCNNIMU, x_train: torch.Tensor, y_train: torch.Tensor,
                     x_val: torch.Tensor, y_val: torch.Tensor, cfg: AnonConfig, *,
                     name: str, epochs: int | None = None, seed_offset: int = 0) -> list[float]:
    """Train a tCNN-IMU classifier with cross-entropy; keeps the best validation accuracy."""
    if _maybe_resume(cfg, name, net):
        return []
    epochs = cfg.judge_epochs if epochs is None else epochs
    gen = torch.Generator().manual_seed(cfg.seed + 100 + seed_offset)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.judge_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    best, best_state, history, bad = -1.0, copy.deepcopy(net.state_dict()), [], 0
    bar = _bar(epochs, name, cfg)
    for _ in range(epochs):
        net.train()
        for idx in _batches(len(x_train), cfg.batch_size, gen):
            loss = F.cross_entropy(net(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        acc = float((torch.as_tensor(predict(net, x_val)) == y_val).float().mean())
        history.append(acc)
        bar.update(1)
        bar.set_postfix(val_acc=f"{acc:.3f}")
        if acc > best:
            best, best_state, bad = acc, copy.deepcopy(net.state_dict()), 0
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    bar.close()
    net.load_state_dict(best_state)
    net.eval()
    _save_ckpt(cfg, name, net)
    return history


# --------------------------------------------------------------------------------------------
# stage 3: GAN
# --------------------------------------------------------------------------------------------


def build_generator(ae: ConvAutoencoder, strategy: str, n_subjects: int,
                    cfg: AnonConfig) -> Generator:
    """The generator for ``strategy``: subject embedding for ``acg`` (source) and ``dfi``
    (target); code means for ``dfi``."""
    if strategy not in PAPER_STRATEGIES:
        raise ParameterError(f"build_generator builds the paper's strategies {PAPER_STRATEGIES}, "
                             f"got {strategy!r} (strategy 'remove' uses "
                             "privkit.anon.removal.RemovalGenerator)")
    mapper = LatentMapper(ae.code_shape, z_dim=cfg.z_dim,
                          n_subjects=n_subjects if strategy in ("acg", "dfi") else None,
                          embed_dim=cfg.embed_dim, hidden=cfg.mapper_hidden)
    return Generator(ae, mapper, n_subjects,
                     add_target_mean=strategy == "dfi" and cfg.dfi_target_mean)


@torch.no_grad()
def compute_code_means(gen: Generator, x: torch.Tensor, subject: torch.Tensor,
                       n_subjects: int) -> None:
    """Store each subject's mean encoder code in ``gen.code_means`` (for ``dfi``)."""
    gen.ae.eval()
    codes = torch.cat([gen.ae.encode(x[i:i + 512]) for i in range(0, len(x), 512)])
    means = torch.zeros(n_subjects, *codes.shape[1:])
    for s in range(n_subjects):
        m = subject == s
        if m.any():
            means[s] = codes[m].mean(0)
    gen.code_means.copy_(means)


def generator_loss(strategy: str, d_logits: torch.Tensor, reid_logits: torch.Tensor,
                   label: torch.Tensor, cfg: AnonConfig) -> torch.Tensor:
    """The paper's generator loss. ``label`` is the true subject (``ag``/``acg``) or the target
    subject (``dfi``)."""
    adv = F.binary_cross_entropy_with_logits(d_logits, torch.ones_like(d_logits),
                                             reduction="none")
    if strategy == "dfi":
        return (adv * F.cross_entropy(reid_logits, label, reduction="none")).mean()
    p = F.softmax(reid_logits, dim=1).gather(1, label[:, None]).squeeze(1)
    return (adv * (cfg.ag_m * p + cfg.ag_b)).mean()


def adaptive_term(kind: str, attacker_logits: torch.Tensor, subject: torch.Tensor
                  ) -> torch.Tensor:
    """The online-attacker term (beyond the paper), >= 0, lower = less identity left.

    ``"prob"``: the mean probability the attacker gives the true subject (its gradient vanishes
    as that probability nears 1, i.e. when the attacker is most right); ``"confusion"``:
    ``KL(uniform || p_A(. | X'))``, zero only when the attacker cannot tell the subjects apart.
    """
    if kind == "prob":
        return F.softmax(attacker_logits, 1).gather(1, subject[:, None]).mean()
    if kind == "confusion":
        k = attacker_logits.shape[1]
        return (-F.log_softmax(attacker_logits, 1).mean(1) - math.log(k)).mean()
    raise ParameterError(f"adaptive_loss must be one of {ADAPTIVE_LOSSES}, got {kind!r}")


def content_term(fake: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Content term (beyond the paper): MSE between X' and the input window, a pull towards
    the input that keeps whatever the privacy terms do not need to change."""
    return F.mse_loss(fake, x)


def _reset(net: nn.Module) -> None:
    for m in net.modules():
        if m is not net and hasattr(m, "reset_parameters"):
            m.reset_parameters()


def generate(gen: Generator, strategy: str, x: torch.Tensor, subject: torch.Tensor,
             target: torch.Tensor | None, g: torch.Generator) -> torch.Tensor:
    """X' for ``strategy``: ``ag`` (and ``remove``) ignores the subject, ``acg`` conditions on
    it, ``dfi`` subtracts the source's mean code and conditions on ``target``; z ~ N(0, I) from ``g``."""
    z = torch.randn(len(x), gen.z_dim, generator=g)
    if strategy in ("ag", "remove"):  # remove: z is the bottleneck noise
        return gen(x, z)
    if strategy == "acg":
        return gen(x, z, condition=subject)
    return gen(x, z, condition=target, source=subject)


def _freeze(net: nn.Module) -> None:
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)


def train_gan(
    gen: Generator,
    disc: Discriminator,
    reid: TCNNIMU,
    strategy: str,
    x_train: torch.Tensor,
    a_train: torch.Tensor,
    s_train: torch.Tensor,
    cfg: AnonConfig,
    *,
    validate: Callable[..., dict[str, float]],
    utility_critic: TCNNIMU | None = None,
    attacker: TCNNIMU | None = None,
) -> list[dict[str, float]]:
    """Adversarial training of the generator against D and the frozen ReID judge.

    ``validate(gen, attacker)`` returns at least ``score`` (higher is better) and, for the
    constrained rule, ``activity_ratio`` and ``reid`` or ``transfer``; ``attacker`` is the online
    attacker when ``cfg.select_attacker`` is on and the warm-up is over, else ``None``. The
    state :class:`EpochSelector` prefers is kept (early stopping with ``cfg.patience``, counted
    from the first feasible epoch under the constrained rule; epochs before
    ``cfg.warmup_epochs`` are never kept when ``select_attacker`` is on, because the online
    attacker has not caught up yet). Returns one dict per epoch (losses, the validation numbers,
    ``feasible``, ``selected`` = 1 for the kept epoch, seconds).
    """
    n_subjects = int(reid.n_classes)
    _freeze(reid)
    for p in gen.ae.encoder.parameters():
        p.requires_grad_(False)
    if utility_critic is not None:
        _freeze(utility_critic)
    g = torch.Generator().manual_seed(cfg.seed + 7)
    gparams = [p for p in gen.parameters() if p.requires_grad]
    opt_g = torch.optim.Adam(gparams, lr=cfg.gen_lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.999))

    def new_attacker_opt():
        return torch.optim.Adam(attacker.parameters(), lr=cfg.judge_lr)

    def init_attacker(epoch: int) -> None:
        if cfg.attacker_init == "reid":  # start from the real-data judge: strong at once
            attacker.load_state_dict(reid.state_dict())
        else:
            # seeded re-initialisation that leaves the training's own random stream alone
            with torch.random.fork_rng():
                torch.manual_seed(cfg.seed + 1000 + epoch)
                _reset(attacker)
        for p in attacker.parameters():
            p.requires_grad_(True)

    opt_a = None
    if attacker is not None:
        init_attacker(0)
        opt_a = new_attacker_opt()
    scheds = [torch.optim.lr_scheduler.ExponentialLR(o, cfg.lr_decay) for o in (opt_g, opt_d)]
    selector, best_state, history = EpochSelector(cfg, n_subjects), None, []
    use_u = utility_critic is not None and cfg.utility_weight > 0
    use_a = attacker is not None and cfg.adaptive_weight > 0
    bar = _bar(cfg.gan_epochs, f"gan[{strategy}]", cfg)
    for epoch in range(selector.max_epochs):
        if selector.past_budget(epoch):
            break  # extra epochs only while no epoch has been feasible
        if epoch == cfg.gan_epochs:  # the bar's total grows with the extra epochs it runs
            bar.total = selector.max_epochs
            bar.set_description(f"gan[{strategy}] (extra: none feasible yet)")
            bar.refresh()
        t0 = time.perf_counter()
        if attacker is not None and cfg.attacker_reset and epoch and \
                epoch % cfg.attacker_reset == 0:
            init_attacker(epoch)
            opt_a = new_attacker_opt()
        gen.train()
        gen.ae.encoder.eval()  # frozen: no dropout, running BN statistics
        disc.train()
        sums = {"loss_d": 0.0, "loss_g": 0.0, "loss_a": 0.0, "n": 0}
        for idx in _batches(len(x_train), cfg.batch_size, g):
            xb, sb = x_train[idx], s_train[idx]
            tb = random_targets(sb, n_subjects, g) if strategy == "dfi" else None
            fake = generate(gen, strategy, xb, sb, tb, g)
            loss_d = discriminator_step(disc, opt_d, xb, fake)
            # online attacker steps (beyond the paper): learns the source subject of X'
            if attacker is not None and opt_a is not None:
                attacker.train()
                xa_in, ya_in = fake.detach(), sb
                if cfg.attacker_real:
                    xa_in, ya_in = torch.cat([xa_in, xb]), torch.cat([sb, sb])
                for _ in range(cfg.attacker_steps):
                    loss_a = F.cross_entropy(attacker(xa_in), ya_in)
                    opt_a.zero_grad()
                    loss_a.backward()
                    opt_a.step()
                sums["loss_a"] += loss_a.item()
            # generator step
            label = tb if strategy == "dfi" else sb
            loss_g = generator_loss(strategy, disc(fake), reid(fake), label, cfg)
            if use_u:
                loss_g = loss_g + cfg.utility_weight * F.cross_entropy(utility_critic(fake),
                                                                       a_train[idx])
            if use_a:
                attacker.eval()
                loss_g = loss_g + cfg.adaptive_weight * adaptive_term(
                    cfg.adaptive_loss, attacker(fake), sb)
            if cfg.content_weight > 0:
                loss_g = loss_g + cfg.content_weight * content_term(fake, xb)
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
            if attacker is not None:
                attacker.zero_grad(set_to_none=True)
            sums["loss_d"] += loss_d.item()
            sums["loss_g"] += loss_g.item()
            sums["n"] += 1
        for s in scheds:
            s.step()
        gen.eval()
        counted = cfg.select_attacker and attacker is not None
        eligible = not counted or epoch + 1 >= cfg.warmup_epochs
        val = validate(gen, attacker if counted and eligible else None)
        n = max(sums["n"], 1)
        rec = {"epoch": epoch, "loss_d": sums["loss_d"] / n, "loss_g": sums["loss_g"] / n,
               **({"loss_a": sums["loss_a"] / n} if attacker is not None else {}), **val,
               "seconds": time.perf_counter() - t0}
        history.append(rec)
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in val.items()})
        log.info("gan[%s] epoch %d: %s", strategy, epoch, rec)
        if not eligible:
            continue
        rec["feasible"] = float(selector.feasible(val))
        if selector.update(epoch, val):
            best_state = (copy.deepcopy(gen.state_dict()), copy.deepcopy(disc.state_dict()))
            _save_ckpt(cfg, f"gan_{strategy}", gen, epoch=epoch, score=val["score"])
        elif selector.stop:
            break
    bar.close()
    selector.restore(history, best_state, gen, disc)
    return history
