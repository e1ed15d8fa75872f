"""PPPoE, PPP, Cisco HDLC, MPLS and PPI against tshark: captures built here with known answers, and every
capture of tcpdump's corpus that holds one of them, file by file, in the definitions of test_tshark.

Per file, pktagent's packets and bytes on the wire per network and transport equal tshark's. Where
a corpus file is malformed on purpose or repeats its frames, the test says so exactly: the decode
errors and duplicates pktagent counts, and, frame by frame, that every frame where the two differ is
one pktagent counts under transport ``other`` with a decode error of its IP or transport header.
"""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

import encapsulated
import pcapy
import pytest
from conftest import need_tool
from known import Known
from pcapgen import libpcap_records
from test_tshark import Cells, both, cells_of, pktagent_cells, tshark_cells, tshark_frames

from agent.base import labels
from agent.capture.memory import MemorySource
from agent.stages.decode import decode

# Every capture of tcpdump's corpus holding PPPoE, PPP, Cisco HDLC, MPLS or PPI, with the decode
# errors and duplicates pktagent counts in it (test_the_list_holds_every_such_capture finds them).
CORPUS: dict[str, tuple[dict[str, int], int]] = {
    "HDLC.pcap": ({}, 0),  # C_HDLC: IPv4 ICMP, SLARP, CDP
    "ISIS_p2p_adjacency.pcap": ({}, 0),  # C_HDLC: IS-IS (OSI)
    "chdlc-slarp.pcap": ({}, 0),
    "chdlc-slarp-short.pcap": ({}, 0),
    "esis_opt_prot-oobr.pcap": ({}, 0),
    "hdlc_slarp.pcapng": ({}, 0),
    "hoobr_chdlc_print.pcap": ({}, 24),  # 26 copies of one 4-byte frame at one timestamp
    "isis-extd-isreach-oobr.pcap": ({}, 0),
    "isis-seg-fault-3.pcapng": ({}, 0),
    "bgp_vpn_attrset.pcap": ({}, 0),  # PPP: IPv4 TCP (BGP)
    "heapoverflow-q933_printq.pcap": ({}, 0),
    "icmp-cksum-oobr-2.pcap": ({"ipv4/bad_total_length": 1}, 0),
    "icmp-cksum-oobr-4.pcapng": ({"ipv4/bad_total_length": 1}, 0),
    "icmp-rfc5837.pcap": ({}, 0),
    "icmp_inft_name_length_zero.pcap": ({"ipv4/bad_total_length": 1}, 0),
    "lspping-fec-ldp.pcap": ({}, 0),  # PPP: MPLS and plain IPv4
    "lspping-fec-rsvp.pcap": ({}, 0),
    "mlppp-oobr.pcap": ({}, 0),
    "mpls-ldp-hello.pcap": ({}, 0),
    "mpls-traceroute.pcap": ({}, 0),
    "ppp-invalid-lengths.pcap": ({}, 0),
    "truncated-aack.pcap": ({}, 0),
    "wb-oobr.pcap": ({"udp/bad_length": 6}, 2),
    "heapoverflow-ppp_hdlc_if_print.pcap": ({}, 0),  # PPP_SERIAL
    "ppp_error_hexdump.pcap": ({}, 0),
    "ppp_ip_udp_dns.pcap": ({}, 0),  # PPP_SERIAL: protocol 0x7e08, not IP to either
    "pppoe.pcap": ({}, 0),  # Ethernet: PPPoE discovery
    "pppoes.pcap": ({}, 0),  # Ethernet: PPPoE session, LCP
    "mpls-label-heapoverflow.pcap": ({"mpls/truncated": 1}, 0),  # Ethernet: a stack with nothing after it
    "tok2str-oobr-2.pcap": ({}, 0),  # Ethernet: MPLS, IPv4 with options
}
ENCAP_LINK_TYPES = {9, 50, 51, 104, 192}  # PPP, PPP_SERIAL, PPP_ETHER, C_HDLC, PPI
ENCAP_ETHERTYPES = {0x8863, 0x8864, 0x8847, 0x8848}  # PPPoE discovery and session, MPLS unicast and multicast
# Decode errors under which pktagent counts an IP packet with transport "other" where tshark names the transport.
IP_OR_TRANSPORT = {"ipv4", "ipv6", "tcp", "udp", "icmp", "icmpv6"}


@pytest.fixture(scope="module")
def tshark() -> str:
    return need_tool("tshark")


def expected_cells(k: Known) -> Cells:
    """Packets and bytes per network and transport of a capture built here, from the cells its frames were built with."""
    cells: Counter[tuple[str, str, str]] = Counter()
    for (network, transport, _), p in zip(k.cells, k.capture.packets):
        cells[network, transport, "packets"] += 1
        cells[network, transport, "bytes"] += p.wire_len
    return {(n, t): (cells[n, t, "packets"], cells[n, t, "bytes"]) for n, t, kind in cells if kind == "packets"}


