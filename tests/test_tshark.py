"""pktagent's totals against tshark's (Debian's Wireshark 4.0) on captures built here and on real ones from tcpdump's corpus.

Compared per file: frames, bytes on the wire (the sum of frame.len), IPv4 frames, IPv6
frames, and frames per IP protocol TCP (6), UDP (17), ICMP (1 over IPv4) and ICMPv6 (58 over
IPv6). Both sides read the same definitions:

- the network is the first protocol after the link layer, its VLAN tags and the encapsulations
  pktagent walks (tshark's ``frame.protocols`` past ``eth:ethertype[:vlan:ethertype]...``,
  ``sll:``, ``raw:``, ``null:``, ``chdlc:``, ``ppp:``, ``pppoes:``, ``mpls:``, ``ppi:``), so an IP
  packet inside LLC/SNAP or an MPLS pseudowire is neither IPv4 nor IPv6 on either side, while
  one inside PPPoE, PPP, Cisco HDLC or an MPLS label stack is, and a tunnelled packet counts
  once, under its outer IP header;
- the IP protocol is the outer header's protocol field, for IPv6 after the extension headers
  pktagent walks (hop-by-hop, routing, fragment, destination options, AH), read from tshark's
  per-header next-header fields, with reassembly off (``-o ip.defragment:FALSE``) so that
  every fragment is a frame of its own: a fragment other than the first counts under its
  IP protocol on both sides.

Where the definitions cannot agree, the fixtures stay out of the way or the test says so:
pktagent counts a packet whose transport header is cut short or malformed (or whose IP
header is) under transport ``other`` with a decode error, while tshark still reports the
protocol field; ICMP over IPv6 and ICMPv6 over IPv4 are ``other`` to pktagent. The
``malformed`` fixture pins that difference down frame by frame.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import need_tool
from known import L4, L6, R4, R6, Known, mixed
from pcapgen import ETH_IPV4, ETH_IPV6, ICMP, SYN, TCP, UDP, Capture, eth, ipv4, ipv6, tcp, udp

# Real captures from tcpdump's test suite, on which tshark and pktagent read the same frames
# (no decode errors, no duplicates): Ethernet, pcapng, Linux cooked (SLL), raw IP, DLT_IPV4/6, BSD loopback.
CORPUS_FILES = (
    "dcb_ets.pcap",  # Ethernet: IPv4 UDP and IPv6 ICMPv6 behind hop-by-hop options
    "dhcp-rfc4388.pcap",  # Ethernet: UDP and ICMP
    "ldp-common-session.pcap",  # Ethernet: TCP and UDP
    "ipv6-routing-header.pcap",  # Ethernet: IPv6 routing headers before UDP and ICMPv6
    "mptcp-v0.pcap",  # Ethernet: 264 TCP segments
    "pim-packet-assortment.pcap",  # Ethernet: IPv4 and IPv6, neither TCP nor UDP (PIM)
    "vrrp.pcap",  # Ethernet: IPv4 and IPv6 VRRP
    "of13_ericsson.pcapng",  # pcapng, Ethernet, TCP
    "babel.pcap",  # Linux cooked v1: IPv6 UDP and ICMPv6
    "resp_3_malicious.pcap",  # Linux cooked v1: IPv4 TCP
    "babel_rtt.pcap",  # raw IP (DLT_RAW)
    "LINKTYPE_IPV4.pcap",  # DLT_IPV4
    "LINKTYPE_IPV6.pcap",  # DLT_IPV6
    "quic_vn.pcap",  # BSD loopback (DLT_NULL): IPv6 UDP
    "ikev2four.pcap",  # BSD loopback (DLT_NULL): IPv4 UDP
)

T = TypeVar("T")
KEYS = ("frames", "bytes", "ipv4", "ipv6", "tcp", "udp", "icmp", "icmpv6")
LINK_TOKENS = {"eth", "ethertype", "vlan", "ieee8021ad", "sll", "raw", "null", "loop", "chdlc", "ppp", "pppoes", "mpls", "ppi", "pcap_pktdata"}
EXTENSION_FIELDS = {0: "ipv6.hopopts.nxt", 60: "ipv6.dstopts.nxt", 43: "ipv6.routing.nxt", 44: "ipv6.fraghdr.nxt", 51: "ah.next_header"}
FIELDS = ("frame.len", "frame.protocols", "ip.proto", "ipv6.nxt", *EXTENSION_FIELDS.values())


Frame = tuple[int, str, str]  # (frame.len, network, transport) in pktagent's label values


def tshark_frames(path: Path) -> list[Frame]:
    """Each frame of one file as tshark reads it, in the definitions of this module's docstring."""
    args = ["tshark", "-n", "-r", str(path), "-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE"]
    args += ["-T", "fields", "-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=,"]
    for f in FIELDS:
        args += ["-e", f]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    frames = []
    for line in done.stdout.splitlines():
        length, protocols, *numbers = line.split("|")
        values = dict(zip(FIELDS[2:], ([int(v) for v in n.split(",")] if n else [] for n in numbers)))
        tokens = protocols.split(":")
        while tokens and tokens[0] in LINK_TOKENS:
            tokens.pop(0)
        network = tokens[0] if tokens else ""
        if network == "ip":
            proto = values["ip.proto"][0]
            frames.append((int(length), "ipv4", {TCP: "tcp", UDP: "udp", ICMP: "icmp"}.get(proto, "other")))
        elif network == "ipv6":
            proto = values["ipv6.nxt"][0]
            # Follow the chain: each extension header's own field holds the next one, in order.
            queues = {kind: list(values[name]) for kind, name in EXTENSION_FIELDS.items()}
            while queues.get(proto):
                proto = queues[proto].pop(0)
            frames.append((int(length), "ipv6", {TCP: "tcp", UDP: "udp", 58: "icmpv6"}.get(proto, "other")))
        else:
            frames.append((int(length), "arp" if network == "arp" else "other", "none"))
    return frames


