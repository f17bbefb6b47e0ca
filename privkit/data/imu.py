"""IMU data: containers, windowing, normalisation, splits, synthetic IMU; the MotionSense and LaRa
readers are in :mod:`privkit.data.imu_readers` (re-exported here).

Everything ends up as an :class:`IMUDataset` of windows shaped ``(N, T, C)`` (time first, then
channels), with per-window activity, subject and recording labels, and ``device_channels`` telling
how many consecutive channels each body-worn device contributes (the ReID/HAR networks have one
branch per device).

>>> ds = synthetic_imu(n_subjects=3, n_activities=2, trials=2, seconds=6, window=50, step=25, seed=0)
>>> ds.windows.shape[1:], ds.device_channels, ds.n_subjects, ds.n_activities
((50, 12), (6, 6), 3, 2)
>>> train, test = split_recordings(ds, test_fraction=0.5, seed=0)
>>> sorted(set(train.subject)) == sorted(set(test.subject)) == [0, 1, 2]
True
>>> norm = MinMaxNormaliser.fit(train.windows)
>>> x = norm.transform(train.windows)
>>> bool(x.min() >= 0.0 and x.max() <= 1.0)
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import DataFormatError, ParameterError

__all__ = [
    "LARA_CLASSES",
    "LARA_COLUMNS",
    "MOTIONSENSE_ACTIVITIES",
    "MOTIONSENSE_COLUMNS",
    "SYNTHETIC_ACTIVITIES",
    "IMUDataset",
    "MinMaxNormaliser",
    "Recording",
    "load_imu",
    "make_windows",
    "read_lara",
    "read_motionsense",
    "split_recordings",
    "split_subjects",
    "synthetic_imu",
]


# --------------------------------------------------------------------------------------------
# containers
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Recording:
    """One continuous recording: ``data`` (T, C), a label per sample, one subject."""

    data: np.ndarray
    labels: np.ndarray
    subject: int
    name: str


@dataclasses.dataclass
class IMUDataset:
    """Windows ``(N, T, C)`` with activity / subject / recording labels per window."""

    windows: np.ndarray
    activity: np.ndarray
    subject: np.ndarray
    recording: np.ndarray
    recording_names: list[str]
    channel_names: list[str]
    device_channels: tuple[int, ...]
    activity_names: list[str]
    sample_rate: float
    subject_info: dict[int, dict[str, float]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.windows)
        for name in ("activity", "subject", "recording"):
            if len(getattr(self, name)) != n:
                raise ParameterError(
                    f"IMUDataset: {name} has {len(getattr(self, name))} labels for {n} windows"
                )
        if self.windows.ndim != 3:
            raise ParameterError(f"IMUDataset: windows must be (N, T, C), got {self.windows.shape}")
        if sum(self.device_channels) != self.windows.shape[2]:
            raise ParameterError(
                f"IMUDataset: device_channels {self.device_channels} sum to "
                f"{sum(self.device_channels)}, but windows have {self.windows.shape[2]} channels"
            )

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def n_subjects(self) -> int:
        return len(np.unique(self.subject))

    @property
    def n_activities(self) -> int:
        return len(np.unique(self.activity))

    def subset(self, index: np.ndarray | Sequence[int]) -> IMUDataset:
        """The windows at ``index`` (boolean mask or integer indices)."""
        idx = np.asarray(index)
        return dataclasses.replace(
            self,
            windows=self.windows[idx],
            activity=self.activity[idx],
            subject=self.subject[idx],
            recording=self.recording[idx],
        )

    def with_windows(self, windows: np.ndarray) -> IMUDataset:
        """The same labels with other windows (e.g. normalised or anonymised ones)."""
        return dataclasses.replace(self, windows=np.asarray(windows, dtype=np.float32))


@dataclasses.dataclass
class MinMaxNormaliser:
    """Per-channel scaling to [0, 1], fitted on training windows only."""

    lo: np.ndarray
    hi: np.ndarray
    clip: bool = True

    @classmethod
    def fit(cls, windows: np.ndarray, clip: bool = True) -> MinMaxNormaliser:
        w = np.asarray(windows, dtype=np.float64)
        if w.ndim != 3 or len(w) == 0:
            raise ParameterError(f"MinMaxNormaliser.fit needs windows (N, T, C), got {w.shape}")
        lo = w.min(axis=(0, 1))
        hi = w.max(axis=(0, 1))
        hi = np.where(hi - lo < 1e-8, lo + 1.0, hi)  # constant channels map to 0
        return cls(lo=lo.astype(np.float32), hi=hi.astype(np.float32), clip=clip)

    def transform(self, windows: np.ndarray) -> np.ndarray:
        x = (np.asarray(windows, dtype=np.float32) - self.lo) / (self.hi - self.lo)
        return np.clip(x, 0.0, 1.0) if self.clip else x

    def inverse(self, windows: np.ndarray) -> np.ndarray:
        return np.asarray(windows, dtype=np.float32) * (self.hi - self.lo) + self.lo

    def to_dict(self) -> dict[str, Any]:
        return {"lo": self.lo.tolist(), "hi": self.hi.tolist(), "clip": self.clip}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MinMaxNormaliser:
        return cls(lo=np.asarray(d["lo"], np.float32), hi=np.asarray(d["hi"], np.float32),
                   clip=bool(d["clip"]))


# --------------------------------------------------------------------------------------------
# windowing and splits
# --------------------------------------------------------------------------------------------


def make_windows(
    recordings: Iterable[Recording],
    window: int,
    step: int,
    *,
    channel_names: list[str],
    device_channels: tuple[int, ...],
    activity_names: list[str],
    sample_rate: float,
    drop_labels: Iterable[int] = (),
    subject_info: dict[int, dict[str, float]] | None = None,
) -> IMUDataset:
    """Cut recordings into windows of ``window`` samples every ``step``; label = majority label.

    Windows whose majority label is in ``drop_labels`` are dropped; recordings shorter than one
    window contribute nothing.
    """
    if window < 2 or step < 1:
        raise ParameterError(f"window must be >= 2 and step >= 1, got window={window}, step={step}")
    drop = {int(d) for d in drop_labels}
    n_labels = max(len(activity_names), 1)
    xs, acts, subs, recs, names = [], [], [], [], []
    for rec in recordings:
        data = np.asarray(rec.data, dtype=np.float32)
        if len(data) < window:
            continue
        starts = np.arange(0, len(data) - window + 1, step)
        win = np.lib.stride_tricks.sliding_window_view(data, window, axis=0)[starts]
        win = np.ascontiguousarray(np.swapaxes(win, 1, 2))  # (n, T, C)
        lab = np.lib.stride_tricks.sliding_window_view(np.asarray(rec.labels), window)[starts]
        counts = np.stack([(lab == k).sum(axis=1) for k in range(n_labels)], axis=1)
        major = counts.argmax(axis=1)
        keep = np.array([m not in drop for m in major], dtype=bool)
        if not keep.any():
            continue
        names.append(rec.name)
        xs.append(win[keep])
        acts.append(major[keep])
        subs.append(np.full(int(keep.sum()), rec.subject))
        recs.append(np.full(int(keep.sum()), len(names) - 1))
    if not xs:
        raise DataFormatError(
            f"no windows of {window} samples could be cut (recordings too short or all dropped)"
        )
    return IMUDataset(
        windows=np.concatenate(xs).astype(np.float32),
        activity=np.concatenate(acts).astype(np.int64),
        subject=np.concatenate(subs).astype(np.int64),
        recording=np.concatenate(recs).astype(np.int64),
        recording_names=names,
        channel_names=list(channel_names),
        device_channels=tuple(int(c) for c in device_channels),
        activity_names=list(activity_names),
        sample_rate=float(sample_rate),
        subject_info=dict(subject_info or {}),
    )


def split_recordings(
    ds: IMUDataset, test_fraction: float = 0.25, seed: int = 0
) -> tuple[IMUDataset, IMUDataset]:
    """Recording-wise split: whole recordings go to train or test, never both.

    Recordings are grouped by (subject, majority activity); in each group with two or more
    recordings about ``test_fraction`` of them (at least one, never all) go to the test set, so
    every subject appears on both sides (what re-identification needs).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ParameterError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    groups: dict[tuple[int, int], list[int]] = {}
    for r in np.unique(ds.recording):
        m = ds.recording == r
        act = int(np.bincount(ds.activity[m]).argmax())
        groups.setdefault((int(ds.subject[m][0]), act), []).append(int(r))
    test_recs: set[int] = set()
    for key in sorted(groups):
        recs = groups[key]
        if len(recs) < 2:
            continue
        n_test = min(len(recs) - 1, max(1, round(test_fraction * len(recs))))
        test_recs.update(rng.permutation(recs)[:n_test].tolist())
    is_test = np.isin(ds.recording, list(test_recs))
    if not is_test.any() or is_test.all():
        raise DataFormatError(
            "recording-wise split impossible: each (subject, activity) needs at least two "
            "recordings; use more trials or split_subjects"
        )
    return ds.subset(~is_test), ds.subset(is_test)


