"""Live capture's cost controls: the kernel ring sized from the host, block timeouts, batches cut by bytes, a read woken to stop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pcapgen as g
import pytest
from conftest import need_tool
from netns import VethPair

from agent.capture.live import block_timeout_ms, ring_bytes

MiB = 1 << 20


@pytest.mark.parametrize(
    ("mem_kib", "cores", "ring"),
    [
        (512 * 1024, 4, 2 * MiB),  # Pi Zero 2 W: memory bounds it
        (4 * 1024 * 1024, 4, 8 * MiB),  # Pi 4, 4 GB: cores bound it
        (24 * 1024 * 1024, 2, 4 * MiB),  # the 2-core build VM
        (64 * 1024 * 1024, 16, 32 * MiB),  # a 16-core server: the ceiling
        (2 * 1024 * 1024, 4, 8 * MiB),  # Pi 4, 2 GB: memory and cores alike
        (1024 * 1024, 4, 4 * MiB),  # Pi 3, 1 GB: memory bounds it
        (128 * 1024, 1, 1 * MiB),  # smaller than anything: the floor
    ],
)
def test_the_kernel_ring_is_sized_from_the_hosts_memory_and_cores(tmp_path: Path, mem_kib: int, cores: int, ring: int) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal:       {mem_kib} kB\nMemFree:        1000 kB\n")
    assert ring_bytes(str(meminfo), cores) == ring


def test_an_unreadable_meminfo_sizes_the_ring_by_cores(tmp_path: Path) -> None:
    assert ring_bytes(str(tmp_path / "none"), 3) == 6 * MiB


def test_block_timeout_is_a_quarter_of_the_window_within_1_to_250_ms() -> None:
    assert [block_timeout_ms(w) for w in (0.0001, 0.01, 0.4, 1.0, 10.0)] == [1, 2, 100, 250, 250]


def _send(pair: VethPair, tmp_path: Path, n: int, size: int = 1000) -> None:
    cap = g.Capture()
    for i in range(n):
        cap.add(1_000_000 + i, g.eth(g.ETH_IPV4) + g.ipv4(g.UDP, "10.0.0.1", "10.0.0.2", g.udp(1000, 2000, bytes(size))))
    _replay(pair, cap.write(tmp_path / "send.pcap"))


def _replay(pair: VethPair, path: Path, pps: int = 0) -> None:
    speed = f"--pps={pps}" if pps else "--topspeed"
    done = subprocess.run(pair.in_sender("tcpreplay", "-i", pair.tx, speed, str(path)), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# Run in the receiver namespace (sysfs there shows its interfaces): open, say "ready", read.
BY_BYTES = """
import json, sys
from agent.capture.live import LiveSource
src = LiveSource(sys.argv[1], block_timeout_ms=10, max_bytes=2000)  # 20 frames cut to 128 bytes: 2560
print("ready", flush=True)
sizes = []
while sum(sizes) < 20:
    batch = src.read(4096, 600.0)  # without the byte bound, this waits out the ten-minute window
    if len(batch):
        sizes.append(len(batch))
print(json.dumps(sizes), flush=True)
"""

WOKEN = """
import json, sys, threading, time
from agent.capture.live import LiveSource
src = LiveSource(sys.argv[1], block_timeout_ms=10)
got = []
def reader():
    while sum(got) < 3:
        got.append(len(src.read(4096, 600.0)))  # a ten-minute window: only wake() ends it early
t = threading.Thread(target=reader, daemon=True)
t.start()
print("ready", flush=True)
while src.stats().received < 3:
    time.sleep(0.05)
while t.is_alive():
    src.wake()
    t.join(0.2)
print(json.dumps(sum(got)), flush=True)
"""

# Counts libpcap's reads that returned packets: a paced reader lets kernel blocks gather between them.
PACED = """
import json, sys
from agent.capture.live import LiveSource
src = LiveSource(sys.argv[1], block_timeout_ms=4)  # the kernel hands over a block every 4 ms at least
class Counting:
    def __init__(self, handle):
        self.handle, self.reads = handle, 0
    def next_batch(self, n):
        buf, meta = self.handle.next_batch(n)
        self.reads += bool(meta)
        return buf, meta
    def __getattr__(self, name):
        return getattr(self.handle, name)
src._handle = Counting(src._handle)
print("ready", flush=True)
got = 0
while got < int(sys.argv[2]):
    got += len(src.read(1 << 20, 0.5))
print(json.dumps([got, src._handle.reads, src.stats().kernel_dropped]), flush=True)
"""

HEADERS = """
import json, sys
from agent.capture.live import LiveSource
from agent.stages.decode import decode
src = LiveSource(sys.argv[1], block_timeout_ms=10, bpf=sys.argv[2] if len(sys.argv) > 2 else None)
print("ready", flush=True)
rows = []
while len(rows) < int(sys.argv[3] if len(sys.argv) > 3 else 5):
    batch = src.read(4096, 0.05)
    if len(batch):
        rows += zip(batch.caplen.tolist(), decode(batch).wirelen.tolist())
