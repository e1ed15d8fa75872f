"""Capture files (pcap and pcapng), at full speed or at their recorded pace.

A classic pcap file read without a BPF filter is read from a memory map (``PcapMap``): no
copy of the packets. Everything else — pcapng, a filter, and whatever follows a record the
map will not read — goes through libpcap. A file cut short or corrupt part-way is read up to
the damage: the packets before it are delivered, and one warning names the file and
libpcap's complaint.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pcapy

from agent.base.batch import RawBatch
from agent.capture import CaptureStats, Source
from agent.capture._pcapy import PcapError, columns
from agent.capture.pcapfile import PcapMap
from agent.capture.wirelen import WireLengths, file_kind
from agent.errors import CaptureError, ConfigError

log = logging.getLogger("pktagent.capture")

SALVAGE_CHUNK = 4096


def open_file(path: Path, bpf: str | None) -> pcapy.Reader:
    """Open a capture file with libpcap, turning its errors into ones that name the file."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise CaptureError(f"cannot read capture file {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        # A file is opened more than once (libpcap, the map, the wire lengths, each pass of a loop):
        # a FIFO would hang on its second open.
        what = "a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise CaptureError(f"{path} is {what}: give a capture file (`cat {path} > capture.pcap` saves a stream to one)")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CaptureError(f"cannot read capture file {path}: {e.strerror or e}") from None
    if file_kind(head) is None:
        raise CaptureError(f"{path} is not a capture file: expected pcap or pcapng")
    try:
        handle = pcapy.open_offline(str(path))
    except PcapError as e:
        raise CaptureError(f"cannot read capture file {path}: {e}") from None
    if bpf:
        try:
            handle.setfilter(bpf)
        except (PcapError, pcapy.BPFError) as e:
            raise ConfigError(f"bpf_filter: libpcap rejects {bpf!r}: {e}") from None
    return handle


class FileSource(Source):
    """Packets from a capture file.

    ``pace=True`` delivers them at the pace they were recorded, with timestamps moved to the
    present, and ``loop=True`` starts over at the end (a demo that never runs dry).

    >>> src = FileSource(Path("tests/data/sample.pcap"))        # doctest: +SKIP
    >>> batch = src.read(4096, 0.01)                             # doctest: +SKIP
    """

    def __init__(
        self,
        path: Path,
        *,
        index: int = 0,
        name: str | None = None,
        bpf: str | None = None,
        pace: bool = False,
        loop: bool = False,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.path = Path(path)
        self.name = name or self.path.name
        self.index = index
        self._bpf = bpf
        self._pace, self._loop = pace, loop
        self._clock, self._sleep = clock, sleep
        self._handle = open_file(self.path, bpf)
        self.linktype = int(self._handle.datalink())
        try:
            self._lengths = WireLengths(self.path, filtered=bool(bpf))
            self._map = None if bpf else PcapMap.open(self.path)
        except OSError as e:  # out of file descriptors or memory: a capture error, retried, never a crash
            self._handle.close()
            raise CaptureError(f"cannot read capture file {self.path}: {e.strerror or e}") from None
        self._read = 0  # packets taken from the current pass over the file
        self._received = 0
        self._ended = False
        self._pending: RawBatch | None = None
        self._shift = 0  # microseconds added to timestamps when pacing
        self._first_ts: int | None = None

    def read(self, max_packets: int, window: float) -> RawBatch | None:
        if not self._pace:
            return self._next(max_packets)
        return self._paced(max_packets, window)

    def stats(self) -> CaptureStats:
        return CaptureStats(self._received, 0, 0)

    @property
    def mapped(self) -> Path | None:
        """The file, while its batches' bytes are a map of it (``data`` is the whole file, offsets are file offsets)."""
        return self.path if self._map is not None else None

    def close(self) -> None:
        self._handle.close()
        self._lengths.close()
        if self._map is not None:
            self._map.close()
            self._map = None

    # -- full speed ---------------------------------------------------------------------

    def _next(self, max_packets: int) -> RawBatch | None:
        while not self._ended:
            if self._map is not None:
                batch = self._from_map(max_packets)
                if batch is not None:
                    return batch
                continue
            try:
                buf, meta = self._handle.next_batch(max_packets)
            except PcapError as e:
                batch = self._salvage(str(e))
            else:
                batch = self._batch(buf, meta) if meta else None
            if batch is not None:
                return batch
            if not self._loop:
                self._ended = True
            else:
                self._restart()
        return None

    def _batch(self, buf: bytes, meta: bytes) -> RawBatch:
        data, offset, caplen, ts = columns(buf, meta)
        wirelen = self._lengths.take(caplen, ts)
        self._read += caplen.size
        self._received += caplen.size
        return RawBatch(self.index, self.linktype, data, offset, caplen, wirelen, ts)

    def _from_map(self, max_packets: int) -> RawBatch | None:
        """The next batch from the map; None once the map is done (and libpcap takes over, or the file ended)."""
        assert self._map is not None
        m = self._map
        offset, caplen, wirelen, ts = m.next(max_packets)
        if offset.size:
            self._read += offset.size
            self._received += offset.size
            return RawBatch(self.index, self.linktype, m.data, offset, caplen, wirelen, ts)
        if m.stopped:
            self._hand_over()
        elif not self._loop:
            self._ended = True
        else:
            self._restart()
        return None

    def _hand_over(self) -> None:
        """The map stopped at a record it will not read: libpcap goes on from that record (and reports what is wrong)."""
        assert self._map is not None
        self._map.close()
        self._map = None
        skip = self._read
        while skip:
            _, meta = self._handle.next_batch(min(skip, SALVAGE_CHUNK))
            if not meta:
                break
            _, _, caplen, ts = columns(b"", meta)
            self._lengths.take(caplen, ts)
            skip -= caplen.size

    def _salvage(self, message: str) -> RawBatch | None:
        """libpcap failed mid-batch and dropped what it had read: reopen and take packets one at a time up to the damage."""
        self._handle.close()
        self._handle = open_file(self.path, self._bpf)
        skip = self._read
        while skip:
            _, meta = self._handle.next_batch(min(skip, SALVAGE_CHUNK))
            skip -= len(meta) // 16
        parts: list[tuple[bytes, bytes]] = []
        while True:
            try:
                buf, meta = self._handle.next_batch(1)
            except PcapError:
                break
            if not meta:
                break
            parts.append((buf, meta))
        self._ended = not self._loop
        log.warning("capture file %s is cut short or damaged after packet %d: %s", self.path, self._read + len(parts), message)
        if not parts:
            return None
        buf = b"".join(p[0] for p in parts)
        offsets = np.cumsum([0] + [len(p[0]) for p in parts[:-1]], dtype=np.uint32)
        meta_rows = np.frombuffer(b"".join(p[1] for p in parts), np.uint32).reshape(-1, 4).copy()
        meta_rows[:, 2] = offsets
        return self._batch(buf, meta_rows.tobytes())

    def _restart(self) -> None:
        self._handle.close()
        self._lengths.close()
        if self._map is not None:
            self._map.close()
        self._map = None
        try:
            self._handle = open_file(self.path, self._bpf)
            self._lengths = WireLengths(self.path, filtered=bool(self._bpf))
            self._map = None if self._bpf else PcapMap.open(self.path)
        except OSError as e:  # e.g. out of file descriptors: the engine reopens the file later
            raise CaptureError(f"cannot reopen capture file {self.path} to loop: {e.strerror or e}") from None
        self._read = 0
        self._first_ts = None  # the next pass is moved onto the wall clock afresh

    # -- recorded pace ------------------------------------------------------------------

    def _paced(self, max_packets: int, window: float) -> RawBatch | None:
        if self._pending is None or len(self._pending) == 0:
            self._pending = self._next(max_packets)
            if self._pending is None:
                return None
            if len(self._pending) == 0:
                return self._pending
            if self._first_ts is None:
                # The pass starts now: move the file's clock onto the wall clock.
                now_us = int(self._clock() * 1_000_000)
                self._first_ts = int(self._pending.ts[0])
                self._shift = now_us - self._first_ts
        batch = self._pending
        now_us = int(self._clock() * 1_000_000)
        # Like a live capture: a batch goes when its first packet is `window` old, or when all
        # that was read are due (never before a packet's time: its timestamp is now or past).
        first_due = int(batch.ts[0]) + self._shift
        hand_over = min(first_due + int(window * 1_000_000), int(batch.ts[-1]) + self._shift)
        if now_us < hand_over:
            wait = min((hand_over - now_us) / 1_000_000, 0.25)
            self._sleep(wait)
            return _owned(batch, 0, self._shift)
        due = int(np.searchsorted(batch.ts, now_us - self._shift, side="right"))
        # What is left stays a view of the read batch: only one is pending at a time.
        self._pending = batch.rows(due)
        return _owned(batch, due, self._shift)


def _owned(batch: RawBatch, stop: int, shift: int) -> RawBatch:
    """Packets 0..stop of a batch with columns and bytes of their own, timestamps moved by ``shift``.

    A paced replay hands on slices of a read batch, often of a few packets. Views would keep the
    whole batch's columns alive while the slice waits in the queue, and a view of a mapped file
    would keep the file mapped and open: a short file looped at its pace maps itself anew many
    times a second (each pass of a 40-packet file held a descriptor: thousands of them).
    """
    offset = batch.offset[:stop]
    data = np.zeros(0, np.uint8)
    if offset.size:
        begin, end = int(offset[0]), int(offset[-1] + batch.caplen[stop - 1])
        data, offset = batch.data[begin:end].copy(), offset - begin
    return RawBatch(batch.iface, batch.linktype, data, offset.copy(), batch.caplen[:stop].copy(), batch.wirelen[:stop].copy(), batch.ts[:stop] + shift)
