"""Small image CNNs for encrypted inference: the TenSEAL tutorial model and a LeNet-style CNN.

A helper of the image examples (``examples/tenseal_tutorial_cnn.py``, ``box_lenet.py``,
``box_cnn3d.py``) and of ``bench/peer_tenseal.py`` / ``bench/box_cnn.py``, not part of the
privkit package. Data comes from local files only: Fashion-MNIST from the Debian package
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) when it is installed; otherwise
:func:`load_images` returns a clearly labelled synthetic set (never a download).

The models are built from ``privkit.nn`` layers (``Conv2d``, ``Square``, ``AvgPool2d``,
``Linear``) so that the trained weights are the ones the compiler reads. ``linear_method``
picks the encrypted matrix-vector product of the ``Linear`` layers (``"bsgs"``: baby-step
giant-step, fewer rotations for wide layers; ``"diag"``: one rotation per diagonal).

>>> m = tenseal_tutorial_model()
>>> import torch
>>> tuple(m(torch.zeros(2, 1, 28, 28)).shape)
(2, 10)
>>> d = synthetic_images(8, seed=0)
>>> d.name, d.images.shape
('synthetic', (8, 1, 28, 28))
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from privkit import nn as pnn
from privkit.data.images import ImageData, load_mnist
from privkit.errors import DataFormatError

__all__ = [
    "FASHION_MNIST_DIR",
    "accuracy",
    "as_privkit_layers",
    "box_first_conv",
    "fashion_mnist_available",
    "lenet",
    "load_images",
    "run_encrypted",
    "synthetic_images",
    "tenseal_tutorial_model",
    "train_classifier",
]

log = logging.getLogger(__name__)

#: where the Debian package ``dataset-fashion-mnist`` puts the IDX files
FASHION_MNIST_DIR = Path(os.environ.get("PRIVKIT_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))


def tenseal_tutorial_model(hidden: int = 64, linear_method: str = "bsgs") -> nn.Sequential:
    """TenSEAL's MNIST tutorial CNN: Conv2d(1, 4, 7, stride 3) -> x² -> Flatten ->
    Linear(256, hidden) -> x² -> Linear(hidden, 10), for 28x28 single-channel images."""
    return nn.Sequential(
        pnn.Conv2d(1, 4, kernel_size=7, stride=3),
        pnn.Square(),
        pnn.Flatten(),
        pnn.Linear(256, hidden, method=linear_method),
        pnn.Square(),
        pnn.Linear(hidden, 10, method=linear_method),
    )


def lenet(channels: tuple[int, int] = (4, 8), kernel: int = 5, hidden: int | None = 32,
          size: int = 28, linear_method: str = "bsgs") -> nn.Sequential:
    """LeNet-style CNN: Conv2d -> x² -> AvgPool2d(2) -> Conv2d -> x² -> AvgPool2d(2) -> Flatten ->
    Linear -> x² -> Linear (x² activations so that encrypted inference needs no approximation);
    ``hidden=None`` drops the hidden layer (one Linear to the 10 classes, two levels less)."""
    c1, c2 = channels
    s = ((size - kernel + 1) // 2 - kernel + 1) // 2
    if s < 1:
        raise ValueError(f"image size {size} is too small for two {kernel}x{kernel} convolutions")
    lin = linear_method
    return nn.Sequential(
        pnn.Conv2d(1, c1, kernel_size=kernel), pnn.Square(), pnn.AvgPool2d(2),
        pnn.Conv2d(c1, c2, kernel_size=kernel), pnn.Square(), pnn.AvgPool2d(2),
        pnn.Flatten(),
        *((pnn.Linear(c2 * s * s, 10, method=lin),) if hidden is None else (
            pnn.Linear(c2 * s * s, hidden, method=lin), pnn.Square(), pnn.Linear(hidden, 10, method=lin))),
    )


def box_first_conv(model: nn.Sequential, tol: float = 0.1, max_boxes: int | None = None):
    """A copy of ``model`` whose FIRST convolution is a box convolution
    (:func:`privkit.nn.replace_conv_with_box` on that layer), and the replacement report.

    Only the first: the compiler runs a box convolution on a unit-gap layout (the summed-area
    table runs over flat rows), which a layer after a stride or a pool no longer has; and a first
    box convolution can take the client's summed-area table (``compile(..., input_sat=True)``).
    """
    import copy

    from privkit.nn import replace_conv_with_box

    head, report = replace_conv_with_box(model[:1], tol=tol, max_boxes=max_boxes)
    return nn.Sequential(*head, *copy.deepcopy(model[1:])), report


def as_privkit_layers(model: nn.Sequential) -> nn.Sequential:
    """Swap torch layers for privkit ones (:func:`privkit.nn.make_fhe_compatible`), keeping the
    weights; returns the model."""
    pnn.make_fhe_compatible(model)
    return model


def fashion_mnist_available(directory: str | os.PathLike | None = None) -> bool:
    d = Path(directory) if directory else FASHION_MNIST_DIR
    return (d / "t10k-images-idx3-ubyte.gz").is_file() or (d / "t10k-images-idx3-ubyte").is_file()


def synthetic_images(n: int, size: int = 28, seed: int = 0, classes: int = 10) -> ImageData:
    """A labelled synthetic set (NOT real data): class ``k`` is a bright bar at an angle of
    ``k * 18`` degrees plus noise, in [-1, 1]. Learnable, so accuracies mean something."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    out = np.empty((n, 1, size, size), np.float32)
    for i, k in enumerate(labels):
        a = np.pi * k / classes
        d = np.abs(np.cos(a) * yy - np.sin(a) * xx)
        img = np.exp(-(d / 0.08) ** 2) + 0.3 * rng.standard_normal((size, size))
        out[i, 0] = np.clip(img * 2 - 1, -1, 1)
    return ImageData(out, labels.astype(np.int64), "synthetic")


