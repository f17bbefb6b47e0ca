"""Attacks on (DP) autoencoders: adversarial inputs against the reconstruction loss, and
membership inference.

Adversarial attacks follow the DP-SVAE paper's settings: perturbation 0.3 (on the [0, 1] pixel
scale, i.e. 0.6 on the models' [-1, 1] scale), MSE between the reconstruction of the attacked
input and the clean input as the loss to maximise, 50 iterations for the iterative attacks, 4x4
patches for Square. Each returns the reconstruction loss under attack; :func:`attack_table` adds
the clean loss and the increase (paper Tables 6-7).

:func:`membership_inference` is a loss-threshold attack (Yeom et al.): members (training images)
tend to have lower loss; its ROC AUC over members vs. held-out images is the empirical privacy
check (0.5 = the attacker learns nothing).

A "network" here is anything with ``reconstruct(x, noise)`` (the ``net`` of
:class:`privkit.apps.svae.SpikingVAE` / ``AnnVAE``); the model itself is accepted too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "attack_table",
    "carlini_wagner_l2",
    "fgsm",
    "membership_inference",
    "reconstruction_loss",
    "square_attack",
]

LOW, HIGH = -1.0, 1.0


def _net(model: Any) -> nn.Module:
    return getattr(model, "net", model)


def _fixed_recon(net: nn.Module, x: torch.Tensor, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``f(x_adv) -> reconstruction`` with the model's randomness frozen (same draws every call)."""
    g = torch.Generator().manual_seed(seed)
    noise = None
    if hasattr(net, "_noise"):  # spiking VAE: fix the candidate-spike choices
        T, L = net.cfg.n_steps, net.cfg.latent_dim
        noise = {
            "q": torch.rand(len(x), T, L, generator=g),
            "p": torch.rand(len(x), T, L, generator=g),
            "sched": torch.rand(len(x), T, generator=g),
        }
    return lambda xa: net.reconstruct(xa, noise)


def _per_sample_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2).flatten(1).mean(1)


def reconstruction_loss(model: Any, x: torch.Tensor, seed: int = 0) -> float:
    net = _net(model)
    net.eval()
    f = _fixed_recon(net, x, seed)
    with torch.no_grad():
        return float(_per_sample_mse(f(x), x).mean())


def fgsm(model: Any, x: torch.Tensor, eps: float = 0.3, seed: int = 0) -> torch.Tensor:
    """Fast gradient sign attack: ``x + eps' * sign(grad)``; ``eps`` on the [0, 1] pixel scale."""
    net = _net(model)
    net.eval()
    f = _fixed_recon(net, x, seed)
    e = eps * (HIGH - LOW)
    xa = x.clone().requires_grad_(True)
    loss = _per_sample_mse(f(xa), x).sum()
    (g,) = torch.autograd.grad(loss, xa)
    return (x + e * g.sign()).clamp(LOW, HIGH).detach()


def carlini_wagner_l2(model: Any, x: torch.Tensor, c: float = 10.0, steps: int = 50,
                      lr: float = 0.01, seed: int = 0) -> torch.Tensor:
    """C&W (L2) adapted to autoencoders: minimise ``||x' - x||_2^2 - c * loss(x')`` in tanh space
    with Adam for ``steps`` iterations; keeps, per image, the attacked input with the highest loss.
    """
    net = _net(model)
    net.eval()
    f = _fixed_recon(net, x, seed)
    w = torch.atanh(x.clamp(LOW + 1e-6, HIGH - 1e-6)).clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    best = x.clone()
    with torch.no_grad():
        best_loss = _per_sample_mse(f(x), x)
    for _ in range(steps):
        xa = torch.tanh(w)
        loss = _per_sample_mse(f(xa), x)
        l2 = ((xa - x) ** 2).flatten(1).sum(1)
        obj = (l2 - c * loss).sum()
        opt.zero_grad()
        obj.backward()
        opt.step()
        with torch.no_grad():
            better = loss > best_loss
            best[better] = xa[better].detach()
            best_loss = torch.where(better, loss.detach(), best_loss)
    return best.detach()


