"""Deploying encrypted inference: a client without weights, a server without secrets.

Three roles (see docs/deployment.md):

* the **model owner** compiles a model and saves the program (:meth:`EncryptedProgram.save`);
* the **server** (:class:`Server`, or ``privkit serve``) holds the program and clients' public
  bundles, and computes on ciphertexts;
* the **client** (:class:`Client`) holds the :class:`~privkit.fhe.artifact.ClientSpec` and its key
  set: it encrypts inputs and decrypts results, and never receives a weight.

``Server`` and ``Client`` need only privkit's core dependencies; the HTTP server
(:mod:`privkit.deploy.http`) needs the ``serve`` extra and :func:`ray_infer` the ``distributed``
extra, each imported only when used.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..fhe.artifact import ClientSpec
from .client import Client
from .server import Server, check_bundle

__all__ = ["ClientSpec", "Client", "Server", "check_bundle", "ray_infer", "HTTPClient"]


def __getattr__(name: str) -> Any:
    if name == "ray_infer":
        return importlib.import_module(".ray", __name__).ray_infer
    if name == "HTTPClient":
        return importlib.import_module(".remote", __name__).HTTPClient
    raise AttributeError(f"module 'privkit.deploy' has no attribute {name!r}")
