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

import dataclasses
import datetime as _dt
import re
import warnings
from fractions import Fraction
from pathlib import Path
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import DataFormatError, ParameterError, ShapeError

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

FS = 128  #: target sampling rate (Hz)
MAX_EDF_BYTES = 4 << 30  #: EDF files larger than this are refused (a UCDDB .rec is ~20 MB)
WINDOW = 1408  #: samples per window (11 s at 128 Hz)
PADDED = 2048  #: padded window length used for encryption
#: UCDDB respiratory event types counted as apnea (prefix match, case-insensitive)
DEFAULT_EVENT_TYPES: tuple[str, ...] = ("APNEA", "HYP")

_NORMALISATIONS = ("maxabs", "zscore", None)
_LABEL_RULES = ("majority", "any", "center")


# --------------------------------------------------------------------------------------------
# containers
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ECGWindows:
    """Fixed-length single-lead ECG windows with one 0/1 apnea label each.

    ``x``: (N, W) float32; ``y``: (N,) int64 (1 = apnea); ``fs``: Hz; ``record``: (N,) index
    into ``record_names``; ``subject``: (N,) subject id; ``start``: (N,) window start in seconds
    from the start of its record; ``source``: "synthetic" | "ucddb" | "apnea-ecg";
    ``normalisation``: what :func:`normalise_windows` did (None = raw units, mV for the
    databases); ``info``: extra per-window arrays (kept in step by :meth:`subset`);
    ``attrs``: dataset-level metadata (generator settings, reader options, file names).
    """

    x: np.ndarray
    y: np.ndarray
    fs: int
    record: np.ndarray
    record_names: list[str]
    subject: np.ndarray
    start: np.ndarray
    source: str
    normalisation: str | None = None
    info: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.x = np.asarray(self.x, dtype=np.float32)
        if self.x.ndim != 2:
            raise ParameterError(f"ECGWindows.x must be (N, W), got shape {self.x.shape}")
        n = len(self.x)
        self.y = np.asarray(self.y, dtype=np.int64)
        self.record = np.asarray(self.record, dtype=np.int64)
        self.subject = np.asarray(self.subject, dtype=np.int64)
        self.start = np.asarray(self.start, dtype=np.float64)
        for name in ("y", "record", "subject", "start"):
            if len(getattr(self, name)) != n:
                raise ParameterError(
                    f"ECGWindows: {name} has {len(getattr(self, name))} entries for {n} windows"
                )
        for k, v in self.info.items():
            if len(v) != n:
                raise ParameterError(f"ECGWindows.info[{k!r}] has {len(v)} entries for {n} windows")
        if n and not np.isin(self.y, (0, 1)).all():
            raise ParameterError("ECGWindows.y must hold 0/1 labels")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def window(self) -> int:
        """Samples per window (1408 by default)."""
        return int(self.x.shape[1])

    @property
    def apnea_fraction(self) -> float:
        return float(self.y.mean()) if len(self.y) else 0.0

    @property
    def n_subjects(self) -> int:
        return int(len(np.unique(self.subject)))

    def counts(self) -> dict[str, int]:
        """``{"normal": ..., "apnea": ...}`` window counts."""
        return {"normal": int((self.y == 0).sum()), "apnea": int((self.y == 1).sum())}

    def subset(self, index: np.ndarray | Sequence[int]) -> ECGWindows:
        """The windows at ``index`` (boolean mask or integer indices)."""
        idx = np.asarray(index)
        return dataclasses.replace(
            self,
            x=self.x[idx],
            y=self.y[idx],
            record=self.record[idx],
            subject=self.subject[idx],
            start=self.start[idx],
            info={k: np.asarray(v)[idx] for k, v in self.info.items()},
            attrs=dict(self.attrs),
        )

    def padded(self, to: int = PADDED) -> np.ndarray:
        """``x`` zero-padded at the end to ``to`` samples (see :func:`pad_windows`)."""
        return pad_windows(self.x, to=to)

    def split(
        self, test_fraction: float = 0.25, *, by: str = "subject", seed: int = 0
    ) -> tuple[ECGWindows, ECGWindows]:
        """Train/test split. ``by="subject"``: whole subjects go to one side (no subject leaks
        into both); ``by="random"``: stratified by label, windows shuffled."""
        if not 0.0 < test_fraction < 1.0:
            raise ParameterError(f"test_fraction must be in (0, 1), got {test_fraction}")
        rng = np.random.default_rng(seed)
        if by == "subject":
            subjects = np.unique(self.subject)
            if len(subjects) < 2:
                raise ParameterError(
                    "split(by='subject') needs at least two subjects; use by='random'"
                )
            n_test = min(len(subjects) - 1, max(1, int(round(test_fraction * len(subjects)))))
            test_subj = rng.permutation(subjects)[:n_test]
            is_test = np.isin(self.subject, test_subj)
        elif by == "random":
            is_test = np.zeros(len(self), dtype=bool)
            for label in (0, 1):
                idx = np.flatnonzero(self.y == label)
                k = int(round(test_fraction * len(idx)))
                is_test[rng.permutation(idx)[:k]] = True
        else:
            raise ParameterError(f"split: by must be 'subject' or 'random', got {by!r}")
        return self.subset(~is_test), self.subset(is_test)

    def tensors(self, pad_to: int | None = None):
        """``(x, y)`` as torch tensors: x float32 ``(N, 1, W or pad_to)``, y int64 ``(N,)``."""
        import torch

        x = self.x if pad_to is None else pad_windows(self.x, to=pad_to)
        return torch.from_numpy(np.ascontiguousarray(x[:, None, :])), torch.from_numpy(self.y)

    @staticmethod
    def concatenate(parts: Sequence[ECGWindows]) -> ECGWindows:
        """Stack datasets (record indices are re-based; subjects are kept as given)."""
        if not parts:
            raise ParameterError("ECGWindows.concatenate needs at least one dataset")
        names: list[str] = []
        recs = []
        for p in parts:
            recs.append(p.record + len(names))
            names.extend(p.record_names)
        keys = set.intersection(*(set(p.info) for p in parts))
        return ECGWindows(
            x=np.concatenate([p.x for p in parts]),
            y=np.concatenate([p.y for p in parts]),
            fs=parts[0].fs,
            record=np.concatenate(recs),
            record_names=names,
            subject=np.concatenate([p.subject for p in parts]),
            start=np.concatenate([p.start for p in parts]),
            source=parts[0].source,
            normalisation=parts[0].normalisation,
            info={k: np.concatenate([p.info[k] for p in parts]) for k in sorted(keys)},
            attrs=dict(parts[0].attrs),
        )


