"""privkit.data.imu: synthetic IMU, windowing, normalisation, splits, MotionSense/LARa readers."""

from __future__ import annotations

import numpy as np
import pytest

from privkit.data.imu import (
    LARA_COLUMNS,
    MOTIONSENSE_COLUMNS,
    MinMaxNormaliser,
    Recording,
    load_imu,
    make_windows,
    read_lara,
    read_motionsense,
    split_recordings,
    split_subjects,
    synthetic_imu,
)
from privkit.errors import DataFormatError, ParameterError

# ------------------------------------------------------------------------------ synthetic


def test_synthetic_shapes_labels_and_seed():
    ds = synthetic_imu(n_subjects=4, n_activities=3, trials=2, seconds=4, window=40, step=20,
                       n_devices=3, seed=5)
    assert ds.windows.shape[1:] == (40, 18) and ds.windows.dtype == np.float32
    assert ds.device_channels == (6, 6, 6)
    assert set(ds.subject) == {0, 1, 2, 3} and set(ds.activity) == {0, 1, 2}
    assert ds.activity_names == ["walking", "sitting", "jogging"]
    again = synthetic_imu(n_subjects=4, n_activities=3, trials=2, seconds=4, window=40, step=20,
                          n_devices=3, seed=5)
    np.testing.assert_array_equal(ds.windows, again.windows)
    other = synthetic_imu(n_subjects=4, n_activities=3, trials=2, seconds=4, window=40, step=20,
                          n_devices=3, seed=6)
    assert not np.allclose(ds.windows, other.windows)


def _subject_spread(ds):
    """Between-subject spread of per-subject mean window features (mean and std per channel)."""
    feats = np.concatenate([ds.windows.mean(1), ds.windows.std(1)], axis=1)
    means = np.stack([feats[(ds.subject == s) & (ds.activity == 0)].mean(0)
                      for s in np.unique(ds.subject)])
    return float(means.std(0).mean())


def test_identity_strength_controls_subject_differences():
    kw = {"n_subjects": 6, "n_activities": 2, "trials": 1, "seconds": 6, "window": 50, "step": 50, "seed": 1}
    none = _subject_spread(synthetic_imu(identity_strength=0.0, **kw))
    strong = _subject_spread(synthetic_imu(identity_strength=1.0, **kw))
    assert strong > 4 * none


def test_synthetic_rejects_bad_parameters():
    with pytest.raises(ParameterError):
        synthetic_imu(n_activities=0)
    with pytest.raises(ParameterError):
        synthetic_imu(identity_strength=-1)


# ------------------------------------------------------------------------------ windowing


def test_windows_majority_label_and_drop():
    data = np.arange(20, dtype=np.float32)[:, None].repeat(2, axis=1)
    labels = np.array([0] * 7 + [1] * 13)
    rec = Recording(data, labels, subject=3, name="r")
    ds = make_windows([rec], 6, 4, channel_names=["a", "b"], device_channels=(2,),
                      activity_names=["x", "y"], sample_rate=10)
    # windows start at 0, 4, 8, 12: labels 0 (6 of 6), 0 (3 of 6 -> tie -> lowest), 1, 1
    np.testing.assert_array_equal(ds.activity, [0, 0, 1, 1])
    np.testing.assert_array_equal(ds.windows[1, :, 0], np.arange(4, 10))
    assert list(ds.subject) == [3] * 4
    dropped = make_windows([rec], 6, 4, channel_names=["a", "b"], device_channels=(2,),
                           activity_names=["x", "y"], sample_rate=10, drop_labels=(1,))
    np.testing.assert_array_equal(dropped.activity, [0, 0])
    with pytest.raises(DataFormatError):
        make_windows([rec], 50, 4, channel_names=["a", "b"], device_channels=(2,),
                     activity_names=["x", "y"], sample_rate=10)


