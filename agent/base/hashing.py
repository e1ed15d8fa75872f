"""The 64-bit mixing constants every vectorised hash shares (dedup keys, flow keys, address keys).

They are the odd constants of SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom
number generators", 2014): multiplying by one and folding the high bits down spreads every
input bit over the whole word, so nearby addresses and ports land far apart in a hash table.
"""

from __future__ import annotations

import numpy as np

from agent.base.batch import U64

GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / the golden ratio: the first multiplier
MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
MIX_2 = np.uint64(0x94D049BB133111EB)


def mix(h: U64, word: U64 | np.uint64, shift: int = 29) -> U64:
    """``word`` folded into the running hash ``h``."""
    h = (h ^ word) * MIX_1
    out: U64 = h ^ (h >> np.uint64(shift))
    return out
