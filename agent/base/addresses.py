"""Addresses as the pipeline holds them: 128-bit integers (IPv4 as IPv4-mapped IPv6), and their hash keys.

Nothing here depends on the rest of the package but the column types.

>>> hex(address_int("192.168.1.20"))
'0xffffc0a80114'
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

import numpy as np

from agent.base.batch import U64
from agent.base.hashing import GOLDEN, mix


def address_int(text: str) -> int:
    """An address as the 128-bit integer the pipeline uses (IPv4 as IPv4-mapped IPv6).

    ``inet_pton`` is strict and ten times quicker than ``ipaddress``, which matters on the slow
    path: every DNS answer goes through here.
    """
    try:
        if ":" in text:
            return int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
        return 0xFFFF_0000_0000 | int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except OSError:
        raise ValueError(f"{text!r} is not an IP address") from None


def address_key(hi: U64, lo: U64) -> U64:
    """The cache key of 128-bit addresses (never 0 or 1)."""
    # Mixed before bit 1 is forced on: two addresses differing only in that bit must not share a key.
    h = hi * GOLDEN ^ lo
    key: U64 = mix(h ^ (h >> np.uint64(31)), np.uint64(0)) | np.uint64(2)
    return key


def address_keys(addresses: Iterable[int]) -> U64:
    """Cache keys of 128-bit integer addresses."""
    values = list(addresses)
    return address_key(np.array([a >> 64 for a in values], np.uint64), np.array([a & ((1 << 64) - 1) for a in values], np.uint64))