def tshark_totals(path: Path) -> Counter[str]:
    """tshark's figures for one file, in the definitions of this module's docstring."""
    totals: Counter[str] = Counter()
    for length, network, transport in tshark_frames(path):
        totals["frames"] += 1
        totals["bytes"] += length
        if network in ("ipv4", "ipv6"):
            totals[network] += 1
            totals[transport] += 1
    for key in ("other", "none", "arp"):
        del totals[key]
    return totals


Cells = dict[tuple[str, str], tuple[int, int]]  # (network, transport) -> (packets, bytes on the wire)


def tshark_cells(path: Path) -> Cells:
    """tshark's packets and bytes per network and transport."""
    return cells_of(tshark_frames(path))


def cells_of(frames: list[Frame]) -> Cells:
    """Packets and bytes per network and transport of frames read by ``tshark_frames``."""
    cells: Counter[tuple[str, str, str]] = Counter()
    for length, network, transport in frames:
        cells[network, transport, "packets"] += 1
        cells[network, transport, "bytes"] += length
    return {(n, t): (cells[n, t, "packets"], cells[n, t, "bytes"]) for n, t, kind in cells if kind == "packets"}


def pktagent_cells(interface: dict[str, Any]) -> Cells:
    """The same from one interface of ``pktagent replay --format json`` (all directions together)."""
    cells: Counter[tuple[str, str, str]] = Counter()
    for cell in interface["traffic"]:
        cells[cell["network"], cell["transport"], "packets"] += int(cell["packets"])
        cells[cell["network"], cell["transport"], "bytes"] += int(cell["bytes"])
    return {(n, t): (cells[n, t, "packets"], cells[n, t, "bytes"]) for n, t, kind in cells if kind == "packets"}


def pktagent_totals(interface: dict[str, Any]) -> Counter[str]:
    """The same figures from one interface of ``pktagent replay --format json``."""
    totals: Counter[str] = Counter(frames=interface["packets_captured"], bytes=int(interface["traffic_bytes"]))
    for cell in interface["traffic"]:
        packets = int(cell["packets"])
        if cell["network"] in ("ipv4", "ipv6"):
            totals[cell["network"]] += packets
            if cell["transport"] != "other":
                totals[cell["transport"]] += packets
    return totals


