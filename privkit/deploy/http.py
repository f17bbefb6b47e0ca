"""``privkit serve``: the HTTP inference server (FastAPI + uvicorn; the ``serve`` extra).

Endpoints (bodies are envelopes, ``application/octet-stream``):

* ``GET /health`` -> JSON: status, workers, queue room, model id;
* ``GET /model`` -> the client spec envelope (what a client needs; no weights);
* ``POST /keys`` (a public-bundle envelope) -> JSON ``{"key_id": ...}``; the bundle is checked
  (no secret key, this program's parameters and rotations, intact) and stored on disk by key id;
* ``POST /infer/{key_id}`` (a ciphertext envelope holding one input or several) -> one result
  envelope, ciphertexts in the same order. All of a request's ciphertexts succeed or the request
  fails: nothing partial is returned.

Errors are JSON ``{"error": <privkit error type>, "detail": <message>}`` with status 400
(malformed, tampered, secret key), 404 (unknown key id), 409 (envelope of another key set or
parameters), 413 (too large), 422 (bundle lacking keys, simulator bundle), 503 with
``Retry-After`` (queue full) or 500 (a worker died; retry).
"""


import asyncio
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import (
    EnvelopeError,
    KeyMismatchError,
    MissingKeyError,
    ParameterError,
    PrivkitError,
    SecretKeyExposureError,
    ServerBusyError,
    ShapeError,
    WorkerCrashedError,
)
from .._optional import require

__all__ = ["create_app", "serve", "start_server"]

log = logging.getLogger(__name__)

_STATUS = {
    "SecretKeyExposureError": 400, "EnvelopeError": 400, "PlanMismatchError": 400,
    "MissingKeyError": 404, "KeyMismatchError": 409, "ParameterError": 422, "ShapeError": 422,
    "DepthExhaustedError": 422, "SecurityDowngradeError": 422, "ServerBusyError": 503, "WorkerCrashedError": 500,
}


class _Problem(Exception):
    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers or {}


def _problem(e: BaseException) -> _Problem:
    name = getattr(e, "error", None) or type(e).__name__
    if name == "MissingKeyError" and "lacks Galois keys" in str(e):
        return _Problem(422, name, str(e))
    status = _STATUS.get(name, 500 if not isinstance(e, PrivkitError) else 400)
    headers = {"Retry-After": str(int(getattr(e, "retry_after", 1)))} if status == 503 else None
    return _Problem(status, name, str(e), headers)


