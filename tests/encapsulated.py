"""Captures of every encapsulation pktagent walks to the IP inside, one per link type, with known answers.

PPPoE sessions (untagged, 802.1Q, QinQ; PPP protocol field full and compressed; carrying MPLS),
PPPoE discovery and the PPP control protocols (LCP, IPCP, IPv6CP), MPLS unicast and multicast
stacks of 1 to 4 labels and of 20 (past the labels read one at a time), an Ethernet pseudowire;
the link types PPP and PPP_SERIAL (with and without HDLC address and control, and Cisco HDLC
inside), PPP_ETHER, C_HDLC, PPI (wrapping Ethernet, raw IP and 802.11) and the Linux cooked
headers carrying them. Each frame is written down with the cell pktagent counts it in, by the
rules of agent/stages/decode/encap.py, not computed by pktagent; ``ERRORS`` holds the decode errors each
file must show. Every frame differs from every other at the network layer (no duplicates).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

from known import L4, L6, R4, R6, START_US, STEP_US, Known
from pcapgen import (
    ETH_IPV4,
    ETH_IPV6,
    ETH_MPLS,
    ETH_MPLS_MULTICAST,
    ETH_PPPOE_DISCOVERY,
    ETH_PPPOE_SESSION,
    ICMP,
    ICMPV6,
    PPP_IPCP,
    PPP_IPV4,
    PPP_IPV6,
    PPP_IPV6CP,
    PPP_LCP,
    PPP_MPLS,
    SYN,
    TCP,
    UDP,
    Capture,
    chdlc,
    eth,
    eth_vlan,
    icmp_echo,
    ipv4,
    ipv6,
    mpls,
    ppi,
    ppp,
    ppp_hdlc,
    pppoe_discovery,
    pppoe_session,
    sll,
    sll2,
    tcp,
    udp,
)

ESP = 50
CHDLC_SLARP, CHDLC_CDP = 0x8035, 0x2000
SLL_PPP_HDLC, ARPHRD_PPP = 0x0007, 512
LCP_CONF_REQ = bytes.fromhex("0101000a0506a1b2c3d4")
IPCP_CONF_REQ = bytes.fromhex("0101000a0306c0a8010a")
IPV6CP_CONF_REQ = bytes.fromhex("0101000e010a0011223344556677")

# Decode errors each file shows: the non-IP MPLS payload and the PPI header wrapping 802.11.
ERRORS = {"encap-ethernet.pcap": {"mpls/payload_not_ip": 1}, "encap-ppi.pcap": {"ppi/unsupported_link": 1}}


class _Packets:
    """IP packets that all differ: each call takes the next port."""

    def __init__(self) -> None:
        self.port = 30000

    def _next(self) -> int:
        self.port += 1
        return self.port

    def v4(self, proto: int, src: str = L4, dst: str = R4) -> bytes:
        port = self._next()
        body = {UDP: udp(port, 53, b"q" * 12), TCP: tcp(port, 443, SYN), ICMP: icmp_echo(port, 1, b"ping")}[proto]
        return ipv4(proto, src, dst, body, ident=port)

    def v6(self, proto: int, src: str = L6, dst: str = R6) -> bytes:
        port = self._next()
        body = {
            UDP: udp(port, 123, bytes(16)),
            TCP: tcp(port, 80, SYN),
            ICMPV6: icmp_echo(port, 1, b"ping", v6=True),
            ESP: struct.pack("!II", port, 1) + bytes(24),
        }
        return ipv6(proto, src, dst, body[proto])


def _known(linktype: int) -> Known:
    return Known(Capture(linktype=linktype))


def _add(k: Known, frame: bytes, cell: tuple[str, str, str], proto: int | None = None) -> None:
    """Like ``Known.add``, without Ethernet's padding on the link types that have none."""
    if k.capture.linktype == 1:
        k.add(frame, cell, proto)
        return
    k.capture.add(START_US + STEP_US * len(k.cells), frame)
    k.cells.append(cell)
    k.ip_proto.append(proto)


