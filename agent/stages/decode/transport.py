"""Transport headers: TCP (ports, flags), UDP (ports), ICMP and ICMPv6, by IP protocol number.

A transport header that is cut short or malformed leaves the packet counted with transport
``other`` and its decode error counted; a non-first fragment keeps its protocol but has no ports.
"""

from __future__ import annotations

import numpy as np

from agent.base import labels
from agent.base.batch import I64, U8
from agent.base.rows import rows
from agent.stages.decode._columns import Columns

ERR = labels.decode_error_code

# IP protocol -> (transport code, bytes needed, truncation error, the network it belongs to or None for both)
PROTOCOLS = {
    6: (labels.TCP, 20, ERR("tcp", "truncated"), None),
    17: (labels.UDP, 8, ERR("udp", "truncated"), None),
    1: (labels.ICMP, 4, ERR("icmp", "truncated"), labels.IPV4),
    58: (labels.ICMPV6, 4, ERR("icmpv6", "truncated"), labels.IPV6),
}
TCP_BAD_HEADER_LENGTH = ERR("tcp", "bad_header_length")
UDP_BAD_LENGTH = ERR("udp", "bad_length")

# Lookup tables indexed by network * 256 + protocol number.
_KIND = np.full(2 * 256, labels.OTHER_TRANSPORT, np.uint8)
_NEED = np.zeros(2 * 256, np.int64)
_TRUNC = np.zeros(2 * 256, np.uint8)
for _proto, (_kind, _need, _err, _family) in PROTOCOLS.items():
    for _net in (labels.IPV4, labels.IPV6):
        if _family in (None, _net):
            _KIND[_net * 256 + _proto], _NEED[_net * 256 + _proto], _TRUNC[_net * 256 + _proto] = _kind, _need, _err


def _headers(data: U8, l3: I64, window: U8, at: I64) -> U8:
    """The first 14 bytes of every transport header: from the window for the two usual places
    (after a plain IPv4 or IPv6 header), from the buffer for the rest."""
    h = np.ascontiguousarray(window[:, 20:34])
    v6 = (at == 40).nonzero()[0]
    if v6.size:
        h[v6] = window[v6, 40:54]
    other = ((at != 20) & (at != 40)).nonzero()[0]
    if other.size:
        h[other] = rows(data, l3[other] + at[other], 14)
    return h


def decode(data: U8, l3: I64, window: U8, c: Columns) -> None:
    """Decode the transport header of every IP packet whose network header decoded cleanly."""
    mine = c.is_ip & (c.error == 0)
    if not mine.any():
        return
    lookup = np.minimum(c.network, 1).astype(np.intp) * 256 + c.proto
    kind = _KIND[lookup]
    nonfirst = c.nonfirst
    at = c.l4
    h = _headers(data, l3, window, at)
    truncated = (at + _NEED[lookup] > c.ip_end) & ~nonfirst
    is_tcp, is_udp = kind == labels.TCP, kind == labels.UDP
    udp_length = (h[:, 4].astype(np.int64) << 8) | h[:, 5]
    bad_tcp = is_tcp & ((h[:, 12] >> 4) < 5)
    # In a fragment the UDP length covers the whole datagram, not this packet.
    # A UDP length of 0 is a jumbogram's (RFC 2675) or a BIG TCP-style oversized packet's.
    bad_udp = is_udp & (((udp_length < 8) & (udp_length != 0)) | ((udp_length > c.ip_limit - at) & ~c.fragment))
    bad = (bad_tcp | bad_udp) & ~truncated & ~nonfirst
    if (mine & (truncated | bad)).any():
        error = np.where(truncated, _TRUNC[lookup], np.where(bad_tcp, TCP_BAD_HEADER_LENGTH, UDP_BAD_LENGTH))
        np.copyto(c.error, error, where=mine & (truncated | bad), casting="unsafe")
    ports = (is_tcp | is_udp) & ~truncated & ~bad & ~nonfirst & mine
    pr = np.ascontiguousarray(h[:, 0:4]).view(">u2")
    np.copyto(c.transport, np.where(truncated | bad, labels.OTHER_TRANSPORT, kind), where=mine)
    c.has_ports[:] = ports
    np.copyto(c.sport, pr[:, 0], where=ports, casting="unsafe")
    np.copyto(c.dport, pr[:, 1], where=ports, casting="unsafe")
    np.copyto(c.tcp_flags, h[:, 13], where=ports & is_tcp)


def mark_other(c: Columns) -> None:
    """IP packets whose network header did not decode cleanly carry transport ``other``."""
    broken = (c.network <= labels.IPV6) & ((c.error != 0) | ~c.is_ip)
    c.transport[broken] = labels.OTHER_TRANSPORT