def load_images(split: str, limit: int | None = None, directory: str | os.PathLike | None = None,
                seed: int = 0, allow_synthetic: bool = True) -> ImageData:
    """Fashion-MNIST ``split`` (first ``limit`` images after a seeded shuffle) from local files;
    when they are absent and ``allow_synthetic``, a synthetic set named ``"synthetic"`` (with a
    warning in the log), else :class:`privkit.errors.DataFormatError`."""
    d = Path(directory) if directory else FASHION_MNIST_DIR
    if fashion_mnist_available(d):
        data = load_mnist(d, split, name="fashion-mnist")
        return data.subset(limit, seed=seed) if limit else data
    if not allow_synthetic:
        raise DataFormatError(
            f"Fashion-MNIST is not in {str(d)!r}; install it with 'apt-get install dataset-fashion-mnist' "
            "or set PRIVKIT_FASHION_MNIST to a folder holding the four IDX files"
        )
    log.warning("Fashion-MNIST not found in %s: using SYNTHETIC images", d)
    n = limit or (2000 if split == "train" else 500)
    return synthetic_images(n, seed=seed + (0 if split == "train" else 1))


def load_train_test(train_limit: int | None, test_limit: int | None = None) -> tuple[ImageData, ImageData]:
    """Fashion-MNIST train and test splits (:func:`load_images`), printing a clear NOTE when the
    local files are absent and the images are synthetic."""
    train = load_images("train", train_limit)
    test = load_images("test", test_limit)
    if train.name == "synthetic":
        print("NOTE: Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist): "
              "SYNTHETIC images, accuracies are not Fashion-MNIST accuracies")
    return train, test


def train_classifier(model: nn.Module, images: np.ndarray, labels: np.ndarray, epochs: int = 3,
                     lr: float = 1e-3, batch: int = 64, seed: int = 0) -> list[float]:
    """Adam + cross-entropy, as in TenSEAL's tutorial. Returns the mean loss of each epoch."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(images, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        tot = 0.0
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(idx)
        losses.append(tot / len(x))
    model.eval()
    return losses


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of the plaintext model."""
    model.eval()
    with torch.no_grad():
        logits = model(torch.as_tensor(images, dtype=torch.float32))
    return float((logits.argmax(1).numpy() == np.asarray(labels)).mean())


def run_encrypted(model: nn.Module, images: np.ndarray, *, params: str = "auto", backend: str = "sim",
                  batch: int = 1, input_sat: bool = False) -> dict:
    """Compile ``model`` for one image of ``images`` and run each image (or each ``batch`` of
    them per ciphertext) encrypted (``input_sat``: the client sends summed-area tables to a first
    box convolution). Returns ``logits`` (decrypted), ``seconds`` (server time per
    ciphertext), ``counts`` (ops of the first run: adds, pt_mults, ct_mults, rotations) and the
    ``program``. ``backend="sim"`` is the plaintext twin (exact counts, not real encryption)."""
    import copy

    from privkit import fhe

    images = np.asarray(images, dtype=np.float64)
    ref = copy.deepcopy(model).double().eval()
    program = fhe.compile(ref, input_shape=tuple(images.shape[1:]), params=params, batch=batch,
                           input_sat=input_sat)
    return dict(run_program(program, images, backend=backend, batch=batch), program=program)


def run_program(program, images: np.ndarray, *, backend: str = "sim", batch: int = 1) -> dict:
    """Run a compiled ``program`` on each image (each ``batch`` per ciphertext) with fresh keys:
    ``logits`` (decrypted), ``seconds`` (server time per ciphertext) and ``counts`` (ops of the
    first run: adds, pt_mults, ct_mults, rotations)."""
    import time

    images = np.asarray(images, dtype=np.float64)
    keys = program.keygen(backend=backend)
    bundle = keys.public_bundle()
    logits, secs, counts = [], [], None
    pad = (-len(images)) % batch
    xs = np.concatenate([images, np.zeros((pad,) + images.shape[1:])]) if pad else images
    for i in range(0, len(xs), batch):
        x = xs[i] if batch == 1 else xs[i : i + batch]
        ct = program.encrypt_input(keys, x)
        t = time.perf_counter()
        out = program.run(ct, bundle, allow_insecure=backend == "sim")
        secs.append(time.perf_counter() - t)
        logits.extend(np.atleast_2d(program.decrypt_output(keys, out)))
        if counts is None:
            reps = program.layer_reports()
            counts = {k: sum(r[k] for r in reps) for k in ("adds", "pt_mults", "ct_mults", "rotations")}
    return {"logits": np.array(logits[: len(images)]), "seconds": secs, "counts": counts}
