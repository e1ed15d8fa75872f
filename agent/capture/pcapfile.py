"""Classic pcap files read straight from a memory map: record headers walked, packet bytes never copied.

libpcap copies every packet out of the file, and pcapy-ng's ``next_batch`` copies it again;
on full-size frames that copying is most of a replay's reading time. A classic pcap file is
a 24-byte header followed by records of a 16-byte header and the packet, so the packets can
be used where they lie: ``PcapMap`` walks the record headers in a memory map of the file and
hands out batches whose ``data`` is the map itself.

Each record's length says where the next starts, so the walk is a chain, and a Python loop
over it costs more than everything else a replay does to a packet. Runs of records of one
length, the norm in bulk transfers, are checked a block at a time. Mixed sizes are walked as
many chains side by side (``_chains``): the stretch ahead is cut into segments, each
segment's first record is guessed from what a record header looks like (the timestamp's high
bytes, a plausible length, and a plausible header after it), and all chains are walked one
record a step with numpy. A guess is trusted only once the chain before it lands exactly on
it, so the records handed out are always the ones a plain walk finds; a wrong guess (a
payload that looks like a header) only costs the rest of that round, which is then walked
one record at a time, as are small files and stretches that chains do not suit.

Anything libpcap would treat differently from a plain read — a captured length above the
file's snapshot length, a record cut off by the end of the file — stops the map at that
record (``stopped``), and the caller carries on with libpcap from there, so damaged files
behave exactly as they do under libpcap. Pages behind the batches still in use are given back
as the walk goes on (``MappedPages``).

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
from typing import NamedTuple

import numpy as np

from agent.base.batch import I64, U8


class PcapFormat(NamedTuple):
    """What a classic pcap file's magic number says about its headers."""

    order: str  # byte order: "<" or ">"
    record_bytes: int  # bytes of each record's header
    divisor: int  # turns the timestamp's fraction into microseconds


