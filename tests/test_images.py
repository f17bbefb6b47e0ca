"""privkit.data.images: IDX (gz/raw), CIFAR-10 batches, image folders, digits; malformed files."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest

from privkit.data.images import (
    load_cifar10,
    load_dataset,
    load_image_folder,
    load_mnist,
    read_idx,
    write_idx,
)
from privkit.errors import DataFormatError, ParameterError


def _write_mnist(d, n=6, gz=True, prefix="train"):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    sfx = ".gz" if gz else ""
    write_idx(d / f"{prefix}-images-idx3-ubyte{sfx}", imgs)
    write_idx(d / f"{prefix}-labels-idx1-ubyte{sfx}", labels)
    return imgs, labels


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip_and_mnist_loader(tmp_path, gz):
    imgs, labels = _write_mnist(tmp_path, gz=gz)
    np.testing.assert_array_equal(read_idx(tmp_path / f"train-images-idx3-ubyte{'.gz' if gz else ''}"), imgs)
    d = load_mnist(tmp_path, "train", name="fashion-mnist")
    assert d.images.shape == (6, 1, 28, 28) and d.images.dtype == np.float32
    assert d.images.min() >= -1 and d.images.max() <= 1
    np.testing.assert_array_equal(d.labels, labels)
    d32 = load_dataset(f"fashion-mnist:{tmp_path}", "train", image_size=32)
    assert d32.images.shape == (6, 1, 32, 32) and d32.name == "fashion-mnist"


def test_malformed_idx_files(tmp_path):
    _write_mnist(tmp_path, gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    raw = p.read_bytes()
    p.write_bytes(raw[:-10])  # truncated
    with pytest.raises(DataFormatError, match="truncated"):
        load_mnist(tmp_path)
    p.write_bytes(b"\x12\x34\x56\x78" + raw[4:])
    with pytest.raises(DataFormatError, match="not an IDX"):
        read_idx(p)
    p.write_bytes(b"\x00")
    with pytest.raises(DataFormatError, match="too short"):
        read_idx(p)
    gzp = tmp_path / "x.gz"
    gzp.write_bytes(gzip.compress(raw)[:30])
    with pytest.raises(DataFormatError, match="gzip"):
        read_idx(gzp)
    # label count mismatch
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((6, 28, 28), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, np.uint8))
    with pytest.raises(DataFormatError, match="labels"):
        load_mnist(tmp_path)
    with pytest.raises(DataFormatError, match="no t10k-images"):
        load_mnist(tmp_path, "test")


def test_cifar10_batches(tmp_path):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(tmp_path / name, "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8),
                         b"labels": [1, 2, 3]}, fh)
    d = load_cifar10(tmp_path, "train")
    assert d.images.shape == (15, 3, 32, 32) and d.num_classes == 4
    assert load_dataset(f"cifar10:{tmp_path}", "test", image_size=16).images.shape == (3, 3, 16, 16)
    (tmp_path / "test_batch").write_bytes(b"garbage")
    with pytest.raises(DataFormatError, match="test_batch"):
        load_cifar10(tmp_path, "test")
    with open(tmp_path / "data_batch_1", "wb") as fh:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, fh)
    with pytest.raises(DataFormatError, match="3072"):
        load_cifar10(tmp_path, "train")


def test_image_folder(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    d = load_image_folder(tmp_path, image_size=16)
    assert d.images.shape == (3, 3, 16, 16) and d.labels is None
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(DataFormatError, match="bad.jpg"):
        load_image_folder(tmp_path, image_size=16)
    with pytest.raises(DataFormatError):
        load_image_folder(tmp_path / "missing")


def test_digits_default_and_spec_errors():
    tr = load_dataset("digits", "train", image_size=16)
    te = load_dataset("digits", "test", image_size=16)
    assert len(tr) + len(te) == 1797 and tr.images.shape[1:] == (1, 16, 16)
    assert len(load_dataset("digits", limit=100)) == 100
    with pytest.raises(ParameterError, match="unknown data set"):
        load_dataset("imagenet")
    with pytest.raises(ParameterError, match="needs a folder"):
        load_dataset("mnist")
