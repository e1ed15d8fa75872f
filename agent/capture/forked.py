"""A capture source read in a child process, its batches handed over through shared memory.

libpcap's reading and the copies pcapy-ng makes hold the GIL; in one process they stall the
pipeline's thread (by ~40% on a full-speed replay). ``ForkedSource`` forks once the source is
open: the child reads batches and ``prepare``s them (decode and the dedup key, which need
nothing but the batch), writing the packet bytes and the decoded columns into a ring of
shared-memory slots; the parent picks each batch up from its slot. The two cores split the
work: reading and decoding in the child, everything stateful in the parent. A slot goes back
to the child when the last array viewing its packet bytes is gone, so at most ``slots``
batches are ever in flight.

A source whose batches are views of a mapped file (``FileSource.mapped``) hands over no
packet bytes at all: the child sends file offsets, and the parent maps the same file. For a
batch it does not decode, the child sends each frame's first bytes (``heads``, what decoding
reads), gathered while they are in its cache, so the parent's decoding does not fault in the
file's pages.

>>> # src = ForkedSource(FileSource(path), batch_size=8192, prepare=prepare)
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from agent.base.batch import Batch, RawBatch
from agent.capture import CaptureStats, Source
from agent.capture.pcapfile import MappedPages
from agent.errors import CaptureError

RAW = (("offset", np.int64), ("caplen", np.int64), ("wirelen", np.int64), ("ts", np.int64))
DECODED = (
    ("network", np.uint8),
    ("transport", np.uint8),
    ("error", np.uint8),
    ("wirelen", np.int64),
    ("l3", np.int64),
    ("l3len", np.int64),
    ("l4", np.int64),
    ("proto", np.uint8),
    ("src_hi", np.uint64),
    ("src_lo", np.uint64),
    ("dst_hi", np.uint64),
    ("dst_lo", np.uint64),
    ("sport", np.int64),
    ("dport", np.int64),
    ("tcp_flags", np.uint8),
    ("has_ports", np.bool_),
    ("is_ip", np.bool_),
    ("frame_hash", np.uint64),
)
COLUMN_BYTES = 8 * (len(RAW) + len(DECODED))  # per packet, each column padded to 8 bytes
_PARENT_ENDS: weakref.WeakSet[Any] = weakref.WeakSet()  # this process's ends of its readers' pipes


class ForkedSource(Source):
    def __init__(
        self,
        source: Source,
        *,
        batch_size: int,
        prepare: Callable[[RawBatch], RawBatch | Batch] | None = None,
        heads: Callable[[RawBatch], np.ndarray] | None = None,
        slots: int = 3,
        slot_bytes: int = 24 << 20,
    ) -> None:
        self.name, self.linktype = source.name, source.linktype
        self.index = source.index
        self._batch_size = batch_size
        self._prepare = prepare
        self._heads = heads
        self._slot_bytes = slot_bytes
        self._data_bytes = slot_bytes - COLUMN_BYTES * batch_size
        if self._data_bytes < 1 << 20:
            raise ValueError("slot too small for the batch size")
        # A mapped source's file, mapped by the parent too.
        self._file: np.ndarray | None = None
        self._pages: MappedPages | None = None
        mapped = source.mapped
        if mapped is not None:
            with open(mapped, "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._file, self._pages = np.frombuffer(mm, np.uint8), MappedPages(mm)
        # Anonymous shared memory, inherited by the forked reader: nothing to name, unlink or track,
        # and it goes with the last batch that views it.
        self._buf = mmap.mmap(-1, slots * slot_bytes)
        ctx = multiprocessing.get_context("fork")
        self._conn, child_conn = ctx.Pipe()
        _PARENT_ENDS.add(self._conn)
        self._proc = ctx.Process(target=self._child, args=(source, child_conn, slots), daemon=True, name=f"reader-{self.name}")
        self._proc.start()
        child_conn.close()
        source.close()  # the child has its own copy of the handle
        self._received = 0
        self._ended = False
        self._closed = False

    def _columns(self, slot: int, table: tuple[tuple[str, Any], ...], first: int) -> dict[str, np.ndarray]:
        """Views of one slot's column area: ``table``'s columns, starting at column number ``first``."""
        base = slot * self._slot_bytes + self._data_bytes
        out = {}
        for k, (name, dtype) in enumerate(table):
            at = base + (first + k) * 8 * self._batch_size
            out[name] = np.frombuffer(self._buf, dtype, count=self._batch_size, offset=at)
        return out

    # -- parent ---------------------------------------------------------------------------

    def read(self, max_packets: int, window: float) -> RawBatch | Batch | None:
        if self._ended:
            return None
        try:
            message = self._conn.recv()
        except (EOFError, OSError):
            message = ("error", f"the reader of {self.name} stopped unexpectedly")
        if message[0] == "end":
            self._ended = True
            return None
        if message[0] == "error":
            self._ended = True
            raise CaptureError(message[1])
        kind, slot, n, nbytes = message
        self._received += n
        raw_cols = {k: v[:n].copy() for k, v in self._columns(slot, RAW, 0).items()}
        cols = {k: v[:n].copy() for k, v in self._columns(slot, DECODED, len(RAW)).items()} if kind.endswith("batch") else {}
        head = None
        if kind == "mapped-heads":  # nbytes: the width of each frame's row
            head = np.frombuffer(self._buf, np.uint8, count=n * nbytes, offset=slot * self._slot_bytes).reshape(n, nbytes).copy()
        if kind.startswith("mapped"):
            data = self._file
            assert data is not None
            self._release(slot)  # the columns are copied, and the bytes are the file's
            if n and self._pages is not None:
                self._pages.hold(raw_cols["offset"], int(raw_cols["offset"][0]), int(raw_cols["offset"][-1] + raw_cols["caplen"][-1]))
        else:
            data = np.frombuffer(self._buf, np.uint8, count=nbytes, offset=slot * self._slot_bytes)
            weakref.finalize(data, self._release, slot)
        raw = RawBatch(self.index, self.linktype, data, raw_cols["offset"], raw_cols["caplen"], raw_cols["wirelen"], raw_cols["ts"], head)
        if not cols:
            return raw
        return Batch(raw=raw, window=np.zeros((n, 0), np.uint8), **cols)

    def _release(self, slot: int) -> None:
        if not self._closed:
            with contextlib.suppress(OSError):
                self._conn.send(slot)

    def stats(self) -> CaptureStats:
        return CaptureStats(self._received, 0, 0)

    def close(self) -> None:
        self._closed = True
        _PARENT_ENDS.discard(self._conn)
        self._proc.terminate()
        self._proc.join(2.0)
        self._conn.close()
        self._file = None  # each map goes with the last batch that views it
        del self._buf

    # -- child ----------------------------------------------------------------------------

    def _child(self, source: Source, conn: Any, slots: int) -> None:
        # Only the parent may hold the parent's ends of the pipes (this reader's and any other's):
        # then a parent that dies, even by SIGKILL, closes them, and this reader reads EOF and stops.
        for end in list(_PARENT_ENDS):
            end.close()
        free = list(range(slots))
        pending: RawBatch | None = None
        try:
            while True:
                batch = pending if pending is not None else source.read(self._batch_size, 0.0)
                pending = None
                if batch is None:
                    conn.send(("end",))
                    return
                if len(batch) == 0:
                    continue
                assert isinstance(batch, RawBatch)  # the wrapped source reads, it does not decode
                mapped = self._file is not None and source.mapped is not None
                if not mapped:
                    # The packets that fit in a slot go now; the rest wait for the next one.
                    end = batch.offset + batch.caplen - int(batch.offset[0])
                    fit = int(np.searchsorted(end, self._data_bytes, side="right")) or 1
                    if fit < len(batch):
                        pending = batch.rows(fit)
                        batch = batch.rows(0, fit)
                while not free:
                    free.append(conn.recv())
                while conn.poll():
                    free.append(conn.recv())
                # Share the work: when batches pile up on the parent's side, decode them here too;
                # when the parent waits for batches, hand them over raw and read on.
                busy_parent = len(free) <= slots // 2
                slot = free.pop()
                conn.send(self._fill(slot, batch, prepare=busy_parent, mapped=mapped))
                batch = None  # sent: its pages of a mapped file go back before the next batch is read
        except CaptureError as e:
            conn.send(("error", str(e)))
        except (BrokenPipeError, EOFError, KeyboardInterrupt):
            pass

    def _fill(self, slot: int, raw: RawBatch, *, prepare: bool, mapped: bool) -> tuple[str, int, int, int]:
        """Write a batch into ``slot``: its columns, and its packet bytes unless the parent maps the file itself."""
        start, stop = (0, 0) if mapped else (int(raw.offset[0]), int(raw.offset[-1] + raw.caplen[-1]))
        if not mapped:
            base = slot * self._slot_bytes
            self._buf[base : base + stop - start] = raw.data[start:stop]  # type: ignore[call-overload]
        n = len(raw)
        cols = self._columns(slot, RAW, 0)
        cols["offset"][:n] = raw.offset - start
        cols["caplen"][:n], cols["wirelen"][:n], cols["ts"][:n] = raw.caplen, raw.wirelen, raw.ts
        prepared = self._prepare(raw) if self._prepare is not None and prepare else raw
        kind = "mapped-" if mapped else ""
        if isinstance(prepared, RawBatch):
            if mapped and self._heads is not None and n:
                # The parent would read each frame's first bytes from its own map of the file: they
                # are in this process's cache now, and in one piece they cost the parent no page faults.
                head = self._heads(raw)
                width = head.shape[1]
                if n * width <= self._data_bytes:
                    np.frombuffer(self._buf, np.uint8, count=n * width, offset=slot * self._slot_bytes)[:] = head.ravel()
                    return ("mapped-heads", slot, n, width)
            return (kind + "raw", slot, n, stop - start)
        for name, column in self._columns(slot, DECODED, len(RAW)).items():
            column[:n] = getattr(prepared, name)
        cols = self._columns(slot, DECODED, len(RAW))
        cols["l3"][:n] = np.where(prepared.l3 >= 0, prepared.l3 - start, -1)  # offsets into the slot's bytes
        return (kind + "batch", slot, n, stop - start)
