"""DHCP (BOOTP) messages: the client's hardware address, its address, and the options that name it.

>>> from agent.naming.learn.dhcp import parse
>>> parse(b"\\x00" * 10)
Traceback (most recent call last):
...
ValueError: shorter than a BOOTP header
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

MAGIC = b"\x63\x82\x53\x63"
OPT_HOSTNAME, OPT_MESSAGE_TYPE, OPT_VENDOR_CLASS, OPT_CLIENT_ID, OPT_REQUESTED_IP, OPT_END, OPT_PAD = 12, 53, 60, 61, 50, 255, 0
ACK = 5


@dataclass(frozen=True)
class Dhcp:
    mac: str
    message_type: int
    address: str | None  # the client's address: assigned (ACK), requested, or in use
    hostname: str | None
    client_id: str | None
    vendor_class: str | None


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace").strip("\x00 ").strip()


def parse(msg: bytes) -> Dhcp:
    if len(msg) < 240:
        raise ValueError("shorter than a BOOTP header")
    hlen = msg[2]
    if msg[236:240] != MAGIC:
        raise ValueError("no DHCP magic cookie")
    ciaddr, yiaddr = msg[12:16], msg[16:20]
    chaddr = msg[28 : 28 + min(hlen, 16)]
    options: dict[int, bytes] = {}
    at = 240
    while at < len(msg):
        code = msg[at]
        if code == OPT_END:
            break
        if code == OPT_PAD:
            at += 1
            continue
        if at + 1 >= len(msg):
            raise ValueError("option runs past the message")
        length = msg[at + 1]
        value = msg[at + 2 : at + 2 + length]
        if len(value) != length:
            raise ValueError("option runs past the message")
        options.setdefault(code, value)
        at += 2 + length
    mtype = options.get(OPT_MESSAGE_TYPE, b"\x00")[0] if options.get(OPT_MESSAGE_TYPE) else 0
    address = None
    for raw in (yiaddr if mtype == ACK else b"", options.get(OPT_REQUESTED_IP, b""), ciaddr):
        if len(raw) == 4 and raw != b"\x00\x00\x00\x00":
            address = str(ipaddress.IPv4Address(raw))
            break
    client_id = options.get(OPT_CLIENT_ID)
    return Dhcp(
        mac=":".join(f"{b:02x}" for b in chaddr) if hlen == 6 else "",
        message_type=mtype,
        address=address,
        hostname=_text(options[OPT_HOSTNAME]) or None if OPT_HOSTNAME in options else None,
        client_id=client_id.hex() if client_id else None,
        vendor_class=_text(options[OPT_VENDOR_CLASS]) or None if OPT_VENDOR_CLASS in options else None,
    )
