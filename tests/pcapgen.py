"""Build frames and capture files whose every figure the tests know in advance.

Frames are built from small header functions (``eth``, ``vlan``, ``ipv4``, ``ipv6``, ``tcp``, ...)
and written with ``write_pcap`` or ``write_pcapng``; ``Capture`` keeps the expected totals
(frames, bytes on the wire) as frames are added. ``libpcap_records`` reads a file back the
way libpcap does, one record at a time: the reference pktagent's readers are checked against.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pcapy

ETH_IPV4, ETH_IPV6, ETH_ARP, ETH_VLAN, ETH_QINQ = 0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8
TCP, UDP, ICMP, ICMPV6, GRE = 6, 17, 1, 58, 47
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def mac(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


def eth(ethertype: int, src: str = MAC_A, dst: str = MAC_B) -> bytes:
    return mac(dst) + mac(src) + struct.pack("!H", ethertype)


def vlan(vid: int, inner: int) -> bytes:
    """A tag as it follows the outer TPID: TCI, then the next ethertype."""
    return struct.pack("!HH", vid, inner)


def eth_vlan(vids: Sequence[int], inner: int, *, tpids: Sequence[int] | None = None) -> bytes:
    """Ethernet with one tag per vid (802.1Q, or 802.1ad for the outer tag of QinQ)."""
    tpids = list(tpids) if tpids else ([ETH_QINQ] + [ETH_VLAN] * (len(vids) - 1) if len(vids) > 1 else [ETH_VLAN])
    out = mac(MAC_B) + mac(MAC_A) + struct.pack("!H", tpids[0])
    for i, vid in enumerate(vids):
        nxt = tpids[i + 1] if i + 1 < len(vids) else inner
        out += vlan(vid, nxt)
    return out


def ipv4(
    proto: int,
    src: str,
    dst: str,
    payload: bytes,
    *,
    ttl: int = 64,
    ident: int = 1,
    options: bytes = b"",
    frag_offset: int = 0,
    more_fragments: bool = False,
    total_length: int | None = None,
) -> bytes:
    ihl = 5 + len(options) // 4
    total = total_length if total_length is not None else ihl * 4 + len(payload)
    flags = (0x2000 if more_fragments else 0) | (frag_offset // 8)
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, total, ident, flags, ttl, proto, 0, ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    )
    checksum = _checksum(header + options)
    return header[:10] + struct.pack("!H", checksum) + header[12:] + options + payload


def ipv6(next_header: int, src: str, dst: str, payload: bytes, *, hop_limit: int = 64, payload_length: int | None = None) -> bytes:
    plen = payload_length if payload_length is not None else len(payload)
    return struct.pack("!IHBB", 0x60000000, plen, next_header, hop_limit) + ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + payload


def ext_header(next_header: int, length_units: int = 0) -> bytes:
    """A hop-by-hop, routing or destination-options header: (length_units + 1) * 8 bytes."""
    return struct.pack("!BB", next_header, length_units) + bytes(6 + 8 * length_units)


def frag_header(next_header: int, offset: int, more: bool, ident: int = 7) -> bytes:
    return struct.pack("!BBHI", next_header, 0, (offset // 8) << 3 | int(more), ident)


def tcp(sport: int, dport: int, flags: int = ACK, payload: bytes = b"", *, seq: int = 1, ack: int = 1, data_offset: int = 5) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, data_offset << 4, flags, 65535, 0, 0) + bytes(4 * (data_offset - 5)) + payload


def udp(sport: int, dport: int, payload: bytes = b"", *, length: int | None = None) -> bytes:
    return struct.pack("!HHHH", sport, dport, length if length is not None else 8 + len(payload), 0) + payload


def icmp_echo(ident: int = 1, seq: int = 1, payload: bytes = b"", *, v6: bool = False) -> bytes:
    return struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, ident, seq) + payload


def arp(op: int, sender_mac: str, sender_ip: str, target_mac: str, target_ip: str) -> bytes:
    return (
        struct.pack("!HHBBH", 1, ETH_IPV4, 6, 4, op)
        + mac(sender_mac)
        + ipaddress.IPv4Address(sender_ip).packed
        + mac(target_mac)
        + ipaddress.IPv4Address(target_ip).packed
    )


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pad(frame: bytes, minimum: int = 60) -> bytes:
    """Ethernet padding up to the minimum frame size (without FCS)."""
    return frame + bytes(max(0, minimum - len(frame)))


@dataclass
class Packet:
    ts_us: int
    frame: bytes
    wire_len: int  # length on the wire; > len(frame) when the capture cut it


@dataclass
class Capture:
    """Frames with timestamps, written to a file in one go."""

    linktype: int = 1
    snaplen: int = 262144
    packets: list[Packet] = field(default_factory=list)

    def add(self, ts_us: int, frame: bytes, *, cut: int | None = None) -> Capture:
        """Add a frame at ``ts_us``; ``cut`` keeps only that many bytes of it in the file."""
        kept = frame if cut is None else frame[:cut]
        self.packets.append(Packet(ts_us, kept, len(frame)))
        return self

    def extend(self, frames: Iterable[tuple[int, bytes]]) -> Capture:
        for ts, frame in frames:
            self.add(ts, frame)
        return self

    @property
    def frames(self) -> int:
        return len(self.packets)

    @property
    def wire_bytes(self) -> int:
        return sum(p.wire_len for p in self.packets)

    def write(self, path: Path, *, pcapng: bool = False) -> Path:
        (write_pcapng if pcapng else write_pcap)(path, self.packets, linktype=self.linktype, snaplen=self.snaplen)
        return path

    def memory(self) -> list[tuple[int, bytes, int]]:
        """The frames as ``MemorySource`` takes them."""
        return [(p.ts_us, p.frame, p.wire_len) for p in self.packets]


def write_pcap(path: Path, packets: Sequence[Packet], *, linktype: int = 1, snaplen: int = 262144, nanosecond: bool = False) -> None:
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    out = [struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for p in packets:
        sec, frac = divmod(p.ts_us, 1_000_000)
        out.append(struct.pack("<IIII", sec, frac * 1000 if nanosecond else frac, len(p.frame), p.wire_len) + p.frame)
    path.write_bytes(b"".join(out))


def _block(kind: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    total = len(body) + 12
    return struct.pack("<II", kind, total) + body + struct.pack("<I", total)


def write_pcapng(path: Path, packets: Sequence[Packet], *, linktype: int = 1, snaplen: int = 262144) -> None:
    out = [_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]
    out.append(_block(1, struct.pack("<HHI", linktype, 0, snaplen)))
    for p in packets:
        hi, lo = p.ts_us >> 32, p.ts_us & 0xFFFFFFFF
        out.append(_block(6, struct.pack("<IIIII", 0, hi, lo, len(p.frame), p.wire_len) + p.frame))
    path.write_bytes(b"".join(out))


# -- the slow path's protocols: DNS (and mDNS/LLMNR), DHCP ------------------------------------


def dns_name(name: str) -> bytes:
    return b"".join(struct.pack("B", len(label)) + label.encode() for label in name.strip(".").split(".")) + b"\x00"


def dns_response(question: str | None, records: Sequence[tuple[str, str, str]], *, qtype: int = 1, ident: int = 0x1234) -> bytes:
    """A DNS response: ``records`` are (owner, type, value) with type A, AAAA, CNAME or PTR."""
    types = {"A": 1, "AAAA": 28, "CNAME": 5, "PTR": 12}
    body = b""
    if question is not None:
        body += dns_name(question) + struct.pack("!HH", qtype, 1)
    for owner, kind, value in records:
        if kind == "A":
            rdata = ipaddress.IPv4Address(value).packed
        elif kind == "AAAA":
            rdata = ipaddress.IPv6Address(value).packed
        else:
            rdata = dns_name(value)
        body += dns_name(owner) + struct.pack("!HHIH", types[kind], 1, 60, len(rdata)) + rdata
    return struct.pack("!HHHHHH", ident, 0x8180, 1 if question is not None else 0, len(records), 0, 0) + body


def dhcp(
    mac_text: str,
    message_type: int,
    *,
    hostname: str | None = None,
    client_id: bytes | None = None,
    vendor_class: str | None = None,
    your_ip: str = "0.0.0.0",
    requested: str | None = None,
) -> bytes:
    """A BOOTP/DHCP message (1 DISCOVER, 3 REQUEST, 5 ACK ...) with the options that name a client."""
    op = 2 if message_type in (2, 5, 6) else 1
    header = struct.pack("!BBBBIHH4s4s4s4s", op, 1, 6, 0, 0xABCD, 0, 0, bytes(4), ipaddress.IPv4Address(your_ip).packed, bytes(4), bytes(4))
    header += mac(mac_text) + bytes(10) + bytes(64) + bytes(128) + b"\x63\x82\x53\x63"
    options = bytes([53, 1, message_type])
    if hostname is not None:
        options += bytes([12, len(hostname)]) + hostname.encode()
    if client_id is not None:
        options += bytes([61, len(client_id)]) + client_id
    if vendor_class is not None:
        options += bytes([60, len(vendor_class)]) + vendor_class.encode()
    if requested is not None:
        options += bytes([50, 4]) + ipaddress.IPv4Address(requested).packed
    return header + options + b"\xff"


MASK = 0xFFFFFFFF
Record = tuple[int, int, int, bytes]  # timestamp in us, captured length, original length (0: the captured), bytes


def libpcap_records(path: Path) -> list[Record]:
    """The records libpcap reads one at a time, up to the end or the first damage.

    Timestamps as ``next_batch`` hands them over: seconds and microseconds as unsigned 32-bit numbers.
    """
    reader = pcapy.open_offline(str(path))
    out: list[Record] = []
    while True:
        try:
            header, data = reader.next()
        except pcapy.PcapError:
            break
        if header is None:
            break
        sec, usec = header.getts()
        caplen = header.getcaplen()
        out.append(((sec & MASK) * 1_000_000 + (usec & MASK), caplen, header.getlen() or caplen, bytes(data)))
    return out


# -- encapsulations between the link layer and IP: PPP, PPPoE, MPLS, Cisco HDLC, PPI, Linux cooked ----

ETH_PPPOE_DISCOVERY, ETH_PPPOE_SESSION, ETH_MPLS, ETH_MPLS_MULTICAST, ETH_PPP = 0x8863, 0x8864, 0x8847, 0x8848, 0x880B
PPP_IPV4, PPP_IPV6, PPP_MPLS, PPP_MPLS_MULTICAST, PPP_LCP, PPP_IPCP, PPP_IPV6CP = 0x0021, 0x0057, 0x0281, 0x0283, 0xC021, 0x8021, 0x8057


def ppp(protocol: int, payload: bytes, *, compressed: bool = False) -> bytes:
    """A PPP protocol field and its payload; ``compressed``: the one-byte form (RFC 1661 PFC) of a protocol below 0x100."""
    return (struct.pack("!B", protocol) if compressed else struct.pack("!H", protocol)) + payload


def ppp_hdlc(protocol: int, payload: bytes, *, address_control: bool = True, compressed: bool = False) -> bytes:
    """PPP in HDLC-like framing (RFC 1662) as PPP link types carry it: address 0xff and control 0x03 unless compressed away."""
    return (b"\xff\x03" if address_control else b"") + ppp(protocol, payload, compressed=compressed)


def pppoe_session(payload: bytes, *, session: int = 0x1234, length: int | None = None, version_type: int = 0x11, code: int = 0) -> bytes:
    """A PPPoE session header (RFC 2516) before ``payload`` (a PPP protocol field and what it carries)."""
    return struct.pack("!BBHH", version_type, code, session, len(payload) if length is None else length) + payload


def pppoe_discovery(code: int = 0x09, tags: bytes = b"\x01\x01\x00\x00") -> bytes:
    """A PPPoE discovery packet (PADI by default, with an empty Service-Name tag)."""
    return struct.pack("!BBHH", 0x11, code, 0, len(tags)) + tags


def mpls(labels: Sequence[int], payload: bytes, *, ttl: int = 64) -> bytes:
    """An MPLS label stack (RFC 3032), the last label bottom-of-stack, before ``payload``."""
    return b"".join(struct.pack("!I", label << 12 | int(k == len(labels) - 1) << 8 | ttl) for k, label in enumerate(labels)) + payload


def chdlc(protocol: int, payload: bytes, *, address: int = 0x0F) -> bytes:
    """A Cisco HDLC header (address, control 0, an ethertype) before ``payload``."""
    return struct.pack("!BBH", address, 0, protocol) + payload


def ppi(linktype: int, frame: bytes, *, fields: bytes = b"", version: int = 0) -> bytes:
    """A PPI header (little-endian: version, flags, its length, the link type it wraps), ``fields``, then ``frame``."""
    return struct.pack("<BBHI", version, 0, 8 + len(fields), linktype) + fields + frame


def sll(protocol: int, *, hatype: int = 1) -> bytes:
    """A Linux cooked v1 header: packet type, ARPHRD type, address length and address, protocol."""
    return struct.pack("!HHH8sH", 0, hatype, 6, mac(MAC_A) + bytes(2), protocol)


def sll2(protocol: int, *, hatype: int = 1) -> bytes:
    """A Linux cooked v2 header: protocol, reserved, interface index, ARPHRD type, packet type, address."""
    return struct.pack("!HHIHBB8s", protocol, 0, 2, hatype, 0, 6, mac(MAC_A) + bytes(2))
