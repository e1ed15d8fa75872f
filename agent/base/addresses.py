"""Addresses as the pipeline holds them: 128-bit integers (IPv4 as IPv4-mapped IPv6), and their hash keys.

Nothing here depends on the rest of the package but the column types.

>>> hex(address_int("192.168.1.20"))
'0xffffc0a80114'
"""

from __future__ import annotations

import itertools
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


def host_addresses(fib_trie: str = "/proc/net/fib_trie", if_inet6: str = "/proc/net/if_inet6") -> tuple[str, ...]:
    """This host's own unicast addresses (of its network namespace), as /32 and /128 networks.

    IPv4 from the kernel's local routing table (``/32 host LOCAL`` entries), IPv6 from
    ``if_inet6``; a file that cannot be read gives nothing (not Linux, or a locked-down /proc).
    """
    found: list[str] = []
    try:
        with open(fib_trie) as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    for prev, line in itertools.pairwise(lines):
        addr = prev.strip().removeprefix("|-- ")
        if line.strip() == "/32 host LOCAL" and prev.strip().startswith("|-- ") and not addr.startswith("127."):
            found.append(f"{addr}/32")
    try:
        with open(if_inet6) as f:
            rows = [line.split() for line in f]
    except OSError:
        rows = []
    for row in rows:
        if row and len(row[0]) == 32 and row[0] != "0" * 31 + "1":
            found.append(socket.inet_ntop(socket.AF_INET6, bytes.fromhex(row[0])) + "/128")
    return tuple(dict.fromkeys(found))  # the local table lists an address once per table it is in
