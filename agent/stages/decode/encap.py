"""Encapsulations between the link layer and IP: HDLC-like framing, PPPoE sessions, PPP, MPLS label stacks.

Each is a stage keyed on the ``Link`` ethertype column (PPP and its HDLC-like framing on codes
of their own beside the real ethertypes), run in the order they nest — framing, PPPoE, PPP,
MPLS — on only the rows that carry it, so a batch with none of them costs one comparison. A
stage moves each of its rows' network-header offset past its own header and sets the ethertype
of what follows; a header cut short or malformed sets the row's error and leaves it without a
network. Non-IP payloads (PPPoE discovery, LCP, IPCP and the other PPP control protocols, Cisco
SLARP and CDP) come out without a network and without an error: they are traffic of network
``other``. An MPLS payload that is neither IPv4 nor IPv6 (an Ethernet pseudowire, a control
word, the G-ACh) is ``other`` too, with its reason counted as ``mpls/payload_not_ip``; as in
tshark, a pseudowire without a control word whose first byte happens to start with 4 or 6 reads
as IP (RFC 4385 asks for the control word for that reason).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from agent.base import labels
from agent.base.batch import I64, RawBatch
from agent.base.rows import rows, u8, u16
from agent.stages.decode.link import (
    ERR_LINK_TRUNCATED,
    ETH_IPV4,
    ETH_IPV6,
    ETH_MPLS,
    ETH_MPLS_MULTICAST,
    ETH_PPP,
    ETH_PPP_HDLC,
    ETH_PPPOE_SESSION,
    NO_ETHERTYPE,
    Link,
)

ERR = labels.decode_error_code
PPPOE_TRUNCATED = ERR("pppoe", "truncated")
PPPOE_BAD_HEADER = ERR("pppoe", "bad_header")
PPPOE_BAD_LENGTH = ERR("pppoe", "bad_length")
PPP_TRUNCATED = ERR("ppp", "truncated")
MPLS_TRUNCATED = ERR("mpls", "truncated")
MPLS_NOT_IP = ERR("mpls", "payload_not_ip")

CISCO_UNICAST, CISCO_MULTICAST, PPP_ALL_STATIONS = 0x0F, 0x8F, 0xFF  # the first byte of a Cisco HDLC / PPP frame
PPPOE_VERSION_TYPE, PPPOE_SESSION_DATA = 0x11, 0x00
# PPP protocol numbers (RFC 1661, RFC 3032) -> the ethertype of what they carry; the rest are not IP.
PPP_PROTOCOLS = {0x0021: ETH_IPV4, 0x0057: ETH_IPV6, 0x0281: ETH_MPLS, 0x0283: ETH_MPLS_MULTICAST}
SHALLOW_LABELS = 4  # MPLS labels looked at one by one before a deeper stack is read in steps
LABELS_PER_STEP = 16  # MPLS labels read per row at once past the shallow ones: a stack deeper than this takes another step
_NO_WIRE_END = np.iinfo(np.int64).max // 2

Step = tuple[I64, I64, I64]  # per row: the ethertype of what follows, the header's size, an error code (0: none)


class _Rows:
    """The rows a stage works on: where each one's header starts in the buffer and what is left of the frame from it."""

    def __init__(self, raw: RawBatch, i: I64, l3: I64) -> None:
        self.data = raw.data
        self.at = raw.offset[i] + l3[i]
        self.avail = raw.caplen[i] - l3[i]
        wire = raw.wirelen[i]
        self.wire_avail = np.where(wire > 0, wire - l3[i], _NO_WIRE_END)


def _framing(r: _Rows) -> Step:
    """PPP in HDLC-like framing (RFC 1662), its address and control bytes optional, or a Cisco HDLC
    header in its place (PPP link types carry both, told apart by the first byte, as tshark does)."""
    b0 = u8(r.data, r.at)
    cisco = (b0 == CISCO_UNICAST) | (b0 == CISCO_MULTICAST)
    size = np.select([cisco, b0 == PPP_ALL_STATIONS], [4, 2], 0)
    error = np.where(r.avail < np.maximum(size, 1), ERR_LINK_TRUNCATED, 0)
    return np.where(cisco, u16(r.data, r.at + 2), ETH_PPP), size, error


def _pppoe(r: _Rows) -> Step:
    """A PPPoE session header (RFC 2516): version and type, code, session id, length; PPP follows."""
    cut = r.avail < 6
    bad_header = (u8(r.data, r.at) != PPPOE_VERSION_TYPE) | (u8(r.data, r.at + 1) != PPPOE_SESSION_DATA)
    bad_length = u16(r.data, r.at + 4) > r.wire_avail - 6
    error = np.select([cut, bad_header, bad_length], [PPPOE_TRUNCATED, PPPOE_BAD_HEADER, PPPOE_BAD_LENGTH], 0)
    return np.full(r.at.size, ETH_PPP, np.int64), np.full(r.at.size, 6, np.int64), error


