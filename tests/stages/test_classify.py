"""Local networks and direction."""

from __future__ import annotations

import pcapgen as g
from batches import decoded

from agent.base import labels
from agent.config import DEFAULT_LOCAL_NETWORKS
from agent.stages.classify import Classifier

E4, E6 = g.eth(g.ETH_IPV4), g.eth(g.ETH_IPV6)


def direction(classifier: Classifier, pairs: list[tuple[str, str]]) -> list[str]:
    frames = [(E6 + g.ipv6(g.UDP, s, d, g.udp(1, 2))) if ":" in s else (E4 + g.ipv4(g.UDP, s, d, g.udp(1, 2))) for s, d in pairs]
    frames.append(g.pad(g.eth(g.ETH_ARP) + g.arp(1, g.MAC_A, "192.168.1.2", "00:00:00:00:00:00", "192.168.1.1")))
    b = classifier.apply(decoded(frames))
    return [labels.DIRECTIONS[d] for d in b.direction.tolist()]


def test_default_networks_and_all_four_directions() -> None:
    c = Classifier(DEFAULT_LOCAL_NETWORKS)
    assert direction(
        c,
        [
            ("192.168.1.2", "8.8.8.8"),
            ("8.8.8.8", "10.9.9.9"),
            ("172.16.0.1", "172.31.255.255"),
            ("172.32.0.1", "1.1.1.1"),
            ("100.64.0.1", "169.254.1.1"),
            ("127.0.0.1", "100.128.0.1"),
            ("fd00::1", "2001:db8::1"),
            ("2001:db8::1", "fe80::1"),
            ("::1", "::1"),
            ("fc00::1", "fe00::1"),
        ],
    ) == ["outbound", "inbound", "internal", "external", "internal", "outbound", "outbound", "inbound", "internal", "outbound", "none"]


def test_prefixes_longer_than_16_bits() -> None:
    c = Classifier(["192.168.1.0/24", "10.20.30.40/32", "2001:db8:1:2::/64"])
    assert direction(
        c,
        [
            ("192.168.1.77", "192.168.2.1"),
            ("10.20.30.40", "10.20.30.41"),
            ("2001:db8:1:2::5", "2001:db8:1:3::5"),
            ("192.168.2.1", "192.168.1.255"),
        ],
    ) == ["outbound", "outbound", "outbound", "inbound", "none"]


def test_ipv4_mapped_space_does_not_leak_into_ipv6_rules() -> None:
    c = Classifier(["::/8"])  # an IPv6 rule covering ::ffff:0:0/96 must not make IPv4 local
    assert direction(c, [("8.8.8.8", "1.1.1.1"), ("::2", "2001:db8::1")]) == ["external", "outbound", "none"]
