"""PhysioNet Apnea-ECG: one WFDB record with its per-minute apnea annotations."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DataFormatError, ParameterError
from .edf import _find_channel, _is_file
from .windows import ECGRecord


def read_apnea_ecg_record(base: str | Path, *, subject: int = 0, channel: int | str = 0) -> ECGRecord:
    """One PhysioNet Apnea-ECG record ``base`` (path without extension: ``DIR/a01``): the ECG
    from ``a01.hea/.dat`` (100 Hz) and per-minute labels from ``a01.apn`` (symbol 'A' apnea /
    'N' normal at the start of each minute) expanded to per-second labels; seconds after the
    last annotated minute are unknown (-1)."""
    from ..._optional import require

    wfdb = require("wfdb", extra="ecg", feature="reading Apnea-ECG (WFDB) records")

    from ..wfdb_safe import check_wfdb_header, read_wfdb_annotations

    base = Path(base)
    if len(base.name) > 128:
        raise DataFormatError(f"{str(base)[:80]}...: record name of {len(base.name)} characters "
                              "(at most 128)")
    for ext in ("hea", "apn"):
        f = base.with_name(base.name + "." + ext)
        if not _is_file(f):
            raise DataFormatError(f"{f}: file not found (Apnea-ECG record {base.name} needs "
                                  f"{base.name}.hea, {base.name}.dat and {base.name}.apn)")
    hea = base.with_name(base.name + ".hea")
    declared = check_wfdb_header(hea)  # sizes, fs, file names: before wfdb reads anything
    try:
        header = wfdb.rdheader(str(base))
    except Exception as e:
        raise DataFormatError(f"{hea}: not a valid WFDB header ({type(e).__name__}: {e})") from e
    try:
        rec = wfdb.rdrecord(str(base), physical=True)
    except Exception as e:
        raise DataFormatError(f"{base}.dat: cannot read the WFDB signal ({type(e).__name__}: {e}); "
                              "expected the sample count and format declared in the header") from e
    sig_all = rec.p_signal
    if sig_all is None or sig_all.ndim != 2 or sig_all.shape[1] < 1:
        raise DataFormatError(f"{base}.dat: no signal channels")
    if header.sig_len is not None and len(sig_all) < header.sig_len:
        raise DataFormatError(f"{base}.dat: truncated: {len(sig_all)} samples, header declares "
                              f"{header.sig_len}")
    if float(rec.fs) != declared["fs"]:
        raise DataFormatError(f"{hea}: wfdb read the sampling frequency as {rec.fs} Hz but the "
                              f"header declares {declared['fs']} Hz")
    names = [str(s) for s in (rec.sig_name or [])]
    if isinstance(channel, str):
        ch = _find_channel(names, channel, hea)
    else:
        ch = int(channel)
        if not 0 <= ch < sig_all.shape[1]:
            raise ParameterError(f"channel {channel} does not exist: {hea.name} has "
                                 f"{sig_all.shape[1]} signal(s)")
    sig = sig_all[:, ch].astype(np.float64)
    if not np.isfinite(sig).all():
        raise DataFormatError(f"{base}.dat: signal {names[ch] if ch < len(names) else ch!r} holds "
                              "non-finite values after scaling (check the ADC gain and baseline "
                              f"in {hea.name})")
    fs = float(rec.fs)
    apn = base.with_name(base.name + ".apn")
    ann = read_wfdb_annotations(apn)  # our bounded parser: wfdb.rdann can spin forever
    symbols = ann.symbols
    samples = ann.samples
    if not symbols:
        raise DataFormatError(f"{apn}: no annotations (expected one 'A'/'N' per minute)")
    bad = sorted(set(symbols) - {"A", "N"})
    if bad:
        raise DataFormatError(f"{apn}: unexpected annotation symbols {bad} (expected only 'A' "
                              "for apnea minutes and 'N' for normal minutes)")
    if np.any(np.diff(samples) <= 0) or samples.min() < 0:
        raise DataFormatError(f"{apn}: annotation sample indices are not increasing")
    n_sec = int(np.ceil(len(sig) / fs))
    labels = np.full(n_sec, -1, dtype=np.int8)
    ann_fs = float(ann.fs) if ann.fs else fs
    for k, (smp, sym) in enumerate(zip(samples, symbols)):
        a = int(round(smp / ann_fs))
        b = int(round(samples[k + 1] / ann_fs)) if k + 1 < len(samples) else a + 60
        b = min(b, a + 60, n_sec)
        if a < n_sec:
            labels[a:b] = 1 if sym == "A" else 0
    return ECGRecord(name=base.name, signal=sig, fs=fs, second_labels=labels, subject=subject,
                     channel=names[ch] if ch < len(names) else str(ch), path=str(base))
