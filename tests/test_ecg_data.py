"""ECG data: synthetic generator, windowing helpers, UCDDB (EDF + respevt) and Apnea-ECG (WFDB)
readers. The reader tests write tiny files in the real formats and read them back."""

from __future__ import annotations

import datetime as dt
import shutil
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privkit.data.ecg import (
    ECG_FEATURE_NAMES,
    FS,
    WINDOW,
    ECGWindows,
    ecg_features,
    load_apnea_ecg,
    load_ecg_dataset,
    load_ucddb,
    make_windows,
    normalise_windows,
    pad_windows,
    parse_respevt,
    read_apnea_ecg_record,
    read_edf_channel,
    read_ucddb_record,
    resample_signal,
    synthetic_ecg,
    window_labels,
)
from privkit.errors import DataFormatError, ParameterError, ShapeError

# wfdb's own pandas calls warn under recent pandas; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword:Warning")

# --------------------------------------------------------------------------------------------
# synthetic ECG
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth():
    return synthetic_ecg(600, apnea_fraction=0.5, seed=3)


def test_synthetic_shapes_and_range(synth):
    ds = synth
    assert isinstance(ds, ECGWindows)
    assert ds.x.shape == (600, WINDOW) == (600, 1408) and ds.x.dtype == np.float32
    assert ds.fs == FS == 128 and ds.window == 1408
    assert ds.y.dtype == np.int64 and set(np.unique(ds.y)) == {0, 1}
    assert np.isfinite(ds.x).all() and np.abs(ds.x).max() <= 1.0 + 1e-6
    assert ds.normalisation == "maxabs" and ds.source == "synthetic"
    assert len(ds.record) == len(ds.subject) == len(ds.start) == 600
    assert ds.record.max() < len(ds.record_names)
    assert set(ds.info) >= {"mean_hr", "cycle_s", "phase", "n_beats"}
    # heart rates in a physiological range, 30-60 s cycles only for apnea windows
    assert 30 < ds.info["mean_hr"].min() and ds.info["mean_hr"].max() < 150
    assert np.all((ds.info["cycle_s"][ds.y == 1] >= 30) & (ds.info["cycle_s"][ds.y == 1] <= 60))
    assert np.all(ds.info["cycle_s"][ds.y == 0] == 0)
    assert 6 <= ds.info["n_beats"].min() and ds.info["n_beats"].max() <= 22


@pytest.mark.parametrize("n,frac", [(10, 0.5), (33, 0.3), (7, 0.0), (5, 1.0)])
def test_synthetic_label_balance(n, frac):
    ds = synthetic_ecg(n, apnea_fraction=frac, seed=1)
    assert len(ds) == n and int(ds.y.sum()) == int(round(n * frac))


def test_synthetic_deterministic_per_seed():
    a = synthetic_ecg(20, seed=7)
    b = synthetic_ecg(20, seed=7)
    c = synthetic_ecg(20, seed=8)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.subject, b.subject)
    assert not np.array_equal(a.x, c.x)


def test_synthetic_options():
    raw = synthetic_ecg(8, seed=0, normalise=None)
    assert raw.normalisation is None and np.abs(raw.x).max() > 0.3  # mV scale, R ~ 0.6-2.7 mV
    z = synthetic_ecg(8, seed=0, normalise="zscore")
    np.testing.assert_allclose(z.x.std(axis=1), 0.25, rtol=1e-3)
    short = synthetic_ecg(4, seed=0, fs=100, window_s=5)
    assert short.x.shape == (4, 500) and short.fs == 100
    filt = synthetic_ecg(4, seed=0, filter_band=(0.5, 40.0))
    assert filt.x.shape == (4, 1408)
    with pytest.raises(ParameterError):
        synthetic_ecg(0)
    with pytest.raises(ParameterError):
        synthetic_ecg(4, apnea_fraction=1.5)
    with pytest.raises(ParameterError):
        synthetic_ecg(4, normalise="minmax")