def test_built_encapsulations_agree_with_tshark_and_the_known_answers(tshark: str, tmp_path: Path) -> None:
    built = dict(encapsulated.captures())
    paths = [k.capture.write(tmp_path / name) for name, k in built.items()]
    ours, theirs = both(paths, tshark_cells)
    for name, k in built.items():
        assert ours[name]["packets_duplicate"] == 0, name
        assert ours[name]["decode_errors"] == encapsulated.ERRORS.get(name, {}), name
        assert pktagent_cells(ours[name]) == expected_cells(k), name
        assert theirs[name] == expected_cells(k), name
    # Every encapsulation put IP inside, and every IP network and transport occurs.
    seen = {cell for k in built.values() for cell in expected_cells(k)}
    assert {("ipv4", t) for t in ("tcp", "udp", "icmp")} | {("ipv6", t) for t in ("tcp", "udp", "icmpv6", "other")} <= seen


def frame_by_frame(path: Path) -> tuple[list[tuple[str, str, str | None]], int]:
    """pktagent's (network, transport, decode error) for each frame of a file, decoded in one batch, and its link type."""
    records = libpcap_records(path)
    linktype = int(pcapy.open_offline(str(path)).datalink())
    raw = MemorySource([(ts, data, wire) for ts, _, wire, data in records], linktype=linktype).read(len(records), 0.0)
    assert raw is not None
    b = decode(raw)
    errors = ["/".join(labels.DECODE_ERRORS[e - 1]) if e else None for e in b.error.tolist()]
    return [(labels.NETWORKS[n], labels.TRANSPORTS[t], e) for n, t, e in zip(b.network.tolist(), b.transport.tolist(), errors)], linktype


def test_real_encapsulations_agree_with_tshark(tshark: str, corpus: Path) -> None:
    paths = [corpus / name for name in CORPUS]
    ours, reference = both(paths, tshark_frames)
    theirs = {name: cells_of(frames) for name, frames in reference.items()}
    differ, unexplained = {}, {}
    for path in paths:
        name = path.name
        errors, duplicates = CORPUS[name]
        assert ours[name]["unsupported_link_packets"] == 0, name
        assert (ours[name]["decode_errors"], ours[name]["packets_duplicate"]) == (errors, duplicates), name
        if not errors and not duplicates and pktagent_cells(ours[name]) != theirs[name]:
            differ[name] = (pktagent_cells(ours[name]), theirs[name])
        # Frame by frame, in one batch: the same cell, or transport "other" for a broken IP or transport header.
        mine, _ = frame_by_frame(path)
        assert len(mine) == len(reference[name]), name
        for i, ((network, transport, error), (_, their_network, their_transport)) in enumerate(zip(mine, reference[name])):
            if (network, transport) == (their_network, their_transport):
                continue
            if not (network == their_network and transport == "other" and error and error.split("/")[0] in IP_OR_TRANSPORT):
                unexplained[name, i] = (network, transport, error, their_network, their_transport)
    assert differ == {}
    assert unexplained == {}
    # What the corpus holds of these, inside: IPv4 over C_HDLC, PPP, MPLS and Ethernet MPLS; nothing is left unsupported.
    total = sum((Counter({cell: v[0] for cell, v in theirs[p.name].items()}) for p in paths), Counter())
    assert total[("ipv4", "icmp")] > 0 and total[("ipv4", "udp")] > 0 and total[("ipv4", "tcp")] > 0


def _announces(linktype: int, frame: bytes) -> bool:
    """Whether a frame of ``linktype`` carries PPPoE or MPLS behind its Ethernet header and tags, or its Linux cooked header."""
    if linktype == 1:
        at = 12
        while len(frame) >= at + 2 and struct.unpack_from("!H", frame, at)[0] in (0x8100, 0x88A8, 0x9100):
            at += 4
    elif linktype in (113, 276):
        at = 14 if linktype == 113 else 0
    else:
        return False
    return len(frame) >= at + 2 and (struct.unpack_from("!H", frame, at)[0] in ENCAP_ETHERTYPES | {0x0007})


def test_the_list_holds_every_such_capture(corpus: Path) -> None:
    """CORPUS names every capture of the corpus of an encapsulating link type or with a frame that announces PPPoE or MPLS."""
    found = set()
    for path in sorted(corpus.iterdir()):
        try:
            linktype = int(pcapy.open_offline(str(path)).datalink())
        except pcapy.PcapError:
            continue  # the licence
        if linktype in ENCAP_LINK_TYPES or any(_announces(linktype, data) for *_, data in libpcap_records(path)):
            found.add(path.name)
    assert found == set(CORPUS)
