"""Transport headers: TCP (ports, flags), UDP (ports), ICMP and ICMPv6, by IP protocol number.

A transport header that is cut short or malformed leaves the packet counted with transport
``other`` and its decode error counted; a non-first fragment keeps its protocol but has no ports.
"""

from __future__ import annotations

import numpy as np

from agent import labels
from agent.batch import U8
from agent.decode._bytes import rows
from agent.decode._columns import Columns

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

# Lookup tables indexed by protocol number (and by network for the ICMP variants).
_KIND = np.full((2, 256), labels.OTHER_TRANSPORT, np.uint8)
_NEED = np.zeros((2, 256), np.int64)
_TRUNC = np.zeros((2, 256), np.uint8)
for _proto, (_kind, _need, _err, _family) in PROTOCOLS.items():
    for _net in (labels.IPV4, labels.IPV6):
        if _family in (None, _net):
            _KIND[_net, _proto], _NEED[_net, _proto], _TRUNC[_net, _proto] = _kind, _need, _err


def decode(data: U8, c: Columns) -> None:
    """Decode the transport header of every IP packet whose network header decoded cleanly."""
    r = np.flatnonzero(c.is_ip & (c.error == 0))
    if r.size == 0:
        return
    net = c.network[r].astype(np.intp)
    proto = c.proto[r].astype(np.intp)
    kind = _KIND[net, proto]
    nonfirst = c.nonfirst[r]
    at, ip_end = c.l4[r], c.ip_end[r]
    h = rows(data, at, 14)
    truncated = (at + _NEED[net, proto] > ip_end) & ~nonfirst
    offset = h[:, 12] >> 4
    udp_length = (h[:, 4].astype(np.int64) << 8) | h[:, 5]
    bad_tcp = (kind == labels.TCP) & (offset < 5)
    # In a fragment the UDP length covers the whole datagram, not this packet.
    bad_udp = (kind == labels.UDP) & ((udp_length < 8) | ((udp_length > c.ip_limit[r] - at) & ~c.fragment[r]))
    bad = (bad_tcp | bad_udp) & ~truncated & ~nonfirst
    error = np.where(truncated, _TRUNC[net, proto], np.where(bad_tcp & bad, TCP_BAD_HEADER_LENGTH, np.where(bad, UDP_BAD_LENGTH, 0)))
    c.error[r] = error.astype(np.uint8)
    c.transport[r] = np.where(truncated | bad, labels.OTHER_TRANSPORT, kind)
    ports = ((kind == labels.TCP) | (kind == labels.UDP)) & ~truncated & ~bad & ~nonfirst
    c.has_ports[r] = ports
    pr = np.ascontiguousarray(h[:, 0:4]).view(">u2").astype(np.int64)
    c.sport[r] = np.where(ports, pr[:, 0], 0)
    c.dport[r] = np.where(ports, pr[:, 1], 0)
    c.tcp_flags[r] = np.where(ports & (kind == labels.TCP), h[:, 13], 0)


def mark_other(c: Columns) -> None:
    """IP packets whose network header did not decode cleanly carry transport ``other``."""
    broken = (c.network <= labels.IPV6) & ((c.error != 0) | ~c.is_ip)
    c.transport[broken] = labels.OTHER_TRANSPORT
