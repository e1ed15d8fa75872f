"""A capture source read in a child process, its batches handed over through shared memory.

libpcap's reading and the copies pcapy-ng makes hold the GIL; in one process they stall the
pipeline's thread (by ~40% on a full-speed replay). ``ForkedSource`` forks after the source is
open, the child reads batches into a ring of shared-memory slots, and the parent builds each
``RawBatch`` as a view of its slot — no copy, no pickling. A slot goes back to the child when
the last array viewing it is gone, so at most ``slots`` batches are ever in flight.

>>> # src = ForkedSource(FileSource(path), batch_size=8192)   # then src.read(...) as usual
"""

from __future__ import annotations

import contextlib
import multiprocessing
import weakref
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from agent._exceptions import CaptureError
from agent.batch import RawBatch
from agent.capture import CaptureStats, Source

COLUMNS = 4  # offset, caplen, wirelen, ts: int64 each


class ForkedSource:
    def __init__(self, source: Source, *, batch_size: int, slots: int = 4, slot_bytes: int = 32 << 20) -> None:
        self.name, self.linktype = source.name, source.linktype
        self.index = getattr(source, "index", 0)
        self._batch_size = batch_size
        self._slot_bytes = slot_bytes
        self._data_bytes = slot_bytes - COLUMNS * 8 * batch_size
        if self._data_bytes < 1 << 20:
            raise ValueError("slot too small for the batch size")
        self._shm = shared_memory.SharedMemory(create=True, size=slots * slot_bytes)
        self._buf: memoryview = self._shm.buf  # type: ignore[assignment]
        ctx = multiprocessing.get_context("fork")
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(target=self._child, args=(source, child_conn, slots), daemon=True, name=f"reader-{self.name}")
        self._proc.start()
        child_conn.close()
        source.close()  # the child has its own copy of the handle
        self._received = 0
        self._ended = False
        self._closed = False

    # -- parent ---------------------------------------------------------------------------

    def read(self, max_packets: int, window: float) -> RawBatch | None:
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
        _, slot, n, nbytes = message
        base = slot * self._slot_bytes
        buf = self._buf
        data = np.frombuffer(buf, np.uint8, count=nbytes, offset=base)
        cols = np.frombuffer(buf, np.int64, count=COLUMNS * self._batch_size, offset=base + self._data_bytes).reshape(COLUMNS, -1)[:, :n].copy()
        weakref.finalize(data, self._release, slot)
        self._received += n
        return RawBatch(self.index, self.linktype, data, cols[0], cols[1], cols[2], cols[3])

    def _release(self, slot: int) -> None:
        if not self._closed:
            with contextlib.suppress(OSError):
                self._conn.send(slot)

    def stats(self) -> CaptureStats:
        return CaptureStats(self._received, 0, 0)

    def close(self) -> None:
        self._closed = True
        self._proc.terminate()
        self._proc.join(2.0)
        self._conn.close()
        with contextlib.suppress(BufferError):  # a batch still views it: the memory goes when that does
            self._shm.close()
        self._shm.unlink()

    # -- child ----------------------------------------------------------------------------

    def _child(self, source: Source, conn: Any, slots: int) -> None:
        free = list(range(slots))
        buf = self._buf
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
                while not free:
                    free.append(conn.recv())
                slot = free.pop()
                # Copy the packets that fit; the rest wait for the next slot.
                end = batch.offset + batch.caplen - int(batch.offset[0])
                fit = int(np.searchsorted(end, self._data_bytes, side="right")) or 1
                if fit < len(batch):
                    pending = _slice(batch, fit)
                    batch = _slice(batch, 0, fit)
                start, stop = int(batch.offset[0]), int(batch.offset[-1] + batch.caplen[-1])
                base = slot * self._slot_bytes
                buf[base : base + stop - start] = batch.data[start:stop]  # type: ignore[call-overload]
                cols = np.frombuffer(buf, np.int64, count=COLUMNS * self._batch_size, offset=base + self._data_bytes).reshape(COLUMNS, -1)
                n = len(batch)
                cols[0, :n] = batch.offset - start
                cols[1, :n], cols[2, :n], cols[3, :n] = batch.caplen, batch.wirelen, batch.ts
                del cols
                conn.send(("batch", slot, n, stop - start))
        except CaptureError as e:
            conn.send(("error", str(e)))
        except (BrokenPipeError, EOFError, KeyboardInterrupt):
            pass
        finally:
            del buf


def _slice(batch: RawBatch, start: int, stop: int | None = None) -> RawBatch:
    s = slice(start, stop)
    return RawBatch(batch.iface, batch.linktype, batch.data, batch.offset[s], batch.caplen[s], batch.wirelen[s], batch.ts[s])
