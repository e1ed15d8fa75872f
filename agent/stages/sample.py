"""Packet sampling for high rates: keep a share of packets, chosen by content hash so a replay keeps the same ones.

Traffic counters of kept packets are scaled by 1/rate, so they stay unbiased estimates;
the packets left out are counted as sampled out.

>>> Sampler(1.0).rate
1.0
"""

from __future__ import annotations

import numpy as np

from agent.base.batch import U64, Batch


class Sampler:
    def __init__(self, rate: float) -> None:
        if not 0.0 < rate <= 1.0:
            raise ValueError("sampling rate must be in (0, 1]")
        self.rate = rate
        self.scale = 1.0 / rate
        # A packet is kept when the top 32 bits of its frame hash fall below this bound.
        self._bound = np.uint64(int(rate * (1 << 32)))

    def apply(self, batch: Batch, frame_hashes: U64) -> Batch:
        """The batch with ``sampled_out`` set for non-duplicate packets left out by sampling."""
        if self.rate >= 1.0:
            return batch.replace(sampled_out=np.zeros(len(batch), np.bool_))
        mixed = frame_hashes * np.uint64(0xD6E8FEB86659FD93)
        out = ((mixed >> np.uint64(32)) >= self._bound) & ~batch.duplicate
        return batch.replace(sampled_out=out)
