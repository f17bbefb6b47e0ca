"""Saved programs and client specs: deployment artefacts stored as data, never as code.

A compiled :class:`~privkit.fhe.program.EncryptedProgram` holds closures (each step's ``run``),
so it cannot be pickled, and it must not be: a pickle is code. :func:`save_program` writes the
*model* as data instead, in a ``"program"`` envelope (:mod:`privkit.fhe.envelope`, optionally
signed):

* the leaf layers: kind (from a whitelist of privkit.nn / torch layers), constructor arguments,
  and the state tensors (weights, folded BatchNorm statistics, calibrated ranges) as raw
  little-endian arrays with declared dtype, shape and offset;
* the compile arguments (input shape, the resolved CKKS parameters, batch);
* the plan summary (each step's kind, depth and rotations; the rotation list; the input layout).

:func:`load_program` checks every declared size against the bytes actually present before
allocating, rebuilds the ``torch.nn.Sequential`` from the data, compiles it again (compilation is
deterministic) and refuses the result with :class:`~privkit.errors.PlanMismatchError` if its plan
differs from the saved one.

:class:`ClientSpec` is what a client needs and nothing more: parameters, rotation steps, input
shape and layout, how to decode the output, the calibrated input range. No weight, no bias, no
activation bound.

>>> import torch
>>> from privkit import nn as pnn, fhe
>>> m = torch.nn.Sequential(pnn.Conv1d(1, 2, 3), pnn.Flatten(), pnn.Linear(2 * 14, 2))
>>> prog = fhe.compile(m, input_shape=(1, 16), params="n8192")
>>> blob = program_to_bytes(prog)
>>> again = program_from_bytes(blob)
>>> again.rotations == prog.rotations, again.client_spec().input_shape
(True, (1, 16))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import struct
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import (
    EnvelopeError,
    InputRangeError,
    ParameterError,
    PlanMismatchError,
    ShapeError,
    UnsupportedLayerError,
)
from .artifact_layers import LAYERS as _LAYERS
from .artifact_layers import (
    build_layer,
    check_args,
    expected_state,
    kind_of,
    layer_args,
)
from .encoding import encode_slots, sat_from_dict, sat_to_dict
from .ops.packed import PackedLayout
from .params import CKKSParams

if TYPE_CHECKING:  # pragma: no cover
    from .program import EncryptedProgram

__all__ = [
    "ClientSpec",
    "load_program",
    "plan_summary",
    "program_from_bytes",
    "program_to_bytes",
    "save_program",
]

FORMAT = "privkit-program"
FORMAT_VERSION = 1
_SPEC_FORMAT = "privkit-client-spec"
_DTYPES = {"float64": np.float64, "int64": np.int64, "bool": np.bool_}
_MAX_JSON = 4 << 20
_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_MAX_DIM = 1 << 24
_MAX_LAYERS = 512
_MAX_INPUT = 1 << 22  # values in one (batched) input

# -- plan summary ----------------------------------------------------------------------------------
def plan_summary(program: EncryptedProgram) -> dict[str, Any]:
    """The facts of a compiled plan that a rebuilt program must reproduce exactly."""
    return {
        "steps": [{"name": s.name, "kind": s.kind, "depth": int(s.depth),
                   "rotations": sorted(int(r) for r in s.rotations)} for s in program.steps],
        "depth": int(program.depth),
        "rotations": [int(r) for r in program.rotations],
        "params_fingerprint": program.params.fingerprint(),
        # JSON-shaped (tuples as lists): the saved plan is compared with a rebuilt one
        "input_layout": json.loads(json.dumps(dataclasses.asdict(program.input_layout))),
        "input_shape": [int(v) for v in program.input_shape],
        "out_features": int(program.out_features),
        "batch": int(program.batch),
        "conjugation": bool(program.conjugation),
        "input_encoding": _encoding_of(program),
        # multi-ciphertext programs only (a single-ciphertext plan stays as it was)
        **({"groups": {"channels_per_ciphertext": int(program.channels_per_ciphertext or 0),
                       "input_layouts": json.loads(json.dumps([dataclasses.asdict(lay) for lay in
                                                               program.input_layouts])),
                       "steps": [len(s.groups or ()) for s in program.steps]}}
           if program.multi else {}),
    }


def _encoding_of(program: EncryptedProgram) -> dict[str, Any] | None:
    enc = program.input_encoding
    return None if enc is None else sat_to_dict(enc[1])


def _first_difference(a: Any, b: Any, path: str = "plan") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{path}.{k}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
    return f"{path}: saved {a!r}, rebuilt {b!r}"


# -- program <-> bytes -----------------------------------------------------------------------------
def _describe(program: EncryptedProgram) -> tuple[dict[str, Any], bytes]:
    ref = program._reference
    if ref is None:
        raise ParameterError("this program carries no model (it was not made by fhe.compile); "
                             "compile it from the torch model to save it")
    layers, chunks, tensors, off = [], [], [], 0
    for name, mod in ref.named_modules():
        if not name or list(mod.children()):
            continue
        kind = kind_of(mod)
        layers.append({"name": name, "kind": kind, "args": layer_args(kind, mod)})
        for key, t in mod.state_dict().items():
            arr = t.detach().cpu().numpy()
            arr = arr.astype(np.float64) if arr.dtype.kind == "f" else arr
            arr = np.array(arr, dtype=arr.dtype.newbyteorder("<"), order="C")
            data = arr.tobytes()
            tensors.append({"key": f"{name}.{key}", "dtype": arr.dtype.name, "shape": list(arr.shape),
                            "offset": off, "nbytes": len(data)})
            chunks.append(data)
            off += len(data)
    desc = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "layers": layers,
        "tensors": tensors,
        "compile": {"input_shape": [int(v) for v in program.input_shape],
                    "params": program.params.to_dict(), "batch": int(program.batch),
                    "input_sat": program.input_encoding is not None,
                    **({"channels_per_ciphertext": int(program.channels_per_ciphertext or 0)}
                       if program.multi else {})},
        "input_range": None if program.input_range is None else [float(v) for v in program.input_range],
        "output_bound_hint": None if program.output_bound_hint is None else float(program.output_bound_hint),
        "plan": plan_summary(program),
    }
    return desc, b"".join(chunks)


def program_to_bytes(program: EncryptedProgram, *, sign_with: Any = None) -> bytes:
    """The program as a ``"program"`` envelope (data only; see the module docstring)."""
    from .envelope import seal_envelope

    desc, data = _describe(program)
    head = json.dumps(desc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    payload = struct.pack("<I", len(head)) + head + data
    fp = "program/" + hashlib.sha256(payload).hexdigest()[:32]
    meta = {"params": program.params.name, "layers": len(desc["layers"]),
            "input_shape": desc["compile"]["input_shape"], "depth": program.depth}
    return seal_envelope("program", payload, fp, meta=meta, sign_with=sign_with)


def _bad(msg: str) -> EnvelopeError:
    err = EnvelopeError(f"program envelope: {msg}")
    err.reason = "payload"  # type: ignore[attr-defined]
    return err


def _parse(payload: bytes) -> tuple[dict[str, Any], memoryview]:
    if len(payload) < 4:
        raise _bad("truncated")
    (hlen,) = struct.unpack_from("<I", payload, 0)
    if hlen > min(_MAX_JSON, len(payload) - 4):
        raise _bad(f"declared description length {hlen} exceeds the payload")
    try:
        desc = json.loads(payload[4 : 4 + hlen])
    except (ValueError, RecursionError) as e:
        raise _bad(f"unreadable description: {e}") from None
    if not isinstance(desc, dict) or desc.get("format") != FORMAT:
        raise _bad("not a privkit program description")
    if desc.get("version") != FORMAT_VERSION:
        raise _bad(f"format version {desc.get('version')!r} is not supported (this privkit reads "
                   f"{FORMAT_VERSION})")
    for key, typ in (("layers", list), ("tensors", list), ("compile", dict), ("plan", dict)):
        if not isinstance(desc.get(key), typ):
            raise _bad(f"{key!r} missing or malformed")
    return desc, memoryview(payload)[4 + hlen :]


def _tensors(desc: dict[str, Any], data: memoryview) -> dict[str, np.ndarray]:
    """Declared tensors -> arrays (views of the payload); sizes checked before anything else."""
    out: dict[str, np.ndarray] = {}
    pos = 0
    for t in desc["tensors"]:
        try:
            key, dt, shape, off, nb = t["key"], t["dtype"], t["shape"], t["offset"], t["nbytes"]
            if not isinstance(key, str) or not isinstance(dt, str) or dt not in _DTYPES or not isinstance(shape, list):
                raise ValueError("bad key, dtype or shape")
            if any(type(d) is not int or not 0 <= d <= _MAX_DIM for d in shape) or len(shape) > 5:
                raise ValueError(f"bad shape {shape}")
            if type(off) is not int or type(nb) is not int or off != pos:
                raise ValueError("tensors must be contiguous, in order")
            if nb != math.prod(shape) * np.dtype(_DTYPES[dt]).itemsize or off + nb > len(data):
                raise ValueError(f"declared size {nb} disagrees with its shape or the payload")
        except (KeyError, TypeError, ValueError) as e:
            raise _bad(f"tensor entry {t!r:.120}: {e}") from None
        if key in out:
            raise _bad(f"tensor {key!r} appears twice")
        out[key] = np.frombuffer(data[off : off + nb], dtype=np.dtype(_DTYPES[dt]).newbyteorder("<")).reshape(shape)
        pos += nb
    if pos != len(data):
        raise _bad(f"{len(data) - pos} bytes of tensor data are not declared")
    return out


def _build(desc: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
    """Whitelisted layers -> a torch Sequential (nested by the saved names), state loaded."""
    import torch

    layers = desc["layers"]
    if not 0 < len(layers) <= _MAX_LAYERS:
        raise _bad(f"{len(layers)} layers")
    used: set[str] = set()
    tree: OrderedDict[str, Any] = OrderedDict()
    for i, entry in enumerate(layers):
        if not isinstance(entry, dict) or set(entry) != {"name", "kind", "args"}:
            raise _bad(f"layer {i} is malformed")
        name, kind = entry["name"], entry["kind"]
        if not isinstance(kind, str) or kind not in _LAYERS:
            raise UnsupportedLayerError(
                f"saved program layer {i} has kind {kind!r:.60}; only {sorted(_LAYERS)} can be loaded")
        parts = name.split(".") if isinstance(name, str) else []
        if not parts or not all(_NAME.match(p) for p in parts):
            raise _bad(f"layer {i} has an invalid name {name!r}")
        args = check_args(kind, entry["args"], f"layer {name!r}")
        want = expected_state(kind, args)
        for key, (shape, dt) in want.items():
            arr = arrays.get(f"{name}.{key}")
            if arr is None or tuple(arr.shape) != shape or arr.dtype.name != dt:
                got = None if arr is None else (tuple(arr.shape), arr.dtype.name)
                raise _bad(f"layer {name!r} ({kind}) needs {key} of shape {shape} ({dt}), file has {got}")
            used.add(f"{name}.{key}")
        mod = build_layer(kind, args, {k: arrays[f"{name}.{k}"] for k in want}, f"layer {name!r}")
        node = tree
        for p in parts[:-1]:
            node = node.setdefault(p, OrderedDict())
            if not isinstance(node, OrderedDict):
                raise _bad(f"layer {name!r} nests inside a layer")
        if parts[-1] in node:
            raise _bad(f"layer name {name!r} appears twice")
        node[parts[-1]] = mod
    if used != set(arrays):
        raise _bad(f"tensors {sorted(set(arrays) - used)[:4]} belong to no layer")

    def seq(node: OrderedDict[str, Any]) -> Any:
        return torch.nn.Sequential(OrderedDict(
            (k, seq(v) if isinstance(v, OrderedDict) else v) for k, v in node.items()))

    return seq(tree).double().eval()


def program_from_bytes(blob: bytes, *, verify_with: Any = None) -> EncryptedProgram:
    """Rebuild a program from :func:`program_to_bytes` output (see the module docstring).

    Raises :class:`~privkit.errors.EnvelopeError` for a damaged / malformed file,
    :class:`~privkit.errors.UnsupportedLayerError` for a layer kind outside the whitelist and
    :class:`~privkit.errors.PlanMismatchError` when the rebuilt plan differs from the saved one.
    """
    from .compiler import compile as fhe_compile
    from .envelope import open_envelope

    env = open_envelope(blob, "program", verify_with=verify_with)
    desc, data = _parse(env.payload)
    arrays = _tensors(desc, data)
    model = _build(desc, arrays)
    comp = desc["compile"]
    try:
        shape = tuple(int(v) for v in comp["input_shape"])
        params = CKKSParams.from_dict(comp["params"])
        batch = comp["batch"]
        input_sat = comp.get("input_sat", False)
        if type(batch) is not int or not 1 <= batch <= 4096 or not 2 <= len(shape) <= 4:
            raise ValueError(f"batch {batch!r}, input shape {shape}")
        if not all(0 < v <= _MAX_DIM for v in shape) or math.prod(shape) * batch > _MAX_INPUT:
            raise ValueError(f"input shape {shape}")
        if type(input_sat) is not bool:
            raise ValueError(f"input_sat {input_sat!r}")
        cpc = comp.get("channels_per_ciphertext")
        if cpc is not None and (type(cpc) is not int or not 1 <= cpc <= params.slots):
            raise ValueError(f"channels_per_ciphertext {cpc!r}")
    except (KeyError, TypeError, ValueError) as e:
        raise _bad(f"compile arguments are malformed: {e}") from None
    program = fhe_compile(model, input_shape=shape, params=params, batch=batch, input_sat=input_sat,
                          channels_per_ciphertext=cpc)
    rebuilt = plan_summary(program)
    if rebuilt != desc["plan"]:
        raise PlanMismatchError(
            "the saved program compiles to another plan than the one saved (written by another "
            f"privkit version, or altered): {_first_difference(desc['plan'], rebuilt)}")
    rng = desc.get("input_range")
    if rng is not None:
        program.input_range = _check_range(rng)
    hint = desc.get("output_bound_hint")
    if hint is not None:
        if type(hint) not in (int, float) or not (math.isfinite(hint) and hint >= 0):
            raise _bad(f"output_bound_hint must be a finite number >= 0, got {hint!r:.40}")
        program.output_bound_hint = float(hint)
    program._artifact_id = env.fingerprint
    return program


def save_program(program: EncryptedProgram, path: str | os.PathLike, *, sign_with: Any = None) -> None:
    """Write :func:`program_to_bytes` to ``path`` atomically."""
    from .envelope import write_envelope

    write_envelope(path, program_to_bytes(program, sign_with=sign_with))


def load_program(path: str | os.PathLike, *, verify_with: Any = None) -> EncryptedProgram:
    """Read a program saved by :func:`save_program` (see :func:`program_from_bytes`)."""
    try:
        with open(path, "rb") as fh:
            blob = fh.read()
    except OSError as e:
        raise EnvelopeError(f"cannot read program {str(path)!r}: {e}") from e
    return program_from_bytes(blob, verify_with=verify_with)


def _check_range(rng: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in rng)
    except (TypeError, ValueError) as e:
        raise ParameterError(f"input range must be (low, high), got {rng!r}") from e
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ParameterError(f"input range must be finite with low < high, got {rng!r}")
    return lo, hi


def _int(v: Any, lo: int, hi: int) -> int:
    """A JSON integer within [lo, hi] (no bool, no float), else ValueError."""
    if type(v) is not int or not lo <= v <= hi:
        raise ValueError(f"expected an integer in [{lo}, {hi}], got {v!r:.40}")
    return v


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise ValueError(f"expected true or false, got {v!r:.40}")
    return v


def _str(v: Any, limit: int = 256) -> str:
    if type(v) is not str or len(v) > limit:
        raise ValueError(f"expected a string of at most {limit} characters, got {v!r:.40}")
    return v


# -- client spec -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ClientSpec:
    """What a client needs to make keys, encode inputs and decode outputs; no weights.

    ``model_id`` names the program (a hash of the saved program: the client can tell which model
    it talks to; a hash reveals nothing of the weights). ``input_range`` is the calibrated range of
    the input values: :meth:`check_input` refuses values outside it, because the model's
    polynomial approximations are wrong there and nothing in the decrypted output would show it.
    """

    params: CKKSParams
    rotations: tuple[int, ...]
    conjugation: bool
    input_shape: tuple[int, ...]
    input_layout: PackedLayout
    batch: int
    out_features: int
    input_range: tuple[float, float] | None = None
    model_id: str = ""
    output: str = "logits"
    #: None (the values) or the summed-area-table encoding of a first box convolution
    #: (``{"kind": "sat", "kernel", "stride", "pads"}``, see :mod:`privkit.fhe.encoding`)
    input_encoding: dict[str, Any] | None = None
    #: the level the client drops a fresh ciphertext to before sending it (the program's
    #: :meth:`~privkit.fhe.program.EncryptedProgram.start_level`: the server would drop the
    #: spare levels anyway, so sending them only makes the upload larger); None: fresh
    encrypt_level: int | None = None

    @classmethod
    def from_program(cls, program: EncryptedProgram) -> ClientSpec:
        if len(program.input_layouts) > 1:
            raise ShapeError(
                f"this program takes its input in {len(program.input_layouts)} ciphertexts (the "
                f"input {tuple(program.input_shape)} does not fit one ciphertext of "
                f"{program.params.slots} slots); the client spec and the deploy Client / Server / "
                "HTTP path carry ONE input ciphertext: use program.encrypt_input / run in process, "
                "or a preset whose ciphertext holds the input")
        mid = getattr(program, "_artifact_id", None)
        if not mid:
            try:
                mid = program_fingerprint(program)
            except (ParameterError, UnsupportedLayerError):
                mid = ""
        fresh = program.params.depth
        start = program.start_level(fresh)
        return cls(program.params, tuple(program.rotations), bool(program.conjugation),
                   tuple(program.input_shape), program.input_layout, int(program.batch),
                   int(program.out_features), program.input_range, mid,
                   input_encoding=_encoding_of(program),
                   encrypt_level=start if start < fresh else None)

    # -- client operations
    def check_input(self, x: np.ndarray) -> None:
        """Raise :class:`~privkit.errors.InputRangeError` when ``x`` leaves the calibrated range."""
        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise InputRangeError("the input holds NaN or infinite values")
        if self.input_range is None:
            return
        lo, hi = self.input_range
        if x.size and (x.min() < lo or x.max() > hi):
            raise InputRangeError(
                f"input values span [{x.min():.4g}, {x.max():.4g}] but the model was calibrated "
                f"for [{lo:.4g}, {hi:.4g}]; outside it the encrypted result is silently wrong. "
                "Normalise the input as in training, or ask the model owner to recalibrate")

    def encode_input(self, x: np.ndarray) -> np.ndarray:
        """Input -> the slot vector to encrypt (same as ``EncryptedProgram.encode_input``)."""
        sat = None if self.input_encoding is None else sat_from_dict(self.input_encoding, self.input_shape)
        return encode_slots(x, self.input_shape, self.batch, self.input_layout, self.params.slots, sat)

    def decode_output(self, values: np.ndarray) -> np.ndarray:
        """Decrypted slot values -> logits ``(out_features,)`` (``(batch, out_features)``)."""
        vals = np.asarray(values)[: self.out_features * self.batch]
        return vals if self.batch == 1 else vals.reshape(self.batch, self.out_features)

    # -- storage
    def to_dict(self) -> dict[str, Any]:
        return {"format": _SPEC_FORMAT, "version": 1, "params": self.params.to_dict(),
                "rotations": list(self.rotations), "conjugation": self.conjugation,
                "input_shape": list(self.input_shape),
                "input_layout": dataclasses.asdict(self.input_layout), "batch": self.batch,
                "out_features": self.out_features,
                "input_range": None if self.input_range is None else list(self.input_range),
                "model_id": self.model_id, "output": self.output,
                "input_encoding": self.input_encoding, "encrypt_level": self.encrypt_level}

    @classmethod
    def from_dict(cls, d: Any) -> ClientSpec:
        try:
            if d["format"] != _SPEC_FORMAT or d["version"] != 1:
                raise ValueError("not a privkit client spec of version 1")
            params = CKKSParams.from_dict(d["params"])
            slots = params.slots
            lay = d["input_layout"]
            shape = tuple(_int(v, 1, _MAX_DIM) for v in d["input_shape"])
            if not 2 <= len(shape) <= 4 or math.prod(shape) > _MAX_INPUT:
                raise ValueError(f"input shape {shape}")
            lshape = lay.get("shape", [])
            lgaps = lay.get("gaps", [])
            if not isinstance(lshape, list) or not isinstance(lgaps, list) or len(lshape) > 3 or len(lgaps) > 3:
                raise ValueError("input layout shape / gaps must be lists of at most 3 axes")
            layout = PackedLayout(_int(lay["channels"], 1, slots), _int(lay["length"], 1, slots),
                                  _int(lay["gap"], 1, slots), _int(lay["block"], 0, slots),
                                  _bool(lay["clean"]), tuple(_int(v, 1, slots) for v in lshape),
                                  tuple(_int(v, 1, slots) for v in lgaps))
            enc = d.get("input_encoding")
            if enc is not None:
                sat_from_dict(enc, shape)  # checked now, not at the first encrypt
            batch, outs = _int(d["batch"], 1, 4096), _int(d["out_features"], 1, slots)
            if math.prod(shape) * batch > _MAX_INPUT or layout.channels != shape[0] * batch:
                raise ValueError(f"input layout {layout} does not hold {batch} inputs of {shape}")
            if layout.span > slots or batch * outs > slots:
                raise ValueError(f"layout span {layout.span} or {batch} x {outs} outputs exceed "
                                 f"the {slots} slots")
            rots = d["rotations"]
            if not isinstance(rots, list) or len(rots) > slots:
                raise ValueError(f"rotations must be a list of at most {slots} steps")
            rng = d["input_range"]
            lvl = d.get("encrypt_level")  # absent in specs written before it existed
            return cls(params, tuple(_int(r, -slots, slots) for r in rots),
                       _bool(d["conjugation"]), shape, layout, batch, outs,
                       None if rng is None else _check_range(rng), _str(d["model_id"]),
                       _str(d["output"]), input_encoding=enc,
                       encrypt_level=None if lvl is None else _int(lvl, 0, params.depth))
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError, ShapeError, ParameterError) as e:
            raise EnvelopeError(f"malformed client spec: {e}") from None

    def to_bytes(self, *, sign_with: Any = None) -> bytes:
        """The spec in a ``"client-spec"`` envelope (what a server hands out at ``GET /model``)."""
        from .envelope import seal_envelope

        payload = json.dumps(self.to_dict(), sort_keys=True, allow_nan=False).encode()
        return seal_envelope("client-spec", payload, self.model_id or "client-spec",
                             sign_with=sign_with)

    @classmethod
    def from_bytes(cls, blob: bytes, *, verify_with: Any = None) -> ClientSpec:
        from .envelope import open_envelope

        env = open_envelope(blob, "client-spec", verify_with=verify_with)
        try:
            d = json.loads(env.payload)
        except (ValueError, RecursionError) as e:
            raise EnvelopeError(f"client spec envelope holds unreadable JSON: {e}") from None
        return cls.from_dict(d)

    def save(self, path: str | os.PathLike, *, sign_with: Any = None) -> None:
        from .envelope import write_envelope

        write_envelope(path, self.to_bytes(sign_with=sign_with))

    @classmethod
    def load(cls, path: str | os.PathLike, *, verify_with: Any = None) -> ClientSpec:
        try:
            with open(path, "rb") as fh:
                blob = fh.read()
        except OSError as e:
            raise EnvelopeError(f"cannot read client spec {str(path)!r}: {e}") from e
        return cls.from_bytes(blob, verify_with=verify_with)


def program_fingerprint(program: EncryptedProgram) -> str:
    """``"program/<hash>"`` of the program's saved form (the ``model_id`` of its client spec)."""
    desc, data = _describe(program)
    head = json.dumps(desc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    return "program/" + hashlib.sha256(struct.pack("<I", len(head)) + head + data).hexdigest()[:32]
