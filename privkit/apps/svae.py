"""The DP spiking VAE: FSVAE (Kamata et al., AAAI 2022) and an ANN VAE of the same shape, trainable
with DP-SGD through :mod:`privkit.dp` and honest about the epsilon.

The networks, their configuration (:class:`VAEConfig`: every size is configurable so that CPU
runs finish; in DP mode the normalisation must be per-sample) and the architecture as published
are described in :mod:`privkit.dp.vae` (the names are re-exported here). This module holds the
PrivateModels that train them with DP-SGD, evaluate, save and load them.

>>> from privkit.apps.svae import SpikingVAE
>>> m = SpikingVAE(image_size=16, widths=(4, 8), latent_dim=8, n_steps=2, k=4)
>>> m.sample(2).shape
(2, 1, 16, 16)
"""

from __future__ import annotations

import dataclasses
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
from ..dp.vae import AnnVAENet, SpikingVAENet, VAEConfig, psp
from ..errors import DataFormatError, ParameterError, ShapeError

__all__ = ["AnnVAE", "AnnVAENet", "SpikingVAE", "SpikingVAENet", "VAEConfig", "psp"]

log = logging.getLogger(__name__)

# bounds of every VAEConfig field a saved model may state (checked before a network is built)
_LIMITS: dict[str, tuple[float, float]] = {
    "in_channels": (1, 64), "image_size": (1, 2048), "widths": (1, 4096),
    "latent_dim": (1, 1 << 16), "n_steps": (1, 4096), "k": (1, 4096), "groups": (1, 4096),
    "tau": (0, 1e6), "threshold": (-1e6, 1e6), "psp_tau": (0, 1e6),
    "distance_weight": (0, 1e6), "scheduled_sampling": (0, 1), "kl_weight": (0, 1e6),
}


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

