"""Classic pcap files read straight from a memory map: record headers walked, packet bytes never copied.

libpcap copies every packet out of the file, and pcapy-ng's ``next_batch`` copies it again;
on full-size frames that copying is most of a replay's reading time. A classic pcap file is
a 24-byte header followed by records of a 16-byte header and the packet, so the packets can
be used where they lie: ``PcapMap`` walks the record headers in a memory map of the file and
hands out batches whose ``data`` is the map itself.

The walk is serial (each record's length says where the next starts). Runs of records of one
length, the norm in bulk transfers, are walked a block at a time: the records a constant
stride would put in place are read in one vectorised step, and the run is taken as far as
every one of them has that length. Anything libpcap would treat differently from a plain
read — a captured length above the file's snapshot length, a record cut off by the end of
the file — stops the map at that record (``stopped``), and the caller carries on with
libpcap from there, so damaged files behave exactly as they do under libpcap. Pages behind
the batches still in use are given back as the walk goes on (``MappedPages``).

>>> # pm = PcapMap.open(path); offset, caplen, wirelen, ts = pm.next(4096)
"""

from __future__ import annotations

import collections
import contextlib
import mmap
import struct
import threading
import weakref
from pathlib import Path

import numpy as np

from agent.batch import I64, U8

MAGICS = {  # byte order and divisor that turns the fraction into microseconds
    b"\xd4\xc3\xb2\xa1": ("<", 1),
    b"\xa1\xb2\xc3\xd4": (">", 1),
    b"\x4d\x3c\xb2\xa1": ("<", 1000),
    b"\xa1\xb2\x3c\x4d": (">", 1000),
}
MAX_SNAPLEN = 262144  # libpcap's largest snapshot length (MAXIMUM_SNAPLEN)
RUN_START = 7  # records of one length in a row (after the first) before a run is tried as a block
RUN_BLOCK = 2048  # records tried per block
RELEASE_CHUNK = 8 << 20  # bytes of the map handed back to the kernel at a time


