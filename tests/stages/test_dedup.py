"""Deduplication: same L3 bytes within the window, with what routers rewrite masked."""

from __future__ import annotations

import numpy as np
import pcapgen as g
from batches import decoded

from agent.stages.dedup import Dedup

E4, E6 = g.eth(g.ETH_IPV4), g.eth(g.ETH_IPV6)
PKT = g.ipv4(g.TCP, "192.168.1.2", "1.1.1.1", g.tcp(40000, 443, g.ACK, b"hello"), ident=77)
PKT6 = g.ipv6(g.UDP, "fd00::2", "2001:db8::1", g.udp(5000, 53, b"q" * 80))


def dups(frames: list[bytes], ts: list[int], window_us: int = 1000, split: int | None = None) -> list[bool]:
    d = Dedup(window_us, 1024)
    out: list[bool] = []
    parts = [(0, len(frames))] if split is None else [(0, split), (split, len(frames))]
    for a, b in parts:
        batch, _ = d.apply(decoded(frames[a:b], ts=ts[a:b]))
        out += batch.duplicate.tolist()
    return out


def test_inside_and_just_outside_the_window() -> None:
    assert dups([E4 + PKT] * 3, [0, 1000, 2001]) == [False, True, False]


def test_router_hop_changes_ttl_checksum_and_mac_but_is_the_same_packet() -> None:
    routed = g.eth(g.ETH_IPV4, src="02:00:00:00:00:99", dst="02:00:00:00:00:98") + g.ipv4(
        g.TCP, "192.168.1.2", "1.1.1.1", g.tcp(40000, 443, g.ACK, b"hello"), ident=77, ttl=63
    )
    assert routed[22] != (E4 + PKT)[22]  # TTL differs, and so does the header checksum
    assert dups([E4 + PKT, routed], [0, 300]) == [False, True]


def test_ipv6_hop_limit_is_masked_and_payload_beyond_64_bytes_counts_through_the_length() -> None:
    hop = g.eth(g.ETH_IPV6) + g.ipv6(g.UDP, "fd00::2", "2001:db8::1", g.udp(5000, 53, b"q" * 80), hop_limit=3)
    longer = g.eth(g.ETH_IPV6) + g.ipv6(g.UDP, "fd00::2", "2001:db8::1", g.udp(5000, 53, b"q" * 81))
    assert dups([E6 + PKT6, hop, longer], [0, 10, 20]) == [False, True, False]


def test_different_packets_are_not_duplicates() -> None:
    other = E4 + g.ipv4(g.TCP, "192.168.1.2", "1.1.1.1", g.tcp(40000, 443, g.ACK, b"hello"), ident=78)
    assert dups([E4 + PKT, other], [0, 1]) == [False, False]


def test_non_ip_frames_are_compared_whole() -> None:
    a = g.pad(g.eth(g.ETH_ARP) + g.arp(1, g.MAC_A, "192.168.1.2", "00:00:00:00:00:00", "192.168.1.1"))
    b = g.pad(g.eth(g.ETH_ARP, src=g.MAC_B) + g.arp(1, g.MAC_A, "192.168.1.2", "00:00:00:00:00:00", "192.168.1.1"))
    assert dups([a, a, b], [0, 5, 10]) == [False, True, False]


def test_window_spans_batches() -> None:
    assert dups([E4 + PKT] * 3, [0, 900, 5000], split=1) == [False, True, False]


def test_each_frame_compares_with_the_latest_earlier_copy() -> None:
    # 0 -> 800 -> 1600: each copy is within the window of the previous one.
    assert dups([E4 + PKT] * 3, [0, 800, 1600], split=2) == [False, True, True]


def test_memory_is_bounded_and_evictions_counted() -> None:
    d = Dedup(window_us=10_000_000, max_entries=16)
    frames = [E4 + g.ipv4(g.UDP, "10.0.0.1", "10.0.0.2", g.udp(i, 9)) for i in range(100)]
    d.apply(decoded(frames, ts=list(range(100))))
    assert (d.entries, d.evictions, d.misses, d.hits) == (16, 84, 100, 0)
    batch, _ = d.apply(decoded(frames[-16:] + frames[:1], ts=list(range(200, 217))))
    assert batch.duplicate.tolist() == [True] * 16 + [False]  # the newest 16 were kept


def test_duplicate_keys_are_stable_across_batch_positions() -> None:
    # The same frame at the very end of one batch buffer and inside another hashes the same.
    d = Dedup(1000, 64)
    first, _ = d.apply(decoded([E4 + PKT], ts=[0]))
    second, _ = d.apply(decoded([E4 + PKT, E4 + PKT], ts=[10, 20]))
    assert first.duplicate.tolist() == [False]
    assert second.duplicate.tolist() == [True, True]
    assert np.count_nonzero(second.duplicate) == 2
