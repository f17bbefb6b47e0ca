"""ApneaDetector: a 1-D CNN for sleep-apnea detection on ECG windows, run on encrypted data.

The network is built from :mod:`privkit.nn` layers, so training already sees the polynomial
approximations that the encrypted program computes. After training, the approximated layers are
calibrated on the training windows and briefly fine-tuned with the calibrated bounds frozen;
``compile()`` then turns the model into an :class:`~privkit.fhe.program.EncryptedProgram` whose
decrypted logits equal the plaintext model's up to CKKS noise.

>>> from privkit.data.ecg import synthetic_ecg
>>> from privkit.apps.apnea import ApneaDetector
>>> det = ApneaDetector(epochs=1, finetune_epochs=0, seed=0).fit(synthetic_ecg(32, seed=1), progress=False)
>>> sorted(det.evaluate(synthetic_ecg(16, seed=2)))
['accuracy', 'n', 'sensitivity', 'specificity']
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any

import numpy as np
import torch

from .. import nn as pnn
from ..api import (
    PrivacyReport,
    PrivateModel,
    check_config,
    check_plain,
    check_state_tensors,
)
from ..errors import DataFormatError, ParameterError, ShapeError
from ..fhe.program import _as_range
from .apnea_train import (
    _ema_copy,
    _ema_update,
    _refresh_batchnorm,
    _subject_split,
    fit_detector,
    subject_folds,
)

# the training helpers live in apnea_train; their names stay importable from here
_TRAINING_HELPERS = (_ema_copy, _ema_update, _refresh_batchnorm, _subject_split, subject_folds)

__all__ = ["ApneaConfig", "ApneaDetector", "build_apnea_model"]

log = logging.getLogger(__name__)

WINDOW = 1408


@dataclasses.dataclass
class ApneaConfig:
    """Architecture and training settings; the defaults are v2's (N=16384, 7 levels, 128-bit).

    ``ApneaConfig.for_arch("v1")`` gives v1's measured settings. v1, measured on synthetic ECG
    (effect 2, 1200 training windows, 300 of unseen subjects): first kernel 8 -> 0.68 accuracy,
    16 -> 0.73 (its default); PolyReLU degree 4 -> 0.77 but needs 10 levels (N=32768). v2:
    docs/encrypted_inference.md.

    >>> ApneaConfig().arch, ApneaConfig.for_arch("v1").kernel1
    ('v2', 16)
    """

    #: "v1": PolyReLU (a fitted ReLU approximation) and a flatten + linear head; "v2": a
    #: trainable per-channel quadratic (PolyAct, one level), three blocks and a global
    #: average pool before a small linear head
    arch: str = "v2"
    window: int = WINDOW
    channels: int = 4
    kernel1: int = 32
    stride1: int = 8
    kernel2: int = 8
    stride2: int = 2
    blocks: int = 0  # 0: the architecture's default (v1: 2, v2: 3)
    pool: str = "avg"  # "avg" (free) or "max" (approximate max, deeper)
    relu_degree: int = 3
    relu_mode: str = "poly"  # "poly" (one fitted polynomial) or "composite" (sign composition)
    batchnorm: bool = True  # folded into the convolutions at compile time: no level, no cost
    conv_method: str = "spatial"
    linear_method: str = "bsgs"
    epochs: int = 60
    finetune_epochs: int = 0
    batch_size: int = 64
    lr: float = 1e-2
    weight_decay: float = 1e-4
    seed: int = 0
    #: calibrated bound = largest training activation x margin (unseen subjects reach ~15% more)
    calibration_margin: float = 1.25
    #: fraction of the training SUBJECTS held out for early stopping (0: train on everything,
    #: keep the last epoch); needs data with subject ids (ECGWindows)
    val_fraction: float = 0.2
    #: epochs without a better validation loss before training stops (with ``val_fraction``)
    patience: int = 20
    #: weight of the penalty on activation inputs above ``act_bound`` (v2: keeps the quadratic's
    #: inputs, hence the encrypted values, small)
    act_penalty: float = 1e-2
    act_bound: float = 4.0
    #: trainings from different initialisations; the one with the lowest validation loss is
    #: kept (needs ``val_fraction``): quadratic activations sometimes start in a poor basin
    restarts: int = 5
    #: v2: the quadratic coefficients a2 are kept >= this after every step. The compiler runs
    #: a per-channel quadratic in ONE level only when all its a2 share a sign (mixed signs cost
    #: two); 0 leaves them free
    min_quadratic: float = 1e-2
    #: "constant" or "cosine" (the learning rate decays to lr/100 over ``epochs``)
    lr_schedule: str = "cosine"
    #: decay of an exponential moving average of the weights, updated after every step (0: off,
    #: v2 before it). With it, validation, early stopping and the kept weights use the average
    #: (its BatchNorm statistics recomputed): one run's weights vary less with the last batches
    #: seen. bench/apnea_seeds.py measured the seed spread with and without it
    ema_decay: float = 0.99
    #: label smoothing of the cross-entropy (0: off)
    label_smoothing: float = 0.0
    #: which epoch of a restart is kept: "best" (the lowest validation loss; stops after
    #: ``patience`` epochs without a better one) or "last" (every epoch runs; the validation
    #: split only ranks the restarts)
    keep_epoch: str = "best"
    #: with ``keep_epoch="best"``: epochs before this one are neither kept nor counted towards
    #: ``patience`` (0: from the first). The validation loss of a few held-out subjects can be
    #: lowest while the learning rate is still high, and stopping there keeps a half-trained net
    min_epochs: int = 0
    #: how the epoch count and the initialisation are chosen (privkit/apps/apnea_train.py):
    #: "cv" (k-fold cross-validation over subjects picks the epoch count, then ``restarts`` nets
    #: train on ALL the subjects and the lowest training loss is kept) or "holdout" (one split of
    #: ``val_fraction`` of the subjects: early stopping, the best restart by validation loss;
    #: v2's training before "cv", and how detectors saved before this field load)
    selection: str = "cv"
    #: folds of subjects for ``selection="cv"`` (each fold's net trains on the others)
    cv_folds: int = 5
    #: what the pooled cross-validation curve ranks the epoch counts by: "accuracy" (its
    #: 5-epoch moving average) or "loss" (the class-weighted cross-entropy, which bottoms out
    #: while the accuracy is still rising)
    cv_score: str = "accuracy"

    @classmethod
    def for_arch(cls, arch: str = "v2", **overrides: Any) -> ApneaConfig:
        """The measured defaults of an architecture, then ``overrides``.

        v2: first kernel 32 with stride 8, stride 2 in blocks 2-3, AdamW at lr 1e-2 with a cosine
        decay over 60 epochs, a moving average of the weights (decay 0.99), the epoch count chosen
        by 5-fold cross-validation over the subjects, then the best of 5 restarts on all the
        subjects by training loss (docs/encrypted_inference.md has the measurements).
        ``selection="holdout"`` gives v2's training before cross-validation (20% of the subjects
        held out for early stopping, patience 20, the best restart by validation loss), and with
        ``ema_decay=0`` too, its training before the moving average.

        >>> ApneaConfig.for_arch("v2").kernel1, ApneaConfig.for_arch("v2", seed=3).seed
        (32, 3)
        """
        base = dict(_ARCH_DEFAULTS.get(arch, {}))
        base.update(overrides)
        return cls(arch=arch, **base)

    @property
    def n_blocks(self) -> int:
        """``blocks``, or the architecture's default when it is 0 (v1: 2, v2: 3)."""
        return self.blocks or (3 if self.arch == "v2" else 2)

    def __post_init__(self) -> None:
        if self.arch not in ("v1", "v2"):
            raise ParameterError(f"arch must be 'v1' or 'v2', got {self.arch!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ParameterError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.n_blocks not in (1, 2, 3):
            raise ParameterError(f"blocks must be 1, 2 or 3, got {self.blocks}")
        if self.pool not in ("avg", "max"):
            raise ParameterError(f"pool must be 'avg' or 'max', got {self.pool!r}")
        if self.keep_epoch not in ("best", "last"):
            raise ParameterError(f"keep_epoch must be 'best' or 'last', got {self.keep_epoch!r}")
        if isinstance(self.min_epochs, bool) or not isinstance(self.min_epochs, int) or self.min_epochs < 0:
            raise ParameterError(f"min_epochs must be an integer >= 0, got {self.min_epochs!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ParameterError(f"ema_decay must be in [0, 1) (0 turns the weight average off), got {self.ema_decay!r}")
        if self.selection not in ("cv", "holdout"):
            raise ParameterError(f"selection must be 'cv' or 'holdout', got {self.selection!r}")
        if self.cv_score not in ("accuracy", "loss"):
            raise ParameterError(f"cv_score must be 'accuracy' or 'loss', got {self.cv_score!r}")
        if isinstance(self.cv_folds, bool) or not isinstance(self.cv_folds, int) or not 2 <= self.cv_folds <= 20:
            raise ParameterError(f"cv_folds must be an integer in 2..20, got {self.cv_folds!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ParameterError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")


#: per-architecture settings (ApneaConfig.for_arch) where they differ from the dataclass
#: defaults, which are v2's
_ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "v1": {"kernel1": 16, "stride1": 4, "stride2": 4, "epochs": 12, "finetune_epochs": 2, "lr": 3e-3,
           "lr_schedule": "constant", "val_fraction": 0.0, "patience": 6, "restarts": 1,
           "linear_method": "diag", "ema_decay": 0.0, "min_epochs": 0, "selection": "holdout"},
    "v2": {},
}

#: limits on the config fields of a loaded detector (checked before anything is built)
_LIMITS: dict[str, tuple[float, float]] = {
    "window": (2, 1 << 20), "channels": (1, 1024), "kernel1": (1, 4096), "stride1": (1, 4096),
    "kernel2": (1, 4096), "stride2": (1, 4096), "relu_degree": (1, 64), "epochs": (0, 1e6),
    "finetune_epochs": (0, 1e6), "batch_size": (1, 1 << 20), "lr": (0, 100),
    "weight_decay": (0, 100), "seed": (0, 2**63), "calibration_margin": (0, 1e3),
    "blocks": (0, 3), "val_fraction": (0, 0.9), "patience": (1, 1e6), "act_penalty": (0, 1e6),
    "act_bound": (0, 1e6), "restarts": (1, 100), "min_quadratic": (0, 1e6),
    "ema_decay": (0, 1), "label_smoothing": (0, 1), "min_epochs": (0, 1e6), "cv_folds": (2, 20),
}


def build_apnea_model(cfg: ApneaConfig) -> torch.nn.Sequential:
    """The detector network for ``cfg.arch``.

    v1: conv (-> BatchNorm, folded when compiled) -> PolyReLU -> pool blocks, then Flatten ->
    Linear(2). v2: conv -> BatchNorm -> PolyAct (trainable quadratic per channel, one level) ->
    AvgPool1d(2) blocks (the last without its pool), then GlobalAvgPool1d -> Flatten -> Linear(channels, 2).

    Only the first convolution can use ``conv_method="freq"`` (it needs a compact one-channel
    input); later ones are spatial.
    """
    layers: list[torch.nn.Module] = []
    length, cin = cfg.window, 1
    for b in range(cfg.n_blocks):
        k, s = (cfg.kernel1, cfg.stride1) if b == 0 else (cfg.kernel2, cfg.stride2)
        layers.append(pnn.Conv1d(cin, cfg.channels, k, stride=s, method=cfg.conv_method if b == 0 else "spatial"))
        if cfg.batchnorm:
            layers.append(torch.nn.BatchNorm1d(cfg.channels))
        if cfg.arch == "v2":
            layers.append(pnn.PolyAct(degree=2, learnable=True, per_channel=True, channels=cfg.channels))
        else:
            layers.append(pnn.PolyReLU(degree=cfg.relu_degree, mode=cfg.relu_mode))
        length = (length - k) // s + 1 if length >= k else 0
        if cfg.arch == "v2" and b == cfg.n_blocks - 1:
            break  # the global average pool follows: a pool here would add nothing
        layers.append(pnn.AvgPool1d(2) if cfg.pool == "avg" else pnn.ApproxMaxPool1d(2))
        length = (length - 2) // 2 + 1 if length >= 2 else 0
        cin = cfg.channels
    if length < 1:
        raise ParameterError("the window is too short for this many blocks / strides")
    if cfg.arch == "v2":
        layers += [pnn.GlobalAvgPool1d(), pnn.Flatten(), pnn.Linear(cfg.channels, 2, method=cfg.linear_method)]
    else:
        layers += [pnn.Flatten(), pnn.Linear(cfg.channels * length, 2, method=cfg.linear_method)]
    return torch.nn.Sequential(*layers)


def _as_xy(data: Any) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(data, "x") and hasattr(data, "y"):
        return np.asarray(data.x, dtype=np.float32), np.asarray(data.y, dtype=np.int64)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return np.asarray(data[0], dtype=np.float32), np.asarray(data[1], dtype=np.int64)
    raise ShapeError("data must be ECGWindows or a tuple (x, y) with x of shape (n, window)")


def binary_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Accuracy, sensitivity (recall of apnea=1) and specificity (recall of 0)."""
    y, pred = np.asarray(y), np.asarray(pred)
    pos, neg = y == 1, y == 0
    return {
        "accuracy": float(np.mean(pred == y)) if len(y) else float("nan"),
        "sensitivity": float(np.mean(pred[pos] == 1)) if pos.any() else float("nan"),
        "specificity": float(np.mean(pred[neg] == 0)) if neg.any() else float("nan"),
        "n": int(len(y)),
    }


class ApneaDetector(PrivateModel):
    """Sleep-apnea detection on ECG windows with encrypted inference (see module docstring)."""

    model_kind = "apnea-detector"

    def __init__(self, config: ApneaConfig | None = None, **overrides: Any) -> None:
        if config is None:  # ApneaDetector(arch="v2", ...) starts from v2's measured defaults
            self.config = ApneaConfig.for_arch(overrides.pop("arch", "v2"), **overrides)
        else:
            self.config = dataclasses.replace(config, **overrides) if overrides else config
        torch.manual_seed(self.config.seed)
        self.model = build_apnea_model(self.config)
        self.history: list[dict[str, float]] = []
        self._program = None
        self._program_params: Any = None
        self._eval_model: torch.nn.Module | None = None
        #: range of the training windows widened by the calibration margin (the client spec's
        #: input range: clients refuse windows outside it)
        self.input_range: tuple[float, float] | None = None
        #: the largest |logit| on the training windows (the encrypted program's
        #: ``output_bound_hint``: with it the result may come back at the last level, faster)
        self.output_bound_hint: float | None = None
        #: each restart's kept weights from the last ``fit`` (diagnostics: bench/apnea_seeds.py
        #: --detail compares their validation and test accuracy); not saved
        self._restart_states: list[dict[str, torch.Tensor]] = []
        self._restart_scores: list[float] = []
        #: with ``selection="cv"``: the pooled cross-validated loss after each epoch, and the
        #: epoch count it chose (diagnostics of the last ``fit``; not saved)
        self.cv_curve: list[float] | None = None
        self.cv_epochs: int | None = None

    # -- training ------------------------------------------------------------------------------
    def fit(self, data: Any, val: Any = None, *, progress: bool = True) -> ApneaDetector:
        """Train in plaintext with the approximations in the loop, calibrate, fine-tune.

        ``config.selection="cv"`` (v2's default): k-fold cross-validation over the training
        subjects chooses the number of epochs, then ``config.restarts`` nets train on all the
        subjects for that many epochs and the one with the lowest training loss is kept.
        ``"holdout"``: with ``config.val_fraction > 0`` a fraction of the training subjects is held
        out, the epoch with the lowest validation loss is kept (training stops after
        ``config.patience`` epochs without improvement) and the best restart by that loss wins.
        Both need data with subject ids (``ECGWindows``) unless ``selection="holdout"`` and
        ``val_fraction=0``. ``val`` (optional) is only reported. ``privkit/apps/apnea_train.py``
        explains the choice.
        """
        cfg = self.config
        x, y = _as_xy(data)
        if x.ndim != 2 or x.shape[1] != cfg.window:
            raise ShapeError(f"expected windows of shape (n, {cfg.window}), got {x.shape}")
        mid, half = (float(x.max()) + float(x.min())) / 2, (float(x.max()) - float(x.min())) / 2
        self.input_range = (mid - half * cfg.calibration_margin, mid + half * cfg.calibration_margin)
        runs = cfg.cv_folds + cfg.restarts if cfg.selection == "cv" else cfg.restarts
        bar = _progress(runs * cfg.epochs + cfg.finetune_epochs, progress, "train")
        try:
            fit_detector(self, data, x, y, val, bar, build_apnea_model)
        finally:
            bar.close()
        self.model.eval()
        with torch.no_grad():
            logits = self.model(torch.as_tensor(x[:, None, :], dtype=next(self.model.parameters()).dtype))
        self.output_bound_hint = float(logits.abs().max())
        self._program = None
        self._eval_model = None
        return self

    # -- plaintext inference -------------------------------------------------------------------
    def logits(self, x: np.ndarray) -> np.ndarray:
        """Plaintext logits (the exact twin of the encrypted computation), shape (n, 2)."""
        import copy

        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x[None]
        if self._eval_model is None:  # a float64 copy: the same precision the program is built in
            self._eval_model = copy.deepcopy(self.model).double().eval()
        with torch.no_grad():
            return self._eval_model(torch.from_numpy(x)[:, None, :]).numpy()

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x).argmax(axis=1)

    def evaluate(self, data: Any) -> dict[str, float]:
        """Accuracy, sensitivity and specificity of the plaintext model."""
        x, y = _as_xy(data)
        return binary_metrics(y, self.predict(x))

    # -- encrypted inference -------------------------------------------------------------------
    def compile(self, params: Any = "auto") -> Any:
        """The encrypted program (cached per parameter choice)."""
        from ..fhe.compiler import compile as fhe_compile

        if self._program is None or self._program_params != params:
            self._program = fhe_compile(self.model, input_shape=(1, self.config.window), params=params)
            self._program.input_range = self.input_range
            self._program.output_bound_hint = self.output_bound_hint
            self._program_params = params
        return self._program

    def predict_encrypted(self, x: np.ndarray, keys: Any = None, *, backend: str = "seal",
                          params: Any = "auto") -> tuple[np.ndarray, dict[str, Any]]:
        """Encrypt each window, run the program with public keys only, decrypt the logits.

        Returns ``(logits (n, 2), info)`` with per-window latency and the key set used.
        """
        program = self.compile(params)
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x[None]
        if keys is None:
            t = time.perf_counter()
            keys = program.keygen(backend=backend)
            keygen_s = time.perf_counter() - t
        else:
            keygen_s = 0.0
        bundle = keys.public_bundle()
        server = bundle.backend
        out, lat = [], []
        for row in x:
            ct = program.encrypt_input(keys, row)
            t = time.perf_counter()
            # backend="sim" (or simulator keys) is the caller's explicit choice of an insecure run
            res = program.run(ct, bundle, backend=server, allow_insecure=server.simulated)
            lat.append(time.perf_counter() - t)
            out.append(program.decrypt_output(keys, res))
        return np.array(out), {"latency_s": lat, "keygen_s": keygen_s, "keys": keys, "program": program,
                               "run_notes": program.run_notes()}

    # -- PrivateModel --------------------------------------------------------------------------
    def privacy_report(self) -> PrivacyReport:
        program = self.compile()
        p = program.params
        return PrivacyReport(
            kind="fhe",
            scheme="CKKS (Microsoft SEAL via TenSEAL)",
            poly_degree=p.poly_degree,
            coeff_modulus_bits=p.coeff_bits,
            security_bits=p.security_bits,
            secure=p.secure,
            server_sees=(
                "the public bundle (public, relinearisation and "
                f"{len(program.rotations)} Galois keys), one ciphertext per window and the "
                "program; never the ECG, the logits or the diagnosis"
            ),
            details={"depth_used": program.depth, "depth_available": p.depth,
                     "rotation_keys": len(program.rotations)},
        )

    def _get_state(self) -> dict[str, Any]:
        return {"config": dataclasses.asdict(self.config),
                "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "history": self.history, "input_range": self.input_range,
                "output_bound_hint": self.output_bound_hint}

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> ApneaDetector:
        # everything is checked before a real model is built (a config declaring 40,000
        # channels must not allocate gigabytes first)
        raw = state.get("config")
        if isinstance(raw, dict) and "arch" not in raw:
            # written before v2 existed: a v1 model, whose fields take v1's settings
            raw = {**_ARCH_DEFAULTS["v1"], **raw, "arch": "v1"}
        if isinstance(raw, dict) and "selection" not in raw:
            # written before cross-validated selection existed: it was trained with one split
            raw = {**raw, "selection": "holdout"}
        cfg = check_config(ApneaConfig, raw, _LIMITS, "ApneaDetector")
        with torch.device("meta"):
            ref = build_apnea_model(cfg)
        check_state_tensors(ref.state_dict(), state.get("model"), "ApneaDetector")
        history = check_plain(state.get("history", []), "ApneaDetector history", kind=list)
        det = cls(cfg)
        det.model.load_state_dict(state["model"])
        det.model.eval()
        det.history = list(history)
        rng = state.get("input_range")
        if rng is not None:
            rng = check_plain(rng, "ApneaDetector input_range", kind=(list, tuple))
            try:
                rng = _as_range(rng)
            except ParameterError as e:
                raise DataFormatError(f"ApneaDetector input_range: {e}") from None
        det.input_range = rng
        hint = state.get("output_bound_hint")
        if hint is not None and (type(hint) not in (int, float) or not (math.isfinite(hint) and hint >= 0)):
            raise DataFormatError(f"ApneaDetector output_bound_hint must be a finite number >= 0, got {hint!r:.40}")
        det.output_bound_hint = None if hint is None else float(hint)
        return det


class _NoBar:
    def set_postfix(self, *a: Any, **k: Any) -> None: ...
    def update(self, *a: Any) -> None: ...
    def close(self) -> None: ...


def _progress(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)
