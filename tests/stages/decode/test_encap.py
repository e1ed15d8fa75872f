"""Encapsulations walked to the IP inside: PPPoE, PPP, Cisco HDLC, MPLS, PPI; their errors; frames cut at every byte."""

from __future__ import annotations

import struct

import encapsulated
import pcapgen as g
import pytest
from batches import decoded, raw

from agent.base import labels
from agent.config import Config
from agent.runtime.pipeline import Pipeline
from agent.stages.decode import decode, supported
from agent.stages.decode.encap import LABELS_PER_STEP, SHALLOW_LABELS

L4, R4, L6, R6 = "192.168.1.10", "198.51.100.7", "fd00::10", "2001:db8::5"
UDP_V4 = g.ipv4(g.UDP, L4, R4, g.udp(40000, 53, b"q" * 12))
TCP_V4 = g.ipv4(g.TCP, R4, L4, g.tcp(443, 40001, g.SYN))
UDP_V6 = g.ipv6(g.UDP, L6, R6, g.udp(5353, 123, bytes(16)))
ICMP_V6 = g.ipv6(g.ICMPV6, L6, R6, g.icmp_echo(1, 1, b"ping", v6=True))
SESSION = g.eth(g.ETH_PPPOE_SESSION)
LCP = bytes.fromhex("0101000a0506a1b2c3d4")


def errors(b: object) -> list[tuple[str, str] | None]:
    return [labels.DECODE_ERRORS[e - 1] if e else None for e in b.error.tolist()]  # type: ignore[attr-defined]


def names(b: object) -> list[tuple[str, str]]:
    return [(labels.NETWORKS[n], labels.TRANSPORTS[t]) for n, t in zip(b.network.tolist(), b.transport.tolist())]  # type: ignore[attr-defined]


def test_the_new_link_types_are_supported() -> None:
    assert [supported(t) for t in (9, 50, 51, 104, 192)] == [True] * 5


def test_pppoe_untagged_under_8021q_and_under_qinq_to_the_ip_inside() -> None:
    b = decoded(
        [
            SESSION + g.pppoe_session(g.ppp(g.PPP_IPV4, UDP_V4)),
            g.eth_vlan([7], g.ETH_PPPOE_SESSION) + g.pppoe_session(g.ppp(g.PPP_IPV4, TCP_V4)),
            g.eth_vlan([100, 7], g.ETH_PPPOE_SESSION) + g.pppoe_session(g.ppp(g.PPP_IPV6, UDP_V6)),
            SESSION + g.pppoe_session(g.ppp(g.PPP_IPV4, UDP_V4, compressed=True)),  # a one-byte protocol field
        ]
    )
    assert names(b) == [("ipv4", "udp"), ("ipv4", "tcp"), ("ipv6", "udp"), ("ipv4", "udp")]
    assert errors(b) == [None] * 4
    assert (b.l3 - b.raw.offset).tolist() == [14 + 8, 18 + 8, 22 + 8, 14 + 7]
    # The inner addresses and ports: what classification, flows, devices and dedup read.
    assert b.src_lo.tolist()[:2] == [0xFFFF_C0A8_010A, 0xFFFF_C633_6407]
    assert (b.src_hi[2], b.src_lo[2]) == (0xFD00_0000_0000_0000, 0x10)
    assert (b.sport.tolist(), b.dport.tolist()) == ([40000, 443, 5353, 40000], [53, 40001, 123, 53])
    assert b.l3len.tolist() == [len(UDP_V4), len(TCP_V4), len(UDP_V6), len(UDP_V4)]


def test_pppoe_discovery_and_ppp_control_protocols_are_not_ip_and_not_errors() -> None:
    b = decoded(
        [
            g.pad(g.eth(g.ETH_PPPOE_DISCOVERY) + g.pppoe_discovery()),
            g.pad(SESSION + g.pppoe_session(g.ppp(g.PPP_LCP, LCP))),
            g.pad(SESSION + g.pppoe_session(g.ppp(g.PPP_IPCP, LCP))),
            g.pad(SESSION + g.pppoe_session(g.ppp(g.PPP_IPV6CP, LCP))),
            g.pad(SESSION + g.pppoe_session(g.ppp(0x002D, bytes(8)))),  # Van Jacobson compressed TCP/IP
        ]
    )
    assert names(b) == [("other", "none")] * 5
    assert errors(b) == [None] * 5
    assert b.l3.tolist() == [-1] * 5


