"""Valid seed files for the reader fuzz tests, and the reader functions the fuzz worker runs.

Every ``read_*`` function takes ``(tmpdir, data)``, writes the (mutated) input under ``tmpdir``,
calls the privkit reader, and checks the result (raising ``AssertionError`` on a result that is
not valid: non-finite values, wrong shapes, labels out of range). A privkit error is the other
accepted outcome; see ``tests/fuzz_readers.py``.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import pickle
import struct
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

FILES: dict[str, Any] = {}  # filled lazily by seeds()


# --------------------------------------------------------------------------------------- seeds


def _idx_seed() -> bytes:
    a = np.arange(60, dtype=np.uint8).reshape(3, 5, 4)
    return struct.pack(">HBB", 0, 8, 3) + struct.pack(">3I", *a.shape) + a.tobytes()


def _cifar_seed(protocol: int) -> bytes:
    rng = np.random.default_rng(0)
    return pickle.dumps({b"batch_label": b"testing batch 1 of 1",
                         b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8),
                         b"labels": [3, 7], b"filenames": [b"a.png", b"b.png"]},
                        protocol=protocol)


def _png_seed(fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.arange(8 * 6 * 3, dtype=np.uint8).reshape(6, 8, 3)).save(buf, format=fmt)
    return buf.getvalue()


def _edf_seed() -> bytes:
    import pyedflib

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.rec"
        fs, seconds = 32, 4
        t = np.arange(seconds * fs) / fs

        def hdr(label: str, f: int) -> dict[str, Any]:
            return {"label": label, "dimension": "mV", "sample_frequency": f,
                    "physical_max": 5.0, "physical_min": -5.0, "digital_max": 32767,
                    "digital_min": -32768, "transducer": "", "prefilter": ""}

        w = pyedflib.EdfWriter(str(path), 2, file_type=pyedflib.FILETYPE_EDF)
        w.setSignalHeaders([hdr("Flow", fs), hdr("ECG", fs)])
        w.setStartdatetime(dt.datetime(2001, 5, 3, 23, 59, 0))
        w.writeSamples([np.cos(t), np.sin(2 * np.pi * t)])
        w.close()
        return path.read_bytes()


RESPEVT = """\
                               ucddb099

Time      Type      PB/CS  Duration  Low  %Drop  Snore  Arousal  B/T Rate  B/T Change