def create_app(program_path: str | os.PathLike, key_dir: str | os.PathLike | None = None, *,
               workers: int | None = None, max_queue: int = 64, max_request_bytes: int = 64 << 20,
               max_bundle_bytes: int = 2 << 30, cache_bytes: int = 4 << 30,
               allow_insecure: bool = False, pool: Any = None, delay_s: float = 0.0) -> Any:
    """The FastAPI app serving the program saved at ``program_path``.

    ``pool``: anything with ``submit(key_id, blob) -> Future`` (default: a
    :class:`~privkit.deploy.pool.WorkerPool` of ``workers`` processes; ``privkit serve --ray``
    passes a :class:`~privkit.deploy.ray.RayPool`). The pool starts with the app and stops with it.
    """
    fastapi = require("fastapi")
    from fastapi.responses import JSONResponse, Response

    from ..fhe.envelope import open_envelope
    from ..fhe.program import EncryptedProgram
    from .server import check_bundle, valid_key_id
    from .wire import key_id_of, merge_results, split_ciphertexts

    program = EncryptedProgram.load(program_path)
    spec_blob = program.client_spec().to_bytes()
    keys = Path(key_dir or tempfile.mkdtemp(prefix="privkit-keys-"))
    keys.mkdir(parents=True, exist_ok=True)
    if pool is None:
        from .pool import WorkerPool

        pool = WorkerPool(program_path, keys, workers=workers, max_queue=max_queue,
                          cache_bytes=cache_bytes, allow_insecure=allow_insecure, delay_s=delay_s)
    import contextlib

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        yield
        if hasattr(pool, "close"):
            pool.close()

    app = fastapi.FastAPI(title="privkit inference server", lifespan=lifespan,
                          description="Encrypted inference: the server never sees inputs or results.")
    app.state.pool, app.state.key_dir, app.state.program = pool, keys, program

    @app.exception_handler(_Problem)
    async def _handle(request: Any, exc: _Problem) -> Any:
        return JSONResponse({"error": exc.error, "detail": exc.detail}, status_code=exc.status,
                            headers=exc.headers)

    async def body(request: Any, limit: int) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise _Problem(413, "EnvelopeError", f"request of {declared} bytes exceeds the limit of {limit}")
        chunks, n = [], 0
        async for chunk in request.stream():
            n += len(chunk)
            if n > limit:
                raise _Problem(413, "EnvelopeError", f"request exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok", "workers": getattr(pool, "workers", None),
                "queue_free": pool.free() if hasattr(pool, "free") else None,
                "model_id": program.client_spec().model_id,
                "restarts": getattr(pool, "restarts", 0)}

    @app.get("/model")
    async def model() -> Any:
        return Response(spec_blob, media_type="application/octet-stream")

    def _register(blob: bytes) -> str:
        from ..fhe.envelope import write_envelope

        bundle = check_bundle(program, blob, allow_insecure=allow_insecure)
        write_envelope(keys / f"{bundle.key_id}.env", blob)
        return bundle.key_id

    @app.post("/keys")
    async def register(request: fastapi.Request) -> Any:
        blob = await body(request, max_bundle_bytes)
        try:
            key_id = await asyncio.get_running_loop().run_in_executor(None, _register, blob)
        except PrivkitError as e:
            raise _problem(e) from None
        return {"key_id": key_id}

    @app.post("/infer/{key_id}")
    async def infer(key_id: str, request: fastapi.Request) -> Any:
        try:
            valid_key_id(key_id)
        except ParameterError as e:
            raise _Problem(400, "ParameterError", str(e)) from None
        blob = await body(request, max_request_bytes)
        try:
            fp, parts = split_ciphertexts(blob)
            params_fp, kid = fp.rsplit("/", 1) if "/" in fp else ("", fp)
            if kid != key_id or params_fp != program.params.fingerprint():
                raise KeyMismatchError(
                    f"the ciphertexts were made under {fp!r}, not under key set {key_id[:16]}... "
                    f"of this model's parameters; encrypt with the keys registered as {key_id[:16]}...")
            if not (keys / f"{key_id}.env").is_file():
                raise MissingKeyError(f"no public bundle registered under key id {key_id[:16]}...; "
                                      "POST it to /keys first")
            if hasattr(pool, "free") and pool.free() < len(parts):
                raise ServerBusyError(f"the server's queue cannot take {len(parts)} more inputs now; "
                                      "retry shortly")
            futs = []
            try:
                for part in parts:
                    futs.append(pool.submit(key_id, part))
            except ServerBusyError:
                for f in futs:
                    f.cancel()
                raise
            outs = await asyncio.gather(*(asyncio.wrap_future(f) for f in futs), return_exceptions=True)
            failed = [o for o in outs if isinstance(o, BaseException)]
            if failed:
                raise failed[0]
            result = merge_results(list(outs))
            if key_id_of(open_envelope(result, "result").fingerprint) != key_id:
                raise WorkerCrashedError("internal error: a result of another key set")  # never mixed
        except (PrivkitError, ShapeError, EnvelopeError, SecretKeyExposureError) as e:
            raise _problem(e) from None
        return Response(result, media_type="application/octet-stream")

    return app


def start_server(app: Any, host: str = "127.0.0.1", port: int = 0) -> tuple[Any, Any, int]:
    """Run ``app`` with uvicorn in a background thread; returns (server, thread, port)."""
    import socket
    import threading

    uvicorn = require("uvicorn")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    import time

    t0 = time.monotonic()
    while not server.started:
        if not thread.is_alive() or time.monotonic() - t0 > 30:
            raise RuntimeError("the HTTP server did not start")
        time.sleep(0.02)
    return server, thread, port


def serve(program_path: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, **kwargs: Any) -> None:
    """Serve until interrupted (what ``privkit serve MODEL`` runs)."""
    uvicorn = require("uvicorn")
    app = create_app(program_path, **kwargs)
    uvicorn.run(app, host=host, port=port, log_level="info")