# Stacks read one label at a time, then in steps of LABELS_PER_STEP: depths either side of each boundary.
DEPTHS = [1, 2, 3, 4, SHALLOW_LABELS + 1, SHALLOW_LABELS + LABELS_PER_STEP - 1, SHALLOW_LABELS + LABELS_PER_STEP, SHALLOW_LABELS + LABELS_PER_STEP + 1]


@pytest.mark.parametrize("depth", [*DEPTHS, SHALLOW_LABELS + 3 * LABELS_PER_STEP + 2, 300])
def test_mpls_stacks_of_any_depth_unicast_and_multicast(depth: int) -> None:
    stack = list(range(16, 16 + depth))
    b = decoded([g.eth(g.ETH_MPLS) + g.mpls(stack, UDP_V4), g.eth(g.ETH_MPLS_MULTICAST) + g.mpls(stack, ICMP_V6)])
    assert names(b) == [("ipv4", "udp"), ("ipv6", "icmpv6")]
    assert errors(b) == [None, None]
    assert (b.l3 - b.raw.offset).tolist() == [14 + 4 * depth] * 2
    assert bytes(b.window[0, : len(UDP_V4)]) == UDP_V4  # the window starts at the IP header, however deep
    assert b.dport[0] == 53


def test_each_window_starts_at_its_own_ip_header_in_a_mixed_batch() -> None:
    """Dedup and the transport decoder read each packet from ``window``: plain, PPPoE and deep MPLS rows side by side."""
    packets = [UDP_V4, UDP_V6, TCP_V4, ICMP_V6, UDP_V4]
    frames = [
        g.eth(g.ETH_IPV4) + packets[0],
        g.eth_vlan([100, 7], g.ETH_PPPOE_SESSION) + g.pppoe_session(g.ppp(g.PPP_IPV6, packets[1])),
        g.eth(g.ETH_MPLS) + g.mpls(list(range(20)), packets[2]),  # the IP header starts past the gathered head
        g.eth(g.ETH_MPLS_MULTICAST) + g.mpls([1, 2], packets[3]),
        SESSION + g.pppoe_session(g.ppp(g.PPP_IPV4, packets[4], compressed=True)),
    ]
    b = decoded(frames)
    assert (b.l3 - b.raw.offset).tolist() == [14, 30, 94, 22, 21]
    assert [bytes(row[: len(p)]) for row, p in zip(b.window, packets)] == packets
    assert names(b) == [("ipv4", "udp"), ("ipv6", "udp"), ("ipv4", "tcp"), ("ipv6", "icmpv6"), ("ipv4", "udp")]


def test_mpls_payloads_that_are_not_ip_are_other_with_a_reason() -> None:
    b = decoded(
        [
            g.eth(g.ETH_MPLS) + g.mpls([30], bytes(4) + g.eth(g.ETH_IPV4) + UDP_V4),  # Ethernet pseudowire, control word
            g.eth(g.ETH_MPLS) + g.mpls([30, 13], b"\x10\x00\x00\x21" + UDP_V4),  # G-ACh after the GAL label
            g.eth(g.ETH_MPLS) + g.mpls([30], b""),  # nothing after the bottom of the stack
            g.eth(g.ETH_MPLS) + struct.pack("!II", 30 << 12 | 64, 31 << 12 | 64),  # no bottom-of-stack label before the end
            g.eth(g.ETH_MPLS) + struct.pack("!I", 30 << 12 | 64) * 300 + b"\x45",  # nor in 300 labels
        ]
    )
    assert names(b) == [("other", "none")] * 5
    assert errors(b) == [("mpls", "payload_not_ip"), ("mpls", "payload_not_ip")] + [("mpls", "truncated")] * 3


def test_ppp_link_types_with_and_without_address_control_compressed_and_cisco_inside() -> None:
    frames = [
        g.ppp_hdlc(g.PPP_IPV4, UDP_V4),
        g.ppp_hdlc(g.PPP_IPV4, TCP_V4, address_control=False),
        g.ppp_hdlc(g.PPP_IPV6, UDP_V6, compressed=True),
        g.ppp_hdlc(g.PPP_IPV6, UDP_V6, address_control=False, compressed=True),
        g.chdlc(g.ETH_IPV4, TCP_V4),
        g.chdlc(g.ETH_IPV6, ICMP_V6, address=0x8F),
        g.ppp_hdlc(g.PPP_MPLS, g.mpls([1, 2], UDP_V4)),
        g.ppp_hdlc(g.PPP_MPLS_MULTICAST, g.mpls([1], UDP_V6)),
        g.ppp_hdlc(g.PPP_LCP, LCP),
    ]
    for linktype in (9, 50):
        b = decoded(frames, linktype=linktype)
        expected = [("ipv4", "udp"), ("ipv4", "tcp"), ("ipv6", "udp"), ("ipv6", "udp"), ("ipv4", "tcp"), ("ipv6", "icmpv6")]
        expected += [("ipv4", "udp"), ("ipv6", "udp"), ("other", "none")]
        assert names(b) == expected
        assert errors(b) == [None] * 9
        assert (b.l3 - b.raw.offset).tolist()[:8] == [4, 2, 3, 1, 4, 4, 12, 8]


