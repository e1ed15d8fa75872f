"""Bidirectional flows: keys, per-direction counters, endings by reason, the table bound."""

from __future__ import annotations

import numpy as np
import pcapgen as g
from batches import decoded

from agent.base import labels
from agent.stages.flows import FlowTable

E4, E6 = g.eth(g.ETH_IPV4), g.eth(g.ETH_IPV6)
C, S = "192.168.1.2", "93.184.216.34"
SEC = 1_000_000


def table(max_flows: int = 64, idle_s: float = 60, active_s: float = 1800, linger_s: float = 2) -> FlowTable:
    return FlowTable(max_flows, idle_us=int(idle_s * SEC), active_us=int(active_s * SEC), linger_us=int(linger_s * SEC))


def feed(t: FlowTable, packets: list[tuple[int, bytes]]) -> None:
    t.apply(decoded([f for _, f in packets], ts=[ts for ts, _ in packets]))


def tcp(ts: int, src: str, dst: str, sport: int, dport: int, flags: int, payload: bytes = b"") -> tuple[int, bytes]:
    return ts, E4 + g.ipv4(g.TCP, src, dst, g.tcp(sport, dport, flags, payload))


def ended(t: FlowTable) -> dict[tuple[str, str], int]:
    return {(labels.FLOW_TRANSPORTS[i], labels.FLOW_END_REASONS[j]): int(v) for (i, j), v in np.ndenumerate(t.ended) if v}


def handshake_and_close(t0: int, sport: int = 40000) -> list[tuple[int, bytes]]:
    return [
        tcp(t0, C, S, sport, 443, g.SYN),
        tcp(t0 + 10, S, C, 443, sport, g.SYN | g.ACK),
        tcp(t0 + 20, C, S, sport, 443, g.ACK, b"GET /"),
        tcp(t0 + 30, S, C, 443, sport, g.ACK | g.PSH, b"200 OK" * 10),
        tcp(t0 + 40, C, S, sport, 443, g.FIN | g.ACK),
        tcp(t0 + 50, S, C, 443, sport, g.FIN | g.ACK),
        tcp(t0 + 60, C, S, sport, 443, g.ACK),  # the last ACK joins during the linger
    ]


def test_both_directions_are_one_flow_with_per_direction_counters() -> None:
    t = table()
    pkts = handshake_and_close(SEC)
    feed(t, pkts)
    assert t.started.tolist() == [1, 0, 0, 0, 0]
    assert t.active.tolist() == [1, 0, 0, 0, 0]
    slot = int(np.flatnonzero(t.used)[0])
    assert sorted(t.packets[slot].tolist()) == [3, 4]
    sizes = {
        "c": sum(len(f) for ts, f in pkts if f[26:30] == bytes([192, 168, 1, 2])),
        "s": sum(len(f) for ts, f in pkts if f[26:30] != bytes([192, 168, 1, 2])),
    }
    assert sorted(t.bytes[slot].tolist()) == sorted(sizes.values())
    assert t.flags[slot, 0] & g.FIN and t.flags[slot, 1] & g.FIN


def test_fin_from_both_sides_ends_after_the_linger() -> None:
    t = table(linger_s=2)
    feed(t, handshake_and_close(SEC))
    assert ended(t) == {}
    feed(t, [tcp(SEC + 1_900_000, C, S, 50000, 80, g.SYN)])  # 1.9 s later: still lingering
    assert ended(t) == {}
    feed(t, [tcp(SEC + 2_100_000, C, S, 50001, 80, g.SYN)])  # past the 2 s linger
    assert ended(t) == {("tcp", "fin"): 1}
    assert t.active.tolist() == [2, 0, 0, 0, 0]


def test_rst_ends_the_flow_and_a_new_syn_on_the_same_ports_starts_another() -> None:
    t = table(linger_s=1)
    feed(t, [tcp(0, C, S, 40000, 443, g.SYN), tcp(5, S, C, 443, 40000, g.RST | g.ACK)])
    feed(t, [tcp(3 * SEC, C, S, 40000, 443, g.SYN)])
    assert ended(t) == {("tcp", "rst"): 1}
    assert t.started.tolist() == [2, 0, 0, 0, 0]


def test_one_sided_fin_does_not_end_the_flow() -> None:
    t = table(linger_s=0)
    feed(t, [tcp(0, C, S, 40000, 443, g.FIN | g.ACK), tcp(SEC, C, S, 40000, 443, g.ACK)])
    assert ended(t) == {}
    assert t.started.tolist() == [1, 0, 0, 0, 0]


