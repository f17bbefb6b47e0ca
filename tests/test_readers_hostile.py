"""Hostile inputs named in issue 17, one test each: code in a CIFAR pickle, IDX size tricks and
decompression bombs, IMU CSV edge cases, EDF/WFDB header lies, the .apn pattern that hangs
wfdb, and well-formed but hostile model states."""

from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from fuzz_readers import peak_rss_growth_mb
from fuzz_seeds import APN_HANG, model_states, seeds
from privkit.data.ecg import parse_respevt, read_apnea_ecg_record, read_edf_channel
from privkit.data.images import load_cifar10, read_idx, write_idx
from privkit.data.imu import read_lara, read_motionsense
from privkit.data.safe_pickle import load_data_pickle
from privkit.data.wfdb_safe import parse_wfdb_annotations
from privkit.errors import DataFormatError

# ------------------------------------------------------------------------------------- CIFAR


class _Payload:
    """Unpickling this runs ``os.system('touch SENTINEL')`` with the stock unpickler."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("where", ["top", "data", "labels"])
def test_cifar_reduce_payload_is_refused_without_running(tmp_path, protocol, where):
    sentinel = tmp_path / "sentinel"
    batch = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}
    evil = _Payload(sentinel)
    obj = evil if where == "top" else {**batch, (b"data" if where == "data" else b"labels"): evil}
    blob = pickle.dumps(obj, protocol=protocol)
    # control: the stock unpickler really would run it
    ctl = tmp_path / "ctl"
    subprocess.run([sys.executable, "-c", "import pickle,sys; pickle.loads(sys.stdin.buffer.read())"],
                   input=pickle.dumps(_Payload(ctl), protocol=protocol), check=True, timeout=60)
    assert ctl.exists()
    (tmp_path / "test_batch").write_bytes(blob)
    with pytest.raises(DataFormatError, match="refused to load.*system"):
        load_cifar10(tmp_path, "test")
    assert not sentinel.exists()


def test_cifar_other_code_paths_refused(tmp_path):
    # eval via a hand-written GLOBAL, an object array, a persistent id, subprocess via EXT
    cases = [
        b"cbuiltins\neval\n(S'1+1'\ntR.",
        pickle.dumps(np.array([1, "a"], dtype=object), protocol=2),
        b"\x80\x02P0\n.",
        b"csubprocess\nPopen\n(S'true'\ntR.",
    ]
    for blob in cases:
        with pytest.raises(DataFormatError, match="refused|not a readable|not numeric"):
            load_data_pickle(blob, "x")


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_cifar_batches_of_every_protocol_load(tmp_path, protocol):
    rng = np.random.default_rng(protocol)
    data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    (tmp_path / "test_batch").write_bytes(pickle.dumps(
        {b"batch_label": b"x", b"data": data, b"labels": [0, 9, 3, 1], b"filenames": [b"a"] * 4},
        protocol=protocol))
    out = load_cifar10(tmp_path, "test")
    np.testing.assert_array_equal(out.labels, [0, 9, 3, 1])
    np.testing.assert_allclose(out.images.reshape(4, -1), data / 127.5 - 1.0, atol=1e-6)


def test_cifar_array_lies_about_its_size():
    good = pickle.dumps({b"data": np.zeros((2, 3), np.uint8)}, protocol=4)
    assert b"K\x02K\x03\x86" in good  # the shape (2, 3) as two BININT1 and TUPLE2
    big = good.replace(b"K\x02K\x03\x86", b"J\x00\x00\x00\x40J\x00\x00\x00\x40\x86")  # (2^30, 2^30)
    with pytest.raises(DataFormatError, match="declares|needs"):
        load_data_pickle(big, "x")
    # BYTEARRAY8 declaring 2^62 bytes with 3 present: no allocation of the declared length
    t = time.perf_counter()
    with pytest.raises(DataFormatError):
        load_data_pickle(b"\x80\x05\x96" + struct.pack("<Q", 1 << 62) + b"abc.", "x")
    assert time.perf_counter() - t < 1.0


# --------------------------------------------------------------------------------------- IDX


def _idx(dims, body=b"", code=8):
    return struct.pack(">HBB", 0, code, len(dims)) + struct.pack(">" + "I" * len(dims), *dims) + body


def test_idx_size_product_that_wraps(tmp_path):
    p = tmp_path / "x-idx3-ubyte"
    # 2^32 * 2^32 * 2^... wraps to 0 in 64-bit arithmetic; python ints do not
    p.write_bytes(_idx((0xFFFFFFFF, 0xFFFFFFFF, 0x10), code=0x0E))
    with pytest.raises(DataFormatError, match="limit"):
        read_idx(p)
    p.write_bytes(_idx((65536, 65536, 65536)))
    with pytest.raises(DataFormatError, match="limit"):
        read_idx(p)


def test_idx_corrupt_gzip_and_trailing_data(tmp_path):
    p = tmp_path / "x.gz"
    good = gzip.compress(_idx((3,), b"abc"))
    for bad in (good[:-4], good[:12], good[:20] + bytes(20), good + b"junk", good + good):
        p.write_bytes(bad)
        with pytest.raises(DataFormatError, match="x.gz"):
            read_idx(p)
    p.write_bytes(good)
    assert read_idx(p).tolist() == [97, 98, 99]


def test_idx_decompression_bomb_is_bounded(tmp_path):
    import zlib

    p = tmp_path / "bomb.gz"
    # 64 MB of zeros after a header declaring 10 bytes: ~65 kB on disk
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    blob = c.compress(_idx((10,))) + b"".join(c.compress(bytes(1 << 20)) for _ in range(64)) + c.flush()
    p.write_bytes(blob)
    tracemalloc.start()
    t = time.perf_counter()
    with pytest.raises(DataFormatError, match="more"):
        read_idx(p)
    secs = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20 and secs < 5
    # a header declaring 1 GB in a 40-byte file: refused before anything is decompressed
    p.write_bytes(gzip.compress(_idx((1 << 30,))))
    tracemalloc.start()
    with pytest.raises(DataFormatError, match="deflate cannot"):
        read_idx(p)
    assert tracemalloc.get_traced_memory()[1] < 8 << 20
    tracemalloc.stop()
    # 1 GB declared, a 1 MB file (a small gzip member then junk): memory follows the real data
    p.write_bytes(gzip.compress(_idx((1 << 30,)) + bytes(1 << 20)) + bytes(1 << 20))
    tracemalloc.start()
    with pytest.raises(DataFormatError, match="truncated or corrupt"):
        read_idx(p)
    assert tracemalloc.get_traced_memory()[1] < 16 << 20
    tracemalloc.stop()


def test_idx_declared_size_vs_real_size(tmp_path):
    p = tmp_path / "x-idx1-ubyte"
    p.write_bytes(_idx((5,), b"abcd"))
    with pytest.raises(DataFormatError, match="truncated"):
        read_idx(p)
    p.write_bytes(_idx((5,), b"abcdef"))
    with pytest.raises(DataFormatError, match="truncated or corrupt"):
        read_idx(p)
    write_idx(p, np.arange(6, dtype=np.uint8).reshape(2, 3))
    assert read_idx(p).shape == (2, 3)
    with pytest.raises(DataFormatError, match="limit"):
        read_idx(p, max_bytes=5)


def test_png_chunk_length_lie_does_not_allocate_it(tmp_path):
    """A PNG whose IDAT length claims 738 MB (found by the slow fuzz run): Pillow reads the
    declared length from its file; the reader hands it an in-memory copy instead."""
    from privkit.data.images import load_image_folder

    raw = bytearray(seeds()["png"])
    at = raw.index(b"IDAT") - 4
    raw[at] = 0x2C  # length 0x2c000015
    (tmp_path / "a.png").write_bytes(bytes(raw))
    tracemalloc.start()
    try:
        out = load_image_folder(tmp_path, image_size=8)
        assert out.images.shape == (1, 3, 8, 8)
    except DataFormatError:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 32 << 20, peak


def test_image_pixel_limit_before_decoding(tmp_path, monkeypatch):
    import privkit.data.images as images

    (tmp_path / "a.png").write_bytes(seeds()["png"])  # 8 x 6 pixels
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 47)
    with pytest.raises(DataFormatError, match="8 x 6 pixels"):
        images.load_image_folder(tmp_path, image_size=8)
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 48)
    assert images.load_image_folder(tmp_path, image_size=8).images.shape == (1, 3, 8, 8)


# --------------------------------------------------------------------------------------- IMU


def _lara(tmp_path, labels_text=None, data_edit=None):
    files = dict(seeds()["lara"])
    name = "S07/L01_S07_R01_labels.csv"
    if labels_text is not None:
        files[name] = labels_text.encode()
    if data_edit is not None:
        files["S07/L01_S07_R01.csv"] = data_edit(files["S07/L01_S07_R01.csv"])
    for k, v in files.items():
        (tmp_path / k).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / k).write_bytes(v)


@pytest.mark.parametrize("labels,match", [
    ("\nClass\n" + "1\n" * 12, "Class"),                      # blank first label line
    ("Class\n" + "1\n" * 11 + "inf\n", "not an integer"),
    ("Class\n" + "1\n" * 11 + "1e300\n", "not an integer"),
    ("Class\n" + "1\n" * 11 + "nan\n", "not an integer"),
    ("Class\n" + "1\n" * 11 + "\n", "row 13"),
    ("Class\n" + "1\n" * 11 + "x" * 140_000 + "\n", "field larger than field limit"),
])
def test_lara_label_edge_cases(tmp_path, labels, match):
    _lara(tmp_path, labels)
    with pytest.raises(DataFormatError, match=match):
        read_lara(tmp_path, window=4, step=4)


def test_imu_oversized_field_and_subject_codes(tmp_path):
    _lara(tmp_path, data_edit=lambda b: b.replace(b"0.00,", b"0." + b"1" * 140_000 + b",", 1))
    with pytest.raises(DataFormatError, match="L01_S07_R01.csv.*field"):
        read_lara(tmp_path, window=4, step=4)
    ms = dict(seeds()["motionsense"])
    for code in ("inf", "nan", "1e400", "-inf", "1.5"):
        root = tmp_path / f"ms_{code}"
        for k, v in {**ms, "data_subjects_info.csv":
                     f"code,weight,height,age,gender\n{code},1,2,3,1\n".encode()}.items():
            (root / k).parent.mkdir(parents=True, exist_ok=True)
            (root / k).write_bytes(v)
        with pytest.raises(DataFormatError, match="subject code"):
            read_motionsense(root, window=4, step=4)


# --------------------------------------------------------------------------------------- EDF


def _edf_set(raw: bytes, field: str, sig: int, value: str) -> bytes:
    """Overwrite a per-signal header field of an EDF file (two signals)."""
    ns = int(raw[252:256])
    widths = [("label", 16), ("transducer", 80), ("dim", 8), ("pmin", 8), ("pmax", 8),
              ("dmin", 8), ("dmax", 8), ("prefilter", 80), ("nsamp", 8), ("reserved", 32)]
    off = 256
    for name, w in widths:
        if name == field:
            start = off + sig * w
            return raw[:start] + value.ljust(w).encode()[:w] + raw[start + w:]
        off += w * ns
    raise KeyError(field)


def _edf_global(raw: bytes, a: int, b: int, value: str) -> bytes:
    return raw[:a] + value.ljust(b - a).encode() + raw[b:]


@pytest.mark.parametrize("edit,match", [
    (lambda r: _edf_set(r, "nsamp", 1, "0"), "samples per data record|sampling frequency"),
    (lambda r: _edf_set(r, "nsamp", 1, "-4"), "samples per data record|sampling frequency"),
    (lambda r: _edf_set(r, "nsamp", 0, "0"), "samples per data record|sampling frequency"),
    (lambda r: _edf_global(r, 244, 252, "0"), "record duration|sampling frequency"),
    (lambda r: _edf_global(r, 244, 252, "-1"), "record duration|sampling frequency"),
    (lambda r: _edf_global(r, 244, 252, "nan"), "record duration|sampling frequency"),
    (lambda r: _edf_set(r, "pmin", 1, "-inf"), "non-finite"),
    (lambda r: _edf_set(r, "pmax", 1, "inf"), "non-finite"),
    (lambda r: _edf_set(r, "dmax", 1, "-32768"), "digital max > digital min"),
    (lambda r: _edf_set(r, "dmax", 1, "-32769"), "digital max > digital min"),
    (lambda r: _edf_set(r, "pmax", 1, "-5"), "distinct physical"),
])
def test_edf_header_lies(tmp_path, edit, match):
    p = tmp_path / "x.rec"
    p.write_bytes(edit(seeds()["edf"]))
    with pytest.raises(DataFormatError, match=match):
        read_edf_channel(p, "ECG")


def test_edf_reads_valid_file(tmp_path):
    p = tmp_path / "x.rec"
    p.write_bytes(seeds()["edf"])
    sig, fs, start, label = read_edf_channel(p, "ECG")
    assert fs == 32 and len(sig) == 128 and label == "ECG" and start.hour == 23
    np.testing.assert_allclose(sig, np.sin(2 * np.pi * np.arange(128) / 32), atol=1e-3)


def test_long_file_names_are_typed(tmp_path):
    long = tmp_path / ("r" * 300)
    with pytest.raises(DataFormatError):
        read_edf_channel(long.with_suffix(".rec"))
    with pytest.raises(DataFormatError):
        parse_respevt(str(long) + "_respevt.txt")
    with pytest.raises(DataFormatError):
        read_apnea_ecg_record(long)


def test_respevt_durations(tmp_path):
    p = tmp_path / "r_respevt.txt"
    for dur in ("1e400", "-5", "100000", "nan"):
        p.write_text(f"Time Type Duration\n00:00:01  APNEA-O  {dur}\n")
        with pytest.raises(DataFormatError, match="duration"):
            parse_respevt(p)


# -------------------------------------------------------------------------------------- WFDB


def _wfdb(tmp_path, **edits):
    files = dict(seeds()["wfdb"])
    files.update(edits)
    for k, v in files.items():
        (tmp_path / f"a01.{k}").write_bytes(v)
    return tmp_path / "a01"


def test_wfdb_header_lies(tmp_path):
    hea = seeds()["wfdb"]["hea"].decode()
    first = hea.splitlines()[0]
    cases = {
        "-100": first.replace(" 10 ", " -100 "),
        "0": first.replace(" 10 ", " 0 "),
        "nan": first.replace(" 10 ", " nan "),
    }
    for fs, line in cases.items():
        base = _wfdb(tmp_path, hea=hea.replace(first, line).encode())
        with pytest.raises(DataFormatError, match="sampling frequency"):
            read_apnea_ecg_record(base)
    for name in ("r" * 300 + ".dat", "../a01.dat", "/etc/passwd", "-"):
        base = _wfdb(tmp_path, hea=hea.replace("a01.dat", name).encode())
        with pytest.raises(DataFormatError, match="plain file name"):
            read_apnea_ecg_record(base)
    base = _wfdb(tmp_path, hea=hea.replace(" 1800", " 180000000").encode())
    with pytest.raises(DataFormatError, match="truncated"):
        read_apnea_ecg_record(base)


def test_apn_parser_matches_wfdb_on_valid_files(tmp_path):
    import wfdb

    base = _wfdb(tmp_path)
    ref = wfdb.rdann(str(base), "apn")
    ours = parse_wfdb_annotations(seeds()["wfdb"]["apn"], "a01.apn")
    assert ours.samples.tolist() == list(ref.sample) and ours.symbols == list(ref.symbol)
    assert ours.fs == ref.fs
    rec = read_apnea_ecg_record(base)
    assert rec.fs == 10 and (rec.second_labels[60:120] == 1).all()


def test_apn_hang_pattern_is_a_data_format_error_in_under_a_second(tmp_path):
    base = _wfdb(tmp_path, apn=APN_HANG)
    t = time.perf_counter()
    with pytest.raises(DataFormatError, match="a01.apn.*time resolution"):
        read_apnea_ecg_record(base)
    assert time.perf_counter() - t < 1.0


@pytest.mark.slow
def test_apn_hang_pattern_really_hangs_wfdb(tmp_path):
    """The fixture is the real thing: wfdb.rdann does not return within 5 s on it."""
    _wfdb(tmp_path, apn=APN_HANG)
    code = f"import wfdb; wfdb.rdann({str(tmp_path / 'a01')!r}, 'apn')"
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", code], timeout=5, capture_output=True)


# ------------------------------------------------------------------------------ model states


@pytest.fixture(scope="module")
def states():
    return model_states()


def test_model_states_round_trip(tmp_path, states):
    import torch

    from privkit.api import save_state
    from privkit.apps.anonymiser import IMUAnonymiser
    from privkit.apps.apnea import ApneaDetector
    from privkit.apps.svae import AnnVAE

    for name, cls in (("apnea", ApneaDetector), ("vae", AnnVAE), ("anon", IMUAnonymiser)):
        st = states[name][1]
        save_state(tmp_path / name, cls.model_kind, st)
        m = cls.load(tmp_path / name)
        got = m._get_state()
        tensors = [k for k, v in st.items() if isinstance(v, dict)
                   and v and all(isinstance(t, torch.Tensor) for t in v.values())]
        assert tensors
        for k in tensors:
            for kk, t in st[k].items():
                assert torch.equal(got[k][kk], t), (name, k, kk)


def _hostile(states, name, edit):
    import copy

    kind, st = states[name]
    st = copy.deepcopy(st)
    edit(st)
    return ("explicit", kind, st)


def test_checkpoint_declaring_40000_channels_fails_fast_and_small(tmp_path, states):
    from privkit.api import save_state
    from privkit.apps.apnea import ApneaDetector

    def edit(st):
        st["config"]["channels"] = 40000

    save_state(tmp_path / "m", ApneaDetector.model_kind, _hostile(states, "apnea", edit)[2])
    assert (tmp_path / "m").stat().st_size < 16_000  # a small file
    t = time.perf_counter()
    err, peak_mb = peak_rss_growth_mb(lambda: ApneaDetector.load(tmp_path / "m"))
    assert isinstance(err, DataFormatError) and "channels" in str(err), err
    assert time.perf_counter() - t < 2
    peaks = [peak_mb]

    # within every field limit the model would still be huge (1024 x 1024 x 4096 kernel):
    # refused by the element count of a meta-device build, before any real allocation
    def edit2(st):
        st["config"].update(channels=1024, kernel2=4096, window=1 << 20)

    save_state(tmp_path / "m", ApneaDetector.model_kind, _hostile(states, "apnea", edit2)[2])
    t = time.perf_counter()
    err, peak_mb = peak_rss_growth_mb(lambda: ApneaDetector.load(tmp_path / "m"))
    assert isinstance(err, DataFormatError) and "tensor elements" in str(err), err
    assert time.perf_counter() - t < 5
    peaks.append(peak_mb)
    if None in peaks:
        pytest.skip("peak RSS cannot be reset here (/proc/self/clear_refs); only times checked")
    assert max(peaks) < 32, peaks


@pytest.mark.parametrize("name,edit,match", [
    ("apnea", lambda s: s.pop("config"), "config is a NoneType"),
    ("apnea", lambda s: s.update(config=[1, 2]), "config is a list"),
    ("apnea", lambda s: s["config"].update(channels="4"), "channels"),
    ("apnea", lambda s: s["config"].update(lr=math.nan), "lr"),
    ("apnea", lambda s: s["config"].update(bogus=1), "unknown config"),
    ("apnea", lambda s: s["model"].pop("0.weight"), "missing"),
    ("apnea", lambda s: s["model"].update({"0.weight": s["model"]["0.weight"][:1]}), "shape"),
    ("apnea", lambda s: s["model"].update({"0.bias": s["model"]["0.bias"] * math.nan}), "NaN"),
    ("apnea", lambda s: s.update(history="x"), "history"),
    ("vae", lambda s: s["config"].update(widths=[2, 4, 8]), "image_size|weights"),
    ("vae", lambda s: s["config"].update(n_steps=10**9), "n_steps"),
    ("vae", lambda s: s.update(report={"kind": "dp", "epsilon": "x"}), "epsilon"),
    ("vae", lambda s: s.update(report={"nonsense": 1}), "unknown privacy report"),
    ("vae", lambda s: s.update(train_size=-3), "train_size"),
    ("anon", lambda s: s.update(strategy="nope"), "strategy"),
    ("anon", lambda s: s.update(subjects=[0, 0]), "subjects"),
    ("anon", lambda s: s.update(device_channels=[5]), "device_channels"),
    ("anon", lambda s: s.update(window=10**9), "window"),
    ("anon", lambda s: s.update(normaliser={"lo": [0.0], "hi": [1.0], "clip": True}), "normaliser"),
    ("anon", lambda s: s["generator"].popitem(), "missing"),
])
def test_hostile_model_states_are_typed(tmp_path, states, name, edit, match):
    from privkit.api import save_state
    from privkit.apps.anonymiser import IMUAnonymiser
    from privkit.apps.apnea import ApneaDetector
    from privkit.apps.svae import AnnVAE

    cls = {"apnea": ApneaDetector, "vae": AnnVAE, "anon": IMUAnonymiser}[name]
    _, _, st = _hostile(states, name, edit)
    save_state(tmp_path / "m", cls.model_kind, st)
    with pytest.raises(DataFormatError, match=match) as e:
        cls.load(tmp_path / "m")
    assert str(tmp_path / "m") in str(e.value)
