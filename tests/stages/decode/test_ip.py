"""IPv4 (options, fragments, malformed headers) and IPv6 (extension headers walked to the transport)."""

from __future__ import annotations

import ipaddress

import pcapgen as g
import pytest
from batches import decoded

from agent.base import labels

E4, E6 = g.eth(g.ETH_IPV4), g.eth(g.ETH_IPV6)


def errors(b: object) -> list[tuple[str, str] | None]:
    return [labels.DECODE_ERRORS[e - 1] if e else None for e in b.error.tolist()]  # type: ignore[attr-defined]


def addr(hi: int, lo: int) -> str:
    return str(ipaddress.ip_address((hi << 64) | lo).ipv4_mapped or ipaddress.ip_address((hi << 64) | lo))


def test_ipv4_addresses_protocol_and_options() -> None:
    opts = b"\x94\x04\x00\x00"  # router alert
    b = decoded([E4 + g.ipv4(g.UDP, "10.1.2.3", "224.0.0.251", g.udp(5353, 5353, b"x"), options=opts)])
    assert addr(int(b.src_hi[0]), int(b.src_lo[0])) == "10.1.2.3"
    assert addr(int(b.dst_hi[0]), int(b.dst_lo[0])) == "224.0.0.251"
    assert (b.proto[0], b.transport[0], b.sport[0], b.dport[0]) == (17, labels.UDP, 5353, 5353)
    assert b.l3len.tolist() == [24 + 9]


def test_ipv4_fragments_first_has_ports_later_ones_only_protocol() -> None:
    payload = g.udp(1000, 2000, bytes(40))
    b = decoded(
        [
            E4 + g.ipv4(g.UDP, "10.0.0.1", "10.0.0.2", payload[:24], more_fragments=True),
            E4 + g.ipv4(g.UDP, "10.0.0.1", "10.0.0.2", payload[24:], frag_offset=24),
        ]
    )
    assert b.transport.tolist() == [labels.UDP, labels.UDP]
    assert b.has_ports.tolist() == [True, False]
    assert b.sport.tolist() == [1000, 0]
    assert errors(b) == [None, None]


@pytest.mark.parametrize(
    ("frame", "error", "is_ip"),
    [
        (E4 + g.ipv4(g.TCP, "10.0.0.1", "10.0.0.2", b"")[:15], ("ipv4", "truncated"), False),
        (E4 + b"\x65" + g.ipv4(g.TCP, "10.0.0.1", "10.0.0.2", g.tcp(1, 2))[1:], ("ipv4", "bad_version"), False),
        (E4 + b"\x44" + g.ipv4(g.TCP, "10.0.0.1", "10.0.0.2", g.tcp(1, 2))[1:], ("ipv4", "bad_header_length"), False),
        (E4 + g.ipv4(g.TCP, "10.0.0.1", "10.0.0.2", g.tcp(1, 2), total_length=12), ("ipv4", "bad_total_length"), True),
        (E4 + g.ipv4(g.TCP, "10.0.0.1", "10.0.0.2", g.tcp(1, 2), total_length=900), ("ipv4", "bad_total_length"), True),
    ],
)
def test_ipv4_malformed_headers_still_count_as_ipv4(frame: bytes, error: tuple[str, str], is_ip: bool) -> None:
    b = decoded([frame])
    assert errors(b) == [error]
    assert (b.network[0], b.transport[0], bool(b.is_ip[0])) == (labels.IPV4, labels.OTHER_TRANSPORT, is_ip)


def test_ipv4_cut_by_snaplen_is_not_an_error() -> None:
    frame = E4 + g.ipv4(g.TCP, "10.0.0.1", "10.0.0.2", g.tcp(1, 2, payload=bytes(1400)))
    b = decoded([frame[:96]], wire=[len(frame)])
    assert errors(b) == [None]
    assert (b.transport[0], b.wirelen[0], b.l3len[0]) == (labels.TCP, len(frame), 96 - 14)


def test_ethernet_padding_is_not_part_of_the_packet() -> None:
    frame = g.pad(E4 + g.ipv4(g.UDP, "10.0.0.1", "10.0.0.2", g.udp(7, 7)))
    b = decoded([frame])
    assert b.l3len.tolist() == [28]
    assert b.wirelen.tolist() == [60]


def test_ipv6_extension_headers_are_walked_to_the_transport() -> None:
    chain = g.ext_header(43, 1) + g.ext_header(60) + g.ext_header(g.TCP)  # hop-by-hop -> routing -> dest opts -> TCP
    b = decoded([E6 + g.ipv6(0, "fd00::1", "fd00::2", chain + g.tcp(2222, 22, g.SYN))])
    assert (b.proto[0], b.transport[0], b.sport[0], b.dport[0], b.tcp_flags[0]) == (6, labels.TCP, 2222, 22, g.SYN)
    assert errors(b) == [None]


def test_ipv6_fragments() -> None:
    data = g.udp(53, 5353, bytes(32))
    b = decoded(
        [
            E6 + g.ipv6(44, "2001:db8::1", "fd00::9", g.frag_header(g.UDP, 0, True) + data[:16]),
            E6 + g.ipv6(44, "2001:db8::1", "fd00::9", g.frag_header(g.UDP, 16, False) + data[16:]),
        ]
    )
    assert b.transport.tolist() == [labels.UDP, labels.UDP]
    assert b.has_ports.tolist() == [True, False]
    assert addr(int(b.src_hi[0]), int(b.src_lo[0])) == "2001:db8::1"


def test_ipv6_malformed() -> None:
    ok = g.ipv6(g.UDP, "fd00::1", "fd00::2", g.udp(1, 2))
    b = decoded(
        [
            E6 + ok[:30],
            E6 + b"\x40" + ok[1:],
            E6 + g.ipv6(g.UDP, "fd00::1", "fd00::2", g.udp(1, 2), payload_length=500),
            E6 + g.ipv6(0, "fd00::1", "fd00::2", b"\x11\x05" + bytes(6)),  # hop-by-hop says 48 bytes, has 8
            E6 + g.ipv6(60, "fd00::1", "fd00::2", g.ext_header(60) * 8 + g.ext_header(g.UDP) + g.udp(1, 2)),
        ]
    )
    assert errors(b) == [
        ("ipv6", "truncated"),
        ("ipv6", "bad_version"),
        ("ipv6", "bad_payload_length"),
        ("ipv6", "extension_truncated"),
        ("ipv6", "too_many_extensions"),
    ]
    assert b.network.tolist() == [labels.IPV6] * 5
    assert b.transport.tolist() == [labels.OTHER_TRANSPORT] * 5


def test_tunnels_are_classified_by_their_outer_headers() -> None:
    inner = g.ipv4(g.TCP, "172.16.0.1", "172.16.0.2", g.tcp(1, 2))
    b = decoded(
        [
            E4 + g.ipv4(g.GRE, "10.0.0.1", "10.0.0.2", b"\x00\x00\x08\x00" + inner),
            E4 + g.ipv4(41, "10.0.0.1", "10.0.0.2", g.ipv6(g.UDP, "::1", "::2", g.udp(1, 2))),
        ]
    )
    assert b.network.tolist() == [labels.IPV4, labels.IPV4]
    assert b.transport.tolist() == [labels.OTHER_TRANSPORT, labels.OTHER_TRANSPORT]
    assert b.proto.tolist() == [47, 41]
    assert errors(b) == [None, None]