PCAP_FORMATS = {
    b"\xd4\xc3\xb2\xa1": PcapFormat("<", 16, 1),  # microseconds
    b"\xa1\xb2\xc3\xd4": PcapFormat(">", 16, 1),
    b"\x4d\x3c\xb2\xa1": PcapFormat("<", 16, 1000),  # nanoseconds
    b"\xa1\xb2\x3c\x4d": PcapFormat(">", 16, 1000),
    b"\x34\xcd\xb2\xa1": PcapFormat("<", 24, 1),  # Kuznetzov's patched format: 8 more bytes a record (libpcap reads it)
    b"\xa1\xb2\xcd\x34": PcapFormat(">", 24, 1),
}
MAX_SNAPLEN = 262144  # libpcap's largest snapshot length (MAXIMUM_SNAPLEN)
CHAINS = 512  # chains walked side by side in one round
CHAIN_RECORDS = 32  # records a chain is cut to cover (its segment: this many records of the recent mean length)
MIN_CHAINS = 16  # fewer segments than this left in the file: walk one record at a time
SERIAL_RECORDS = 256  # records walked one at a time where chains are not used (the start, after a wrong guess)
RUN_BLOCK = 2048  # records of one length tried at a time, once the last ones walked had one length
RELEASE_CHUNK = 2 << 20  # bytes of the map handed back to the kernel at a time


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
        self._size = len(mm)
        self._hdr = np.dtype(order + "u4")
        self._caplen_at = struct.Struct(order + "I").unpack_from
        # Every 4 bytes of the file as a number, and every 16 as a record header, one starting at each byte.
        self._u32: np.ndarray = np.ndarray((self._size - 3,), self._hdr, buffer=mm, strides=(1,))
        self._headers: np.ndarray = np.ndarray((self._size - 15,), np.dtype((np.void, 16)), buffer=mm, strides=(1,))
        self._high = (3, 2) if order == "<" else (0, 1)  # where a header's two high timestamp bytes lie
        self._divisor = divisor
        self._fraction_limit = 1_000_000 * divisor
        self._snaplen = snaplen
        self._pos = 24  # the first record not walked yet
        self._ahead: I64 = np.zeros(0, np.int64)  # records walked and not handed out
        self._walked = False  # the walk reached the end of the file, or a record libpcap must read
        self._mean = 0.0  # the recent mean record length (header included)
        self._widest = 0  # the longest record so far (header included)
        self._seconds = 0  # the timestamp of the last record walked
        self._last = 0  # the length of the last record walked
        self._same = False  # the records walked last were of one length at their start, middle and end: a run, maybe
        self._serial_owed = SERIAL_RECORDS  # records to walk one at a time before chains are tried
        self.read = 0  # records handed out
        self.chained = 0  # records found by chains (the rest: in runs, or one at a time)
        self.wrong_guesses = 0  # rounds whose guess at a chain's start was wrong
        self.stopped = False  # a record libpcap must read from here on (or the end)

    @classmethod
    def open(cls, path: Path) -> PcapMap | None:
        """A map of ``path`` when it is a classic pcap file that can be read so; else None (read it with libpcap)."""
        with open(path, "rb") as f:
            head = f.read(24)
            form = PCAP_FORMATS.get(head[:4])
            if len(head) < 24 or form is None or form.record_bytes != 16:
                return None
            order, divisor = form.order, form.divisor
            snaplen = struct.unpack_from(order + "I", head, 16)[0]
            if not 0 < snaplen <= MAX_SNAPLEN or f.seek(0, 2) <= 24:
                return None
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return cls(mm, order, divisor, snaplen)

    def next(self, max_packets: int) -> tuple[I64, I64, I64, I64]:
        """(offset of the packet, captured length, original length, timestamp in us) of the next records."""
        while self._ahead.size < max_packets and not self._walked:
            self._ahead = np.concatenate([self._ahead, self._walk(max_packets - self._ahead.size)])
        at, self._ahead = self._ahead[:max_packets], self._ahead[max_packets:]
        if at.size == 0:
            return at, at, at, at
        fields = self._headers[at].view(self._hdr).reshape(-1, 4).astype(np.int64)  # sec, fraction, caplen, original length
        over = np.flatnonzero(fields[:, 2] > self._snaplen)
        if over.size:
            # libpcap cuts such a record to the snapshot length: it reads on from this one.
            cut = int(over[0])
            self.stopped, self._walked, self._ahead = True, True, self._ahead[:0]
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
        self._u32 = np.zeros(0, self._hdr)
        self._headers = np.zeros(0, np.dtype((np.void, 16)))
        with contextlib.suppress(BufferError):  # batches still view the file: the map goes with the last of them
            self._mm.close()

    # -- the walk --------------------------------------------------------------------------

    def _walk(self, want: int) -> I64:
        """Offsets of about ``want`` next record headers (more or fewer): a run, a round of chains, or some walked one at a time."""
        at = None
        if self._serial_owed <= 0:
            at = self._run(want) if self._same else None
            if at is None or at.size == 0:
                at = self._chains(want)
            if at is None:
                # Chains do not suit the stretch ahead: as many records one at a time before they are tried again.
                self._serial_owed = want
        if at is None or at.size == 0:
            at = self._serial(max(self._serial_owed, SERIAL_RECORDS))
            self._serial_owed = 0
        if at.size:
            lengths = self._u32[at + 8].astype(np.int64) + 16
            self._mean = float(lengths.mean())
            self._widest = max(self._widest, min(int(lengths.max()), self._snaplen + 16))
            self._seconds = int(self._u32[at[-1]])
            self._same = bool(lengths[-1] == lengths[0] == lengths[(lengths.size - 1) // 2])
            self._last = int(lengths[-1])
        return at

    def _serial(self, count: int) -> I64:
        """Up to ``count`` records walked one at a time (and the end of the file, or damage, noticed)."""
        mm, size, pos, caplen_at = self._mm, self._size, self._pos, self._caplen_at
        last_header = size - 16
        starts: list[int] = []
        append = starts.append
        for _ in range(count):
            if pos > last_header:
                break
            after = pos + 16 + caplen_at(mm, pos + 8)[0]
            if after > size:
                self.stopped = True  # cut off by the end of the file: libpcap reports it
                break
            append(pos)
            pos = after
        if 0 < size - pos < 16:
            self.stopped = True  # a header cut short: libpcap reports the file truncated
        self._pos = pos
        self._walked = self.stopped or pos >= size
        return np.array(starts, np.int64)

    def _chains(self, want: int) -> I64 | None:
        """One round of chains walked side by side, enough for ``want`` records; None when the stretch ahead does not suit them."""
        pos, size = self._pos, self._size
        segment = max(int(self._mean * CHAIN_RECORDS), 2 * self._widest)
        count = min(CHAINS, (size - pos) // segment, -(-want // CHAIN_RECORDS))
        if count < MIN_CHAINS:
            return None  # too few records wanted, or left in the file, for chains to pay
        guessed = self._guess_firsts(segment, count)
        if guessed is None:
            return None
        # Walk every chain a record a step, each up to the next chain's first record. A chain that
        # has got there walks on until all have (one check every few steps is cheaper than stopping
        # each); what it finds beyond is left out below. Lengths are read only within the round's
        # stretch, so a chain gone astray maps no page outside it.
        end_of_round = min(pos + count * segment, size)
        bound = np.r_[guessed[1:], end_of_round]
        caplen_at, furthest = self._u32[8:], min(end_of_round, size - 12)
        p = guessed
        steps: list[I64] = []
        for step in range(8 * CHAIN_RECORDS):  # a chain still short of its end then (segments without a guess) goes on next round
            steps.append(p)
            p = p + 16 + caplen_at[np.minimum(p, furthest)]
            if step % 4 == 3 and (p >= bound).all():
                break
        trail = np.array([*steps, p])  # (steps + 1, chains): each chain's positions, and where each step led
        chains = np.arange(bound.size)
        past = trail[1:] >= bound  # the step led to the chain's end, or past it
        reached = past.any(axis=0)
        first_past = past.argmax(axis=0) + 1
        end = np.where(reached, trail[first_past, chains], p)
        damaged = reached & (end > size)  # the record before the end runs past the end of the file (or its header is cut)
        # Chains count from the first to the first that did not land on the next one's guess.
        done = reached & ~damaged
        done[:-1] &= end[:-1] == bound[:-1]
        short = np.flatnonzero(~done)
        last = int(short[0]) if short.size else bound.size - 1
        if short.size and reached[last] and not damaged[last]:
            self.wrong_guesses += 1
            self._serial_owed = count * CHAIN_RECORDS  # walk past the wrong guess one at a time
        if damaged[last]:
            self._pos = int(trail[first_past[last] - 1, last])  # the damaged record: the one-at-a-time walk sets ``stopped``
            self._serial_owed = 1
        else:
            self._pos = int(end[last])
        self._walked = self._pos >= size
        # A chain's records: positions before its end whose record fits in the file.
        records = ((trail[:-1] < bound) & (trail[1:] <= size))[:, : last + 1]
        walked: I64 = trail[:-1, : last + 1].T[records.T]
        self.chained += walked.size
        return walked

    def _guess_firsts(self, segment: int, count: int) -> I64 | None:
        """Each segment's first record, guessed; None when too few segments have a guess for chains to pay.

        The guess is the first place from the segment's start whose timestamp has the last record's
        high bytes and that reads as a plausible header followed by another.
        """
        pos, size = self._pos, self._size
        first = np.full(count, -1, np.int64)
        first[0] = pos
        top, second = self._high
        high = self._seconds >> 16
        width = min(self._widest, segment)
        starts = pos + segment * np.arange(1, count, dtype=np.int64)
        heads = np.lib.stride_tricks.as_strided(self.data[pos + segment :], shape=(count - 1, width), strides=(segment, 1))
        found = np.flatnonzero(heads[:, top:] == high >> 8)
        if found.size > 16 * count:
            return None  # the timestamp bytes are everywhere (zero seconds, say): a guess would cost more than it saves
        row, at = found // (width - top), starts[found // (width - top)] + found % (width - top)
        keep = (self.data[np.minimum(at + second, size - 1)] == high & 0xFF) & self._plausible(at, high)
        row, at = row[keep], at[keep]
        lead = np.flatnonzero(np.r_[True, row[1:] != row[:-1]]) if row.size else row
        first[1 + row[lead]] = at[lead]
        guessed = first[first >= 0]
        return guessed if guessed.size >= count // 2 else None

    def _run(self, want: int) -> I64:
        """Up to ``want`` records of the last walked length from here on, as far as every one in the stride has it: a block at a time."""
        stride = self._last
        caplen = stride - 16
        parts: list[I64] = []
        block = 16
        while want > 0:
            k = min(block, want, (self._size - self._pos) // stride)
            if k <= 0:
                break
            at = self._pos + stride * np.arange(k, dtype=np.int64)
            differ = np.flatnonzero(self._u32[at + 8] != caplen)
            run = at[: int(differ[0])] if differ.size else at
            if run.size:
                parts.append(run)
                want -= run.size
                self._pos = int(run[-1]) + stride
            if run.size < k:
                break
            block = min(4 * block, RUN_BLOCK)
        self._walked = self._pos >= self._size
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def _plausible(self, at: I64, high: int) -> np.ndarray:
        """Whether a record header at each of ``at`` reads as one, and so does the header after it.

        The second header is read only where the first makes sense: a nonsense length would point
        anywhere in the file, and reading there would map pages the walk has no use for.
        """
        size, u32, limit = self._size, self._u32, self._fraction_limit
        head = np.minimum(at, size - 16)
        caplen = u32[head + 8].astype(np.int64)
        after = head + 16 + caplen
        ok = (at + 16 <= size) & (caplen <= self._snaplen) & (u32[head + 4] < limit) & (u32[head + 12] >= caplen) & (after <= size)
        i = np.flatnonzero(ok & (after < size))  # the last record of the file has no header after it
        nxt = np.minimum(after[i], size - 16)
        ok[i] = (after[i] + 16 <= size) & (u32[nxt] >> 16 == high) & (u32[nxt + 8] <= self._snaplen) & (u32[nxt + 4] < limit)
        plausible: np.ndarray = ok
        return plausible
