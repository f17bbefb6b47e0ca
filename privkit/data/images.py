"""Image data sets from local files: MNIST / Fashion-MNIST IDX, CIFAR-10 python batches, an image
folder (CelebA), and scikit-learn's 8x8 digits as the built-in default.

Every loader returns an :class:`ImageData`: float32 images ``(N, C, H, W)`` scaled to [-1, 1] (the
FSVAE convention), integer labels (or ``None`` for a folder), and the data set's name. Malformed or
missing files raise :class:`privkit.errors.DataFormatError` saying which file and what is wrong.

>>> d = load_dataset("digits", split="train", image_size=16)
>>> d.images.shape[1:], float(d.images.min()) >= -1.0, d.num_classes
((1, 16, 16), True, 10)
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataFormatError, ParameterError
from .safe_pickle import load_data_pickle

__all__ = [
    "DATASET_HELP",
    "ImageData",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_image_folder",
    "load_mnist",
    "MAX_IDX_BYTES",
    "read_idx",
    "write_idx",
]

DATASET_HELP = (
    "digits | mnist:DIR | fashion-mnist:DIR | cifar10:DIR | folder:DIR "
    "(IDX files gz or raw; CIFAR-10 python batches; a folder of PNG/JPEG images)"
)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclasses.dataclass
class ImageData:
    """Images in [-1, 1], shape ``(N, C, H, W)``, with optional integer labels."""

    images: np.ndarray
    labels: np.ndarray | None
    name: str

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise DataFormatError(f"{self.name}: images must be (N, C, H, W), got {self.images.shape}")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise DataFormatError(
                f"{self.name}: {len(self.images)} images but {len(self.labels)} labels"
            )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int | None:
        return None if self.labels is None else int(self.labels.max()) + 1

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, n: int | None, seed: int = 0) -> ImageData:
        """A random subset of ``n`` images (all of them if ``n`` is None or too large)."""
        if n is None or n >= len(self):
            return self
        idx = np.random.default_rng(seed).permutation(len(self))[:n]
        idx.sort()
        return ImageData(self.images[idx], None if self.labels is None else self.labels[idx],
                         self.name)

    def resized(self, size: int) -> ImageData:
        """Images resized (bilinear, antialiased) to ``size`` x ``size``."""
        if self.images.shape[2:] == (size, size):
            return self
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(self.images)
        out = []
        for i in range(0, len(x), 4096):
            out.append(F.interpolate(x[i:i + 4096], size=(size, size), mode="bilinear",
                                     align_corners=False, antialias=True).clamp_(-1, 1))
        return ImageData(torch.cat(out).numpy(), self.labels, self.name)


#: the largest IDX payload :func:`read_idx` accepts by default (EMNIST "byclass" is 547 MB)
MAX_IDX_BYTES = 1 << 30
#: deflate cannot compress by more than ~1032:1; a header declaring more than this ratio over
#: the compressed file size is refused before anything is decompressed
_MAX_GZIP_RATIO = 1100
_CHUNK = 1 << 20


def _idx_header(head: bytes, path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    if len(head) < 4:
        raise DataFormatError(f"{str(path)!r} is too short ({len(head)} bytes) to be an IDX file")
    zero, code, ndim = struct.unpack(">HBB", head[:4])
    if zero != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise DataFormatError(
            f"{str(path)!r} is not an IDX file (magic bytes {head[:4].hex()}; expected 0000 08..0e "
            "followed by a dimension count)"
        )
    if len(head) < 4 + 4 * ndim:
        raise DataFormatError(f"{str(path)!r}: IDX header truncated")
    dims = struct.unpack(">" + "I" * ndim, head[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[code])
    return dims, dtype, math.prod(dims) * dtype.itemsize  # python ints: never wraps


def _check_declared(path: Path, dims: tuple[int, ...], n_bytes: int, max_bytes: int) -> None:
    if n_bytes > max_bytes:
        raise DataFormatError(
            f"{str(path)!r}: header declares shape {dims} = {n_bytes} bytes of data, more than the "
            f"limit of {max_bytes} bytes; pass max_bytes= to read_idx if the file is genuine"
        )


def read_idx(path: str | os.PathLike, *, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw), checking its header against its length.

    The declared size (product of the dimensions times the item size) is checked against
    ``max_bytes`` and, for a raw file, against the file size before anything is allocated; a
    gzip file is decompressed in chunks, keeping only what the header declared (memory follows
    the data really present, never more than declared); a header declaring more than deflate
    can expand the file to is refused at once. A small file that expands to gigabytes (a
    decompression bomb) or a header that lies about its size raises
    :class:`~privkit.errors.DataFormatError`.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x-idx1-ubyte.gz")
    >>> write_idx(p, np.arange(5, dtype=np.uint8))
    >>> read_idx(p).tolist()
    [0, 1, 2, 3, 4]
    """
    path = Path(path)
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise DataFormatError(f"cannot read {str(path)!r}: {e}") from e
    with fh:
        try:
            size = os.fstat(fh.fileno()).st_size
            magic = fh.read(2)
            fh.seek(0)
        except OSError as e:
            raise DataFormatError(f"cannot read {str(path)!r}: {e}") from e
        if magic == b"\x1f\x8b":
            return _read_idx_gz(fh, path, size, max_bytes)
        try:
            head = fh.read(4)
            if len(head) == 4:
                head += fh.read(4 * head[3])
        except OSError as e:
            raise DataFormatError(f"cannot read {str(path)!r}: {e}") from e
        dims, dtype, n_bytes = _idx_header(head, path)
        _check_declared(path, dims, n_bytes, max_bytes)
        if size - len(head) != n_bytes:
            raise DataFormatError(
                f"{str(path)!r}: header says shape {dims} ({n_bytes} bytes of data) but the file "
                f"holds {size - len(head)} bytes; the file is truncated or corrupt"
            )
        try:
            body = fh.read(n_bytes)
        except (OSError, MemoryError) as e:
            raise DataFormatError(f"cannot read {str(path)!r}: {e}") from e
    if len(body) != n_bytes:
        raise DataFormatError(f"{str(path)!r}: file changed while reading (truncated)")
    return _idx_array(body, dims, dtype)