print(json.dumps(sorted(rows)), flush=True)
"""


def _frames() -> g.Capture:
    """One frame of each kind: bulk TCP, a DNS answer, mDNS, a VLAN-tagged DHCP reply, ARP padded long."""
    cap = g.Capture()
    tcp = g.eth(g.ETH_IPV4) + g.ipv4(g.TCP, "192.168.1.2", "203.0.113.9", g.tcp(40000, 443, payload=bytes(1400)))
    dns = g.eth(g.ETH_IPV4) + g.ipv4(g.UDP, "192.168.1.1", "192.168.1.2", g.udp(53, 40001, bytes(600)))
    mdns = g.eth(g.ETH_IPV6) + g.ipv6(g.UDP, "fe80::1", "ff02::fb", g.udp(5353, 5353, bytes(700)))
    dhcp = g.eth_vlan([7], g.ETH_IPV4) + g.ipv4(g.UDP, "192.168.1.1", "192.168.1.2", g.udp(67, 68, bytes(500)))
    arp = g.eth(g.ETH_ARP) + g.arp(2, "02:00:00:00:00:01", "192.168.1.1", "02:00:00:00:00:02", "192.168.1.2") + bytes(400)
    for i, frame in enumerate((tcp, dns, mdns, dhcp, arp)):
        cap.add(1_000_000 + i, frame)
    return cap


@pytest.mark.live
def test_only_the_headers_of_packets_nothing_reads_further_are_captured(veth: VethPair, tmp_path: Path) -> None:
    need_tool("tcpreplay")
    cap = _frames()
    lengths = [len(p.frame) for p in cap.packets]
    got = _run(veth, tmp_path, HEADERS, 5, capture=cap)
    # Bulk TCP is cut to 128 bytes, and decode still counts its 1454 bytes on the wire (from the IP
    # header); the packets names are learned from (DNS, mDNS, DHCP, non-IP) come whole.
    assert got == sorted([[128, lengths[0]], *([n, n] for n in lengths[1:])])
    assert lengths[0] == 1454


@pytest.mark.live
def test_the_any_device_is_captured_whole_through_the_users_filter(veth: VethPair, tmp_path: Path) -> None:
    # `any` has Linux cooked headers: libpcap cannot compile `vlan` for them, and opening it failed
    # on that until the header filter did without. It keeps whole packets (2 bytes longer each: a
    # 16-byte cooked header for a 14-byte Ethernet one), and the user's filter, which libpcap
    # rewrites for the cooked socket, still picks the TCP and ARP frames out of the five.
    need_tool("tcpreplay")
    cap = _frames()
    lengths = [len(p.frame) for p in cap.packets]
    got = _run(veth, tmp_path, HEADERS.replace("LiveSource(sys.argv[1]", "LiveSource('any'"), 5, capture=cap, args=("tcp or arp", "2"))
    assert got == sorted([[lengths[0] + 2, lengths[0] + 2], [lengths[4] + 2, lengths[4] + 2]])


DEEP = """
import json, sys
from agent.capture.live import LiveSource
from agent.stages.decode import decode
src = LiveSource(sys.argv[1], block_timeout_ms=10)
print("ready", flush=True)
rows = []
while len(rows) < 4:
    batch = src.read(4096, 0.05)
    if len(batch):
        b = decode(batch)
        rows += zip(batch.caplen.tolist(), b.wirelen.tolist(), b.sport.tolist(), b.dport.tolist(), b.error.tolist())