class MappedPages:
    """Pages of a read-only file map, handed back to the kernel once no batch uses them.

    The map of a large file would otherwise fill the resident set with all of it. Each batch
    is ``hold``-ed with an array that lives as long as the batch; when the last batch before
    a region is gone, the region is given back (``MADV_DONTNEED``; the page cache keeps it).
    """

    def __init__(self, mm: mmap.mmap) -> None:
        self._mm = mm
        self._lock = threading.Lock()
        self._in_use: collections.Counter[int] = collections.Counter()  # batch start -> batches
        self._front = 0  # the end of the last batch held
        self._released = 0

    def hold(self, token: np.ndarray, start: int, end: int) -> None:
        """A batch spans ``[start, end)`` of the file while ``token`` lives."""
        with self._lock:
            self._in_use[start] += 1
            self._front = max(self._front, end)
        weakref.finalize(token, self._done, start)

    def _done(self, start: int) -> None:
        with self._lock:
            self._in_use[start] -= 1
            if not self._in_use[start]:
                del self._in_use[start]
            floor = min(self._in_use) if self._in_use else self._front
            behind = (floor // RELEASE_CHUNK) * RELEASE_CHUNK
            if behind > self._released:
                with contextlib.suppress(ValueError):  # the map is closed: nothing to give back
                    self._mm.madvise(mmap.MADV_DONTNEED, self._released, behind - self._released)
                self._released = behind


class PcapMap:
    """Batches of records from a classic pcap file, as offsets into a map of the whole file."""

    def __init__(self, mm: mmap.mmap, order: str, divisor: int, snaplen: int) -> None:
        self._mm = mm
        self.data: U8 = np.frombuffer(mm, np.uint8)
        self.pages = MappedPages(mm)
        self._u32 = struct.Struct(order + "I").unpack_from
        self._hdr = np.dtype(order + "u4")
        self._divisor = divisor
        self._snaplen = snaplen
        self._pos = 24
        self.read = 0  # records handed out
        self.stopped = False  # a record libpcap must read from here on (or the end)

    @classmethod
    def open(cls, path: Path) -> PcapMap | None:
        """A map of ``path`` when it is a classic pcap file that can be read so; else None (read it with libpcap)."""
        with open(path, "rb") as f:
            head = f.read(24)
            if len(head) < 24 or head[:4] not in MAGICS:
                return None
            order, divisor = MAGICS[head[:4]]
            snaplen = struct.unpack_from(order + "I", head, 16)[0]
            if not 0 < snaplen <= MAX_SNAPLEN or f.seek(0, 2) <= 24:
                return None
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return cls(mm, order, divisor, snaplen)

    def next(self, max_packets: int) -> tuple[I64, I64, I64, I64]:
        """(offset of the packet, captured length, original length, timestamp in us) of the next records."""
        at = self._walk(max_packets)
        if at.size == 0:
            return at, at, at, at
        view = np.lib.stride_tricks.as_strided(self.data, shape=(self.data.size - 15, 16), strides=(1, 1))
        fields = view[at].copy().view(self._hdr).astype(np.int64)  # sec, fraction, caplen, original length
        over = np.flatnonzero(fields[:, 2] > self._snaplen)
        if over.size:
            # libpcap cuts such a record to the snapshot length: it reads on from this one.
            cut = int(over[0])
            self._pos, self.stopped = int(at[cut]), True
            at, fields = at[:cut], fields[:cut]
            if cut == 0:
                return at, at, at, at
        self.read += at.size
        ts = fields[:, 0] * 1_000_000 + self._microseconds(fields[:, 1])
        caplen = fields[:, 2]
        wirelen: I64 = np.where(fields[:, 3] > 0, fields[:, 3], caplen)
        offset = at + 16
        self.pages.hold(offset, int(at[0]), int(offset[-1] + caplen[-1]))
        return offset, caplen, wirelen, ts

    def _microseconds(self, fraction: I64) -> I64:
        """The fraction of a second in microseconds, as libpcap hands it on through pcapy-ng.

        A nanosecond fraction is divided as the signed 32-bit number libpcap reads it as, and
        the result is taken as unsigned again: only a damaged record (a fraction of 2**31 or
        more) shows the difference.
        """
        if self._divisor == 1:
            return fraction
        signed = np.where(fraction >= 1 << 31, fraction - (1 << 32), fraction)
        micro: I64 = (np.sign(signed) * (np.abs(signed) // self._divisor)) % (1 << 32)
        return micro

    def close(self) -> None:
        self.data = np.zeros(0, np.uint8)
        with contextlib.suppress(BufferError):  # batches still view the file: the map goes with the last of them
            self._mm.close()

    def _walk(self, max_packets: int) -> I64:
        """Offsets of up to ``max_packets`` record headers from the current position on (``next`` checks their lengths)."""
        mm, u32 = self._mm, self._u32
        size = len(mm)
        last_header = size - 16
        pos = self._pos
        parts: list[I64] = []
        room = max_packets
        while room > 0 and pos <= last_header:
            starts: list[int] = []
            append = starts.append
            previous, same = -1, 0
            for _ in range(room):  # one record a turn: this loop is the reader's hot path
                if pos > last_header:
                    break
                caplen = u32(mm, pos + 8)[0]
                after = pos + 16 + caplen
                if after > size:
                    self.stopped = True  # cut off by the end of the file: libpcap reports it
                    break
                append(pos)
                pos = after
                if caplen != previous:
                    previous, same = caplen, 0
                elif same < RUN_START:
                    same += 1
                else:
                    break  # a run of one length: walked a block at a time below
            parts.append(np.array(starts, np.int64))
            room -= len(starts)
            if self.stopped or same < RUN_START:
                break
            block = 16
            while room > 0:
                run = self._run(pos, 16 + previous, previous, min(block, room))
                if run.size:
                    parts.append(run)
                    room -= run.size
                    pos = int(run[-1]) + 16 + previous
                if run.size < block:
                    break
                block = min(4 * block, RUN_BLOCK)
        if 0 < size - pos < 16 and room > 0:
            self.stopped = True  # a header cut short: libpcap reports the file truncated
        self._pos = pos
        return np.concatenate(parts) if len(parts) > 1 else parts[0] if parts else np.zeros(0, np.int64)

    def _run(self, pos: int, stride: int, caplen: int, limit: int) -> I64:
        """Records of length ``caplen`` from ``pos`` on, at most ``limit``: as far as every one in the stride has that length."""
        k = min(limit, (len(self._mm) - pos) // stride)
        if k <= 0:
            return np.zeros(0, np.int64)
        heads = np.lib.stride_tricks.as_strided(self.data[pos + 8 :], shape=(k, 4), strides=(stride, 1))
        lengths = heads.copy().view(self._hdr)[:, 0]
        off = np.flatnonzero(lengths != caplen)
        k = int(off[0]) if off.size else k
        return pos + stride * np.arange(k, dtype=np.int64)