def test_normaliser_fit_transform_inverse_roundtrip():
    ds = synthetic_imu(n_subjects=2, n_activities=2, trials=2, seconds=4, window=32, step=16)
    norm = MinMaxNormaliser.fit(ds.windows)
    x = norm.transform(ds.windows)
    assert x.min() >= 0 and x.max() <= 1
    assert np.isclose(x.min(axis=(0, 1)), 0).all() and np.isclose(x.max(axis=(0, 1)), 1).all()
    np.testing.assert_allclose(norm.inverse(x), ds.windows, rtol=1e-5, atol=1e-5)
    back = MinMaxNormaliser.from_dict(norm.to_dict())
    np.testing.assert_array_equal(back.transform(ds.windows), x)


def test_recording_and_subject_splits():
    ds = synthetic_imu(n_subjects=3, n_activities=2, trials=3, seconds=4, window=32, step=16)
    train, test = split_recordings(ds, 0.34, seed=0)
    assert not set(np.unique(train.recording)) & set(np.unique(test.recording))
    for s in range(3):
        for a in range(2):
            assert ((train.subject == s) & (train.activity == a)).any()
            assert ((test.subject == s) & (test.activity == a)).any()
    tr, te = split_subjects(ds, [2])
    assert set(te.subject) == {2} and 2 not in set(tr.subject)
    single = synthetic_imu(n_subjects=2, n_activities=1, trials=1, seconds=4, window=32, step=16)
    with pytest.raises(DataFormatError):
        split_recordings(single)


# ------------------------------------------------------------------------------ MotionSense


def _write_motionsense(root, rng, bom=True):
    base = root / "A_DeviceMotion_data"
    truth = {}
    for trial in ("wlk_7", "wlk_8", "sit_5"):
        (base / trial).mkdir(parents=True)
        for code in (1, 4):
            data = rng.normal(size=(30, 12))
            truth[(trial, code)] = data
            lines = ["," + ",".join(MOTIONSENSE_COLUMNS)]
            lines += [f"{i}," + ",".join(f"{v:.6f}" for v in row) for i, row in enumerate(data)]
            (base / trial / f"sub_{code}.csv").write_text("\n".join(lines) + "\n")
    info = "code,weight,height,age,gender\n1,102,188,46,1\n4,72,180,29,0\n"
    (root / "data_subjects_info.csv").write_bytes(
        (b"\xef\xbb\xbf" if bom else b"") + info.encode())
    return truth


def test_motionsense_roundtrip(tmp_path):
    truth = _write_motionsense(tmp_path, np.random.default_rng(0))
    ds = read_motionsense(tmp_path, window=10, step=10)
    assert ds.windows.shape == (6 * 3, 10, 12) and ds.device_channels == (12,)
    assert ds.sample_rate == 50.0 and ds.channel_names == MOTIONSENSE_COLUMNS
    # subjects 1, 4 -> 0, 1; info keyed by the new labels, BOM stripped
    assert ds.subject_info[1]["code"] == 4 and ds.subject_info[0]["weight"] == 102
    wlk = ds.activity_names.index("wlk")
    rec = ds.recording_names.index("wlk_8/sub_4")
    got = ds.windows[ds.recording == rec].reshape(-1, 12)
    np.testing.assert_allclose(got, truth[("wlk_8", 4)], atol=1e-6)
    assert (ds.activity[ds.recording == rec] == wlk).all()
    only = read_motionsense(tmp_path / "A_DeviceMotion_data", window=10, step=10,
                            activities=["sit"])
    assert set(only.activity) == {0} and len(only) == 6


@pytest.mark.parametrize("content, match", [
    ("a,b,c\n1,2,3\n", "unexpected header"),
    ("," + ",".join(MOTIONSENSE_COLUMNS) + "\n", "no data rows"),
    ("," + ",".join(MOTIONSENSE_COLUMNS) + "\n0,1,2,3\n", "truncated"),
    ("," + ",".join(MOTIONSENSE_COLUMNS) + "\n0," + ",".join(["x"] * 12) + "\n", "not numeric"),
    ("", "empty file"),
])
def test_motionsense_malformed_files(tmp_path, content, match):
    _write_motionsense(tmp_path, np.random.default_rng(1))
    bad = tmp_path / "A_DeviceMotion_data" / "wlk_7" / "sub_4.csv"
    bad.write_text(content)
    with pytest.raises(DataFormatError, match=match) as e:
        read_motionsense(tmp_path, window=10, step=10)
    assert "sub_4.csv" in str(e.value)


