"""EncryptedProgram: a compiled model that a server runs on ciphertexts with public keys only.

Built by :func:`privkit.fhe.compile`. The client generates keys with :meth:`keygen` (exactly the
Galois keys the program uses), encrypts the input, and decrypts the result with
:meth:`decrypt_output`; the server calls :meth:`run` with the public bundle.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import (
    InputRangeError,
    InputRangeWarning,
    KeyMismatchError,
    ParameterError,
    ShapeError,
)
from .backend import Backend, Ciphertext
from .keys import KeySet, PublicBundle
from .ops.packed import PackedLayout, unpack
from .params import CKKSParams

__all__ = ["EncryptedProgram", "Step"]

#: the smallest capacity (largest coefficient, in value units) a result may be left with at the
#: end of a program: the spare levels of a ciphertext are dropped before the first layer (every
#: later operation then works on fewer primes, 20-25% faster per dropped level) down to the
#: lowest final level that still holds this much
MIN_OUTPUT_CAPACITY = 2.0**16
#: with an observed output magnitude (``output_bound_hint``), the result's level must hold this
#: many times it
OBSERVED_OUTPUT_MARGIN = 1000.0


@dataclasses.dataclass
class Step:
    """One lowered layer: what it runs, its level cost and the rotations it uses."""

    name: str
    kind: str
    depth: int
    rotations: list[int]
    run: Callable[[Backend, Ciphertext], Ciphertext]
    out_layout: PackedLayout | None
    detail: str = ""
    #: the torch module whose output this step reproduces (a folded BatchNorm's, say)
    ref_name: str = ""
    #: encrypted intermediate = ref_scale * torch activation + ref_shift (a pool whose 1/k was
    #: folded forward, an activation's scaling folded back; scalars or per-channel arrays)
    ref_scale: Any = 1.0
    ref_shift: Any = 0.0
    #: multi-ciphertext programs: the output layout of every channel group (then ``run`` maps a
    #: list of ciphertexts to a list); None: one ciphertext in, one out
    groups: list[PackedLayout] | None = None


@dataclasses.dataclass
class LayerReport:
    name: str
    kind: str
    detail: str
    adds: int
    pt_mults: int
    ct_mults: int
    rotations: int
    depth: int
    level_after: int
    seconds: float
    max_abs_error: float | None = None
    mean_abs_error: float | None = None


class EncryptedProgram:
    """A model lowered to a sequence of encrypted operators on one ciphertext."""

    def __init__(
        self,
        params: CKKSParams,
        steps: list[Step],
        input_layout: PackedLayout,
        input_shape: tuple[int, ...],
        out_features: int,
        conjugation: bool,
        reference: Any = None,
        batch: int = 1,
        input_encoding: tuple[str, Any] | None = None,
        input_layouts: list[PackedLayout] | None = None,
        choice: str = "",
    ) -> None:
        self.params = params
        self.steps = steps
        self.input_layout = input_layout
        self.input_shape = input_shape
        self.out_features = out_features
        self.conjugation = conjugation
        self._reference = reference  # the torch model (plaintext twin), for traces
        self.batch = batch
        #: (name, geometry): the client transforms each input channel before packing; only
        #: ("sat", SatGeometry): the summed-area table of the zero-padded channel, for a first
        #: box convolution (see privkit.fhe.encoding)
        self.input_encoding = input_encoding
        #: multi-ciphertext programs (channels split in groups, see privkit.fhe.compiler.multi):
        #: the layout of every input ciphertext; the value between steps is a list
        self.multi = input_layouts is not None
        self.input_layouts = list(input_layouts) if input_layouts is not None else [input_layout]
        #: why ``params="auto"`` chose this packing (empty when there was no choice to make)
        self.choice = choice
        self._last: list[LayerReport] = []
        #: calibrated input range (low, high), public (part of client_info and the client spec);
        #: set it with calibrate_input(data), or assign a number r (meaning [-r, r]) or a pair.
        #: None: unchecked.
        self._input_range: tuple[float, float] | None = None
        #: the largest |output| the reference model gave on representative inputs (set by
        #: :meth:`calibrate_input` or the model owner); lets :meth:`start_level` leave the
        #: result at level 0 when the tracked worst case is far too pessimistic. None: unused.
        self.output_bound_hint: float | None = None
        #: what encode_input does with values beyond input_range: "warn", "raise" or "ignore"
        self.on_range = "warn"
        #: how many values the last encode_input found beyond input_range
        self.last_input_out_of_range = 0
        self._run_notes: dict[str, Any] = {}

    # -- planning facts ----------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Levels the program consumes."""
        return sum(s.depth for s in self.steps)

    def start_level(self, available: int) -> int:
        """The level :meth:`run` drops a level-``available`` input to before the first layer.

        A program needs :attr:`depth` levels; the levels above them only make every operation
        slower (more RNS primes: about 20-25% per level at N=16384), so the input is
        mod-switched down (free and exact) to leave the result at the lowest level whose
        capacity holds twice the output's tracked worst-case bound (:meth:`output_bound`, for
        the calibrated :attr:`input_range`) and at least :data:`MIN_OUTPUT_CAPACITY`. Without a
        calibrated range the result is left at level 1 (or higher), which holds any value a
        model produces.

        >>> from privkit.fhe.params import CKKSParams
        >>> from privkit.fhe.ranges import capacities
        >>> [round(capacities(CKKSParams.preset(p))[0]) for p in ("n8192", "n16384")]  # level 0
        [256, 262144]
        """
        from .ranges import capacities

        caps = capacities(self.params)
        bound = self.output_bound()
        hint = self.output_bound_hint
        if bound is None and hint is None:
            need = None
        elif hint is None:
            need = 2.0 * bound
        else:
            seen = OBSERVED_OUTPUT_MARGIN * hint
            need = seen if bound is None else min(2.0 * bound, seen)
        if need is None:
            final = 1
        else:
            need = max(MIN_OUTPUT_CAPACITY, need)
            final = next((lv for lv, c in enumerate(caps) if c >= need), len(caps) - 1)
        return min(available, self.depth + final)

    def _input_bound_vector(self, slots: int, length: int) -> np.ndarray:
        b = np.zeros(slots)
        # a summed-area-table encoding sums up to every input value of its channel
        grow = int(np.prod(self.input_shape[1:])) if self.input_encoding is not None else 1
        b[:length] = float(self.input_bound or 0.0) * grow
        return b

    def output_bound(self) -> float | None:
        """The tracked worst-case coefficient bound of the result for inputs in
        :attr:`input_range` (None without one), from a dry run on the simulator: the bound
        arithmetic depends on the range and the weights only, never on the data. Cached per
        range."""
        import warnings

        if self.input_bound is None:
            return None
        cached = getattr(self, "_output_bound_cache", None)
        if cached is not None and cached[0] == self._input_range:
            return cached[1]
        keys = KeySet.generate(self.params, backend="sim", rotations=self.rotations,
                               conjugation=self.conjugation)
        be = keys.backend
        cts = [keys.encrypt(np.zeros(lay.span)) for lay in self.input_layouts]
        cts = [ct.replace(bound=self._input_bound_vector(be.slots, ct.length)) for ct in cts]
        val: Any = cts if self.multi else cts[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for step in self.steps:
                val = step.run(be, val)
        ct = val[0] if self.multi else val
        value = None if ct.bound is None else float(np.mean(ct.bound))
        self._output_bound_cache = (self._input_range, value)
        return value

    @property
    def ciphertexts(self) -> int:
        """The most ciphertexts one activation of the program uses (1 unless channels are split)."""
        return max([len(self.input_layouts)] + [len(s.groups) for s in self.steps if s.groups])

    @property
    def channels_per_ciphertext(self) -> int | None:
        """The channel cap per ciphertext of a multi-ciphertext program (None otherwise)."""
        return getattr(self, "_group_cap", None) if self.multi else None

    @property
    def rotations(self) -> list[int]:
        """The Galois-key steps the program uses (what :meth:`keygen` generates)."""
        out: set[int] = set()
        for s in self.steps:
            out |= {r % self.params.slots for r in s.rotations}
        out.discard(0)
        return sorted(out)

    def plan_table(self) -> str:
        """The level plan, one row per layer (a multi-ciphertext program says how many
        ciphertexts each layer maps, ``[in->out ct]``, and ``params="auto"`` why it chose)."""
        head = []
        if self.multi:
            head.append(f"packing: up to {self.ciphertexts} ciphertexts per activation "
                        f"({self.channels_per_ciphertext} channels each), input in "
                        f"{len(self.input_layouts)} ciphertext(s), output in 1")
        if self.choice:
            head.append(f"auto: {self.choice}")
        rows = head + [f"{'layer':<24}{'op':<14}{'levels':>7}{'left':>6}{'rots':>6}  detail"]
        left = self.params.depth
        for s in self.steps:
            left -= s.depth
            rows.append(f"{s.name[:23]:<24}{s.kind:<14}{s.depth:>7}{left:>6}{len(s.rotations):>6}  {s.detail}")
        return "\n".join(rows)

    def client_info(self) -> dict[str, Any]:
        """What a client needs to make keys and encode inputs (no weights)."""
        info = {
            "params": self.params.to_dict(),
            "rotations": self.rotations,
            "conjugation": self.conjugation,
            "input_shape": list(self.input_shape),
            "input_layout": dataclasses.asdict(self.input_layout),
            "out_features": self.out_features,
            "batch": self.batch,
            "input_range": None if self.input_range is None else list(self.input_range),
            "input_encoding": self.input_encoding[0] if self.input_encoding else "values",
        }
        if len(self.input_layouts) > 1:
            info["input_layouts"] = [dataclasses.asdict(lay) for lay in self.input_layouts]
        return info

    @property
    def input_range(self) -> tuple[float, float] | None:
        """The calibrated range ``(low, high)`` of input values (None: unchecked)."""
        return self._input_range

    @input_range.setter
    def input_range(self, value: Any) -> None:
        self._input_range = _as_range(value)

    @property
    def input_bound(self) -> float | None:
        """The largest |value| an input may hold (from :attr:`input_range`), or None."""
        if self._input_range is None:
            return None
        return max(abs(self._input_range[0]), abs(self._input_range[1]))

    def calibrate_input(self, data: Any, margin: float = 1.1) -> tuple[float, float]:
        """Set :attr:`input_range` from representative inputs: their ``[min, max]`` widened by
        ``margin`` about its midpoint (the range :meth:`encode_input` then checks); returns it."""
        arr = np.asarray(data, dtype=np.float64)
        if arr.size == 0 or not np.all(np.isfinite(arr)):
            raise ParameterError("calibrate_input needs a non-empty array of finite values")
        if not (np.isfinite(margin) and margin >= 1.0):
            raise ParameterError(f"margin must be a finite number >= 1, got {margin!r}")
        lo, hi = float(arr.min()), float(arr.max())
        mid, half = (lo + hi) / 2, max((hi - lo) / 2, 1e-12)
        self.input_range = (mid - half * margin, mid + half * margin)
        self._observe_outputs(arr)
        return self.input_range

    def _observe_outputs(self, arr: np.ndarray) -> None:
        """Set :attr:`output_bound_hint` from the reference model's outputs on ``arr`` (inputs of
        :attr:`input_shape`, with or without the channel axis of a one-channel input)."""
        import torch

        shape = tuple(self.input_shape)
        if self._reference is None or self.input_encoding is not None:
            return
        if arr.shape[1:] == shape[1:] and shape[0] == 1:
            arr = arr[:, None]
        if arr.ndim != len(shape) + 1 or arr.shape[1:] != shape:
            return
        with torch.no_grad():
            out = self._reference(torch.as_tensor(arr, dtype=torch.float64))
        self.output_bound_hint = float(out.abs().max())
    def client_spec(self) -> Any:
        """A :class:`~privkit.fhe.artifact.ClientSpec`: everything a client needs, no weights."""
        from .artifact import ClientSpec

        return ClientSpec.from_program(self)

    # -- artefacts ---------------------------------------------------------------------------------
    def save(self, path: Any, *, sign_with: Any = None) -> None:
        """Save as a ``"program"`` envelope holding the model as data (see :mod:`.artifact`)."""
        from .artifact import save_program

        save_program(self, path, sign_with=sign_with)

    def to_bytes(self, *, sign_with: Any = None) -> bytes:
        """The bytes :meth:`save` writes."""
        from .artifact import program_to_bytes

        return program_to_bytes(self, sign_with=sign_with)

    @classmethod
    def load(cls, path: Any, *, verify_with: Any = None) -> EncryptedProgram:
        """Rebuild a saved program (compiled again from the data, plan checked)."""
        from .artifact import load_program

        return load_program(path, verify_with=verify_with)

    @classmethod
    def from_bytes(cls, blob: bytes, *, verify_with: Any = None) -> EncryptedProgram:
        from .artifact import program_from_bytes

        return program_from_bytes(blob, verify_with=verify_with)

    def __repr__(self) -> str:
        return (
            f"<EncryptedProgram {len(self.steps)} steps, depth {self.depth}/{self.params.depth}, "
            f"{len(self.rotations)} rotation keys, {self.params.describe()}>"
        )

    # -- client side -------------------------------------------------------------------------------
    def keygen(self, backend: str = "seal", **kwargs: Any) -> KeySet:
        """A key set with exactly the keys this program needs."""
        return KeySet.generate(self.params, backend=backend, rotations=self.rotations,
                               conjugation=self.conjugation, **kwargs)

    def encode_input(self, x: np.ndarray, *, on_range: str | None = None) -> np.ndarray:
        """Input of shape ``input_shape`` (without the channel axis for one channel) -> the
        vector to encrypt.

        A program compiled with ``batch=b`` takes ``(b, *input_shape)`` (or ``(b, *spatial)``).
        Values beyond the calibrated :attr:`input_range` are counted
        (:attr:`last_input_out_of_range`) and, per ``on_range`` (default :attr:`on_range`),
        warned about (:class:`~privkit.errors.InputRangeWarning`), refused
        (:class:`~privkit.errors.InputRangeError`) or ignored.
        """
        from .encoding import encode_slots

        x = np.asarray(x, dtype=np.float64)
        self._check_input_range(x, self.on_range if on_range is None else on_range)
        if len(self.input_layouts) > 1:
            return self._encode_groups(x)
        sat = self.input_encoding[1] if self.input_encoding is not None else None
        return encode_slots(x, self.input_shape, self.batch, self.input_layout, self.params.slots, sat)

    def _encode_groups(self, x: np.ndarray) -> list[np.ndarray]:
        """An input whose channels do not fit one ciphertext -> one vector per channel group."""
        from .encoding import encode_slots

        if x.shape != tuple(self.input_shape):
            raise ShapeError(f"the program expects input of shape {tuple(self.input_shape)}, got {x.shape}")
        out, start = [], 0
        for lay in self.input_layouts:
            part = x[start : start + lay.channels]
            out.append(encode_slots(part, part.shape, 1, lay, self.params.slots))
            start += lay.channels
        return out

    def _check_input_range(self, x: np.ndarray, on_range: str) -> None:
        if on_range not in ("warn", "raise", "ignore"):
            raise ParameterError(f"on_range must be 'warn', 'raise' or 'ignore', got {on_range!r}")
        if not np.all(np.isfinite(x)):
            raise InputRangeError("the input holds NaN or infinite values")
        self.last_input_out_of_range = 0
        if self.input_range is None:
            return
        lo, hi = self.input_range
        n_out = int(np.count_nonzero((x < lo) | (x > hi)))
        self.last_input_out_of_range = n_out
        if not n_out or on_range == "ignore":
            return
        msg = (f"{n_out} of {x.size} input values lie outside the calibrated range "
               f"[{lo:.4g}, {hi:.4g}] (they span [{float(x.min()):.4g}, {float(x.max()):.4g}]); "
               "the encrypted result may be wrong for them "
               "(polynomial activations diverge outside their range). Clip or rescale the "
               "input, or recalibrate with calibrate_input")
        if on_range == "raise":
            raise InputRangeError(msg)
        import warnings

        warnings.warn(msg, InputRangeWarning, stacklevel=3)

    def encrypt_input(self, keys: KeySet, x: np.ndarray, *, on_range: str | None = None) -> Any:
        """The encrypted input: one ciphertext, or a list of them when the input's channels do
        not fit one (a multi-ciphertext program with ``len(input_layouts) > 1``)."""
        vec = self.encode_input(x, on_range=on_range)
        return [keys.encrypt(v) for v in vec] if isinstance(vec, list) else keys.encrypt(vec)

    def decrypt_output(self, keys: KeySet, out: Ciphertext) -> np.ndarray:
        """Decrypted logits, shape ``(out_features,)`` (``(batch, out_features)`` when batched)."""
        vals = keys.decrypt(out.replace(length=self.out_features * self.batch))
        return vals if self.batch == 1 else vals.reshape(self.batch, self.out_features)

    # -- server side -------------------------------------------------------------------------------
    def _backend_for(self, ct: Ciphertext, bundle: PublicBundle | None, backend: Backend | None) -> Backend:
        if isinstance(bundle, KeySet):
            raise ParameterError(
                "program.run got a KeySet, which holds the SECRET key; a server gets only the "
                "public bundle: pass keys.public_bundle()"
            )
        if bundle is not None and not isinstance(bundle, PublicBundle):
            raise ParameterError(f"expected a PublicBundle, got {type(bundle).__name__}")
        if not isinstance(ct, Ciphertext):
            raise ParameterError(f"expected a Ciphertext input, got {type(ct).__name__}")
        be = backend if backend is not None else (bundle.backend if bundle is not None else ct.backend)
        if be.params.fingerprint() != self.params.fingerprint():
            raise KeyMismatchError(
                f"the program was compiled for {self.params.describe()} but the keys use "
                f"{be.params.describe()}; generate keys with program.keygen()"
            )
        missing = [r for r in self.rotations if be.rotation_path(r) is None]
        if missing:
            from ..errors import MissingKeyError

            raise MissingKeyError(
                f"the public bundle lacks Galois keys for rotations {missing[:8]}; generate the key "
                "set with program.keygen() so that it holds every key the program uses"
            )
        return be

    def run(self, ct: Ciphertext | list[Ciphertext], bundle: PublicBundle | None = None,
            backend: Backend | None = None, *, allow_insecure: bool = False,
            _trace: Callable[[int, Any], None] | None = None) -> Ciphertext:
        """Evaluate the program on an encrypted input with public keys only.

        Refuses (:class:`~privkit.errors.SecurityDowngradeError`) a simulator bundle/backend or
        parameters below 128-bit security unless ``allow_insecure=True``; :meth:`report` then
        says so. The input must hold exactly the program's input length
        (:class:`~privkit.errors.ShapeError` otherwise). A multi-ciphertext program whose input
        does not fit one ciphertext takes the list :meth:`encrypt_input` returns; the result is
        always one ciphertext.
        """
        from .keys import require_secure_backend

        cts = list(ct) if isinstance(ct, (list, tuple)) else [ct]
        if len(cts) != len(self.input_layouts):
            raise ShapeError(
                f"the program takes its input in {len(self.input_layouts)} ciphertext(s), got "
                f"{len(cts)}; encrypt it with program.encrypt_input")
        be = self._backend_for(cts[0], bundle, backend)
        insecure = require_secure_backend(be, allow_insecure, "EncryptedProgram.run")
        checked = []
        for c, lay in zip(cts, self.input_layouts):
            if not isinstance(c, Ciphertext):
                raise ParameterError(f"expected a Ciphertext input, got {type(c).__name__}")
            be._check(c)  # same key set
            if c.backend is not be:
                c = c.replace(backend=be)
            if c.length != lay.span:
                raise ShapeError(
                    f"the encrypted input has {c.length} values but the program expects "
                    f"{lay.span} (input shape {self.input_shape}); encode it with "
                    "program.encode_input"
                )
            if c.bound is None and self.input_bound is not None:
                # a received ciphertext carries no bound; the calibrated range is public
                c = c.replace(bound=self._input_bound_vector(be.slots, c.length))
            checked.append(c)
        stats_before = dict(be.range_stats)
        level = min(c.level for c in checked)
        be.require_levels(min(checked, key=lambda c: c.level), self.depth, "the compiled program")
        start = self.start_level(level)
        checked = [be.mod_switch_to(c, start) if start < c.level else c for c in checked]
        reports = []
        sink: list[tuple[float, float, int]] = []
        outer_sink = getattr(be, "overflow_sink", None)
        be.overflow_sink = sink
        try:
            val = self._run_steps(be, checked if self.multi else checked[0], reports, _trace)
        finally:
            be.overflow_sink = outer_sink
        ct = val[0] if self.multi else val
        if sink:
            self._warn_overflow(sink)
        self._last = reports
        self._run_notes = {
            "insecure": insecure,
            "inputs_out_of_range": self.last_input_out_of_range,
            **{k: v - stats_before.get(k, 0) for k, v in be.range_stats.items()},
        }
        return ct

    def _warn_overflow(self, sink: list[tuple[float, float, int]]) -> None:
        """One warning per run for the results whose tracked worst case exceeded their level's
        capacity; its text depends only on the program and its levels, so Python's default
        filter shows it once per program, not once per window."""
        import warnings

        from ..errors import ScaleOverflowWarning

        levels = sorted({lv for _, _, lv in sink})
        cap = min(c for _, c, _ in sink)
        warnings.warn(
            f"{self!r}: the tracked worst-case bounds of some results exceed what their level "
            f"holds (levels {levels}, capacity down to {cap:.3g}); these bounds assume the worst "
            "for every value in the input range and are usually far above the real values. A "
            "result that does overflow decrypts to garbage, which decryption refuses "
            "(PrecisionError) where it can tell. program.report() counts them per run; narrow "
            "input_range, scale the weights down or use a preset with a larger first prime to "
            "remove the risk",
            ScaleOverflowWarning,
            stacklevel=3,
        )

    def _run_steps(self, be: Backend, ct: Any, reports: list[LayerReport],
                   _trace: Callable[[int, Any], None] | None) -> Any:
        for i, step in enumerate(self.steps):
            before = be.counter.snapshot()
            t = time.perf_counter()
            with be.counter.section(step.name):
                ct = step.run(be, ct)
            dt = time.perf_counter() - t
            after = be.counter.total
            reports.append(
                LayerReport(
                    step.name, step.kind, step.detail,
                    after.adds - before.adds, after.pt_mults - before.pt_mults,
                    after.ct_mults - before.ct_mults, after.rotations - before.rotations,
                    step.depth, (ct[0] if isinstance(ct, list) else ct).level, dt,
                )
            )
            if _trace is not None:
                _trace(i, ct)
        return ct

    def run_notes(self) -> dict[str, Any]:
        """Security and range facts of the last run: ``insecure`` (why the keys were accepted
        only with ``allow_insecure=True``, else None), ``inputs_out_of_range`` (from the last
        :meth:`encode_input`), ``overflow_risk`` (results whose tracked bound exceeded their
        level's capacity), ``approx_inputs_may_exceed`` (slots whose *upper bound* passed an
        approximation's calibrated range), ``bound_lost`` (places tracking stopped)."""
        return dict(self._run_notes)

    # -- reports -----------------------------------------------------------------------------------
    def trace(self, keys: KeySet, x: np.ndarray) -> list[LayerReport]:
        """Run on ``encrypt(x)`` decrypting after every layer, comparing with the torch twin.

        Debugging and measurement only (the client holds the secret key). Returns the per-layer
        report with max / mean absolute error against the plaintext model's activations.
        """
        import torch

        if self._reference is None:
            raise ShapeError("this program carries no reference model; compile it from a torch model")
        if self.batch != 1:
            raise ShapeError("trace compares one input with the torch model; compile with batch=1")
        acts = _torch_activations(self._reference, x, self.input_shape)
        errors: list[tuple[float, float] | None] = []

        def cb(i: int, val: Any) -> None:
            step = self.steps[i]
            ref = acts.get(step.ref_name or step.name)
            if ref is None or step.out_layout is None and step.kind != "linear":
                errors.append(None)
                return
            cts = val if isinstance(val, list) else [val]
            vecs = [keys.decrypt(c.replace(length=self.params.slots)) for c in cts]
            if step.kind == "linear":
                got = vecs[0][: ref.size]
            else:
                lays = step.groups or [step.out_layout]
                got = np.concatenate([unpack(v, lay) for v, lay in zip(vecs, lays)]).reshape(ref.shape)
            shape = (-1,) + (1,) * (ref.ndim - 1)
            sc = np.reshape(step.ref_scale, shape) if np.ndim(step.ref_scale) else step.ref_scale
            sh = np.reshape(step.ref_shift, shape) if np.ndim(step.ref_shift) else step.ref_shift
            e = np.abs((got - sh) / sc - ref)
            errors.append((float(e.max()), float(e.mean())))

        with torch.no_grad():
            self.run(self.encrypt_input(keys, x), keys.public_bundle(), backend=keys.backend,
                     allow_insecure=True, _trace=cb)
        for rep, err in zip(self._last, errors):
            if err is not None:
                rep.max_abs_error, rep.mean_abs_error = err
        return self._last

    def report(self) -> str:
        """Per-layer table of the last run (and of the errors, after :meth:`trace`)."""
        if not self._last:
            return "no run yet: call program.run(...) or program.trace(keys, x) first"
        head = (f"{'layer':<22}{'op':<12}{'adds':>7}{'pt*ct':>7}{'ct*ct':>7}{'rots':>6}{'depth':>6}"
                f"{'level':>6}{'seconds':>9}{'max|err|':>10}{'MAE':>10}")
        rows = [head, "-" * len(head)]
        for r in self._last:
            me = "" if r.max_abs_error is None else f"{r.max_abs_error:.2e}"
            mae = "" if r.mean_abs_error is None else f"{r.mean_abs_error:.2e}"
            rows.append(f"{r.name[:21]:<22}{r.kind:<12}{r.adds:>7}{r.pt_mults:>7}{r.ct_mults:>7}"
                        f"{r.rotations:>6}{r.depth:>6}{r.level_after:>6}{r.seconds:>9.3f}{me:>10}{mae:>10}")
        tot = sum(r.seconds for r in self._last)
        notes = self._run_notes
        if notes.get("insecure"):
            rows.insert(0, f"WARNING: NOT SECURE (accepted with allow_insecure=True): {notes['insecure']}")
        if self.input_range is not None or notes.get("overflow_risk"):
            rows.insert(1 if notes.get("insecure") else 0,
                        f"range: {notes.get('inputs_out_of_range', 0)} input value(s) outside the "
                        f"calibrated range, {notes.get('overflow_risk', 0)} result(s) that may "
                        "overflow the scale")
        rows.append(f"{'TOTAL':<22}{'':<12}{sum(r.adds for r in self._last):>7}"
                    f"{sum(r.pt_mults for r in self._last):>7}{sum(r.ct_mults for r in self._last):>7}"
                    f"{sum(r.rotations for r in self._last):>6}{self.depth:>6}{'':>6}{tot:>9.3f}")
        return "\n".join(rows)

    def layer_reports(self) -> list[dict[str, Any]]:
        return [dataclasses.asdict(r) for r in self._last]


def _torch_activations(model: Any, x: np.ndarray, input_shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Output of every named leaf module of the torch model on ``x`` (batch of one)."""
    import torch

    acts: dict[str, np.ndarray] = {}
    hooks = []
    for name, mod in model.named_modules():
        if name and not list(mod.children()):
            hooks.append(mod.register_forward_hook(
                lambda m, i, o, name=name: acts.__setitem__(name, o.detach().double().numpy()[0])))
    try:
        inp = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(1, *input_shape))
        model = model.double().eval()
        model(inp)
    finally:
        for h in hooks:
            h.remove()
    return acts


def _as_range(value: Any) -> tuple[float, float] | None:
    """None, a number r (meaning [-r, r]) or a pair (low, high) -> (low, high), checked."""
    if value is None:
        return None
    try:
        if np.ndim(value) == 0:
            r = float(value)
            lo, hi = -abs(r), abs(r)
        else:
            lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as e:
        raise ParameterError(f"input_range must be a number r or a pair (low, high), got {value!r}") from e
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ParameterError(f"input_range must be finite with low < high, got {value!r}")
    return lo, hi
