"""A kernel filter that captures only the headers of the packets pktagent reads no further.

Copying each packet whole is most of what live capture costs at a home's rates: the kernel
copies it into the ring, pcapy-ng copies it out twice, and the cache misses on the way cost
more than the pipeline's work on the headers. Only the packets names are learned from (ARP and
other non-IP frames, DHCP, DNS, mDNS and LLMNR over UDP) are read past their headers. Every
other IP packet is decoded from its first bytes, and its length on the wire comes from its IP
header (decode recovers it for any frame cut short):

* ``HEADER_SNAP`` (128) bytes of an IPv4 packet, or of an IPv6 packet whose next header is TCP,
  UDP or ICMPv6, with no tag before it: all its headers lie in the first 128 bytes (a 60-byte
  IPv4 header and a transport header end by byte 88; the dedup hash reads 64 bytes of the
  network layer, to byte 78), and 128 bytes is what decode reads of each frame anyway. Linux
  takes a frame's outer VLAN tag off before any capture sees it, and libpcap puts it back
  after the filter: such a frame comes with 4 bytes more;
* ``DEEP_SNAP`` (256) bytes of any other IP packet: a second VLAN tag, PPPoE, MPLS or IPv6
  extension headers put its transport header further in.

A classic BPF program's return value is the number of bytes the kernel keeps, so the program
installed on the socket is three programs, libpcap's compilations of the user's ``bpf_filter``
(or accept-all), ``WHOLE`` and ``SHALLOW``, chained: each return that would end a program
either ends the whole one with a length or goes on to the next program.

>>> program = snap_program(1, 65535, "")
>>> sorted({k for code, _, _, k in program if code == 0x06})  # what its returns keep: headers, deeper headers, or all
[128, 256, 65535]
>>> program = snap_program(12, 65535, "")  # raw IP (WireGuard, tun): no VLANs, the rest alike
>>> sorted({k for code, _, _, k in program if code == 0x06})
[128, 256, 65535]
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct

import pcapy

HEADER_SNAP = 128  # bytes kept of a packet read for headers only whose headers are all near its start
DEEP_SNAP = 256  # ... and of one with tags or extension headers in front of its transport header: 4 VLAN tags, IPv6 and extensions
_LEARN = "udp port 53 or udp port 5353 or udp port 5355 or udp port 67 or udp port 68"
# libpcap's `vlan` moves the offsets of every test after it, so tagged frames are told apart by
# their ethertype first, and looked behind (one tag) last.
_TAGGED = "ether[12:2] == 0x8100 or ether[12:2] == 0x88a8 or ether[12:2] == 0x9100"
WHOLE = f"not (ip or ip6 or {_TAGGED}) or {_LEARN} or (vlan and (not (ip or ip6) or {_LEARN}))"
WHOLE_UNTAGGED = f"not (ip or ip6) or {_LEARN}"  # for link types without VLANs: Linux cooked (`any`), raw IP, PPP, loopback
SHALLOW = "ip or ip6 proto 6 or ip6 proto 17 or ip6 proto 58"  # `ip6 proto` reads the fixed header's next-header field only
_RET_K, _JA = 0x06, 0x05  # BPF_RET|BPF_K, BPF_JMP|BPF_JA
SO_ATTACH_FILTER = 26
NEXT = -1  # a return that goes on to the next program
# Linux cooked captures (the `any` device, and any interface libpcap opens in cooked mode): the
# kernel runs a socket's filter on the packet from its network header on, without the cooked
# header libpcap makes up, so libpcap rewrites a filter for it when it installs one. A program
# installed here directly would read the wrong bytes: such captures keep whole packets.
COOKED = (113, 276)

Insn = tuple[int, int, int, int]


def snap_program(linktype: int, snaplen: int, bpf: str) -> list[Insn] | None:
    """The combined program, or None when packets are to be kept whole: a cooked capture, or a link
    type on which libpcap cannot tell IP from the rest.

    Raises ``pcapy.PcapError`` (or ``pcapy.BPFError``) when the user's filter does not compile.
    """
    user: list[Insn] = pcapy.compile(linktype, snaplen, bpf, 1, 0).get_bpf()
    if linktype in COOKED:
        return None
    whole = _compiled(linktype, snaplen, WHOLE) or _compiled(linktype, snaplen, WHOLE_UNTAGGED)
    shallow = _compiled(linktype, snaplen, SHALLOW)
    if whole is None or shallow is None:
        return None  # capture whole packets
    return [
        *_chained(user, accept=NEXT, reject=0),  # the user's filter: what it drops is dropped
        *_chained(whole, accept=snaplen, reject=NEXT),
        *_chained(shallow, accept=HEADER_SNAP, reject=DEEP_SNAP),
    ]


def _compiled(linktype: int, snaplen: int, expression: str) -> list[Insn] | None:
    try:
        program: list[Insn] = pcapy.compile(linktype, snaplen, expression, 1, 0).get_bpf()
    except (pcapy.PcapError, pcapy.BPFError):  # libpcap has no such test for this link type ("no VLAN support for Raw IP")
        return None
    return program


def _chained(program: list[Insn], *, accept: int, reject: int) -> list[Insn]:
    """``program`` with each return rewritten: an accepting one to ``accept``, a rejecting one to
    ``reject``, where ``NEXT`` jumps to the instruction right after the program."""
    out: list[Insn] = []
    for i, (code, jt, jf, k) in enumerate(program):
        if code != _RET_K:
            out.append((code, jt, jf, k))
            continue
        keep = accept if k else reject
        out.append((_JA, 0, 0, len(program) - i - 1) if keep == NEXT else (_RET_K, 0, 0, keep))
    return out


def attach(fd: int, program: list[Insn]) -> None:
    """Install ``program`` on the capture socket ``fd`` (SO_ATTACH_FILTER). Raises OSError."""
    insns = (ctypes.c_ubyte * (8 * len(program))).from_buffer_copy(b"".join(struct.pack("=HBBI", *insn) for insn in program))
    fprog = struct.pack("@HP", len(program), ctypes.addressof(insns))
    sock = socket.socket(fileno=os.dup(fd))  # a second descriptor of the same socket, closed here
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    finally:
        sock.close()
