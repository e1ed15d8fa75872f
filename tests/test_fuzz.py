"""Fuzzing the decoder and the whole pipeline: valid frames of every supported link type, then cut, flipped and spliced.

Seeds are built with ``pcapgen`` (IPv4/IPv6 TCP, UDP, ICMP, ICMPv6, GRE; IPv4 options and
fragments; IPv6 extension headers, AH and fragments; ARP; DNS, mDNS, LLMNR and DHCP payloads, so
the learning slow path runs too), wrapped in the link header of each type in
``agent.stages.decode.link.LINK_DECODERS`` (Ethernet with 0-3 VLAN tags, PPPoE or MPLS; PPP with and
without its HDLC bytes; Cisco HDLC; PPI wrapping Ethernet; ...). Hypothesis then truncates
them, flips bytes, overwrites length fields with other values, inserts and deletes bytes, lies
about the length on the wire and shuffles timestamps, and runs whole batches through
``agent.stages.decode.decode`` and ``agent.runtime.pipeline.Pipeline.process``. Whatever comes in:

- nothing raises;
- every frame is accounted for exactly once, per interface:
  ``processed + duplicate + sampled_out + unsupported_link == frames fed``;
- ``processed == traffic_packets.sum()`` at sampling rate 1 (``2 * processed`` at rate 1/2);
- every code in the decoded columns indexes its table in ``agent.labels``, offsets stay inside
  their frames, and the flow table's books balance (started = active + ended) within capacity;
- the exposition of the result builds without a collector error.

``make test`` runs a bounded number of examples; ``bench/fuzz.py`` runs the same property for
longer (``make fuzz``).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pcapgen as g
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from agent.base import labels
from agent.base.batch import Batch, RawBatch
from agent.base.snapshot import Snapshot
from agent.capture.memory import MemorySource
from agent.config import Config
from agent.runtime.pipeline import Pipeline, prepare
from agent.stages.classify import Classifier
from agent.stages.decode import decode
from agent.stages.decode.link import LINK_DECODERS

EXAMPLES = 200  # in `make test`; bench/fuzz.py runs as many as it is told
START_US = 1_700_000_000_000_000
UNSUPPORTED = (105, 127)  # 802.11 and radiotap: counted as unsupported, never decoded
INTERFACES = ("fuzz0", "fuzz1")
L4, L4_GW, R4, L6, R6 = "192.168.1.10", "192.168.1.1", "198.51.100.7", "fd00::10", "2001:db8::5"

# -- seeds: valid network-layer packets ---------------------------------------------------------


@dataclass(frozen=True)
class Seed:
    name: str
    family: str  # "ipv4", "ipv6", "arp" or "other": what the link header must announce
    packet: bytes  # from the network header on
    learn: bool = False  # carries something the slow path reads (ARP, DNS, DHCP)


def _dns_v4() -> bytes:
    return g.dns_response(
        "www.example.com",
        [("www.example.com", "CNAME", "edge.cdn.example.net"), ("edge.cdn.example.net", "A", "93.184.216.34")],
    )


def _seeds() -> tuple[Seed, ...]:
    e6_ext = g.ext_header(60) + g.ext_header(g.UDP, 1)
    ah = struct.pack("!BBHII", g.TCP, 4, 0, 0x1000, 1) + bytes(12)
    datagram = g.udp(4000, 4001, bytes(range(40)))
    segment = g.tcp(8080, 41000, g.PSH | g.ACK, bytes(range(44)))
    ptr = g.dns_response("10.1.168.192.in-addr.arpa", [("10.1.168.192.in-addr.arpa", "PTR", "laptop.lan")], qtype=12)
    mdns = g.dns_response(None, [("tv.local", "A", "192.168.1.20"), ("tv.local", "AAAA", "fd00::20")])
    v4 = [
        ("v4-tcp-syn", g.ipv4(g.TCP, L4, R4, g.tcp(40000, 443, g.SYN)), False),
        ("v4-tcp-data", g.ipv4(g.TCP, R4, L4, g.tcp(443, 40000, g.PSH | g.ACK, b"x" * 100, data_offset=8)), False),
        ("v4-tcp-fin", g.ipv4(g.TCP, L4, R4, g.tcp(40000, 443, g.FIN | g.ACK)), False),
        ("v4-tcp-rst", g.ipv4(g.TCP, R4, L4, g.tcp(443, 40000, g.RST)), False),
        ("v4-udp", g.ipv4(g.UDP, L4, L4_GW, g.udp(5000, 6000, b"hello")), False),
        ("v4-icmp", g.ipv4(g.ICMP, L4, R4, g.icmp_echo(7, 1, b"ping")), False),
        ("v4-gre", g.ipv4(g.GRE, L4, R4, struct.pack("!HH", 0, g.ETH_IPV4) + bytes(20)), False),
        ("v4-options", g.ipv4(g.UDP, L4, R4, g.udp(1, 2, b"opt"), options=bytes([7, 7, 4]) + bytes(5)), False),
        ("v4-frag-first", g.ipv4(g.TCP, R4, L4, segment[:32], more_fragments=True), False),
        ("v4-frag-later", g.ipv4(g.TCP, R4, L4, segment[32:], frag_offset=32), False),
        ("v4-dns", g.ipv4(g.UDP, L4_GW, L4, g.udp(53, 40001, _dns_v4())), True),
        ("v4-dns-ptr", g.ipv4(g.UDP, L4_GW, L4, g.udp(53, 40002, ptr)), True),
        ("v4-mdns", g.ipv4(g.UDP, "192.168.1.20", "224.0.0.251", g.udp(5353, 5353, mdns)), True),
        ("v4-llmnr", g.ipv4(g.UDP, "192.168.1.21", L4, g.udp(5355, 40003, g.dns_response("nas", [("nas", "A", "192.168.1.21")]))), True),
        (
            "v4-dhcp-request",
            g.ipv4(g.UDP, "0.0.0.0", "255.255.255.255", g.udp(68, 67, g.dhcp(g.MAC_A, 3, hostname="pi-kitchen", client_id=b"\x01" + g.mac(g.MAC_A)))),
            True,
        ),
        # Linux BIG TCP: an IPv4 packet over 64 KiB with a total length of 0.
        ("v4-big-tcp", g.ipv4(g.TCP, L4, R4, g.tcp(40000, 443, g.ACK, bytes(70_000)), total_length=0), False),
        ("v4-dhcp-ack", g.ipv4(g.UDP, L4_GW, L4, g.udp(67, 68, g.dhcp(g.MAC_A, 5, your_ip=L4, vendor_class="android-dhcp-13"))), True),
    ]
    v6 = [
        ("v6-tcp", g.ipv6(g.TCP, L6, R6, g.tcp(50000, 80, g.SYN)), False),
        ("v6-udp", g.ipv6(g.UDP, R6, L6, g.udp(123, 123, bytes(48))), False),
        ("v6-icmpv6", g.ipv6(g.ICMPV6, L6, R6, g.icmp_echo(9, 1, b"ping", v6=True)), False),
        ("v6-ext", g.ipv6(0, L6, R6, e6_ext + g.udp(6000, 7000, b"ext")), False),
        ("v6-routing", g.ipv6(43, L6, R6, g.ext_header(g.TCP) + g.tcp(6001, 7001, g.SYN)), False),
        ("v6-ah", g.ipv6(51, L6, R6, ah + g.tcp(6002, 7002, g.SYN)), False),
        ("v6-frag-first", g.ipv6(44, R6, L6, g.frag_header(g.UDP, 0, True) + datagram[:24]), False),
        ("v6-frag-later", g.ipv6(44, R6, L6, g.frag_header(g.UDP, 24, False) + datagram[24:]), False),
        ("v6-dns", g.ipv6(g.UDP, "fd00::1", L6, g.udp(53, 40004, g.dns_response("v6.example.org", [("v6.example.org", "AAAA", R6)], qtype=28))), True),
        ("v6-mdns", g.ipv6(g.UDP, "fe80::20", "ff02::fb", g.udp(5353, 5353, mdns)), True),
        # A jumbogram (RFC 2675): payload length 0, the real length in a hop-by-hop option.
        ("v6-jumbo", g.ipv6(0, L6, R6, struct.pack("!BBBBI", g.UDP, 0, 0xC2, 4, 70_008 + 8) + g.udp(7, 7, bytes(70_000), length=0), payload_length=0), False),
    ]
    arp = [
        ("arp-request", g.arp(1, g.MAC_A, L4, "00:00:00:00:00:00", L4_GW), True),
        ("arp-reply", g.arp(2, g.MAC_B, L4_GW, g.MAC_A, L4), True),
    ]
    out = [Seed(n, "ipv4", p, learn) for n, p, learn in v4]
    out += [Seed(n, "ipv6", p, learn) for n, p, learn in v6]
    out += [Seed(n, "arp", p, learn) for n, p, learn in arp]
    out.append(Seed("lldp", "other", bytes.fromhex("020704020000000000aa") + bytes(36)))
    return tuple(out)


SEEDS = _seeds()
ETHERTYPE = {"ipv4": g.ETH_IPV4, "ipv6": g.ETH_IPV6, "arp": g.ETH_ARP, "other": 0x88CC}

# -- link headers ---------------------------------------------------------------------------------


def _af(family: str, v6_value: int) -> int:
    return {"ipv4": 2, "ipv6": v6_value}.get(family, 7)  # 7: an address family no decoder knows


def _encapsulated(linktype: int, family: str, variant: int, size: int) -> bytes | None:
    """The header of an IP packet of ``size`` bytes inside PPPoE, PPP, Cisco HDLC or MPLS where ``variant`` picks one; None elsewhere."""
    ip = family in ("ipv4", "ipv6")
    protocol = g.PPP_IPV4 if family == "ipv4" else g.PPP_IPV6
    if linktype in (9, 50):
        form = variant % 4  # HDLC address and control or not, the protocol field compressed or not, Cisco HDLC
        return g.chdlc(ETHERTYPE[family], b"") if form == 3 else g.ppp_hdlc(protocol, b"", address_control=form != 1, compressed=form == 2)
    if linktype == 51:
        return g.pppoe_session(g.ppp(protocol, b""), length=min(2 + size, 0xFFFF))
    pppoe = g.pppoe_session(g.ppp(protocol, b""), length=min(2 + size, 0xFFFF))
    if linktype == 1 and ip and variant >= 8:  # PPPoE untagged and under QinQ, MPLS unicast and multicast
        tags = [[], [100, 7], [], []][variant - 8]
        if variant < 10:
            return (g.eth_vlan(tags, g.ETH_PPPOE_SESSION) if tags else g.eth(g.ETH_PPPOE_SESSION)) + pppoe
        return g.eth(g.ETH_MPLS if variant == 10 else g.ETH_MPLS_MULTICAST) + g.mpls([16] * (variant - 9) * 2, b"")
    if linktype in (113, 276) and ip and variant in (9, 10):
        cooked = g.sll if linktype == 113 else g.sll2
        return cooked(g.ETH_PPPOE_SESSION) + pppoe if variant == 9 else cooked(0x0007) + g.ppp_hdlc(protocol, b"")
    if linktype == 104:
        return g.chdlc(g.ETH_MPLS, g.mpls([16, 17], b"")) if ip and variant % 3 == 1 else g.chdlc(ETHERTYPE[family], b"")
    return None


def link_header(linktype: int, family: str, variant: int, size: int = 0) -> bytes:
    """The link header announcing ``family`` on ``linktype`` before a packet of ``size`` bytes; ``variant`` picks among
    its forms (VLAN tags, PPPoE or MPLS on Ethernet and the Linux cooked headers, the AF_INET6 value of NULL/LOOP, ...)."""
    et = ETHERTYPE[family]
    encapsulated = _encapsulated(linktype, family, variant, size)
    if encapsulated is not None:
        return encapsulated
    if linktype == 192:  # PPI wrapping Ethernet, with a PPI field or without
        return g.ppi(1, link_header(1, family, variant, size), fields=bytes(8 * (variant % 2)))
    if linktype == 1:
        tags = variant % 4  # untagged, 802.1Q, QinQ, three tags (the last with the old 0x9100 TPID)
        if tags == 0:
            return g.eth(et)
        tpids = [g.ETH_QINQ, 0x9100, g.ETH_VLAN][-tags:] if tags > 1 else [g.ETH_VLAN]
        return g.eth_vlan([100 + k for k in range(tags)], et, tpids=tpids)
    if linktype == 0:
        af = _af(family, (10, 24, 28, 30)[variant % 4])
        return struct.pack("<I" if variant % 2 == 0 else ">I", af)  # the capturing host's byte order: either
    if linktype == 108:
        return struct.pack(">I", _af(family, (24, 28, 30, 10)[variant % 4]))
    if linktype == 113:
        if variant % 3 == 2:  # a VLAN tag inside the cooked header
            return struct.pack("!HHH8sH", 0, 1, 6, g.mac(g.MAC_A) + bytes(2), g.ETH_VLAN) + g.vlan(5, et)
        return struct.pack("!HHH8sH", variant % 5, 1, 6, g.mac(g.MAC_A) + bytes(2), et)
    if linktype == 276:
        return struct.pack("!HHIHBB8s", et, 0, 3, 1, variant % 5, 6, g.mac(g.MAC_A) + bytes(2))
    return b""  # raw IP (12, 14, 101), IPV4 (228), IPV6 (229): the packet is the IP header


def carries(linktype: int, family: str) -> bool:
    """Whether ``linktype`` can announce ``family`` at all (raw IP carries only IP, IPV4 only IPv4...)."""
    if linktype in (1, 104, 113, 192, 276):
        return True
    if linktype == 228:
        return family == "ipv4"
    if linktype == 229:
        return family == "ipv6"
    return family in ("ipv4", "ipv6")


def frame_for(linktype: int, seed: Seed, variant: int) -> tuple[bytes, int]:
    """A valid frame of ``seed`` on ``linktype`` (Ethernet ones padded to 60 bytes), and where its network header starts."""
    head = link_header(linktype, seed.family, variant, len(seed.packet))
    frame = head + seed.packet
    return (g.pad(frame) if linktype == 1 else frame), len(head)


# -- mutations ------------------------------------------------------------------------------------

# Offsets from the network header of the fields that say how long something is (or what follows):
# IPv4 version/IHL, total length, flags/offset, protocol; IPv6 payload length, next header; the
# first extension header's length; TCP data offset and UDP length after either header; DNS counts.
LENGTH_FIELDS = (0, 2, 6, 9, 4, 6, 41, 20 + 4, 20 + 12, 40 + 4, 40 + 12, 48 + 4, 20 + 8 + 4, 20 + 8 + 6, 40 + 8 + 6)


@st.composite
def mutation(draw: st.DrawFn) -> Callable[[bytearray, int], bytearray]:
    kind = draw(st.sampled_from(("truncate", "cut_header", "flip", "splice", "insert", "delete", "append", "zero_tail", "tags")))
    if kind == "truncate":
        keep = draw(st.integers(0, 160))
        return lambda f, l3: f[:keep]
    if kind == "cut_header":  # cut inside the network or transport header
        rel = draw(st.integers(0, 72))
        return lambda f, l3: f[: l3 + rel]
    if kind == "tags":  # more 802.1Q tags after the MAC addresses (Ethernet), or 4 bytes of them anywhere else
        tags = draw(st.integers(1, 6))
        return lambda f, l3: f[:12] + bytearray(b"\x81\x00\x00\x07" * tags) + f[12:]
    if kind == "flip":
        at, xor = draw(st.integers(0, 140)), draw(st.integers(1, 255))

        def flip(f: bytearray, l3: int) -> bytearray:
            if at < len(f):
                f[at] ^= xor
            return f

        return flip
    if kind == "splice":
        rel = draw(st.sampled_from(LENGTH_FIELDS) | st.integers(0, 100))
        value = draw(st.sampled_from((0, 1, 7, 8, 19, 20, 39, 40, 0x45, 0x4F, 0x60, 0xFF, 0x5FF, 0x600, 0x7FFF, 0xFFFF)) | st.integers(0, 0xFFFF))
        width = draw(st.sampled_from((1, 2)))

        def splice(f: bytearray, l3: int) -> bytearray:
            at = l3 + rel
            raw = value.to_bytes(2, "big")[-width:] if width == 2 else bytes([value & 0xFF])
            f[at : at + width] = raw[: max(0, len(f) - at)]
            return f

        return splice
    if kind == "insert":
        at, data = draw(st.integers(0, 120)), draw(st.binary(min_size=1, max_size=16))
        return lambda f, l3: f[:at] + bytearray(data) + f[at:]
    if kind == "delete":
        at, n = draw(st.integers(0, 120)), draw(st.integers(1, 16))
        return lambda f, l3: f[:at] + f[at + n :]
    if kind == "append":
        data = draw(st.binary(min_size=1, max_size=64))
        return lambda f, l3: f + bytearray(data)
    cut = draw(st.integers(0, 100))  # zero_tail: a frame whose end was overwritten with zeros

    def zero(f: bytearray, l3: int) -> bytearray:
        f[cut:] = bytes(len(f[cut:]))
        return f

    return zero


@dataclass(frozen=True)
class Frame:
    data: bytes
    wire: int  # the length on the wire the capture reports (0: not known, as a live capture cut by the snaplen)


@st.composite
def frame(draw: st.DrawFn, linktype: int) -> Frame:
    if draw(st.integers(0, 19)) == 0:
        data = draw(st.binary(max_size=200))  # plain noise, now and then
    else:
        usable = [s for s in SEEDS if carries(linktype, s.family)] if linktype in LINK_DECODERS else list(SEEDS)
        seed = draw(st.sampled_from(usable))
        built, l3 = frame_for(linktype, seed, draw(st.integers(0, 11)))
        f = bytearray(built)
        for m in draw(st.lists(mutation(), max_size=4)):
            f = m(f, l3)
        data = bytes(f)
    wire = draw(st.sampled_from(("same", "same", "same", "longer", "unknown", "shorter")))
    if wire == "longer":
        return Frame(data, len(data) + draw(st.integers(1, 70000)))
    if wire == "unknown":
        return Frame(data, 0)
    if wire == "shorter":  # a damaged record: shorter on the wire than captured
        return Frame(data, draw(st.integers(0, max(0, len(data) - 1))))
    return Frame(data, len(data))


@dataclass(frozen=True)
class FuzzBatch:
    iface: int
    linktype: int
    frames: tuple[Frame, ...]
    ts: tuple[int, ...]
    prepared: bool  # handed to the pipeline decoded already, as a reader process does

    def raw(self) -> RawBatch:
        items = [(t, f.data, f.wire) for t, f in zip(self.ts, self.frames)]
        src = MemorySource(items, linktype=self.linktype, index=self.iface)
        batch = src.read(max(1, len(items)), 0.0)
        if batch is None:  # no frames at all: an empty batch, as an idle live capture hands over
            return RawBatch(self.iface, self.linktype, np.zeros(0, np.uint8), *(np.zeros(0, np.int64) for _ in range(4)))
        return batch


LINKTYPES = tuple(sorted(LINK_DECODERS))


@st.composite
def fuzz_batch(draw: st.DrawFn, clock: list[int]) -> FuzzBatch:
    linktype = draw(st.sampled_from(LINKTYPES) | st.sampled_from(UNSUPPORTED)) if draw(st.integers(0, 9)) == 0 else draw(st.sampled_from(LINKTYPES))
    frames = draw(st.lists(frame(linktype), max_size=48))
    order = draw(st.sampled_from(("steady", "steady", "same", "shuffled", "jump")))
    n = len(frames)
    step = draw(st.sampled_from((0, 1, 50, 1000, 20_000)))
    ts = [clock[0] + i * step for i in range(n)]
    if order == "same":
        ts = [clock[0]] * n
    elif order == "shuffled":  # a file whose records are out of order
        ts = draw(st.permutations(ts)) if n else ts
    elif order == "jump":  # a clock step: forward past every timeout, or back
        ts = [t + draw(st.sampled_from((120_000_000, 4_000_000_000, -30_000_000))) for t in ts]
    if ts:
        clock[0] = max(clock[0], max(ts)) + 1
    return FuzzBatch(draw(st.integers(0, len(INTERFACES) - 1)), linktype, tuple(frames), tuple(ts), draw(st.booleans()))


@st.composite
def fuzz_run(draw: st.DrawFn) -> tuple[Config, list[FuzzBatch]]:
    """A config (small bounds now and then, so evictions happen) and the batches of one capture."""
    config = Config()
    if draw(st.booleans()):
        config = config.replace("flows", max_flows=16, idle_timeout_seconds=1.0, linger_seconds=0.0)
        config = config.replace("dedup", max_entries=16, window_ms=50.0)
        config = config.replace("devices", max_devices=16, cache_size=4, series_budget=2, domain_series_budget=2, max_domain_addresses=16, learn_per_batch=3)
    if draw(st.integers(0, 3)) == 0:
        config = config.replace("pipeline", sampling_rate=0.5)
    clock = [START_US]
    return config, draw(st.lists(fuzz_batch(clock), min_size=1, max_size=6))


# -- the property ---------------------------------------------------------------------------------


def check_decoded(raw: RawBatch, b: Batch) -> None:
    """Every column of a decoded batch within its table and its frame."""
    n = len(raw)
    assert len(b) == n
    for col in (b.transport, b.error, b.wirelen, b.l3, b.l3len, b.l4, b.proto, b.src_hi, b.dport, b.has_ports, b.is_ip):
        assert col.shape == (n,)
    assert b.window.shape[0] == n
    assert ((b.network >= 0) & (b.network < len(labels.NETWORKS))).all()
    assert ((b.transport >= 0) & (b.transport < len(labels.TRANSPORTS))).all()
    assert (b.error <= len(labels.DECODE_ERRORS)).all()
    ip = (b.network == labels.IPV4) | (b.network == labels.IPV6)
    assert (b.is_ip <= ip).all(), "addresses read from a packet that is not IP"
    assert ((b.transport == labels.NO_TRANSPORT) == ~ip).all(), "an IP packet without a transport, or a non-IP one with one"
    assert (b.has_ports <= (b.is_ip & ((b.transport == labels.TCP) | (b.transport == labels.UDP)))).all()
    assert ((b.sport >= 0) & (b.sport <= 0xFFFF) & (b.dport >= 0) & (b.dport <= 0xFFFF)).all()
    has_l3 = b.network != labels.OTHER_NET
    assert ((b.l3 == -1) == ~has_l3).all()
    rel = b.l3[has_l3] - raw.offset[has_l3]
    assert ((rel >= 0) & (rel <= raw.caplen[has_l3])).all(), "a network header outside its frame"
    assert ((b.l3len >= 0) & (b.l3len <= raw.caplen - np.where(has_l3, b.l3 - raw.offset, 0))).all(), "more network bytes than were captured"
    assert (b.l3len[~has_l3] == 0).all()
    d = Classifier(Config().local_networks).apply(b).direction
    assert ((d < len(labels.DIRECTIONS)) & ((d == labels.NO_DIRECTION) == ~b.is_ip)).all()


def check_pipeline(p: Pipeline, fed: Sequence[int]) -> None:
    c = p.counters
    for i, n in enumerate(fed):
        assert int(c.processed[i] + c.duplicate[i] + c.sampled_out[i] + c.unsupported_link[i]) == n, (
            f"interface {i}: {n} frames fed, processed {c.processed[i]} + duplicate {c.duplicate[i]} "
            f"+ sampled_out {c.sampled_out[i]} + unsupported {c.unsupported_link[i]}"
        )
        assert c.traffic_packets[i].sum() == c.processed[i] * p.sampler.scale
        assert c.traffic_bytes[i].sum() >= 0
    assert (c.processed >= 0).all() and (c.duplicate >= 0).all() and (c.sampled_out >= 0).all()
    f = p.flows
    assert (f.active >= 0).all()
    assert (f.started == f.active + f.ended.sum(axis=1)).all(), (f.started, f.active, f.ended)
    assert int(f.active.sum()) == f.size <= f.capacity
    assert p.dedup.entries <= p.dedup.max_entries
    assert len(p.registry) <= p.config.devices.max_devices
    assert p.learner.decoded + p.learner.malformed + p.learner.skipped <= sum(fed)


def exposition_of(p: Pipeline, fed: Sequence[int]) -> str:
    from agent.cli import exposition

    n = len(p.interfaces)
    snap = Snapshot(
        interfaces=p.interfaces,
        capture_up=np.ones(n, np.int64),
        captured=np.array(fed, np.int64),
        dropped=np.zeros((n, 4), np.int64),
        **p.snapshot_fields(),
    )
    return exposition(snap).decode()


def run_pipeline(config: Config, batches: Sequence[FuzzBatch]) -> Pipeline:
    """Feed the batches through one pipeline, checking the decoder's columns and the books after each."""
    p = Pipeline(config, INTERFACES)
    fed = [0] * len(INTERFACES)
    for fb in batches:
        raw = fb.raw()
        if len(raw) and raw.linktype in LINK_DECODERS:
            check_decoded(raw, decode(raw))
        p.process(prepare(raw) if fb.prepared and len(raw) else raw)  # no reader prepares an empty batch
        fed[fb.iface] += len(raw)
        check_pipeline(p, fed)
    text = exposition_of(p, fed)
    errors = {s.labels["collector"]: s.value for m in text_string_to_metric_families(text) if m.name == "pktagent_exporter_errors" for s in m.samples}
    assert errors and not any(errors.values()), errors
    return p


FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ_SETTINGS
@given(fuzz_run())
def test_any_frames_on_any_link_type_are_counted_once_and_never_crash(run: tuple[Config, list[FuzzBatch]]) -> None:
    config, batches = run
    run_pipeline(config, batches)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.sampled_from(LINKTYPES), st.lists(st.binary(max_size=300), min_size=1, max_size=64), st.sampled_from((None, 0, 65535)))
def test_random_bytes_decode_within_the_tables(linktype: int, frames: list[bytes], wire: int | None) -> None:
    items = [(START_US + i, f, len(f) if wire is None else max(wire, len(f)) if wire else 0) for i, f in enumerate(frames)]
    raw = MemorySource(items, linktype=linktype).read(len(items), 0.0)
    assert raw is not None
    check_decoded(raw, decode(raw))


def test_an_empty_batch_decodes_to_an_empty_batch() -> None:
    """An idle live capture hands over empty batches; ``decode`` promises never to raise."""
    empty = RawBatch(0, 1, np.zeros(0, np.uint8), *(np.zeros(0, np.int64) for _ in range(4)))
    b = decode(empty)
    assert len(b) == 0
    assert len(prepare(empty)) == 0


# -- the seeds themselves: valid, and they reach every stage -------------------------------------


def test_every_seed_decodes_cleanly_on_every_link_type_that_carries_it() -> None:
    """Unmutated, every seed decodes without an error, to its own network, on every link header form."""
    per_variant: dict[int, int] = {}
    for linktype in LINKTYPES:
        for variant in range(12):
            usable = [s for s in SEEDS if carries(linktype, s.family)]
            frames = [frame_for(linktype, s, variant)[0] for s in usable]
            raw = MemorySource([(START_US + 1000 * i, f) for i, f in enumerate(frames)], linktype=linktype).read(len(frames), 0.0)
            assert raw is not None
            b = decode(raw)
            check_decoded(raw, b)
            assert [labels.NETWORKS[x] for x in b.network] == [s.family for s in usable], (linktype, variant)
            assert [labels.DECODE_ERRORS[e - 1] for e in b.error if e] == [], (linktype, variant)
            per_variant[linktype] = len(frames)
    # 31 seeds: 17 IPv4, 11 IPv6, 2 ARP, 1 LLDP. Ethernet, Cisco HDLC, PPI and the cooked headers carry
    # them all, NULL, LOOP, raw IP and the PPP link types the IP ones, IPV4 and IPV6 one family each.
    assert per_variant == {0: 28, 1: 31, 9: 28, 12: 28, 14: 28, 50: 28, 51: 28, 101: 28, 104: 31, 108: 28, 113: 31, 192: 31, 228: 17, 229: 11, 276: 31}


