"""The whole pipeline on one capture with known answers, and the accounting law."""

from __future__ import annotations

import pcapgen as g
from batches import raw

from agent.base import labels
from agent.config import Config
from agent.runtime.pipeline import Pipeline


def home_capture() -> tuple[list[bytes], list[int]]:
    c, s = "192.168.1.2", "93.184.216.34"
    frames = [
        g.eth(g.ETH_IPV4) + g.ipv4(g.TCP, c, s, g.tcp(40000, 443, g.SYN)),
        g.eth(g.ETH_IPV4) + g.ipv4(g.TCP, s, c, g.tcp(443, 40000, g.SYN | g.ACK)),
        g.eth(g.ETH_IPV4) + g.ipv4(g.TCP, s, c, g.tcp(443, 40000, g.SYN | g.ACK), ttl=63),  # a duplicate
        g.eth(g.ETH_IPV6) + g.ipv6(g.UDP, "fd00::2", "fd00::3", g.udp(5353, 5353, b"m")),
        g.pad(g.eth(g.ETH_ARP) + g.arp(1, g.MAC_A, c, "00:00:00:00:00:00", "192.168.1.1")),
        g.eth(g.ETH_IPV4) + g.ipv4(g.TCP, c, s, g.tcp(1, 2)[:8]),  # transport cut short
    ]
    return frames, [1_000_000, 1_000_100, 1_000_300, 1_000_400, 1_000_500, 1_000_600]


def test_counts_by_network_transport_direction_and_the_law() -> None:
    frames, ts = home_capture()
    p = Pipeline(Config(), ["eth0"])
    p.process(raw(frames, ts=ts))
    c = p.counters
    assert (int(c.processed[0]), int(c.duplicate[0]), int(c.sampled_out[0]), int(c.unsupported_link[0])) == (5, 1, 0, 0)
    cells = c.traffic_packets.reshape(1, 4, 6, 5)[0]
    seen = {(labels.NETWORKS[n], labels.TRANSPORTS[t], labels.DIRECTIONS[d]): int(cells[n, t, d]) for n, t, d in zip(*cells.nonzero())}
    assert seen == {
        ("ipv4", "tcp", "outbound"): 1,
        ("ipv4", "tcp", "inbound"): 1,
        ("ipv6", "udp", "internal"): 1,
        ("arp", "none", "none"): 1,
        ("ipv4", "other", "outbound"): 1,
    }
    assert float(c.traffic_bytes.sum()) == sum(len(f) for i, f in enumerate(frames) if i != 2)
    assert c.decode_errors[0, labels.decode_error_code("tcp", "truncated")] == 1
    assert p.flows.started.tolist() == [1, 1, 0, 0, 0]
    # captured = processed + duplicate + sampled_out + dropped(queue) + unsupported_link
    assert len(frames) == c.processed[0] + c.duplicate[0] + c.sampled_out[0] + c.unsupported_link[0]
    assert c.processed[0] == c.traffic_packets.sum()


def test_unsupported_link_type_is_counted_not_decoded() -> None:
    p = Pipeline(Config(), ["wlan0"])
    p.process(raw([b"\x00" * 40, b"\x01" * 50], linktype=127))  # radiotap
    assert (int(p.counters.unsupported_link[0]), int(p.counters.processed[0])) == (2, 0)


def test_batch_histograms_and_busy_time() -> None:
    frames, ts = home_capture()
    p = Pipeline(Config(), ["eth0"])
    p.process(raw(frames, ts=ts))
    p.process(raw(frames[:2], ts=[2_000_000, 2_000_001]))
    seconds, sizes = p.counters.histograms()
    assert (seconds.count, sizes.count, sizes.total) == (2, 2, 8.0)
    assert p.counters.busy_seconds == seconds.total > 0
