"""ARP: checked for length only on the hot path; the device registry reads its addresses on a slow path."""

from __future__ import annotations

import numpy as np

from agent import labels
from agent.batch import I64, U8
from agent.decode._bytes import rows
from agent.decode._columns import Columns, Rows

ARP_TRUNCATED = labels.decode_error_code("arp", "truncated")


def arp(data: U8, l3: I64, end: I64, c: Columns, r: Rows) -> None:
    a, e = l3[r], end[r]
    h = rows(data, a, 8)
    size = 8 + 2 * (h[:, 4].astype(np.int64) + h[:, 5])
    c.network[r] = labels.ARP
    c.error[r] = np.where((a + 8 > e) | (a + size > e), ARP_TRUNCATED, 0).astype(np.uint8)
    c.l3len[r] = np.maximum(e - a, 0)
