"""Real smartwatch IMU data: the watch dataset shipped inside the ``seglearn`` 1.2.5 wheel.

``seglearn`` (BSD-3) ships ``seglearn/data/watch_dataset.npy``: a smartwatch accelerometer and
gyroscope (6 channels, 50 Hz) worn by 10 subjects doing 7 shoulder-rehabilitation exercises,
140 recordings (each subject does each exercise with both arms), one exercise per recording.
It is a numpy-pickled dict, so it is read only from the installed, pinned package
(``pip install --no-deps seglearn==1.2.5``, the ``realdata`` extra), never from a path a caller
gives, and its bytes are checked against :data:`WATCH_SHA256` *before* anything is unpickled:
a modified copy is refused with :class:`~privkit.errors.DataFormatError` and nothing in it runs.
``seglearn`` itself (and its scikit-learn-heavy imports) is never imported; the file is found
with :func:`importlib.util.find_spec`.

>>> import importlib.util
>>> if importlib.util.find_spec("seglearn") is None:
...     print(((128, 6), (6,), 10, 7))  # seglearn not installed: what the call below prints
... else:
...     ds = read_seglearn_watch(window=128, step=64)
...     print((ds.windows.shape[1:], ds.device_channels, ds.n_subjects, ds.n_activities))
((128, 6), (6,), 10, 7)
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataFormatError, MissingDependencyError, ParameterError
from .imu import IMUDataset, Recording, make_windows

__all__ = [
    "WATCH_ACTIVITIES",
    "WATCH_COLUMNS",
    "WATCH_SHA256",
    "read_seglearn_watch",
    "seglearn_watch_path",
]

#: SHA-256 of ``seglearn/data/watch_dataset.npy`` in seglearn 1.2.5 (18,118,091 bytes)
WATCH_SHA256 = "eb122f23cdf06ef6bd6c6c5312958ec5cf9d038e2e6d457b8081662c75a42537"
WATCH_SIZE = 18_118_091
#: the exercises (seglearn's ``y_labels``): pendulum, abduction, forward elevation, internal
#: rotation, external rotation, trapezius extension, upright row
WATCH_ACTIVITIES = ["PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW"]
#: accelerometer (g) then gyroscope (rad/s) axes
WATCH_COLUMNS = ["ax", "ay", "az", "wx", "wy", "wz"]
_N_RECORDINGS = 140


def seglearn_watch_path() -> Path:
    """Where the installed seglearn keeps ``watch_dataset.npy`` (seglearn is not imported).

    Raises :class:`~privkit.errors.MissingDependencyError` (extra ``realdata``) when seglearn is
    not installed and :class:`~privkit.errors.DataFormatError` when the file is missing.
    """
    spec = importlib.util.find_spec("seglearn")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("seglearn", "realdata",
                                     "the real smartwatch IMU data (read_seglearn_watch)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "watch_dataset.npy"
    if not path.is_file():
        raise DataFormatError(f"{str(path)!r}: seglearn is installed but has no "
                              "data/watch_dataset.npy; install seglearn==1.2.5")
    return path


def _read_verified(path: Path) -> bytes:
    """The file's bytes, read once, after size and SHA-256 checks (what is hashed is parsed)."""
    size = path.stat().st_size
    if size != WATCH_SIZE:
        raise DataFormatError(f"{str(path)!r}: {size} bytes, expected {WATCH_SIZE} (seglearn "
                              "1.2.5's watch_dataset.npy); refusing to unpickle it")
    blob = path.read_bytes()
    return _verify(blob, str(path))


def _verify(blob: bytes, where: str) -> bytes:
    digest = hashlib.sha256(blob).hexdigest()
    if digest != WATCH_SHA256:
        raise DataFormatError(
            f"{where}: SHA-256 {digest[:16]}... does not match seglearn 1.2.5's watch_dataset.npy "
            f"({WATCH_SHA256[:16]}...); the file was modified or is another version, so it is "
            "not unpickled. Reinstall it: pip install --no-deps --force-reinstall seglearn==1.2.5")
    return blob


