"""Classic pcap files read from a memory map: record for record what libpcap reads, damaged files included."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pcapgen as g
import pytest
from pcapgen import Record, libpcap_records

from agent.batch import Batch, RawBatch
from agent.capture.forked import ForkedSource
from agent.capture.offline import FileSource
from agent.capture.pcapfile import RUN_BLOCK, PcapMap
from agent.capture.wirelen import PCAP_MAGICS


def source_records(src: FileSource | ForkedSource, size: int) -> list[Record]:
    out: list[Record] = []
    try:
        while (got := src.read(size, 0.0)) is not None:
            b = got.raw if isinstance(got, Batch) else got
            for ts, o, c, w in zip(b.ts.tolist(), b.offset.tolist(), b.caplen.tolist(), b.wirelen.tolist()):
                out.append((ts, c, w, bytes(b.data[o : o + c])))
    finally:
        src.close()
    return out


def test_the_corpus_reads_as_libpcap_reads_it(corpus: Path) -> None:
    """Every classic pcap file of tcpdump's corpus, the damaged ones too: the map reads what libpcap
    reads, and hands the rest of a file to libpcap at the first record it would read differently."""
    mapped_to_the_end = handed_over = not_mapped = records = 0
    differ = []
    for path in sorted(corpus.iterdir()):
        if path.read_bytes()[:4] not in PCAP_MAGICS:
            continue
        src = FileSource(path)
        m = src._map
        expected = libpcap_records(path)
        got = source_records(src, 64)
        records += len(got)
        if got != expected:
            differ.append(path.name)
        if m is None:
            not_mapped += 1  # a snapshot length of 0 or above 262144: libpcap's own rules apply
        else:
            handed_over += m.stopped
            mapped_to_the_end += not m.stopped
    assert differ == []
    # The corpus's 785 pcap files: 738 are read from the map to the end, 34 have a record the map
    # leaves to libpcap (most of them cut to the snapshot length), 13 are read by libpcap alone.
    assert (mapped_to_the_end, handed_over, not_mapped, records) == (738, 34, 13, 9871)


def runs_capture() -> g.Capture:
    """Runs of equal frames of many lengths (around the block sizes), each after a frame of another length."""
    cap = g.Capture()
    t = 1_000_000
    for run, size in [(1, 60), (7, 61), (8, 62), (9, 63), (16, 64), (23, 65), (24, 66), (100, 1514), (RUN_BLOCK + 5, 70), (5_000, 1514), (3, 90)]:
        cap.add(t, bytes(range(256)) * 8 + bytes(33))  # a frame of another length between runs
        for i in range(run):
            t += 10
            cap.add(t, g.pad(bytes([run % 251, i % 251]) * 30, size)[:size])
    return cap


@pytest.mark.parametrize("size", [1, 7, 100, 4096])
def test_runs_of_one_length_are_walked_in_blocks_exactly(tmp_path: Path, size: int) -> None:
    path = runs_capture().write(tmp_path / "runs.pcap")
    src = FileSource(path)
    assert src.mapped == path
    assert source_records(src, size) == libpcap_records(path)


def write_records(path: Path, records: list[tuple[int, int, bytes]], *, snaplen: int, tail: bytes = b"") -> Path:
    """A pcap file with the records' captured and original lengths as given: (caplen field, origlen field, bytes)."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, 1)]
    for i, (caplen, origlen, data) in enumerate(records):
        out.append(struct.pack("<IIII", 1000 + i, 0, caplen, origlen) + data)
    path.write_bytes(b"".join(out) + tail)
    return path


