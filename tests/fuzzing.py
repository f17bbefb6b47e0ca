"""A small, reusable mutation-fuzz harness for privkit's readers and parsers.

The contract every reader must meet: for ANY input bytes it either returns a result (which an
optional ``check`` callback may verify) or raises one of ``allowed_errors`` (by default a
:class:`privkit.errors.PrivkitError`), within ``time_limit_s`` per input and without allocating
more than ``mem_limit_mb`` of traced memory. Anything else is a finding:

* ``crash``   - an exception that is not an allowed (typed) error;
* ``hang``    - the call took longer than ``time_limit_s`` (interrupted by ``SIGALRM`` when it
  runs Python code; a call stuck inside C is measured when it returns);
* ``memory``  - the peak traced allocation (``tracemalloc``: Python objects and numpy buffers,
  not memory allocated inside C++ libraries such as SEAL) exceeded ``mem_limit_mb``;
* ``wrong``   - the call returned, but ``check(data, result)`` raised ``AssertionError``.

API (kept stable; other test modules import it)::

    stats = run_fuzz(parse_fn, seed_bytes, n, time_limit_s, mem_limit_mb,
                     allowed_errors=(PrivkitError,))
    stats.assert_clean()          # AssertionError listing findings (with a reproducer)
    print(stats.summary())        # "inputs=.. ok=.. typed_errors=.. crashes=0 hangs=0 ..."

Inputs are produced from ``seed_bytes`` (one ``bytes`` or a list of them) by a seeded
``random.Random``: bit flips, byte overwrites with boundary values, truncation, extension,
deletion/duplication/insertion of chunks, splices between seeds, and any extra structure-aware
``mutators`` (``fn(rng, data) -> bytes``) the caller passes, e.g. :func:`json_mutator` for formats
with a JSON header. The same ``seed`` always gives the same inputs, so a finding reproduces.

>>> from privkit.errors import DataFormatError
>>> def parse(b):
...     if not b.startswith(b"OK"):
...         raise DataFormatError("bad magic")
...     return len(b)
>>> stats = run_fuzz(parse, b"OK1234", n=50, time_limit_s=1.0, mem_limit_mb=16)
>>> stats.inputs, stats.crashes, stats.hangs
(50, 0, 0)
"""

from __future__ import annotations

import random
import signal
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from privkit.errors import PrivkitError

__all__ = [
    "BYTE_MUTATORS",
    "HOSTILE_JSON_VALUES",
    "Finding",
    "FuzzStats",
    "check_one",
    "json_mutator",
    "mutate",
    "run_fuzz",
]

_BOUNDARY_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x20, 0x22, 0x7B, 0x7D, 0x5B, 0x5D, 0x2C, 0x3A)
_BOUNDARY_INTS = (0, 1, -1, 2**31 - 1, 2**31, 2**32 - 1, 2**63 - 1, 2**64 - 1, 2**7, 2**15)

#: Values a hostile writer may put in any JSON field (replacing an int, a string, a list...).
HOSTILE_JSON_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 0.5, -0.5, 1e308, -1e308, 2**63, -(2**63), 2**200,
    "", "x", "false", "true", "NaN", "inf", "-inf", "../../etc/passwd", "A" * 4096,
    [], [1, 2], {}, {"a": 1}, [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
    float("nan"), float("inf"), 10**6, 2**40,
)


@dataclass
class Finding:
    """One input that broke the contract: its kind, the exception text, and the input."""

    kind: str  # crash | hang | memory | wrong
    detail: str
    data: bytes
    elapsed_s: float
    peak_mb: float

    def __str__(self) -> str:
        head = self.data[:80]
        return (f"{self.kind}: {self.detail} (after {self.elapsed_s:.3f}s, peak {self.peak_mb:.1f} MB;"
                f" input of {len(self.data)} bytes starting {head!r})")