@torch.no_grad()
def square_attack(model: Any, x: torch.Tensor, eps: float = 0.3, iters: int = 50, patch: int = 4,
                  seed: int = 0) -> torch.Tensor:
    """Square attack (Andriushchenko et al.), L-infinity, fixed ``patch`` x ``patch`` squares:
    random-search updates accepted per image when they increase the loss. Needs no gradients."""
    net = _net(model)
    net.eval()
    f = _fixed_recon(net, x, seed)
    g = torch.Generator().manual_seed(seed + 1)
    e = eps * (HIGH - LOW)
    n, c, h, w = x.shape
    # initialisation: vertical stripes of +-eps
    stripes = (torch.randint(0, 2, (n, c, 1, w), generator=g).float() * 2 - 1) * e
    delta = stripes.expand(n, c, h, w).clone()
    xa = (x + delta).clamp(LOW, HIGH)
    best_loss = _per_sample_mse(f(xa), x)
    p = min(patch, h, w)
    for _ in range(iters):
        r = torch.randint(0, h - p + 1, (n,), generator=g)
        s = torch.randint(0, w - p + 1, (n,), generator=g)
        sign = (torch.randint(0, 2, (n, c, 1, 1), generator=g).float() * 2 - 1) * e
        cand = delta.clone()
        for i in range(n):
            cand[i, :, r[i]:r[i] + p, s[i]:s[i] + p] = sign[i]
        xc = (x + cand).clamp(LOW, HIGH)
        loss = _per_sample_mse(f(xc), x)
        better = loss > best_loss
        delta[better] = cand[better]
        best_loss = torch.where(better, loss, best_loss)
    return (x + delta).clamp(LOW, HIGH)


def attack_table(model: Any, x: Any, eps: float = 0.3, iters: int = 50, seed: int = 0,
                 cw_c: float = 10.0) -> dict[str, dict[str, float]]:
    """Reconstruction loss clean and under FGSM / C&W-L2 / Square, with the increase of each."""
    x = torch.as_tensor(np.asarray(getattr(x, "images", x), dtype=np.float32))
    net = _net(model)
    clean = reconstruction_loss(net, x, seed)
    out = {}
    attacks = {
        "fgsm": lambda: fgsm(net, x, eps, seed),
        "cw": lambda: carlini_wagner_l2(net, x, c=cw_c, steps=iters, seed=seed),
        "square": lambda: square_attack(net, x, eps, iters, 4, seed),
    }
    for name, run in attacks.items():
        xa = run()
        loss = reconstruction_loss_against(net, xa, x, seed)
        out[name] = {"clean_loss": clean, "loss": loss, "increase": loss - clean,
                     "linf": float((xa - x).abs().max()),
                     "l2": float((xa - x).flatten(1).norm(dim=1).mean())}
    return out


def reconstruction_loss_against(model: Any, x_adv: torch.Tensor, x: torch.Tensor,
                                seed: int = 0) -> float:
    """MSE between the reconstruction of ``x_adv`` and the clean ``x``."""
    net = _net(model)
    net.eval()
    f = _fixed_recon(net, x, seed)
    with torch.no_grad():
        return float(_per_sample_mse(f(x_adv), x).mean())


def membership_inference(model: Any, members: Any, non_members: Any, *, max_n: int = 1000,
                         repeats: int = 4, seed: int = 0) -> dict[str, float]:
    """Loss-threshold membership inference: AUC and advantage (max TPR - FPR).

    ``model`` is a privkit VAE (anything with ``per_sample_loss(images, seed=...)``); the loss of a
    stochastic model is averaged over ``repeats`` draws. Equal numbers of members and non-members
    (at most ``max_n`` each) are used, so 0.5 is chance.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    mem = np.asarray(getattr(members, "images", members), dtype=np.float32)
    non = np.asarray(getattr(non_members, "images", non_members), dtype=np.float32)
    rng = np.random.default_rng(seed)
    n = min(len(mem), len(non), max_n)
    mem = mem[rng.permutation(len(mem))[:n]]
    non = non[rng.permutation(len(non))[:n]]

    def loss(x: np.ndarray) -> np.ndarray:
        return np.mean([model.per_sample_loss(x, seed=seed + r) for r in range(repeats)], axis=0)

    scores = -np.concatenate([loss(mem), loss(non)])
    y = np.concatenate([np.ones(n), np.zeros(n)])
    fpr, tpr, _ = roc_curve(y, scores)
    return {"auc": float(roc_auc_score(y, scores)), "advantage": float(np.max(tpr - fpr)), "n": n}