def test_ppp_ether_c_hdlc_and_cooked_headers() -> None:
    ether = decoded([g.pppoe_session(g.ppp(g.PPP_IPV4, UDP_V4)), g.pppoe_session(g.ppp(g.PPP_LCP, LCP))], linktype=51)
    assert (names(ether), (ether.l3 - ether.raw.offset).tolist()[0]) == ([("ipv4", "udp"), ("other", "none")], 8)
    hdlc = decoded([g.chdlc(g.ETH_IPV4, TCP_V4), g.chdlc(g.ETH_MPLS, g.mpls([3], UDP_V6)), g.chdlc(0x8035, bytes(14), address=0x8F)], linktype=104)
    assert (names(hdlc), errors(hdlc)) == ([("ipv4", "tcp"), ("ipv6", "udp"), ("other", "none")], [None] * 3)
    for linktype, head in ((113, g.sll), (276, g.sll2)):
        b = decoded(
            [
                head(g.ETH_PPPOE_SESSION) + g.pppoe_session(g.ppp(g.PPP_IPV6, UDP_V6)),
                head(g.ETH_MPLS) + g.mpls([5, 6], TCP_V4),
                head(0x0007, hatype=512) + g.ppp_hdlc(g.PPP_IPV4, UDP_V4),  # PPP in HDLC-like framing
                head(0x0004) + bytes(20),  # 802.2 LLC: not decoded
            ],
            linktype=linktype,
        )
        assert names(b) == [("ipv6", "udp"), ("ipv4", "tcp"), ("ipv4", "udp"), ("other", "none")], linktype
        assert errors(b) == [None] * 4


def test_ppi_wraps_any_supported_link_type() -> None:
    b = decoded(
        [
            g.ppi(1, g.eth(g.ETH_IPV4) + UDP_V4),
            g.ppi(1, g.eth_vlan([100, 7], g.ETH_PPPOE_SESSION) + g.pppoe_session(g.ppp(g.PPP_IPV6, UDP_V6)), fields=bytes(12)),
            g.ppi(104, g.chdlc(g.ETH_MPLS, g.mpls([1, 2, 3], TCP_V4))),
            g.ppi(12, ICMP_V6),
        ],
        linktype=192,
    )
    assert names(b) == [("ipv4", "udp"), ("ipv6", "udp"), ("ipv4", "tcp"), ("ipv6", "icmpv6")]
    assert errors(b) == [None] * 4
    assert (b.l3 - b.raw.offset).tolist() == [8 + 14, 20 + 30, 8 + 16, 8]


def test_malformed_headers_are_counted_and_leave_no_network() -> None:
    v4 = g.ppp(g.PPP_IPV4, UDP_V4)
    b = decoded([SESSION + g.pppoe_session(v4, version_type=0x12), SESSION + g.pppoe_session(v4, code=0x07), SESSION + g.pppoe_session(v4, length=len(v4) + 1)])
    assert errors(b) == [("pppoe", "bad_header"), ("pppoe", "bad_header"), ("pppoe", "bad_length")]
    assert names(b) == [("other", "none")] * 3
    # A PPPoE length within the frame but short of the IP packet is not checked: the IP header tells its length.
    assert names(decoded([SESSION + g.pppoe_session(v4, length=10)])) == [("ipv4", "udp")]
    frame = g.eth(g.ETH_IPV4) + UDP_V4
    p = decoded(
        [
            g.ppi(1, frame, version=1),
            struct.pack("<BBHI", 0, 0, 4, 1) + frame,  # a header length below the header's own 8 bytes
            struct.pack("<BBHI", 0, 0, 200, 1) + frame,  # a header length past the frame
            g.ppi(192, g.ppi(1, frame)),  # PPI inside PPI
            g.ppi(105, bytes(40)),  # 802.11: not a link type pktagent decodes
        ],
        linktype=192,
    )
    assert errors(p) == [("ppi", "bad_header"), ("ppi", "bad_header"), ("ppi", "truncated"), ("ppi", "unsupported_link"), ("ppi", "unsupported_link")]
    assert names(p) == [("other", "none")] * 5