def _idx_array(body: bytes | bytearray, dims: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    arr = np.frombuffer(body, dtype=dtype).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=dtype.byteorder not in "=|")


def _read_idx_gz(fh: Any, path: Path, size: int, max_bytes: int) -> np.ndarray:
    dec = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip wrapper
    pending = b""  # decompressed bytes not yet consumed
    eof = False

    def more(want: int) -> bytes:
        """Up to ``want`` more decompressed bytes (never more: bounded memory)."""
        nonlocal pending, eof
        while len(pending) < want and not eof:
            if dec.unconsumed_tail:
                chunk = dec.unconsumed_tail
            else:
                chunk = fh.read(_CHUNK)
                if not chunk:
                    if not dec.eof:
                        raise EOFError("compressed stream ends before its end marker")
                    eof = True
                    break
            pending += dec.decompress(chunk, want - len(pending))
            if dec.eof:
                eof = True
        out, pending = pending[:want], pending[want:]
        return out

    try:
        head = more(4)
        if len(head) == 4:
            head += more(4 * head[3])
        dims, dtype, n_bytes = _idx_header(head, path)
        _check_declared(path, dims, n_bytes, max_bytes)
        if n_bytes > _MAX_GZIP_RATIO * max(size, 1):
            raise DataFormatError(
                f"{str(path)!r}: header declares {n_bytes} bytes of data but the gzip file has "
                f"only {size} bytes (deflate cannot compress that much); the file is corrupt"
            )
        body = bytearray()  # grows with the data really present, never beyond the declared size
        got = 0
        while got < n_bytes:
            part = more(min(_CHUNK, n_bytes - got))
            if not part:
                break
            body += part
            got += len(part)
        extra = more(1) or dec.unused_data or fh.read(1)  # nothing may follow the data
    except DataFormatError:
        raise
    except (OSError, EOFError, zlib.error) as e:
        raise DataFormatError(f"{str(path)!r} is a truncated or corrupt gzip file: {e}") from e
    if got != n_bytes or extra:
        raise DataFormatError(
            f"{str(path)!r}: header says shape {dims} ({n_bytes} bytes of data) but the file "
            f"decompresses to {'more' if extra else got + len(head)} bytes; the file is truncated "
            "or corrupt"
        )
    return _idx_array(body, dims, dtype)


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` (uint8) as an IDX file; gzip it when the name ends in ``.gz``."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim,
                                                                        *array.shape)
    data = header + array.tobytes()
    path = Path(path)
    if compress or (compress is None and path.suffix == ".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)


def _find(directory: Path, stems: list[str]) -> Path:
    for stem in stems:
        for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
            p = directory / name
            if p.is_file():
                return p
    raise DataFormatError(
        f"no {stems[0]}[.gz] in {str(directory)!r} (found: "
        f"{sorted(p.name for p in directory.iterdir())[:8] if directory.is_dir() else 'no such folder'})"
    )


def _to_unit(images_u8: np.ndarray) -> np.ndarray:
    return (images_u8.astype(np.float32) / 127.5 - 1.0).astype(np.float32)


def load_mnist(directory: str | os.PathLike, split: str = "train", name: str = "mnist") -> ImageData:
    """MNIST or Fashion-MNIST from the four standard IDX files (gz or raw) in ``directory``."""
    d = Path(directory)
    if not d.is_dir():
        raise DataFormatError(f"{name}: {str(d)!r} is not a folder")
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ParameterError(f"split must be 'train' or 'test', got {split!r}")
    img_path = _find(d, [f"{prefix}-images-idx3-ubyte"])
    lab_path = _find(d, [f"{prefix}-labels-idx1-ubyte"])
    images = read_idx(img_path)
    labels = read_idx(lab_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataFormatError(f"{str(img_path)!r}: expected uint8 images (N, H, W), got "
                              f"{images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataFormatError(
            f"{str(lab_path)!r}: expected {len(images)} labels, got shape {labels.shape}"
        )
    return ImageData(_to_unit(images)[:, None], labels.astype(np.int64), name)


def load_cifar10(directory: str | os.PathLike, split: str = "train") -> ImageData:
    """CIFAR-10 from its python batches (``data_batch_1..5``, ``test_batch``) in ``directory``."""
    d = Path(directory)
    sub = d / "cifar-10-batches-py"
    if sub.is_dir():
        d = sub
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    if split not in ("train", "test"):
        raise ParameterError(f"split must be 'train' or 'test', got {split!r}")
    xs, ys = [], []
    for n in names:
        p = d / n
        if not p.is_file():
            raise DataFormatError(f"cifar10: {str(p)!r} not found (expected the python batches)")
        try:
            if p.stat().st_size > 1 << 30:
                raise DataFormatError(f"cifar10: {str(p)!r} is larger than 1 GiB; a CIFAR-10 "
                                      "batch is 30 MB")
            raw = p.read_bytes()
        except OSError as e:
            raise DataFormatError(f"cifar10: cannot read {str(p)!r}: {e}") from e
        batch = load_data_pickle(raw, f"cifar10: {str(p)!r}")  # plain data only, never code
        try:
            data = batch[b"data"]
            labels = np.asarray(batch[b"labels"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataFormatError(f"cifar10: {str(p)!r} is not a CIFAR-10 python batch (expected "
                                  f"a dict with b'data' and b'labels'; {type(e).__name__}: {e})"
                                  ) from e
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
            raise DataFormatError(f"cifar10: {str(p)!r}: b'data' must be a uint8 array, got "
                                  f"{getattr(data, 'dtype', type(data).__name__)}")
        if labels.ndim != 1 or labels.dtype.kind not in "iu" or (
                len(labels) and (labels.min() < 0 or labels.max() > 9)):
            raise DataFormatError(f"cifar10: {str(p)!r}: b'labels' must be a list of integers "
                                  "0..9")
        labels = labels.astype(np.int64)
        if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
            raise DataFormatError(
                f"cifar10: {str(p)!r} holds data {data.shape} and {len(labels)} labels; expected "
                "(N, 3072) and N labels"
            )
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    return ImageData(_to_unit(np.concatenate(xs)), np.concatenate(ys), "cifar10")


#: images declaring more pixels than this are refused before decoding (decompression bombs)
MAX_IMAGE_PIXELS = 1 << 24
#: image files larger than this are refused before reading
MAX_IMAGE_FILE_BYTES = 256 << 20


def load_image_folder(directory: str | os.PathLike, image_size: int = 64,
                      limit: int | None = None) -> ImageData:
    """All PNG/JPEG images under ``directory`` (sorted), centre-cropped square and resized (RGB).

    An unreadable image, or one whose header declares more than :data:`MAX_IMAGE_PIXELS`
    pixels, raises :class:`~privkit.errors.DataFormatError` naming the file.
    """
    if not isinstance(image_size, int) or not 1 <= image_size <= 4096:
        raise ParameterError(f"image_size must be an integer in 1..4096, got {image_size!r}")
    from PIL import Image, UnidentifiedImageError

    d = Path(directory)
    if not d.is_dir():
        raise DataFormatError(f"image folder {str(d)!r} does not exist")
    files = sorted(p for p in d.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    if limit:
        files = files[:limit]
    if not files:
        raise DataFormatError(f"no .png/.jpg images in {str(d)!r}")
    out = np.empty((len(files), 3, image_size, image_size), dtype=np.uint8)
    for i, p in enumerate(files):
        try:
            if p.stat().st_size > MAX_IMAGE_FILE_BYTES:
                raise DataFormatError(f"{str(p)!r}: larger than {MAX_IMAGE_FILE_BYTES} bytes")
            # from memory: Pillow asks its file for the lengths the chunks declare, and a real
            # file's read(n) allocates n bytes first (a PNG chunk claiming 700 MB); BytesIO does not
            raw = p.read_bytes()
            with Image.open(io.BytesIO(raw)) as im:
                w, h = im.size  # from the header: nothing decoded yet
                if w < 1 or h < 1 or w * h > MAX_IMAGE_PIXELS:
                    raise DataFormatError(
                        f"{str(p)!r}: declares {w} x {h} pixels (limit {MAX_IMAGE_PIXELS}); "
                        "not a usable image"
                    )
                im = im.convert("RGB")
                s = min(w, h)
                im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
                im = im.resize((image_size, image_size), Image.BILINEAR)
                out[i] = np.asarray(im).transpose(2, 0, 1)
        except DataFormatError:
            raise
        except (UnidentifiedImageError, OSError) as e:
            raise DataFormatError(f"{str(p)!r} is not a readable image: {e}") from e
        except Exception as e:  # noqa: BLE001 - Pillow raises SyntaxError, ValueError, ... on bad files
            raise DataFormatError(f"{str(p)!r} is not a readable image ({type(e).__name__}: "
                                  f"{e})") from e
    return ImageData(_to_unit(out), None, f"folder:{d.name}")


def load_digits(split: str = "train", test_fraction: float = 0.2, seed: int = 0) -> ImageData:
    """scikit-learn's 8x8 digits (1797 images, bundled), split deterministically."""
    from sklearn.datasets import load_digits as _ld

    b = _ld()
    x = (b.images / 16.0 * 255.0).round().astype(np.uint8)[:, None]
    y = b.target.astype(np.int64)
    idx = np.random.default_rng(seed).permutation(len(x))
    n_test = round(len(x) * test_fraction)
    sel = idx[n_test:] if split == "train" else idx[:n_test]
    if split not in ("train", "test"):
        raise ParameterError(f"split must be 'train' or 'test', got {split!r}")
    sel = np.sort(sel)
    return ImageData(_to_unit(x[sel]), y[sel], "digits")


def load_dataset(spec: str, split: str = "train", image_size: int | None = 32,
                 limit: int | None = None, seed: int = 0) -> ImageData:
    """Load a data set by spec: ``digits``, ``mnist:DIR``, ``fashion-mnist:DIR``, ``cifar10:DIR``,
    ``folder:DIR``; resized to ``image_size`` (None keeps the native size); ``limit`` keeps a random
    subset of that many images."""
    kind, _, path = spec.partition(":")
    kind = kind.lower()
    if kind == "digits":
        data = load_digits(split)
    elif kind in ("mnist", "fashion-mnist", "fashion_mnist", "fmnist"):
        if not path:
            raise ParameterError(f"{kind} needs a folder: '{kind}:DIR'")
        data = load_mnist(path, split, name="fashion-mnist" if "f" in kind[:2] else "mnist")
    elif kind == "cifar10":
        if not path:
            raise ParameterError("cifar10 needs a folder: 'cifar10:DIR'")
        data = load_cifar10(path, split)
    elif kind in ("folder", "celeba"):
        if not path:
            raise ParameterError(f"{kind} needs a folder: '{kind}:DIR'")
        data = load_image_folder(path, image_size or 64, limit=None)
        # a folder has no split: hold out the last 10% as the test split
        n = len(data)
        cut = int(n * 0.9)
        data = ImageData(data.images[:cut] if split == "train" else data.images[cut:], None, data.name)
    else:
        raise ParameterError(f"unknown data set {spec!r}; expected {DATASET_HELP}")
    data = data.subset(limit, seed=seed)
    if image_size:
        data = data.resized(image_size)
    return data
