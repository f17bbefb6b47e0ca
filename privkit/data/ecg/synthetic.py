"""Synthetic ECG with an apnea pattern (:func:`synthetic_ecg`): no real data needed."""

from __future__ import annotations

import numpy as np

from ...errors import ParameterError
from .windows import _NORMALISATIONS, FS, ECGWindows, bandpass, normalise_windows

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