def test_idle_timeout_and_active_timeout() -> None:
    t = table(idle_s=10, active_s=25)
    udp = [(i * 8 * SEC, E4 + g.ipv4(g.UDP, C, "8.8.8.8", g.udp(5353, 53, b"x"))) for i in range(5)]  # every 8 s, for 32 s
    feed(t, udp[:1])
    feed(t, [(4 * SEC, E4 + g.ipv4(g.ICMP, C, "1.1.1.1", g.icmp_echo()))])
    feed(t, udp[1:])  # one batch spanning 24 s: timeouts still fire where they fall
    assert ended(t) == {("udp", "active_timeout"): 1, ("icmp", "idle"): 1}
    assert t.started.tolist() == [0, 2, 1, 0, 0]
    t.tick(100 * SEC)
    assert ended(t) == {("udp", "active_timeout"): 1, ("udp", "idle"): 1, ("icmp", "idle"): 1}
    assert t.active.sum() == 0


def test_gap_longer_than_idle_timeout_splits_the_flow_even_inside_one_batch() -> None:
    t = table(idle_s=5)
    query = (0, E4 + g.ipv4(g.UDP, C, "8.8.8.8", g.udp(5353, 53)))
    late_reply = (6 * SEC, E4 + g.ipv4(g.UDP, "8.8.8.8", C, g.udp(53, 5353)))
    feed(t, [query, late_reply])
    assert ended(t) == {("udp", "idle"): 1}
    assert t.started.tolist() == [0, 2, 0, 0, 0]


def test_keys_tcp_udp_by_ports_other_protocols_by_addresses_only() -> None:
    t = table()
    feed(
        t,
        [
            tcp(0, C, S, 1, 2, g.ACK),
            tcp(1, C, S, 1, 3, g.ACK),
            (2, E4 + g.ipv4(g.UDP, C, S, g.udp(1, 2))),
            (3, E4 + g.ipv4(g.ICMP, C, S, g.icmp_echo(ident=1))),
            (4, E4 + g.ipv4(g.ICMP, S, C, g.icmp_echo(ident=2))),  # same addresses, same flow
            (5, E4 + g.ipv4(g.GRE, C, S, bytes(8))),
            (6, E6 + g.ipv6(g.ICMPV6, "fd00::1", "fe80::1", g.icmp_echo(v6=True))),
        ],
    )
    assert t.started.tolist() == [2, 1, 1, 1, 1]


def test_duplicates_fragments_malformed_and_non_ip_make_no_flows() -> None:
    t = table()
    frag = E4 + g.ipv4(g.UDP, C, S, bytes(16), frag_offset=24)
    cut = E4 + g.ipv4(g.TCP, C, S, g.tcp(1, 2)[:10])
    arp = g.pad(g.eth(g.ETH_ARP) + g.arp(1, g.MAC_A, C, "00:00:00:00:00:00", "192.168.1.1"))
    batch = decoded([frag, cut, arp, E4 + g.ipv4(g.UDP, C, S, g.udp(1, 2))])
    t.apply(batch.replace(duplicate=np.array([False, False, False, True])))
    assert t.started.sum() == 0


def test_full_table_evicts_least_recently_seen() -> None:
    t = table(max_flows=16)
    feed(t, [(i, E4 + g.ipv4(g.UDP, C, S, g.udp(1000 + i, 53))) for i in range(16)])
    feed(t, [(100, E4 + g.ipv4(g.UDP, C, S, g.udp(1000, 53)))])  # flow 0 is seen again: now the newest
    feed(t, [(200 + i, E4 + g.ipv4(g.UDP, C, S, g.udp(2000 + i, 53))) for i in range(3)])
    assert ended(t) == {("udp", "evicted"): 3}
    assert t.size == 16
    still = t._index.lookup(t.key[t.used])  # every live key is still found
    assert (still >= 0).all()
    # flows 1, 2 and 3 (the least recently seen) were evicted; flow 0 stayed
    feed(t, [(300, E4 + g.ipv4(g.UDP, C, S, g.udp(1000, 53)))])
    assert t.started.tolist() == [0, 19, 0, 0, 0]


def test_more_new_flows_in_one_batch_than_the_table_holds() -> None:
    t = table(max_flows=16)
    feed(t, [(i, E4 + g.ipv4(g.UDP, C, S, g.udp(1000 + i, 53))) for i in range(40)])
    assert t.started.tolist() == [0, 40, 0, 0, 0]
    assert ended(t) == {("udp", "evicted"): 24}
    assert t.active.tolist() == [0, 16, 0, 0, 0]
