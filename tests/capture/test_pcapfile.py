"""Classic pcap files read from a memory map: record for record what libpcap reads, damaged files included."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import numpy as np
import pcapgen as g
import pytest
from pcapgen import Record, libpcap_records

from agent.base.batch import Batch, RawBatch
from agent.capture import pcapfile
from agent.capture.forked import ForkedSource
from agent.capture.offline import FileSource
from agent.capture.pcapfile import PCAP_FORMATS, RUN_BLOCK, PcapMap


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


@pytest.fixture
def small_chains(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chains on files of a few hundred records: 4-record chains, tried from the ninth record on."""
    monkeypatch.setattr(pcapfile, "CHAIN_RECORDS", 4)
    monkeypatch.setattr(pcapfile, "MIN_CHAINS", 2)
    monkeypatch.setattr(pcapfile, "SERIAL_RECORDS", 8)


@pytest.mark.parametrize("chains", ["default", "small"])
def test_the_corpus_reads_as_libpcap_reads_it(corpus: Path, chains: str, request: pytest.FixtureRequest) -> None:
    """Every classic pcap file of tcpdump's corpus, the damaged ones too: the map reads what libpcap
    reads, and hands the rest of a file to libpcap at the first record it would read differently.
    With small chains, the corpus's files are walked in chains too."""
    if chains == "small":
        request.getfixturevalue("small_chains")
    mapped_to_the_end = handed_over = not_mapped = records = chained = 0
    differ = []
    for path in sorted(corpus.iterdir()):
        if path.read_bytes()[:4] not in PCAP_FORMATS:
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
            chained += m.chained
    assert differ == []
    # Small chains walk 5,461 of the records; the corpus's files are too small for the default ones.
    assert chained == (5461 if chains == "small" else 0)
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


def write_raw(
    path: Path, records: list[tuple[int, int, bytes]], *, order: str = "<", nanosecond: bool = False, snaplen: int = 65535, tail: bytes = b""
) -> Path:
    """A pcap file of (seconds, fraction, bytes) records, in either byte order, with micro- or nanosecond fractions."""
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, 1)]
    out += [struct.pack(order + "IIII", sec, frac, len(data), len(data)) + data for sec, frac, data in records]
    path.write_bytes(b"".join(out) + tail)
    return path


def mixed_records(n: int, *, seconds: int = 1_764_000_000, step_us: int = 150, payload: str = "random") -> list[tuple[int, int, bytes]]:
    """``n`` frames of random lengths from 60 to 1514 bytes, ``step_us`` apart, from ``seconds`` on."""
    rng = random.Random(n)
    out = []
    for i in range(n):
        sec, us = divmod(seconds * 1_000_000 + i * step_us, 1_000_000)
        size = rng.randint(60, 1514)
        out.append((sec, us, rng.randbytes(size) if payload == "random" else bytes(size)))
    return out


def read_map(path: Path, size: int) -> tuple[list[Record], PcapMap]:
    src = FileSource(path)
    assert src._map is not None
    m = src._map
    return source_records(src, size), m


@pytest.mark.parametrize("size", [64, 1000])
@pytest.mark.parametrize("order", ["<", ">"], ids=["little-endian", "big-endian"])
@pytest.mark.parametrize("nanosecond", [False, True], ids=["us", "ns"])
def test_chains_find_the_records_a_plain_walk_finds(tmp_path: Path, small_chains: None, size: int, order: str, nanosecond: bool) -> None:
    records = mixed_records(3000)
    if nanosecond:
        records = [(sec, us * 1000, data) for sec, us, data in records]
    path = write_raw(tmp_path / "mixed.pcap", records, order=order, nanosecond=nanosecond)
    got, m = read_map(path, size)
    assert got == libpcap_records(path)
    assert len(got) == 3000 and m.read == 3000 and not m.stopped
    # The byte order and the fraction's unit change nothing in the walk: only the batch size does.
    assert (m.chained, m.wrong_guesses) == ({64: 2918, 1000: 2992}[size], 0)


def test_chains_at_their_default_size(tmp_path: Path) -> None:
    """6,000 frames (4.6 MB): rounds of 512 chains of about 32 records, as ``replay`` walks them."""
    path = write_raw(tmp_path / "mixed.pcap", mixed_records(6000))
    got, m = read_map(path, 8192)
    assert got == libpcap_records(path)
    assert (m.chained, m.wrong_guesses) == (5726, 0)