def split_subjects(ds: IMUDataset, test_subjects: Iterable[int]) -> tuple[IMUDataset, IMUDataset]:
    """Subject-wise split (for activity recognition on unseen people)."""
    test = np.isin(ds.subject, list(test_subjects))
    if not test.any() or test.all():
        raise ParameterError("split_subjects: the test subjects must be a non-empty proper subset")
    return ds.subset(~test), ds.subset(test)


# --------------------------------------------------------------------------------------------
# synthetic IMU with genuine subject signatures
# --------------------------------------------------------------------------------------------

#: name -> (kind, cadence in Hz, amplitude in g, gravity direction for static postures)
SYNTHETIC_ACTIVITIES: dict[str, dict[str, Any]] = {
    "walking": {"kind": "periodic", "freq": 1.8, "amp": 0.45},
    "sitting": {"kind": "static", "gravity": (0.15, 0.95, 0.25)},
    "jogging": {"kind": "periodic", "freq": 2.7, "amp": 1.0},
    "standing": {"kind": "static", "gravity": (0.95, 0.1, 0.2)},
    "upstairs": {"kind": "periodic", "freq": 1.5, "amp": 0.6, "lift": 0.25},
    "downstairs": {"kind": "periodic", "freq": 2.0, "amp": 0.7, "lift": -0.25},
    "lying": {"kind": "static", "gravity": (0.1, 0.2, 0.97)},
}
_N_HARM = 4


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    ang = np.deg2rad(max_deg) * rng.normal()
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(ang) * k + (1 - np.cos(ang)) * (k @ k)


