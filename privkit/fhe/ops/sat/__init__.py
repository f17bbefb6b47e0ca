"""Convolution from summed-area tables (SAT) and box filters, 1-D / 2-D / 3-D, encrypted and plain.

The package holds ``geometry`` (shapes, padding, packing, depth), ``engine`` (the algorithm on
ciphertexts or numbers, the rotation plan), ``conv`` (the encrypted entry point :func:`conv_sat`)
and ``reference`` (numpy twins). Import it as ``from privkit.fhe.ops import sat``; the operator
itself is ``privkit.fhe.ops.conv_sat``.

Each kernel of a layer is first approximated by boxes (:func:`privkit.fhe.ops.boxes.approximate_kernel`,
``F ~ sum_i alpha_i 1[lo_i <= k < hi_i]``). The convolution (deep-learning convention: cross
correlation, ``y[o] = sum_k F[k] x[o*stride + k - pad]``, zero padding) is then computed from the
summed-area table of the input: every box response is a signed sum of ``2**n`` SAT entries and
costs one multiplication by ``alpha_i``, so an output point costs ``m`` multiplications (``m``
boxes) instead of ``K1*...*Kn`` ("Efficient Convolution Operator in FHE Using Summed Area
Table", ICPR 2024). Two ciphertext layouts:

**per-element** (``layout="element"``, the paper's): one ciphertext per input value (its slots may
carry a batch: slot ``j`` of every ciphertext belongs to sample ``j``). The SAT is built with
additions only (``n * prod(shape)`` of them). A box sum is taken one dimension at a time
(``S[.., b] - S[.., a]`` along the last dimension, then differences of those along the one
before, ...), at most ``2**n - 1`` subtractions, and every partial difference is cached per
input channel, so neighbouring outputs, other boxes and other output channels share them;
corners on the zero border cost nothing and boxes entirely in the padding are skipped. Each
(output, box) pair costs one plaintext-scalar multiplication (boxes whose clipped ranges
coincide at the border share it). No rotations.

**SIMD** (``layout="simd"``): the zero-padded volume of input channel ``c`` is flattened row-major
into one ciphertext (:meth:`SatGeometry.pack`; padding zeros are part of the packed input). The SAT
is the composition of ``n`` windowed prefix sums over the flat vector, with strides
``s_d = prod(padded_shape[d+1:])`` and windows ``w_d = ceil(L / s_d)`` (``L`` = padded volume),
each by binary doubling (at most ``2*log2(w_d)`` rotations, no level). Because the prefix runs over
the *flat* vector, rows never need gaps: corner differences are exact for every box that lies
inside the padded volume. The cyclic rotations need ``slots >= L + sum_d w_d*s_d`` (about
``(n+1)*L``; :attr:`SatGeometry.slots_needed`). Box responses are combined baby-step giant-step:
the SAT of each input channel is rotated once per distinct *baby* corner offset (inner
dimensions, shared by all boxes and all output channels); each box takes ``2**b - 1``
additions of those copies (``b`` baby dimensions) and one scalar multiplication; the scaled box
responses are accumulated per *giant* corner offset (outer dimensions) and each output channel
rotates each of its giant accumulators once. The split between baby and giant dimensions is
chosen to minimise rotations (``split``). Output ``o`` of channel ``co`` lands in slot
``sum_d o_d * stride_d * s_d`` of output ciphertext ``co`` (:meth:`SatGeometry.unpack`); other
slots hold garbage (mask them if the next operator needs clean slots). The result's ``length``
is the full slot count.

Depth: one level when some box scale is not an integer (scales that are integers, e.g. the
boxes of a Sobel kernel, are free), else zero. Counts go to ``backend.counter`` under
``section`` (default ``"conv_sat"``).

The numpy twins run the same algorithm on numbers: :func:`conv_sat_simd_ref` on full slot vectors
(``np.roll`` for rotations, garbage included) and :func:`conv_sat_element_ref` element by element;
:func:`conv_sat_ref` is the plain SAT convolution on arrays and :func:`correlate_ref` the dense
cross-correlation it approximates.

>>> import numpy as np
>>> from privkit.fhe import KeySet
>>> from privkit.fhe.ops.boxes import approximate_kernel
>>> x = np.arange(36.0).reshape(6, 6) / 10
>>> bs = approximate_kernel(np.array([[1., 2., 1.], [2., 4., 2.], [1., 2., 1.]]) / 16)
>>> geo = sat_geometry((6, 6), bs.shape, padding=1)
>>> keys = KeySet.generate("n8192", backend="sim", rotations=required_rotations(bs, (6, 6), padding=1))
>>> out = conv_sat(keys.backend, keys.encrypt(geo.pack(x)), bs, (6, 6), padding=1)
>>> y = geo.unpack(keys.decrypt(out))
>>> bool(np.allclose(y, correlate_ref(x, bs.dense(), padding=1)))
True
"""

from __future__ import annotations

from .conv import conv_sat, decrypt_elements, encrypt_elements
from .engine import conv_sat_plan, required_rotations, required_rotations_conv_sat
from .geometry import SatGeometry, conv_sat_depth, sat_geometry
from .reference import (
    box_sum_ref,
    conv_sat_element_ref,
    conv_sat_ref,
    conv_sat_simd_ref,
    correlate_ref,
    summed_area_table,
)

__all__ = [
    "SatGeometry",
    "box_sum_ref",
    "conv_sat",
    "conv_sat_depth",
    "conv_sat_element_ref",
    "conv_sat_plan",
    "conv_sat_ref",
    "conv_sat_simd_ref",
    "correlate_ref",
    "decrypt_elements",
    "encrypt_elements",
    "required_rotations",
    "required_rotations_conv_sat",
    "sat_geometry",
    "summed_area_table",
]

