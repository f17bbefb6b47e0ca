"""A client of ``privkit serve`` over HTTP (httpx; the ``serve`` extra)."""

from __future__ import annotations

import time
from typing import Any

from ..errors import RemoteError, ServerBusyError
from ..fhe.artifact import ClientSpec
from .._optional import require

__all__ = ["HTTPClient"]


class HTTPClient:
    """Talks to an inference server: ``model()``, ``register(bundle)``, ``infer(key_id, ct)``.

    A 503 (queue full) is retried after its ``Retry-After`` up to ``retries`` times; any other
    error answer raises :class:`~privkit.errors.RemoteError` with the status and the server-side
    error type.
    """

    def __init__(self, url: str, *, timeout: float = 600.0, retries: int = 5) -> None:
        httpx = require("httpx")
        self.url = url.rstrip("/")
        self.retries = int(retries)
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def _call(self, method: str, path: str, content: bytes | None = None) -> Any:
        for attempt in range(self.retries + 1):
            r = self._http.request(method, path, content=content,
                                   headers={"content-type": "application/octet-stream"} if content else None)
            if r.status_code == 503 and attempt < self.retries:
                time.sleep(min(float(r.headers.get("retry-after", "1") or 1), 10.0))
                continue
            if r.status_code >= 400:
                try:
                    j = r.json()
                    err, detail = str(j.get("error", "")), str(j.get("detail", r.text))
                except ValueError:
                    err, detail = "", r.text[:500]
                cls = ServerBusyError if r.status_code == 503 else None
                if cls is not None:
                    raise cls(f"server busy: {detail}")
                raise RemoteError(f"{self.url}{path}: {r.status_code} {err}: {detail}",
                                  status=r.status_code, error=err)
            return r
        raise AssertionError("unreachable")  # pragma: no cover

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health").json()

    def model(self) -> ClientSpec:
        """The server's client spec (parameters, rotations, layout; no weights)."""
        return ClientSpec.from_bytes(self._call("GET", "/model").content)

    def register(self, bundle_envelope: bytes) -> str:
        return str(self._call("POST", "/keys", bundle_envelope).json()["key_id"])

    def infer(self, key_id: str, ciphertext_envelope: bytes) -> bytes:
        return self._call("POST", f"/infer/{key_id}", ciphertext_envelope).content

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HTTPClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