def test_motionsense_missing_folder(tmp_path):
    with pytest.raises(DataFormatError, match="no MotionSense files"):
        read_motionsense(tmp_path)
    with pytest.raises(DataFormatError, match="not a folder"):
        read_motionsense(tmp_path / "nope")


# ------------------------------------------------------------------------------ LARa


def _write_lara(root, rng, n=40):
    truth = {}
    for subj in (7, 8):
        d = root / f"S{subj:02d}"
        d.mkdir(parents=True)
        for r in (1, 2):
            data = rng.normal(size=(n, 30))
            cls = np.array([1] * (n // 2) + [7] * (n - n // 2)) if r == 1 else np.full(n, 3)
            stem = f"L01_S{subj:02d}_R{r:02d}"
            lines = ["Time," + ",".join(LARA_COLUMNS)]
            lines += [f"{i / 100:.2f}," + ",".join(f"{v:.6f}" for v in row)
                      for i, row in enumerate(data)]
            (d / f"{stem}.csv").write_text("\n".join(lines) + "\n")
            lab = ["Class,I-A_GaitCycle,I-B_Step"] + [f"{c},0,1" for c in cls]
            (d / f"{stem}_labels.csv").write_text("\n".join(lab) + "\n")
            truth[(subj, r)] = (data, cls)
    return truth


def test_lara_roundtrip(tmp_path):
    truth = _write_lara(tmp_path, np.random.default_rng(2))
    ds = read_lara(tmp_path, window=10, step=10)
    assert ds.device_channels == (6,) * 5 and ds.windows.shape[1:] == (10, 30)
    assert ds.sample_rate == 100.0
    assert set(ds.subject) == {0, 1} and 7 not in set(ds.activity)  # 'None' dropped
    rec = ds.recording_names.index("S08/L01_S08_R02")
    got = ds.windows[ds.recording == rec].reshape(-1, 30)
    np.testing.assert_allclose(got, truth[(8, 2)][0], atol=1e-6)
    assert (ds.activity[ds.recording == rec] == 3).all()
    # recording 1: first half class 1 (kept), second half class 7 (dropped)
    rec1 = ds.recording_names.index("S07/L01_S07_R01")
    assert (ds.recording == rec1).sum() == 2
    keep_all = read_lara(tmp_path, window=10, step=10, drop_none=False)
    assert 7 in set(keep_all.activity)
    assert load_imu(f"lara:{tmp_path}", window=10, step=10).windows.shape == ds.windows.shape


def test_lara_malformed_files(tmp_path):
    _write_lara(tmp_path, np.random.default_rng(3))
    lab = tmp_path / "S07" / "L01_S07_R02_labels.csv"
    lab.write_text("Class,A\n1,0\n1,0\n")
    with pytest.raises(DataFormatError, match="label rows") as e:
        read_lara(tmp_path, window=10, step=10)
    assert "L01_S07_R02_labels.csv" in str(e.value)
    lab.write_text("Klasse,A\n1,0\n")
    with pytest.raises(DataFormatError, match="'Class'"):
        read_lara(tmp_path, window=10, step=10)
    lab.write_text("Class\n" + "9\n" * 40)
    with pytest.raises(DataFormatError, match="0..7"):
        read_lara(tmp_path, window=10, step=10)
    lab.unlink()
    with pytest.raises(DataFormatError, match="label file"):
        read_lara(tmp_path, window=10, step=10)
    lab.write_text("Class\n" + "1\n" * 40)
    data = tmp_path / "S08" / "L01_S08_R01.csv"
    data.write_text("Time,LA_AccelerometerX\n0,1\n")
    with pytest.raises(DataFormatError, match="L01_S08_R01.csv"):
        read_lara(tmp_path, window=10, step=10)


def test_load_imu_spec_errors():
    with pytest.raises(ParameterError, match="unknown data spec"):
        load_imu("kaggle:x")
    with pytest.raises(ParameterError):
        load_imu("motionsense")
