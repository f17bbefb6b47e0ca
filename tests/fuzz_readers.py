"""A small fuzzing harness for the data readers and model loaders (issue 17).

Each input is parsed in a worker process (spawned once, restarted after a hang or a crash) so that a hang or a memory blow-up cannot take the
test run with it:

* **time**: the parent waits ``timeout_s`` for the worker's answer; no answer -> the worker is
  killed and restarted, the input counts as a hang;
* **memory**: the worker runs under ``RLIMIT_AS`` (its address space at start plus
  ``mem_budget_mb``), and its peak resident set (``VmHWM``, reset before every input through
  ``/proc/self/clear_refs``) is measured per input; a peak over the budget, a ``MemoryError`` or a
  torch "can't allocate" anywhere in the exception chain counts as a memory failure, even when a
  reader wrapped it in a privkit error.

An outcome is ``typed`` (a :class:`privkit.errors.PrivkitError`), ``ok`` (a result that passed the
format's own validity check), or a failure: ``crash`` (any other exception, or a result that fails
the validity check), ``hang``, ``memory``. :class:`Tally` counts them per format.
"""

from __future__ import annotations

import collections
import multiprocessing as mp
import os
import resource
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

FAILURES = ("crash", "hang", "memory")


def _vm_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _is_memory(e: BaseException | None) -> bool:
    seen = 0
    while e is not None and seen < 20:
        if isinstance(e, MemoryError) or "can't allocate" in str(e) or "out of memory" in str(e):
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False


def _worker(conn: Any, readers: dict[str, Callable[[str, Any], Any]], mem_budget_mb: int,
            preload: Callable[[], Any] | None) -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    from privkit.errors import PrivkitError

    if preload is not None:  # imports and seeds before the limits and the first measurement
        preload()

    base_vm = _vm_kb("VmSize") * 1024
    limit = base_vm + mem_budget_mb * 2**20 + (512 << 20)  # + room for thread stacks, arenas
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    workdir = tempfile.mkdtemp(prefix="privkit-fuzz-")
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        fmt, data = msg
        if fmt == "__ping__":
            conn.send("pong")
            continue
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # reset the peak resident set (VmHWM)
            can_measure = True
        except OSError:  # not Linux, or not allowed: RLIMIT_AS alone bounds memory
            can_measure = False
        rss0 = _vm_kb("VmRSS")
        t = time.perf_counter()
        d = tempfile.mkdtemp(dir=workdir)
        try:
            readers[fmt](d, data)
            outcome, detail = "ok", ""
        except PrivkitError as e:
            outcome, detail = ("memory" if _is_memory(e) else "typed"), f"{type(e).__name__}: {e}"
        except BaseException as e:  # noqa: BLE001 - everything else is a finding
            outcome = "memory" if _is_memory(e) else "crash"
            detail = "".join(traceback.format_exception(type(e), e, e.__traceback__))[-3000:]
        peak_mb = max(0, _vm_kb("VmHWM") - rss0) / 1024 if can_measure else 0.0
        if peak_mb > mem_budget_mb and outcome not in FAILURES:
            outcome, detail = "memory", f"peak resident set grew by {peak_mb:.0f} MB"
        _rmtree(d)
        conn.send((outcome, detail[:3000], time.perf_counter() - t, peak_mb))


def _rmtree(d: str) -> None:
    import shutil

    shutil.rmtree(d, ignore_errors=True)


class Fuzzer:
    """A worker process answering ``run(fmt, data)`` for the readers registered in ``readers``
    (``fmt -> fn(tmpdir, data)``; ``fn`` writes ``data`` under ``tmpdir``, parses it, checks
    the result and raises on an invalid one)."""

    def __init__(self, readers: dict[str, Callable[[str, Any], Any]], *, timeout_s: float = 10.0,
                 mem_budget_mb: int = 256, timeouts: dict[str, float] | None = None,
                 preload: Callable[[], Any] | None = None) -> None:
        self.readers = readers
        self.preload = preload
        self.timeout_s = timeout_s
        self.timeouts = dict(timeouts or {})
        self.mem_budget_mb = mem_budget_mb
        self.tally = Tally()
        self._start()

    def _start(self) -> None:
        # spawn, not fork: a child forked after torch used its thread pool can deadlock
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker, args=(child, self.readers, self.mem_budget_mb,
                                                        self.preload),
                                 daemon=True)
        self._proc.start()
        child.close()
        self._ready = False

    def run(self, fmt: str, data: Any) -> tuple[str, str]:
        try:
            if not self._ready:  # the first answer waits for the worker's imports
                self._conn.send(("__ping__", None))
                if not self._conn.poll(300):
                    raise RuntimeError("the fuzz worker did not start in 300 s")
                self._conn.recv()
                self._ready = True
            self._conn.send((fmt, data))
            limit = self.timeouts.get(fmt, self.timeout_s)
            if self._conn.poll(limit):
                outcome, detail, secs, peak = self._conn.recv()
            else:
                outcome, detail, secs, peak = "hang", f"no answer in {limit} s", limit, 0.0
                self._restart()
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError) as e:
            # the worker died (segfault, kill by the memory limit): a crash of the reader
            outcome, detail, secs, peak = "crash", f"worker died: {e!r} (exit {self._proc.exitcode})", 0.0, 0.0
            self._restart()
        self.tally.add(fmt, outcome, secs, peak, detail)
        return outcome, detail

    def _restart(self) -> None:
        self._proc.kill()
        self._proc.join(5)
        self._conn.close()
        self._start()

    def close(self) -> None:
        self._conn.close()
        self._proc.kill()
        self._proc.join(5)


