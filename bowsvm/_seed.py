"""Order-independent seeded draws: one stable pseudo-random key per (seed, id).

Imports nothing of bowsvm. Used wherever a seeded choice must not depend on the
order, partitioning or retries of the data (the prepare stage's limits and val
hold-out, the codebook's choice of sample images and per-image draws).
"""

from __future__ import annotations

import hashlib

__all__ = ["seeded_key"]


def seeded_key(seed: int, key: str) -> int:
    """A stable pseudo-random 64-bit integer for (seed, key): order-independent draws."""
    h = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big")
