"""Scale-out on Ray (the ``distributed`` extra): encrypted windows fanned over a cluster.

The program (its saved bytes) and the public bundle (its envelope) are put in Ray's object store
once; each of ``workers`` actors receives the two references, rebuilds the program and the
bundle's evaluation backend once, then computes the ciphertext envelopes it is handed (Ray's
``ActorPool`` balances them). Nothing here schedules: Ray does.
"""

from __future__ import annotations

from typing import Any

from .._optional import require

__all__ = ["ray_infer", "RayPool"]


def _ensure_ray(address: str | None, **init_kwargs: Any) -> Any:
    ray = require("ray")
    if not ray.is_initialized():
        if address:
            ray.init(address=address, **init_kwargs)
        else:
            init_kwargs.setdefault("include_dashboard", False)
            ray.init(**init_kwargs)
    return ray


class _Evaluator:
    """Ray actor body: one program, bundles by key id (decoded once each)."""

    def __init__(self, program_blob: bytes, allow_insecure: bool) -> None:
        from ..fhe.program import EncryptedProgram
        from .server import Server

        self.server = Server(EncryptedProgram.from_bytes(program_blob), allow_insecure=allow_insecure)

    def infer(self, bundle_blob: bytes, ciphertext_envelope: bytes) -> bytes:
        from ..fhe.envelope import open_envelope
        from .wire import key_id_of

        kid = key_id_of(open_envelope(bundle_blob, "public-bundle").fingerprint)
        if self.server._cache.get(kid) is None:
            self.server.register(bundle_blob)
        return self.server.infer(ciphertext_envelope, kid)


def _program_blob(program: Any) -> bytes:
    return program if isinstance(program, (bytes, bytearray)) else program.to_bytes()


def _bundle_blob(program: Any, bundle: Any, allow_insecure: bool) -> bytes:
    from ..fhe.program import EncryptedProgram
    from .server import check_bundle

    prog = program if isinstance(program, EncryptedProgram) else EncryptedProgram.from_bytes(program)
    b = check_bundle(prog, bundle, allow_insecure=allow_insecure)  # refuses a KeySet etc. here
    return bytes(bundle) if isinstance(bundle, (bytes, bytearray)) else b.to_envelope()


def ray_infer(program: Any, bundle: Any, ciphertexts: list[bytes], address: str | None = None, *,
              workers: int = 2, allow_insecure: bool = False, **init_kwargs: Any) -> list[bytes]:
    """Compute ciphertext envelopes on a Ray cluster; result envelopes in the same order.

    Args:
        program: an :class:`~privkit.fhe.program.EncryptedProgram` (or its saved bytes).
        bundle: the client's public bundle (or its envelope); a ``KeySet`` is refused.
        ciphertexts: ``"ciphertext"`` envelopes (each one input or several).
        address: a Ray cluster address; ``None`` joins the running one or starts a local one
            (``init_kwargs`` go to ``ray.init``, e.g. ``num_cpus=2``).
        workers: actors (each holds the program and the bundle once).
    """
    bundle_blob = _bundle_blob(program, bundle, allow_insecure)
    ray = _ensure_ray(address, **init_kwargs)
    from ray.util import ActorPool

    actor = ray.remote(num_cpus=1)(_Evaluator)
    prog_ref = ray.put(_program_blob(program))  # once, not per task
    bundle_ref = ray.put(bundle_blob)  # once, not per task
    actors = [actor.remote(prog_ref, allow_insecure) for _ in range(max(1, int(workers)))]
    try:
        pool = ActorPool(actors)
        return list(pool.map(lambda a, ct: a.infer.remote(bundle_ref, ct), list(ciphertexts)))
    finally:
        for a in actors:
            ray.kill(a)


class RayPool:
    """The HTTP server's pool on Ray (``privkit serve --ray ADDRESS``): same ``submit`` as
    :class:`~privkit.deploy.pool.WorkerPool`; each registered bundle is put in the object store
    once (on first use) and its reference handed to the actors."""

    def __init__(self, program_path: str, key_dir: str, address: str | None = None, *,
                 workers: int = 2, allow_insecure: bool = False, **init_kwargs: Any) -> None:
        from pathlib import Path

        self.ray = _ensure_ray(address, **init_kwargs)
        from ray.util import ActorPool

        self.key_dir = Path(key_dir)
        self.workers = int(workers)
        prog_ref = self.ray.put(Path(program_path).read_bytes())
        actor = self.ray.remote(num_cpus=1)(_Evaluator)
        self._actors = [actor.remote(prog_ref, allow_insecure) for _ in range(self.workers)]
        self._pool = ActorPool(self._actors)
        self._refs: dict[str, Any] = {}
        import threading

        self._lock = threading.Lock()

    def submit(self, key_id: str, blob: bytes) -> Any:
        import concurrent.futures as cf

        with self._lock:
            ref = self._refs.get(key_id)
            if ref is None:
                ref = self._refs[key_id] = self.ray.put((self.key_dir / f"{key_id}.env").read_bytes())
            self._next = (getattr(self, "_next", -1) + 1) % len(self._actors)
            actor = self._actors[self._next]
        fut = actor.infer.remote(ref, blob).future()
        out: cf.Future = cf.Future()

        def done(f: Any) -> None:
            try:
                out.set_result(f.result())
            except Exception as e:  # a RayTaskError carries the worker's exception as .cause
                from .pool import WorkerFailure

                cause = getattr(e, "cause", None) or e
                name = type(cause).__name__
                out.set_exception(WorkerFailure(name if name.endswith("Error") else "WorkerCrashedError",
                                                f"Ray task failed: {cause}"))

        fut.add_done_callback(done)
        return out

    def close(self) -> None:
        for a in self._actors:
            self.ray.kill(a)