# Frames and where each layer's header ends: a frame cut before that end fails at that layer with
# "truncated". An MPLS stack needs one byte after its bottom label (the payload's first nibble).
CUTS = [
    (
        1,
        g.eth_vlan([100, 7], g.ETH_PPPOE_SESSION) + g.pppoe_session(g.ppp(g.PPP_IPV6, UDP_V6)),
        [("link", 14), ("vlan", 18), ("vlan", 22), ("pppoe", 28), ("ppp", 30), ("ipv6", 70), ("udp", 78)],
    ),
    (1, g.eth(g.ETH_MPLS) + g.mpls([1, 2, 3, 4], TCP_V4), [("link", 14), ("mpls", 31), ("ipv4", 50), ("tcp", 70)]),
    (1, g.eth(g.ETH_MPLS) + g.mpls(list(range(20)), UDP_V4), [("link", 14), ("mpls", 95), ("ipv4", 114), ("udp", 122)]),
    (9, g.ppp_hdlc(g.PPP_IPV4, TCP_V4), [("link", 2), ("ppp", 4), ("ipv4", 24), ("tcp", 44)]),
    (9, g.ppp_hdlc(g.PPP_IPV4, UDP_V4, address_control=False, compressed=True), [("link", 1), ("ipv4", 21), ("udp", 29)]),
    (50, g.chdlc(g.ETH_IPV6, UDP_V6), [("link", 4), ("ipv6", 44), ("udp", 52)]),
    (51, g.pppoe_session(g.ppp(g.PPP_IPV4, UDP_V4)), [("pppoe", 6), ("ppp", 8), ("ipv4", 28), ("udp", 36)]),
    (104, g.chdlc(g.ETH_MPLS, g.mpls([1, 2], UDP_V4)), [("link", 4), ("mpls", 13), ("ipv4", 32), ("udp", 40)]),
    (
        192,
        g.ppi(1, g.eth(g.ETH_PPPOE_SESSION) + g.pppoe_session(g.ppp(g.PPP_IPV4, TCP_V4))),
        [("ppi", 8), ("link", 22), ("pppoe", 28), ("ppp", 30), ("ipv4", 50), ("tcp", 70)],
    ),
    (113, g.sll(g.ETH_MPLS_MULTICAST) + g.mpls([1, 2, 3, 4], ICMP_V6), [("link", 16), ("mpls", 33), ("ipv6", 72), ("icmpv6", 76)]),
    (276, g.sll2(0x0007) + g.ppp_hdlc(g.PPP_IPV6, UDP_V6), [("link", 22), ("ppp", 24), ("ipv6", 64), ("udp", 72)]),
]


@pytest.mark.parametrize(
    ("linktype", "frame", "ends"),
    CUTS,
    ids=[
        "ethernet-qinq-pppoe-ipv6-udp",
        "ethernet-mpls4-ipv4-tcp",
        "ethernet-mpls20-ipv4-udp",
        "ppp-ipv4-tcp",
        "ppp-compressed-ipv4-udp",
        "ppp_serial-cisco-ipv6-udp",
        "ppp_ether-ipv4-udp",
        "c_hdlc-mpls2-ipv4-udp",
        "ppi-ethernet-pppoe-ipv4-tcp",
        "sll-mpls4-ipv6-icmpv6",
        "sll2-ppp-ipv6-udp",
    ],
)
def test_every_frame_cut_at_every_byte(linktype: int, frame: bytes, ends: list[tuple[str, int]]) -> None:
    """The frame cut after each of its bytes (the wire length still the whole frame's): the error is the first layer whose header the cut falls in."""
    cuts = [frame[:k] for k in range(len(frame) + 1)]
    b = decode(raw(cuts, linktype=linktype, wire=[len(frame)] * len(cuts)))
    expected = [next(((layer, "truncated") for layer, end in ends if k < end), None) for k in range(len(frame) + 1)]
    assert errors(b) == expected
    ip = ends[-2][0]
    inside = [k >= ends[-3][1] for k in range(len(frame) + 1)]  # the IP header's first byte is captured
    assert [labels.NETWORKS[n] for n in b.network.tolist()] == [ip if i else "other" for i in inside]
    assert labels.TRANSPORTS[b.transport[-1]] == ends[-1][0]