@dataclasses.dataclass
class RespEvent:
    """One scored respiratory event of a UCDDB ``_respevt.txt`` file."""

    clock_s: int  #: clock time of the event onset, seconds after midnight
    type: str  #: e.g. "HYP-O", "APNEA-O", "APNEA-C", "APNEA-M", "PB"
    duration_s: float
    pbcs: str = ""  #: the PB/CS column ("PB", "CS" or empty)
    line: int = 0  #: 1-based line number in the file
    onset_s: float | None = None  #: seconds from the recording start (set by the reader)


@dataclasses.dataclass
class ECGRecord:
    """One continuous ECG recording with a label per second (1 apnea, 0 normal, -1 unknown)."""

    name: str
    signal: np.ndarray  #: (T,) float, physical units (mV for both databases)
    fs: float
    second_labels: np.ndarray  #: (ceil(T / fs),) int8
    subject: int = 0
    start_time: _dt.datetime | None = None
    events: list[RespEvent] = dataclasses.field(default_factory=list)
    channel: str = "ECG"
    path: str = ""

    @property
    def duration_s(self) -> float:
        return len(self.signal) / float(self.fs)


# --------------------------------------------------------------------------------------------
# signal helpers
# --------------------------------------------------------------------------------------------


def pad_windows(x: np.ndarray, to: int = PADDED) -> np.ndarray:
    """Zero-pad windows at the end of the last axis to ``to`` samples (float32 copy).

    ``(N, W) -> (N, to)`` and ``(W,) -> (to,)``; raises ShapeError if ``W > to``.
    """
    a = np.asarray(x, dtype=np.float32)
    w = a.shape[-1]
    if w > to:
        raise ShapeError(f"pad_windows: windows have {w} samples, more than to={to}")
    out = np.zeros(a.shape[:-1] + (int(to),), dtype=np.float32)
    out[..., :w] = a
    return out