23:59:01  HYP-O              2       93.0   3.0    No      No        64        -2
23:59:02  APNEA-O   PB       1       88.0   7.0    No      Yes       58        -8
"""


def _wfdb_seed() -> dict[str, bytes]:
    import wfdb

    with tempfile.TemporaryDirectory() as d:
        fs, minutes = 10, 3
        t = np.arange(minutes * 60 * fs) / fs
        ecg = 0.8 * np.sin(2 * np.pi * 1.2 * t)
        wfdb.wrsamp("a01", fs=fs, units=["mV"], sig_name=["ECG"], p_signal=ecg[:, None],
                    fmt=["16"], adc_gain=[200.0], baseline=[0], write_dir=d)
        wfdb.wrann("a01", "apn", np.arange(3) * 60 * fs, symbol=["N", "A", "N"], fs=fs,
                   write_dir=d)
        return {ext: (Path(d) / f"a01.{ext}").read_bytes() for ext in ("hea", "dat", "apn")}


#: a valid .apn whose '## time resolution' note has one byte changed ('l' -> '<'): wfdb.rdann
#: spins forever on it (found by fuzzing a file written by wfdb.wrann; the definition loop only
#: advances its index when the note parses)
APN_HANG = bytes.fromhex(
    "005817fc23232074696d65207265736f3c7574696f6e3a203130300000ecffffffff01002004"
    "00ec00007017002000ec0000701700040000")


def _motionsense_seed() -> dict[str, bytes]:
    from privkit.data.imu import MOTIONSENSE_COLUMNS

    rng = np.random.default_rng(0)
    files = {}
    for trial in ("wlk_7", "sit_5"):
        for code in (1, 4):
            data = rng.normal(size=(12, 12))
            lines = ["," + ",".join(MOTIONSENSE_COLUMNS)]
            lines += [f"{i}," + ",".join(f"{v:.3f}" for v in row) for i, row in enumerate(data)]
            files[f"A_DeviceMotion_data/{trial}/sub_{code}.csv"] = ("\n".join(lines) + "\n").encode()
    files["data_subjects_info.csv"] = b"code,weight,height,age,gender\n1,102,188,46,1\n4,72,180,29,0\n"
    return files


def _lara_seed() -> dict[str, bytes]:
    from privkit.data.imu import LARA_COLUMNS

    rng = np.random.default_rng(1)
    files = {}
    for subj in (7, 8):
        n = 12
        data = rng.normal(size=(n, 30))
        stem = f"S{subj:02d}/L01_S{subj:02d}_R01"
        lines = ["Time," + ",".join(LARA_COLUMNS)]
        lines += [f"{i / 100:.2f}," + ",".join(f"{v:.3f}" for v in row) for i, row in enumerate(data)]
        files[stem + ".csv"] = ("\n".join(lines) + "\n").encode()
        files[stem + "_labels.csv"] = ("\n".join(["Class,I-A_GaitCycle"] + [f"{c},0" for c in [1] * 6 + [3] * 6]) + "\n").encode()
    return files


def model_states() -> dict[str, tuple[str, dict[str, Any]]]:
    """Small valid states of the three apps: name -> (class path, state)."""
    import torch

    from privkit.apps.anonymiser import AnonConfig, IMUAnonymiser
    from privkit.apps.apnea import ApneaConfig, ApneaDetector
    from privkit.apps.svae import AnnVAE, VAEConfig

    torch.manual_seed(0)
    apnea = ApneaDetector(ApneaConfig.for_arch("v1", window=64, channels=2, kernel1=4, stride1=2,
                                               kernel2=2, stride2=2))
    vae = AnnVAE(VAEConfig(image_size=8, widths=(2, 4), latent_dim=4, n_steps=1, k=2, groups=2))
    anon = IMUAnonymiser("dfi", AnonConfig(ae_channels=(2, 2, 2), bottleneck=4, z_dim=4,
                                           embed_dim=2, mapper_hidden=(4,),
                                           disc_channels=(2, 2, 2), judge_filters=2, judge_fc=4,
                                           progress=False))
    anon.window, anon.n_channels, anon.device_channels = 16, 6, (6,)
    anon.subjects_, anon.activities_ = np.arange(2), np.arange(2)
    anon._build()
    anon._fitted = True
    return {"apnea": ("apnea", apnea._get_state()), "vae": ("vae", vae._get_state()),
            "anon": ("anon", anon._get_state())}


def seeds() -> dict[str, Any]:
    if not FILES:
        FILES.update(idx=_idx_seed(), cifar2=_cifar_seed(2), cifar4=_cifar_seed(4),
                     cifar5=_cifar_seed(5), png=_png_seed("PNG"), jpeg=_png_seed("JPEG"),
                     bmp=_png_seed("BMP"), edf=_edf_seed(), respevt=RESPEVT.encode(),
                     wfdb=_wfdb_seed(), motionsense=_motionsense_seed(), lara=_lara_seed())
    return FILES


# ------------------------------------------------------------------------------------- readers


def _write(d: str, files: dict[str, bytes]) -> Path:
    root = Path(d)
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def read_idx_input(d: str, data: bytes) -> None:
    from privkit.data.images import read_idx

    p = Path(d) / "x-idx3-ubyte"
    p.write_bytes(data)
    a = read_idx(p)
    assert isinstance(a, np.ndarray) and a.ndim >= 1 and a.dtype.isnative
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    assert a.nbytes == len(raw) - 4 - 4 * a.ndim  # every byte of the body is in the array


def read_cifar_input(d: str, data: bytes) -> None:
    from privkit.data.images import load_cifar10

    (Path(d) / "test_batch").write_bytes(data)
    out = load_cifar10(d, "test")
    assert out.images.shape[1:] == (3, 32, 32) and out.images.dtype == np.float32
    assert np.isfinite(out.images).all() and out.images.min() >= -1 and out.images.max() <= 1
    assert out.labels is not None and (out.labels >= 0).all() and (out.labels <= 9).all()


def read_folder_input(d: str, data: tuple[str, bytes]) -> None:
    from privkit.data.images import load_image_folder

    ext, raw = data
    (Path(d) / f"img.{ext}").write_bytes(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = load_image_folder(d, image_size=8)
    assert out.images.shape == (1, 3, 8, 8) and np.isfinite(out.images).all()


def read_edf_input(d: str, data: bytes) -> None:
    from privkit.data.ecg import read_edf_channel

    p = Path(d) / "x.rec"
    p.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sig, fs, _start, _label = read_edf_channel(p, "ECG")
    assert np.isfinite(sig).all() and np.isfinite(fs) and fs > 0


def read_respevt_input(d: str, data: bytes) -> None:
    from privkit.data.ecg import parse_respevt, read_ucddb_record

    root = _write(d, {"ucddb099.rec": seeds()["edf"], "ucddb099_respevt.txt": data})
    events = parse_respevt(root / "ucddb099_respevt.txt")
    assert all(np.isfinite(e.duration_s) and e.duration_s >= 0 for e in events)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = read_ucddb_record(root / "ucddb099.rec")
    assert set(np.unique(rec.second_labels)) <= {0, 1}


def read_wfdb_input(d: str, data: dict[str, bytes]) -> None:
    from privkit.data.ecg import read_apnea_ecg_record

    root = _write(d, {f"a01.{k}": v for k, v in data.items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = read_apnea_ecg_record(root / "a01")
    assert np.isfinite(rec.signal).all() and np.isfinite(rec.fs) and rec.fs > 0
    assert set(np.unique(rec.second_labels)) <= {-1, 0, 1}


def read_motionsense_input(d: str, data: dict[str, bytes]) -> None:
    from privkit.data.imu import read_motionsense

    root = _write(d, data)
    ds = read_motionsense(root, window=4, step=4)
    assert np.isfinite(ds.windows).all() and ds.windows.shape[1:] == (4, 12)
    assert all(np.isfinite(v).all() for info in ds.subject_info.values() for v in info.values())


def read_lara_input(d: str, data: dict[str, bytes]) -> None:
    from privkit.data.imu import read_lara

    root = _write(d, data)
    ds = read_lara(root, window=4, step=4)
    assert np.isfinite(ds.windows).all() and ds.windows.shape[1:] == (4, 30)
    assert ((ds.activity >= 0) & (ds.activity <= 7)).all()


_STATES: dict[str, Any] = {}


def _states() -> dict[str, Any]:
    if not _STATES:
        _STATES.update(model_states())
    return _STATES


def _hostile_values() -> list[Any]:
    import math

    import torch

    return [None, True, -1, 0, 1, 3, 40000, 2**63, -(2**63), 1e308, math.nan, math.inf, -math.inf,
            0.5, "x", "x" * 300, "avg", [], {}, [1, 2, 3], [40000] * 3, [-1, 0], {"a": 1},
            {"lo": [0.0], "hi": [1.0]}, torch.zeros(0), torch.zeros(3, 3), torch.zeros(2, 2, 2),
            torch.full((2,), math.nan), torch.zeros(2, dtype=torch.int64), torch.zeros(1, 40000),
            torch.zeros(4, dtype=torch.complex64)]


def hostile_state(name: str, path_i: int, value_i: int, action: str) -> dict[str, Any]:
    """A copy of the valid state of ``name`` with one entry replaced by a hostile value,
    deleted, reshaped, or a junk entry added (top level, config, or a tensor)."""
    import copy

    import torch

    state = copy.deepcopy(_states()[name][1])
    paths: list[tuple[str, ...]] = [("top", k) for k in state]
    for k, v in state.items():
        if isinstance(v, dict):
            paths += [("sub", k, kk) for kk in v][:60]
    path = paths[path_i % len(paths)]
    hostile = _hostile_values()
    container = state if path[0] == "top" else state[path[1]]
    key = path[-1]
    if action == "delete":
        container.pop(key, None)
    elif action == "junk":
        container["junk_" + str(key)] = hostile[value_i % len(hostile)]
    elif action == "reshape" and isinstance(container.get(key), torch.Tensor):
        t = container[key]
        container[key] = torch.zeros(tuple(s + 1 for s in t.shape) or (2,), dtype=t.dtype)
    else:
        container[key] = copy.deepcopy(hostile[value_i % len(hostile)])
    return state


def read_model_input(d: str, data: tuple[Any, ...]) -> None:
    import torch

    from privkit.api import _MAGIC, save_state
    from privkit.apps.anonymiser import IMUAnonymiser
    from privkit.apps.apnea import ApneaDetector
    from privkit.apps.svae import AnnVAE
    from privkit.fhe.envelope import seal_envelope

    mode, name = data[0], data[1]
    cls = {"apnea": ApneaDetector, "vae": AnnVAE, "anon": IMUAnonymiser}[name]
    path = Path(d) / "model.pk"
    if mode == "state":  # a well-formed, re-sealed but hostile state
        save_state(path, cls.model_kind, hostile_state(name, *data[2:]))
    elif mode == "explicit":  # a given state
        save_state(path, cls.model_kind, data[2])
    else:  # mutated bytes of the inner torch file, sealed again (the digest is not a signature)
        from fuzz_readers import mutate

        buf = io.BytesIO()
        torch.save({"magic": _MAGIC, "kind": cls.model_kind, "format": 1,
                    "state": _states()[name][1]}, buf)
        path.write_bytes(seal_envelope("model", mutate(buf.getvalue(), data[2]), cls.model_kind,
                                       meta={"model_kind": cls.model_kind, "format": 1}))
    m = cls.load(path)
    assert isinstance(m, cls)


def preload() -> None:
    """Import every reader and build the seeds (run in the fuzz worker before its limits)."""
    import privkit.apps.anonymiser  # noqa: F401
    import privkit.apps.apnea  # noqa: F401
    import privkit.apps.svae  # noqa: F401
    import privkit.data.ecg  # noqa: F401
    import privkit.data.images  # noqa: F401
    import privkit.data.imu  # noqa: F401
    import privkit.fhe.envelope  # noqa: F401

    seeds()
    _states()
    with tempfile.TemporaryDirectory() as d:  # warm every reader once (lazy imports inside)
        for fmt, data in (("idx", seeds()["idx"]), ("cifar", seeds()["cifar4"]),
                          ("folder", ("png", seeds()["png"])), ("edf", seeds()["edf"]),
                          ("wfdb", seeds()["wfdb"]), ("respevt", seeds()["respevt"]),
                          ("motionsense", seeds()["motionsense"]), ("lara", seeds()["lara"]),
                          ("model", ("explicit", "anon", _states()["anon"][1]))):
            sub = tempfile.mkdtemp(dir=d)
            READERS[fmt](sub, data)


READERS = {
    "idx": read_idx_input, "cifar": read_cifar_input, "folder": read_folder_input,
    "edf": read_edf_input, "respevt": read_respevt_input, "wfdb": read_wfdb_input,
    "apn": read_wfdb_input, "motionsense": read_motionsense_input, "lara": read_lara_input,
    "model": read_model_input,
}