def fake_records(n: int) -> list[tuple[int, int, bytes]]:
    """Frames whose payloads are full of what look like record headers (a pcap file sent over the network, say)."""
    rng = random.Random(7)
    out = []
    for i in range(n):
        sec, us = divmod(1_764_000_000_000_000 + i * 100, 1_000_000)
        fake = struct.pack("<IIII", sec, us, 200, 200) + bytes(200)  # a 200-byte record, as in the file
        size = rng.randint(100, 1500)
        out.append((sec, us, (bytes(rng.randint(0, 40)) + fake * 7)[:size]))
    return out


def test_a_wrong_guess_costs_time_not_records(tmp_path: Path, small_chains: None) -> None:
    """Chains that start at a fake header inside a payload are found out (the chain before does not
    land on them) and walked again: the records are still exactly libpcap's."""
    path = write_raw(tmp_path / "fakes.pcap", fake_records(2000))
    got, m = read_map(path, 500)
    assert got == libpcap_records(path)
    assert len(got) == 2000
    assert (m.wrong_guesses, m.chained) == (5, 27)  # each wrong guess sends a round's worth one at a time


@pytest.mark.parametrize(
    "damage",
    ["over the snapshot length", "short header", "short record"],
)
def test_damage_after_a_walk_in_chains(tmp_path: Path, small_chains: None, damage: str) -> None:
    records = mixed_records(1000)
    tail = b""
    if damage == "over the snapshot length":
        sec, us, _ = records[700]
        records[700] = (sec, us, bytes(1600))  # the file says 1514 at most
    elif damage == "short header":
        tail = bytes(9)
    else:
        tail = struct.pack("<IIII", 1_764_000_001, 0, 400, 400) + bytes(100)
    path = write_raw(tmp_path / "damaged.pcap", records, snaplen=1514, tail=tail)
    got, m = read_map(path, 100)
    assert got == libpcap_records(path)
    assert m.stopped
    assert m.chained == (777 if damage == "over the snapshot length" else 959)  # chains walk ahead of the record over
    assert m.read == (700 if damage == "over the snapshot length" else 1000)
    assert len(got) == 1000  # libpcap reads on from the long record, cut to the snapshot length


@pytest.mark.parametrize(
    ("seconds", "payload"),
    [(65536 * 26_917 - 1, "random"), (0, "zero")],
    ids=["across a 2**16-second boundary", "zero seconds, zero payloads"],
)
def test_timestamps_a_guess_cannot_use(tmp_path: Path, small_chains: None, seconds: int, payload: str) -> None:
    """A guess looks for the last record's high timestamp bytes: where they change, or are everywhere,
    fewer chains (or none) are used, and the records are the same."""
    path = write_raw(tmp_path / "ts.pcap", mixed_records(2000, seconds=seconds, step_us=1000, payload=payload))
    got, m = read_map(path, 200)
    assert got == libpcap_records(path)
    assert len(got) == 2000
    if payload == "zero":
        assert m.chained == 0  # a zero byte everywhere: chains are not tried


def test_random_files_read_as_libpcap_reads_them(tmp_path: Path, small_chains: None) -> None:
    """Forty seeded files: mixed sizes, runs, fake headers in payloads, timestamps that jump, and an
    end cut anywhere. Whatever the walk does with them, the records are libpcap's."""
    chained = wrong = 0
    for seed in range(40):
        rng = random.Random(seed)
        records = []
        sec = rng.choice([0, 1_764_000_000, 65536 * 26_917 - 3])
        for _ in range(rng.randint(50, 600)):
            sec += rng.choice([0] * 30 + [1, 40_000])  # now and then, across a 2**16-second boundary
            kind = rng.random()
            if kind < 0.2:
                fake = struct.pack("<IIII", sec, 5, 60, 60) + bytes(60)  # two records of this very file, it seems
                data = rng.randbytes(rng.randint(0, 200)) + fake * 2 + rng.randbytes(rng.randint(0, 300))
            elif kind < 0.4:
                data = bytes(1514)  # a run of full-size frames
            else:
                data = rng.randbytes(rng.randint(42, 1514))
            records.append((sec, rng.randrange(1_000_000), data))
        whole = write_raw(tmp_path / "r.pcap", records).read_bytes()
        path = tmp_path / f"random-{seed}.pcap"
        path.write_bytes(whole[: rng.choice([len(whole), rng.randrange(24, len(whole))])])
        src = FileSource(path)
        m = src._map
        assert m is not None
        assert source_records(src, rng.choice([37, 500])) == libpcap_records(path), seed
        chained, wrong = chained + m.chained, wrong + m.wrong_guesses
    assert (chained, wrong) == (2216, 12)  # both paths were taken


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
    assert peak < 24 << 10  # KiB: a few batches (1.5 MB each) and the 2 MB the map gives back at a time, not 52 MB
