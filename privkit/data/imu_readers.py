"""IMU file readers: MotionSense and LARa CSV directories -> :class:`~privkit.data.imu.IMUDataset`.

Every value read is checked (column names, numbers, finite values, label ranges); a malformed file
raises :class:`~privkit.errors.DataFormatError` naming the file and row.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataFormatError, ParameterError
from .imu import IMUDataset, Recording, make_windows

__all__ = ["LARA_CLASSES", "LARA_COLUMNS", "LARA_DEVICES", "MOTIONSENSE_ACTIVITIES",
           "MOTIONSENSE_COLUMNS", "read_lara", "read_motionsense"]


# --------------------------------------------------------------------------------------------
# MotionSense
# --------------------------------------------------------------------------------------------

MOTIONSENSE_COLUMNS = [
    "attitude.roll", "attitude.pitch", "attitude.yaw",
    "gravity.x", "gravity.y", "gravity.z",
    "rotationRate.x", "rotationRate.y", "rotationRate.z",
    "userAcceleration.x", "userAcceleration.y", "userAcceleration.z",
]
MOTIONSENSE_ACTIVITIES = ["dws", "ups", "wlk", "jog", "sit", "std"]
_MS_DIR = re.compile(r"^([a-z]+)_(\d+)$")
_MS_FILE = re.compile(r"^sub_(\d+)\.csv$")


def _csv_rows(path: Path, what: str, *, dict_reader: bool = False) -> list[Any]:
    """All rows of a CSV file; unreadable files, bad encodings and malformed CSV (e.g. a field
    over the csv module's 131,072-character limit) raise DataFormatError naming the file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return list(csv.DictReader(fh) if dict_reader else csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataFormatError(f"{str(path)!r}: cannot read {what} file ({type(e).__name__}: "
                              f"{e})") from e


def _int_value(text: Any, path: Path, row: int, what: str) -> int:
    """A finite integral number (``"3"`` or ``"3.0"``) or DataFormatError naming file and row."""
    try:
        v = float(text)
    except (TypeError, ValueError) as e:
        raise DataFormatError(f"{str(path)!r}: row {row}: {what} {text!r} is not a number") from e
    if not np.isfinite(v) or v != int(v) or abs(v) > 2**31:
        raise DataFormatError(f"{str(path)!r}: row {row}: {what} {text!r} is not an integer "
                              "(finite, whole, below 2^31)")
    return int(v)


def _read_numeric_csv(path: Path, expected: list[str], what: str) -> np.ndarray:
    """Read a CSV whose header holds ``expected`` (in order, optionally after an index column)."""
    rows = _csv_rows(path, what)
    if not rows:
        raise DataFormatError(f"{str(path)!r}: empty file; expected a {what} CSV with a header")
    header = [h.strip() for h in rows[0]]
    offset = 1 if header and header[0] in ("", "Unnamed: 0", "index") else 0
    if header[offset:offset + len(expected)] != expected:
        raise DataFormatError(
            f"{str(path)!r}: unexpected header {str(header)[:300]}; expected a {what} header with columns "
            f"{expected!r}"
        )
    body = rows[1:]
    if not body:
        raise DataFormatError(f"{str(path)!r}: header only, no data rows")
    width = offset + len(expected)
    out = np.empty((len(body), len(expected)), dtype=np.float64)
    for i, row in enumerate(body):
        if len(row) < width:
            raise DataFormatError(
                f"{str(path)!r}: row {i + 2} has {len(row)} fields, expected {width} (truncated?)"
            )
        try:
            out[i] = [float(v) for v in row[offset:width]]
        except ValueError as e:
            raise DataFormatError(f"{str(path)!r}: row {i + 2} is not numeric ({e})") from e
    if not np.isfinite(out).all():
        raise DataFormatError(f"{str(path)!r}: contains NaN or infinite values")
    return out