def normalise_windows(
    x: np.ndarray, method: str | None = "maxabs", *, scale: float = 4.0, eps: float = 1e-6
) -> np.ndarray:
    """Per-window normalisation (each row on its own; no statistics shared across windows).

    * ``"maxabs"`` (default): subtract the window median, divide by the largest absolute
      deviation -> every value in [-1, 1], the R peaks near +-1. Bounded input is what the
      encrypted pipeline wants (polynomial activations are fitted on a known range).
    * ``"zscore"``: subtract the mean, divide by ``scale`` times the standard deviation ->
      std = 1/scale (0.25 by default), R peaks typically around +-1 to +-1.5 (not clipped).
    * ``None``: unchanged (float32 copy).

    Flat windows (deviation < eps) become all zeros.
    """
    a = np.array(x, dtype=np.float64, ndmin=2, copy=True)
    if method is None:
        out = a
    elif method == "maxabs":
        a -= np.median(a, axis=-1, keepdims=True)
        m = np.abs(a).max(axis=-1, keepdims=True)
        out = np.where(m > eps, a / np.maximum(m, eps), 0.0)
    elif method == "zscore":
        a -= a.mean(axis=-1, keepdims=True)
        s = a.std(axis=-1, keepdims=True)
        out = np.where(s > eps, a / (scale * np.maximum(s, eps)), 0.0)
    else:
        raise ParameterError(f"normalise_windows: method must be one of {_NORMALISATIONS}, got {method!r}")
    out = out.astype(np.float32)
    return out.reshape(np.shape(x)) if np.ndim(x) == 1 else out


def bandpass(x: np.ndarray, fs: float, low: float = 0.5, high: float = 40.0, order: int = 3) -> np.ndarray:
    """Zero-phase Butterworth band-pass along the last axis (removes baseline wander and hum)."""
    from scipy.signal import butter, sosfiltfilt

    nyq = fs / 2.0
    if not 0 < low < high < nyq:
        raise ParameterError(f"bandpass: need 0 < low < high < fs/2 = {nyq}, got ({low}, {high})")
    sos = butter(order, [low / nyq, high / nyq], btype="band", output="sos")
    a = np.asarray(x, dtype=np.float64)
    if a.shape[-1] <= 3 * (2 * order + 1):
        return a.copy()
    return sosfiltfilt(sos, a, axis=-1)