@dataclass
class FuzzStats:
    """Counts of one fuzz run. ``crashes``, ``hangs``, ``over_memory`` and ``wrong`` must be 0."""

    name: str = ""
    inputs: int = 0
    ok: int = 0
    typed_errors: int = 0
    crashes: int = 0
    hangs: int = 0
    over_memory: int = 0
    wrong: int = 0
    max_time_s: float = 0.0
    max_mem_mb: float = 0.0
    total_time_s: float = 0.0
    error_types: Counter = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when no input crashed, hung, went over memory or gave a wrong result."""
        return self.crashes == self.hangs == self.over_memory == self.wrong == 0

    def summary(self) -> str:
        """One line of counts, e.g. for a test's printed output or a report."""
        kinds = ", ".join(f"{k}={v}" for k, v in self.error_types.most_common(6))
        return (f"{self.name or 'fuzz'}: inputs={self.inputs} ok={self.ok} "
                f"typed_errors={self.typed_errors} crashes={self.crashes} hangs={self.hangs} "
                f"over_memory={self.over_memory} wrong={self.wrong} "
                f"max_time={self.max_time_s * 1e3:.1f}ms max_mem={self.max_mem_mb:.1f}MB "
                f"total={self.total_time_s:.2f}s [{kinds}]")

    def assert_clean(self) -> None:
        """Raise ``AssertionError`` listing (up to 5) findings if the contract was broken."""
        if not self.clean:
            lines = "\n  ".join(str(f) for f in self.findings[:5])
            raise AssertionError(f"{self.summary()}\n  {lines}")


# -- byte-level mutators -------------------------------------------------------------------------


def _flip_bits(rng: random.Random, b: bytes) -> bytes:
    if not b:
        return bytes([rng.randrange(256)])
    out = bytearray(b)
    for _ in range(rng.choice((1, 1, 1, 2, 4, 8))):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def _set_bytes(rng: random.Random, b: bytes) -> bytes:
    if not b:
        return bytes([rng.choice(_BOUNDARY_BYTES)])
    out = bytearray(b)
    for _ in range(rng.choice((1, 2, 3))):
        out[rng.randrange(len(out))] = rng.choice(_BOUNDARY_BYTES) if rng.random() < 0.7 else rng.randrange(256)
    return bytes(out)


def _set_int(rng: random.Random, b: bytes) -> bytes:
    """Overwrite 1/2/4/8 bytes with a boundary integer (hits length and count fields)."""
    width = rng.choice((1, 2, 4, 8))
    if len(b) < width:
        return b + b"\xff" * width
    i = rng.randrange(len(b) - width + 1)
    v = rng.choice(_BOUNDARY_INTS) % (1 << (8 * width))
    raw = v.to_bytes(width, rng.choice(("little", "big")))
    return b[:i] + raw + b[i + width:]


def _truncate(rng: random.Random, b: bytes) -> bytes:
    return b[: rng.randrange(len(b) + 1)] if b else b""


def _extend(rng: random.Random, b: bytes) -> bytes:
    tail = rng.choice((b"\x00" * rng.randrange(1, 64), bytes(rng.randrange(256) for _ in range(16)), b[-32:]))
    return b + tail


