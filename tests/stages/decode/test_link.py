"""Link layers: Ethernet with VLAN/QinQ tags, Linux cooked v1/v2, raw IP, NULL/LOOP (the encapsulating ones: test_encap)."""

from __future__ import annotations

import dataclasses
import struct

import pcapgen as g
from batches import decoded, raw

from agent.base import labels
from agent.stages.decode import decode, read_heads, supported
from agent.stages.decode.link import HEAD

TCP_V4 = g.ipv4(g.TCP, "192.168.1.2", "8.8.8.8", g.tcp(40000, 443, g.SYN))
UDP_V6 = g.ipv6(g.UDP, "fd00::2", "2001:db8::1", g.udp(5353, 53, b"q"))


def test_ethernet_ipv4_ipv6_arp_and_other() -> None:
    b = decoded(
        [
            g.eth(g.ETH_IPV4) + TCP_V4,
            g.eth(g.ETH_IPV6) + UDP_V6,
            g.pad(g.eth(g.ETH_ARP) + g.arp(1, g.MAC_A, "192.168.1.2", "00:00:00:00:00:00", "192.168.1.1")),
            g.pad(g.eth(0x88CC) + b"lldp"),  # LLDP: a protocol pktagent does not decode
            g.pad(g.eth(100) + b"\xaa\xaa\x03"),  # 802.3 length field: an LLC frame
        ]
    )
    assert b.network.tolist() == [labels.IPV4, labels.IPV6, labels.ARP, labels.OTHER_NET, labels.OTHER_NET]
    assert b.transport.tolist() == [labels.TCP, labels.UDP, labels.NO_TRANSPORT, labels.NO_TRANSPORT, labels.NO_TRANSPORT]
    assert b.error.tolist() == [0, 0, 0, 0, 0]
    assert b.l3.tolist() == [14, 14 + len(g.eth(0) + TCP_V4), 14 + 2 * 14 + len(TCP_V4) + len(UDP_V6), -1, -1]


def test_vlan_and_qinq_tags_are_walked() -> None:
    b = decoded(
        [
            g.eth_vlan([10], g.ETH_IPV4) + TCP_V4,
            g.eth_vlan([100, 10], g.ETH_IPV6) + UDP_V6,  # 802.1ad outer tag, 802.1Q inner
            g.eth_vlan([1, 2, 3], g.ETH_IPV4, tpids=[0x9100, 0x8100, 0x8100]) + TCP_V4,
        ]
    )
    assert b.network.tolist() == [labels.IPV4, labels.IPV6, labels.IPV4]
    assert b.transport.tolist() == [labels.TCP, labels.UDP, labels.TCP]
    assert (b.l3 - b.raw.offset).tolist() == [18, 22, 26]
    assert b.sport.tolist() == [40000, 5353, 40000]


def test_each_window_starts_at_its_own_network_header() -> None:
    """Dedup and the transport decoder read each frame's network header from ``window``: in a batch
    of frames with 0 to 4 tags (where Ethernet's network header can start), each row starts at its
    own frame's network header."""
    frames = [g.eth_vlan([7] * k, g.ETH_IPV4) + TCP_V4 if k else g.eth(g.ETH_IPV4) + TCP_V4 for k in (0, 1, 4, 0, 2, 3, 0)]
    b = decoded(frames)
    assert (b.l3 - b.raw.offset).tolist() == [14, 18, 30, 14, 22, 26, 14]
    for row, frame, l3 in zip(b.window, frames, (b.l3 - b.raw.offset).tolist()):
        assert bytes(row[: len(frame) - l3]) == frame[l3:]
    uniform = decoded([g.eth_vlan([7], g.ETH_IPV4) + TCP_V4] * 3)
    assert [bytes(row[: len(TCP_V4)]) for row in uniform.window] == [TCP_V4] * 3


