"""Randomness as a parameter.

Cores never touch module-level :mod:`random`; they take an ``rng`` from their
config. Production uses :func:`default_rng` (``secrets``-quality, from the
OS); tests and the lab pass ``random.Random(seed)`` so runs replay exactly.
"""

from __future__ import annotations

import random

__all__ = ["Rng", "default_rng", "seeded_rng"]

Rng = random.Random


def default_rng() -> random.Random:
    """An OS-backed generator, suitable for transaction IDs and nonces."""
    return random.SystemRandom()


def seeded_rng(seed: int) -> random.Random:
    """A deterministic generator for tests and lab scenarios."""
    return random.Random(seed)
