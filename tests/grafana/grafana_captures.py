"""Capture files for the Grafana tests, built with pcapgen, each looping in about a second.

* ``baseline``: ordinary mixed traffic (IPv4, IPv6, ARP; TCP, UDP, ICMP, ICMPv6, GRE) in every
  direction, with flows that end by FIN, RST and idle timeout. The home machine names itself
  ``laptop`` in a DHCP request (its address and MAC from ARP), and DNS answers name the web
  servers ``example.com`` (A) and ``example.org`` (AAAA); with ``router`` in the agent's inventory,
  its devices are laptop, router and unnamed (the IPv6 side), its domains example.com,
  example.org and unknown.
* ``conditions``: what a healthy network rarely shows, so that the panels for it have data:
  64 concurrent UDP flows (against a 16-flow table: evictions), duplicate frames, malformed
  headers (a TCP header cut short, a TCP data offset of 3, an IPv4 header length of 4), and
  DNS answers four at a time, the first cut short, against a limit of two read per batch: one
  malformed, one decoded, two skipped.
* ``labels``: twice as many named devices and domains as the agent's label budgets. The first
  half talks first and takes every series; the second half sends 17 times the bytes, so at the
  agent's first re-ranking, a minute after it starts, each of them takes a first-half name's
  series (LABEL_BUDGET device and LABEL_BUDGET domain series dropped at once).
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
    dhcp,
    dns_response,
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
LAPTOP = "laptop"  # what HOME calls itself in its DHCP request
LABEL_BUDGET = 24  # device and domain series of the labels agent; each capture half has this many names


def label_hosts() -> list[tuple[str, str]]:
    """The labels agent's inventory: (name, address) of twice LABEL_BUDGET local devices."""
    return [(f"host-{i:02d}", f"192.168.2.{i + 1}") for i in range(2 * LABEL_BUDGET)]


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
    # Names: HOME asks DHCP for its address as "laptop"; the router answers DNS for both web servers.
    request = dhcp(MAC_A, 3, hostname=LAPTOP, requested=HOME)
    c.add(T0 + 1_000, pad(eth(ETH_IPV4, MAC_A, "ff:ff:ff:ff:ff:ff") + ipv4(UDP, "0.0.0.0", "255.255.255.255", udp(68, 67, request))))
    c.add(T0 + 2_000, v4(UDP, ROUTER, HOME, udp(53, 40100, dns_response("www.example.com", [("www.example.com", "A", WEB)]))))
    org = dns_response("www.example.org", [("www.example.org", "AAAA", WEB6)], qtype=28)
    c.add(T0 + 3_000, v4(UDP, ROUTER, HOME, udp(53, 40101, org)))
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
    for k in range(10):  # name packets within 3 µs: an answer cut short (malformed), then three answers (one decoded, two skipped)
        t = T0 + 650_000 + k * 4_000
        cut = dns_response(f"cut{k}.example.net", [(f"cut{k}.example.net", "A", f"203.0.113.{k + 1}")])[:20]
        c.add(t, v4(UDP, ROUTER, HOME, udp(53, 42000 + k, cut)))
        for j in range(3):
            name = f"n{k}-{j}.example.net"
            c.add(t + 1 + j, v4(UDP, ROUTER, HOME, udp(53, 42100 + 3 * k + j, dns_response(name, [(name, "A", f"203.0.113.{100 + 3 * k + j}")]))))
    c.add(T0 + 999_000, v4(UDP, HOME, ROUTER, udp(123, 123, bytes(48))))
    c.packets.sort(key=lambda p: p.ts_us)
    return c


def labels() -> Capture:
    c = Capture()
    hosts = label_hosts()
    for i in range(len(hosts)):  # the router answers for one server of each domain (to an unnamed machine)
        name = f"www.site{i:02d}.com"
        c.add(T0 + i * 200, v4(UDP, ROUTER, HOME, udp(53, 43000 + i, dns_response(name, [(name, "A", f"198.51.100.{i + 1}")]))))
    for i, (_, address) in enumerate(hosts):
        first = i < LABEL_BUDGET  # the first half talks first, with small packets; the second later, with large ones
        t = T0 + (100_000 if first else 500_000) + (i % LABEL_BUDGET) * 2_000
        c.add(t, v4(UDP, address, f"198.51.100.{i + 1}", udp(44000 + i, 443, bytes(18 if first else 1000))))
    c.add(T0 + 999_000, v4(UDP, HOME, ROUTER, udp(123, 123, bytes(48))))
    c.packets.sort(key=lambda p: p.ts_us)
    return c


def burst(frames: int = 20_000) -> Capture:
    c = Capture()
    for k in range(frames):
        c.add(T0 + k, v4(UDP, "10.0.0.1", "10.0.0.2", udp(1000 + k % 500, 9, bytes(60))))
    return c


def write_all(folder: Path) -> dict[str, Path]:
    builders = (("baseline", baseline), ("conditions", conditions), ("labels", labels), ("burst", burst))
    return {name: build().write(folder / f"{name}.pcap") for name, build in builders}
