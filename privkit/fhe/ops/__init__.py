"""Encrypted operators. Each takes a backend and ciphertexts, never imports TenSEAL, records its
op counts in ``backend.counter`` (under a section when given) and has a numpy reference of the
same maths (``<name>_ref``) that the property tests compare against.

Names are resolved lazily from the modules below, so importing one operator does not import all.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module (one line per name; keep sorted by module)
_EXPORTS: dict[str, str] = {
    # boxes.py / sat/ (summed-area tables, box filters)
    "Box": "boxes",
    "BoxFilterSet": "boxes",
    "approximate_kernel": "boxes",
    "fit_alphas": "boxes",
    "box_candidates": "boxes",
    "SatGeometry": "sat",
    "sat_geometry": "sat",
    "summed_area_table": "sat",
    "box_sum_ref": "sat",
    "conv_sat": "sat",
    "conv_sat_ref": "sat",
    "conv_sat_simd_ref": "sat",
    "conv_sat_element_ref": "sat",
    "correlate_ref": "sat",
    "conv_sat_depth": "sat",
    "conv_sat_plan": "sat",
    "required_rotations_conv_sat": "sat",
    "encrypt_elements": "sat",
    "decrypt_elements": "sat",
    # conv_freq.py
    "conv1d_freq": "conv_freq",
    "conv1d_freq_ref": "conv_freq",
    "conv_freq_fft_size": "conv_freq",
    "conv_freq_depth": "conv_freq",
    "required_rotations_conv_freq": "conv_freq",
    # conv_spatial.py
    "conv1d_spatial": "conv_spatial",
    "conv1d_spatial_ref": "conv_spatial",
    "conv2d_spatial": "conv_spatial",
    "conv2d_spatial_ref": "conv_spatial",
    "conv3d_spatial": "conv_spatial",
    "conv3d_spatial_ref": "conv_spatial",
    "conv_padding": "conv_spatial",
    "conv_output_shape": "conv_spatial",
    "conv_spatial_depth": "conv_spatial",
    "required_rotations_conv_spatial": "conv_spatial",
    # fourier.py (the DFT)
    "dft": "fourier",
    "dft_ref": "fourier",
    "dft_plan": "fourier",
    "dft_depth": "fourier",
    "required_rotations_dft": "fourier",
    "apply_sparse_chain": "fourier",
    "DFTPlan": "fourier",
    # linear.py
    "linear_dft": "linear",
    "linear_diag": "linear",
    "linear_ref": "linear",
    "linear_depth": "linear",
    "linear_method": "linear",
    "required_rotations_linear": "linear",
    # packed.py (channel-packed, gapped layouts: what the compiler chains)
    "PackedLayout": "packed",
    "conv1d_packed": "packed",
    "conv1d_packed_ref": "packed",
    "linear_packed": "packed",
    "linear_packed_ref": "packed",
    "sum_pool_packed": "packed",
    "sum_pool_packed_ref": "packed",
    # poly.py
    "RangeWarning": "poly",
    "calibrate_bound": "poly",
    "check_range": "poly",
    "chebyshev_fit": "poly",
    "cheb_to_power": "poly",
    "power_to_cheb": "poly",
    "poly_eval": "poly",
    "poly_eval_ref": "poly",
    "poly_depth": "poly",
    "poly_cost": "poly",
    "compg_f": "poly",
    "compg_g": "poly",
    "sign_plan": "poly",
    "sign_composite": "poly",
    "sign_composite_ref": "poly",
    "sign_composite_depth": "poly",
    "relu_plan": "poly",
    "relu_composite": "poly",
    "relu_composite_ref": "poly",
    "relu_composite_depth": "poly",
    "relu_poly_coeffs": "poly",
    "relu_poly": "poly",
    "relu_poly_ref": "poly",
    "relu_poly_depth": "poly",
    "sqrt": "poly",
    "sqrt_ref": "poly",
    "sqrt_depth": "poly",
    "abs_poly_coeffs": "poly",
    "abs_poly": "poly",
    "abs_poly_ref": "poly",
    "abs_poly_depth": "poly",
    "approx_max": "poly",
    "approx_max_ref": "poly",
    "approx_max_depth": "poly",
    # pool.py
    "max_pool1d": "pool",
    "max_pool1d_ref": "pool",
    "max_pool1d_depth": "pool",
    "avg_pool1d": "pool",
    "avg_pool1d_ref": "pool",
    "avg_pool1d_depth": "pool",
    "max_pool2d": "pool",
    "max_pool2d_ref": "pool",
    "max_pool2d_depth": "pool",
    "pool_output_length": "pool",
    "required_rotations_pool1d": "pool",
    "required_rotations_pool2d": "pool",
    # plan.py (depth planner)
    "OpSpec": "plan",
    "DepthPlan": "plan",
    "op_depth": "plan",
    "plan_depth": "plan",
    "check_depth": "plan",
    # rotate_sum.py, compaction.py, diagonal.py
    "mask": "rotate_sum",
    "mask_ref": "rotate_sum",
    "rotate_and_sum": "rotate_sum",
    "rotate_and_sum_ref": "rotate_sum",
    "replicate": "rotate_sum",
    "replicate_ref": "rotate_sum",
    "remove_holes": "compaction",
    "remove_holes_ref": "compaction",
    "remove_holes_depth": "compaction",
    "required_rotations_rotate_and_sum": "rotate_sum",
    "required_rotations_replicate": "rotate_sum",
    "required_rotations_remove_holes": "compaction",
    "gather": "compaction",
    "gather_ref": "compaction",
    "gather_depth": "compaction",
    "required_rotations_gather": "compaction",
    "diagonal_plan": "diagonal",
    "diagonal_matvec": "diagonal",
    "diagonal_matvec_ref": "diagonal",
    "mul_plain_sum": "diagonal",
    "required_rotations_diagonal": "diagonal",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'privkit.fhe.ops' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{mod}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