def test_windows_move_into_a_decodes_own_heads_but_never_into_a_readers() -> None:
    """The window is a view of the heads at the offset most rows share; the other rows' windows are
    moved there. Heads a reader process gathered belong to the batch and come out as they went in."""
    frames = [g.eth_vlan([7] * k, g.ETH_IPV4) + TCP_V4 if k else g.eth(g.ETH_IPV4) + TCP_V4 for k in (2, 0, 0, 1, 0)]
    for given in (False, True):
        r = raw(frames)
        if given:
            r = dataclasses.replace(r, head=read_heads(r))
            before = r.head.copy()  # type: ignore[union-attr]
        b = decode(r)
        assert b.window.base is not None and b.window.strides[0] == HEAD  # a view of one row per frame
        for row, frame, l3 in zip(b.window, frames, (b.l3 - b.raw.offset).tolist()):
            assert bytes(row[: len(frame) - l3]) == frame[l3:]
        if given:
            assert (r.head == before).all()


def test_vlan_tag_cut_short_and_too_many_tags() -> None:
    five_tags = g.eth_vlan([1, 2, 3, 4, 5], g.ETH_IPV4) + TCP_V4
    b = decoded([g.eth(g.ETH_VLAN) + b"\x00", five_tags])
    assert [labels.DECODE_ERRORS[e - 1] for e in b.error.tolist()] == [("vlan", "truncated"), ("vlan", "too_many_tags")]
    assert b.network.tolist() == [labels.OTHER_NET, labels.OTHER_NET]


def test_frame_shorter_than_ethernet_header() -> None:
    b = decoded([b"\x01\x02\x03"])
    assert labels.DECODE_ERRORS[b.error[0] - 1] == ("link", "truncated")
    assert b.network.tolist() == [labels.OTHER_NET]


def test_linux_cooked_v1_and_v2() -> None:
    sll = struct.pack("!HHH8sH", 0, 1, 6, bytes(8), g.ETH_IPV4)
    sll2 = struct.pack("!HHIHBB8s", g.ETH_IPV6, 0, 2, 1, 0, 6, bytes(8))
    v1 = decoded([sll + TCP_V4], linktype=113)
    v2 = decoded([sll2 + UDP_V6], linktype=276)
    assert (v1.network[0], v1.transport[0], v1.dport[0]) == (labels.IPV4, labels.TCP, 443)
    assert (v2.network[0], v2.transport[0], v2.dport[0]) == (labels.IPV6, labels.UDP, 53)


def test_raw_ip_links_by_version_nibble() -> None:
    for linktype in (12, 101):
        b = decoded([TCP_V4, UDP_V6, b"\x00\x01"], linktype=linktype)
        assert b.network.tolist() == [labels.IPV4, labels.IPV6, labels.OTHER_NET]
    assert decoded([TCP_V4], linktype=228).transport.tolist() == [labels.TCP]
    assert decoded([UDP_V6], linktype=229).transport.tolist() == [labels.UDP]


def test_null_and_loop_address_families() -> None:
    little = decoded([struct.pack("<I", 2) + TCP_V4, struct.pack("<I", 30) + UDP_V6, struct.pack("<I", 7) + TCP_V4], linktype=0)
    assert little.network.tolist() == [labels.IPV4, labels.IPV6, labels.OTHER_NET]
    big = decoded([struct.pack(">I", 2) + TCP_V4, struct.pack(">I", 24) + UDP_V6], linktype=0)
    assert big.network.tolist() == [labels.IPV4, labels.IPV6]
    loop = decoded([struct.pack(">I", 2) + TCP_V4, struct.pack(">I", 28) + UDP_V6], linktype=108)
    assert loop.network.tolist() == [labels.IPV4, labels.IPV6]


def test_supported_link_types() -> None:
    assert [supported(t) for t in (0, 1, 9, 12, 50, 51, 101, 104, 108, 113, 192, 228, 229, 276)] == [True] * 14
    assert [supported(t) for t in (105, 107, 127)] == [False] * 3  # 802.11, Frame Relay, radiotap
