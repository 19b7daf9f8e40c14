"""Primality of a modulus p: the config refuses operation=div unless Z_p is a field, and data/modular.py builds
the table of a op b mod p. Imports nothing heavy, so the config can ask before torch is loaded."""

from __future__ import annotations

import math


def is_prime(p: int) -> bool:
    """Whether ``p`` is a prime (trial division up to sqrt(p): p is a modulus of a table of p^2 pairs)."""
    return p >= 2 and all(p % k for k in range(2, math.isqrt(p) + 1))
