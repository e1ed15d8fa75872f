"""Raw batches and decoded batches straight from frames, for unit tests of single stages."""

from __future__ import annotations

from collections.abc import Sequence

from agent.base.batch import Batch, RawBatch
from agent.capture.memory import MemorySource
from agent.stages.decode import decode


def raw(frames: Sequence[bytes], *, linktype: int = 1, ts: Sequence[int] | None = None, wire: Sequence[int] | None = None) -> RawBatch:
    times = list(ts) if ts is not None else [1_000_000 * (i + 1) for i in range(len(frames))]
    lengths = list(wire) if wire is not None else [len(f) for f in frames]
    batch = MemorySource(list(zip(times, frames, lengths)), linktype=linktype).read(len(frames) or 1, 0.0)
    assert batch is not None
    return batch


def decoded(frames: Sequence[bytes], **kw: object) -> Batch:
    return decode(raw(frames, **kw))  # type: ignore[arg-type]
