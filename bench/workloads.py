"""Deterministic benchmark workloads (W1 home mix, W2 flood, W3 elephants) written as pcap files.

Every packet is built with numpy column writes, so generating 2M packets takes seconds.
Each workload also writes ``<name>.truth.json`` with the figures the generator knows
(packets, bytes, duplicates, flows), which the benchmark checks pktagent's output against.

    python bench/workloads.py --out bench/data            # all three, 2M packets each
    python bench/workloads.py --out /tmp/w --packets 20000 w1
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PCAP_MAGIC = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10


@dataclass
class Packets:
    """Column description of the frames to write: one array per field."""

    ts_us: np.ndarray  # int64 microseconds
    v6: np.ndarray  # bool
    vlan: np.ndarray  # bool
    proto: np.ndarray  # uint8
    src_hi: np.ndarray  # uint64: IPv6 high half (unused for IPv4)
    src_lo: np.ndarray  # uint64: IPv6 low half, or IPv4 address
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    sport: np.ndarray  # uint16 (ICMP: identifier)
    dport: np.ndarray
    flags: np.ndarray  # uint8 TCP flags
    frame_len: np.ndarray  # int64 bytes on the wire (without the pcap record header)
    ttl: np.ndarray  # uint8
    ident: np.ndarray  # uint16 IPv4 identification, also salts the transport checksum
    payload: np.ndarray  # (n, P) uint8: transport payload written where has_payload (P may be 0)
    has_payload: np.ndarray  # bool


def _put(buf: np.ndarray, pos: np.ndarray, value: np.ndarray, width: int) -> None:
    """Write ``value`` big-endian, ``width`` bytes, at each position."""
    v = value.astype(np.uint64)
    for k in range(width):
        buf[pos + k] = ((v >> np.uint64(8 * (width - 1 - k))) & np.uint64(0xFF)).astype(np.uint8)


def _put_le32(buf: np.ndarray, pos: np.ndarray, value: np.ndarray) -> None:
    v = value.astype(np.uint64)
    for k in range(4):
        buf[pos + k] = ((v >> np.uint64(8 * k)) & np.uint64(0xFF)).astype(np.uint8)


def header_lengths(p: Packets) -> tuple[np.ndarray, np.ndarray]:
    """Return (offset of L3 in the frame, length of L3+L4 headers)."""
    l2 = np.where(p.vlan, 18, 14)
    l3 = np.where(p.v6, 40, 20)
    l4 = np.select([p.proto == TCP, p.proto == UDP], [20, 8], 8)
    return l2, l3 + l4


def write_pcap(path: Path, p: Packets) -> None:
    """Write the frames as a little-endian microsecond pcap (linktype Ethernet)."""
    n = p.ts_us.size
    l2, hdrs = header_lengths(p)
    flen = np.maximum(p.frame_len, l2 + hdrs).astype(np.int64)
    rec = np.empty(n, dtype=np.int64)
    rec[0] = 24
    np.cumsum(16 + flen[:-1], out=rec[1:])
    rec[1:] += 24
    total = int(rec[-1] + 16 + flen[-1])
    buf = np.zeros(total, dtype=np.uint8)
    buf[:24] = np.frombuffer(
        np.array([PCAP_MAGIC], "<u4").tobytes() + np.array([2, 4], "<u2").tobytes() + np.array([0, 0, 262144, LINKTYPE_ETHERNET], "<u4").tobytes(),
        dtype=np.uint8,
    )
    _put_le32(buf, rec, p.ts_us // 1_000_000)
    _put_le32(buf, rec + 4, p.ts_us % 1_000_000)
    _put_le32(buf, rec + 8, flen)
    _put_le32(buf, rec + 12, flen)
    f = rec + 16
    # Ethernet: locally administered MACs derived from the addresses, so each host has one.
    _put(buf, f, np.full(n, 0x02_00_00_00_00_00, np.uint64) | (p.dst_lo & np.uint64(0xFFFFFFFF)), 6)
    _put(buf, f + 6, np.full(n, 0x02_00_00_00_00_00, np.uint64) | (p.src_lo & np.uint64(0xFFFFFFFF)), 6)
    ethertype = np.where(p.v6, 0x86DD, 0x0800)
    _put(buf, f + 12, np.where(p.vlan, 0x8100, ethertype), 2)
    vl = f[p.vlan]
    _put(buf, vl + 14, np.full(vl.size, 100), 2)
    _put(buf, vl + 16, ethertype[p.vlan], 2)
    ip = f + l2
    l3len = flen - l2
    v4, v6 = ~p.v6, p.v6
    a = ip[v4]
    buf[a] = 0x45
    _put(buf, a + 2, l3len[v4], 2)
    _put(buf, a + 4, p.ident[v4], 2)
    buf[a + 8] = p.ttl[v4]
    buf[a + 9] = p.proto[v4]
    _put(buf, a + 10, p.ident[v4] ^ 0x5A5A, 2)
    _put(buf, a + 12, p.src_lo[v4], 4)
    _put(buf, a + 16, p.dst_lo[v4], 4)
    b = ip[v6]
    buf[b] = 0x60
    _put(buf, b + 4, l3len[v6] - 40, 2)
    buf[b + 6] = p.proto[v6]
    buf[b + 7] = p.ttl[v6]
    _put(buf, b + 8, p.src_hi[v6], 8)
    _put(buf, b + 16, p.src_lo[v6], 8)
    _put(buf, b + 24, p.dst_hi[v6], 8)
    _put(buf, b + 32, p.dst_lo[v6], 8)
    l4 = ip + np.where(p.v6, 40, 20)
    t = p.proto == TCP
    u = p.proto == UDP
    ic = ~(t | u)
    _put(buf, l4[t | u], p.sport[t | u], 2)
    _put(buf, l4[t | u] + 2, p.dport[t | u], 2)
    tp = l4[t]
    _put(buf, tp + 4, p.ident[t].astype(np.uint64) * 1460 + 1, 4)  # sequence number
    _put(buf, tp + 8, p.ident[t].astype(np.uint64) * 7 + 1, 4)  # ack number
    buf[tp + 12] = 0x50
    buf[tp + 13] = p.flags[t]
    _put(buf, tp + 14, np.full(tp.size, 64240), 2)
    _put(buf, tp + 16, p.ident[t] ^ 0x1234, 2)  # checksum stand-in: differs per packet
    up = l4[u]
    _put(buf, up + 4, (flen - l2 - np.where(p.v6, 40, 20))[u], 2)
    _put(buf, up + 6, p.ident[u] ^ 0x4321, 2)
    if p.has_payload.any():
        rows = np.flatnonzero(p.has_payload)
        at = l4[rows] + 8
        buf[at[:, None] + np.arange(p.payload.shape[1])] = p.payload[rows]
    cp = l4[ic]
    buf[cp] = np.where(p.proto[ic] == ICMPV6, 128, 8)  # echo request
    _put(buf, cp + 2, p.ident[ic] ^ 0x7777, 2)
    _put(buf, cp + 4, p.sport[ic], 2)
    _put(buf, cp + 6, p.ident[ic], 2)
    buf.tofile(path)


def _concat(parts: list[Packets]) -> Packets:
    return Packets(**{k: np.concatenate([getattr(x, k) for x in parts]) for k in Packets.__dataclass_fields__})


def _take(p: Packets, idx: np.ndarray) -> Packets:
    return Packets(**{k: getattr(p, k)[idx] for k in Packets.__dataclass_fields__})


def _remote_v4(rng: np.random.Generator, n: int) -> np.ndarray:
    # 11.0.0.0 - 99.255.255.255: public space, clear of RFC 1918 and 100.64/10.
    return rng.integers(0x0B000000, 0x64000000, n, dtype=np.uint64)


def _with_duplicates(rng: np.random.Generator, p: Packets, share: float) -> tuple[Packets, int]:
    """Copy a share of packets as a router would forward them (TTL-1), 50-500 us later."""
    n = p.ts_us.size
    pick = np.flatnonzero(rng.random(n) < share)
    dup = _take(p, pick)
    dup.ts_us = dup.ts_us + rng.integers(50, 500, pick.size)
    dup.ttl = (dup.ttl - 1).astype(np.uint8)
    both = _concat([p, dup])
    order = np.argsort(both.ts_us, kind="stable")
    return _take(both, order), int(pick.size)


def home_mix(n_packets: int, seed: int = 1) -> tuple[Packets, dict[str, int]]:
    """W1: ~20k flows per 2M packets, heavy-tailed sizes, 25% IPv6, 5% VLAN, ~2.5% duplicates."""
    rng = np.random.default_rng(seed)
    dup_share = 0.025
    base = round(n_packets / (1 + dup_share))
    n_flows = max(4, n_packets // 100)
    sizes = np.floor(rng.pareto(1.2, n_flows) * 8 + 2).astype(np.int64)
    sizes = np.maximum(2, np.round(sizes * base / sizes.sum())).astype(np.int64)
    diff = base - int(sizes.sum())
    sizes[np.argmax(sizes)] += diff  # the biggest flow absorbs the rounding
    flow = np.repeat(np.arange(n_flows), sizes)
    n = flow.size
    f_v6 = rng.random(n_flows) < 0.25
    f_vlan = rng.random(n_flows) < 0.05
    f_proto = rng.choice(np.array([TCP, UDP, ICMP], np.uint8), n_flows, p=[0.7, 0.27, 0.03])
    f_proto[(f_proto == ICMP) & f_v6] = ICMPV6
    f_internal = rng.random(n_flows) < 0.05
    host = rng.integers(2, 254, n_flows, dtype=np.uint64)  # ~250 devices, each with an IPv4 and an IPv6 address
    c_lo = np.where(f_v6, host, 0xC0A80100 + host)
    c_hi = np.where(f_v6, np.uint64(0xFD00000000000001), np.uint64(0))
    s_lo = np.where(
        f_v6,
        np.where(f_internal, rng.integers(2, 254, n_flows, dtype=np.uint64), rng.integers(1, 1 << 62, n_flows, dtype=np.uint64)),
        np.where(f_internal, 0xC0A80100 + rng.integers(2, 254, n_flows, dtype=np.uint64), _remote_v4(rng, n_flows)),
    )
    s_hi = np.where(f_v6, np.where(f_internal, np.uint64(0xFD00000000000001), np.uint64(0x20010DB800000000)), np.uint64(0))
    c_port = rng.integers(32768, 61000, n_flows, dtype=np.uint64)
    s_port = rng.choice(np.array([443, 80, 123, 8080, 22, 993, 5223], np.uint64), n_flows)
    duration = 20_000_000
    start = rng.integers(0, duration, n_flows)
    span = np.minimum(duration - start, sizes * rng.integers(200, 5000, n_flows))
    # position of each packet inside its flow, and its time
    first = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    k = np.arange(n) - first[flow]
    frac = (k / np.maximum(sizes[flow] - 1, 1)).astype(np.float64)
    ts = start[flow] + (frac * span[flow]).astype(np.int64)
    last = k == sizes[flow] - 1
    to_server = np.where(k == 0, True, np.where(k == 1, False, rng.random(n) < 0.5))
    to_server[last & (sizes[flow] >= 4)] = False
    to_server[(k == sizes[flow] - 2) & (sizes[flow] >= 4)] = True
    proto = f_proto[flow]
    flags = np.where(to_server, ACK | PSH, ACK).astype(np.uint8)
    flags[k == 0] = SYN
    flags[(k == 1)] = SYN | ACK
    closing = (k >= sizes[flow] - 2) & (sizes[flow] >= 4)
    flags[closing] = FIN | ACK
    flags[proto != TCP] = 0
    small = rng.random(n) < 0.4
    flen = np.where(small, rng.integers(60, 100, n), np.where(rng.random(n) < 0.75, 1514, rng.integers(100, 1514, n)))
    flen[(proto == TCP) & ((flags & (SYN | FIN)) != 0)] = 66
    vlan = f_vlan[flow]
    flen = flen + np.where(vlan, 4, 0)
    src_hi = np.where(to_server, c_hi[flow], s_hi[flow])
    src_lo = np.where(to_server, c_lo[flow], s_lo[flow])
    dst_hi = np.where(to_server, s_hi[flow], c_hi[flow])
    dst_lo = np.where(to_server, s_lo[flow], c_lo[flow])
    sport = np.where(to_server, c_port[flow], s_port[flow]).astype(np.uint16)
    dport = np.where(to_server, s_port[flow], c_port[flow]).astype(np.uint16)
    icmp = (proto == ICMP) | (proto == ICMPV6)
    sport[icmp] = (flow[icmp] & 0xFFFF).astype(np.uint16)
    dport[icmp] = 0
    p = Packets(
        ts_us=ts.astype(np.int64) + 1_700_000_000_000_000,
        v6=f_v6[flow],
        vlan=vlan,
        proto=proto,
        src_hi=src_hi.astype(np.uint64),
        src_lo=src_lo.astype(np.uint64),
        dst_hi=dst_hi.astype(np.uint64),
        dst_lo=dst_lo.astype(np.uint64),
        sport=sport,
        dport=dport,
        flags=flags,
        frame_len=flen.astype(np.int64),
        ttl=np.full(n, 64, np.uint8),
        ident=(np.arange(n) * 2654435761 % 65521).astype(np.uint16),
        payload=np.zeros((n, DNS_SIZE), np.uint8),
        has_payload=np.zeros(n, np.bool_),
    )
    # A third of the IPv4 flows to the internet start with the DNS answer that named their server.
    named = np.flatnonzero(~f_v6 & ~f_internal & (rng.random(n_flows) < 1 / 3))
    dns = _dns_answers(rng, named, start[named] + 1_700_000_000_000_000 - 800, c_lo[named], s_lo[named])
    p = _concat([p, dns])
    p = _take(p, np.argsort(p.ts_us, kind="stable"))
    p, dups = _with_duplicates(rng, p, dup_share)
    truth = {"packets": int(p.ts_us.size), "duplicates": dups, "flows": n_flows + named.size, "dns_answers": int(named.size)}
    return p, truth


DNS_SIZE = 51  # header 12, question 23 (a 17-character name), one A record 16


def _dns_answers(rng: np.random.Generator, flow: np.ndarray, ts: np.ndarray, client: np.ndarray, server: np.ndarray) -> Packets:
    """DNS responses from the home router (192.168.1.1:53) naming each server ``sNNNNN.cdnNNN.net``."""
    m = flow.size
    payload = np.zeros((m, DNS_SIZE), np.uint8)
    payload[:, 0:2] = np.stack([(flow >> 8) & 0xFF, flow & 0xFF], 1)  # id
    payload[:, 2:12] = np.frombuffer(bytes.fromhex("81800001000100000000"), np.uint8)
    digits = np.frombuffer(b"0123456789", np.uint8)
    name = np.zeros((m, 19), np.uint8)
    name[:, 0], name[:, 1] = 6, ord("s")
    for k in range(5):
        name[:, 2 + k] = digits[(flow // 10 ** (4 - k)) % 10]
    name[:, 7] = 6
    name[:, 8:11] = np.frombuffer(b"cdn", np.uint8)
    for k in range(3):
        name[:, 11 + k] = digits[((flow % 997) // 10 ** (2 - k)) % 10]
    name[:, 14] = 3
    name[:, 15:18] = np.frombuffer(b"net", np.uint8)
    payload[:, 12:31] = name
    payload[:, 31:35] = np.frombuffer(bytes.fromhex("00010001"), np.uint8)  # type A, class IN
    payload[:, 35:47] = np.frombuffer(bytes.fromhex("c00c00010001000000780004"), np.uint8)
    payload[:, 47:51] = np.stack([(server >> np.uint64(s)) & np.uint64(0xFF) for s in (24, 16, 8, 0)], 1).astype(np.uint8)
    return Packets(
        ts_us=ts.astype(np.int64),
        v6=np.zeros(m, bool),
        vlan=np.zeros(m, bool),
        proto=np.full(m, UDP, np.uint8),
        src_hi=np.zeros(m, np.uint64),
        src_lo=np.full(m, 0xC0A80101, np.uint64),
        dst_hi=np.zeros(m, np.uint64),
        dst_lo=client.astype(np.uint64),
        sport=np.full(m, 53, np.uint16),
        dport=rng.integers(49152, 65535, m).astype(np.uint16),
        flags=np.zeros(m, np.uint8),
        frame_len=np.full(m, 14 + 20 + 8 + DNS_SIZE, np.int64),
        ttl=np.full(m, 64, np.uint8),
        ident=rng.integers(0, 65535, m).astype(np.uint16),
        payload=payload,
        has_payload=np.ones(m, np.bool_),
    )


def flood(n_packets: int, seed: int = 2) -> tuple[Packets, dict[str, int]]:
    """W2: a random-source SYN flood at 1M packets/s; nearly every packet opens a new flow."""
    rng = np.random.default_rng(seed)
    n = n_packets
    p = Packets(
        ts_us=1_700_000_000_000_000 + np.arange(n, dtype=np.int64),
        v6=np.zeros(n, bool),
        vlan=np.zeros(n, bool),
        proto=np.full(n, TCP, np.uint8),
        src_hi=np.zeros(n, np.uint64),
        src_lo=_remote_v4(rng, n),
        dst_hi=np.zeros(n, np.uint64),
        dst_lo=np.full(n, 0xC0A8010A, np.uint64),
        sport=rng.integers(1024, 65535, n).astype(np.uint16),
        dport=np.full(n, 80, np.uint16),
        flags=np.full(n, SYN, np.uint8),
        frame_len=np.full(n, 60, np.int64),
        ttl=np.full(n, 64, np.uint8),
        ident=rng.integers(0, 65535, n).astype(np.uint16),
        payload=np.zeros((n, 0), np.uint8),
        has_payload=np.zeros(n, np.bool_),
    )
    return p, {"packets": n, "duplicates": 0}


def elephants(n_packets: int, seed: int = 3) -> tuple[Packets, dict[str, int]]:
    """W3: full-size frames in 50 long TCP flows at ~1 Gbit/s."""
    rng = np.random.default_rng(seed)
    n = n_packets
    n_flows = 50
    flow = rng.integers(0, n_flows, n)
    c_lo = 0xC0A80100 + rng.integers(2, 254, n_flows, dtype=np.uint64)
    s_lo = _remote_v4(rng, n_flows)
    c_port = rng.integers(32768, 61000, n_flows).astype(np.uint16)
    p = Packets(
        ts_us=1_700_000_000_000_000 + (np.arange(n, dtype=np.int64) * 12),
        v6=np.zeros(n, bool),
        vlan=np.zeros(n, bool),
        proto=np.full(n, TCP, np.uint8),
        src_hi=np.zeros(n, np.uint64),
        src_lo=s_lo[flow],
        dst_hi=np.zeros(n, np.uint64),
        dst_lo=c_lo[flow],
        sport=np.full(n, 443, np.uint16),
        dport=c_port[flow],
        flags=np.full(n, ACK, np.uint8),
        frame_len=np.full(n, 1514, np.int64),
        ttl=np.full(n, 64, np.uint8),
        ident=(np.arange(n) % 65536).astype(np.uint16),
        payload=np.zeros((n, 0), np.uint8),
        has_payload=np.zeros(n, np.bool_),
    )
    return p, {"packets": n, "duplicates": 0, "flows": n_flows}


WORKLOADS = {"w1": home_mix, "w2": flood, "w3": elephants}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", metavar="NAME", help="w1, w2 or w3 (default: all)")
    ap.add_argument("--out", type=Path, default=Path("bench/data"))
    ap.add_argument("--packets", type=int, default=2_000_000)
    args = ap.parse_args(argv)
    unknown = sorted(set(args.names) - set(WORKLOADS))
    if unknown:
        ap.error(f"unknown workload {', '.join(unknown)}: choose from {', '.join(sorted(WORKLOADS))}")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names or sorted(WORKLOADS):
        path = args.out / f"{name}.pcap"
        packets, truth = WORKLOADS[name](args.packets)
        write_pcap(path, packets)
        l2, hdrs = header_lengths(packets)
        truth["bytes"] = int(np.maximum(packets.frame_len, l2 + hdrs).sum())
        (args.out / f"{name}.truth.json").write_text(json.dumps(truth, indent=2) + "\n")
        print(f"{path}: {truth['packets']} packets", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
