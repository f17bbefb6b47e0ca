"""Bounded WFDB readers: our own parser of annotation files (``.apn``) and a header check that
runs before :mod:`wfdb` is allowed to read a record.

Why not ``wfdb.rdann``: a 56-byte annotation file whose ``## time resolution`` note is altered by
one byte makes wfdb's definition loop spin forever (its index only advances when the note
parses). :func:`read_wfdb_annotations` reads the MIT annotation format itself, consuming at least
two bytes per step, so any input ends in time linear in its size, and every malformed input raises
:class:`~privkit.errors.DataFormatError`.

The format (WFDB "annot(5)"): little-endian 16-bit words; the top 6 bits are a code ``A``, the low
10 bits a sample-time increment ``I``. ``A`` 1..49 is an annotation (1 ``N``, 8 ``A``, ...) at
``previous time + I``; 59 ``SKIP`` is followed by a 32-bit increment (high word first); 60
``NUM``, 61 ``SUB``, 62 ``CHN`` carry a value in ``I``; 63 ``AUX`` is followed by ``I`` bytes of text
(padded to even); ``A = 0, I = 0`` ends the file. A ``NOTE`` (22) at time 0 whose text is
``## time resolution: F`` gives the annotation sampling frequency.

>>> import struct
>>> words = [(1 << 10) | 0, (8 << 10) | 600, 0]       # N at 0, A at 600, end
>>> ann = parse_wfdb_annotations(struct.pack("<3H", *words), "x.apn")
>>> ann.samples.tolist(), ann.symbols, ann.fs
([0, 600], ['N', 'A'], None)
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np

from ..errors import DataFormatError

__all__ = ["Annotations", "parse_wfdb_annotations", "read_wfdb_annotations", "check_wfdb_header",
           "MAX_ANNOTATION_BYTES", "MAX_HEADER_BYTES"]

MAX_ANNOTATION_BYTES = 64 << 20  #: an .apn of 8 hours is about 2 kB
MAX_HEADER_BYTES = 1 << 20

# the standard WFDB annotation codes (ecgcodes.h) used for names in messages
_SYMBOLS = {1: "N", 2: "L", 3: "R", 4: "a", 5: "V", 6: "F", 7: "J", 8: "A", 9: "S", 10: "E",
            11: "j", 12: "/", 13: "Q", 14: "~", 16: "|", 18: "s", 19: "T", 20: "*", 21: "D",
            22: '"', 23: "=", 24: "p", 25: "B", 26: "^", 27: "t", 28: "+", 29: "u", 30: "?",
            31: "!", 32: "[", 33: "]", 34: "e", 35: "n", 36: "@", 37: "x", 38: "f", 39: "(",
            40: ")", 41: "r"}
_SKIP, _NUM, _SUB, _CHN, _AUX, _NOTE = 59, 60, 61, 62, 63, 22
_DEFINITION_MARKERS = ("## annotation type definitions", "## end of definitions")
_RES = re.compile(r"^## time resolution: ([0-9]+(?:\.[0-9]*)?)$")


@dataclasses.dataclass
class Annotations:
    """Annotation times (samples), their symbols, and the declared frequency (None if absent)."""

    samples: np.ndarray
    symbols: list[str]
    fs: float | None


def parse_wfdb_annotations(raw: bytes, what: str) -> Annotations:
    """Parse the bytes of a WFDB annotation file (see the module docstring); ``what`` names it
    in errors. Notes (code 22) are comments and are skipped; ``NUM``/``SUB``/``CHN`` fields are
    read and ignored."""
    if len(raw) > MAX_ANNOTATION_BYTES:
        raise DataFormatError(f"{what}: {len(raw)} bytes, more than an annotation file can need "
                              f"(limit {MAX_ANNOTATION_BYTES})")
    if len(raw) % 2:
        raise DataFormatError(f"{what}: odd length ({len(raw)} bytes); a WFDB annotation file is "
                              "made of 16-bit words")
    w = np.frombuffer(raw, dtype="<u2")
    n = len(w)
    i = 0
    t = 0
    fs: float | None = None
    samples: list[int] = []
    symbols: list[str] = []
    ended = False
    while i < n:
        code, inc = int(w[i]) >> 10, int(w[i]) & 0x3FF
        if code == 0 and inc == 0:
            ended = True
            break
        if code == _SKIP:
            if i + 2 >= n:
                raise DataFormatError(f"{what}: truncated SKIP at byte {2 * i}")
            skip = (int(w[i + 1]) << 16) | int(w[i + 2])
            t += skip - (1 << 32) if skip >= 1 << 31 else skip
            i += 3
            continue
        if code in (_NUM, _SUB, _CHN):
            i += 1
            continue
        if code == _AUX:  # text attached to the previous annotation
            nwords = (inc + 1) // 2
            if i + 1 + nwords > n:
                raise DataFormatError(f"{what}: truncated note of {inc} bytes at byte {2 * i}")
            i += 1 + nwords
            continue
        t += inc
        if t < 0 or t > 1 << 40:
            raise DataFormatError(f"{what}: annotation time {t} (sample) at byte {2 * i} is out "
                                  "of range")
        if code == _NOTE:  # comments; the time resolution note comes with an AUX text
            if t == 0 and i + 1 < n and int(w[i + 1]) >> 10 == _AUX:
                ln = int(w[i + 1]) & 0x3FF
                if i + 2 + (ln + 1) // 2 > n:
                    raise DataFormatError(f"{what}: truncated note at byte {2 * i}")
                text = bytes(raw[2 * (i + 2): 2 * (i + 2) + ln]).decode("latin1")
                if text.startswith("## "):  # a definition: refuse what we cannot interpret
                    m = _RES.match(text)
                    if m and 0 < float(m.group(1)) <= 1e6:
                        fs = float(m.group(1))
                    elif text not in _DEFINITION_MARKERS:
                        raise DataFormatError(
                            f"{what}: malformed definition note {text[:80]!r} at byte {2 * i} "
                            "(expected '## time resolution: <Hz>' or an annotation type "
                            "definition block)")
            i += 1
            continue
        if code == 0:  # a placeholder that only moves the time
            i += 1
            continue
        if code > 49:
            raise DataFormatError(f"{what}: reserved annotation code {code} at byte {2 * i}")
        samples.append(t)
        symbols.append(_SYMBOLS.get(code, f"code {code}"))
        i += 1
    if not ended:
        raise DataFormatError(f"{what}: no end-of-file marker (a zero word); the file is "
                              "truncated or not a WFDB annotation file")
    return Annotations(np.asarray(samples, dtype=np.int64), symbols, fs)


def read_wfdb_annotations(path: str | Path) -> Annotations:
    """:func:`parse_wfdb_annotations` of the file at ``path`` (size-checked before reading)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_ANNOTATION_BYTES:
            raise DataFormatError(f"{path}: {size} bytes, more than an annotation file can need")
        raw = path.read_bytes()
    except OSError as e:
        raise DataFormatError(f"{path}: cannot read the annotation file ({e})") from e
    return parse_wfdb_annotations(raw, str(path))


