"""Link layers: where the network header starts and which protocol it is, for each supported link type.

Every decoder maps a raw batch to ``Link``: an ethertype per packet (non-Ethernet links
translate their own protocol field to one) and the offset of the network header.
``LINK_DECODERS`` is the dispatch table by libpcap link type; a link type missing from it
is unsupported and counted as such, never decoded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from agent import labels
from agent.batch import I64, U8, RawBatch
from agent.decode._bytes import u8, u16

ETH_IPV4, ETH_IPV6, ETH_ARP = 0x0800, 0x86DD, 0x0806
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)  # 802.1Q, 802.1ad (QinQ), and the pre-standard QinQ tag
MAX_VLAN_TAGS = 4
NO_ETHERTYPE = -1

ERR_LINK_TRUNCATED = labels.decode_error_code("link", "truncated")
ERR_VLAN_TRUNCATED = labels.decode_error_code("vlan", "truncated")
ERR_VLAN_TOO_MANY = labels.decode_error_code("vlan", "too_many_tags")

# Address families of the NULL/LOOP link types: AF_INET is 2 everywhere; AF_INET6 differs
# per operating system (Linux 10, BSDs 24/28/30).
AF_INET = 2


class Link(NamedTuple):
    ethertype: I64
    l3: I64  # absolute offset of the network header in the batch buffer
    error: U8


def _is_tag(ethertype: I64) -> np.ndarray:
    tag: np.ndarray = (ethertype == 0x8100) | (ethertype == 0x88A8) | (ethertype == 0x9100)
    return tag


def _vlan_tags(data: U8, end: I64, ethertype: I64, at: I64, error: U8) -> tuple[I64, I64]:
    """Walk 802.1Q/802.1ad tags: ``at`` points at the ethertype field; returns the inner one and the L3 offset."""
    tagged = _is_tag(ethertype)
    if not tagged.any():
        return ethertype, at + 2
    ethertype, at = ethertype.copy(), at.copy()
    i = np.flatnonzero(tagged & (error == 0))
    for _ in range(MAX_VLAN_TAGS):
        cut = at[i] + 6 > end[i]
        error[i[cut]] = ERR_VLAN_TRUNCATED
        ethertype[i[cut]] = NO_ETHERTYPE
        i = i[~cut]
        at[i] += 4
        ethertype[i] = u16(data, at[i])
        i = i[_is_tag(ethertype[i])]
        if i.size == 0:
            break
    else:
        error[i] = ERR_VLAN_TOO_MANY
        ethertype[i] = NO_ETHERTYPE
    return ethertype, at + 2


def _by_version(data: U8, l3: I64, end: I64) -> I64:
    """Raw IP links: the version nibble tells IPv4 from IPv6."""
    version = u8(data, l3) >> 4
    ethertype = np.select([version == 4, version == 6], [ETH_IPV4, ETH_IPV6], NO_ETHERTYPE)
    return np.where(l3 < end, ethertype, NO_ETHERTYPE)


def ethernet(raw: RawBatch) -> Link:
    start = raw.offset
    end = start + raw.caplen
    error = np.zeros(len(raw), np.uint8)
    short = raw.caplen < 14
    error[short] = ERR_LINK_TRUNCATED
    ethertype = np.where(short, NO_ETHERTYPE, u16(raw.data, start + 12))
    ethertype, l3 = _vlan_tags(raw.data, end, ethertype, start + 12, error)
    # Values below 0x0600 are 802.3 lengths (LLC frames): not a protocol we decode.
    ethertype = np.where(ethertype < 0x0600, NO_ETHERTYPE, ethertype)
    return Link(ethertype, l3, error)


def linux_sll(raw: RawBatch) -> Link:
    """Linux cooked capture v1 (the ``any`` device): 16-byte header, protocol at 14."""
    start = raw.offset
    error = np.zeros(len(raw), np.uint8)
    short = raw.caplen < 16
    error[short] = ERR_LINK_TRUNCATED
    ethertype = np.where(short, NO_ETHERTYPE, u16(raw.data, start + 14))
    ethertype, l3 = _vlan_tags(raw.data, start + raw.caplen, ethertype, start + 14, error)
    ethertype = np.where(ethertype < 0x0600, NO_ETHERTYPE, ethertype)
    return Link(ethertype, l3, error)


def linux_sll2(raw: RawBatch) -> Link:
    """Linux cooked capture v2: 20-byte header, protocol first."""
    start = raw.offset
    error = np.zeros(len(raw), np.uint8)
    short = raw.caplen < 20
    error[short] = ERR_LINK_TRUNCATED
    ethertype = np.where(short, NO_ETHERTYPE, u16(raw.data, start))
    ethertype = np.where(ethertype < 0x0600, NO_ETHERTYPE, ethertype)
    return Link(ethertype, start + 20, error)


def raw_ip(raw: RawBatch) -> Link:
    """Raw IP (LINKTYPE_RAW): the packet is the IP header."""
    error = np.zeros(len(raw), np.uint8)
    error[raw.caplen < 1] = ERR_LINK_TRUNCATED
    return Link(_by_version(raw.data, raw.offset, raw.offset + raw.caplen), raw.offset, error)


def _fixed(ethertype: int) -> Callable[[RawBatch], Link]:
    def decode(raw: RawBatch) -> Link:
        error = np.zeros(len(raw), np.uint8)
        return Link(np.full(len(raw), ethertype, np.int64), raw.offset, error)

    decode.__doc__ = f"A link type that carries only ethertype {ethertype:#06x}."
    return decode


def _family(raw: RawBatch, family: I64) -> Link:
    error = np.zeros(len(raw), np.uint8)
    short = raw.caplen < 4
    error[short] = ERR_LINK_TRUNCATED
    ethertype = np.select([family == AF_INET, (family == 10) | (family == 24) | (family == 28) | (family == 30)], [ETH_IPV4, ETH_IPV6], NO_ETHERTYPE)
    return Link(np.where(short, NO_ETHERTYPE, ethertype), raw.offset + 4, error)


def null(raw: RawBatch) -> Link:
    """BSD loopback (DLT_NULL): a 4-byte address family in the capturing host's byte order."""
    b = [u8(raw.data, raw.offset + k) for k in range(4)]
    little = b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)
    big = (b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]
    # The family is a small number, so whichever reading is small is the right byte order.
    return _family(raw, np.where(little < 256, little, big))