def _activity_shape(name: str) -> dict[str, np.ndarray]:
    """Fixed per-activity harmonic template (the same for everyone; seeded by the name)."""
    rng = np.random.default_rng(sum(map(ord, name)) * 7919)
    return {
        "acc_w": rng.uniform(0.3, 1.0, size=(3, _N_HARM)) * (0.6 ** np.arange(_N_HARM)),
        "acc_ph": rng.uniform(0, 2 * np.pi, size=(3, _N_HARM)),
        "gyr_w": rng.uniform(0.3, 1.0, size=(3, _N_HARM)) * (0.5 ** np.arange(_N_HARM)),
        "gyr_ph": rng.uniform(0, 2 * np.pi, size=(3, _N_HARM)),
    }


def _subject_signature(rng: np.random.Generator, n_devices: int, s: float) -> dict[str, Any]:
    return {
        "cadence": float(np.clip(1.0 + 0.12 * s * rng.normal(), 0.7, 1.4)),
        "amp": float(np.exp(0.25 * s * rng.normal())),
        "harm_gain": np.exp(0.5 * s * rng.normal(size=(3, _N_HARM))),
        "harm_phase": 0.8 * s * rng.normal(size=(3, _N_HARM)),
        "asym_amp": float(0.2 * s * rng.normal()),
        "asym_phase": float(0.4 * s * rng.normal()),
        "bias": 0.12 * s * rng.normal(size=(n_devices, 6)),
        "rot": [_rotation(rng, 15.0 * s) for _ in range(n_devices)],
        "noise": float(0.02 * np.exp(0.4 * s * rng.normal())),
        "sway": float(0.03 * np.exp(0.5 * s * rng.normal())),
    }


def _synth_recording(
    act: str, sig: dict[str, Any], n_devices: int, n: int, rate: float, rng: np.random.Generator
) -> np.ndarray:
    spec = SYNTHETIC_ACTIVITIES[act]
    t = np.arange(n) / rate
    out = np.empty((n, 6 * n_devices), dtype=np.float64)
    if spec["kind"] == "static":
        g = np.asarray(spec["gravity"], dtype=np.float64)
        g = g / np.linalg.norm(g)
    else:
        shape = _activity_shape(act)
        f = spec["freq"] * sig["cadence"] * (1.0 + 0.02 * rng.normal())
        amp = spec["amp"] * sig["amp"] * (1.0 + 0.05 * rng.normal())
        phase0 = rng.uniform(0, 2 * np.pi)
        h = np.arange(1, _N_HARM + 1)
    for d in range(n_devices):
        if spec["kind"] == "static":
            sway = sig["sway"] * np.cumsum(rng.normal(size=(n, 3)), axis=0) / np.sqrt(n)
            acc = g[None, :] + sway
            gyr = 0.05 * sig["sway"] * rng.normal(size=(n, 3))
        else:
            # left/right devices are half a gait cycle apart; the subject adds an asymmetry
            side = d % 2
            dphi = side * (np.pi + sig["asym_phase"])
            damp = 1.0 + side * sig["asym_amp"]
            ph = 2 * np.pi * f * t[:, None, None] * h[None, None, :] + phase0 + dphi
            aw = shape["acc_w"] * sig["harm_gain"]
            gw = shape["gyr_w"] * sig["harm_gain"]
            acc = (aw[None] * np.sin(ph + shape["acc_ph"] + sig["harm_phase"])).sum(-1)
            gyr = (gw[None] * np.sin(ph + shape["gyr_ph"] + sig["harm_phase"])).sum(-1)
            acc = amp * damp * acc + np.array([1.0, 0.0, spec.get("lift", 0.0)])[None, :]
            gyr = 2.0 * amp * damp * gyr
        rot = sig["rot"][d]
        acc = acc @ rot.T + sig["bias"][d, :3]
        gyr = gyr @ rot.T + sig["bias"][d, 3:]
        block = np.concatenate([acc, gyr], axis=1)
        out[:, 6 * d: 6 * d + 6] = block + sig["noise"] * rng.normal(size=block.shape)
    return out


