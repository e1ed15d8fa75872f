"""IPv4 and IPv6: addresses, protocol, fragments, and the IPv6 extension-header walk to the transport.

Both read the same window: the first ``WINDOW`` bytes of every packet from its network header
on, one row per packet, so each field is a column of that matrix. A decoder is handed the
rows that are its own (``Rows``: a plain slice when it owns them all, which copies nothing).
"""

from __future__ import annotations

import numpy as np

from agent.base import labels
from agent.base.batch import I64, U8
from agent.base.rows import u8, u16
from agent.stages.decode._columns import Columns, Rows

WINDOW = 96  # bytes read from each network header: IPv6 + a transport header + room for the dedup hash

ERR = labels.decode_error_code
V4_TRUNCATED = ERR("ipv4", "truncated")
V4_BAD_VERSION = ERR("ipv4", "bad_version")
V4_BAD_HEADER_LENGTH = ERR("ipv4", "bad_header_length")
V4_BAD_TOTAL_LENGTH = ERR("ipv4", "bad_total_length")
V6_TRUNCATED = ERR("ipv6", "truncated")
V6_BAD_VERSION = ERR("ipv6", "bad_version")
V6_BAD_PAYLOAD_LENGTH = ERR("ipv6", "bad_payload_length")
V6_EXT_TRUNCATED = ERR("ipv6", "extension_truncated")
V6_TOO_MANY_EXT = ERR("ipv6", "too_many_extensions")

IPV4_MAPPED = np.uint64(0xFFFF_0000_0000)  # ::ffff:0:0/96, low 64 bits

# IPv6 extension headers walked to reach the transport: hop-by-hop, routing, fragment,
# destination options, authentication header. ESP (50) ends the walk: what follows is encrypted.
EXT_HOP_BY_HOP, EXT_ROUTING, EXT_FRAGMENT, EXT_AH, EXT_DEST_OPTS = 0, 43, 44, 51, 60
EXTENSIONS = (EXT_HOP_BY_HOP, EXT_ROUTING, EXT_FRAGMENT, EXT_AH, EXT_DEST_OPTS)
MAX_EXTENSIONS = 8
_IS_EXTENSION = np.zeros(256, np.bool_)
_IS_EXTENSION[list(EXTENSIONS)] = True


def _be16(w: U8, at: int) -> I64:
    return (w[:, at].astype(np.int64) << 8) | w[:, at + 1]


def ipv4(window: U8, avail_all: I64, wire_all: I64, c: Columns, r: Rows) -> None:
    """Decode IPv4 headers into ``c`` for the rows ``r``; ``avail``/``wire``: bytes from the header to the end of the capture / of the frame."""
    w, avail, wire_avail = window[r, :20], avail_all[r], wire_all[r]  # the fixed header: all that is read here
    b0 = w[:, 0]
    ihl = (b0 & 0x0F).astype(np.int64) << 2
    total = _be16(w, 2)
    # Linux BIG TCP sends IPv4 packets over 64 KiB with a total length of 0: the capture tells their length.
    total = np.where(total == 0, np.minimum(avail, wire_avail), total)
    is_ip = (avail >= 20) & ((b0 >> 4) == 4) & (ihl >= 20)
    bad_total = (total < ihl) | (total > wire_avail)
    bad = ~is_ip | (ihl > avail) | bad_total
    claimed = total
    if bad.any():
        c.error[r] = np.where(
            bad,
            np.select(
                [avail < 20, (b0 >> 4) != 4, ihl < 20, ihl > avail],
                [V4_TRUNCATED, V4_BAD_VERSION, V4_BAD_HEADER_LENGTH, V4_TRUNCATED],
                V4_BAD_TOTAL_LENGTH,
            ),
            0,
        )
        claimed = np.where(bad_total, avail, total)
    addr = np.ascontiguousarray(w[:, 12:20]).view(">u4").astype(np.uint64)
    addr |= IPV4_MAPPED
    kept = np.maximum(np.minimum(avail, claimed), 0)
    fragment = (w[:, 6] & 0x3F) | w[:, 7]  # more-fragments flag or an offset
    c.network[r] = labels.IPV4
    c.is_ip[r] = is_ip
    c.src_lo[r] = addr[:, 0]
    c.dst_lo[r] = addr[:, 1]
    c.proto[r] = w[:, 9]
    c.nonfirst[r] = ((w[:, 6] & 0x1F) | w[:, 7]) != 0
    c.fragment[r] = fragment != 0
    c.ip_limit[r] = claimed
    c.ip_end[r] = kept
    c.l3len[r] = kept
    c.l4[r] = ihl