def _cv_accuracy(features: np.ndarray, y: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    return float(cross_val_score(clf, features, y, cv=cv).mean())


def test_synthetic_not_trivially_separable(synth):
    """Trivial single statistics stay near chance; combining RR/amplitude-trend features helps."""
    feats = ecg_features(synth.x, synth.fs)
    assert feats.shape == (600, len(ECG_FEATURE_NAMES))
    col = {name: feats[:, i : i + 1] for i, name in enumerate(ECG_FEATURE_NAMES)}
    trivial = {name: _cv_accuracy(col[name], synth.y) for name in ("mean", "std", "mean_rr")}
    trivial["true_mean_hr"] = _cv_accuracy(synth.info["mean_hr"][:, None], synth.y)
    print("single-statistic accuracies:", trivial)
    assert max(trivial.values()) < 0.64, trivial
    combined = _cv_accuracy(feats, synth.y)
    print("all-feature accuracy:", combined)
    assert combined > max(trivial.values()) + 0.08, (combined, trivial)


def test_synthetic_effect_zero_is_indistinguishable():
    ds = synthetic_ecg(400, seed=5, effect=0.0)
    assert ds.info["cycle_s"][ds.y == 1].min() >= 30  # still labelled, but no signature
    assert _cv_accuracy(ecg_features(ds.x, ds.fs), ds.y) < 0.62


# --------------------------------------------------------------------------------------------
# helpers: padding, normalisation, resampling, labels
# --------------------------------------------------------------------------------------------


def test_pad_windows():
    x = np.arange(6, dtype=np.float64).reshape(2, 3)
    p = pad_windows(x, to=5)
    assert p.shape == (2, 5) and p.dtype == np.float32
    np.testing.assert_array_equal(p[:, :3], x)
    assert not p[:, 3:].any()
    assert pad_windows(np.ones(1408)).shape == (2048,)
    with pytest.raises(ShapeError):
        pad_windows(np.ones((2, 9)), to=8)


def test_normalise_windows():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (5, 100))
    m = normalise_windows(x)
    assert np.abs(m).max() <= 1.0 and np.isclose(np.abs(m).max(axis=1), 1.0).all()
    z = normalise_windows(x, "zscore", scale=4.0)
    np.testing.assert_allclose(z.mean(axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(z.std(axis=1), 0.25, rtol=1e-5)
    np.testing.assert_array_equal(normalise_windows(x, None), x.astype(np.float32))
    assert not normalise_windows(np.full((2, 10), 4.0)).any()  # flat windows -> 0
    assert normalise_windows(x[0]).shape == (100,)
    with pytest.raises(ParameterError):
        normalise_windows(x, "l2")


def test_resample_100_to_128():
    fs_in, f0 = 100, 3.0
    t = np.arange(1000) / fs_in
    y = resample_signal(np.sin(2 * np.pi * f0 * t), fs_in, 128)
    assert len(y) == 1280
    t2 = np.arange(len(y)) / 128
    inner = slice(100, -100)
    np.testing.assert_allclose(y[inner], np.sin(2 * np.pi * f0 * t2)[inner], atol=2e-3)
    np.testing.assert_array_equal(resample_signal(y, 128, 128), y)


def test_window_labels_rules():
    lab = np.zeros(40, dtype=np.int8)
    lab[10:16] = 1  # 6 apneic seconds
    lab[35:] = -1
    fs, w = 4, 44  # 11 s windows at 4 Hz
    starts = np.array([0, 20, 24, 40, 60, 80]) * 1  # 0 s, 5 s, 6 s, 10 s, 15 s, 20 s
    assert window_labels(lab, fs, starts, w, "majority").tolist() == [0, 1, 1, 1, 0, 0]
    assert window_labels(lab, fs, starts, w, "any").tolist() == [1, 1, 1, 1, 1, 0]
    assert window_labels(lab, fs, starts, w, "any", min_overlap_s=3).tolist() == [0, 1, 1, 1, 0, 0]
    assert window_labels(lab, fs, starts, w, "center").tolist() == [0, 1, 1, 1, 0, 0]
    # a short window: majority needs more than half of its own length
    assert window_labels(lab, fs, np.array([36]), 16, "majority").tolist() == [1]  # 9-13 s: 3 of 4 s
    # windows reaching into unknown seconds (35 s on) or past the end are dropped as -1
    assert window_labels(lab, fs, np.array([80, 100, 120]), w, "majority").tolist() == [0, -1, -1]
    with pytest.raises(ParameterError):
        window_labels(lab, fs, starts, w, "mode")


def test_windows_container_ops(synth):
    tr, te = synth.split(0.25, by="subject", seed=0)
    assert len(tr) + len(te) == len(synth)
    assert not set(tr.subject) & set(te.subject)
    _, te2 = synth.split(0.25, by="random", seed=0)
    assert abs(te2.apnea_fraction - 0.5) < 0.02 and len(te2) == 150
    sub = synth.subset(np.arange(5))
    assert len(sub) == 5 and len(sub.info["mean_hr"]) == 5
    both = ECGWindows.concatenate([sub, sub])
    assert len(both) == 10 and len(both.record_names) == 2 * len(synth.record_names)
    assert synth.counts() == {"normal": 300, "apnea": 300}
    assert synth.padded().shape == (600, 2048)
    x, y = sub.tensors(pad_to=2048)
    assert tuple(x.shape) == (5, 1, 2048) and tuple(y.shape) == (5,)
    with pytest.raises(ParameterError):
        ECGWindows(x=np.zeros((2, 4)), y=[0, 2], fs=128, record=[0, 0], record_names=["r"],
                   subject=[0, 0], start=[0, 0], source="t")


# --------------------------------------------------------------------------------------------
# Apnea-ECG (WFDB .hea/.dat + .apn)
# --------------------------------------------------------------------------------------------


def _write_apnea_ecg(directory, name="a01", minutes=3, symbols=("N", "A", "N")):
    import wfdb

    fs = 100
    t = np.arange(minutes * 60 * fs) / fs
    ecg = 0.8 * np.sin(2 * np.pi * 1.2 * t) + 0.1 * np.sin(2 * np.pi * 7.0 * t)
    wfdb.wrsamp(name, fs=fs, units=["mV"], sig_name=["ECG"], p_signal=ecg[:, None],
                fmt=["16"], adc_gain=[200.0], baseline=[0], write_dir=str(directory))
    samples = np.arange(len(symbols)) * 60 * fs
    wfdb.wrann(name, "apn", samples, symbol=list(symbols), fs=fs, write_dir=str(directory))
    return ecg


def test_apnea_ecg_roundtrip(tmp_path):
    ecg = _write_apnea_ecg(tmp_path)
    rec = read_apnea_ecg_record(tmp_path / "a01")
    assert rec.fs == 100 and len(rec.signal) == len(ecg)
    np.testing.assert_allclose(rec.signal, ecg, atol=1 / 200 + 1e-9)  # 16-bit, gain 200/mV
    expected = np.repeat([0, 1, 0], 60)
    np.testing.assert_array_equal(rec.second_labels, expected)

    ds = load_apnea_ecg(tmp_path, filter_band=None, normalise=None)
    assert ds.source == "apnea-ecg" and ds.fs == 128 and ds.x.shape[1] == 1408
    assert len(ds) == (180 * 128 - 1408) // 1408 + 1  # 16 windows of 11 s
    # majority label: windows mostly inside minute 1 (60-120 s) are apnea
    centre = ds.start + 5.5
    np.testing.assert_array_equal(ds.y, ((centre >= 60) & (centre < 120)).astype(int))
    # samples: the windows are slices of the 128 Hz resampled signal
    up = resample_signal(rec.signal, 100, 128)
    k = 3
    s0 = int(round(ds.start[k] * 128))
    np.testing.assert_allclose(ds.x[k], up[s0 : s0 + 1408], atol=1e-5)

    same = load_ecg_dataset(f"apnea-ecg:{tmp_path}", filter_band=None, normalise=None)
    np.testing.assert_array_equal(same.x, ds.x)
    step = load_apnea_ecg(tmp_path, step=704, label_rule="any")
    assert len(step) == (180 * 128 - 1408) // 704 + 1 and np.abs(step.x).max() <= 1.0


def test_apnea_ecg_unlabelled_tail_dropped(tmp_path):
    _write_apnea_ecg(tmp_path, minutes=3, symbols=("A", "N"))  # third minute has no label
    rec = read_apnea_ecg_record(tmp_path / "a01")
    assert (rec.second_labels[120:] == -1).all() and rec.second_labels[:60].all()
    ds = load_apnea_ecg(tmp_path)
    assert (ds.start + 11 <= 120 + 1e-9).all()
    assert ds.attrs["dropped_unlabelled_windows"] > 0


def test_apnea_ecg_truncated_dat(tmp_path):
    _write_apnea_ecg(tmp_path)
    dat = tmp_path / "a01.dat"
    dat.write_bytes(dat.read_bytes()[:5000])
    with pytest.raises(DataFormatError, match="a01"):
        read_apnea_ecg_record(tmp_path / "a01")


def test_apnea_ecg_garbled_annotations(tmp_path):
    _write_apnea_ecg(tmp_path)
    (tmp_path / "a01.apn").write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 37, dtype=np.uint8)))
    with pytest.raises(DataFormatError, match=r"a01\.apn"):
        read_apnea_ecg_record(tmp_path / "a01")


