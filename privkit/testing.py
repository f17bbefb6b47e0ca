"""Testing helpers shipped with privkit (used by our tests and by users' tests of their models).

:func:`assert_close_encrypted` picks its tolerance from the backend that produced the result:

* on the noise-free simulator (``SimBackend`` with ``noise_std=0``) the result is ordinary
  float64 arithmetic, so it must equal its reference to ``SIM_RTOL`` (1e-9) relative to
  ``max(1, max|expected|)``: any bookkeeping slip (a wrong scale factor, a wrong coefficient)
  shows, while float rounding (about 1e-15) never does;
* on SEAL (or a noisy simulator) the tolerance grows with the CKKS scale and the number of
  levels the computation *actually consumed* (pass ``depth=params.depth - ct.level``, not the
  parameters' full depth).

It fails with the maximal error, where it occurred and how the tolerance was derived.
:func:`assert_backends_agree` compares the same program run on SEAL and on the simulator at
``SEAL_SIM_RTOL`` (1e-7) relative, tight enough that a scale-bookkeeping difference between the
two (the ``s/q`` factors are 1e-7 to 2e-5) shows.

For DP-SGD, :func:`micro_batch_gradients` is the per-sample gradient oracle (a loop of batch size
1, as Opacus checks every grad sampler) and :func:`assert_per_sample_gradients` compares Opacus'
per-sample gradients (with privkit's samplers, whatever ``grad_sample_mode``) against it.

>>> import numpy as np
>>> from privkit.fhe import CKKSParams
>>> err = assert_close_encrypted(np.array([1.0, 2.0 + 1e-7]), np.array([1.0, 2.0]),
...                              params=CKKSParams.preset("n8192"), depth=1)
>>> round(err, 9)
1e-07
>>> assert_close_encrypted(np.array([1.0, 2.0 + 1e-7]), np.array([1.0, 2.0]), backend="sim")
Traceback (most recent call last):
...
AssertionError: encrypted result differs from the reference: max |error| 1e-07 at index 1 (actual 2, expected 2) > tolerance 2e-09 (noise-free simulator: 1e-09 relative to max(1, |expected|) 2)
>>> assert_close_encrypted(np.array([1.0, 2.5]), np.array([1.0, 2.0]), atol=1e-3)
Traceback (most recent call last):
...
AssertionError: encrypted result differs from the reference: max |error| 0.5 at index 1 (actual 2.5, expected 2) > tolerance 0.001 (atol given explicitly)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .fhe.params import CKKSParams

__all__ = [
    "SEAL_SIM_RTOL",
    "SIM_RTOL",
    "assert_backends_agree",
    "assert_close_encrypted",
    "assert_per_sample_gradients",
    "backend_kind",
    "encrypted_tolerance",
    "micro_batch_gradients",
]

#: relative tolerance of a noise-free simulator result against its exact reference
SIM_RTOL = 1e-9
#: relative tolerance of SEAL against the simulator on the same program (no rotations: the key
#: switching noise of a rotation is about 1e-7 relative; pass ``factor`` for programs with many)
SEAL_SIM_RTOL = 1e-7


def encrypted_tolerance(
    params: CKKSParams | str | None, depth: int | None, magnitude: float, factor: float = 1.0
) -> float:
    """Absolute tolerance for a CKKS (SEAL) result of the given magnitude after ``depth`` levels.

    ``magnitude * 2**-(scale_bits - 24) * (depth + 1) * factor``: with the presets' scale
    2**40 that is 1.5e-5 per level for values of size 1, about 40 times the errors we observe
    (rotations: 1e-7 to 3e-7; products: 1e-8), and far below any error a wrong computation
    makes. ``depth=None`` falls back to the parameters' full depth (the loosest choice).
    """
    p = CKKSParams.coerce(params) if params is not None else CKKSParams.preset("n8192")
    d = p.depth if depth is None else int(depth)
    return float(max(1.0, magnitude) * 2.0 ** -(p.scale_bits - 24) * (d + 1) * factor)


def _as_backend(obj: Any) -> Any:
    """A Backend from a Backend, a KeySet / PublicBundle (``.backend``), or None."""
    if obj is None or isinstance(obj, (str, CKKSParams)):
        return None
    if hasattr(obj, "simulated") and hasattr(obj, "params"):
        return obj
    be = getattr(obj, "backend", None)
    if be is not None and hasattr(be, "simulated"):
        return be
    return None


def backend_kind(backend: Any) -> str:
    """``"exact"`` for a noise-free simulator, ``"ckks"`` for SEAL or a noisy simulator,
    ``"unknown"`` when nothing says which (then the CKKS tolerance applies).

    ``backend`` is a Backend, a KeySet, a PublicBundle or the name ``"sim"`` / ``"seal"``.

    >>> backend_kind("sim"), backend_kind("seal"), backend_kind(None)
    ('exact', 'ckks', 'unknown')
    """
    if isinstance(backend, str):
        if backend not in ("sim", "seal"):
            raise ValueError(f"backend must be 'sim' or 'seal' (or a Backend/KeySet), got {backend!r}")
        return "exact" if backend == "sim" else "ckks"
    be = _as_backend(backend)
    if be is None:
        return "unknown"
    if be.simulated and float(getattr(be, "noise_std", 0.0)) == 0.0:
        return "exact"
    return "ckks"


def _report(a: np.ndarray, e: np.ndarray, tol: float, how: str, what: str) -> float:
    if a.shape != e.shape:
        raise AssertionError(f"{what} has shape {a.shape}, the reference {e.shape}")
    if a.size == 0:
        return 0.0
    err = np.abs(a - e)
    idx = int(np.argmax(err))
    max_err = float(err.flat[idx])
    if not np.isfinite(max_err) or not np.all(np.isfinite(err)) or max_err > tol:
        where = np.unravel_index(idx, a.shape)
        raise AssertionError(
            f"{what} differs from the reference: max |error| {max_err:.3g} at index "
            f"{where[0] if a.ndim == 1 else where} "
            f"(actual {a.flat[idx]:.6g}, expected {e.flat[idx]:.6g}) > tolerance {tol:.3g} ({how})"
        )
    return max_err


def assert_close_encrypted(
    actual: np.ndarray,
    expected: np.ndarray,
    params: Any = None,
    *,
    depth: int | None = None,
    backend: Any = None,
    atol: float | None = None,
    factor: float = 1.0,
    what: str = "encrypted result",
) -> float:
    """Assert a decrypted result equals its plaintext reference within the backend's tolerance.

    Args:
        params: the CKKS parameters (or preset name); a Backend or KeySet may be passed here
            instead, which also sets ``backend``.
        depth: the levels the computation consumed (``params.depth - ct.level``); used on SEAL.
        backend: ``"sim"``, ``"seal"``, a Backend or a KeySet. A noise-free simulator gets
            :data:`SIM_RTOL` relative; SEAL (and a noisy or unnamed backend) the CKKS tolerance
            of :func:`encrypted_tolerance`.
        atol: an explicit absolute tolerance (overrides both).
        factor: widens the derived tolerance (e.g. for long sums of rotations).

    Returns the maximal absolute error (handy with ``hypothesis.target``).
    """
    a = np.asarray(actual)
    e = np.asarray(expected)
    if backend is None:
        backend = params if _as_backend(params) is not None else None
    be = _as_backend(backend)
    if be is not None:
        params = be.params
    mag = float(np.max(np.abs(e))) if e.size else 0.0
    if atol is not None:
        tol, how = float(atol), "atol given explicitly"
    elif backend_kind(backend) == "exact":
        tol = SIM_RTOL * max(1.0, mag) * factor
        how = f"noise-free simulator: {SIM_RTOL:g} relative to max(1, |expected|) {max(1.0, mag):.3g}"
        if factor != 1.0:
            how += f", factor {factor:g}"
    else:
        tol = encrypted_tolerance(params, depth, mag, factor)
        desc = CKKSParams.coerce(params).describe() if params is not None else "n8192"
        how = f"derived from {desc}, depth {depth if depth is not None else 'full'}"
    return _report(a, e, tol, how, what)


def assert_backends_agree(
    seal_values: np.ndarray,
    sim_values: np.ndarray,
    *,
    rtol: float = SEAL_SIM_RTOL,
    what: str = "SEAL result",
) -> float:
    """Assert SEAL and the noise-free simulator produced the same values for the same program,
    to ``rtol`` relative to ``max(1, max|sim|)``. Returns the maximal absolute difference.

    >>> import numpy as np
    >>> assert_backends_agree(np.array([1.0 + 1e-8]), np.array([1.0])) < 1e-7
    True
    """
    s = np.asarray(sim_values)
    mag = float(np.max(np.abs(s))) if s.size else 0.0
    tol = rtol * max(1.0, mag)
    return _report(
        np.asarray(seal_values), s, tol,
        f"SEAL vs simulator: {rtol:g} relative to max(1, |sim|) {max(1.0, mag):.3g}", what,
    )


# -- DP: the per-sample gradient oracle -------------------------------------------------------------
def micro_batch_gradients(module: Any, loss: Any, n: int, *, reduction: str = "sum") -> dict[str, Any]:
    """Per-sample gradients the slow, obvious way: each of the ``n`` samples run alone.

    ``loss(model, index)`` returns the summed loss of the samples ``index`` (a slice) through
    ``model`` (``module`` here; the Opacus wrapper in :func:`assert_per_sample_gradients`). Returns
    parameter name -> tensor ``(n, *param.shape)``: per-sample gradients of the summed loss,
    Opacus' convention (with ``reduction="mean"`` each sample's loss is divided by ``n`` as in the
    batch, and the gradients are multiplied back by ``n``). Leaves ``module``'s gradients zeroed.

    >>> import torch
    >>> lin = torch.nn.Linear(2, 1).double()
    >>> x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    >>> micro_batch_gradients(lin, lambda m, i: m(x[i]).sum(), 2)["weight"].tolist()
    [[[1.0, 2.0]], [[3.0, 4.0]]]
    """
    import torch

    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    per = []
    for i in range(n):
        module.zero_grad()
        out = loss(module, slice(i, i + 1))
        if reduction == "mean":
            out = out / n
        out.backward()
        per.append({k: p.grad.clone() for k, p in module.named_parameters()})
    module.zero_grad()
    grads = {k: torch.stack([o[k] for o in per]) for k in (per[0] if per else {})}
    if reduction == "mean":
        grads = {k: v * n for k, v in grads.items()}
    return grads


def assert_per_sample_gradients(
    module: Any, loss: Any, n: int, *, reduction: str = "sum", mode: str = "hooks",
    atol: float = 1e-10, rtol: float = 1e-9,
) -> dict[str, Any]:
    """Assert that Opacus' per-sample gradients of ``module`` equal :func:`micro_batch_gradients`.

    The module is wrapped in Opacus' ``GradSampleModule`` (``mode="functorch"`` forces the
    functorch path; privkit's grad samplers are used if registered,
    :func:`privkit.dp.register_grad_samplers`), ``loss(wrapper, slice(None))`` is backpropagated
    once, and every parameter's ``grad_sample`` is compared with the oracle (shape, then
    ``torch.allclose(atol, rtol)``; the message names the parameter and the largest error).
    Returns the oracle for further checks.
    """
    import torch

    from .dp._opacus import close_hooks, grad_sample_module

    oracle = micro_batch_gradients(module, loss, n, reduction=reduction)
    gsm = grad_sample_module(module, loss_reduction=reduction, force_functorch=mode == "functorch")
    try:
        out = loss(gsm, slice(None))
        (out / n if reduction == "mean" else out).backward()
        for k, p in module.named_parameters():
            ref, got = oracle[k], p.grad_sample
            assert got is not None and got.shape == ref.shape, (
                f"{k}: per-sample gradient of shape {None if got is None else tuple(got.shape)}, "
                f"oracle {tuple(ref.shape)}")
            assert torch.allclose(got, ref, atol=atol, rtol=rtol), (
                f"{k}: per-sample gradients differ from the micro-batch oracle by up to "
                f"{(got - ref).abs().max().item():.3g} (atol {atol:g}, rtol {rtol:g})")
    finally:
        close_hooks(gsm)
    return oracle