def _read_motionsense_info(path: Path) -> dict[int, dict[str, float]]:
    rows = _csv_rows(path, "MotionSense subject info", dict_reader=True)
    info: dict[int, dict[str, float]] = {}
    for i, row in enumerate(rows):
        row = {k.strip(): v for k, v in row.items() if k is not None}
        if "code" not in row:
            raise DataFormatError(
                f"{str(path)!r}: expected columns code,weight,height,age,gender; got "
                f"{list(row)!r}"
            )
        code = _int_value(row["code"], path, i + 2, "subject code")
        try:
            vals = {k: float(v) for k, v in row.items() if k != "code"}
        except (TypeError, ValueError) as e:
            raise DataFormatError(f"{str(path)!r}: row {i + 2} is not numeric ({e})") from e
        if not all(np.isfinite(v) for v in vals.values()):
            raise DataFormatError(f"{str(path)!r}: row {i + 2} holds NaN or infinite values")
        info[code] = vals
    return info


def read_motionsense(
    root: str | Path,
    *,
    window: int = 128,
    step: int = 64,
    activities: Sequence[str] | None = None,
    subjects: Sequence[int] | None = None,
) -> IMUDataset:
    """Read MotionSense (``A_DeviceMotion_data/<act>_<trial>/sub_<k>.csv``, 12 channels, 50 Hz).

    ``root`` is the folder holding ``A_DeviceMotion_data`` (or that folder itself). Subjects are
    relabelled 0..K-1 in code order (``subject_info`` keeps ``data_subjects_info.csv`` if present,
    keyed by the new labels, with the original ``code``). One device (the phone), 12 channels.
    """
    root = Path(root)
    base = root / "A_DeviceMotion_data" if (root / "A_DeviceMotion_data").is_dir() else root
    if not base.is_dir():
        raise DataFormatError(f"{str(root)!r}: not a folder; expected the MotionSense folder "
                              "containing A_DeviceMotion_data/")
    acts = list(activities) if activities else MOTIONSENSE_ACTIVITIES
    unknown = [a for a in acts if a not in MOTIONSENSE_ACTIVITIES]
    if unknown:
        raise ParameterError(f"unknown MotionSense activities {unknown}; "
                             f"known: {MOTIONSENSE_ACTIVITIES}")
    found: list[tuple[int, str, Path]] = []
    for d in sorted(base.iterdir()):
        m = _MS_DIR.match(d.name)
        if not d.is_dir() or not m or m.group(1) not in acts:
            continue
        for f in sorted(d.iterdir()):
            mf = _MS_FILE.match(f.name)
            if mf:
                code = int(mf.group(1))
                if subjects is None or code in subjects:
                    found.append((code, d.name, f))
    if not found:
        raise DataFormatError(
            f"{str(base)!r}: no MotionSense files found; expected <act>_<trial>/sub_<k>.csv with "
            f"act in {acts}"
        )
    codes = sorted({c for c, _, _ in found})
    relabel = {c: i for i, c in enumerate(codes)}
    recs = []
    for code, trial, f in found:
        data = _read_numeric_csv(f, MOTIONSENSE_COLUMNS, "MotionSense device-motion")
        act = _MS_DIR.match(trial).group(1)  # type: ignore[union-attr]
        recs.append(Recording(data.astype(np.float32),
                              np.full(len(data), acts.index(act)), relabel[code],
                              f"{trial}/sub_{code}"))
    info: dict[int, dict[str, float]] = {}
    for cand in (root / "data_subjects_info.csv", base.parent / "data_subjects_info.csv"):
        if cand.is_file():
            raw = _read_motionsense_info(cand)
            info = {relabel[c]: {**v, "code": float(c)} for c, v in raw.items() if c in relabel}
            break
    return make_windows(recs, window, step, channel_names=MOTIONSENSE_COLUMNS,
                        device_channels=(12,), activity_names=acts, sample_rate=50.0,
                        subject_info=info)