def test_apnea_ecg_unexpected_symbol(tmp_path):
    _write_apnea_ecg(tmp_path, symbols=("N", "V", "A"))
    with pytest.raises(DataFormatError, match="'V'"):
        read_apnea_ecg_record(tmp_path / "a01")


def test_apnea_ecg_missing_files(tmp_path):
    _write_apnea_ecg(tmp_path)
    (tmp_path / "a01.dat").unlink()
    with pytest.raises(DataFormatError, match=r"a01\.dat"):
        read_apnea_ecg_record(tmp_path / "a01")
    (tmp_path / "a01.apn").unlink()
    with pytest.raises(DataFormatError, match=r"a01\.apn"):
        read_apnea_ecg_record(tmp_path / "a01")
    with pytest.raises(DataFormatError, match="no Apnea-ECG records"):
        load_apnea_ecg(tmp_path)
    with pytest.raises(DataFormatError, match="not found"):
        load_apnea_ecg(tmp_path / "nope")


def test_apnea_ecg_garbled_header(tmp_path):
    _write_apnea_ecg(tmp_path)
    (tmp_path / "a01.hea").write_text("this is not a header\n\x01\x02 garbage 12 x\n")
    with pytest.raises(DataFormatError, match=r"a01\.hea"):
        read_apnea_ecg_record(tmp_path / "a01")


