"""Decode a raw batch into header columns, one vectorised pass per protocol layer.

``decode`` never raises: whatever it cannot read becomes a decode error code on that packet,
and the packet is still counted with as much as could be read (its network, and transport
``other`` when the transport header is missing or malformed).

>>> from agent.base.batch import RawBatch
>>> import numpy as np
>>> frame = bytes.fromhex("ffffffffffff020000000001" "0806") + bytes(28)
>>> raw = RawBatch(0, 1, np.frombuffer(frame, np.uint8), np.array([0]), np.array([42]),
...                np.array([60]), np.array([0]))
>>> decode(raw).network.tolist()   # labels.ARP
[2]
"""

from __future__ import annotations

import numpy as np

from agent.base import labels
from agent.base.batch import Batch, RawBatch
from agent.base.rows import rows, shifted
from agent.stages.decode import encap, ip, transport
from agent.stages.decode._columns import Columns, select
from agent.stages.decode.arp import arp
from agent.stages.decode.link import ETH_ARP, ETH_IPV4, ETH_IPV6, HEAD, LINK_DECODERS, supported

__all__ = ["decode", "read_heads", "supported"]

_NO_WIRE_END = np.iinfo(np.int64).max // 2


def _window(raw: RawBatch, head: np.ndarray, l3: np.ndarray, owned: bool) -> np.ndarray:
    """Each frame's first ``WINDOW`` bytes from its network header on, as a view of ``head``.

    The view starts at the network-header offset most rows share (14 on Ethernet). A row whose
    header starts elsewhere (a VLAN tag, a PPPoE session) has its own window moved there first:
    in place when ``head`` is this decode's own, else in a copy. A header that starts too far in
    for ``head`` has its window read from the packet buffer.
    """
    width = ip.WINDOW
    if l3.size == 0:
        return head[:, :width]
    most = HEAD - width + 1  # one bin past the offsets a view of head can start at
    first = int(np.bincount(np.minimum(l3, most), minlength=most + 1)[:most].argmax())
    odd = (l3 != first).nonzero()[0]
    if odd.size:
        if not owned:
            head = head.copy()
        at = l3[odd]
        inside = at + width <= HEAD
        moved = np.empty((odd.size, width), np.uint8)
        near, far = inside.nonzero()[0], (~inside).nonzero()[0]
        if near.size:
            moved[near] = shifted(head[odd[near]], at[near], width)
        if far.size:
            moved[far] = rows(raw.data, raw.offset[odd[far]] + at[far], width)
        head[odd, first : first + width] = moved
    return head[:, first : first + width]


def read_heads(raw: RawBatch) -> np.ndarray:
    """Each frame's first ``HEAD`` bytes, one row per frame: what ``decode`` reads headers from."""
    return rows(raw.data, raw.offset, HEAD)


def decode(raw: RawBatch) -> Batch:
    """Decode every packet of ``raw`` (whose link type must be ``supported``)."""
    n = len(raw)
    # The one gather from the packet buffer (unless a reader process made it): every header comes from here.
    owned = raw.head is None  # a reader process's heads are the batch's: they are not written to
    head = raw.head if raw.head is not None else read_heads(raw)
    link = encap.inner(raw, LINK_DECODERS[raw.linktype](raw, head))
    c = Columns.empty(n)
    c.error[:] = link.error
    window = _window(raw, head, link.l3, owned)
    l3 = raw.offset + link.l3
    avail = raw.caplen - link.l3  # captured bytes from the network header on
    wire_known = raw.wirelen > 0
    wire_avail = np.where(wire_known, raw.wirelen - link.l3, _NO_WIRE_END)
    et = link.ethertype
    v4, v6, is_arp = et == ETH_IPV4, et == ETH_IPV6, et == ETH_ARP
    if v4.any():
        ip.ipv4(window, avail, wire_avail, c, select(v4))
    if v6.any():
        ip.ipv6(raw.data, l3, window, avail, wire_avail, c, select(v6))
    if is_arp.any():
        arp(window, avail, c, is_arp)
    transport.decode(raw.data, l3, window, c)
    transport.mark_other(c)
    # A live capture cut by the snaplen does not know the wire length: the IP header tells it.
    derived = np.where(c.is_ip, l3 - raw.offset + c.ip_limit, raw.caplen)
    wirelen = np.where(wire_known, raw.wirelen, np.maximum(derived, raw.caplen))
    has_l3 = c.network != labels.OTHER_NET
    return Batch(
        raw=raw,
        network=c.network,
        transport=c.transport,
        error=c.error,
        wirelen=wirelen,
        l3=np.where(has_l3, l3, -1),
        l3len=c.l3len,
        l4=c.l4,
        proto=c.proto,
        src_hi=c.src_hi,
        src_lo=c.src_lo,
        dst_hi=c.dst_hi,
        dst_lo=c.dst_lo,
        sport=c.sport,
        dport=c.dport,
        tcp_flags=c.tcp_flags,
        has_ports=c.has_ports,
        is_ip=c.is_ip,
        window=window,
    )
