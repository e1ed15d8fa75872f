"""Link layers: where the network header starts and which protocol it is, for each supported link type.

Every decoder reads the ``head`` matrix — the first ``HEAD`` bytes of every frame, one row per
frame, gathered once for the whole batch — and returns ``Link``: an ethertype per frame (other
link types translate their protocol field to one), where the network header starts in the
frame, and errors. ``LINK_DECODERS`` is the dispatch table by libpcap link type; a link type
missing from it is unsupported and counted as such, never decoded. What a link header announces
beyond IP and ARP — PPPoE, PPP, MPLS — is walked to the IP inside by ``agent.decode.encap``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from agent.base import labels
from agent.base.batch import I64, U8, RawBatch
from agent.base.rows import rows

HEAD = 128  # bytes of each frame read at once: link header, up to 4 VLAN tags, and a window of the network header

ETH_IPV4, ETH_IPV6, ETH_ARP = 0x0800, 0x86DD, 0x0806
ETH_PPPOE_SESSION, ETH_MPLS, ETH_MPLS_MULTICAST = 0x8864, 0x8847, 0x8848  # walked by agent.decode.encap
# Codes beyond the 16 bits of an ethertype, for what only a link type or an encapsulation announces:
ETH_PPP = 0x1_0000  # a PPP protocol field (PPPoE carries one; Ethernet's own PPP ethertype is not decoded, as in tshark)
ETH_PPP_HDLC = 0x1_0007  # PPP in HDLC-like framing or Cisco HDLC, as PPP link types carry it
SLL_PPP_HDLC = 0x0007  # the Linux cooked header's protocol value for PPP in HDLC-like framing
MAX_VLAN_TAGS = 4  # 802.1Q, 802.1ad (QinQ), and the pre-standard 0x9100 tag
NO_ETHERTYPE = -1

ERR_LINK_TRUNCATED = labels.decode_error_code("link", "truncated")
ERR_VLAN_TRUNCATED = labels.decode_error_code("vlan", "truncated")
ERR_VLAN_TOO_MANY = labels.decode_error_code("vlan", "too_many_tags")
ERR_PPI_TRUNCATED = labels.decode_error_code("ppi", "truncated")
ERR_PPI_BAD_HEADER = labels.decode_error_code("ppi", "bad_header")
ERR_PPI_UNSUPPORTED = labels.decode_error_code("ppi", "unsupported_link")

PPI = 192  # the PPI link type: a PPI header wrapping another PPI header is not decoded

# Address families of the NULL/LOOP link types: AF_INET is 2 everywhere; AF_INET6 differs
# per operating system (Linux 10, BSDs 24/28/30).
AF_INET = 2


class Link(NamedTuple):
    ethertype: I64
    l3: I64  # where the network header starts, counted from the start of the frame
    error: U8


def _be16(head: U8, at: int) -> I64:
    return (head[:, at].astype(np.int64) << 8) | head[:, at + 1]


def _be16_at(head: U8, rows: np.ndarray, at: I64) -> I64:
    value: I64 = (head[rows, at].astype(np.int64) << 8) | head[rows, at + 1]
    return value


def _is_tag(ethertype: I64) -> np.ndarray:
    tag: np.ndarray = (ethertype == 0x8100) | (ethertype == 0x88A8) | (ethertype == 0x9100)
    return tag


def _vlan_tags(head: U8, caplen: I64, ethertype: I64, at: int, error: U8) -> tuple[I64, I64]:
    """Walk VLAN tags; ``at`` is where the outer ethertype sits. Returns the inner ethertype and the L3 offset."""
    l3 = np.full(ethertype.size, at + 2, np.int64)
    tagged = _is_tag(ethertype)
    if not tagged.any():
        return ethertype, l3
    ethertype = ethertype.copy()
    i = (tagged & (error == 0)).nonzero()[0]
    pos = np.full(i.size, at, np.int64)
    for _ in range(MAX_VLAN_TAGS):
        cut = pos + 6 > caplen[i]
        error[i[cut]] = ERR_VLAN_TRUNCATED
        ethertype[i[cut]] = NO_ETHERTYPE
        i, pos = i[~cut], pos[~cut] + 4
        ethertype[i] = _be16_at(head, i, pos)
        l3[i] = pos + 2
        more = _is_tag(ethertype[i])
        i, pos = i[more], pos[more]
        if i.size == 0:
            break
    else:
        error[i] = ERR_VLAN_TOO_MANY
        ethertype[i] = NO_ETHERTYPE
    return ethertype, l3


def ethernet(raw: RawBatch, head: U8) -> Link:
    error = np.zeros(len(raw), np.uint8)
    short = raw.caplen < 14
    error[short] = ERR_LINK_TRUNCATED
    ethertype = np.where(short, NO_ETHERTYPE, _be16(head, 12))
    ethertype, l3 = _vlan_tags(head, raw.caplen, ethertype, 12, error)
    # Values below 0x0600 are 802.3 lengths (LLC frames): not a protocol we decode.
    return Link(np.where(ethertype < 0x0600, NO_ETHERTYPE, ethertype), l3, error)


def _cooked(protocol: I64) -> I64:
    """A Linux cooked header's protocol: an ethertype, or below 0x0600 one of Linux's own values, of which PPP in HDLC-like framing is walked."""
    ethertype: I64 = np.where(protocol < 0x0600, np.where(protocol == SLL_PPP_HDLC, ETH_PPP_HDLC, NO_ETHERTYPE), protocol)
    return ethertype


def linux_sll(raw: RawBatch, head: U8) -> Link:
    """Linux cooked capture v1 (the ``any`` device): 16-byte header, protocol at 14."""
    error = np.zeros(len(raw), np.uint8)
    short = raw.caplen < 16
    error[short] = ERR_LINK_TRUNCATED
    ethertype = np.where(short, NO_ETHERTYPE, _be16(head, 14))
    ethertype, l3 = _vlan_tags(head, raw.caplen, ethertype, 14, error)
    return Link(_cooked(ethertype), l3, error)


def linux_sll2(raw: RawBatch, head: U8) -> Link:
    """Linux cooked capture v2: 20-byte header, protocol first."""
    error = np.zeros(len(raw), np.uint8)
    short = raw.caplen < 20
    error[short] = ERR_LINK_TRUNCATED
    ethertype = np.where(short, NO_ETHERTYPE, _be16(head, 0))
    return Link(_cooked(ethertype), np.full(len(raw), 20, np.int64), error)


def raw_ip(raw: RawBatch, head: U8) -> Link:
    """Raw IP (LINKTYPE_RAW): the packet is the IP header; the version nibble tells the family."""
    error = np.zeros(len(raw), np.uint8)
    error[raw.caplen < 1] = ERR_LINK_TRUNCATED
    version = head[:, 0] >> 4
    ethertype = np.select([version == 4, version == 6], [ETH_IPV4, ETH_IPV6], NO_ETHERTYPE)
    return Link(np.where(raw.caplen > 0, ethertype, NO_ETHERTYPE), np.zeros(len(raw), np.int64), error)


def _fixed(ethertype: int) -> Callable[[RawBatch, U8], Link]:
    def decode(raw: RawBatch, head: U8) -> Link:
        # The layer that follows reports a frame too short for it (an empty one included).
        return Link(np.full(len(raw), ethertype, np.int64), np.zeros(len(raw), np.int64), np.zeros(len(raw), np.uint8))

    decode.__doc__ = f"A link type that carries only (pseudo-)ethertype {ethertype:#06x}."
    return decode


def c_hdlc(raw: RawBatch, head: U8) -> Link:
    """Cisco HDLC: address, control, then an ethertype (IPv4, IPv6, MPLS, or Cisco's SLARP and CDP)."""
    error = np.zeros(len(raw), np.uint8)
    short = raw.caplen < 4
    error[short] = ERR_LINK_TRUNCATED
    return Link(np.where(short, NO_ETHERTYPE, _be16(head, 2)), np.full(len(raw), 4, np.int64), error)


def ppi(raw: RawBatch, head: U8) -> Link:
    """Per-Packet Information: a little-endian header of version, flags, its own length and the link type it wraps, decoded by that link type's decoder."""
    error = np.zeros(len(raw), np.uint8)
    size = head[:, 2].astype(np.int64) | (head[:, 3].astype(np.int64) << 8)
    wrapped = np.ascontiguousarray(head[:, 4:8]).view("<u4")[:, 0].astype(np.int64)
    cut = (raw.caplen < 8) | ((size >= 8) & (size > raw.caplen))
    bad = ~cut & ((head[:, 0] != 0) | (size < 8))
    error[cut], error[bad] = ERR_PPI_TRUNCATED, ERR_PPI_BAD_HEADER
    ethertype, l3 = np.full(len(raw), NO_ETHERTYPE, np.int64), np.zeros(len(raw), np.int64)
    ok = ~cut & ~bad
    for linktype in np.unique(wrapped[ok]).tolist():
        i = (ok & (wrapped == linktype)).nonzero()[0]
        decoder = LINK_DECODERS.get(linktype) if linktype != PPI else None
        if decoder is None:
            error[i] = ERR_PPI_UNSUPPORTED
            continue
        start, cap, wire = raw.offset[i] + size[i], raw.caplen[i] - size[i], np.maximum(raw.wirelen[i] - size[i], 0)
        inside = decoder(RawBatch(raw.iface, linktype, raw.data, start, cap, wire, raw.ts[i]), rows(raw.data, start, HEAD))
        ethertype[i], l3[i], error[i] = inside.ethertype, inside.l3 + size[i], inside.error
    return Link(ethertype, l3, error)


def _family(raw: RawBatch, family: I64) -> Link:
    error = np.zeros(len(raw), np.uint8)
    short = raw.caplen < 4
    error[short] = ERR_LINK_TRUNCATED
    v6 = (family == 10) | (family == 24) | (family == 28) | (family == 30)
    ethertype = np.select([family == AF_INET, v6], [ETH_IPV4, ETH_IPV6], NO_ETHERTYPE)
    return Link(np.where(short, NO_ETHERTYPE, ethertype), np.full(len(raw), 4, np.int64), error)


def null(raw: RawBatch, head: U8) -> Link:
    """BSD loopback (DLT_NULL): a 4-byte address family in the capturing host's byte order."""
    b = head[:, 0:4].astype(np.int64)
    little = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16) | (b[:, 3] << 24)
    big = (b[:, 0] << 24) | (b[:, 1] << 16) | (b[:, 2] << 8) | b[:, 3]
    # The family is a small number, so whichever reading is small is the right byte order.
    return _family(raw, np.where(little < 256, little, big))


