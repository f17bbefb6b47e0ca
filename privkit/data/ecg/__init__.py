"""ECG data for sleep-apnea detection: synthetic ECG, UCDDB and Apnea-ECG readers, windowing.

Everything ends up as an :class:`ECGWindows`: single-lead ECG windows ``x`` of shape
``(N, 1408)`` (11 s at 128 Hz, float32), a 0/1 apnea label ``y`` per window, and per-window
record / subject ids and start times. :func:`pad_windows` zero-pads to 2048 samples (one CKKS
ciphertext at n8192 has 4096 slots; the paper pads 1408 -> 2048).

Sources (see ``docs/ecg_data.md``):

* :func:`synthetic_ecg` - P-QRS-T beats on a variable RR process with respiratory sinus
  arrhythmia, baseline wander, mains hum and noise; apnea windows are snippets of a cyclic
  heart-rate variation (bradycardia during the event, tachycardia at arousal, 30-60 s cycle)
  with respiration-driven QRS amplitude modulation that changes pattern. No single summary
  statistic separates the classes; the shape of the RR / amplitude trends does.
* :func:`load_ucddb` - UCD Sleep Apnea Database: EDF ``ucddbNNN.rec`` + ``ucddbNNN_respevt.txt``.
* :func:`load_apnea_ecg` - PhysioNet Apnea-ECG: WFDB ``a01.hea/.dat`` + per-minute ``a01.apn``.
* :func:`load_ecg_dataset` - ``"synthetic"``, ``"ucddb:DIR"`` or ``"apnea-ecg:DIR"``.

The package holds one idea per module: :mod:`~privkit.data.ecg.windows` (containers, windowing),
:mod:`~privkit.data.ecg.features`, :mod:`~privkit.data.ecg.synthetic`, :mod:`~privkit.data.ecg.edf`
(the EDF reader), :mod:`~privkit.data.ecg.ucddb`, :mod:`~privkit.data.ecg.apnea_ecg` and
:mod:`~privkit.data.ecg.loaders`; every name is importable from ``privkit.data.ecg`` as before.

Missing, truncated or malformed files raise :class:`~privkit.errors.DataFormatError` naming the
file and what was expected. Nothing here touches the network.

>>> ds = synthetic_ecg(64, apnea_fraction=0.5, seed=0)
>>> ds.x.shape, ds.x.dtype.name, ds.fs, int(ds.y.sum())
((64, 1408), 'float32', 128, 32)
>>> bool(abs(ds.x).max() <= 1.0)           # default normalisation: per-window max-abs
True
>>> pad_windows(ds.x).shape
(64, 2048)
"""

from __future__ import annotations

from .apnea_ecg import read_apnea_ecg_record
from .edf import MAX_EDF_BYTES as MAX_EDF_BYTES  # a limit, not in __all__
from .edf import read_edf_channel
from .features import ECG_FEATURE_NAMES, ecg_features
from .loaders import load_apnea_ecg, load_ecg_dataset, load_ucddb
from .synthetic import synthetic_ecg
from .ucddb import parse_respevt, read_ucddb_record
from .windows import (
    DEFAULT_EVENT_TYPES,
    FS,
    PADDED,
    WINDOW,
    ECGRecord,
    ECGWindows,
    RespEvent,
    bandpass,
    make_windows,
    normalise_windows,
    pad_windows,
    resample_signal,
    window_labels,
)

__all__ = [
    "ECGWindows",
    "ECGRecord",
    "RespEvent",
    "FS",
    "WINDOW",
    "PADDED",
    "DEFAULT_EVENT_TYPES",
    "synthetic_ecg",
    "pad_windows",
    "normalise_windows",
    "bandpass",
    "resample_signal",
    "make_windows",
    "window_labels",
    "ecg_features",
    "ECG_FEATURE_NAMES",
    "read_edf_channel",
    "parse_respevt",
    "read_ucddb_record",
    "read_apnea_ecg_record",
    "load_ucddb",
    "load_apnea_ecg",
    "load_ecg_dataset",
]
