"""Frames held in memory behind the same interface as a live capture: the tests' capture source."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agent.base.batch import RawBatch
from agent.capture import CaptureStats, Source


class MemorySource(Source):
    """Serve ``frames`` (``(timestamp_us, frame_bytes)`` or ``(timestamp_us, frame_bytes, wire_length)``).

    >>> src = MemorySource([(0, bytes(60)), (10, bytes(60))], linktype=1)
    >>> len(src.read(10, 0.0)), src.read(10, 0.0)
    (2, None)
    """

    def __init__(self, frames: Sequence[tuple[int, bytes] | tuple[int, bytes, int]], *, linktype: int = 1, name: str = "mem0", index: int = 0) -> None:
        self.name, self.linktype, self.index = name, linktype, index
        self._data = np.frombuffer(b"".join(f[1] for f in frames), np.uint8)
        self._caplen = np.array([len(f[1]) for f in frames], np.int64)
        self._offset = np.concatenate(([0], np.cumsum(self._caplen)[:-1])).astype(np.int64)
        self._wirelen = np.array([f[2] if len(f) > 2 else len(f[1]) for f in frames], np.int64)  # type: ignore[misc]
        self._ts = np.array([f[0] for f in frames], np.int64)
        self._next = 0

    def read(self, max_packets: int, window: float) -> RawBatch | None:
        if self._next >= self._ts.size:
            return None
        s = slice(self._next, min(self._next + max_packets, self._ts.size))
        self._next = s.stop
        return RawBatch(self.index, self.linktype, self._data, self._offset[s], self._caplen[s], self._wirelen[s], self._ts[s])

    def stats(self) -> CaptureStats:
        return CaptureStats(self._next, 0, 0)

    def close(self) -> None:
        pass
