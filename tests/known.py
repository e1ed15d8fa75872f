"""Captures with known answers for the end-to-end tests: every frame is built with the labels pktagent must count it under.

``mixed()`` is one Ethernet capture with a little of everything pktagent decodes (IPv4 and
IPv6; TCP, UDP, ICMP, ICMPv6 and GRE; 802.1Q and QinQ tags; IPv6 extension headers and AH; IPv4
and IPv6 fragments; ARP; a non-IP frame; optionally frames cut by a snaplen). The expected
network, transport and direction of each frame, and the flows each transport starts, are
written down by hand next to the frame, from the rules in agent/stages/decode, agent/stages/classify and
agent/stages/flows, not computed by pktagent.

Every frame differs from every other at the network layer, so no frame is a duplicate, and
frames are 10 ms apart, further than the default 1 ms dedup window anyway.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field

from pcapgen import (
    ACK,
    ETH_ARP,
    ETH_IPV4,
    ETH_IPV6,
    FIN,
    GRE,
    ICMP,
    ICMPV6,
    PSH,
    SYN,
    TCP,
    UDP,
    Capture,
    arp,
    eth,
    eth_vlan,
    ext_header,
    frag_header,
    icmp_echo,
    ipv4,
    ipv6,
    pad,
    tcp,
    udp,
)

# Local addresses are in pktagent's default local networks, remote ones in documentation prefixes.
L4, L4_GW, R4 = "192.168.1.10", "192.168.1.1", "198.51.100.7"
L6, R6 = "fd00::10", "2001:db8::5"
START_US = 1_700_000_000_000_000
STEP_US = 10_000
LLDP = 0x88CC
AH = 51

Cell = tuple[str, str, str]  # (network, transport, direction)


@dataclass
class Known:
    """A capture and, for each of its frames, the cell pktagent counts it in."""

    capture: Capture
    cells: list[Cell] = field(default_factory=list)
    flows_started: dict[str, int] = field(default_factory=dict)
    ip_proto: list[int | None] = field(default_factory=list)  # IP protocol after extension headers; None: not IP

    def add(self, frame: bytes, cell: Cell, proto: int | None = None) -> None:
        ts = START_US + STEP_US * len(self.cells)
        framed = pad(frame)
        snap = self.capture.snaplen
        self.capture.add(ts, framed, cut=snap if len(framed) > snap else None)
        self.cells.append(cell)
        self.ip_proto.append(proto)

    @property
    def frames(self) -> int:
        return self.capture.frames

    @property
    def wire_bytes(self) -> int:
        return self.capture.wire_bytes

    def packets_by_cell(self) -> Counter[Cell]:
        return Counter(self.cells)

    def bytes_by_cell(self) -> Counter[Cell]:
        out: Counter[Cell] = Counter()
        for cell, p in zip(self.cells, self.capture.packets):
            out[cell] += p.wire_len
        return out

    def count(self, *, network: str | None = None, transport: str | None = None, direction: str | None = None) -> int:
        return sum(
            1 for n, t, d in self.cells if (network is None or n == network) and (transport is None or t == transport) and (direction is None or d == direction)
        )

    def wire_bytes_where(self, *, network: str | None = None, transport: str | None = None) -> int:
        return sum(
            p.wire_len for (n, t, _), p in zip(self.cells, self.capture.packets) if (network is None or n == network) and (transport is None or t == transport)
        )


def mixed(*, snaplen: int = 262144, big: bool = True) -> Known:
    """The mixed capture. ``big`` adds two 1400-byte frames, which a ``snaplen`` below that cuts."""
    k = Known(Capture(snaplen=snaplen))
    e4, e6 = eth(ETH_IPV4), eth(ETH_IPV6)
    ident = iter(range(100, 10_000))

    def v4(proto: int, src: str, dst: str, payload: bytes, **kw: int | bool) -> bytes:
        return ipv4(proto, src, dst, payload, ident=next(ident), **kw)  # type: ignore[arg-type]

    # 1. An IPv4 TCP conversation, local:40000 <-> remote:443 (one tcp flow): 6 out, 4 in.
    conv = [
        (L4, R4, 40000, 443, SYN, b"", 1000, 0, "outbound"),
        (R4, L4, 443, 40000, SYN | ACK, b"", 5000, 1001, "inbound"),
        (L4, R4, 40000, 443, ACK, b"", 1001, 5001, "outbound"),
        (L4, R4, 40000, 443, PSH | ACK, b"GET / HTTP/1.1\r\n" * 6, 1001, 5001, "outbound"),
        (R4, L4, 443, 40000, ACK, b"", 5001, 1097, "inbound"),
    ]
    if big:
        conv.append((R4, L4, 443, 40000, ACK, bytes(range(256)) * 5 + bytes(80), 5001, 1097, "inbound"))  # 1360 bytes of payload
    conv += [
        (L4, R4, 40000, 443, FIN | ACK, b"", 1097, 6361, "outbound"),
        (R4, L4, 443, 40000, FIN | ACK, b"", 6361, 1098, "inbound"),
        (L4, R4, 40000, 443, ACK, b"", 1098, 6362, "outbound"),
    ]
    for src, dst, sport, dport, flags, data, seq, ack, direction in conv:
        k.add(e4 + v4(TCP, src, dst, tcp(sport, dport, flags, data, seq=seq, ack=ack)), ("ipv4", "tcp", direction), TCP)
    # 2. DNS to the local gateway: internal, one udp flow.
    k.add(e4 + v4(UDP, L4, L4_GW, udp(5353, 53, b"\x12\x34" + bytes(30))), ("ipv4", "udp", "internal"), UDP)
    k.add(e4 + v4(UDP, L4_GW, L4, udp(53, 5353, b"\x12\x34" + bytes(46))), ("ipv4", "udp", "internal"), UDP)
    # 3. Ping: one icmp flow (no ports: both directions share it).
    k.add(e4 + v4(ICMP, L4, R4, icmp_echo(7, 1, b"ping")), ("ipv4", "icmp", "outbound"), ICMP)
    k.add(e4 + v4(ICMP, R4, L4, icmp_echo(7, 1, b"pong")), ("ipv4", "icmp", "inbound"), ICMP)
    # 4. IPv6 TCP handshake start: one tcp flow.
    k.add(e6 + ipv6(TCP, L6, R6, tcp(50000, 80, SYN, seq=10)), ("ipv6", "tcp", "outbound"), TCP)
    k.add(e6 + ipv6(TCP, R6, L6, tcp(80, 50000, SYN | ACK, seq=20, ack=11)), ("ipv6", "tcp", "inbound"), TCP)
    # 5. IPv6 NTP from outside: one udp flow.
    k.add(e6 + ipv6(UDP, R6, L6, udp(123, 123, bytes(48))), ("ipv6", "udp", "inbound"), UDP)
    if big:
        # A large datagram on the same flow; a small snaplen cuts it after the UDP header.
        k.add(e6 + ipv6(UDP, R6, L6, udp(123, 123, bytes(range(256)) * 5 + bytes(72))), ("ipv6", "udp", "inbound"), UDP)
    # 6. ICMPv6 echo: one icmpv6 flow.
    k.add(e6 + ipv6(ICMPV6, L6, R6, icmp_echo(9, 1, b"ping", v6=True)), ("ipv6", "icmpv6", "outbound"), ICMPV6)
    k.add(e6 + ipv6(ICMPV6, R6, L6, struct.pack("!BBHHH", 129, 0, 0, 9, 1) + b"pong"), ("ipv6", "icmpv6", "inbound"), ICMPV6)
    # 7. 802.1Q, VLAN 100: IPv4 UDP between two local hosts, one udp flow.
    k.add(eth_vlan([100], ETH_IPV4) + v4(UDP, "10.0.0.1", "10.0.0.2", udp(1000, 2000, b"vlan")), ("ipv4", "udp", "internal"), UDP)
    # 8. QinQ (802.1ad outer tag 200, 802.1Q inner 300): IPv6 TCP between local hosts, one tcp flow.
    k.add(eth_vlan([200, 300], ETH_IPV6) + ipv6(TCP, "fd00::1", "fd00::2", tcp(1111, 2222, SYN, seq=77)), ("ipv6", "tcp", "internal"), TCP)
    # 9. IPv6 extension headers before the transport: hop-by-hop, destination options (16 bytes), then UDP; one udp flow.
    ext = ext_header(60) + ext_header(UDP, 1)
    k.add(e6 + ipv6(0, L6, R6, ext + udp(6000, 7000, b"ext")), ("ipv6", "udp", "outbound"), UDP)
    # ... and a routing header before TCP, on its own tcp flow.
    k.add(e6 + ipv6(43, L6, R6, ext_header(TCP) + tcp(6001, 7001, SYN, seq=5)), ("ipv6", "tcp", "outbound"), TCP)
    # ... and an authentication header (24 bytes: 12 of them the ICV) before TCP, on its own tcp flow.
    ah = struct.pack("!BBHII", TCP, 4, 0, 0x1000, 1) + bytes(12)
    k.add(e6 + ipv6(AH, L6, R6, ah + tcp(6002, 7002, SYN, seq=5)), ("ipv6", "tcp", "outbound"), TCP)
    # 10. An IPv6 datagram in two fragments: the first carries the UDP header (one udp flow), the
    # second does not; pktagent counts both as udp, and flows only the first (no ports in the second).
    datagram = udp(4000, 4001, bytes(range(40)))  # 48 bytes: 24 in each fragment
    k.add(e6 + ipv6(44, R6, L6, frag_header(UDP, 0, True) + datagram[:24]), ("ipv6", "udp", "inbound"), UDP)
    k.add(e6 + ipv6(44, R6, L6, frag_header(UDP, 24, False) + datagram[24:]), ("ipv6", "udp", "inbound"), UDP)
    # 11. An IPv4 TCP segment in two fragments, likewise: both tcp, one tcp flow.
    segment = tcp(8080, 41000, PSH | ACK, bytes(range(44)), seq=9, ack=9)  # 64 bytes: 32 in each fragment
    k.add(e4 + v4(TCP, R4, L4, segment[:32], more_fragments=True), ("ipv4", "tcp", "inbound"), TCP)
    k.add(e4 + v4(TCP, R4, L4, segment[32:], frag_offset=32), ("ipv4", "tcp", "inbound"), TCP)
    # 12. GRE: transport other, one flow of transport other.
    k.add(e4 + v4(GRE, L4, R4, struct.pack("!HH", 0, ETH_IPV4) + bytes(20)), ("ipv4", "other", "outbound"), GRE)
    # 13. ARP who-has and reply: no transport, no direction, no flow.
    k.add(eth(ETH_ARP, dst="ff:ff:ff:ff:ff:ff") + arp(1, "02:00:00:00:00:0a", L4, "00:00:00:00:00:00", L4_GW), ("arp", "none", "none"))
    k.add(eth(ETH_ARP) + arp(2, "02:00:00:00:00:0b", L4_GW, "02:00:00:00:00:0a", L4), ("arp", "none", "none"))
    # 14. LLDP: not a network pktagent decodes.
    k.add(eth(LLDP, dst="01:80:c2:00:00:0e") + bytes.fromhex("020704020000000000aa") + bytes(20), ("other", "none", "none"))
    k.flows_started = {"tcp": 6, "udp": 5, "icmp": 1, "icmpv6": 1, "other": 1}
    assert len({p.frame[14:] for p in k.capture.packets}) == k.frames  # no two frames alike
    return k
