"""EDF reader for the UCDDB ``.rec`` files (:func:`read_edf_channel`): bounded, never trusts a header."""

from __future__ import annotations

import datetime as _dt
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataFormatError

MAX_EDF_BYTES = 4 << 30  #: EDF files larger than this are refused (a UCDDB .rec is ~20 MB)


def _edf_header(path: Path) -> dict[str, Any]:
    """Tolerant EDF header parse (fallback when pyedflib rejects a slightly non-compliant
    file); raises DataFormatError when the file is not EDF or its data are truncated."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataFormatError(f"{path}: cannot read EDF file ({e})") from e
    if len(raw) < 256:
        raise DataFormatError(f"{path}: expected an EDF file (256-byte header), got {len(raw)} bytes")

    def field(a: int, b: int) -> str:
        return raw[a:b].decode("ascii", errors="replace").strip()

    try:
        if field(0, 8) not in ("0", ""):
            raise ValueError(f"version field {field(0, 8)!r} (expected '0')")
        header_bytes = int(field(184, 192))
        n_records = int(field(236, 244))
        rec_dur = float(field(244, 252))
        ns = int(field(252, 256))
        if ns < 1 or header_bytes != 256 * (ns + 1):
            raise ValueError(f"{ns} signals but header size {header_bytes}")
        if len(raw) < header_bytes:
            raise ValueError(f"header needs {header_bytes} bytes, file has {len(raw)}")
        off = 256

        def col(width: int) -> list[str]:
            nonlocal off
            vals = [raw[off + i * width: off + (i + 1) * width].decode("ascii", "replace").strip()
                    for i in range(ns)]
            off += width * ns
            return vals

        labels = col(16)
        col(80)  # transducer
        dims = col(8)
        pmin = [float(v) for v in col(8)]
        pmax = [float(v) for v in col(8)]
        dmin = [float(v) for v in col(8)]
        dmax = [float(v) for v in col(8)]
        col(80)  # prefilter
        nsamp = [int(v) for v in col(8)]
        start = _parse_edf_start(field(168, 176), field(176, 184))
        if not (np.isfinite(rec_dur) and rec_dur > 0):
            raise ValueError(f"record duration {field(244, 252)!r} s (must be positive)")
        for name, vals in (("physical", pmin + pmax), ("digital", dmin + dmax)):
            if not np.isfinite(vals).all():
                raise ValueError(f"non-finite {name} minimum or maximum")
        if any(not 1 <= v <= 1 << 24 for v in nsamp):
            raise ValueError(f"samples per data record {nsamp[:8]} (each must be 1..2^24)")
    except (ValueError, IndexError, OverflowError) as e:
        raise DataFormatError(f"{path}: malformed EDF header: {e}") from e
    rec_samples = sum(nsamp)
    if n_records < 0:  # unknown (-1): infer from the file size
        n_records = (len(raw) - header_bytes) // (2 * rec_samples)
    need = header_bytes + 2 * rec_samples * n_records
    if len(raw) < need:
        raise DataFormatError(
            f"{path}: EDF file truncated: header declares {n_records} data records of "
            f"{2 * rec_samples} bytes ({need} bytes in all), file has {len(raw)} bytes"
        )
    return dict(raw=raw, header_bytes=header_bytes, n_records=n_records, rec_dur=rec_dur,
                labels=labels, dims=dims, pmin=pmin, pmax=pmax, dmin=dmin, dmax=dmax,
                nsamp=nsamp, start=start)


def _is_file(path: Path) -> bool:
    """``path.is_file()``, with a name too long for the file system (or another OS error) as a
    DataFormatError instead of an OSError."""
    try:
        return path.is_file()
    except (OSError, ValueError) as e:
        raise DataFormatError(f"{str(path)[:120]}: cannot be used as a file name ({e})") from e


def _check_edf_ranges(path: Path, label: str, dmin: float, dmax: float, pmin: float,
                      pmax: float) -> None:
    """EDF requires digital max > digital min and physical max != physical min (pyedflib returns
    unscaled digital values when they are equal: a silent wrong answer)."""
    if not all(np.isfinite(v) for v in (dmin, dmax, pmin, pmax)):
        raise DataFormatError(f"{path}: signal {label.strip()!r} has a non-finite physical or "
                              "digital range in the header")
    if not dmax > dmin or pmax == pmin:
        raise DataFormatError(
            f"{path}: signal {label.strip()!r} has digital range {dmin}..{dmax} and physical "
            f"range {pmin}..{pmax}; EDF needs digital max > digital min and distinct physical "
            "limits")


def _check_edf_signal(path: Path, sig: np.ndarray, fs: float, label: str) -> None:
    if not (np.isfinite(fs) and 0 < fs <= 1e6):
        raise DataFormatError(f"{path}: signal {label.strip()!r} has sampling frequency {fs} Hz; "
                              "the header's samples per record and record duration must be "
                              "positive")
    if not np.isfinite(sig).all():
        raise DataFormatError(f"{path}: signal {label.strip()!r} has non-finite samples after "
                              "scaling; check its physical and digital ranges in the header")


def _parse_edf_start(date: str, time: str) -> _dt.datetime | None:
    try:
        dd, mm, yy = (int(v) for v in date.split("."))
        hh, mi, ss = (int(v) for v in time.replace(":", ".").split("."))
        year = 2000 + yy if yy < 85 else 1900 + yy
        return _dt.datetime(year, mm, dd, hh, mi, ss)
    except ValueError:
        return None


def _find_channel(labels: Sequence[str], match: str, path: Path) -> int:
    hits = [i for i, lab in enumerate(labels) if match.lower() in lab.lower()]
    if not hits:
        raise DataFormatError(
            f"{path}: no signal whose label contains {match!r}; labels are {list(labels)}"
        )
    return hits[0]


def read_edf_channel(path: str | Path, match: str = "ECG") -> tuple[np.ndarray, float, _dt.datetime | None, str]:
    """Read the first signal whose label contains ``match`` (case-insensitive) from an EDF file
    (any extension, e.g. UCDDB's ``.rec``). Returns ``(signal in physical units, fs, start
    datetime from the header, label)``.

    Uses pyedflib; files that pyedflib rejects as non-compliant are re-read with a tolerant
    header parser (some PhysioNet EDFs have small header deviations). Missing, truncated or
    non-EDF files raise DataFormatError.
    """
    path = Path(path)
    if not _is_file(path):
        raise DataFormatError(f"{path}: EDF file not found")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise DataFormatError(f"{path}: cannot read EDF file ({e})") from e
    if size > MAX_EDF_BYTES:
        raise DataFormatError(f"{path}: {size} bytes, more than the EDF limit of {MAX_EDF_BYTES}")
    first_error = None
    try:
        import pyedflib

        with pyedflib.EdfReader(str(path)) as f:
            labels = [str(v) for v in f.getSignalLabels()]
            i = _find_channel(labels, match, path)
            sig = np.asarray(f.readSignal(i), dtype=np.float64)
            fs = float(f.getSampleFrequency(i))
            start = f.getStartdatetime()
            _check_edf_ranges(path, labels[i], f.getDigitalMinimum(i), f.getDigitalMaximum(i),
                              f.getPhysicalMinimum(i), f.getPhysicalMaximum(i))
        _check_edf_signal(path, sig, fs, labels[i])
        return sig, fs, start, labels[i].strip()
    except DataFormatError:
        raise
    except ImportError as e:  # pyedflib (extra 'ecg') missing: the tolerant reader below
        first_error = e
    except Exception as e:  # noqa: BLE001 - pyedflib raises OSError (and others) for format problems
        first_error = e
    h = _edf_header(path)  # raises DataFormatError (with the reason) if really broken
    i = _find_channel(h["labels"], match, path)
    ns = h["nsamp"]
    rec_samples = sum(ns)
    data = np.frombuffer(h["raw"], dtype="<i2", offset=h["header_bytes"],
                         count=rec_samples * h["n_records"]).reshape(h["n_records"], rec_samples)
    a = sum(ns[:i])
    dig = data[:, a:a + ns[i]].reshape(-1).astype(np.float64)
    dmin, dmax, pmin, pmax = h["dmin"][i], h["dmax"][i], h["pmin"][i], h["pmax"][i]
    _check_edf_ranges(path, h["labels"][i], dmin, dmax, pmin, pmax)
    with np.errstate(all="ignore"):  # non-finite results are refused just below
        sig = (dig - dmin) * (pmax - pmin) / (dmax - dmin) + pmin
    fs = ns[i] / h["rec_dur"]
    _check_edf_signal(path, sig, fs, h["labels"][i])
    if not isinstance(first_error, ImportError):
        warnings.warn(f"{path}: pyedflib refused the file ({first_error}); read with the "
                      "tolerant EDF parser", stacklevel=2)
    return sig, float(fs), h["start"], h["labels"][i]
