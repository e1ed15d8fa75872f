"""Batches: the column arrays that move through the pipeline, one numpy array per field.

A ``RawBatch`` is what a capture source hands over: the captured bytes of many packets back
to back, with per-packet offset, lengths and timestamps. ``decode`` turns it into a ``Batch``
with header columns; later stages return copies of it with their own columns or masks set.
Nothing here depends on the rest of the package.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class RawBatch:
    """Packets as a capture source read them.

    ``wirelen`` is each frame's length on the wire; 0 where the source could not tell it
    (a live capture cut by the snaplen), in which case decode derives it from the IP header.

    >>> data = np.zeros(120, np.uint8)
    >>> b = RawBatch(0, 1, data, np.array([0, 60]), np.array([60, 60]), np.array([60, 60]),
    ...              np.array([1_000_000, 1_000_010]))
    >>> len(b)
    2
    """

    iface: int
    linktype: int
    data: U8
    offset: I64
    caplen: I64
    wirelen: I64
    ts: I64  # microseconds since the epoch
    head: U8 | None = None  # each frame's first bytes, (n, decode.link.HEAD), when a reader process gathered them already

    def __len__(self) -> int:
        return int(self.offset.size)

    def rows(self, start: int, stop: int | None = None) -> RawBatch:
        """Packets ``start`` to ``stop``: views of this batch's columns, the same bytes."""
        s = slice(start, stop)
        head = None if self.head is None else self.head[s]
        return RawBatch(self.iface, self.linktype, self.data, self.offset[s], self.caplen[s], self.wirelen[s], self.ts[s], head)


@dataclass(frozen=True, slots=True)
class Batch:
    """A decoded batch. Codes index the tuples in ``agent.labels``.

    Addresses are 128-bit, as two uint64 halves; IPv4 addresses are IPv4-mapped IPv6
    (``::ffff:a.b.c.d``) so that classification and flow keys treat both families alike.
    """

    raw: RawBatch
    network: U8
    transport: U8
    error: U8  # 0, or an index + 1 into labels.DECODE_ERRORS
    wirelen: I64
    l3: I64  # offset of the network header in raw.data (-1: none)
    l3len: I64  # captured network-layer bytes that belong to the packet
    l4: I64  # where the transport header starts, counted from the network header
    proto: U8  # IP protocol number of the transport (after IPv6 extension headers)
    src_hi: U64
    src_lo: U64
    dst_hi: U64
    dst_lo: U64
    sport: I64
    dport: I64
    tcp_flags: U8
    has_ports: Mask  # transport header read; False for non-first fragments and non-IP
    is_ip: Mask  # addresses were read
    window: U8  # (n, WINDOW): each packet's first bytes from its network header on (dedup hashes them)
    # Set by later stages:
    frame_hash: U64 = field(default_factory=lambda: np.zeros(0, np.uint64))  # the dedup key, when computed early
    duplicate: Mask = field(default_factory=lambda: np.zeros(0, np.bool_))
    sampled_out: Mask = field(default_factory=lambda: np.zeros(0, np.bool_))
    direction: U8 = field(default_factory=lambda: np.zeros(0, np.uint8))
    src_local: Mask = field(default_factory=lambda: np.zeros(0, np.bool_))
    dst_local: Mask = field(default_factory=lambda: np.zeros(0, np.bool_))

    def __len__(self) -> int:
        return int(self.network.size)

    @property
    def ts(self) -> I64:
        return self.raw.ts

    @property
    def counted(self) -> Mask:
        """Packets that reach the traffic counters: neither duplicates nor sampled out."""
        if self.duplicate.size and self.sampled_out.size:
            return ~(self.duplicate | self.sampled_out)
        if self.duplicate.size:
            return ~self.duplicate
        return np.ones(len(self), np.bool_)

    def replace(self, **changes: object) -> Batch:
        """A copy with some columns replaced (the arrays themselves are shared).

        ``dataclasses.replace`` runs the generated ``__init__`` and its frozen checks: every stage
        calls this once per batch, so the slots are copied directly instead, at half the cost.
        """
        unknown = changes.keys() - _BATCH_FIELDS
        if unknown:
            raise TypeError(f"Batch has no column {sorted(unknown)[0]!r}")
        new = object.__new__(Batch)
        for name in _BATCH_FIELDS:
            object.__setattr__(new, name, changes[name] if name in changes else getattr(self, name))
        return new


_BATCH_FIELDS = tuple(f.name for f in dataclasses.fields(Batch))