class Tally:
    """Outcome counts per format, slowest input and largest memory peak."""

    def __init__(self) -> None:
        self.counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.max_s: dict[str, float] = collections.defaultdict(float)
        self.max_mb: dict[str, float] = collections.defaultdict(float)
        self.examples: dict[str, list[str]] = collections.defaultdict(list)

    def add(self, fmt: str, outcome: str, secs: float, peak_mb: float, detail: str) -> None:
        self.counts[fmt][outcome] += 1
        self.max_s[fmt] = max(self.max_s[fmt], secs)
        self.max_mb[fmt] = max(self.max_mb[fmt], peak_mb)
        if outcome in FAILURES and len(self.examples[fmt]) < 3:
            self.examples[fmt].append(detail)

    def line(self, fmt: str) -> str:
        c = self.counts[fmt]
        return (f"{fmt:>14}: inputs {sum(c.values()):5d}  typed errors {c['typed']:5d}  "
                f"correct results {c['ok']:5d}  crashes {c['crash']}  hangs {c['hang']}  "
                f"memory {c['memory']}  slowest {self.max_s[fmt]:.2f} s  "
                f"peak +{self.max_mb[fmt]:.0f} MB")

    def failures(self, fmt: str) -> int:
        return sum(self.counts[fmt][k] for k in FAILURES)


def peak_rss_growth_mb(fn: Callable[[], Any]) -> tuple[Any, float | None]:
    """Run ``fn()`` in this process; return ``(result or exception, growth of the peak resident
    set in MB)`` (Linux: the peak is reset through ``/proc/self/clear_refs`` first; None where
    that is not possible)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        can_measure = True
    except OSError:
        can_measure = False
    rss0 = _vm_kb("VmRSS")
    try:
        out: Any = fn()
    except Exception as e:  # noqa: BLE001 - returned to the caller to check
        out = e
    return out, (max(0, _vm_kb("VmHWM") - rss0) / 1024 if can_measure else None)


def mutate(seed: bytes, ops: list[tuple[int, int, int, bytes]]) -> bytes:
    """Apply byte-level mutations: ``(kind, position, length, value)`` with kind 0 overwrite,
    1 insert, 2 delete, 3 truncate, 4 duplicate a range, 5 set a byte to an extreme value."""
    b = bytearray(seed)
    for kind, pos, length, val in ops:
        n = len(b)
        p = pos % (n + 1)
        if kind == 0 and n:
            p = pos % n
            b[p:p + len(val)] = val
        elif kind == 1:
            b[p:p] = val
        elif kind == 2:
            del b[p:p + length]
        elif kind == 3:
            del b[p:]
        elif kind == 4 and n:
            p = pos % n
            b[p:p] = b[p:p + length]
        elif kind == 5 and n:
            b[pos % n] = (0x00, 0xFF, 0x7F, 0x80, 0x2D, 0x30, 0x39, 0x20)[length % 8]
    return bytes(b[: 1 << 22])


def op_strategy(max_ops: int = 4) -> Any:
    """A hypothesis strategy of mutation lists for :func:`mutate`."""
    from hypothesis import strategies as st

    op = st.tuples(st.integers(0, 5), st.integers(0, 1 << 20), st.integers(0, 64),
                   st.one_of(st.binary(min_size=1, max_size=8),
                             st.sampled_from([b"-", b"-1", b"0", b"inf", b"nan", b"1e308",
                                              b"\xff\xff\xff\xff", b"\x00\x00\x00\x00",
                                              b"99999999", b"\x7f\xff\xff\xff", b",", b"\n",
                                              b"-100", b"x" * 40])))
    return st.lists(op, min_size=1, max_size=max_ops)


def env_examples(default: int) -> int:
    """The number of examples per format: ``PRIVKIT_FUZZ_EXAMPLES`` when set, else ``default``."""
    return int(os.environ.get("PRIVKIT_FUZZ_EXAMPLES", default))
