"""Splitting and merging ciphertext envelopes without deserialising a ciphertext.

A batch request (one ``"ciphertext"`` envelope holding several ciphertexts) is split into one
envelope per ciphertext so that workers compute them in parallel; their ``"result"`` envelopes are
merged back, in order, into one. Both check the envelope first (integrity, kind) and keep its key
fingerprint, so nothing here can mix key sets.
"""

from __future__ import annotations

import struct

from ..errors import EnvelopeError, KeyMismatchError
from ..fhe.envelope import open_envelope, seal_envelope

__all__ = ["split_ciphertexts", "merge_results", "key_id_of"]


def _frames(payload: bytes, count_meta: object) -> list[bytes]:
    try:
        (count,) = struct.unpack_from("<I", payload, 0)
        pos, out = 4, []
        for _ in range(count):
            (ln,) = struct.unpack_from("<Q", payload, pos)
            pos += 8
            if pos + ln > len(payload):
                raise ValueError("a ciphertext runs past the payload")
            out.append(payload[pos : pos + ln])
            pos += ln
        if pos != len(payload) or count != count_meta or count == 0:
            raise ValueError("payload length disagrees with its ciphertext count")
    except (struct.error, ValueError) as e:
        err = EnvelopeError(f"ciphertext envelope payload is malformed: {e}")
        err.reason = "payload"  # type: ignore[attr-defined]
        raise err from None
    return out


def _pack(kind: str, frames: list[bytes], fp: str, meta: dict) -> bytes:
    payload = struct.pack("<I", len(frames)) + b"".join(struct.pack("<Q", len(f)) + f for f in frames)
    return seal_envelope(kind, payload, fp, meta=dict(meta, count=len(frames)))


def key_id_of(fingerprint: str) -> str:
    """The key id part of a ``"<params fingerprint>/<key id>"`` envelope fingerprint."""
    return fingerprint.rsplit("/", 1)[-1]


def split_ciphertexts(blob: bytes, max_count: int = 4096) -> tuple[str, list[bytes]]:
    """One ``"ciphertext"`` envelope -> (its key fingerprint, one envelope per ciphertext)."""
    env = open_envelope(blob, "ciphertext")
    frames = _frames(env.payload, env.meta.get("count"))
    if len(frames) > max_count:
        raise EnvelopeError(f"envelope holds {len(frames)} ciphertexts; at most {max_count} per request")
    if len(frames) == 1:
        return env.fingerprint, [bytes(blob)]
    meta = {"backend": env.meta.get("backend", "")}
    return env.fingerprint, [_pack("ciphertext", [f], env.fingerprint, meta) for f in frames]


def merge_results(blobs: list[bytes]) -> bytes:
    """Several ``"result"`` envelopes of one key set -> one, ciphertexts in order."""
    if len(blobs) == 1:
        return blobs[0]
    frames: list[bytes] = []
    fp = None
    meta: dict = {"levels": [], "lengths": []}
    for b in blobs:
        env = open_envelope(b, "result")
        if fp is not None and env.fingerprint != fp:
            raise KeyMismatchError(f"results of different key sets: {fp!r} and {env.fingerprint!r}")
        fp = env.fingerprint
        frames += _frames(env.payload, env.meta.get("count"))
        meta["backend"] = env.meta.get("backend", "")
        meta["levels"] += list(env.meta.get("levels", []))
        meta["lengths"] += list(env.meta.get("lengths", []))
    meta["levels"], meta["lengths"] = meta["levels"][:64], meta["lengths"][:64]
    assert fp is not None
    return _pack("result", frames, fp, meta)