# --------------------------------------------------------------------------------------------
# UCDDB (EDF .rec + _respevt.txt)
# --------------------------------------------------------------------------------------------

RESPEVT = """\
                               ucddb099

Time      Type      PB/CS  Duration  Low  %Drop  Snore  Arousal  B/T Rate  B/T Change

23:59:30  HYP-O              15      93.0   3.0    No      No        64        -2
00:00:20  APNEA-O   PB       12      88.0   7.0    No      Yes       58        -8
00:00:50  PB                 10       -      -     No      No        -          -
00:01:20  APNEA-C            30      90.0   5.0    No      No        61        -4
"""


def _write_ucddb(directory, name="ucddb099", seconds=150, start=dt.datetime(2001, 5, 3, 23, 59, 0),
                 respevt=RESPEVT):
    import pyedflib

    fs = 128
    t = np.arange(seconds * fs) / fs
    ecg = 1.2 * np.sin(2 * np.pi * 1.1 * t) + 0.2 * np.sin(2 * np.pi * 9.0 * t)
    flow = np.cos(2 * np.pi * 0.25 * t)

    def hdr(label, f):
        return {"label": label, "dimension": "mV", "sample_frequency": f, "physical_max": 5.0,
                "physical_min": -5.0, "digital_max": 32767, "digital_min": -32768,
                "transducer": "", "prefilter": ""}

    path = directory / f"{name}.rec"
    w = pyedflib.EdfWriter(str(path), 3, file_type=pyedflib.FILETYPE_EDF)
    w.setSignalHeaders([hdr("Flow", fs), hdr("SpO2", 8), hdr("ECG", fs)])
    w.setStartdatetime(start)
    w.writeSamples([flow, 95.0 + 0 * t[::16] / 50, ecg])  # SpO2 value clipped to 5: irrelevant
    w.close()
    if respevt is not None:
        (directory / f"{name}_respevt.txt").write_text(respevt)
    return path, ecg


def _expected_ucddb_labels(seconds=150):
    lab = np.zeros(seconds, dtype=np.int8)
    lab[30:45] = 1  # 23:59:30 HYP-O 15 s (start 23:59:00)
    lab[80:92] = 1  # 00:00:20 APNEA-O (PB flag) 12 s, across midnight
    lab[140:150] = 1  # 00:01:20 APNEA-C 30 s, clipped at the end; the PB event is not counted
    return lab


def test_parse_respevt(tmp_path):
    (tmp_path / "r_respevt.txt").write_text(RESPEVT)
    ev = parse_respevt(tmp_path / "r_respevt.txt")
    assert [e.type for e in ev] == ["HYP-O", "APNEA-O", "PB", "APNEA-C"]
    assert [e.duration_s for e in ev] == [15, 12, 10, 30]
    assert [e.pbcs for e in ev] == ["", "PB", "", ""]
    assert ev[0].clock_s == 23 * 3600 + 59 * 60 + 30 and ev[1].line == 6
    (tmp_path / "empty_respevt.txt").write_text(RESPEVT.split("\n\n")[0] + "\n\n" + RESPEVT.split("\n\n")[1])
    assert parse_respevt(tmp_path / "empty_respevt.txt") == []  # header only: no events


