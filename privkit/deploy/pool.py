"""A pool of worker processes for the inference server.

Each worker loads the saved program once and the public bundles it needs from the key directory
(by key id, kept in a bounded LRU), and computes one ciphertext envelope at a time. The parent
keeps one thread per worker that feeds it jobs from a bounded queue and waits on both the reply
and the process: a worker that dies mid-request fails *that* request with
:class:`~privkit.errors.WorkerCrashedError` and is replaced; other workers and their requests are
untouched. A full queue raises :class:`~privkit.errors.ServerBusyError` at once.

Messages between the parent and a worker are a JSON header plus raw bytes over a pipe (no pickle).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import multiprocessing as mp
import os
import queue
import threading
import time
from multiprocessing.connection import wait
from typing import Any

from ..errors import (
    ServerBusyError,
    WorkerCrashedError,
    WorkerFailure,  # re-exported: defined in privkit.errors
)

__all__ = ["WorkerPool", "WorkerFailure"]

log = logging.getLogger(__name__)


def _worker_main(conn: Any, program_path: str, key_dir: str, cache_bytes: int,
                 allow_insecure: bool, threads: int) -> None:
    """Worker process: load the program, then serve jobs until the pipe closes."""
    try:
        import torch

        torch.set_num_threads(max(1, threads))
        from ..fhe.program import EncryptedProgram
        from .server import Server

        server = Server(EncryptedProgram.load(program_path), key_dir=key_dir,
                        cache_bytes=cache_bytes, allow_insecure=allow_insecure)
        conn.send_bytes(json.dumps({"ready": True, "pid": os.getpid()}).encode())
    except BaseException as e:  # report why the worker could not start
        conn.send_bytes(json.dumps({"ready": False, "error": type(e).__name__, "message": str(e)}).encode())
        return
    while True:
        try:
            head = json.loads(conn.recv_bytes())
            blob = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            if head.get("delay_s"):
                time.sleep(float(head["delay_s"]))  # diagnostic: widen the window of a request
            out = server.infer(blob, head["key_id"])
            conn.send_bytes(json.dumps({"ok": True}).encode())
            conn.send_bytes(out)
        except Exception as e:
            conn.send_bytes(json.dumps({"ok": False, "error": type(e).__name__, "message": str(e)}).encode())
            conn.send_bytes(b"")


class _Slot:
    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool, self.index = pool, index
        self.proc: Any = None
        self.conn: Any = None
        self.busy = False
        self.thread = threading.Thread(target=self._loop, name=f"privkit-worker-{index}", daemon=True)

    def start_process(self) -> None:
        p = self.pool
        parent, child = p._ctx.Pipe()
        proc = p._ctx.Process(target=_worker_main, daemon=True, name=f"privkit-worker-{self.index}",
                              args=(child, p.program_path, p.key_dir, p.cache_bytes,
                                    p.allow_insecure, p.threads))
        proc.start()
        child.close()
        ready = wait([parent, proc.sentinel], timeout=p.start_timeout)
        if parent not in ready:
            proc.kill()
            raise WorkerCrashedError(f"worker {self.index} did not start within {p.start_timeout} s")
        try:
            msg = json.loads(parent.recv_bytes())
        except (EOFError, OSError):
            raise WorkerCrashedError(f"worker {self.index} died while starting") from None
        if not msg.get("ready"):
            raise WorkerFailure(msg.get("error", "Error"), f"worker could not load the program: {msg.get('message')}")
        self.proc, self.conn = proc, parent

    def _loop(self) -> None:
        p = self.pool
        while True:
            job = p._queue.get()
            if job is None:
                return
            fut, head, blob = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                if self.proc is None or not self.proc.is_alive():
                    self._replace()
                self.busy = True
                fut.set_result(self._call(head, blob))
            except BaseException as e:  # a future must always complete
                fut.set_exception(e)
            finally:
                self.busy = False

    def _replace(self) -> None:
        if self.proc is not None:
            self.proc.join(timeout=1)
            self.pool.restarts += 1
            log.warning("worker %d (pid %s) died; starting a new one", self.index, self.proc.pid)
        self.proc = None
        self.start_process()

    def _call(self, head: dict[str, Any], blob: bytes) -> bytes:
        try:
            self.conn.send_bytes(json.dumps(head).encode())
            self.conn.send_bytes(blob)
            ready = wait([self.conn, self.proc.sentinel], timeout=self.pool.job_timeout)
            if self.conn not in ready:
                raise EOFError
            status = json.loads(self.conn.recv_bytes())
            out = self.conn.recv_bytes()
        except (EOFError, OSError, BrokenPipeError):
            pid = self.proc.pid
            if self.proc.is_alive():  # timed out: stop it, it is replaced on the next job
                self.proc.kill()
            self.proc.join(timeout=5)
            self.pool.restarts += 1
            self.proc = None
            raise WorkerCrashedError(
                f"the worker process (pid {pid}) computing this request died or timed out "
                "before answering; nothing was computed for it. Retry the request") from None
        if not status.get("ok"):
            raise WorkerFailure(status.get("error", "Error"), status.get("message", ""))
        return out


class WorkerPool:
    """``workers`` processes computing ciphertext envelopes (see the module docstring).

    Args:
        program_path: a program saved with ``EncryptedProgram.save``.
        key_dir: directory of registered bundles (``<key_id>.env``).
        workers: processes (default: the CPU count).
        max_queue: requests waiting beyond the ones being computed; more raise
            :class:`~privkit.errors.ServerBusyError`.
        cache_bytes: bundle bytes each worker keeps in memory.
        job_timeout: seconds one ciphertext may take before its worker is stopped.
    """

    def __init__(self, program_path: str | os.PathLike, key_dir: str | os.PathLike, *,
                 workers: int | None = None, max_queue: int = 64, cache_bytes: int = 4 << 30,
                 allow_insecure: bool = False, job_timeout: float = 600.0, start_timeout: float = 300.0,
                 threads: int = 1, delay_s: float = 0.0) -> None:
        self.program_path, self.key_dir = str(program_path), str(key_dir)
        self.workers = int(workers or os.cpu_count() or 1)
        self.max_queue = int(max_queue)
        self.cache_bytes, self.allow_insecure = int(cache_bytes), allow_insecure
        self.job_timeout, self.start_timeout, self.threads = job_timeout, start_timeout, threads
        self.delay_s = float(delay_s)  # diagnostic (fault tests): each job waits this long first
        self.restarts = 0
        self._ctx = mp.get_context("spawn")
        self._queue: queue.Queue = queue.Queue(maxsize=self.max_queue)
        self._slots = [_Slot(self, i) for i in range(self.workers)]
        starters = [threading.Thread(target=s.start_process) for s in self._slots]
        errors: list[BaseException] = []
        for s, t in zip(self._slots, starters):
            t.run = lambda s=s: _capture(s.start_process, errors)  # type: ignore[method-assign]
            t.start()
        for t in starters:
            t.join()
        if errors:
            self.close()
            raise errors[0]
        for s in self._slots:
            s.thread.start()

    def submit(self, key_id: str, blob: bytes) -> cf.Future:
        """Queue one ciphertext envelope; a future of its result envelope."""
        fut: cf.Future = cf.Future()
        try:
            self._queue.put_nowait((fut, {"key_id": key_id, "delay_s": self.delay_s}, blob))
        except queue.Full:
            raise ServerBusyError(f"the server's queue is full ({self.max_queue} requests waiting); "
                                  "retry shortly", retry_after=1.0) from None
        return fut

    def free(self) -> int:
        """Room left in the queue."""
        return self.max_queue - self._queue.qsize()

    def pids(self) -> list[int]:
        return [s.proc.pid for s in self._slots if s.proc is not None]

    def busy_pids(self) -> list[int]:
        return [s.proc.pid for s in self._slots if s.busy and s.proc is not None]

    def close(self) -> None:
        for _ in self._slots:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break
        for s in self._slots:
            if s.proc is not None and s.proc.is_alive():
                if s.conn is not None:
                    s.conn.close()
                s.proc.join(timeout=2)
                if s.proc.is_alive():
                    s.proc.kill()
                    s.proc.join(timeout=2)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _capture(fn: Any, errors: list[BaseException]) -> None:
    try:
        fn()
    except BaseException as e:
        errors.append(e)
