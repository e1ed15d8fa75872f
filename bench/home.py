"""A small home network's traffic, generated: the capture ``make demo`` replays.

Six devices name themselves the way home devices do — DHCP (a TV, a phone, and the same phone
again behind a randomised MAC), mDNS (a Raspberry Pi), LLMNR (a NAS), a DNS PTR answer (a
printer) — and ARP ties their addresses to their MACs. Then each looks up a few sites through
the router and talks to them over TCP and QUIC. Every remote address the devices talk to was
first in a DNS answer, so every remote byte has a domain; every local address has a name
(the router's comes from the demo's inventory, ``bench/demo.yml``).

The capture is deterministic (a fixed seed), about 4,000 packets over 30 seconds, and meant to
be replayed in a loop at its recorded pace: every device and domain is busy in every loop, so
no series goes quiet and none is dropped (``PktagentLabelSeriesChurn`` stays silent).

    python bench/home.py --out build/demo/home.pcap
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

START = 1_700_000_000  # 2023-11-14 22:13:20 UTC
SECONDS = 30
ROUTER_MAC, ROUTER_IP = "00:11:22:33:44:01", "192.168.1.1"
BROADCAST = "ff:ff:ff:ff:ff:ff"


@dataclass(frozen=True)
class Device:
    name: str
    mac: str
    ip: str
    sites: tuple[str, ...]  # what it talks to, by host name


# The order is the order they show up in (the ids `pktagent devices` gives them).
PI = Device("pi-kitchen", "b8:27:eb:00:00:30", "192.168.1.30", ("deb.debian.org", "api.github.com"))
TV = Device("living-room-tv", "00:11:22:33:44:20", "192.168.1.20", ("www.netflix.com", "www.youtube.com"))
PHONE = Device("anna-phone", "00:11:22:33:44:40", "192.168.1.60", ("www.wikipedia.org", "open.spotify.com"))
PHONE_RANDOM = Device("anna-phone", "da:11:22:33:44:41", "192.168.1.61", ("www.icloud.com",))  # a randomised MAC: the same phone
NAS = Device("nas", "00:11:22:33:44:50", "192.168.1.40", ("deb.debian.org",))
PRINTER = Device("printer", "00:11:22:33:44:60", "192.168.1.50", ("www.hp.com",))
DEVICES = (PI, TV, PHONE, PHONE_RANDOM, NAS, PRINTER)
PHONE_CLIENT_ID = b"\x01anna-phone-id"

# Remote servers on documentation addresses (RFC 5737): one or two per site.
SITES = {
    "deb.debian.org": ("203.0.113.10",),
    "api.github.com": ("203.0.113.20",),
    "www.netflix.com": ("203.0.113.30", "203.0.113.31"),
    "www.youtube.com": ("198.51.100.40",),
    "www.wikipedia.org": ("198.51.100.50",),
    "open.spotify.com": ("198.51.100.60",),
    "www.icloud.com": ("198.51.100.70",),
    "www.hp.com": ("198.51.100.80",),
}
DOMAINS = ("debian.org", "github.com", "netflix.com", "youtube.com", "wikipedia.org", "spotify.com", "icloud.com", "hp.com")


# -- frames ---------------------------------------------------------------------------------------


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ethernet(src: str, dst: str, ethertype: int, payload: bytes) -> bytes:
    frame = _mac(dst) + _mac(src) + struct.pack("!H", ethertype) + payload
    return frame + bytes(max(0, 60 - len(frame)))


def ipv4(proto: int, src: str, dst: str, payload: bytes, ident: int = 0) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, 64, proto, 0, ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    )
    return header[:10] + struct.pack("!H", _checksum(header)) + header[12:] + payload


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp(sport: int, dport: int, flags: int, seq: int, ack: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload


def arp_reply(mac: str, ip: str, target_mac: str, target_ip: str) -> bytes:
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + _mac(mac) + ipaddress.IPv4Address(ip).packed + _mac(target_mac) + ipaddress.IPv4Address(target_ip).packed
    return ethernet(mac, target_mac, 0x0806, body)


def _name(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\x00"


def dns_message(question: str | None, answers: list[tuple[str, int, bytes]], *, ident: int, response: bool = True) -> bytes:
    """A DNS message; ``answers`` are (owner, type, rdata)."""
    flags = 0x8180 if response else 0x0100
    body = _name(question) + struct.pack("!HH", 1, 1) if question else b""
    for owner, kind, rdata in answers:
        body += _name(owner) + struct.pack("!HHIH", kind, 1, 120, len(rdata)) + rdata
    return struct.pack("!HHHHHH", ident, flags, 1 if question else 0, len(answers), 0, 0) + body


def dhcp(mac: str, message_type: int, *, your_ip: str, hostname: str, client_id: bytes | None = None) -> bytes:
    op = 2 if message_type == 5 else 1
    header = struct.pack("!BBBBIHH4s4s4s4s", op, 1, 6, 0, 0x3903F326, 0, 0, bytes(4), ipaddress.IPv4Address(your_ip).packed, bytes(4), bytes(4))
    header += _mac(mac) + bytes(10) + bytes(192) + b"\x63\x82\x53\x63"
    options = bytes([53, 1, message_type, 12, len(hostname)]) + hostname.encode()
    if client_id is not None:
        options += bytes([61, len(client_id)]) + client_id
    if message_type != 5:
        options += bytes([50, 4]) + ipaddress.IPv4Address(your_ip).packed
    return header + options + b"\xff"


# -- the timeline -----------------------------------------------------------------------------------


class Timeline:
    def __init__(self) -> None:
        self.frames: list[tuple[float, bytes]] = []

    def add(self, t: float, frame: bytes) -> None:
        self.frames.append((t, frame))

    def udp(self, t: float, src: Device | None, dst_mac: str, src_ip: str, dst_ip: str, sport: int, dport: int, payload: bytes) -> None:
        mac = src.mac if src else ROUTER_MAC
        self.add(t, ethernet(mac, dst_mac, 0x0800, ipv4(17, src_ip, dst_ip, udp(sport, dport, payload))))


def _naming(tl: Timeline) -> None:
    """The first second: every device says who it is."""
    t = 0.05
    for d in DEVICES:  # ARP: each device answers the router
        tl.add(t, arp_reply(d.mac, d.ip, ROUTER_MAC, ROUTER_IP))
        t += 0.01
    tl.add(t, arp_reply(ROUTER_MAC, ROUTER_IP, PI.mac, PI.ip))
    # mDNS: the Pi announces itself.
    announce = dns_message(None, [("pi-kitchen.local", 1, ipaddress.IPv4Address(PI.ip).packed)], ident=0)
    tl.udp(0.2, PI, "01:00:5e:00:00:fb", PI.ip, "224.0.0.251", 5353, 5353, announce)
    # DHCP: the TV and the phone (twice: its own MAC, then a randomised one) get their leases.
    for i, (d, cid) in enumerate(((TV, None), (PHONE, PHONE_CLIENT_ID), (PHONE_RANDOM, PHONE_CLIENT_ID))):
        t = 0.3 + 0.1 * i
        tl.udp(t, d, BROADCAST, "0.0.0.0", "255.255.255.255", 68, 67, dhcp(d.mac, 3, your_ip=d.ip, hostname=d.name, client_id=cid))
        tl.udp(t + 0.01, None, d.mac, ROUTER_IP, d.ip, 67, 68, dhcp(d.mac, 5, your_ip=d.ip, hostname=d.name, client_id=cid))
    # DNS: the router answers the TV's reverse lookup of the printer.
    ptr = dns_message("50.1.168.192.in-addr.arpa", [("50.1.168.192.in-addr.arpa", 12, _name("printer"))], ident=8)
    tl.udp(0.7, None, TV.mac, ROUTER_IP, TV.ip, 53, 40000, ptr)
    # LLMNR: the NAS answers the printer asking for "nas" (the printer has its name by now: no byte goes unnamed).
    answer = dns_message("nas", [("nas", 1, ipaddress.IPv4Address(NAS.ip).packed)], ident=7)
    tl.add(0.8, ethernet(NAS.mac, PRINTER.mac, 0x0800, ipv4(17, NAS.ip, PRINTER.ip, udp(5355, 50000, answer))))


@dataclass(frozen=True)
class Connection:
    """One TCP connection of a device to a server on port 443: its frames each way."""

    device: Device
    server: str
    port: int
    seq: int
    ack: int

    def out(self, flags: int, data: bytes = b"") -> bytes:
        d = self.device
        return ethernet(d.mac, ROUTER_MAC, 0x0800, ipv4(6, d.ip, self.server, tcp(self.port, 443, flags, self.seq, self.ack, data)))

    def back(self, flags: int, data: bytes = b"") -> bytes:
        d = self.device
        return ethernet(ROUTER_MAC, d.mac, 0x0800, ipv4(6, self.server, d.ip, tcp(443, self.port, flags, self.ack, self.seq, data)))


def _browse(tl: Timeline, rng: random.Random, d: Device, site: str, start: float, port: int) -> None:
    """Look ``site`` up through the router, then a TCP (HTTPS) or QUIC exchange with its servers."""
    ident = rng.randrange(1 << 16)
    servers = SITES[site]
    query = dns_message(site, [], ident=ident, response=False)
    tl.add(start, ethernet(d.mac, ROUTER_MAC, 0x0800, ipv4(17, d.ip, ROUTER_IP, udp(port, 53, query))))
    answer = dns_message(site, [(site, 1, ipaddress.IPv4Address(s).packed) for s in servers], ident=ident)
    tl.add(start + 0.015, ethernet(ROUTER_MAC, d.mac, 0x0800, ipv4(17, ROUTER_IP, d.ip, udp(53, port, answer))))
    t = start + 0.03
    for server in servers:
        if rng.random() < 0.3:  # QUIC: UDP 443 both ways
            for _ in range(rng.randrange(20, 60)):
                t += rng.uniform(0.002, 0.05)
                if rng.random() < 0.7:
                    payload = bytes(rng.randrange(900, 1250))
                    tl.add(t, ethernet(ROUTER_MAC, d.mac, 0x0800, ipv4(17, server, d.ip, udp(443, port, payload))))
                else:
                    tl.add(t, ethernet(d.mac, ROUTER_MAC, 0x0800, ipv4(17, d.ip, server, udp(port, 443, bytes(rng.randrange(30, 120))))))
            continue
        seq, ack = rng.randrange(1 << 31), rng.randrange(1 << 31)
        c = Connection(d, server, port, seq, ack)
        tl.add(t, c.out(0x02))
        tl.add(t + 0.02, c.back(0x12))
        tl.add(t + 0.021, c.out(0x10))
        t += 0.03
        for _ in range(rng.randrange(10, 40)):
            t += rng.uniform(0.001, 0.04)
            tl.add(t, c.out(0x18, bytes(rng.randrange(60, 400))))
            for _ in range(rng.randrange(1, 4)):
                t += rng.uniform(0.0005, 0.01)
                tl.add(t, c.back(0x18, bytes(rng.randrange(600, 1448))))
        tl.add(t + 0.01, c.out(0x11))
        tl.add(t + 0.03, c.back(0x11))
        tl.add(t + 0.04, c.out(0x10))
        port += 1


def home_capture_frames(seed: int = 1) -> list[tuple[int, bytes]]:
    """(timestamp in microseconds, frame) of the whole capture, in time order."""
    rng = random.Random(seed)
    tl = Timeline()
    _naming(tl)
    port = 50000
    t = 1.0
    # Rounds of browsing: every device visits each of its sites in every round, so all stay busy.
    while t < SECONDS - 3:
        for d in DEVICES:
            for site in d.sites:
                _browse(tl, rng, d, site, t + rng.uniform(0, 1.5), port)
                port += 4
        t += 4.0
    # Every few seconds the Pi and the NAS chat over SMB, and the Pi re-announces itself (local traffic).
    for k in range(SECONDS // 5):
        t = 2.5 + 5 * k
        tl.add(t, ethernet(PI.mac, NAS.mac, 0x0800, ipv4(6, PI.ip, NAS.ip, tcp(40000 + k, 445, 0x18, 1, 1, bytes(200)))))
        tl.add(t + 0.01, ethernet(NAS.mac, PI.mac, 0x0800, ipv4(6, NAS.ip, PI.ip, tcp(445, 40000 + k, 0x18, 1, 201, bytes(1400)))))
        announce = dns_message(None, [("pi-kitchen.local", 1, ipaddress.IPv4Address(PI.ip).packed)], ident=0)
        tl.udp(t + 0.5, PI, "01:00:5e:00:00:fb", PI.ip, "224.0.0.251", 5353, 5353, announce)
    tl.frames.sort(key=lambda f: f[0])
    return [(START * 1_000_000 + int(t * 1_000_000), frame) for t, frame in tl.frames if t < SECONDS]


def write_pcap(path: Path, frames: list[tuple[int, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for ts, frame in frames:
            f.write(struct.pack("<IIII", ts // 1_000_000, ts % 1_000_000, len(frame), len(frame)) + frame)
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("build/demo/home.pcap"))
    args = p.parse_args()
    frames = home_capture_frames()
    write_pcap(args.out, frames)
    print(f"{args.out}: {len(frames)} packets over {SECONDS} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
