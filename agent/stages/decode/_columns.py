"""The mutable per-packet columns that the protocol decoders fill in, each on its own rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.base import labels
from agent.base.batch import I64, U8, U64, Mask

Rows = slice | I64  # the rows a decoder owns: every row (a slice copies nothing) or their positions


def select(mask: Mask) -> Rows:
    """Row selector for ``mask``: a plain slice when it selects every row."""
    return slice(None) if mask.all() else mask.nonzero()[0]


@dataclass(slots=True)
class Columns:
    network: U8
    transport: U8
    error: U8
    l3len: I64
    proto: U8
    src_hi: U64
    src_lo: U64
    dst_hi: U64
    dst_lo: U64
    sport: I64
    dport: I64
    tcp_flags: U8
    has_ports: Mask
    is_ip: Mask
    # Offsets below count from the network header:
    l4: I64  # where the transport header starts
    ip_end: I64  # where the IP packet's captured bytes end
    ip_limit: I64  # where the IP header says the packet ends (may lie past the captured bytes)
    nonfirst: Mask  # a fragment other than the first: no transport header
    fragment: Mask  # any fragment, the first included: the transport's lengths cover the whole datagram

    @classmethod
    def empty(cls, n: int) -> Columns:
        z64 = np.zeros(n, np.int64)
        return cls(
            network=np.full(n, labels.OTHER_NET, np.uint8),
            transport=np.full(n, labels.NO_TRANSPORT, np.uint8),
            error=np.zeros(n, np.uint8),
            l3len=z64.copy(),
            proto=np.zeros(n, np.uint8),
            src_hi=np.zeros(n, np.uint64),
            src_lo=np.zeros(n, np.uint64),
            dst_hi=np.zeros(n, np.uint64),
            dst_lo=np.zeros(n, np.uint64),
            sport=z64.copy(),
            dport=z64.copy(),
            tcp_flags=np.zeros(n, np.uint8),
            has_ports=np.zeros(n, np.bool_),
            is_ip=np.zeros(n, np.bool_),
            l4=z64.copy(),
            ip_end=z64.copy(),
            ip_limit=z64,
            nonfirst=np.zeros(n, np.bool_),
            fragment=np.zeros(n, np.bool_),
        )