def test_a_packet_seen_inside_pppoe_and_on_plain_ethernet_counts_once_and_feeds_flows_devices_and_domains() -> None:
    """One side of a router speaks PPPoE under QinQ, the other plain Ethernet: dedup matches the inner IP
    packet; direction, flows, the device named by DHCP on the LAN and the remote domain learned from
    DNS inside PPPoE all read the inner addresses."""
    server = "93.184.216.34"
    dns = g.dns_response("www.example.com", [("www.example.com", "A", server)])
    syn = g.ipv4(g.TCP, L4, server, g.tcp(40000, 443, g.SYN))
    synack = g.ipv4(g.TCP, server, L4, g.tcp(443, 40000, g.SYN | g.ACK))
    wan = g.eth_vlan([100, 7], g.ETH_PPPOE_SESSION)
    frames = [
        g.eth(g.ETH_IPV4) + g.ipv4(g.UDP, "192.168.1.1", L4, g.udp(67, 68, g.dhcp(g.MAC_A, 5, your_ip=L4, hostname="laptop"))),
        wan + g.pppoe_session(g.ppp(g.PPP_IPV4, g.ipv4(g.UDP, "192.168.1.1", L4, g.udp(53, 40001, dns)))),
        wan + g.pppoe_session(g.ppp(g.PPP_IPV4, syn)),
        wan + g.pppoe_session(g.ppp(g.PPP_IPV4, synack)),
        g.eth(g.ETH_IPV4) + g.ipv4(g.TCP, server, L4, g.tcp(443, 40000, g.SYN | g.ACK), ttl=63),  # the same packet, routed on
    ]
    p = Pipeline(Config(), ["wan0"])
    p.process(raw(frames, ts=[1_000_000, 1_000_100, 1_000_200, 1_000_300, 1_000_400]))
    c = p.counters
    assert (int(c.processed[0]), int(c.duplicate[0])) == (4, 1)
    cells = c.traffic_packets.reshape(1, 4, 6, 5)[0]
    seen = {(labels.NETWORKS[n], labels.TRANSPORTS[t], labels.DIRECTIONS[d]): int(cells[n, t, d]) for n, t, d in zip(*cells.nonzero())}
    assert seen == {("ipv4", "udp", "internal"): 2, ("ipv4", "tcp", "outbound"): 1, ("ipv4", "tcp", "inbound"): 1}
    assert p.flows.started.tolist() == [1, 2, 0, 0, 0]  # tcp, udp (DHCP and DNS)
    fields = p.snapshot_fields()
    devices = {s.name: (s.tx_bytes, s.rx_bytes) for s in fields["device_series"]}
    assert devices["laptop"] == (len(frames[2]), len(frames[0]) + len(frames[1]) + len(frames[3]))
    domains = {s.name: (s.tx_bytes, s.rx_bytes) for s in fields["domain_series"]}
    assert domains["example.com"] == (len(frames[2]), len(frames[3]))
    assert int(c.decode_errors[0, 1:].sum()) == 0  # column 0 counts the packets without an error


def test_a_batch_of_empty_frames_on_each_new_link_type() -> None:
    """A batch whose buffer is empty: every read of a byte comes from nowhere (the fuzzer found this raising)."""
    expected = {9: ("link", "truncated"), 50: ("link", "truncated"), 51: ("pppoe", "truncated"), 104: ("link", "truncated"), 192: ("ppi", "truncated")}
    for linktype, error in expected.items():
        b = decoded([b"", b""], linktype=linktype)
        assert errors(b) == [error, error], linktype
        assert names(b) == [("other", "none")] * 2


def test_every_built_frame_cut_at_every_byte_is_its_own_cell_or_a_truncation() -> None:
    """Every frame of the captures compared with tshark (tests/encapsulated.py), cut after each of its bytes: a cut
    frame counts in the whole frame's cell with no error, or carries a ``truncated`` error (or the whole frame's own)."""
    checked = 0
    for name, k in encapsulated.captures():
        for p, (network, transport, _) in zip(k.capture.packets, k.cells):
            cuts = [p.frame[:n] for n in range(len(p.frame) + 1)]
            b = decode(raw(cuts, linktype=k.capture.linktype, wire=[p.wire_len] * len(cuts)))
            whole = errors(b)[-1]
            assert names(b)[-1] == (network, transport), name
            for n, (cell, error) in enumerate(zip(names(b), errors(b))):
                assert (error is None and cell == (network, transport)) or (error is not None and (error[1] == "truncated" or error == whole)), (
                    name,
                    n,
                    cell,
                    error,
                )
            checked += len(cuts)
    assert checked > 3000  # 65 frames and their cuts
