"""CKKS parameter sets and their security level.

A :class:`CKKSParams` fixes the ring dimension ``N`` (``poly_degree``), the coefficient-modulus
chain (bit sizes of the primes, the last one being SEAL's special key-switching prime) and the
scale. From the chain follow:

* ``slots = N / 2`` complex (or real) values per ciphertext;
* ``depth``: how many rescales (multiplicative levels) a fresh ciphertext affords, i.e. the
  number of data primes minus the base prime;
* ``security_bits``: from the Homomorphic Encryption Standard table (classical attacks, ternary
  secret): the largest of 256 / 192 / 128 whose bound on ``log2(QP)`` the chain respects. A chain
  above the 128-bit bound is refused unless ``allow_insecure=True``; then ``security_bits`` is a
  rough estimate (security scales about linearly with ``N / log QP``) and ``secure`` is False.

The primes themselves are computed here exactly as SEAL's ``CoeffModulus::Create`` does (largest
primes below ``2**bits`` congruent to 1 mod 2N, taken in order), so the simulator and the real
backend use the same numbers.

>>> p = CKKSParams.preset("n8192")
>>> p.poly_degree, p.slots, p.depth, p.security_bits, p.secure
(8192, 4096, 3, 128, True)
>>> CKKSParams(poly_degree=8192, coeff_bits=(60, 40, 40, 40, 60), scale_bits=40)
Traceback (most recent call last):
...
privkit.errors.ParameterError: the modulus chain (60, 40, 40, 40, 60) has log2(QP) = 240 bits, above the 218 bits that N=8192 allows for 128-bit security (HE standard, classical); drop primes or make them smaller, use a larger poly_degree, or pass allow_insecure=True to opt out explicitly
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from typing import Any

from ..errors import ParameterError

__all__ = ["CKKSParams", "HE_STANDARD_MAX_LOGQ", "PRESETS", "galois_element", "max_logq"]

#: HE standard (Albrecht et al. 2018), classical attacks, uniform ternary secret:
#: the maximal log2(Q*P) for each ring dimension and security level.
HE_STANDARD_MAX_LOGQ: dict[int, dict[int, int]] = {
    128: {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881},
    192: {1024: 19, 2048: 37, 4096: 75, 8192: 152, 16384: 305, 32768: 611},
    256: {1024: 14, 2048: 29, 4096: 58, 8192: 118, 16384: 237, 32768: 476},
}

#: name -> (poly_degree, coeff_bits, scale_bits). The first prime carries the integer part of
#: values (|x| < 2**(first - scale - 1)); the last is the special prime.
PRESETS: dict[str, tuple[int, tuple[int, ...], int]] = {
    "n8192": (8192, (49, 40, 40, 40, 49), 40),  # log QP 218, depth 3, |x| < 256
    "n16384": (16384, (59,) + (40,) * 8 + (59,), 40),  # log QP 438, depth 8, |x| < 2**18
    "n32768": (32768, (60,) + (40,) * 19 + (60,), 40),  # log QP 880, depth 19, |x| < 2**19
}


def max_logq(poly_degree: int, security: int = 128) -> int:
    """The HE-standard bound on log2(QP) for ``poly_degree`` at ``security`` bits."""
    table = HE_STANDARD_MAX_LOGQ[security]
    if poly_degree not in table:
        raise ParameterError(
            f"no HE-standard entry for poly_degree={poly_degree}; use one of {sorted(table)}"
        )
    return table[poly_degree]


def _is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin for n < 2**64."""
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    for p in small:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for a in small:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


@functools.lru_cache(maxsize=64)
def _seal_primes(poly_degree: int, coeff_bits: tuple[int, ...]) -> tuple[int, ...]:
    """SEAL's CoeffModulus::Create: per bit size, the largest primes = 1 mod 2N below 2**bits."""
    factor = 2 * poly_degree
    pools: dict[int, list[int]] = {}
    for bits in sorted(set(coeff_bits)):
        need = coeff_bits.count(bits)
        found: list[int] = []
        value = (1 << bits) - factor + 1
        lower = 1 << (bits - 1)
        while len(found) < need and value > lower:
            if _is_prime(value):
                found.append(value)
            value -= factor
        if len(found) < need:
            raise ParameterError(
                f"not enough {bits}-bit primes congruent to 1 mod {factor}: needed {need}, "
                f"found {len(found)}; use larger bit sizes"
            )
        pools[bits] = found
    # SEAL hands the primes of each size out from the back of its list (smallest first).
    out = []
    for bits in coeff_bits:
        out.append(pools[bits].pop())
    return tuple(out)