def _delete_chunk(rng: random.Random, b: bytes) -> bytes:
    if len(b) < 2:
        return b""
    i = rng.randrange(len(b))
    j = min(len(b), i + rng.randrange(1, max(2, len(b) // 4)))
    return b[:i] + b[j:]


def _duplicate_chunk(rng: random.Random, b: bytes) -> bytes:
    if not b:
        return b"\x00"
    i = rng.randrange(len(b))
    j = min(len(b), i + rng.randrange(1, 64))
    k = rng.randrange(len(b) + 1)
    return b[:k] + b[i:j] * rng.choice((1, 2, 8)) + b[k:]


def _ascii_digits(rng: random.Random, b: bytes) -> bytes:
    """Replace a run of ASCII digits (a number in a text header) with a hostile number."""
    digits = [i for i, c in enumerate(b) if 0x30 <= c <= 0x39]
    if not digits:
        return _set_bytes(rng, b)
    i = rng.choice(digits)
    j = i
    while j < len(b) and 0x30 <= b[j] <= 0x39:
        j += 1
    new = rng.choice((b"0", b"-1", b"999999999999", b"1e308", b"0.5", b"NaN", b"-0", b"18446744073709551617"))
    return b[:i] + new + b[j:]


BYTE_MUTATORS: tuple[Callable[[random.Random, bytes], bytes], ...] = (
    _flip_bits, _flip_bits, _set_bytes, _set_int, _truncate, _extend, _delete_chunk,
    _duplicate_chunk, _ascii_digits,
)


def mutate(rng: random.Random, data: bytes,
           mutators: Sequence[Callable[[random.Random, bytes], bytes]] = BYTE_MUTATORS,
           max_stack: int = 3) -> bytes:
    """Apply 1..``max_stack`` randomly chosen mutators to ``data``.

    >>> out = mutate(random.Random(0), b"hello world")
    >>> isinstance(out, bytes)
    True
    """
    out = data
    for _ in range(rng.randint(1, max_stack)):
        out = rng.choice(mutators)(rng, out)
    return out


# -- JSON-aware mutator --------------------------------------------------------------------------


def _json_paths(obj: Any, prefix: tuple = ()) -> Iterable[tuple]:
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _json_paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:8]):
            yield from _json_paths(v, prefix + (i,))


def _json_edit(obj: Any, path: tuple, rng: random.Random) -> Any:
    if not path:
        action = rng.random()
        if action < 0.6:
            return rng.choice(HOSTILE_JSON_VALUES)
        if action < 0.8:
            deep: Any = obj
            for _ in range(rng.choice((50, 200, 2000))):
                deep = [deep] if rng.random() < 0.5 else {"x": deep}
            return deep
        return {"unexpected": obj} if rng.random() < 0.5 else [obj, obj]
    head, rest = path[0], path[1:]
    if isinstance(obj, dict):
        new = dict(obj)
        if not rest and rng.random() < 0.25:
            new.pop(head, None)  # drop a required key
        elif not rest and rng.random() < 0.1:
            new[str(head) + "_"] = rng.choice(HOSTILE_JSON_VALUES)  # add an unknown key
        else:
            new[head] = _json_edit(obj[head], rest, rng)
        return new
    new_list = list(obj)
    new_list[head] = _json_edit(obj[head], rest, rng)
    return new_list


def json_mutator(split: Callable[[bytes], tuple[bytes, Any, bytes]],
                 join: Callable[[bytes, Any, bytes], bytes]) -> Callable[[random.Random, bytes], bytes]:
    """Build a structure-aware mutator for a format that embeds a JSON document.

    ``split(data) -> (prefix, json_obj, suffix)`` finds the JSON header (raise ``ValueError`` if
    the input has none, e.g. after an earlier byte mutation); ``join(prefix, obj, suffix)``
    re-serialises it, fixing any length field. The mutator replaces one field with a hostile
    value, drops or adds a key, or nests a value hundreds of levels deep.

    >>> import json
    >>> def split(b): return b"", json.loads(b), b""
    >>> def join(p, o, s): return json.dumps(o).encode()
    >>> m = json_mutator(split, join)
    >>> isinstance(m(random.Random(1), b'{"gap": 1, "n": 4}'), bytes)
    True
    """

    def _mutate(rng: random.Random, data: bytes) -> bytes:
        try:
            prefix, obj, suffix = split(data)
        except (ValueError, KeyError, IndexError, UnicodeDecodeError):
            return _set_bytes(rng, data)
        paths = list(_json_paths(obj))
        edited = _json_edit(obj, rng.choice(paths), rng)
        try:
            return join(prefix, edited, suffix)
        except (ValueError, TypeError, RecursionError, OverflowError):
            return data

    return _mutate


# -- running -------------------------------------------------------------------------------------


class _Hang(BaseException):
    """Raised by the alarm handler; a BaseException so a reader's ``except Exception`` can't eat it."""


def check_one(parse_fn: Callable[[bytes], Any], data: bytes, *, time_limit_s: float = 1.0,
              mem_limit_mb: float = 256.0, allowed_errors: tuple[type[BaseException], ...] = (PrivkitError,),
              check: Callable[[bytes, Any], None] | None = None,
              trace_memory: bool = True) -> tuple[str, str, float, float]:
    """Run ``parse_fn(data)`` once under the limits; return ``(outcome, detail, seconds, peak_mb)``.

    ``outcome`` is ``"ok"``, ``"typed"`` or a finding kind (``crash``/``hang``/``memory``/``wrong``).
    Usable on its own inside a hypothesis ``@given`` test.
    """
    use_alarm = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
    old_handler = None
    if use_alarm:
        def _on_alarm(signum, frame):
            raise _Hang()
        old_handler = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, time_limit_s * 2 + 0.5)
    started_trace = trace_memory and not tracemalloc.is_tracing()
    if started_trace:
        tracemalloc.start()
    if trace_memory:
        tracemalloc.reset_peak()
    t0 = time.perf_counter()
    outcome, detail, result = "ok", "", None
    try:
        result = parse_fn(data)
    except _Hang:
        outcome, detail = "hang", f"interrupted after {time_limit_s * 2 + 0.5:.1f}s"
    except allowed_errors as e:
        outcome, detail = "typed", type(e).__name__
    except RecursionError as e:
        outcome, detail = "crash", f"RecursionError: {e}"
    except Exception as e:  # noqa: BLE001 - classifying is the point
        outcome, detail = "crash", f"{type(e).__module__}.{type(e).__name__}: {e}"[:400]
    finally:
        elapsed = time.perf_counter() - t0
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_handler)
        peak_mb = tracemalloc.get_traced_memory()[1] / 2**20 if trace_memory else 0.0
        if started_trace:
            tracemalloc.stop()
    if outcome == "ok" and check is not None:
        try:
            check(data, result)
        except AssertionError as e:
            outcome, detail = "wrong", f"check failed: {e}"[:400]
    if outcome in ("ok", "typed"):
        if elapsed > time_limit_s:
            outcome, detail = "hang", f"took {elapsed:.2f}s > {time_limit_s}s ({detail or 'returned'})"
        elif peak_mb > mem_limit_mb:
            outcome, detail = "memory", f"peak {peak_mb:.0f} MB > {mem_limit_mb} MB ({detail or 'returned'})"
    return outcome, detail, elapsed, peak_mb