def synthetic_imu(
    n_subjects: int = 8,
    n_activities: int = 4,
    *,
    trials: int = 3,
    seconds: float = 20.0,
    sample_rate: float = 50.0,
    n_devices: int = 2,
    window: int = 64,
    step: int = 32,
    identity_strength: float = 1.0,
    seed: int = 0,
) -> IMUDataset:
    """Synthetic body-worn IMU data whose subjects are genuinely re-identifiable.

    Activities (the first ``n_activities`` of ``SYNTHETIC_ACTIVITIES``: walking, sitting,
    jogging, standing, upstairs, downstairs, lying) are static postures (gravity direction plus
    sway) or periodic gaits (cadence, harmonic template per axis). Each subject has a signature
    applied to every activity: cadence and amplitude factors, harmonic gains and phases,
    left/right asymmetry (odd devices are the right side), a per-channel sensor bias, a mounting
    rotation per device and a noise level. ``identity_strength`` scales every signature term
    (0: everyone identical, only noise distinguishes them). ``n_devices`` devices of 6 channels
    (accelerometer xyz, gyroscope xyz); ``trials`` recordings of ``seconds`` per subject and
    activity, windowed with ``window``/``step``.
    """
    names = list(SYNTHETIC_ACTIVITIES)
    if not 1 <= n_activities <= len(names):
        raise ParameterError(f"n_activities must be in 1..{len(names)}, got {n_activities}")
    if n_subjects < 1 or n_devices < 1 or trials < 1:
        raise ParameterError("n_subjects, n_devices and trials must be >= 1")
    if identity_strength < 0:
        raise ParameterError(f"identity_strength must be >= 0, got {identity_strength}")
    acts = names[:n_activities]
    rng = np.random.default_rng(seed)
    sigs = [_subject_signature(rng, n_devices, identity_strength) for _ in range(n_subjects)]
    n = round(seconds * sample_rate)
    recs = []
    for s in range(n_subjects):
        for a, act in enumerate(acts):
            for k in range(trials):
                data = _synth_recording(act, sigs[s], n_devices, n, sample_rate, rng)
                recs.append(Recording(data.astype(np.float32), np.full(n, a), s,
                                      f"sub{s:02d}_{act}_{k}"))
    chans = [f"D{d}_{kind}{ax}" for d in range(n_devices) for kind in ("Acc", "Gyr")
             for ax in "XYZ"]
    return make_windows(recs, window, step, channel_names=chans,
                        device_channels=(6,) * n_devices, activity_names=acts,
                        sample_rate=sample_rate)


def load_imu(spec: str, *, window: int | None = None, step: int | None = None,
             seed: int = 0, **synthetic_kwargs: Any) -> IMUDataset:
    """``"synthetic"`` | ``"motionsense:DIR"`` | ``"lara:DIR"`` | ``"watch"`` -> an
    :class:`IMUDataset` (``"watch"``: the real smartwatch data of the pinned seglearn package,
    :func:`privkit.data.watch.read_seglearn_watch`; needs ``privkit[realdata]``)."""
    from .imu_readers import read_lara, read_motionsense

    kind, _, path = spec.partition(":")
    kw = {k: v for k, v in (("window", window), ("step", step)) if v is not None}
    if kind == "synthetic":
        return synthetic_imu(seed=seed, **kw, **synthetic_kwargs)
    if kind == "motionsense" and path:
        return read_motionsense(path, **kw)
    if kind == "lara" and path:
        return read_lara(path, **kw)
    if kind == "watch" and not path:
        from .watch import read_seglearn_watch

        return read_seglearn_watch(**kw)
    raise ParameterError(f"unknown data spec {spec!r}; use 'synthetic', 'motionsense:DIR', "
                         "'lara:DIR' or 'watch'")


_READERS = ("LARA_CLASSES", "LARA_COLUMNS", "LARA_DEVICES", "MOTIONSENSE_ACTIVITIES",
            "MOTIONSENSE_COLUMNS", "read_lara", "read_motionsense")


def __getattr__(name: str) -> Any:
    # the file readers live in privkit.data.imu_readers (which imports this module)
    if name in _READERS:
        from . import imu_readers

        return getattr(imu_readers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