def _strict_int(v: Any, what: str) -> int:
    """``v`` if it is a real integer (not a bool, float or string), else ``TypeError``."""
    if type(v) is not int:
        raise TypeError(f"{what} must be an integer, got {v!r}"[:200])
    return v


@dataclasses.dataclass(frozen=True)
class CKKSParams:
    """CKKS encryption parameters (immutable). See the module docstring.

    Args:
        poly_degree: ring dimension N, a power of two from 1024 to 32768.
        coeff_bits: bit sizes of the modulus chain; first = base prime, last = special prime.
        scale_bits: log2 of the encoding scale; must not exceed the middle primes' sizes.
        allow_insecure: accept a chain above the 128-bit HE-standard bound (reported as such).
        name: a label (the preset name, or "custom").
    """

    poly_degree: int
    coeff_bits: tuple[int, ...]
    scale_bits: int = 40
    allow_insecure: bool = False
    name: str = "custom"

    def __post_init__(self) -> None:
        n = self.poly_degree
        if not isinstance(n, int) or n < 1024 or n > 32768 or n & (n - 1):
            raise ParameterError(
                f"poly_degree must be a power of two between 1024 and 32768, got {n!r}"
            )
        if type(self.allow_insecure) is not bool:
            raise ParameterError(
                f"allow_insecure must be True or False, got {self.allow_insecure!r}; a string such "
                "as 'false' is refused rather than read as a true value"
            )
        if type(self.scale_bits) is not int:
            raise ParameterError(f"scale_bits must be an integer, got {self.scale_bits!r}")
        object.__setattr__(self, "coeff_bits", tuple(int(b) for b in self.coeff_bits))
        bits = self.coeff_bits
        if len(bits) < 3:
            raise ParameterError(
                f"coeff_bits needs at least 3 primes (base, one level, special), got {bits}"
            )
        if any(b < 20 or b > 60 for b in bits):
            raise ParameterError(f"every prime must have 20..60 bits (SEAL's limit), got {bits}")
        if not 20 <= self.scale_bits <= 60:
            raise ParameterError(f"scale_bits must be in 20..60, got {self.scale_bits}")
        if any(b < self.scale_bits for b in bits[1:-1]):
            raise ParameterError(
                f"the middle primes {bits[1:-1]} must have at least scale_bits={self.scale_bits} "
                "bits, or rescaling destroys precision; raise their sizes or lower scale_bits"
            )
        if bits[0] <= self.scale_bits:
            raise ParameterError(
                f"the first prime ({bits[0]} bits) must be larger than the scale "
                f"({self.scale_bits} bits) to hold the integer part of values"
            )
        if bits[-1] < max(bits[:-1]):
            raise ParameterError(
                f"the special (last) prime ({bits[-1]} bits) must be at least as large as every "
                f"other prime (max {max(bits[:-1])}) for key switching to stay accurate"
            )
        limit = max_logq(n, 128)
        if self.log_qp > limit and not self.allow_insecure:
            raise ParameterError(
                f"the modulus chain {bits} has log2(QP) = {self.log_qp} bits, above the {limit} "
                f"bits that N={n} allows for 128-bit security (HE standard, classical); drop "
                "primes or make them smaller, use a larger poly_degree, or pass "
                "allow_insecure=True to opt out explicitly"
            )

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str) -> CKKSParams:
        """One of :data:`PRESETS` ("n8192", "n16384", "n32768")."""
        if name not in PRESETS:
            raise ParameterError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        n, bits, scale = PRESETS[name]
        return cls(poly_degree=n, coeff_bits=bits, scale_bits=scale, name=name)

    @classmethod
    def coerce(cls, params: CKKSParams | str) -> CKKSParams:
        """Accept a CKKSParams or a preset name."""
        if isinstance(params, CKKSParams):
            return params
        if isinstance(params, str):
            return cls.preset(params)
        raise ParameterError(f"expected CKKSParams or a preset name, got {type(params).__name__}")

    # -- derived ------------------------------------------------------------------------------
    @property
    def slots(self) -> int:
        return self.poly_degree // 2

    @property
    def depth(self) -> int:
        """Usable multiplicative levels of a fresh ciphertext."""
        return len(self.coeff_bits) - 2

    @property
    def scale(self) -> float:
        return float(2**self.scale_bits)

    @property
    def log_qp(self) -> int:
        return int(sum(self.coeff_bits))

    @property
    def security_bits(self) -> int:
        """128, 192 or 256 from the HE standard; below 128, a rough estimate (see ``secure``)."""
        for level in (256, 192, 128):
            if self.log_qp <= max_logq(self.poly_degree, level):
                return level
        return int(128 * max_logq(self.poly_degree, 128) / self.log_qp)

    @property
    def secure(self) -> bool:
        """True when the chain meets the 128-bit HE-standard bound."""
        return self.log_qp <= max_logq(self.poly_degree, 128)

    @property
    def primes(self) -> tuple[int, ...]:
        """The chain's primes, as SEAL builds them."""
        return _seal_primes(self.poly_degree, self.coeff_bits)

    @property
    def max_abs_value(self) -> float:
        """Largest |value| that still decrypts correctly at the last level."""
        return float(2 ** (self.coeff_bits[0] - self.scale_bits - 1))

    def fingerprint(self) -> str:
        """A short stable hash of everything that makes ciphertexts compatible."""
        blob = json.dumps(
            {"n": self.poly_degree, "primes": self.primes, "scale": self.scale_bits}, sort_keys=True
        ).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "poly_degree": self.poly_degree,
            "coeff_bits": list(self.coeff_bits),
            "scale_bits": self.scale_bits,
            "allow_insecure": self.allow_insecure,
            "name": self.name,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CKKSParams:
        """Inverse of :meth:`to_dict`, strict: every field must have its exact JSON type.

        Booleans must be real booleans (``"false"`` is refused, never read as ``True``), integers
        real integers (not ``8192.5``, ``"8192"`` or ``true``), and unknown keys are refused, so a
        hostile or damaged header cannot switch on insecure mode by accident.

        >>> CKKSParams.from_dict({"poly_degree": 8192, "coeff_bits": [49, 40, 40, 40, 49],
        ...                       "scale_bits": 40, "allow_insecure": "false"})
        Traceback (most recent call last):
        ...
        privkit.errors.ParameterError: malformed parameter description: allow_insecure must be true or false (a JSON boolean), got 'false'
        """
        try:
            if not isinstance(d, dict):
                raise TypeError(f"expected an object, got {type(d).__name__}")
            unknown = set(d) - {"poly_degree", "coeff_bits", "scale_bits", "allow_insecure", "name"}
            if unknown:
                raise ValueError(f"unknown field(s) {sorted(map(str, unknown))[:4]}")
            bits = d["coeff_bits"]
            if not isinstance(bits, list) or len(bits) > 64:
                raise TypeError("coeff_bits must be a list of at most 64 integers")
            insecure = d.get("allow_insecure", False)
            if type(insecure) is not bool:
                raise TypeError(
                    f"allow_insecure must be true or false (a JSON boolean), got {insecure!r}"
                )
            name = d.get("name", "custom")
            if not isinstance(name, str) or len(name) > 64:
                raise TypeError("name must be a string of at most 64 characters")
            return cls(
                poly_degree=_strict_int(d["poly_degree"], "poly_degree"),
                coeff_bits=tuple(_strict_int(b, "coeff_bits") for b in bits),
                scale_bits=_strict_int(d["scale_bits"], "scale_bits"),
                allow_insecure=insecure,
                name=name,
            )
        except (KeyError, TypeError, ValueError) as e:
            what = f"missing field {e}" if isinstance(e, KeyError) else str(e)
            raise ParameterError(f"malformed parameter description: {what}") from None

    def describe(self) -> str:
        sec = f"{self.security_bits}-bit" if self.secure else f"INSECURE (~{self.security_bits}-bit)"
        return (
            f"CKKS N={self.poly_degree} ({self.slots} slots), chain {list(self.coeff_bits)} "
            f"(log QP {self.log_qp}), scale 2^{self.scale_bits}, depth {self.depth}, {sec}"
        )


def galois_element(params: CKKSParams, step: int) -> int:
    """SEAL's Galois element for a left rotation by ``step`` (negative: right): 3**k mod 2N.

    >>> galois_element(CKKSParams.coerce("n8192"), 1)
    3
    """
    m = 2 * params.poly_degree
    k = step if step > 0 else params.slots + step
    return pow(3, k, m)