def test_records_above_the_snapshot_length_from_the_first_are_left_to_libpcap(tmp_path: Path) -> None:
    frame = g.eth(g.ETH_IPV4) + g.ipv4(g.UDP, "10.0.0.1", "10.0.0.2", g.udp(1, 2, bytes(100)))
    records = [(len(frame), len(frame), frame)] * 6  # 142 bytes each, in a file that says 128 at most
    path = write_records(tmp_path / "over.pcap", records, snaplen=128)
    src = FileSource(path)
    m = src._map
    got = source_records(src, 100)
    assert m is not None and m.stopped and m.read == 0  # the first record is already over: libpcap reads them all
    assert got == libpcap_records(path)
    assert [r[1] for r in got] == [128] * 6  # libpcap cut each to the snapshot length


def test_a_record_over_the_snapshot_length_mid_file(tmp_path: Path) -> None:
    small = bytes(60)
    big = bytes(range(200))
    records = [(60, 60, small)] * 4 + [(200, 200, big)] + [(60, 60, small)] * 3
    path = write_records(tmp_path / "mid.pcap", records, snaplen=128)
    src = FileSource(path)
    m = src._map
    got = source_records(src, 100)
    assert m is not None and m.read == 4
    assert got == libpcap_records(path)
    assert [r[1] for r in got] == [60] * 4 + [128] + [60] * 3


@pytest.mark.parametrize(
    "tail",
    [b"", bytes(7), struct.pack("<IIII", 2000, 0, 60, 60) + bytes(10)],  # the last: a header that promises 60 bytes, and 10 follow
    ids=["clean", "short header", "short record"],
)
def test_the_end_of_a_file(tmp_path: Path, tail: bytes) -> None:
    path = write_records(tmp_path / "end.pcap", [(60, 60, bytes(60))] * 10, snaplen=65535, tail=tail)
    src = FileSource(path)
    m = src._map
    got = source_records(src, 4)
    assert got == libpcap_records(path)
    assert len(got) == 10
    assert m is not None and m.stopped == bool(tail) and m.read == 10


def test_pcapng_and_filters_are_read_by_libpcap(tmp_path: Path) -> None:
    cap = runs_capture()
    assert FileSource(cap.write(tmp_path / "a.pcapng", pcapng=True)).mapped is None
    assert FileSource(cap.write(tmp_path / "a.pcap"), bpf="udp").mapped is None
    assert PcapMap.open(tmp_path / "a.pcapng") is None


def rss_file_kib() -> int:
    """Resident pages of files mapped by this process (libraries included)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile:"))


@pytest.mark.parametrize("forked", [False, True], ids=["in-process", "reader process"])
def test_pages_of_the_map_are_given_back(tmp_path: Path, forked: bool) -> None:
    """A 52 MB file read batch by batch, every packet's bytes touched: the pages of the map stay
    resident only for the batches in use, not for the whole file."""
    frame = g.eth(g.ETH_IPV4) + g.ipv4(g.UDP, "10.0.0.1", "10.0.0.2", g.udp(1, 2, bytes(1472)))
    n = 34_000
    path = tmp_path / "big.pcap"
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        record = struct.pack("<IIII", 1, 0, len(frame), len(frame)) + frame
        f.write(record * n)
    assert path.stat().st_size > 50_000_000
    src: FileSource | ForkedSource = FileSource(path)
    if forked:
        src = ForkedSource(src, batch_size=1024, slot_bytes=4 << 20)
    before = rss_file_kib()
    peak, seen, checksum = 0, 0, 0
    previous: RawBatch | None = None
    try:
        while (got := src.read(1024, 0.0)) is not None:
            b = got.raw if isinstance(got, Batch) else got
            checksum += int(b.data[b.offset[:, None] + np.arange(0, len(frame), 512)].sum())  # touch every page of every packet
            seen += len(b)
            previous = b  # one batch still in use while the next is read
            peak = max(peak, rss_file_kib() - before)
    finally:
        src.close()
    del previous
    assert seen == n
    assert checksum == n * sum(frame[0 : len(frame) : 512])  # every packet's bytes as written
    assert peak < 24 << 10  # KiB: two batches (3 MB) and the 8 MB the map gives back at a time, not 52 MB
