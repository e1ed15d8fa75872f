"""A kernel filter that captures only the headers of the packets pktagent reads no further.

Copying each packet whole is most of what live capture costs at a home's rates: the kernel
copies it into the ring, pcapy-ng copies it out twice, and the cache misses on the way cost
more than the pipeline's work on the headers. Only the packets names are learned from (ARP and
other non-IP frames, DHCP, DNS, mDNS and LLMNR over UDP) are read past their headers; every
other IP packet is decoded from its first ``HEADER_SNAP`` bytes, and its length on the wire
comes from its IP header (decode recovers it for any frame cut short).

A classic BPF program's return value is the number of bytes the kernel keeps, so the program
installed on the socket is the user's ``bpf_filter`` (or accept-all) whose accepting returns
jump into a second program: "is this a packet names are learned from?", returning the
snapshot length if so and ``HEADER_SNAP`` if not. libpcap compiles both.

>>> program = snap_program(1, 65535, "")
>>> sorted({k for code, _, _, k in program if code == 0x06})  # what its returns keep: headers, or all
[256, 65535]
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct

import pcapy

HEADER_SNAP = 256  # bytes kept of packets read for headers only: 4 VLAN tags, IPv6, a TCP header with options
_LEARN = "udp port 53 or udp port 5353 or udp port 5355 or udp port 67 or udp port 68"
WHOLE = f"not (ip or ip6) or {_LEARN} or (vlan and (not (ip or ip6) or {_LEARN}))"
_RET_K, _JA = 0x06, 0x05  # BPF_RET|BPF_K, BPF_JMP|BPF_JA
SO_ATTACH_FILTER = 26

Insn = tuple[int, int, int, int]


def snap_program(linktype: int, snaplen: int, bpf: str) -> list[Insn] | None:
    """The combined program, or None when libpcap cannot express "whole" for this link type.

    Raises ``pcapy.PcapError`` (or ``pcapy.BPFError``) when the user's filter does not compile.
    """
    user: list[Insn] = pcapy.compile(linktype, snaplen, bpf, 1, 0).get_bpf()
    try:
        whole: list[Insn] = pcapy.compile(linktype, snaplen, WHOLE, 1, 0).get_bpf()
    except pcapy.BPFError:
        return None  # e.g. a link type without VLANs: capture whole packets
    out: list[Insn] = []
    for i, (code, jt, jf, k) in enumerate(user):
        # An accepting return of the user's filter goes on to the second program, right after the first.
        out.append((_JA, 0, 0, len(user) - i - 1) if code == _RET_K and k else (code, jt, jf, k))
    out.extend((code, jt, jf, k if k else HEADER_SNAP) if code == _RET_K else (code, jt, jf, k) for code, jt, jf, k in whole)
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
