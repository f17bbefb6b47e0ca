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

from ..errors import KeyMismatchError, ShapeError
from .backend import Backend, Ciphertext
from .keys import KeySet, PublicBundle
from .ops.packed import PackedLayout, pack, unpack
from .params import CKKSParams

__all__ = ["EncryptedProgram", "Step"]


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
    #: encrypted intermediate = ref_scale * torch activation (a pool whose 1/k was folded forward)
    ref_scale: float = 1.0


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
        input_shape: tuple[int, int],
        out_features: int,
        conjugation: bool,
        reference: Any = None,
        batch: int = 1,
    ) -> None:
        self.params = params
        self.steps = steps
        self.input_layout = input_layout
        self.input_shape = input_shape
        self.out_features = out_features
        self.conjugation = conjugation
        self._reference = reference  # the torch model (plaintext twin), for traces
        self.batch = batch
        self._last: list[LayerReport] = []
        #: calibrated range (low, high) of the input values, handed to clients in the client
        #: spec (None: not known; clients then only refuse NaN / infinite inputs)
        self.input_range: tuple[float, float] | None = None

    # -- planning facts ----------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Levels the program consumes."""
        return sum(s.depth for s in self.steps)

    @property
    def rotations(self) -> list[int]:
        """The Galois-key steps the program uses (what :meth:`keygen` generates)."""
        out: set[int] = set()
        for s in self.steps:
            out |= {r % self.params.slots for r in s.rotations}
        out.discard(0)
        return sorted(out)

    def plan_table(self) -> str:
        """The level plan, one row per layer."""
        rows = [f"{'layer':<24}{'op':<14}{'levels':>7}{'left':>6}{'rots':>6}  detail"]
        left = self.params.depth
        for s in self.steps:
            left -= s.depth
            rows.append(f"{s.name[:23]:<24}{s.kind:<14}{s.depth:>7}{left:>6}{len(s.rotations):>6}  {s.detail}")
        return "\n".join(rows)

    def client_info(self) -> dict[str, Any]:
        """What a client needs to make keys and encode inputs (no weights)."""
        return {
            "params": self.params.to_dict(),
            "rotations": self.rotations,
            "conjugation": self.conjugation,
            "input_shape": list(self.input_shape),
            "input_layout": dataclasses.asdict(self.input_layout),
            "out_features": self.out_features,
            "batch": self.batch,
        }

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

    def encode_input(self, x: np.ndarray) -> np.ndarray:
        """Input of shape ``input_shape`` (or 1-D for one channel) -> the vector to encrypt.

        A program compiled with ``batch=b`` takes ``(b, channels, length)`` (or ``(b, length)``).
        """
        x = np.asarray(x, dtype=np.float64)
        c, length = self.input_shape
        want = (self.batch, c, length)
        if x.ndim == 1 and c == 1 and self.batch == 1:
            x = x[None, None, :]
        elif x.ndim == 2 and (c == 1 and self.batch > 1 or self.batch == 1):
            x = x[:, None, :] if self.batch > 1 else x[None]
        if x.shape != want:
            shown = want if self.batch > 1 else (c, length)
            raise ShapeError(f"the program expects input of shape {shown}, got {x.shape}")
        x = x.reshape(self.batch * c, length)
        vec = pack(x, self.input_layout, self.params.slots)
        return vec[: self.input_layout.span]

    def encrypt_input(self, keys: KeySet, x: np.ndarray) -> Ciphertext:
        return keys.encrypt(self.encode_input(x))

    def decrypt_output(self, keys: KeySet, out: Ciphertext) -> np.ndarray:
        """Decrypted logits, shape ``(out_features,)`` (``(batch, out_features)`` when batched)."""
        vals = keys.decrypt(out.replace(length=self.out_features * self.batch))
        return vals if self.batch == 1 else vals.reshape(self.batch, self.out_features)

    # -- server side -------------------------------------------------------------------------------
    def _backend_for(self, ct: Ciphertext, bundle: PublicBundle | None, backend: Backend | None) -> Backend:
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

    def run(self, ct: Ciphertext, bundle: PublicBundle | None = None, backend: Backend | None = None,
            *, _trace: Callable[[int, Ciphertext], None] | None = None) -> Ciphertext:
        """Evaluate the program on an encrypted input with public keys only."""
        be = self._backend_for(ct, bundle, backend)
        be._check(ct)  # same key set
        if ct.backend is not be:
            ct = ct.replace(backend=be)
        if ct.length > self.input_layout.span:
            raise ShapeError(
                f"the encrypted input has {ct.length} values but the program expects at most "
                f"{self.input_layout.span} (input shape {self.input_shape}); encode it with "
                "program.encode_input"
            )
        be.require_levels(ct, self.depth, "the compiled program")
        reports = []
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
                    step.depth, ct.level, dt,
                )
            )
            if _trace is not None:
                _trace(i, ct)
        self._last = reports
        return ct

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

        def cb(i: int, ct: Ciphertext) -> None:
            step = self.steps[i]
            ref = acts.get(step.ref_name or step.name)
            if ref is None or step.out_layout is None and step.kind != "linear":
                errors.append(None)
                return
            vec = keys.decrypt(ct.replace(length=self.params.slots))
            if step.kind == "linear":
                got = vec[: ref.size]
            else:
                got = unpack(vec, step.out_layout).reshape(ref.shape)
            e = np.abs(got / step.ref_scale - ref)
            errors.append((float(e.max()), float(e.mean())))

        with torch.no_grad():
            self.run(self.encrypt_input(keys, x), keys.public_bundle(), backend=keys.backend, _trace=cb)
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
