"""ECG windows: the constants, the containers (:class:`ECGWindows`, :class:`ECGRecord`,
:class:`RespEvent`) and the signal helpers that cut a record into labelled windows.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from ...errors import DataFormatError, ParameterError, ShapeError

FS = 128  #: target sampling rate (Hz)
WINDOW = 1408  #: samples per window (11 s at 128 Hz)
PADDED = 2048  #: padded window length used for encryption
#: UCDDB respiratory event types counted as apnea (prefix match, case-insensitive)
DEFAULT_EVENT_TYPES: tuple[str, ...] = ("APNEA", "HYP")

_NORMALISATIONS = ("maxabs", "zscore", None)
_LABEL_RULES = ("majority", "any", "center")


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
