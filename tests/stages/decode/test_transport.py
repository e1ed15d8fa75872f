"""Transport headers: ports and flags, and what counts as cut short or malformed."""

from __future__ import annotations

import pcapgen as g
from batches import decoded

from agent.base import labels

E4, E6 = g.eth(g.ETH_IPV4), g.eth(g.ETH_IPV6)


def errors(b: object) -> list[tuple[str, str] | None]:
    return [labels.DECODE_ERRORS[e - 1] if e else None for e in b.error.tolist()]  # type: ignore[attr-defined]


def test_ports_flags_and_icmp_kinds() -> None:
    b = decoded(
        [
            E4 + g.ipv4(g.TCP, "10.0.0.1", "10.0.0.2", g.tcp(1234, 80, g.SYN | g.ACK)),
            E4 + g.ipv4(g.UDP, "10.0.0.1", "10.0.0.2", g.udp(5000, 53, b"abc")),
            E4 + g.ipv4(g.ICMP, "10.0.0.1", "10.0.0.2", g.icmp_echo()),
            E6 + g.ipv6(g.ICMPV6, "fd00::1", "fd00::2", g.icmp_echo(v6=True)),
            E6 + g.ipv6(g.ICMP, "fd00::1", "fd00::2", g.icmp_echo()),  # ICMP for IPv4 inside IPv6: not ICMPv6
            E4 + g.ipv4(132, "10.0.0.1", "10.0.0.2", bytes(12)),  # SCTP: other
        ]
    )
    assert b.transport.tolist() == [labels.TCP, labels.UDP, labels.ICMP, labels.ICMPV6, labels.OTHER_TRANSPORT, labels.OTHER_TRANSPORT]
    assert b.sport.tolist() == [1234, 5000, 0, 0, 0, 0]
    assert b.dport.tolist() == [80, 53, 0, 0, 0, 0]
    assert b.tcp_flags.tolist() == [g.SYN | g.ACK, 0, 0, 0, 0, 0]
    assert b.has_ports.tolist() == [True, True, False, False, False, False]
    assert errors(b) == [None] * 6


def test_cut_short_or_malformed_transport_counts_as_other() -> None:
    b = decoded(
        [
            E4 + g.ipv4(g.TCP, "10.0.0.1", "10.0.0.2", g.tcp(1, 2)[:12]),
            E4 + g.ipv4(g.TCP, "10.0.0.1", "10.0.0.2", g.tcp(1, 2, data_offset=5)[:12] + b"\x30" + g.tcp(1, 2)[13:]),
            E4 + g.ipv4(g.UDP, "10.0.0.1", "10.0.0.2", g.udp(1, 2)[:6]),
            E4 + g.ipv4(g.UDP, "10.0.0.1", "10.0.0.2", g.udp(1, 2, b"abcd", length=4)),
            E4 + g.ipv4(g.UDP, "10.0.0.1", "10.0.0.2", g.udp(1, 2, b"abcd", length=400)),
            E4 + g.ipv4(g.ICMP, "10.0.0.1", "10.0.0.2", b"\x08\x00"),
            E6 + g.ipv6(g.ICMPV6, "fd00::1", "fd00::2", b"\x80"),
        ]
    )
    assert errors(b) == [
        ("tcp", "truncated"),
        ("tcp", "bad_header_length"),
        ("udp", "truncated"),
        ("udp", "bad_length"),
        ("udp", "bad_length"),
        ("icmp", "truncated"),
        ("icmpv6", "truncated"),
    ]
    assert b.transport.tolist() == [labels.OTHER_TRANSPORT] * 7
    assert b.network.tolist() == [labels.IPV4] * 6 + [labels.IPV6]
    assert not b.has_ports.any()


def test_transport_header_beyond_snaplen_is_truncated_not_missing() -> None:
    frame = E4 + g.ipv4(g.TCP, "10.0.0.1", "10.0.0.2", g.tcp(1, 2, payload=bytes(100)))
    b = decoded([frame[:40]], wire=[len(frame)])
    assert errors(b) == [("tcp", "truncated")]
    assert b.wirelen.tolist() == [len(frame)]


def test_arp_length_check() -> None:
    request = g.eth(g.ETH_ARP) + g.arp(1, g.MAC_A, "192.168.1.2", "00:00:00:00:00:00", "192.168.1.1")
    b = decoded([request, request[:30]])
    assert errors(b) == [None, ("arp", "truncated")]
    assert b.network.tolist() == [labels.ARP, labels.ARP]
    assert b.direction.size == 0  # set by classify, not by decode
