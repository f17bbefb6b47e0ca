"""Helpers shared by the ``privkit`` subcommand modules (standard library only at import).

Everything here is for the command line: it prints to stderr and never raises on what it only
reports. Heavy imports (numpy, tqdm) happen inside the functions that need them.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["MODEL_SUFFIX", "add_json", "add_smoke", "bar", "check_model_path", "flag_metrics",
           "stages", "warn"]

#: what privkit model files are called: an authenticated privkit envelope, not a torch file
MODEL_SUFFIX = ".privkit"
_OLD_SUFFIXES = (".pt", ".pth")


def single_thread_torch() -> None:
    """Run torch on one intra-op thread unless ``OMP_NUM_THREADS`` says otherwise.

    privkit's apps train small networks (a few hundred to a few thousand parameters), which
    gain nothing from intra-op threads and lose badly when the machine is busy: on the shared
    2-core machine, training the apnea v2 detector on 1,200 windows took 224 s with torch's
    default threads and 10.6 s with one (``privkit apnea demo --n-windows 1200``, same load).
    """
    import os

    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(1)


def warn(msg: str) -> None:
    """One marked line on stderr: ``privkit: WARNING: ...``."""
    print(f"privkit: WARNING: {msg}", file=sys.stderr)


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true",
                   help="print the results as one JSON object on stdout (progress stays on stderr)")


def add_smoke(p: argparse.ArgumentParser, what: str = "tiny sizes") -> None:
    p.add_argument("--smoke", action="store_true",
                   help=f"{what}: finishes in under 30 s on 2 cores, for CI; results mean nothing")


def check_model_path(path: str | None) -> str | None:
    """Warn (deprecation) when a model file is named like a torch file; the file is still used.

    privkit model files are authenticated envelopes (see privkit.api.save_state), which torch
    cannot open; ``.privkit`` says what they are.
    """
    if path and Path(path).suffix.lower() in _OLD_SUFFIXES:
        warn(f"{path!r}: a '{Path(path).suffix}' name suggests a torch file, but privkit model "
             f"files are privkit envelopes (torch.load cannot read them); name them "
             f"'*{MODEL_SUFFIX}'. Old names are still read and written (deprecated)")
    return path


def bar(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
        disable: bool = False, unit: str = "it") -> Any:
    """A tqdm progress bar on stderr (left on screen only while running)."""
    from tqdm.auto import tqdm

    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    return tqdm(iterable, total=total, desc=desc, disable=disable, file=sys.stderr, unit=unit,
                leave=False, dynamic_ncols=True)


def stages(names: list[str], desc: str, disable: bool = False) -> Iterator[str]:
    """A bar over named steps (key generation, sealing...): the current step is shown."""
    b = bar(total=len(names), desc=desc, disable=disable, unit="step")
    try:
        for n in names:
            b.set_postfix_str(n)
            yield n
            b.update(1)
    finally:
        b.close()


def flag_metrics(m: dict[str, Any], what: str, *, n_classes: int = 2,
                 chance: float | None = None) -> list[str]:
    """Warnings for metrics that mean nothing: NaN, a trivial (one-class) classifier, chance.

    ``m`` may hold ``accuracy``, ``sensitivity``, ``specificity`` (binary) and ``n``. Returns the
    warning lines (also printed on stderr, marked); the caller puts them in its JSON as
    ``warnings``.
    """
    out = []
    nan = [k for k, v in m.items() if isinstance(v, float) and math.isnan(v)]
    if nan:
        out.append(f"{what}: {', '.join(nan)} is NaN (no windows of that class in the "
                   f"{m.get('n', '?')} evaluated): the number is undefined, not zero")
    sens, spec = m.get("sensitivity"), m.get("specificity")
    if isinstance(sens, float) and isinstance(spec, float):
        if (sens == 1.0 and spec == 0.0) or (sens == 0.0 and spec == 1.0):
            cls = "apnea" if sens == 1.0 else "normal"
            out.append(f"{what}: TRIVIAL classifier: it predicts '{cls}' for every window "
                       f"(sensitivity {sens:g}, specificity {spec:g})")
    acc = m.get("accuracy")
    c = chance if chance is not None else 1.0 / n_classes
    if isinstance(acc, float) and not math.isnan(acc) and not out and acc <= c + 0.02:
        out.append(f"{what}: accuracy {acc:.3f} is AT CHANCE ({c:.3f})")
    for line in out:
        warn(line)
    return out
