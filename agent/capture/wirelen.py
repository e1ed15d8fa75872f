"""Original (on-the-wire) packet lengths of a capture file, read beside libpcap.

pcapy-ng's ``next_batch`` hands over each packet's captured length but not its original
length, which pktagent counts as the packet's bytes. For pcap files the record headers sit
at offsets that follow from the captured lengths, so a whole batch's original lengths are
gathered from a memory map in one vectorised step and checked against what libpcap
reported. pcapng blocks vary in size, so they are walked record by record (a slower path,
fine for the captures people keep in pcapng). Whenever the file disagrees with libpcap the
index gives up and reports 0 ("unknown"): decode then takes the length from the IP header.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Generator, Iterator
from pathlib import Path

import numpy as np

from agent.base.batch import I64
from agent.capture.pcapfile import PCAP_FORMATS, RELEASE_CHUNK

PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


def file_kind(head: bytes) -> str | None:
    """'pcap', 'pcapng' or None, from the first four bytes of a file."""
    if head[:4] in PCAP_FORMATS:
        return "pcap"
    if head[:4] == PCAPNG_MAGIC:
        return "pcapng"
    return None


class WireLengths:
    """Feeds original lengths for consecutive batches of one capture file.

    >>> # lengths = WireLengths(path); lengths.take(caplens) -> wire lengths (0 = unknown)
    """

    def __init__(self, path: Path, *, filtered: bool = False) -> None:
        self.filtered = filtered  # a BPF filter hides records from us: match each one
        self._mm: mmap.mmap | None = None
        self._walk: Generator[tuple[int, int, int | None]] | None = None
        self._lost = False
        with open(path, "rb") as f:
            head = f.read(24)
            kind = file_kind(head)
            if kind == "pcap" and len(head) == 24:
                order, self._rec, self._frac_scale = PCAP_FORMATS[head[:4]]
                self._dtype = np.dtype(order + "u4")
                size = path.stat().st_size
                if size > 24:
                    self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                    self._buf = np.frombuffer(self._mm, np.uint8)
                self._pos = 24
                self._released = 0
            elif kind == "pcapng":
                self._walk = _pcapng_lengths(path)
            else:
                self._lost = True

    def take(self, caplen: I64, ts: I64) -> I64:
        """Original lengths of the next packets libpcap returned (captured lengths, timestamps in us)."""
        n = caplen.size
        if self._lost or n == 0:
            return np.zeros(n, np.int64)
        if self._walk is not None:
            return self._take_pcapng(caplen, ts)
        return self._take_pcap(caplen, ts)

    def close(self) -> None:
        if self._walk is not None:
            self._walk.close()  # unmaps a pcapng file (a generator)
        if self._mm is not None:
            del self._buf
            self._mm.close()
            self._mm = None

    def _take_pcap(self, caplen: I64, ts: I64) -> I64:
        if self._mm is None:
            self._lost = True
            return np.zeros(caplen.size, np.int64)
        if not self.filtered:
            step = self._rec + caplen
            rec = self._pos + np.concatenate(([0], np.cumsum(step[:-1])))
            if int(rec[-1]) + 16 <= self._buf.size:
                view = np.lib.stride_tricks.as_strided(self._buf, shape=(self._buf.size - 15, 16), strides=(1, 1))
                fields = view[rec].copy().view(self._dtype).astype(np.int64)  # sec, frac, incl_len, orig_len
                if np.array_equal(fields[:, 2], caplen) and np.array_equal(fields[:, 0], ts // 1_000_000):
                    self._advance(int(rec[-1] + step[-1]))
                    wire: I64 = np.where(fields[:, 3] > 0, fields[:, 3], caplen)
                    return wire
        # A BPF filter skipped records, or libpcap shortened one: match records one by one.
        return self._walk_pcap(caplen, ts)

    def _walk_pcap(self, caplen: I64, ts: I64) -> I64:
        assert self._mm is not None
        out = np.zeros(caplen.size, np.int64)
        unpack = struct.Struct(self._dtype.str[0] + "IIII").unpack_from
        pos, size, scale = self._pos, self._buf.size, self._frac_scale
        for i, (want, t) in enumerate(zip(caplen.tolist(), ts.tolist())):
            while pos + 16 <= size:
                rsec, rfrac, incl, orig = unpack(self._mm, pos)
                pos += self._rec + incl
                # On total microseconds: a damaged record may carry a fraction of a second above 1e6.
                if rsec * 1_000_000 + rfrac // scale == t and incl >= want:
                    out[i] = orig or want
                    break
            else:
                self._lost = True
                break
        self._advance(pos)
        return out

    def _advance(self, pos: int) -> None:
        """Move past records read; give back the mapped pages behind them, so the map never swells the RSS."""
        self._pos = pos
        behind = (pos // RELEASE_CHUNK) * RELEASE_CHUNK
        if behind > self._released and self._mm is not None:
            self._mm.madvise(mmap.MADV_DONTNEED, self._released, behind - self._released)
            self._released = behind

    def _take_pcapng(self, caplen: I64, ts: I64) -> I64:
        """Match each packet to the next block with its timestamp (a BPF filter may have skipped blocks)."""
        assert self._walk is not None
        out = np.zeros(caplen.size, np.int64)
        for i, (want, t) in enumerate(zip(caplen.tolist(), ts.tolist())):
            for got_cap, got_orig, got_ts in self._walk:
                if got_cap >= want and (got_ts is None or got_ts == t or not self.filtered):
                    out[i] = got_orig or want
                    break
            else:
                self._lost = True
                break
        return out


def _tsresol(data: bytes | mmap.mmap, order: str, start: int, end: int) -> int:
    """Timestamp units per second of an interface, from its if_tsresol option (default: microseconds)."""
    at = start
    while at + 4 <= end:
        code, length = struct.unpack_from(order + "HH", data, at)
        if code == 0:
            break
        if code == 9 and length == 1:
            v = data[at + 4]
            return int(2 ** (v & 0x7F)) if v & 0x80 else int(10**v)
        at += 4 + length + (-length % 4)
    return 1_000_000


def _pcapng_lengths(path: Path) -> Generator[tuple[int, int, int | None]]:
    """(captured length, original length, timestamp in us or None) of each packet block of a pcapng file, in order.

    The file is read from a map whose pages are given back behind the walk, so a file of any size
    costs a few megabytes of RSS.
    """
    with open(path, "rb") as f:
        if f.seek(0, 2) < 12:
            return
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        yield from _pcapng_blocks(data)
    finally:
        data.close()


def _pcapng_blocks(data: mmap.mmap) -> Iterator[tuple[int, int, int | None]]:
    pos, order, released = 0, "<", 0
    interfaces: list[tuple[int, int]] = []  # (snaplen, timestamp units per second)
    while pos + 12 <= len(data):
        if data[pos : pos + 4] == PCAPNG_MAGIC:
            order = "<" if data[pos + 8 : pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            interfaces = []
        kind, total = struct.unpack_from(order + "II", data, pos)
        if total < 12 or pos + total > len(data):
            return
        if kind == 1 and total >= 20:  # interface description: its snaplen and timestamp resolution
            interfaces.append((struct.unpack_from(order + "I", data, pos + 12)[0], _tsresol(data, order, pos + 16, pos + total - 4)))
        elif kind == 6 and total >= 32:  # enhanced packet block
            iface, hi, lo, cap, orig = struct.unpack_from(order + "IIIII", data, pos + 8)
            units = interfaces[iface][1] if iface < len(interfaces) else 1_000_000
            yield cap, orig, ((hi << 32) | lo) * 1_000_000 // units
        elif kind == 3 and total >= 16:  # simple packet block: captured = min(original, snaplen), no timestamp
            orig = struct.unpack_from(order + "I", data, pos + 8)[0]
            snap = interfaces[0][0] if interfaces and interfaces[0][0] else orig
            yield min(orig, snap, total - 16), orig, None
        elif kind == 2 and total >= 32:  # obsolete packet block
            iface, _, hi, lo, cap, orig = struct.unpack_from(order + "HHIIII", data, pos + 8)
            units = interfaces[iface][1] if iface < len(interfaces) else 1_000_000
            yield cap, orig, ((hi << 32) | lo) * 1_000_000 // units
        pos += total
        if pos - released >= 2 * RELEASE_CHUNK:
            behind = (pos // RELEASE_CHUNK) * RELEASE_CHUNK
            data.madvise(mmap.MADV_DONTNEED, released, behind - released)
            released = behind
