"""DNS messages (also mDNS and LLMNR, which share the format): the answers, as (name, type, value).

A small decoder for the few packets that carry names: questions are skipped, answer,
authority and additional records are read, names are followed through compression
pointers (with a bound, so a pointer loop cannot hang it). Anything malformed raises
``ValueError``, which the learner counts.

>>> msg = bytes.fromhex("123481800001000100000000027476036c616e0000010001c00c000100010000003c0004c0a80114")
>>> answers(msg)
[('tv.lan', 'A', '192.168.1.20')]
"""

from __future__ import annotations

import ipaddress
import socket
import struct

TYPES = {1: "A", 28: "AAAA", 5: "CNAME", 12: "PTR", 33: "SRV"}
MAX_POINTERS = 16
MAX_RECORDS = 64


def read_name(msg: bytes, at: int) -> tuple[str, int]:
    """The name at ``at`` and the offset just after it (in the record, not where a pointer led)."""
    parts: list[bytes] = []
    end = -1
    jumps = 0
    size = len(msg)
    while True:
        if at >= size:
            raise ValueError("name runs past the message")
        length = msg[at]
        if length == 0:
            at += 1
            break
        if length >= 0xC0:
            if at + 1 >= size:
                raise ValueError("cut pointer")
            if end < 0:
                end = at + 2
            jumps += 1
            if jumps > MAX_POINTERS:
                raise ValueError("pointer loop")
            at = ((length & 0x3F) << 8) | msg[at + 1]
            continue
        if length > 63:
            raise ValueError("bad label type")
        at += 1 + length
        if at > size:
            raise ValueError("label runs past the message")
        parts.append(msg[at - length : at])
    return b".".join(parts).decode("ascii", "replace").lower(), (end if end >= 0 else at)


def answers(msg: bytes) -> list[tuple[str, str, str]]:
    """(owner name, type, value) of every A, AAAA, CNAME, PTR and SRV record of a response."""
    if len(msg) < 12:
        raise ValueError("shorter than a DNS header")
    _, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", msg)
    if not flags & 0x8000:
        return []  # a query: nothing learned (mDNS announcements are responses too)
    at = 12
    for _ in range(min(qd, MAX_RECORDS)):
        _, at = read_name(msg, at)
        at += 4
    out: list[tuple[str, str, str]] = []
    for _ in range(min(an + ns + ar, MAX_RECORDS)):
        name, at = read_name(msg, at)
        if at + 10 > len(msg):
            raise ValueError("record header runs past the message")
        rtype, _, _, rdlen = struct.unpack_from("!HHIH", msg, at)
        at += 10
        rdata = msg[at : at + rdlen]
        if len(rdata) != rdlen:
            raise ValueError("record data runs past the message")
        kind = TYPES.get(rtype)
        if kind == "A" and rdlen == 4:
            out.append((name, kind, socket.inet_ntop(socket.AF_INET, rdata)))
        elif kind == "AAAA" and rdlen == 16:
            out.append((name, kind, socket.inet_ntop(socket.AF_INET6, rdata)))
        elif kind in ("CNAME", "PTR"):
            out.append((name, kind, read_name(msg, at)[0]))
        elif kind == "SRV" and rdlen >= 7:
            out.append((name, kind, read_name(msg, at + 6)[0]))
        at += rdlen
    return out


def reverse_address(name: str) -> str | None:
    """The address a PTR owner name stands for (``20.1.168.192.in-addr.arpa`` -> ``192.168.1.20``)."""
    if name.endswith(".in-addr.arpa"):
        parts = name[: -len(".in-addr.arpa")].split(".")
        if len(parts) == 4:
            try:
                return str(ipaddress.IPv4Address(".".join(reversed(parts))))
            except ValueError:
                return None
    if name.endswith(".ip6.arpa"):
        nibbles = name[: -len(".ip6.arpa")].split(".")
        if len(nibbles) == 32:
            try:
                return str(ipaddress.IPv6Address(int("".join(reversed(nibbles)), 16)))
            except ValueError:
                return None
    return None