def _parse(blob: bytes, where: str) -> dict[str, Any]:
    """Unpickle verified bytes (only ever called after :func:`_verify`) and check the layout."""
    _verify(blob, where)
    try:
        obj = np.load(io.BytesIO(blob), allow_pickle=True)  # the hash matched: known bytes
        d = obj.item() if isinstance(obj, np.ndarray) and obj.shape == () else obj
    except (ValueError, OSError, EOFError) as e:  # pragma: no cover - the hash pins the bytes
        raise DataFormatError(f"{where}: not a readable .npy ({type(e).__name__}: {e})"[:300]
                              ) from e
    if not isinstance(d, dict) or not {"X", "y", "subject", "y_labels", "X_labels"} <= set(d):
        raise DataFormatError(f"{where}: expected a dict with X, y, subject, y_labels, X_labels")
    xs, y, subj = d["X"], np.asarray(d["y"]), np.asarray(d["subject"])
    if not (isinstance(xs, list) and len(xs) == len(y) == len(subj) == _N_RECORDINGS):
        raise DataFormatError(f"{where}: expected {_N_RECORDINGS} recordings with labels")
    for i, x in enumerate(xs):
        if not (isinstance(x, np.ndarray) and x.ndim == 2 and x.shape[1] == 6
                and np.isfinite(x).all()):
            raise DataFormatError(f"{where}: recording {i} is not a finite (T, 6) array")
    if list(d["y_labels"]) != WATCH_ACTIVITIES or list(d["X_labels"]) != WATCH_COLUMNS:
        raise DataFormatError(f"{where}: unexpected activity or channel names")
    return d


def read_seglearn_watch(*, window: int = 128, step: int = 64,
                        side: int | None = None) -> IMUDataset:
    """The seglearn smartwatch data as an :class:`~privkit.data.imu.IMUDataset`.

    Recordings are cut into windows of ``window`` samples every ``step`` (at 50 Hz: 128 samples
    = 2.56 s) shaped ``(N, window, 6)``, one device of 6 channels (:data:`WATCH_COLUMNS`, raw
    units: scale them with :class:`~privkit.data.imu.MinMaxNormaliser` for the anonymiser).
    Subjects 1..10 are relabelled 0..9 (``subject_info[k]["code"]`` keeps the original id);
    the activity is the recording's exercise (:data:`WATCH_ACTIVITIES`). ``side`` keeps only
    the recordings of one arm (0 or 1; ``None``: both). Every (subject, exercise) pair has two
    recordings (one per arm), so :func:`~privkit.data.imu.split_recordings` puts one in train
    and one in test. The file is located in the installed seglearn 1.2.5 and must match
    :data:`WATCH_SHA256` before it is unpickled.
    """
    if side not in (None, 0, 1):
        raise ParameterError(f"side must be 0, 1 or None, got {side!r}")
    path = seglearn_watch_path()
    d = _parse(_read_verified(path), str(path))
    codes = sorted({int(s) for s in np.asarray(d["subject"]).tolist()})
    relabel = {c: i for i, c in enumerate(codes)}
    sides = np.asarray(d.get("side", np.zeros(_N_RECORDINGS)))
    recs = []
    for i, (x, a, s) in enumerate(zip(d["X"], np.asarray(d["y"]), np.asarray(d["subject"]))):
        if side is not None and int(sides[i]) != side:
            continue
        recs.append(Recording(np.asarray(x, np.float32), np.full(len(x), int(a)),
                              relabel[int(s)], f"watch/{i:03d}_s{int(s)}_{WATCH_ACTIVITIES[a]}"
                              f"_side{int(sides[i])}"))
    return make_windows(recs, window, step, channel_names=WATCH_COLUMNS, device_channels=(6,),
                        activity_names=WATCH_ACTIVITIES, sample_rate=50.0,
                        subject_info={i: {"code": float(c)} for c, i in relabel.items()})