# bytes per sample of the WFDB signal formats we accept (FLAC formats 508/516/524 are refused:
# their size cannot be checked before decompressing)
_FORMAT_BYTES = {8: 1.0, 16: 2.0, 61: 2.0, 80: 1.0, 160: 2.0, 212: 1.5, 24: 3.0, 32: 4.0,
                 310: 4 / 3, 311: 4 / 3}
_NAME_OK = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")


def check_wfdb_header(hea: str | Path) -> dict[str, float | int]:
    """Check a single-segment WFDB header before wfdb reads it: size, a positive finite
    sampling frequency (wfdb silently reads a malformed one, e.g. ``-100``, as 250 Hz), a
    sample count, signal file names that are plain names in the same folder (no paths, at most
    128 characters), known fixed-size formats, and that every signal file holds the bytes the
    header declares. Returns ``{"fs": ..., "sig_len": ..., "n_sig": ...}``."""
    hea = Path(hea)
    try:
        size = hea.stat().st_size
        if size > MAX_HEADER_BYTES:
            raise DataFormatError(f"{hea}: {size} bytes; a WFDB header is a short text file")
        text = hea.read_bytes().decode("ascii")
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{hea}: not a WFDB header (not ASCII text: {e})") from e
    except OSError as e:
        raise DataFormatError(f"{hea}: cannot read the WFDB header ({e})") from e
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise DataFormatError(f"{hea}: empty WFDB header")
    rec = lines[0].split()
    if len(rec) < 4:
        raise DataFormatError(f"{hea}: record line {lines[0][:100]!r} must give name, number of "
                              "signals, sampling frequency and number of samples")
    if "/" in rec[0]:
        raise DataFormatError(f"{hea}: multi-segment records are not supported")
    try:
        n_sig = int(rec[1])
        fs = float(re.split(r"[/(]", rec[2], maxsplit=1)[0])
        sig_len = int(rec[3])
    except ValueError as e:
        raise DataFormatError(f"{hea}: malformed record line {lines[0][:100]!r} ({e})") from e
    if not (math.isfinite(fs) and 0 < fs <= 1e6):
        raise DataFormatError(f"{hea}: sampling frequency {rec[2]!r} must be a positive number of "
                              "Hz (at most 1e6)")
    if not 1 <= n_sig <= 64 or not 0 <= sig_len <= 1 << 40:
        raise DataFormatError(f"{hea}: {n_sig} signals of {sig_len} samples is out of range "
                              "(1..64 signals)")
    if len(lines) < 1 + n_sig:
        raise DataFormatError(f"{hea}: declares {n_sig} signals but has {len(lines) - 1} signal "
                              "lines")
    need: dict[str, float] = {}
    for ln in lines[1:1 + n_sig]:
        parts = ln.split()
        if len(parts) < 2:
            raise DataFormatError(f"{hea}: malformed signal line {ln[:100]!r}")
        name, fmt = parts[0], parts[1]
        if not _NAME_OK.match(name) or name in (".", ".."):
            raise DataFormatError(f"{hea}: signal file name {name[:60]!r}"
                                  f"{'...' if len(name) > 60 else ''} must be a plain file name "
                                  "(letters, digits, '_', '-', '.'; at most 128 characters)")
        m = re.match(r"^(\d+)(x\d+)?(:\d+)?(\+\d+)?$", fmt)
        if not m or int(m.group(1)) not in _FORMAT_BYTES or (m.group(2) and m.group(2) != "x1"):
            raise DataFormatError(f"{hea}: signal format {fmt[:40]!r} is not supported (use one "
                                  f"of {sorted(_FORMAT_BYTES)}, one sample per frame)")
        offset = int(m.group(4)[1:]) if m.group(4) else 0
        need[name] = max(need.get(name, 0.0), offset) + _FORMAT_BYTES[int(m.group(1))] * sig_len
    for name, n_bytes in need.items():
        f = hea.with_name(name)
        try:
            fsize = f.stat().st_size
        except FileNotFoundError:
            raise DataFormatError(f"{f}: signal file named in {hea.name} not found") from None
        except OSError as e:
            raise DataFormatError(f"{f}: cannot read the signal file ({e})") from e
        if fsize + 2 < math.floor(n_bytes):
            raise DataFormatError(f"{f}: truncated: the header declares {sig_len} samples "
                                  f"({int(n_bytes)} bytes), the file has {fsize}")
    return {"fs": fs, "sig_len": sig_len, "n_sig": n_sig}