def resample_signal(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling ``fs_in -> fs_out`` along the last axis (scipy ``resample_poly``).

    The ratio is approximated by a fraction with denominator <= 1000 (100 -> 128 Hz is exactly
    32/25). Output length is ``ceil(len * up / down)``.
    """
    from scipy.signal import resample_poly

    if fs_in <= 0 or fs_out <= 0:
        raise ParameterError(f"resample_signal: rates must be positive, got {fs_in} -> {fs_out}")
    a = np.asarray(x, dtype=np.float64)
    if float(fs_in) == float(fs_out):
        return a.copy()
    ratio = Fraction(float(fs_out) / float(fs_in)).limit_denominator(1000)
    return resample_poly(a, ratio.numerator, ratio.denominator, axis=-1)


def window_labels(
    second_labels: np.ndarray,
    fs: float,
    starts: np.ndarray,
    window: int,
    rule: str = "majority",
    min_overlap_s: float = 1.0,
) -> np.ndarray:
    """Label of each window ``[start, start + window)`` (start/window in samples at ``fs``)
    from per-second labels (1 apnea, 0 normal, -1 unknown).

    ``rule="majority"``: 1 when more than half of the window's duration is apneic;
    ``"any"``: 1 when at least ``min_overlap_s`` seconds are apneic; ``"center"``: the label of
    the second holding the window centre. Windows touching an unknown second get -1.
    """
    if rule not in _LABEL_RULES:
        raise ParameterError(f"label rule must be one of {_LABEL_RULES}, got {rule!r}")
    lab = np.asarray(second_labels, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    if len(starts) == 0:
        return np.zeros(0, dtype=np.int64)
    # overlap in seconds of [a, b) with every labelled second, via cumulative sums over seconds
    a = starts / float(fs)
    b = (starts + window) / float(fs)
    pos = np.concatenate([[0.0], np.cumsum(lab == 1, dtype=np.float64)])
    unk = np.concatenate([[0.0], np.cumsum(lab < 0, dtype=np.float64)])
    n_sec = len(lab)

    def integral(c: np.ndarray, t: np.ndarray) -> np.ndarray:
        t = np.clip(t, 0.0, n_sec)
        i = np.minimum(np.floor(t).astype(np.int64), n_sec - 1) if n_sec else np.zeros_like(t, int)
        i = np.clip(i, 0, max(n_sec - 1, 0))
        frac = t - i
        step = c[i + 1] - c[i] if n_sec else 0.0
        return c[i] + frac * step

    apnea_s = integral(pos, b) - integral(pos, a)
    unknown_s = integral(unk, b) - integral(unk, a) + np.maximum(b - n_sec, 0.0)
    if rule == "majority":
        out = (apnea_s > 0.5 * (b - a) + 1e-9).astype(np.int64)
    elif rule == "any":
        out = (apnea_s >= min_overlap_s - 1e-9).astype(np.int64)
    else:
        centre = np.floor((a + b) / 2.0).astype(np.int64)
        out = np.where(centre < n_sec, lab[np.clip(centre, 0, max(n_sec - 1, 0))], -1)
    return np.where(unknown_s > 1e-9, -1, out).astype(np.int64)


def make_windows(
    records: Iterable[ECGRecord],
    *,
    fs: int = FS,
    window: int = WINDOW,
    step: int | None = None,
    label_rule: str = "majority",
    min_overlap_s: float = 1.0,
    filter_band: tuple[float, float] | None = (0.5, 40.0),
    normalise: str | None = "maxabs",
    source: str = "records",
    attrs: dict[str, Any] | None = None,
) -> ECGWindows:
    """Resample each record to ``fs``, band-pass it (``filter_band``; None to skip), cut windows
    of ``window`` samples every ``step`` (default: ``window``, no overlap), label them from the
    per-second labels (:func:`window_labels`), drop windows with unknown seconds, normalise.
    """
    if window < 2:
        raise ParameterError(f"window must be >= 2 samples, got {window}")
    step = int(window if step is None else step)
    if step < 1:
        raise ParameterError(f"step must be >= 1, got {step}")
    if normalise not in _NORMALISATIONS:
        raise ParameterError(f"normalise must be one of {_NORMALISATIONS}, got {normalise!r}")
    xs, ys, recs, subs, starts, names = [], [], [], [], [], []
    n_unknown = 0
    for rec in records:
        sig = np.asarray(rec.signal, dtype=np.float64)
        sig = np.nan_to_num(sig, nan=0.0, posinf=0.0, neginf=0.0)
        sig = resample_signal(sig, rec.fs, fs)
        if filter_band is not None:
            sig = bandpass(sig, fs, *filter_band)
        names.append(rec.name)
        if len(sig) < window:
            continue
        st = np.arange(0, len(sig) - window + 1, step, dtype=np.int64)
        lab = window_labels(rec.second_labels, fs, st, window, label_rule, min_overlap_s)
        keep = lab >= 0
        n_unknown += int((~keep).sum())
        if not keep.any():
            continue
        st = st[keep]
        win = np.lib.stride_tricks.sliding_window_view(sig, window)[st]
        xs.append(normalise_windows(win, normalise) if normalise else win.astype(np.float32))
        ys.append(lab[keep])
        recs.append(np.full(len(st), len(names) - 1))
        subs.append(np.full(len(st), rec.subject))
        starts.append(st / float(fs))
    if not xs:
        raise DataFormatError(
            f"no labelled windows of {window} samples at {fs} Hz could be cut from "
            f"{len(names)} record(s) {names[:5]}: records too short or all seconds unlabelled"
        )
    meta = dict(attrs or {})
    meta.update(label_rule=label_rule, step=step, filter_band=filter_band,
                dropped_unlabelled_windows=n_unknown)
    return ECGWindows(
        x=np.concatenate(xs),
        y=np.concatenate(ys),
        fs=int(fs),
        record=np.concatenate(recs),
        record_names=names,
        subject=np.concatenate(subs),
        start=np.concatenate(starts),
        source=source,
        normalisation=normalise,
        attrs=meta,
    )


# --------------------------------------------------------------------------------------------
# features (baselines, separability checks)
# --------------------------------------------------------------------------------------------

ECG_FEATURE_NAMES = (
    "mean", "std", "mean_rr", "std_rr", "rr_abs_slope", "rr_range",
    "r_amp_cv", "r_amp_abs_slope", "hf_energy",
)


def _r_peaks(w: np.ndarray, fs: float) -> np.ndarray:
    from scipy.signal import find_peaks

    z = w - np.median(w)
    if np.abs(z.min()) > 1.5 * np.abs(z.max()):  # inverted lead
        z = -z
    height = 0.3 * np.percentile(z, 99.5)
    peaks, _ = find_peaks(z, height=height, distance=max(1, int(0.33 * fs)))
    return peaks


def ecg_features(x: np.ndarray, fs: float = FS) -> np.ndarray:
    """Hand-made per-window features (``ECG_FEATURE_NAMES``) for baselines and separability
    checks: signal mean/std, RR statistics from a simple R-peak detector (mean, std, linear
    slope over the window, range), R-amplitude coefficient of variation and slope, and the
    high-frequency energy (std of the first difference). Returns (N, 9) float64."""
    a = np.atleast_2d(np.asarray(x, dtype=np.float64))
    out = np.zeros((len(a), len(ECG_FEATURE_NAMES)))
    for i, w in enumerate(a):
        p = _r_peaks(w, fs)
        feats = [w.mean(), w.std()]
        if len(p) >= 3:
            t = p[1:] / fs
            rr = np.diff(p) / fs
            amp = w[p] - np.median(w)
            tt = p / fs
            rel = amp / (abs(amp.mean()) + 1e-9)
            feats += [rr.mean(), rr.std(), abs(np.polyfit(t, rr, 1)[0]), np.ptp(rr),
                      rel.std(), abs(np.polyfit(tt, rel, 1)[0])]
        else:
            feats += [0.0] * 6
        feats.append(np.diff(w).std())
        out[i] = feats
    return out


# --------------------------------------------------------------------------------------------
# synthetic ECG
# --------------------------------------------------------------------------------------------

# P, Q, R, S, T: (offset from R in s, width sigma in s, amplitude relative to R)
_WAVES = np.array([
    [-0.20, 0.025, 0.15],
    [-0.035, 0.010, -0.12],
    [0.0, 0.011, 1.0],
    [0.035, 0.011, -0.25],
    [0.30, 0.050, 0.30],
])


def _subjects(rng: np.random.Generator, k: int) -> dict[str, np.ndarray]:
    """Per-subject physiology and recording conditions."""
    return {
        "hr": rng.uniform(55.0, 85.0, k),  # resting heart rate (bpm)
        "gain": np.exp(rng.uniform(np.log(0.6), np.log(1.8), k)),  # R amplitude (mV)
        "offsets": _WAVES[None, :, 0] * rng.uniform(0.85, 1.15, (k, 5)),
        "widths": _WAVES[None, :, 1] * rng.uniform(0.8, 1.3, (k, 5)),
        "amps": _WAVES[None, :, 2] * rng.uniform(0.6, 1.5, (k, 5))
        * np.where(rng.random((k, 1)) < 0.1, [1, 1, 1, 1, -0.6], 1.0),  # some inverted T
        "resp_hz": rng.uniform(0.2, 0.32, k),  # breathing rate 12-19 / min
        "rsa": rng.uniform(0.02, 0.06, k),  # RSA depth (fraction of HR)
        "edr": rng.uniform(0.04, 0.14, k),  # respiration -> QRS amplitude modulation depth
        "noise": rng.uniform(0.008, 0.035, k),  # white noise (mV)
        "hum": rng.uniform(0.0, 0.03, k) * (rng.random(k) < 0.6),  # mains hum (mV)
        "hum_hz": np.where(rng.random(k) < 0.5, 50.0, 60.0),
        "wander": rng.uniform(0.03, 0.25, k),  # baseline wander (mV)
        "ectopic": rng.uniform(0.0, 0.02, k),  # premature beats per beat
    }


def _cycle_profile(p: np.ndarray, d: np.ndarray, q_peak: np.ndarray) -> np.ndarray:
    """Heart-rate deviation over one apnea cycle (phase p in [0, 1)), in units of the CVHR
    amplitude: slow bradycardic drift during the event (p < d), a tachycardic surge at the
    arousal peaking at d + q_peak * (1 - d), then recovery to baseline; mean ~ 0."""
    p = np.mod(p, 1.0)
    q = (p - d) / (1.0 - d)
    brady = -0.6 * p / d
    rise = -0.6 + 1.6 * np.clip(q / q_peak, 0.0, 1.0)
    fall = 1.0 - np.clip((q - q_peak) / (1.0 - q_peak), 0.0, 1.0)
    return np.where(p < d, brady, np.where(q < q_peak, rise, fall))


def _breathing_profile(p: np.ndarray, d: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Airflow and effort envelopes over the cycle (1 = normal breathing).

    Airflow (drives respiratory sinus arrhythmia) drops to ``depth`` during the event; effort
    (drives the respiration-linked QRS amplitude modulation and baseline swing) grows during
    an obstructive event (crescendo of efforts against the closed airway, 2.5 -> 6); both are
    up to x2.5 in the hyperpnoea just after the arousal, back to 1 at the end of the cycle."""
    p = np.mod(p, 1.0)
    q = np.clip((p - d) / (1.0 - d), 0.0, 1.0)
    hyper = 1.0 + 1.5 * np.exp(-(((q - 0.25) / 0.2) ** 2))
    airflow = np.where(p < d, depth, hyper)
    effort = np.where(p < d, 2.5 + 3.5 * p / d, hyper)
    return airflow, effort


def synthetic_ecg(
    n: int,
    apnea_fraction: float = 0.5,
    seed: int = 0,
    fs: int = FS,
    window_s: float = 11.0,
    *,
    n_subjects: int = 40,
    effect: float = 1.0,
    noise: float = 1.0,
    normalise: str | None = "maxabs",
    filter_band: tuple[float, float] | None = None,
) -> ECGWindows:
    """``n`` synthetic single-lead ECG windows of ``window_s`` s at ``fs`` Hz (1408 samples by
    default), exactly ``round(n * apnea_fraction)`` of them apneic, shuffled.

    Beats: P, Q, R, S and T Gaussians (per-subject offsets, widths, amplitudes; QT stretches
    with sqrt(RR)), placed on an RR process: per-subject resting rate 55-85 bpm, per-window
    drift (sleep stage), respiratory sinus arrhythmia, beat-to-beat jitter, occasional premature
    beats. Respiration also modulates the QRS amplitude. Added: baseline wander (with a
    respiratory component), mains hum (50/60 Hz), white noise, occasional movement bursts.

    Apnea windows are 11 s snippets, at a random phase, of a cyclic pattern with a 30-60 s
    period: during the event a bradycardic drift, little airflow (RSA fades) and a crescendo of
    breathing efforts against the closed airway (growing respiration-linked QRS-amplitude and
    baseline swings); at the arousal a tachycardic surge, deep breaths (hyperpnoea) and usually
    a movement/EMG burst. The cycle's heart-rate
    deviation averages to ~0, so the window mean heart rate, mean and std do not separate the
    classes; the within-window trends of RR and QRS amplitude do (see docs/ecg_data.md for
    measured baselines). ``effect`` scales the apnea signature (0 = indistinguishable),
    ``noise`` scales all noise sources. ``normalise``: see :func:`normalise_windows`;
    ``filter_band``: optional band-pass (Hz) applied before normalising.

    Subjects are drawn from ``seed`` too, so two seeds give disjoint synthetic subjects
    (train on ``seed=1``, test on ``seed=2`` for a test on unseen subjects).
    ``record``/``subject`` give the synthetic subject of each window; ``info`` holds the
    ground truth per window: ``mean_hr`` (bpm), ``cycle_s`` (0 for normal windows),
    ``phase`` (cycle phase at the window start) and ``n_beats``.
    """
    if n < 1:
        raise ParameterError(f"synthetic_ecg: n must be >= 1, got {n}")
    if not 0.0 <= apnea_fraction <= 1.0:
        raise ParameterError(f"apnea_fraction must be in [0, 1], got {apnea_fraction}")
    if n_subjects < 1:
        raise ParameterError(f"n_subjects must be >= 1, got {n_subjects}")
    if normalise not in _NORMALISATIONS:
        raise ParameterError(f"normalise must be one of {_NORMALISATIONS}, got {normalise!r}")
    rng = np.random.default_rng(seed)
    W = int(round(window_s * fs))
    subj = _subjects(rng, n_subjects)
    n_apnea = int(round(n * apnea_fraction))
    y = np.zeros(n, dtype=np.int64)
    y[:n_apnea] = 1
    y = rng.permutation(y)
    sid = rng.integers(0, n_subjects, n)
    ap = y == 1

    # ---- per-window state ----------------------------------------------------------------
    hr_w = np.clip(subj["hr"][sid] + rng.normal(0.0, 4.0, n), 48.0, 100.0)
    trend = rng.normal(0.0, 2.5, n) * (rng.random(n) < 0.5)  # bpm over the window (normal drift)
    f_r = subj["resp_hz"][sid] * rng.uniform(0.92, 1.08, n)
    phi_r = rng.uniform(0, 2 * np.pi, n)
    cycle = np.where(ap, rng.uniform(30.0, 60.0, n), 0.0)
    phase0 = rng.uniform(0.0, 1.0, n)
    d_ev = rng.uniform(0.45, 0.65, n)  # fraction of the cycle spent in the event
    q_peak = rng.uniform(0.15, 0.35, n)
    cvhr = effect * rng.uniform(12.0, 28.0, n) * ap  # bpm amplitude of the cyclic variation
    depth = rng.uniform(0.0, 0.3, n)  # residual breathing effort during the event
    amp_cyc = effect * rng.uniform(0.05, 0.15, n) * ap  # slow QRS amplitude change over the cycle

    def hr_at(t: np.ndarray, idx: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Instantaneous heart rate (bpm) of windows ``idx`` at times ``t`` (s from start)."""
        base = hr_w[idx] + trend[idx] * (t / window_s - 0.5)
        resp = np.sin(2 * np.pi * f_r[idx] * t + phi_r[idx])
        air = np.ones_like(t)
        cyc = np.zeros_like(t)
        a_idx = ap[idx]
        if np.any(a_idx):
            p = phase0[idx] + t / np.where(cycle[idx] > 0, cycle[idx], 1.0)
            air_a, _ = _breathing_profile(p, d_ev[idx], depth[idx])
            air = np.where(a_idx, np.maximum(1.0 + effect * (air_a - 1.0), 0.0), air)
            cyc = np.where(a_idx, _cycle_profile(p, d_ev[idx], q_peak[idx]), 0.0)
        return base * (1.0 + subj["rsa"][sid[idx]] * air * resp) + cvhr[idx] * cyc

    # ---- beat times: RR process, vectorised over windows ------------------------------------
    margin = 1.0
    t = -margin - rng.uniform(0.0, 60.0 / hr_w)
    beats = [t]
    ect = np.zeros(n, dtype=bool)
    ectopic = [ect]
    comp = np.zeros(n, dtype=bool)
    while True:
        rr = 60.0 / np.clip(hr_at(t), 35.0, 150.0) * (1.0 + rng.normal(0.0, 0.012, n))
        new_ect = rng.random(n) < subj["ectopic"][sid] * noise
        rr = np.where(comp, rr * 1.3, np.where(new_ect, rr * 0.65, rr))
        comp = new_ect & ~comp
        t = t + rr
        if np.all(t > window_s + margin):
            break
        beats.append(t)
        ectopic.append(new_ect)
    bt = np.stack(beats, axis=1)  # (n, B)
    be = np.stack(ectopic, axis=1)
    valid = bt <= window_s + margin

    # ---- beat amplitude: respiration (EDR) and slow cycle modulation ------------------------
    wi, bi = np.nonzero(valid)
    tb = bt[wi, bi]
    resp_b = np.sin(2 * np.pi * f_r[wi] * tb + phi_r[wi])
    eff_b = np.ones_like(tb)
    cyc_b = np.zeros_like(tb)
    apb = ap[wi]
    if apb.any():
        p = phase0[wi] + tb / np.where(cycle[wi] > 0, cycle[wi], 1.0)
        eff_b = np.where(apb, 1.0 + effect * (_breathing_profile(p, d_ev[wi], depth[wi])[1] - 1.0), 1.0)
        cyc_b = np.where(apb, _cycle_profile(p, d_ev[wi], q_peak[wi]), 0.0)
    s = sid[wi]
    edr_b = subj["edr"][s] * eff_b * resp_b
    amp = subj["gain"][s] * (1.0 + 0.6 * np.tanh(edr_b / 0.6)) * (1.0 + amp_cyc[wi] * cyc_b)
    amp *= 1.0 + rng.normal(0.0, 0.02, len(tb))
    rr_local = 60.0 / np.clip(hr_at(tb, wi), 35.0, 150.0)

    # ---- render beats: per-beat templates scattered into the windows ------------------------
    lo, hi = -int(0.42 * fs), int(0.80 * fs)
    L = hi - lo
    ext0 = int(np.ceil(margin * fs)) + L  # extended buffer offset
    ext_len = W + 2 * ext0
    anchor = np.floor(tb * fs).astype(np.int64)
    grid = (anchor[:, None] + np.arange(lo, hi)[None, :]) / fs - tb[:, None]  # s from R peak
    offs = subj["offsets"][s].copy()
    offs[:, 4] *= np.sqrt(np.clip(rr_local, 0.4, 1.5)) / np.sqrt(0.85)  # QT ~ sqrt(RR)
    widths = subj["widths"][s].copy()
    amps = subj["amps"][s].copy()
    eb = be[wi, bi]
    amps[eb, 0] = 0.0  # premature beats: no P wave, wider and taller QRS
    widths[eb, 1:4] *= 1.8
    amps[eb, 2] *= 1.2
    tmpl = np.zeros((len(tb), L))
    for k in range(5):
        tmpl += amps[:, k, None] * np.exp(-0.5 * ((grid - offs[:, k, None]) / widths[:, k, None]) ** 2)
    tmpl *= amp[:, None]
    idx = wi[:, None] * ext_len + (anchor[:, None] + np.arange(lo, hi)[None, :] + ext0)
    ok = (idx >= wi[:, None] * ext_len) & (idx < (wi[:, None] + 1) * ext_len)
    buf = np.bincount(idx[ok], weights=tmpl[ok], minlength=n * ext_len).reshape(n, ext_len)
    x = buf[:, ext0:ext0 + W]

    # ---- baseline wander, movement bursts, hum, white noise ---------------------------------
    tt = np.arange(W) / fs
    wander_amp = subj["wander"][sid] * noise
    for _ in range(2):
        f = rng.uniform(0.03, 0.4, n)
        x += (wander_amp * rng.uniform(0.3, 1.0, n))[:, None] * np.sin(
            2 * np.pi * f[:, None] * tt + rng.uniform(0, 2 * np.pi, n)[:, None])
    resp_t = np.sin(2 * np.pi * f_r[:, None] * tt + phi_r[:, None])
    eff_t = np.ones((n, W))
    if ap.any():
        p_t = phase0[ap, None] + tt[None, :] / cycle[ap, None]
        eff_t[ap] = 1.0 + effect * (_breathing_profile(p_t, d_ev[ap, None], depth[ap, None])[1] - 1.0)
    x += (0.3 * wander_amp)[:, None] * np.sqrt(eff_t) * resp_t
    # movement / EMG burst at the arousal (apnea) or at random (10% of normal windows)
    t_ar = np.where(ap, np.mod((d_ev - phase0) * np.where(ap, cycle, 1.0), np.where(ap, cycle, 1.0)),
                    rng.uniform(0.0, window_s, n))
    has_burst = np.where(ap, (t_ar < window_s) & (rng.random(n) < 0.8 * min(effect, 1.0)),
                         rng.random(n) < 0.1)
    burst_len = rng.uniform(1.0, 3.0, n)
    env = np.exp(-0.5 * ((tt[None, :] - t_ar[:, None] - burst_len[:, None] / 2) / (burst_len[:, None] / 2.5)) ** 2)
    emg = rng.normal(0.0, 1.0, (n, W))
    x += (has_burst * rng.uniform(0.02, 0.08, n) * noise)[:, None] * env * emg
    x += (has_burst * rng.normal(0.0, 0.15, n) * noise)[:, None] * env  # electrode shift
    x += (subj["hum"][sid] * noise)[:, None] * np.sin(
        2 * np.pi * subj["hum_hz"][sid][:, None] * tt + rng.uniform(0, 2 * np.pi, n)[:, None])
    x += (subj["noise"][sid] * noise)[:, None] * rng.normal(0.0, 1.0, (n, W))

    if filter_band is not None:
        x = bandpass(x, fs, *filter_band)
    in_win = valid & (bt >= 0) & (bt < window_s)
    n_beats = in_win.sum(axis=1)
    mean_hr = hr_at(np.full(n, window_s / 2))
    xs = normalise_windows(x, normalise) if normalise else x.astype(np.float32)
    return ECGWindows(
        x=xs,
        y=y,
        fs=int(fs),
        record=sid,
        record_names=[f"synthetic-{k:02d}" for k in range(n_subjects)],
        subject=sid,
        start=np.zeros(n),
        source="synthetic",
        normalisation=normalise,
        info={"mean_hr": mean_hr, "cycle_s": cycle, "phase": np.where(ap, phase0, 0.0),
              "n_beats": n_beats},
        attrs={"seed": seed, "apnea_fraction": apnea_fraction, "n_subjects": n_subjects,
               "effect": effect, "noise": noise, "window_s": window_s,
               "filter_band": filter_band},
    )


# --------------------------------------------------------------------------------------------
# EDF (UCDDB .rec)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# UCDDB respiratory events
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Apnea-ECG (WFDB)
# --------------------------------------------------------------------------------------------


def read_apnea_ecg_record(base: str | Path, *, subject: int = 0, channel: int | str = 0) -> ECGRecord:
    """One PhysioNet Apnea-ECG record ``base`` (path without extension: ``DIR/a01``): the ECG
    from ``a01.hea/.dat`` (100 Hz) and per-minute labels from ``a01.apn`` (symbol 'A' apnea /
    'N' normal at the start of each minute) expanded to per-second labels; seconds after the
    last annotated minute are unknown (-1)."""
    from .._optional import require

    wfdb = require("wfdb", extra="ecg", feature="reading Apnea-ECG (WFDB) records")

    from .wfdb_safe import check_wfdb_header, read_wfdb_annotations

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


# --------------------------------------------------------------------------------------------
# directory loaders
# --------------------------------------------------------------------------------------------


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