def replay_json(path: Path) -> dict[str, Any]:
    """The figures of one file from ``pktagent replay FILE --format json``, the command line's path.

    One file per replay: files replayed together share the dedup window, so a frame at the
    end of one file can count as a duplicate of a frame in the next.
    """
    done = subprocess.run([sys.executable, "-m", "agent", "replay", str(path), "--format", "json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    interface: dict[str, Any] = json.loads(done.stdout)["interfaces"][path.name]
    return interface


def both(paths: list[Path], read: Callable[[Path], T]) -> tuple[dict[str, dict[str, Any]], dict[str, T]]:
    """pktagent's JSON and tshark's figures (``read``) for each file, by file name."""
    with ThreadPoolExecutor(4) as pool:
        ours = pool.map(replay_json, paths)
        theirs = pool.map(read, paths)
        names = [p.name for p in paths]
        return dict(zip(names, ours)), dict(zip(names, theirs))


def expected(k: Known) -> Counter[str]:
    """The figures of a capture built here, from the labels its frames were built with."""
    totals: Counter[str] = Counter(frames=k.frames, bytes=k.wire_bytes, ipv4=k.count(network="ipv4"), ipv6=k.count(network="ipv6"))
    for transport in ("tcp", "udp", "icmp", "icmpv6"):
        totals[transport] = k.count(transport=transport)
    return +totals


def malformed() -> tuple[Known, Counter[str], dict[str, int]]:
    """Frames whose transport (or IP) header is cut short or malformed, with tshark's expected figures and pktagent's decode errors.

    The file's snaplen is 48 bytes, so a frame of more is cut there (caplen < frame.len).
    """
    k = Known(Capture(snaplen=48))
    e4, e6 = eth(ETH_IPV4), eth(ETH_IPV6)
    # TCP header cut after 14 of its 20 bytes: pktagent "other" (tcp/truncated), tshark TCP.
    k.add(e4 + ipv4(TCP, L4, R4, tcp(40000, 443, SYN), ident=1), ("ipv4", "other", "outbound"), TCP)
    # A small UDP datagram fits whole: both say UDP.
    k.add(e4 + ipv4(UDP, L4, R4, udp(5000, 53, b"q"), ident=2), ("ipv4", "udp", "outbound"), UDP)
    # UDP length field below the header size: pktagent "other" (udp/bad_length), tshark UDP.
    k.add(e4 + ipv4(UDP, R4, L4, udp(53, 5000, b"r", length=4), ident=3), ("ipv4", "other", "inbound"), UDP)
    # IPv4 says 22 bytes: 2 bytes of ICMP, less than its 4-byte header: pktagent "other" (icmp/truncated), tshark ICMP.
    k.add(e4 + ipv4(ICMP, R4, L4, struct.pack("!BB", 0, 0), ident=4), ("ipv4", "other", "inbound"), ICMP)
    # An IPv6 header cut after 34 of its 40 bytes: pktagent "other" (ipv6/truncated); tshark
    # still reads the next-header field at byte 6 and says UDP.
    k.add(e6 + ipv6(UDP, R6, L6, udp(123, 123, bytes(48))), ("ipv6", "other", "inbound"), UDP)
    tshark_expected = Counter(frames=5, bytes=k.wire_bytes, ipv4=4, ipv6=1, tcp=1, udp=3, icmp=1)
    errors = {"tcp/truncated": 1, "udp/bad_length": 1, "icmp/truncated": 1, "ipv6/truncated": 1}
    return k, tshark_expected, errors


@pytest.fixture(scope="module")
def tshark() -> str:
    return need_tool("tshark")


def test_built_captures_agree_with_tshark_and_the_known_answers(tshark: str, tmp_path: Path) -> None:
    whole, cut = mixed(), mixed(snaplen=128)
    assert any(p.wire_len > len(p.frame) for p in cut.capture.packets)
    files = {
        "mixed.pcap": (whole, whole.capture.write(tmp_path / "mixed.pcap")),
        "mixed-snaplen128.pcap": (cut, cut.capture.write(tmp_path / "mixed-snaplen128.pcap")),
        "mixed.pcapng": (whole, whole.capture.write(tmp_path / "mixed.pcapng", pcapng=True)),
    }
    ours, theirs = both([path for _, path in files.values()], tshark_totals)
    for name, (k, _) in files.items():
        assert ours[name]["packets_duplicate"] == 0
        assert ours[name]["decode_errors"] == {}
        assert pktagent_totals(ours[name]) == expected(k), name
        assert theirs[name] == expected(k), name


def test_malformed_transport_headers_are_other_to_pktagent(tshark: str, tmp_path: Path) -> None:
    k, tshark_expected, errors = malformed()
    path = k.capture.write(tmp_path / "malformed.pcap")
    ours = replay_json(path)
    assert tshark_totals(path) == tshark_expected
    assert pktagent_totals(ours) == expected(k)
    assert ours["decode_errors"] == errors
    # The whole difference is the frames pktagent counts as "other" with a decode error.
    other = k.count(transport="other")
    assert other == sum(errors.values()) == sum(tshark_expected[t] - expected(k)[t] for t in ("tcp", "udp", "icmp", "icmpv6"))


def test_real_captures_agree_with_tshark(tshark: str, corpus: Path) -> None:
    paths = [corpus / name for name in CORPUS_FILES]
    ours, theirs = both(paths, tshark_totals)
    differ = {}
    for name in CORPUS_FILES:
        assert ours[name]["packets_duplicate"] == 0, name
        assert ours[name]["decode_errors"] == {}, name
        if pktagent_totals(ours[name]) != theirs[name]:
            differ[name] = (dict(pktagent_totals(ours[name])), dict(theirs[name]))
    assert differ == {}
    everything = sum(theirs.values(), Counter())
    assert all(everything[key] > 0 for key in KEYS), everything