def _ppp(r: _Rows) -> Step:
    """The PPP protocol field: two bytes, or one when compressed (RFC 1661 PFC: an odd first byte)."""
    b0 = u8(r.data, r.at)
    short = (b0 & 1) == 1
    size = np.where(short, 1, 2)
    protocol = np.where(short, b0, u16(r.data, r.at))
    ethertype = np.full(r.at.size, NO_ETHERTYPE, np.int64)
    for number, carried in PPP_PROTOCOLS.items():
        ethertype[protocol == number] = carried
    return ethertype, size, np.where(r.avail < size, PPP_TRUNCATED, 0)


def _bottom_of_stack(r: _Rows) -> I64:
    """How many bytes each MPLS label stack takes, through its bottom-of-stack label; -1 where the capture ends first.

    The first ``SHALLOW_LABELS`` labels are looked at one at a time (a byte per row: real stacks
    are shallow), the rest of a deeper stack ``LABELS_PER_STEP`` at a time, so a stack of any
    depth costs one step per 16 labels, and only the rows whose stack goes on take the next step.
    """
    size = np.full(r.at.size, -1, np.int64)
    todo = np.arange(r.at.size)
    for depth in range(1, SHALLOW_LABELS + 1):
        captured = r.avail[todo] >= 4 * depth
        bottom = captured & ((u8(r.data, r.at[todo] + 4 * depth - 2) & 1) == 1)  # the S bit, in a label's third byte
        size[todo[bottom]] = 4 * depth
        todo = todo[captured & ~bottom]
        if todo.size == 0:
            return size
    done = np.full(r.at.size, 4 * SHALLOW_LABELS, np.int64)  # bytes of the stack behind each row's current step
    while todo.size:
        step = rows(r.data, r.at[todo] + done[todo], 4 * LABELS_PER_STEP).reshape(-1, LABELS_PER_STEP, 4)
        whole = np.clip((r.avail[todo] - done[todo]) // 4, 0, LABELS_PER_STEP)  # labels captured in this step
        bottom = ((step[:, :, 2] & 1) == 1) & (np.arange(LABELS_PER_STEP) < whole[:, None])
        found = bottom.any(axis=1)
        size[todo[found]] = done[todo[found]] + 4 * (bottom[found].argmax(axis=1) + 1)
        more = ~found & (whole == LABELS_PER_STEP)
        todo = todo[more]
        done[todo] += 4 * LABELS_PER_STEP
    return size


def _mpls(r: _Rows) -> Step:
    """An MPLS label stack (RFC 3032): the payload after the bottom label is IPv4 or IPv6 by its first nibble (RFC 4928)."""
    size = _bottom_of_stack(r)
    has_payload = (size >= 0) & (size < r.avail)
    nibble = u8(r.data, r.at + np.maximum(size, 0)) >> 4
    ethertype = np.select([nibble == 4, nibble == 6], [ETH_IPV4, ETH_IPV6], NO_ETHERTYPE)
    error = np.where(has_payload, np.where(ethertype == NO_ETHERTYPE, MPLS_NOT_IP, 0), MPLS_TRUNCATED)
    return ethertype, np.maximum(size, 0), error


# (the ethertypes a stage takes, the stage), in the order the encapsulations nest.
STAGES: tuple[tuple[tuple[int, ...], Callable[[_Rows], Step]], ...] = (
    ((ETH_PPP_HDLC,), _framing),
    ((ETH_PPPOE_SESSION,), _pppoe),
    ((ETH_PPP,), _ppp),
    ((ETH_MPLS, ETH_MPLS_MULTICAST), _mpls),
)
FIRST_CODE = min(code for codes, _ in STAGES for code in codes)


def inner(raw: RawBatch, link: Link) -> Link:
    """``link`` with every encapsulation it announces walked through, to the network header inside."""
    if not (link.ethertype >= FIRST_CODE).any():  # the usual batch: nothing to walk
        return link
    ethertype, l3, error = link.ethertype.copy(), link.l3.copy(), link.error.copy()
    for codes, stage in STAGES:
        mine = ethertype == codes[0]
        for other in codes[1:]:
            mine |= ethertype == other
        i = mine.nonzero()[0]
        if i.size == 0:
            continue
        following, size, code = stage(_Rows(raw, i, l3))
        ethertype[i] = np.where(code != 0, NO_ETHERTYPE, following)
        l3[i] += size
        error[i] = np.where(code != 0, code, error[i])
    return Link(ethertype, l3, error)
