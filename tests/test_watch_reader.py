"""The seglearn smartwatch reader: located in the installed package only, hash-checked before
anything is unpickled, typed errors on missing or modified copies."""

from __future__ import annotations

import importlib.util
import io
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privkit.data import watch
from privkit.data.imu import split_recordings
from privkit.errors import DataFormatError, MissingDependencyError, ParameterError

HAVE_SEGLEARN = importlib.util.find_spec("seglearn") is not None
needs_seglearn = pytest.mark.skipif(
    not HAVE_SEGLEARN, reason="seglearn 1.2.5 is not installed (pip install --no-deps "
    "seglearn==1.2.5, the realdata extra): the real watch data is not available")

RAN = []


class _Evil:
    def __reduce__(self):
        return (RAN.append, ("ran",))


def _npy(obj) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array(obj, dtype=object), allow_pickle=True)
    return buf.getvalue()


def test_modified_bytes_are_refused_before_unpickling():
    blob = _npy(_Evil())
    with pytest.raises(DataFormatError, match="SHA-256"):
        watch._parse(blob, "evil.npy")
    assert RAN == []  # nothing in the file ran


def test_missing_seglearn_names_the_extra(monkeypatch):
    monkeypatch.setattr(watch.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError, match="realdata"):
        watch.read_seglearn_watch()


def _fake_package(tmp_path, monkeypatch, content: bytes | None):
    pkg = tmp_path / "seglearn"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('seglearn must not be imported')\n")
    if content is not None:
        (pkg / "data" / "watch_dataset.npy").write_bytes(content)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "seglearn", raising=False)
    importlib.invalidate_caches()


def test_package_without_the_file(tmp_path, monkeypatch):
    _fake_package(tmp_path, monkeypatch, None)
    with pytest.raises(DataFormatError, match="no data/watch_dataset.npy"):
        watch.read_seglearn_watch()


def test_wrong_size_copy_is_refused(tmp_path, monkeypatch):
    _fake_package(tmp_path, monkeypatch, _npy(_Evil()))
    with pytest.raises(DataFormatError, match="bytes, expected"):
        watch.read_seglearn_watch()
    assert RAN == []


@needs_seglearn
def test_same_size_tampered_copy_is_refused(tmp_path, monkeypatch):
    real = watch.seglearn_watch_path().read_bytes()
    tampered = bytearray(real)
    tampered[-100] ^= 0xFF
    _fake_package(tmp_path, monkeypatch, bytes(tampered))
    with pytest.raises(DataFormatError, match="does not match"):
        watch.read_seglearn_watch()


@needs_seglearn
def test_real_watch_windows():
    ds = watch.read_seglearn_watch(window=128, step=64)
    assert ds.windows.shape[1:] == (128, 6) and ds.windows.dtype == np.float32
    assert ds.device_channels == (6,) and ds.sample_rate == 50.0
    assert ds.n_subjects == 10 and ds.n_activities == 7
    assert sorted(ds.subject_info[k]["code"] for k in range(10)) == list(range(1, 11))
    assert len(ds.recording_names) == 140 and np.isfinite(ds.windows).all()
    train, test = split_recordings(ds, 0.5, seed=0)
    assert set(train.subject) == set(test.subject) == set(range(10))
    assert not set(train.recording) & set(test.recording)
    one = watch.read_seglearn_watch(window=64, step=64, side=0)
    assert len(one.recording_names) == 70 and one.windows.shape[1:] == (64, 6)
    with pytest.raises(ParameterError):
        watch.read_seglearn_watch(side=2)


@needs_seglearn
def test_load_imu_watch_spec_is_the_reader():
    from privkit.data.imu import load_imu

    a = load_imu("watch", window=128, step=128)
    b = watch.read_seglearn_watch(window=128, step=128)
    assert np.array_equal(a.windows, b.windows) and np.array_equal(a.subject, b.subject)
    with pytest.raises(ParameterError, match="watch"):
        load_imu("watch:/some/user/path")  # never a user path


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=4096) | st.builds(lambda a, b: a + b, st.just(b"\x93NUMPY\x01\x00"),
                                              st.binary(max_size=2048)))
def test_fuzzed_bytes_always_get_a_typed_refusal(blob):
    """Arbitrary bytes (some with an .npy magic): always DataFormatError, never a crash, never
    anything unpickled (the hash is checked first)."""
    with pytest.raises(DataFormatError):
        watch._parse(blob, "fuzz.npy")
    assert RAN == []
