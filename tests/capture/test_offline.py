"""Capture files through libpcap: wire lengths, pcapng, filters, damage, pacing."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pcapgen as g
import pcapy
import pytest

from agent.capture._pcapy import columns, joined
from agent.capture.offline import FileSource
from agent.capture.wirelen import WireLengths
from agent.errors import CaptureError, ConfigError
from agent.runtime.engine import batch_nbytes


def capture(n: int = 50, cut: int | None = None) -> g.Capture:
    cap = g.Capture(snaplen=cut or 262144)
    for i in range(n):
        frame = g.eth(g.ETH_IPV4) + g.ipv4(g.UDP, "10.0.0.1", "10.0.0.2", g.udp(1000 + i, 53, bytes(20 + 10 * i)))
        cap.add(1_000_000 + 1000 * i, frame, cut=cut)
    return cap


class Clock:
    """A paced replay's clock and sleep: time moves only when the source sleeps or the test says so."""

    def __init__(self, now: float = 5000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def paced(path: Path, clock: Clock, **options: bool) -> FileSource:
    return FileSource(path, pace=True, clock=clock, sleep=clock.sleep, **options)


def read_all(src: FileSource, size: int = 7) -> tuple[int, int, list[int]]:
    packets = wire = 0
    times: list[int] = []
    while (b := src.read(size, 0.0)) is not None:
        packets += len(b)
        wire += int(b.wirelen.sum())
        times += b.ts.tolist()
    return packets, wire, times


@pytest.mark.parametrize("pcapng", [False, True])
def test_wire_lengths_of_frames_cut_by_the_snaplen(tmp_path: Path, pcapng: bool) -> None:
    cap = capture(cut=64)
    src = FileSource(cap.write(tmp_path / "cut.pcap", pcapng=pcapng))
    packets, wire, times = read_all(src)
    assert (packets, wire) == (50, cap.wire_bytes)
    assert times == [p.ts_us for p in cap.packets]
    assert src.stats().received == 50


def test_nanosecond_pcap(tmp_path: Path) -> None:
    cap = capture(cut=80)
    path = tmp_path / "ns.pcap"
    g.write_pcap(path, cap.packets, nanosecond=True, snaplen=80)
    assert read_all(FileSource(path))[:2] == (50, cap.wire_bytes)


def test_bpf_filter_keeps_wire_lengths_right(tmp_path: Path) -> None:
    cap = capture(cut=70)
    src = FileSource(cap.write(tmp_path / "f.pcap"), bpf="udp src port 1003 or udp src port 1040")
    packets, wire, _ = read_all(src)
    assert (packets, wire) == (2, cap.packets[3].wire_len + cap.packets[40].wire_len)


def test_not_a_capture_and_missing_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a capture\n")
    with pytest.raises(CaptureError, match=r"notes.txt is not a capture file: expected pcap or pcapng"):
        FileSource(text)
    with pytest.raises(CaptureError, match=r"cannot read capture file .*gone.pcap: No such file or directory"):
        FileSource(tmp_path / "gone.pcap")


def test_bpf_rejected_by_libpcap(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"bpf_filter: libpcap rejects 'port nope'"):
        FileSource(capture().write(tmp_path / "a.pcap"), bpf="port nope")


def test_file_cut_short_is_read_up_to_the_cut(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cap = capture()
    path = cap.write(tmp_path / "short.pcap")
    data = path.read_bytes()
    record_sizes = [16 + len(p.frame) for p in cap.packets]
    cut_at = 24 + sum(record_sizes[:30]) + 20  # in the middle of record 31
    path.write_bytes(data[:cut_at])
    with caplog.at_level(logging.WARNING):
        packets, wire, _ = read_all(FileSource(path), size=8)
    assert (packets, wire) == (30, sum(p.wire_len for p in cap.packets[:30]))
    assert "short.pcap is cut short or damaged after packet" in caplog.text


def test_paced_replay_moves_timestamps_to_now_and_waits(tmp_path: Path) -> None:
    cap = capture(n=5)  # one packet every millisecond
    clock = Clock()
    src = paced(cap.write(tmp_path / "p.pcap"), clock)
    first = src.read(100, 0.0)
    assert first is not None and first.ts.tolist() == [5_000_000_000]
    clock.now += 0.0025
    second = src.read(100, 0.0)
    assert second is not None and second.ts.tolist() == [5_000_001_000, 5_000_002_000]


def test_loop_starts_over(tmp_path: Path) -> None:
    src = FileSource(capture(n=3).write(tmp_path / "l.pcap"), loop=True)
    got = sum(len(src.read(2, 0.0) or []) for _ in range(5))
    assert got == 8  # 2 + 1, then 2 + 1, then 2 more: it never ends


def rss_kib() -> int:
    """Resident memory of this process, anonymous and file-backed."""
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["RssAnon"].split()[0]) + int(fields["RssFile"].split()[0])


def test_a_large_pcapng_file_is_not_held_in_memory(tmp_path: Path) -> None:
    """The original lengths of a pcapng file come from a walk of its blocks that gives pages back
    as it goes: a 52 MB file read to the end costs far less than 52 MB of RSS."""
    frame = g.eth(g.ETH_IPV4) + g.ipv4(g.UDP, "10.0.0.1", "10.0.0.2", g.udp(1, 2, bytes(1472)))
    n = 34_000
    path = tmp_path / "big.pcapng"
    g.write_pcapng(path, [g.Packet(1_000_000 + i, frame, len(frame) + 100) for i in range(n)])  # wire: 100 bytes more
    assert path.stat().st_size > 50_000_000
    lengths = WireLengths(path)
    before = rss_kib()
    peak, wire = 0, 0
    try:
        caplen = np.full(1000, len(frame), np.int64)
        for start in range(0, n, 1000):
            wire += int(lengths.take(caplen, 1_000_000 + start + np.arange(1000)).sum())
            peak = max(peak, rss_kib() - before)
    finally:
        lengths.close()
    assert wire == n * (len(frame) + 100)
    assert peak < 16 << 10  # KiB: the 4 MB the walk gives back at a time, not the 52 MB file


@pytest.mark.parametrize("pcapng", [False, True])
def test_a_paced_slice_keeps_only_its_own_packets_alive(tmp_path: Path, pcapng: bool) -> None:
    # A paced replay hands on a few packets at a time; each slice waiting in the queue must not
    # keep the whole read (its columns, or its bytes when libpcap read them) alive.
    cap = capture(n=50)
    clock = Clock()
    src = paced(cap.write(tmp_path / "p.pcap", pcapng=pcapng), clock)
    first = src.read(100, 0.0)
    assert first is not None and len(first) == 1
    assert batch_nbytes(first) == 62 + 4 * 8  # its 62 captured bytes and one row of four int64 columns
    clock.now += 0.0015
    second = src.read(100, 0.0)
    assert second is not None and len(second) == 1
    assert batch_nbytes(second) == 72 + 4 * 8
    src.close()


def test_paced_slices_of_a_mapped_file_do_not_keep_it_mapped(tmp_path: Path) -> None:
    # A short file looped at its pace is mapped afresh on every pass; a slice waiting in the queue
    # that viewed the map kept it (and a descriptor) open: thousands a second under `run --pcap --loop`.
    import mmap

    def viewed_map(a: np.ndarray) -> object:
        base: object = a
        while isinstance(base, np.ndarray):
            base = base.base
        return base.obj if isinstance(base, memoryview) else base

    src = paced(capture(n=50).write(tmp_path / "m.pcap"), Clock(), loop=True)
    assert src.mapped is not None  # read from a map, not through libpcap
    slices = [b for _ in range(12) if (b := src.read(100, 10.0)) is not None and len(b)]  # a long window: a pass at a time
    assert [len(s) for s in slices] == [50] * 6  # each pass waited out (49 ms), then handed on whole
    assert not any(isinstance(viewed_map(s.data), mmap.mmap) for s in slices)
    src.close()


def test_a_paced_replay_never_hands_over_a_packet_before_its_time(tmp_path: Path) -> None:
    # A one-second window batches what becomes due, like a live capture; it does not reach ahead.
    cap = capture(n=5)  # one packet every millisecond
    clock = Clock()
    src = paced(cap.write(tmp_path / "p.pcap"), clock)
    first = src.read(100, 1.0)
    assert first is not None and len(first) == 0  # the file's last packet is 4 ms away: wait for it
    assert clock.slept == [pytest.approx(0.004)]
    second = src.read(100, 1.0)
    assert second is not None and second.ts.tolist() == [5_000_000_000 + 1000 * i for i in range(5)]
    assert int(second.ts.max()) <= int(clock.now * 1_000_000)


def test_parts_of_a_read_join_into_one_batch(tmp_path: Path) -> None:
    # A live read gathers a next_batch result or two per kernel block; joined they are the batch read at once.
    path = tmp_path / "a.pcap"
    capture(50).write(path)
    whole = columns(*pcapy.open_offline(str(path)).next_batch(50))
    handle = pcapy.open_offline(str(path))
    parts = [handle.next_batch(n) for n in (1, 20, 7, 22)]
    assert [len(meta) // 16 for _, meta in parts] == [1, 20, 7, 22]
    got = joined(parts)
    for a, b in zip(got, whole):
        assert np.array_equal(a, b)
    assert [int(x) for x in got[1][:3]] == [0, 62, 134]  # offsets run on across the parts: frames of 62 and 72 bytes
    assert joined(parts[:1])[1].tolist() == [0]
