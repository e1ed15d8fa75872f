"""Passive learning, on a slow path: names and addresses from the rare packets that carry them.

ARP (address <-> MAC), DHCP (hostname, client identifier, vendor class), DNS answers (A, AAAA,
PTR, CNAME chains), mDNS and LLMNR. The batch is scanned with one vectorised mask; only the
matching packets (a handful per second on a home network) are decoded in Python, at most
``max_per_batch`` of them, and whatever is malformed is counted, never raised.
``DECODERS`` is the dispatch table, by UDP port.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from agent.base import labels
from agent.base.batch import Batch
from agent.naming.learn import dhcp, dns

DNS_PORT, MDNS_PORT, LLMNR_PORT, DHCP_SERVER, DHCP_CLIENT = 53, 5353, 5355, 67, 68


@dataclass
class Observations:
    """What one batch taught: (mac, address) pairs, DHCP records, named addresses, and remote names."""

    arp: list[tuple[str, str]] = field(default_factory=list)
    dhcp: list[dhcp.Dhcp] = field(default_factory=list)
    names: list[tuple[str, str, str]] = field(default_factory=list)  # (address, name, source)
    domains: list[tuple[str, str]] = field(default_factory=list)  # (address, queried name)

    def __bool__(self) -> bool:
        return bool(self.arp or self.dhcp or self.names or self.domains)


def _dns(payload: bytes, source: str, out: Observations) -> None:
    records = dns.answers(payload)
    aliases = {value: name for name, kind, value in records if kind == "CNAME"}
    for name, kind, value in records:
        if kind in ("A", "AAAA"):
            original = name
            for _ in range(8):  # follow the CNAME chain back to the name that was asked for
                if original not in aliases:
                    break
                original = aliases[original]
            out.names.append((value, name, source))
            out.domains.append((value, original))
        elif kind == "PTR":
            address = dns.reverse_address(name)
            if address is not None:
                out.names.append((address, value, source))


def _mdns(payload: bytes, out: Observations) -> None:
    _dns(payload, "mdns", out)


def _llmnr(payload: bytes, out: Observations) -> None:
    _dns(payload, "llmnr", out)


def _unicast_dns(payload: bytes, out: Observations) -> None:
    _dns(payload, "dns", out)


def _dhcp(payload: bytes, out: Observations) -> None:
    out.dhcp.append(dhcp.parse(payload))


DECODERS: dict[int, Callable[[bytes, Observations], None]] = {
    DNS_PORT: _unicast_dns,
    MDNS_PORT: _mdns,
    LLMNR_PORT: _llmnr,
    DHCP_SERVER: _dhcp,
    DHCP_CLIENT: _dhcp,
}
_FROM_PORT = np.zeros(65536, np.bool_)  # answers come from 53, 5353 and 5355; DHCP from 67 and 68
_FROM_PORT[list(DECODERS)] = True


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


class Learner:
    """Selects the packets worth learning from and decodes them; counts what it could not read."""

    def __init__(self, max_per_batch: int = 256) -> None:
        self.max_per_batch = max_per_batch
        self.decoded = 0
        self.malformed = 0
        self.skipped = 0

    def observe(self, batch: Batch) -> Observations:
        out = Observations()
        # Every frame but a duplicate: a name in a packet that sampling leaves out is still a name.
        counted = ~batch.duplicate if batch.duplicate.size else np.ones(len(batch), np.bool_)
        arp = ((batch.network == labels.ARP) & (batch.error == 0) & counted).nonzero()[0]
        wanted = (batch.transport == labels.UDP) & batch.has_ports & counted & _FROM_PORT[batch.sport]
        rows = np.concatenate((arp, wanted.nonzero()[0]))
        if rows.size > self.max_per_batch:
            self.skipped += rows.size - self.max_per_batch
            rows = rows[: self.max_per_batch]
        data = batch.raw.data
        for i in rows.tolist():
            l3, end = int(batch.l3[i]), int(batch.l3[i] + batch.l3len[i])
            try:
                if batch.network[i] == labels.ARP:
                    self._arp(bytes(data[l3:end]), out)
                else:
                    udp = l3 + int(batch.l4[i])
                    length = (int(data[udp + 4]) << 8) | int(data[udp + 5])
                    payload = bytes(data[udp + 8 : min(end, udp + length)])
                    DECODERS[int(batch.sport[i])](payload, out)
                self.decoded += 1
            except (ValueError, IndexError, KeyError):
                self.malformed += 1
        return out

    @staticmethod
    def _arp(body: bytes, out: Observations) -> None:
        if len(body) < 28 or body[0:2] != b"\x00\x01" or body[2:4] != b"\x08\x00" or body[4] != 6 or body[5] != 4:
            raise ValueError("not Ethernet/IPv4 ARP")
        sender_mac, sender_ip = body[8:14], body[14:18]
        if sender_ip != b"\x00\x00\x00\x00":  # an ARP probe says nothing about who owns an address yet
            out.arp.append((_mac(sender_mac), str(ipaddress.IPv4Address(sender_ip))))
