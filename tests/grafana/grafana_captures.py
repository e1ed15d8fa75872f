"""Capture files for the Grafana tests, built with pcapgen, each looping in about a second.

* ``baseline``: ordinary mixed traffic (IPv4, IPv6, ARP; TCP, UDP, ICMP, ICMPv6, GRE) in every
  direction, with flows that end by FIN, RST and idle timeout.
* ``conditions``: what a healthy network rarely shows, so that the panels for it have data:
  64 concurrent UDP flows (against a 16-flow table: evictions), duplicate frames, and malformed
  headers (a TCP header cut short, a TCP data offset of 3, an IPv4 header length of 4).
* ``burst``: 20,000 small UDP frames a microsecond apart, for tcpreplay --topspeed into a live
  capture configured to fall behind (kernel and queue drops).
"""

from __future__ import annotations

from pathlib import Path

from pcapgen import (
    ACK,
    ETH_ARP,
    ETH_IPV4,
    ETH_IPV6,
    FIN,
    GRE,
    ICMP,
    ICMPV6,
    MAC_A,
    MAC_B,
    PSH,
    RST,
    SYN,
    TCP,
    UDP,
    Capture,
    arp,
    eth,
    icmp_echo,
    ipv4,
    ipv6,
    pad,
    tcp,
    udp,
)

T0 = 1_700_000_000_000_000  # microseconds
HOME, ROUTER, WEB, DNS_OUT, OTHER = "192.168.1.10", "192.168.1.1", "93.184.216.34", "8.8.8.8", "1.1.1.1"
HOME6, WEB6 = "fd00::10", "2001:db8::80"


def v4(proto: int, src: str, dst: str, payload: bytes) -> bytes:
    return pad(eth(ETH_IPV4) + ipv4(proto, src, dst, payload))


def v6(proto: int, src: str, dst: str, payload: bytes) -> bytes:
    return pad(eth(ETH_IPV6) + ipv6(proto, src, dst, payload))


def baseline() -> Capture:
    c = Capture()
    t = T0
    for conn in range(4):  # TCP conversations out to the web, ending by FIN (3) or RST (1)
        sport = 50000 + conn
        t += 10_000
        c.add(t, v4(TCP, HOME, WEB, tcp(sport, 443, SYN)))
        c.add(t + 1000, v4(TCP, WEB, HOME, tcp(443, sport, SYN | ACK)))
        for k in range(5):
            c.add(t + 2000 + k * 1000, v4(TCP, HOME, WEB, tcp(sport, 443, PSH | ACK, bytes(200), seq=1 + k)))
            c.add(t + 2500 + k * 1000, v4(TCP, WEB, HOME, tcp(443, sport, PSH | ACK, bytes(1200), seq=1 + k)))
        if conn == 3:
            c.add(t + 9000, v4(TCP, HOME, WEB, tcp(sport, 443, RST)))
        else:
            c.add(t + 9000, v4(TCP, HOME, WEB, tcp(sport, 443, FIN | ACK)))
            c.add(t + 9500, v4(TCP, WEB, HOME, tcp(443, sport, FIN | ACK)))
            c.add(t + 9800, v4(TCP, HOME, WEB, tcp(sport, 443, ACK)))
    for k in range(10):  # DNS to the router (internal) and to the internet (outbound)
        c.add(T0 + 100_000 + k * 20_000, v4(UDP, HOME, ROUTER, udp(40000 + k, 53, bytes(40))))
        c.add(T0 + 101_000 + k * 20_000, v4(UDP, ROUTER, HOME, udp(53, 40000 + k, bytes(120))))
        c.add(T0 + 102_000 + k * 20_000, v4(UDP, HOME, DNS_OUT, udp(41000 + k, 53, bytes(40))))
    for k in range(5):
        c.add(T0 + 400_000 + k * 10_000, v4(ICMP, HOME, ROUTER, icmp_echo(7, k, bytes(56))))
        c.add(T0 + 400_500 + k * 10_000, v6(ICMPV6, HOME6, WEB6, icmp_echo(8, k, bytes(56), v6=True)))
        c.add(T0 + 401_000 + k * 10_000, v6(TCP, WEB6, HOME6, tcp(443, 51000, ACK, bytes(600))))
        c.add(T0 + 402_000 + k * 10_000, v6(UDP, HOME6, WEB6, udp(51001, 443, bytes(300))))
        c.add(T0 + 403_000 + k * 10_000, v4(UDP, DNS_OUT, OTHER, udp(53, 53, bytes(80))))  # external: neither end is local
        c.add(T0 + 404_000 + k * 10_000, v4(GRE, HOME, WEB, bytes(64)))
    c.add(T0 + 600_000, pad(eth(ETH_ARP, MAC_A, "ff:ff:ff:ff:ff:ff") + arp(1, MAC_A, HOME, "00:00:00:00:00:00", ROUTER)))
    c.add(T0 + 600_500, pad(eth(ETH_ARP, MAC_B, MAC_A) + arp(2, MAC_B, ROUTER, MAC_A, HOME)))
    c.add(T0 + 999_000, v4(UDP, HOME, ROUTER, udp(123, 123, bytes(48))))  # the pass lasts about a second
    c.packets.sort(key=lambda p: p.ts_us)
    return c


def conditions() -> Capture:
    c = Capture()
    for k in range(64):  # more concurrent flows than the 16-flow table holds
        t = T0 + k * 10_000
        c.add(t, v4(UDP, HOME, WEB, udp(30000 + k, 5000, bytes(100))))
        c.add(t + 5_000, v4(UDP, WEB, HOME, udp(5000, 30000 + k, bytes(100))))
    for k in range(10):  # the same frame twice within the 1 ms dedup window
        frame = v4(UDP, HOME, ROUTER, udp(20000 + k, 53, bytes(40)))
        c.add(T0 + 700_000 + k * 10_000, frame)
        c.add(T0 + 700_100 + k * 10_000, frame)
    for k in range(10):  # malformed headers: decode errors at the TCP and IPv4 layers
        t = T0 + 800_000 + k * 10_000
        c.add(t, v4(TCP, HOME, WEB, tcp(60000 + k, 80, ACK, bytes(100))), cut=14 + 20 + 10)  # TCP header cut short
        short = bytearray(tcp(60100 + k, 80, ACK, bytes(20)))
        short[12] = 3 << 4  # TCP data offset 3 words: less than the 20-byte minimum
        c.add(t + 1000, v4(TCP, HOME, WEB, bytes(short)))
        bad = bytearray(v4(UDP, HOME, WEB, udp(60200 + k, 80, bytes(20))))
        bad[14] = 0x44  # IPv4 header length 4 words: less than the 20-byte minimum
        c.add(t + 2000, bytes(bad))
    c.add(T0 + 999_000, v4(UDP, HOME, ROUTER, udp(123, 123, bytes(48))))
    c.packets.sort(key=lambda p: p.ts_us)
    return c


def burst(frames: int = 20_000) -> Capture:
    c = Capture()
    for k in range(frames):
        c.add(T0 + k, v4(UDP, "10.0.0.1", "10.0.0.2", udp(1000 + k % 500, 9, bytes(60))))
    return c


def write_all(folder: Path) -> dict[str, Path]:
    return {name: build().write(folder / f"{name}.pcap") for name, build in (("baseline", baseline), ("conditions", conditions), ("burst", burst))}