def ethernet(p: _Packets) -> Known:
    k = _known(1)
    out4, in4, out6 = ("ipv4", "udp", "outbound"), ("ipv4", "tcp", "inbound"), ("ipv6", "other", "outbound")
    session = eth(ETH_PPPOE_SESSION)
    _add(k, session + pppoe_session(ppp(PPP_IPV4, p.v4(UDP))), out4, UDP)
    _add(k, session + pppoe_session(ppp(PPP_IPV4, p.v4(TCP, R4, L4))), in4, TCP)
    _add(k, session + pppoe_session(ppp(PPP_IPV6, p.v6(ESP))), out6, ESP)  # IPv6 ESP: transport other
    _add(k, session + pppoe_session(ppp(PPP_IPV4, p.v4(ICMP), compressed=True)), ("ipv4", "icmp", "outbound"), ICMP)
    _add(k, eth_vlan([7], ETH_PPPOE_SESSION) + pppoe_session(ppp(PPP_IPV4, p.v4(TCP, R4, L4))), in4, TCP)
    _add(k, eth_vlan([100, 7], ETH_PPPOE_SESSION) + pppoe_session(ppp(PPP_IPV6, p.v6(UDP))), ("ipv6", "udp", "outbound"), UDP)
    _add(k, session + pppoe_session(ppp(PPP_MPLS, mpls([16], p.v4(UDP)))), out4, UDP)
    _add(k, eth(ETH_PPPOE_DISCOVERY, dst="ff:ff:ff:ff:ff:ff") + pppoe_discovery(), ("other", "none", "none"))
    _add(k, session + pppoe_session(ppp(PPP_LCP, LCP_CONF_REQ)), ("other", "none", "none"))
    _add(k, session + pppoe_session(ppp(PPP_IPCP, IPCP_CONF_REQ)), ("other", "none", "none"))
    # MPLS stacks of 1-4 labels (the first an explicit null), unicast and multicast, and one of 20 labels.
    _add(k, eth(ETH_MPLS) + mpls([0], p.v4(UDP)), out4, UDP)
    _add(k, eth(ETH_MPLS) + mpls([16, 17], p.v6(TCP, R6, L6)), ("ipv6", "tcp", "inbound"), TCP)
    _add(k, eth(ETH_MPLS) + mpls([16, 17, 18], p.v4(ICMP)), ("ipv4", "icmp", "outbound"), ICMP)
    _add(k, eth(ETH_MPLS) + mpls([16, 17, 18, 19], p.v6(ICMPV6)), ("ipv6", "icmpv6", "outbound"), ICMPV6)
    _add(k, eth(ETH_MPLS_MULTICAST) + mpls([20], p.v4(UDP, R4, "10.9.9.9")), ("ipv4", "udp", "inbound"), UDP)
    _add(k, eth_vlan([5], ETH_MPLS) + mpls([21, 22], p.v6(UDP)), ("ipv6", "udp", "outbound"), UDP)
    _add(k, eth(ETH_MPLS) + mpls(list(range(100, 120)), p.v4(TCP)), ("ipv4", "tcp", "outbound"), TCP)
    # An Ethernet pseudowire with a control word: not IP (mpls/payload_not_ip).
    _add(k, eth(ETH_MPLS) + mpls([30], bytes(4) + eth(ETH_IPV4) + p.v4(UDP)), ("other", "none", "none"))
    return k


def ppp_link(p: _Packets, linktype: int) -> Known:
    """PPP (9) or PPP_SERIAL (50): HDLC-like framing, compressed or not, or Cisco HDLC in its place."""
    k = _known(linktype)
    _add(k, ppp_hdlc(PPP_IPV4, p.v4(UDP)), ("ipv4", "udp", "outbound"), UDP)
    _add(k, ppp_hdlc(PPP_IPV4, p.v4(TCP, R4, L4), address_control=False), ("ipv4", "tcp", "inbound"), TCP)
    _add(k, ppp_hdlc(PPP_IPV6, p.v6(UDP), compressed=True), ("ipv6", "udp", "outbound"), UDP)
    _add(k, ppp_hdlc(PPP_IPV6, p.v6(ICMPV6), address_control=False, compressed=True), ("ipv6", "icmpv6", "outbound"), ICMPV6)
    _add(k, chdlc(ETH_IPV4, p.v4(ICMP)), ("ipv4", "icmp", "outbound"), ICMP)
    _add(k, chdlc(ETH_IPV6, p.v6(TCP), address=0x8F), ("ipv6", "tcp", "outbound"), TCP)
    _add(k, ppp_hdlc(PPP_MPLS, mpls([16, 17], p.v4(UDP))), ("ipv4", "udp", "outbound"), UDP)
    _add(k, ppp_hdlc(PPP_LCP, LCP_CONF_REQ), ("other", "none", "none"))
    _add(k, ppp_hdlc(PPP_IPCP, IPCP_CONF_REQ), ("other", "none", "none"))
    _add(k, ppp_hdlc(PPP_IPV6CP, IPV6CP_CONF_REQ), ("other", "none", "none"))
    return k