# --------------------------------------------------------------------------------------------
# LARa
# --------------------------------------------------------------------------------------------

LARA_DEVICES = ["LA", "LL", "N", "RA", "RL"]
LARA_COLUMNS = [f"{d}_{s}{ax}" for d in LARA_DEVICES for s in ("Accelerometer", "Gyroscope")
                for ax in "XYZ"]
LARA_CLASSES = ["Standing", "Walking", "Cart", "Handling (upwards)", "Handling (centred)",
                "Handling (downwards)", "Synchronization", "None"]
_LARA_FILE = re.compile(r"^L0\d_S(\d\d)_R(\d\d)\.csv$")


def _read_lara_labels(path: Path, n: int) -> np.ndarray:
    rows = _csv_rows(path, "LARa labels")
    if not rows or not rows[0] or rows[0][0].strip() != "Class":
        raise DataFormatError(f"{str(path)!r}: expected a LARa labels CSV whose first column is "
                              f"'Class'; got header {str(rows[0] if rows else [])[:200]}")
    for i, r in enumerate(rows[1:]):
        if not r:
            raise DataFormatError(f"{str(path)!r}: row {i + 2} is empty (expected a Class value)")
    lab = np.array([_int_value(r[0], path, i + 2, "Class value") for i, r in enumerate(rows[1:])],
                   dtype=np.int64)
    if len(lab) != n:
        raise DataFormatError(f"{str(path)!r}: {len(lab)} label rows for {n} data rows; they must "
                              "match row for row")
    if len(lab) and (lab.min() < 0 or lab.max() > 7):
        raise DataFormatError(f"{str(path)!r}: Class values must be 0..7, got "
                              f"{lab.min()}..{lab.max()}")
    return lab


def read_lara(
    root: str | Path,
    *,
    window: int = 200,
    step: int = 100,
    subjects: Sequence[int] | None = None,
    drop_none: bool = True,
) -> IMUDataset:
    """Read LARa IMU data (``S07..S14/L0x_Sxx_Ryy.csv`` + ``..._labels.csv``, 100 Hz).

    Data files have ``Time`` then 30 columns ``{LA,LL,N,RA,RL}_{Accelerometer,Gyroscope}{X,Y,Z}``
    (5 devices of 6 channels); label files ``Class`` (0-7) then attribute columns. Subjects are
    relabelled 0..K-1 in Sxx order; windows whose majority class is 7 ('None') are dropped unless
    ``drop_none=False``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"{str(root)!r}: not a folder; expected the LARa IMU folder with "
                              "S07..S14/")
    files = []
    for d in sorted(root.iterdir()):
        if d.is_dir() and re.fullmatch(r"S\d\d", d.name):
            for f in sorted(d.iterdir()):
                m = _LARA_FILE.match(f.name)
                if m and (subjects is None or int(m.group(1)) in subjects):
                    files.append((int(m.group(1)), f))
    if not files:
        raise DataFormatError(f"{str(root)!r}: no LARa files found; expected Sxx/L0x_Sxx_Ryy.csv")
    codes = sorted({c for c, _ in files})
    relabel = {c: i for i, c in enumerate(codes)}
    recs = []
    for code, f in files:
        data = _read_numeric_csv(f, ["Time"] + LARA_COLUMNS, "LARa IMU")[:, 1:]
        lab_path = f.with_name(f.stem + "_labels.csv")
        if not lab_path.is_file():
            raise DataFormatError(f"{str(f)!r}: its label file {lab_path.name!r} is missing")
        labels = _read_lara_labels(lab_path, len(data))
        recs.append(Recording(data.astype(np.float32), labels, relabel[code],
                              f"S{code:02d}/{f.stem}"))
    return make_windows(recs, window, step, channel_names=LARA_COLUMNS,
                        device_channels=(6,) * 5, activity_names=LARA_CLASSES, sample_rate=100.0,
                        drop_labels=(7,) if drop_none else ())