def ipv6(data: U8, l3_all: I64, window: U8, avail_all: I64, wire_all: I64, c: Columns, r: Rows) -> None:
    """Decode IPv6 headers into ``c`` for the rows ``r`` and walk their extension headers."""
    w, avail, wire_avail, l3 = window[r, :40], avail_all[r], wire_all[r], l3_all[r]  # the fixed header: all that is read here
    ver = w[:, 0] >> 4
    payload = _be16(w, 4)
    claimed = np.where(payload == 0, np.maximum(avail, 40), 40 + payload)  # 0: a jumbogram, trust the capture
    bad_payload = claimed > wire_avail
    # Nested where, not np.select: the same first-match order at a fraction of the fixed cost.
    error = np.where(avail < 40, V6_TRUNCATED, np.where(ver != 6, V6_BAD_VERSION, np.where(bad_payload, V6_BAD_PAYLOAD_LENGTH, 0))).astype(np.uint8)
    claimed = np.where(bad_payload, avail, claimed)
    kept = np.maximum(np.minimum(avail, claimed), 0)
    addr = np.ascontiguousarray(w[:, 8:40]).view(">u8").astype(np.uint64)
    nh = w[:, 6].astype(np.int64)
    pos = np.full(nh.size, 40, np.int64)
    nonfirst = np.zeros(nh.size, np.bool_)
    fragment = np.zeros(nh.size, np.bool_)
    walking = _IS_EXTENSION[nh] & (error == 0)
    if walking.any():
        _walk(data, l3, kept, nh, pos, error, nonfirst, fragment, walking)
    c.network[r] = labels.IPV6
    c.is_ip[r] = (avail >= 40) & (ver == 6)
    c.error[r] = error
    c.src_hi[r], c.src_lo[r], c.dst_hi[r], c.dst_lo[r] = addr[:, 0], addr[:, 1], addr[:, 2], addr[:, 3]
    c.proto[r] = nh
    c.nonfirst[r] = nonfirst
    c.fragment[r] = fragment
    c.ip_limit[r] = claimed
    c.ip_end[r] = kept
    c.l3len[r] = kept
    c.l4[r] = pos


def _walk(data: U8, l3: I64, kept: I64, nh: I64, pos: I64, error: U8, nonfirst: np.ndarray, fragment: np.ndarray, walking: np.ndarray) -> None:
    """Follow extension headers (rare: a loop over the few rows that have them, reading the buffer directly)."""
    for _ in range(MAX_EXTENSIONS):
        i = walking.nonzero()[0]
        if i.size == 0:
            return
        p, ie, kind = pos[i], kept[i], nh[i]
        at = l3[i] + p
        frag = kind == EXT_FRAGMENT
        cut = p + np.where(frag, 8, 2) > ie
        length = np.select([frag, kind == EXT_AH], [8, (u8(data, at + 1) + 2) * 4], (u8(data, at + 1) + 1) * 8)
        cut |= p + length > ie
        error[i[cut]] = V6_EXT_TRUNCATED
        ok = ~cut
        nh[i[ok]] = u8(data, at[ok])
        pos[i[ok]] = p[ok] + length[ok]
        later = ok & frag & ((u16(data, at + 2) >> 3) != 0)
        fragment[i[ok & frag]] = True
        nonfirst[i[later]] = True
        walking[i] = ok & ~later & _IS_EXTENSION[nh[i]]
    error[walking] = V6_TOO_MANY_EXT
