"""ARP: checked for length only on the hot path; the device registry reads its addresses on a slow path."""

from __future__ import annotations

import numpy as np

from agent.base import labels
from agent.base.batch import I64, U8
from agent.stages.decode._columns import Columns

ARP_TRUNCATED = labels.decode_error_code("arp", "truncated")


def arp(w: U8, avail: I64, c: Columns, mine: np.ndarray) -> None:
    """Rows ``mine`` are ARP: the fixed part, then two hardware and two protocol addresses."""
    size = 8 + 2 * (w[:, 4].astype(np.int64) + w[:, 5])
    np.copyto(c.network, labels.ARP, where=mine)
    np.copyto(c.error, ARP_TRUNCATED, where=mine & ((avail < 8) | (size > avail)))
    np.copyto(c.l3len, np.maximum(avail, 0), where=mine)