def loop(raw: RawBatch, head: U8) -> Link:
    """OpenBSD loopback (DLT_LOOP): the address family in network byte order."""
    return _family(raw, (_be16(head, 0) << 16) | _be16(head, 2))


# libpcap link types (the values pcap_datalink() returns on Linux) -> decoder.
LINK_DECODERS: dict[int, Callable[[RawBatch, U8], Link]] = {
    0: null,  # DLT_NULL
    1: ethernet,  # DLT_EN10MB
    9: _fixed(ETH_PPP_HDLC),  # DLT_PPP: PPP, its HDLC-like address and control bytes optional
    12: raw_ip,  # DLT_RAW (Linux, most systems)
    14: raw_ip,  # DLT_RAW (OpenBSD)
    50: _fixed(ETH_PPP_HDLC),  # DLT_PPP_SERIAL: the same, or Cisco HDLC
    51: _fixed(ETH_PPPOE_SESSION),  # DLT_PPP_ETHER: a PPPoE session header, then PPP
    101: raw_ip,  # LINKTYPE_RAW, should a file's value come through unmapped
    104: c_hdlc,  # DLT_C_HDLC
    108: loop,  # DLT_LOOP
    113: linux_sll,  # DLT_LINUX_SLL
    192: ppi,  # DLT_PPI
    228: _fixed(ETH_IPV4),  # DLT_IPV4
    229: _fixed(ETH_IPV6),  # DLT_IPV6
    276: linux_sll2,  # DLT_LINUX_SLL2
}


def supported(linktype: int) -> bool:
    return linktype in LINK_DECODERS