def ppp_ether(p: _Packets) -> Known:
    k = _known(51)
    _add(k, pppoe_session(ppp(PPP_IPV4, p.v4(TCP))), ("ipv4", "tcp", "outbound"), TCP)
    _add(k, pppoe_session(ppp(PPP_IPV6, p.v6(UDP, R6, L6))), ("ipv6", "udp", "inbound"), UDP)
    _add(k, pppoe_session(ppp(PPP_LCP, LCP_CONF_REQ)), ("other", "none", "none"))
    return k


def c_hdlc(p: _Packets) -> Known:
    k = _known(104)
    _add(k, chdlc(ETH_IPV4, p.v4(TCP)), ("ipv4", "tcp", "outbound"), TCP)
    _add(k, chdlc(ETH_IPV6, p.v6(UDP)), ("ipv6", "udp", "outbound"), UDP)
    _add(k, chdlc(ETH_MPLS, mpls([16], p.v4(UDP, R4, L4))), ("ipv4", "udp", "inbound"), UDP)
    _add(k, chdlc(ETH_MPLS, mpls([16, 17, 18], p.v6(ICMPV6))), ("ipv6", "icmpv6", "outbound"), ICMPV6)
    _add(k, chdlc(CHDLC_SLARP, struct.pack("!IIIHH", 2, 1, 0, 0xFFFF, 0), address=0x8F), ("other", "none", "none"))
    _add(k, chdlc(CHDLC_CDP, bytes.fromhex("02b4") + bytes(20), address=0x8F), ("other", "none", "none"))
    return k


def ppi_link(p: _Packets) -> Known:
    k = _known(192)
    _add(k, ppi(1, eth(ETH_IPV4) + p.v4(UDP)), ("ipv4", "udp", "outbound"), UDP)
    _add(k, ppi(1, eth(ETH_PPPOE_SESSION) + pppoe_session(ppp(PPP_IPV4, p.v4(TCP)))), ("ipv4", "tcp", "outbound"), TCP)
    _add(k, ppi(1, eth(ETH_MPLS) + mpls([16, 17], p.v6(UDP))), ("ipv6", "udp", "outbound"), UDP)
    _add(k, ppi(1, eth(ETH_IPV6) + p.v6(TCP), fields=bytes(8)), ("ipv6", "tcp", "outbound"), TCP)  # a PPI field before the frame
    _add(k, ppi(12, p.v4(ICMP)), ("ipv4", "icmp", "outbound"), ICMP)  # raw IP
    _add(k, ppi(105, bytes.fromhex("80000000ffffffffffff") + bytes(30)), ("other", "none", "none"))  # 802.11: ppi/unsupported_link
    return k


def cooked(p: _Packets, linktype: int) -> Known:
    """Linux cooked v1 (113) or v2 (276): PPPoE, MPLS, and PPP in HDLC-like framing (protocol 7) behind the header."""
    k = _known(linktype)
    head = sll if linktype == 113 else sll2
    _add(k, head(ETH_PPPOE_SESSION) + pppoe_session(ppp(PPP_IPV4, p.v4(UDP))), ("ipv4", "udp", "outbound"), UDP)
    _add(k, head(ETH_MPLS) + mpls([16], p.v6(TCP)), ("ipv6", "tcp", "outbound"), TCP)
    _add(k, head(ETH_MPLS_MULTICAST) + mpls([16, 17, 18, 19], p.v4(UDP)), ("ipv4", "udp", "outbound"), UDP)
    _add(k, head(SLL_PPP_HDLC, hatype=ARPHRD_PPP) + ppp_hdlc(PPP_IPV6, p.v6(UDP)), ("ipv6", "udp", "outbound"), UDP)
    _add(k, head(ETH_IPV4, hatype=ARPHRD_PPP) + p.v4(ICMP), ("ipv4", "icmp", "outbound"), ICMP)  # a ppp interface: IP right behind
    _add(k, head(ETH_PPPOE_SESSION) + pppoe_session(ppp(PPP_LCP, LCP_CONF_REQ)), ("other", "none", "none"))
    return k


def captures() -> Iterator[tuple[str, Known]]:
    """Every capture of this module, by file name."""
    p = _Packets()
    builders: dict[str, Callable[[], Known]] = {
        "encap-ethernet.pcap": lambda: ethernet(p),
        "encap-ppp.pcap": lambda: ppp_link(p, 9),
        "encap-ppp-serial.pcap": lambda: ppp_link(p, 50),
        "encap-ppp-ether.pcap": lambda: ppp_ether(p),
        "encap-chdlc.pcap": lambda: c_hdlc(p),
        "encap-ppi.pcap": lambda: ppi_link(p),
        "encap-sll.pcap": lambda: cooked(p, 113),
        "encap-sll2.pcap": lambda: cooked(p, 276),
    }
    for name, build in builders.items():
        yield name, build()
