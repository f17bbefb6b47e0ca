"""Directory loaders: a whole UCDDB / Apnea-ECG folder, or ``"synthetic"``, as :class:`ECGWindows`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...errors import DataFormatError, ParameterError
from .apnea_ecg import read_apnea_ecg_record
from .synthetic import synthetic_ecg
from .ucddb import read_ucddb_record
from .windows import DEFAULT_EVENT_TYPES, FS, WINDOW, ECGWindows, make_windows


def _check_dir(directory: str | Path, what: str) -> Path:
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise DataFormatError(f"{d}: {what} directory not found")
    return d


def _select(found: dict[str, Any], records: Sequence[str] | None, d: Path, what: str) -> list[str]:
    if records is None:
        return sorted(found)
    missing = [r for r in records if r not in found]
    if missing:
        raise DataFormatError(f"{d}: {what} record(s) {missing} not found (have {sorted(found)[:10]}...)")
    return list(records)


def load_ucddb(
    directory: str | Path,
    records: Sequence[str] | None = None,
    *,
    channel: str = "ECG",
    event_types: Sequence[str] = DEFAULT_EVENT_TYPES,
    fs: int = FS,
    window: int = WINDOW,
    step: int | None = None,
    label_rule: str = "majority",
    min_overlap_s: float = 1.0,
    filter_band: tuple[float, float] | None = (0.5, 40.0),
    normalise: str | None = "maxabs",
) -> ECGWindows:
    """Windows from a local copy of the UCD Sleep Apnea Database (``ucddbNNN.rec`` EDF files
    with ``ucddbNNN_respevt.txt`` next to them; ``.edf`` is accepted too). ``records``: names
    such as ``["ucddb002", "ucddb003"]`` (default: all found). Each record is one subject."""
    d = _check_dir(directory, "UCDDB")
    found = {p.stem: p for p in sorted(d.glob("*.rec")) + sorted(d.glob("*.edf"))
             if not p.stem.endswith("_lifecard")}
    if not found:
        raise DataFormatError(f"{d}: no UCDDB recordings (expected ucddbNNN.rec EDF files with "
                              "ucddbNNN_respevt.txt next to them)")
    names = _select(found, records, d, "UCDDB")
    recs = (read_ucddb_record(found[nm], channel=channel, event_types=event_types, subject=i)
            for i, nm in enumerate(names))
    return make_windows(recs, fs=fs, window=window, step=step, label_rule=label_rule,
                        min_overlap_s=min_overlap_s, filter_band=filter_band, normalise=normalise,
                        source="ucddb",
                        attrs={"directory": str(d), "event_types": list(event_types)})


def load_apnea_ecg(
    directory: str | Path,
    records: Sequence[str] | None = None,
    *,
    fs: int = FS,
    window: int = WINDOW,
    step: int | None = None,
    label_rule: str = "majority",
    min_overlap_s: float = 1.0,
    filter_band: tuple[float, float] | None = (0.5, 40.0),
    normalise: str | None = "maxabs",
) -> ECGWindows:
    """Windows from a local copy of the PhysioNet Apnea-ECG Database (records with ``.hea``,
    ``.dat`` and ``.apn``: a01-a20, b01-b05, c01-c10, x01-x35; the ``*er``/``*r`` respiration
    records have no .apn and are skipped). ECG is resampled from 100 Hz to ``fs``."""
    d = _check_dir(directory, "Apnea-ECG")
    found = {p.stem: p for p in sorted(d.glob("*.apn"))}
    if not found:
        raise DataFormatError(f"{d}: no Apnea-ECG records (expected a01.hea/.dat/.apn ...)")
    names = _select(found, records, d, "Apnea-ECG")
    recs = (read_apnea_ecg_record(d / nm, subject=i) for i, nm in enumerate(names))
    return make_windows(recs, fs=fs, window=window, step=step, label_rule=label_rule,
                        min_overlap_s=min_overlap_s, filter_band=filter_band, normalise=normalise,
                        source="apnea-ecg", attrs={"directory": str(d)})


def load_ecg_dataset(spec: str, **kwargs: Any) -> ECGWindows:
    """Load ECG windows from a spec string:

    * ``"synthetic"`` or ``"synthetic:N"`` -> :func:`synthetic_ecg` (``n`` defaults to N or
      2000; other keyword arguments are passed on);
    * ``"ucddb:DIR"`` -> :func:`load_ucddb`;
    * ``"apnea-ecg:DIR"`` (also ``apnea_ecg:`` / ``apneaecg:``) -> :func:`load_apnea_ecg`.
    """
    if not isinstance(spec, str) or not spec:
        raise ParameterError(f"load_ecg_dataset: spec must be a non-empty string, got {spec!r}")
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "synthetic":
        if arg:
            try:
                kwargs.setdefault("n", int(arg))
            except ValueError as e:
                raise ParameterError(f"load_ecg_dataset: 'synthetic:N' needs an integer N, got {arg!r}") from e
        n = kwargs.pop("n", 2000)
        return synthetic_ecg(n, **kwargs)
    if not arg:
        raise ParameterError(f"load_ecg_dataset: {spec!r} needs a directory, e.g. '{kind}:/data/{kind}'")
    if kind == "ucddb":
        return load_ucddb(arg, **kwargs)
    if kind in ("apnea-ecg", "apnea_ecg", "apneaecg"):
        return load_apnea_ecg(arg, **kwargs)
    raise ParameterError(
        f"load_ecg_dataset: unknown source {kind!r}; use 'synthetic', 'ucddb:DIR' or 'apnea-ecg:DIR'"
    )
