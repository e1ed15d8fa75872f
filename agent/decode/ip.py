"""IPv4 and IPv6: addresses, protocol, fragments, and the IPv6 extension-header walk to the transport."""

from __future__ import annotations

import numpy as np

from agent import labels
from agent.batch import I64, U8
from agent.decode._bytes import rows, u8, u16
from agent.decode._columns import Columns, Rows

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


def ipv4(data: U8, l3: I64, end: I64, wire_end: I64, c: Columns, r: Rows) -> None:
    """Decode the IPv4 header of rows ``r``. ``wire_end`` is where each frame ends on the wire."""
    a, e = l3[r], end[r]
    h = rows(data, a, 20)
    b0 = h[:, 0]
    ihl = (b0 & 0x0F).astype(np.int64) << 2
    total = (h[:, 2].astype(np.int64) << 8) | h[:, 3]
    avail = e - a
    is_ip = (avail >= 20) & ((b0 >> 4) == 4) & (ihl >= 20)
    bad_total = (total < ihl) | (total > wire_end[r] - a)
    bad = ~is_ip | (ihl > avail) | bad_total
    if bad.any():
        i = np.flatnonzero(bad)
        c.error[_rows(r, i)] = np.select(
            [avail[i] < 20, (b0[i] >> 4) != 4, ihl[i] < 20, ihl[i] > avail[i]],
            [V4_TRUNCATED, V4_BAD_VERSION, V4_BAD_HEADER_LENGTH, V4_TRUNCATED],
            V4_BAD_TOTAL_LENGTH,
        )
        claimed = np.where(bad_total, avail, total)
    else:
        claimed = total
    c.network[r] = labels.IPV4
    c.is_ip[r] = is_ip
    addr = np.ascontiguousarray(h[:, 12:20]).view(">u4")
    c.src_lo[r] = addr[:, 0]
    c.dst_lo[r] = addr[:, 1]
    c.src_lo[r] |= IPV4_MAPPED
    c.dst_lo[r] |= IPV4_MAPPED
    c.proto[r] = h[:, 9]
    c.nonfirst[r] = ((h[:, 6] & 0x1F) | h[:, 7]) != 0
    c.fragment[r] = (h[:, 6] & 0x3F) | h[:, 7] != 0  # more-fragments flag or an offset
    c.ip_limit[r] = a + claimed
    kept = np.minimum(avail, claimed)
    c.ip_end[r] = a + kept
    c.l3len[r] = kept
    c.l4[r] = a + ihl


def _rows(r: Rows, i: np.ndarray) -> np.ndarray:
    """Positions in the whole batch of the rows ``i`` of the selection ``r``."""
    return i if isinstance(r, slice) else r[i]


def ipv6(data: U8, l3: I64, end: I64, wire_end: I64, c: Columns, r: Rows) -> None:
    """Decode the IPv6 header of rows ``r`` and walk its extension headers."""
    a, e = l3[r], end[r]
    h = rows(data, a, 40)
    have = a + 40 <= e
    ver = h[:, 0] >> 4
    payload = (h[:, 4].astype(np.int64) << 8) | h[:, 5]
    claimed = np.where(payload == 0, np.maximum(e - a, 40), 40 + payload)  # 0: jumbogram, trust the capture
    bad_payload = claimed > wire_end[r] - a
    error = np.select([~have, ver != 6, bad_payload], [V6_TRUNCATED, V6_BAD_VERSION, V6_BAD_PAYLOAD_LENGTH], 0).astype(np.uint8)
    c.network[r] = labels.IPV6
    c.is_ip[r] = have & (ver == 6)
    addr = np.ascontiguousarray(h[:, 8:40]).view(">u8").astype(np.uint64)
    c.src_hi[r], c.src_lo[r], c.dst_hi[r], c.dst_lo[r] = addr[:, 0], addr[:, 1], addr[:, 2], addr[:, 3]
    claimed = np.where(bad_payload, e - a, claimed)
    ip_end = a + np.minimum(e - a, claimed)
    c.ip_limit[r] = a + claimed
    c.ip_end[r] = ip_end
    c.l3len[r] = np.maximum(ip_end - a, 0)
    nh = h[:, 6].astype(np.int64)
    pos = a + 40
    nonfirst = np.zeros(nh.size, np.bool_)
    fragment = np.zeros(nh.size, np.bool_)
    walking = _IS_EXTENSION[nh] & (error == 0)
    for _ in range(MAX_EXTENSIONS):
        if not walking.any():
            break
        i = np.flatnonzero(walking)
        p, ie, kind = pos[i], ip_end[i], nh[i]
        frag = kind == EXT_FRAGMENT
        cut = p + np.where(frag, 8, 2) > ie
        length = np.select([frag, kind == EXT_AH], [8, (u8(data, p + 1) + 2) * 4], (u8(data, p + 1) + 1) * 8)
        cut |= p + length > ie
        error[i[cut]] = V6_EXT_TRUNCATED
        ok = ~cut
        nh[i[ok]] = u8(data, p[ok])
        pos[i[ok]] = p[ok] + length[ok]
        later = ok & frag & ((u16(data, p + 2) >> 3) != 0)
        fragment[i[ok & frag]] = True
        nonfirst[i[later]] = True
        walking[i] = ok & ~later & _IS_EXTENSION[nh[i]]
    else:
        error[walking] = V6_TOO_MANY_EXT
    c.error[r] = error
    c.proto[r] = nh.astype(np.uint8)
    c.nonfirst[r] = nonfirst
    c.fragment[r] = fragment
    c.l4[r] = pos