def loop(raw: RawBatch) -> Link:
    """OpenBSD loopback (DLT_LOOP): the address family in network byte order."""
    return _family(raw, (u16(raw.data, raw.offset) << 16) | u16(raw.data, raw.offset + 2))


# libpcap link types (the values pcap_datalink() returns on Linux) -> decoder.
LINK_DECODERS: dict[int, Callable[[RawBatch], Link]] = {
    0: null,  # DLT_NULL
    1: ethernet,  # DLT_EN10MB
    12: raw_ip,  # DLT_RAW (Linux, most systems)
    14: raw_ip,  # DLT_RAW (OpenBSD)
    101: raw_ip,  # LINKTYPE_RAW, should a file's value come through unmapped
    108: loop,  # DLT_LOOP
    113: linux_sll,  # DLT_LINUX_SLL
    228: _fixed(ETH_IPV4),  # DLT_IPV4
    229: _fixed(ETH_IPV6),  # DLT_IPV6
    276: linux_sll2,  # DLT_LINUX_SLL2
}

LINK_NAMES = {
    0: "NULL",
    1: "EN10MB",
    12: "RAW",
    14: "RAW",
    101: "RAW",
    108: "LOOP",
    113: "LINUX_SLL",
    228: "IPV4",
    229: "IPV6",
    276: "LINUX_SLL2",
}


def supported(linktype: int) -> bool:
    return linktype in LINK_DECODERS
