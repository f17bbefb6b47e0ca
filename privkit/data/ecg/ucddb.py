"""UCD Sleep Apnea Database: the respiratory-event files and one record (signal + events)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...errors import DataFormatError
from .edf import _is_file, read_edf_channel
from .windows import DEFAULT_EVENT_TYPES, ECGRecord, RespEvent

_TIME_RE = re.compile(r"^\s*(\d{1,2}):(\d{2}):(\d{2})(?:\.\d+)?\s+(\S+)\s*(.*)$")
_LOOSE_TIME_RE = re.compile(r"^\s*\d{1,2}:\d{2}:\d{2}")


def parse_respevt(path: str | Path) -> list[RespEvent]:
    """Parse a UCDDB ``ucddbNNN_respevt.txt`` file.

    Layout (fixed-width text, see docs/ecg_data.md): a few header lines (the record name, a
    column header ``Time  Type  PB/CS  Duration  Low  %Drop  Snore  Arousal  B/T Rate  B/T
    Change``, blank lines), then one event per line starting with the clock time
    ``hh:mm:ss``, the event type (``HYP-O``, ``APNEA-O``, ``APNEA-C``, ``APNEA-M``, ``PB``...),
    an optional PB/CS flag, the duration in seconds, then desaturation / snore / arousal /
    heart-rate columns that are ignored. Lines not starting with a time are treated as headers.
    An event line without a duration, a non-text (binary) file, or a file with neither events
    nor a recognisable header raise DataFormatError.
    """
    path = Path(path)
    if not _is_file(path):
        raise DataFormatError(f"{path}: respiratory event file not found (expected "
                              "'<record>_respevt.txt' next to the .rec file)")
    try:
        if path.stat().st_size > 64 << 20:
            raise DataFormatError(f"{path}: larger than 64 MB; not a respiratory event listing")
        raw = path.read_bytes()
    except OSError as e:
        raise DataFormatError(f"{path}: cannot read ({e})") from e
    if b"\x00" in raw:
        raise DataFormatError(f"{path}: expected a text file of respiratory events, found binary data")
    text = raw.decode("utf-8", errors="replace")
    events: list[RespEvent] = []
    saw_header = False
    for ln, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        m = _TIME_RE.match(line)
        if not m:
            if _LOOSE_TIME_RE.match(line):
                raise DataFormatError(f"{path}:{ln}: expected 'hh:mm:ss TYPE [PB|CS] DURATION ...', "
                                      f"got {line.strip()[:200]!r}")
            if re.search(r"\btime\b", line, re.IGNORECASE) and re.search(r"\btype\b", line, re.IGNORECASE):
                saw_header = True
            continue
        hh, mm, ss, etype, rest = m.groups()
        if int(mm) > 59 or int(ss) > 59 or int(hh) > 23:
            raise DataFormatError(f"{path}:{ln}: invalid clock time {hh}:{mm}:{ss}")
        pbcs, duration = "", None
        for tok in rest.split():
            if tok.upper() in ("PB", "CS") and duration is None and not pbcs:
                pbcs = tok.upper()
                continue
            try:
                duration = float(tok)
            except ValueError:
                pass
            break
        if duration is None or not np.isfinite(duration) or not 0 <= duration <= 86400:
            raise DataFormatError(
                f"{path}:{ln}: event {etype[:40]!r} has no duration in seconds (0..86400) after "
                f"the type (expected 'hh:mm:ss TYPE [PB|CS] DURATION ...'), got "
                f"{line.strip()[:200]!r}"
            )
        events.append(RespEvent(clock_s=int(hh) * 3600 + int(mm) * 60 + int(ss),
                                type=etype.upper(), duration_s=duration, pbcs=pbcs, line=ln))
    if not events and not saw_header:
        raise DataFormatError(
            f"{path}: expected a UCDDB respiratory event listing (a 'Time Type ... Duration' "
            "header and lines 'hh:mm:ss TYPE [PB|CS] DURATION ...'), found neither"
        )
    return events


def _is_apnea_type(etype: str, event_types: Sequence[str]) -> bool:
    up = etype.upper()
    return any(up.startswith(t.upper()) for t in event_types)


def read_ucddb_record(
    rec_path: str | Path,
    respevt_path: str | Path | None = None,
    *,
    channel: str = "ECG",
    event_types: Sequence[str] = DEFAULT_EVENT_TYPES,
    subject: int = 0,
) -> ECGRecord:
    """One UCDDB record: the ECG channel of ``ucddbNNN.rec`` (EDF) and per-second labels from
    ``ucddbNNN_respevt.txt`` (default: next to the .rec). A second is 1 when it overlaps an
    event whose type starts with one of ``event_types`` (default apnea and hypopnea: APNEA-O/
    C/M, HYP-O/C/M). Event clock times are placed relative to the EDF header's start time
    (wrapping past midnight)."""
    rec_path = Path(rec_path)
    if respevt_path is None:
        respevt_path = rec_path.with_name(rec_path.stem + "_respevt.txt")
    sig, fs, start, label = read_edf_channel(rec_path, channel)
    if len(sig) == 0:
        raise DataFormatError(f"{rec_path}: channel {label!r} holds no samples")
    events = parse_respevt(respevt_path)
    n_sec = int(np.ceil(len(sig) / fs))
    labels = np.zeros(n_sec, dtype=np.int8)
    if start is None:
        raise DataFormatError(f"{rec_path}: EDF header has no valid start date/time "
                              "(needed to place the clock-time events)")
    start_s = start.hour * 3600 + start.minute * 60 + start.second
    outside = 0
    for ev in events:
        onset = (ev.clock_s - start_s) % 86400
        if onset > 86400 - 3600:  # up to an hour before the start: keep it negative
            onset -= 86400
        ev.onset_s = float(onset)
        a, b = onset, onset + ev.duration_s
        if b <= 0 or a >= n_sec:
            outside += 1
            continue
        if _is_apnea_type(ev.type, event_types):
            labels[max(0, int(np.floor(a))):min(n_sec, int(np.ceil(b)))] = 1
    if outside:
        warnings.warn(f"{respevt_path}: {outside} of {len(events)} events lie outside the "
                      f"{n_sec} s recording {rec_path.name}", stacklevel=2)
    return ECGRecord(name=rec_path.stem, signal=sig, fs=fs, second_labels=labels,
                     subject=subject, start_time=start, events=events, channel=label,
                     path=str(rec_path))
