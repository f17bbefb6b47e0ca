"""Optional dependencies: import one, or raise an error that names the extra to install.

The core install (``pip install privkit``) brings torch, TenSEAL, Opacus, numpy, scipy,
scikit-learn, tqdm and cryptography. Everything else belongs to an extra and is imported only
inside the feature that needs it:

========  ===========================  ==============================================
extra     packages                     used by
========  ===========================  ==============================================
ecg       wfdb, pyedflib               ECG readers (Apnea-ECG .hea/.dat, UCDDB .edf)
plots     matplotlib                   figures written by the CLI (--png, --plots)
serve     fastapi, uvicorn, httpx      the HTTP server for encrypted inference
distributed  ray                       fan-out of encrypted inference over a Ray cluster
docs      mkdocs, mkdocstrings         the API reference (make docs)
realdata  seglearn (==1.2.5)           real smartwatch IMU data (its data file only)
========  ===========================  ==============================================

>>> import math
>>> require("math", extra="none") is math
True
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

__all__ = ["EXTRAS", "require"]

#: the pip extra that provides each optional top-level module
EXTRAS = {
    "wfdb": "ecg",
    "pyedflib": "ecg",
    "matplotlib": "plots",
    "fastapi": "serve",
    "uvicorn": "serve",
    "httpx": "serve",
    "ray": "distributed",
    "mkdocs": "docs",
    "seglearn": "realdata",
}


def require(module: str, *, extra: str | None = None, feature: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`~privkit.errors.MissingDependencyError` naming the
    extra (``pip install 'privkit[extra]'``) that installs it.

    Only a missing module itself is translated; an import error raised *inside* an installed
    module (a broken install) propagates unchanged.
    """
    top = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and e.name.split(".")[0] != top:
            raise
        raise MissingDependencyError(top, extra or EXTRAS.get(top, "all"), feature) from e