def run_fuzz(parse_fn: Callable[[bytes], Any], seed_bytes: bytes | Sequence[bytes], n: int,
             time_limit_s: float = 1.0, mem_limit_mb: float = 256.0,
             allowed_errors: tuple[type[BaseException], ...] = (PrivkitError,), *,
             mutators: Sequence[Callable[[random.Random, bytes], bytes]] = (),
             check: Callable[[bytes, Any], None] | None = None, seed: int = 0,
             name: str = "", trace_memory: bool = True, include_seeds: bool = True,
             max_findings: int = 20) -> FuzzStats:
    """Feed ``n`` mutated inputs derived from ``seed_bytes`` to ``parse_fn`` and count outcomes.

    ``mutators`` are added to the byte-level ones (structure-aware mutators are chosen half of
    the time). The unmutated seeds are run first when ``include_seeds`` (they count as inputs).
    ``trace_memory=False`` skips ``tracemalloc`` (about 2x faster; no memory limit then).
    """
    seeds = [seed_bytes] if isinstance(seed_bytes, (bytes, bytearray)) else list(seed_bytes)
    if not seeds:
        raise ValueError("run_fuzz needs at least one seed input")
    rng = random.Random(seed)
    stats = FuzzStats(name=name)
    t_start = time.perf_counter()

    def inputs() -> Iterable[bytes]:
        count = 0
        if include_seeds:
            for s in seeds[:n]:
                count += 1
                yield bytes(s)
        while count < n:
            count += 1
            base = bytes(rng.choice(seeds))
            if len(seeds) > 1 and rng.random() < 0.05:  # splice two seeds
                other = bytes(rng.choice(seeds))
                cut = rng.randrange(len(base) + 1)
                base = base[:cut] + other[cut:]
            if mutators and rng.random() < 0.5:
                out = mutate(rng, base, tuple(mutators), max_stack=2)
            else:
                out = mutate(rng, base)
            yield out

    for data in inputs():
        outcome, detail, elapsed, peak = check_one(
            parse_fn, data, time_limit_s=time_limit_s, mem_limit_mb=mem_limit_mb,
            allowed_errors=allowed_errors, check=check, trace_memory=trace_memory)
        stats.inputs += 1
        stats.max_time_s = max(stats.max_time_s, elapsed)
        stats.max_mem_mb = max(stats.max_mem_mb, peak)
        if outcome == "ok":
            stats.ok += 1
            continue
        if outcome == "typed":
            stats.typed_errors += 1
            stats.error_types[detail] += 1
            continue
        attr = {"crash": "crashes", "hang": "hangs", "memory": "over_memory", "wrong": "wrong"}[outcome]
        setattr(stats, attr, getattr(stats, attr) + 1)
        if len(stats.findings) < max_findings:
            stats.findings.append(Finding(outcome, detail, data, elapsed, peak))
    stats.total_time_s = time.perf_counter() - t_start
    return stats