def test_ucddb_roundtrip(tmp_path):
    path, ecg = _write_ucddb(tmp_path)
    sig, fs, start, label = read_edf_channel(path)
    assert fs == 128 and label == "ECG" and start == dt.datetime(2001, 5, 3, 23, 59, 0)
    np.testing.assert_allclose(sig, ecg, atol=10 / 65535 + 1e-9)
    rec = read_ucddb_record(path)
    np.testing.assert_array_equal(rec.second_labels, _expected_ucddb_labels())
    assert [e.onset_s for e in rec.events] == [30.0, 80.0, 110.0, 140.0]

    ds = load_ucddb(tmp_path, filter_band=None, normalise=None)
    assert ds.source == "ucddb" and ds.record_names == ["ucddb099"] and len(ds) == 13
    np.testing.assert_allclose(ds.x[2], ecg[2 * 1408 : 3 * 1408], atol=10 / 65535 + 1e-6)
    exp = _expected_ucddb_labels()
    maj = [int(exp[int(s) : int(s) + 11].sum() * 2 > 11) for s in ds.start]
    np.testing.assert_array_equal(ds.y, maj)
    any_ = load_ecg_dataset(f"ucddb:{tmp_path}", label_rule="any")
    assert (any_.y >= ds.y).all() and any_.y.sum() > ds.y.sum()
    # only apneas (no hypopneas)
    apnea_only = read_ucddb_record(path, event_types=("APNEA",))
    assert apnea_only.second_labels[30:45].sum() == 0 and apnea_only.second_labels[80:92].all()