print(json.dumps(sorted(rows)), flush=True)
"""


@pytest.mark.live
def test_packets_whose_headers_lie_deeper_keep_more_of_their_bytes(veth: VethPair, tmp_path: Path) -> None:
    # Plain IPv6 TCP fits in the first 128 bytes. Behind two VLAN tags, or behind 72 bytes of IPv6
    # extension headers, the TCP header may end past them: those keep 256 bytes. Linux takes the
    # outer tag off a frame before any capture sees it, and libpcap puts it back: 4 bytes more.
    # Every one decodes its ports, without an error, and its length on the wire.
    need_tool("tcpreplay")
    payload = bytes(1200)
    chain = g.ext_header(60, 4) + g.ext_header(g.TCP, 3)  # hop-by-hop (40 bytes) -> destination options (32) -> TCP
    frames = [
        g.eth(g.ETH_IPV6) + g.ipv6(g.TCP, "fd00::1", "fd00::2", g.tcp(1001, 443, payload=payload)),
        g.eth_vlan([7, 8], g.ETH_IPV4) + g.ipv4(g.TCP, "192.168.1.2", "203.0.113.9", g.tcp(1002, 443, payload=payload)),
        g.eth(g.ETH_IPV6) + g.ipv6(0, "fd00::1", "fd00::2", chain + g.tcp(1003, 443, payload=payload)),
        g.eth(g.ETH_IPV4) + g.ipv4(g.TCP, "192.168.1.2", "203.0.113.9", g.tcp(1004, 443, payload=payload, data_offset=15)),
    ]
    cap = g.Capture()
    for i, frame in enumerate(frames):
        cap.add(1_000_000 + i, frame)
    got = _run(veth, tmp_path, DEEP, 4, capture=cap)
    n = [len(f) for f in frames]
    # A 60-byte TCP header (data offset 15) behind plain IPv4 keeps 128: decode reads its first 14 bytes.
    assert got == [[128, n[0], 1001, 443, 0], [128, n[3], 1004, 443, 0], [256, n[2], 1003, 443, 0], [260, n[1], 1002, 443, 0]]


@pytest.mark.live
def test_the_users_filter_still_decides_what_is_captured(veth: VethPair, tmp_path: Path) -> None:
    need_tool("tcpreplay")
    cap = _frames()
    lengths = [len(p.frame) for p in cap.packets]
    got = _run(veth, tmp_path, HEADERS, 5, capture=cap, args=("tcp or arp", "2"))
    assert got == sorted([[128, lengths[0]], [lengths[4], lengths[4]]])


def _run(pair: VethPair, tmp_path: Path, script: str, frames: int, *, capture: g.Capture | None = None, args: tuple[str, ...] = (), pps: int = 0) -> object:
    proc = subprocess.Popen(pair.in_receiver(sys.executable, "-c", script, pair.rx, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n", proc.stderr.read() if proc.stderr else ""
        if capture is None:
            _send(pair, tmp_path, frames)
        else:
            _replay(pair, capture.write(tmp_path / "frames.pcap"), pps)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    return json.loads(out)


SIZES = """
import json, sys
from agent.capture.live import LiveSource
src = LiveSource(sys.argv[1], block_timeout_ms=10)
max_packets, window, total = int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
print("ready", flush=True)
sizes = []
while sum(sizes) < total:
    batch = src.read(max_packets, window)
    if len(batch):
        sizes.append(len(batch))
print(json.dumps(sizes), flush=True)
"""


def _udp_frames(n: int) -> g.Capture:
    cap = g.Capture()
    for i in range(n):
        cap.add(1_000_000 + i, g.eth(g.ETH_IPV4) + g.ipv4(g.UDP, "10.0.0.1", "10.0.0.2", g.udp(1000, 2000, bytes(100))))
    return cap


@pytest.mark.live
def test_a_busy_link_hands_on_batches_three_quarters_full(veth: VethPair, tmp_path: Path) -> None:
    # 2,250 frames at full speed come in far less than half the 10 s window: each batch is handed
    # on once it holds three quarters of max_packets (750), never full (1,000), and nothing is lost.
    need_tool("tcpreplay")
    sizes = _run(veth, tmp_path, SIZES, 2250, capture=_udp_frames(2250), args=("1000", "10", "2250"))
    assert sizes == [750, 750, 750]


@pytest.mark.live
def test_a_light_link_gathers_more_than_a_busy_batch_in_a_window(veth: VethPair, tmp_path: Path) -> None:
    # 270 frames at 90 a second: three quarters of max_packets (75) take longer than half the 1 s
    # window, so batches are not cut there; they close with the window, about 90 each. A slow
    # sender or a late reader only makes the packets older when 75 have come, never younger.
    need_tool("tcpreplay")
    sizes = _run(veth, tmp_path, SIZES, 270, capture=_udp_frames(270), args=("100", "1", "270"), pps=90)
    assert isinstance(sizes, list) and sum(sizes) == 270
    assert max(sizes) > 75 and max(sizes) <= 100, sizes


@pytest.mark.live
def test_a_batch_is_handed_on_once_it_holds_max_bytes(veth: VethPair, tmp_path: Path) -> None:
    need_tool("tcpreplay")
    sizes = _run(veth, tmp_path, BY_BYTES, 20)
    # Returned within the test's 60 s, not the window's 600 s: the byte bound is checked after
    # each of libpcap's reads, so one read of a whole kernel block may overshoot it.
    assert isinstance(sizes, list) and sum(sizes) == 20


@pytest.mark.live
def test_wake_makes_a_read_waiting_out_its_window_return(veth: VethPair, tmp_path: Path) -> None:
    need_tool("tcpreplay")
    assert _run(veth, tmp_path, WOKEN, 3) == 3


@pytest.mark.live
def test_a_busy_link_is_read_every_few_blocks_not_at_each(veth: VethPair, tmp_path: Path) -> None:
    # 5,000 frames at 10k/s: half a second of traffic, a kernel block handed over every 4 ms.
    # Read at each block, that is some 125 reads; paced (a quarter of the ring's 16 blocks: 16 ms)
    # about 30. A loaded machine only makes the reader slower, so fewer reads still. Nothing is lost.
    need_tool("tcpreplay")
    cap = g.Capture()
    for i in range(5000):
        cap.add(1_000_000 + i, g.eth(g.ETH_IPV4) + g.ipv4(g.UDP, "10.0.0.1", "10.0.0.2", g.udp(1000, 2000, bytes(100))))
    got, reads, dropped = _run(veth, tmp_path, PACED, 5000, capture=cap, args=("5000",), pps=10_000)  # type: ignore[misc]
    assert (got, dropped) == (5000, 0)
    assert reads <= 70, reads