def test_seeds_reach_the_learning_slow_path() -> None:
    """Every seed marked ``learn`` is decoded by the slow path (none malformed), so the fuzzer mutates real learning input."""
    learners = [s for s in SEEDS if s.learn]
    assert len(learners) == 10
    for linktype in LINKTYPES:
        usable = [s for s in learners if carries(linktype, s.family)]
        frames = [frame_for(linktype, s, 0)[0] for s in usable]
        p = Pipeline(Config(), ["eth0"])
        p.process(MemorySource([(START_US + 1000 * i, f) for i, f in enumerate(frames)], linktype=linktype).read(len(frames), 0.0))
        assert p.learner.decoded == len(usable), linktype
        assert (p.learner.malformed, p.learner.skipped) == (0, 0)
        assert int(p.counters.processed[0]) == len(usable)
    named = {ipaddress.ip_address(a) for a, *_ in _names_learned()}
    assert ipaddress.ip_address("93.184.216.34") in named


def _names_learned() -> list[tuple[str, str, str]]:
    from agent.naming.learn import Learner

    frames = [frame_for(1, s, 0)[0] for s in SEEDS if s.learn]
    raw = MemorySource([(START_US + 1000 * i, f) for i, f in enumerate(frames)]).read(len(frames), 0.0)
    assert raw is not None
    b = decode(raw)
    b = b.replace(duplicate=np.zeros(len(b), np.bool_), sampled_out=np.zeros(len(b), np.bool_))
    return Learner().observe(b).names