def test_ucddb_tolerant_edf_fallback(tmp_path):
    """A header time written with ':' instead of '.' is refused by pyedflib but read by the
    tolerant parser, with a warning and the same samples."""
    path, ecg = _write_ucddb(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[176:184] = b"23:59:00"
    bad = tmp_path / "ucddb098.rec"
    bad.write_bytes(bytes(raw))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sig, fs, start, label = read_edf_channel(bad)
    assert start == dt.datetime(2001, 5, 3, 23, 59, 0) and fs == 128 and label == "ECG"
    np.testing.assert_allclose(sig, ecg, atol=10 / 65535 + 1e-9)
    assert any("tolerant" in str(w.message) for w in caught)


def test_ucddb_truncated_rec(tmp_path):
    path, _ = _write_ucddb(tmp_path)
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(DataFormatError, match=r"ucddb099\.rec.*truncated"):
        read_ucddb_record(path)


def test_ucddb_garbled_rec(tmp_path):
    path, _ = _write_ucddb(tmp_path)
    path.write_bytes(b"hello, not EDF" * 100)
    with pytest.raises(DataFormatError, match=r"ucddb099\.rec"):
        load_ucddb(tmp_path)
    path.write_bytes(b"0" * 10)
    with pytest.raises(DataFormatError, match="256-byte header"):
        read_edf_channel(path)


def test_ucddb_no_ecg_channel(tmp_path):
    path, _ = _write_ucddb(tmp_path)
    with pytest.raises(DataFormatError, match="EEG"):
        read_edf_channel(path, "EEG")


def test_ucddb_respevt_problems(tmp_path):
    path, _ = _write_ucddb(tmp_path, respevt=None)
    with pytest.raises(DataFormatError, match="ucddb099_respevt.txt"):
        read_ucddb_record(path)
    evt = tmp_path / "ucddb099_respevt.txt"
    evt.write_bytes(b"\x00\x01\x02binary\xff" * 20)
    with pytest.raises(DataFormatError, match="binary"):
        read_ucddb_record(path)
    evt.write_text("Time  Type  PB/CS  Duration\n00:00:20  APNEA-O  PB  soon\n")
    with pytest.raises(DataFormatError, match=r"respevt.txt:2: event 'APNEA-O' has no duration"):
        read_ucddb_record(path)
    evt.write_text("some random text\nwithout any events\n")
    with pytest.raises(DataFormatError, match="found neither"):
        read_ucddb_record(path)
    evt.write_text("Time Type Duration\n25:61:00 HYP-O 10\n")
    with pytest.raises(DataFormatError, match="invalid clock time"):
        parse_respevt(evt)


def test_ucddb_directory_errors(tmp_path):
    with pytest.raises(DataFormatError, match="no UCDDB recordings"):
        load_ucddb(tmp_path)
    _write_ucddb(tmp_path)
    with pytest.raises(DataFormatError, match="ucddb123"):
        load_ucddb(tmp_path, records=["ucddb123"])
    with pytest.raises(DataFormatError, match="directory not found"):
        load_ecg_dataset(f"ucddb:{tmp_path / 'missing'}")


def test_ucddb_two_records_are_two_subjects(tmp_path):
    _write_ucddb(tmp_path, "ucddb002")
    _write_ucddb(tmp_path, "ucddb003", start=dt.datetime(2001, 5, 4, 22, 0, 0),
                 respevt="Time Type PB/CS Duration\n22:00:30 APNEA-M 20\n")
    ds = load_ucddb(tmp_path)
    assert ds.record_names == ["ucddb002", "ucddb003"] and set(ds.subject) == {0, 1}
    r3 = ds.subset(ds.record == 1)
    assert r3.y.tolist()[:6] == [0, 0, 0, 1, 1, 0]  # 30-50 s apneic: windows 33-44, 44-55 s


# --------------------------------------------------------------------------------------------
# load_ecg_dataset
# --------------------------------------------------------------------------------------------


def test_load_ecg_dataset_specs():
    ds = load_ecg_dataset("synthetic:12", seed=4)
    assert len(ds) == 12 and ds.source == "synthetic"
    ds2 = load_ecg_dataset("synthetic", n=6, apnea_fraction=0.0)
    assert len(ds2) == 6 and ds2.y.sum() == 0
    for bad in ("mitbih:/tmp", "ucddb", "synthetic:many", ""):
        with pytest.raises(ParameterError):
            load_ecg_dataset(bad)


def test_make_windows_errors():
    from privkit.data.ecg import ECGRecord

    rec = ECGRecord(name="r", signal=np.zeros(100), fs=128, second_labels=np.zeros(1, np.int8))
    with pytest.raises(DataFormatError, match="no labelled windows"):
        make_windows([rec])
    with pytest.raises(ParameterError):
        make_windows([rec], step=0)


def test_copy_of_rec_as_edf_is_accepted(tmp_path):
    path, _ = _write_ucddb(tmp_path)
    shutil.move(path, tmp_path / "ucddb099.edf")
    ds = load_ucddb(tmp_path)
    assert ds.record_names == ["ucddb099"]


# --------------------------------------------------------------------------------------------
# property: window labels agree with a brute-force per-sample count
# --------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    lab=st.lists(st.sampled_from([0, 0, 1, -1]), min_size=1, max_size=30),
    fs=st.integers(1, 8),
    window=st.integers(1, 40),
    starts=st.lists(st.integers(0, 250), min_size=1, max_size=6),
    rule=st.sampled_from(["majority", "any", "center"]),
    min_overlap=st.sampled_from([0.5, 1.0, 2.0]),
)
def test_window_labels_match_bruteforce(lab, fs, window, starts, rule, min_overlap):
    lab = np.array(lab, dtype=np.int8)
    starts = np.array(starts)
    got = window_labels(lab, fs, starts, window, rule, min_overlap)
    per_sample = np.repeat(lab, fs)
    for s, g in zip(starts, got):
        seg = per_sample[s : s + window]
        if len(seg) < window or (seg < 0).any():
            assert g == -1
            continue
        apnea_s = (seg == 1).sum() / fs
        if rule == "majority":
            want = int(apnea_s > window / fs / 2)
        elif rule == "any":
            want = int(apnea_s >= min_overlap)
        else:
            want = int(lab[int((s + window / 2) / fs)])
        assert g == want, (s, seg, rule)


def test_edf_reader_works_without_pyedflib(tmp_path, monkeypatch):
    """The built-in EDF parser gives the same samples and start time when pyedflib is absent."""
    import sys

    path, ecg = _write_ucddb(tmp_path)
    monkeypatch.setitem(sys.modules, "pyedflib", None)  # import pyedflib -> ImportError
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning on this path
        sig, fs, start, label = read_edf_channel(path)
    assert fs == 128 and label == "ECG" and start == dt.datetime(2001, 5, 3, 23, 59, 0)
    np.testing.assert_allclose(sig, ecg, atol=10 / 65535 + 1e-9)
    rec = read_ucddb_record(path)
    np.testing.assert_array_equal(rec.second_labels, _expected_ucddb_labels())
    path.write_bytes(path.read_bytes()[:-700])
    with pytest.raises(DataFormatError, match="truncated"):
        read_edf_channel(path)
