"""Hand-made ECG features (R-peak intervals, amplitudes): baselines and separability checks."""

from __future__ import annotations

import numpy as np

from .windows import FS

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
