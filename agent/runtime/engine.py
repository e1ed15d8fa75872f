"""The engine: capture threads feed a bounded queue, one processing thread drains it into the pipeline.

    capture (one thread per source) -> queue (bounded in packets and bytes) -> pipeline (one thread)

Live captures never block: when the queue is full the newest batch is dropped and counted
(``dropped{stage="queue"}``). Reading files at full speed waits for room instead, so a replay
loses nothing. A live source that fails is closed, reported down, and reopened with backoff
while the others keep going; its counters continue on the same series.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import mmap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.base.batch import Batch, RawBatch
from agent.base.labels import DROP_STAGES
from agent.base.snapshot import Snapshot
from agent.capture import CaptureStats, Source, interface_packets
from agent.config import Config
from agent.errors import CaptureError
from agent.runtime.pipeline import Pipeline

log = logging.getLogger("pktagent.engine")

RETRY_FIRST, RETRY_MAX = 0.5, 10.0  # seconds between attempts to reopen a failed capture


IDLE_TICK = 1.0  # seconds between flow-timeout checks while no batch comes


def batch_nbytes(batch: RawBatch | Batch) -> int:
    """The memory a batch keeps alive, for the queue's bound.

    Every array it refers to counts, a view as the whole array it views (a slice of a few
    packets keeps all of them alive), each once. Bytes read from a map (a capture file, a
    reader process's shared slot) count as the packets' captured bytes: the map is not the
    batch's to keep.
    """
    seen: dict[int, int] = {}

    def walk(b: RawBatch | Batch) -> None:
        for f in dataclasses.fields(b):
            value = getattr(b, f.name)
            if isinstance(value, RawBatch):
                walk(value)
            elif isinstance(value, np.ndarray):
                owner = value.base if isinstance(value.base, np.ndarray) else value
                if _mapped(owner):
                    seen[id(value)] = int(b.caplen.sum()) if f.name == "data" and isinstance(b, RawBatch) else value.nbytes
                else:
                    seen[id(owner)] = owner.nbytes

    walk(batch)
    return sum(seen.values())


def _mapped(array: np.ndarray) -> bool:
    base = array.base
    if isinstance(base, memoryview):
        base = base.obj
    return isinstance(base, mmap.mmap)


class BatchQueue:
    """A FIFO of batches bounded by the packets it holds and by their memory.

    >>> q = BatchQueue(capacity=10)
    >>> q.put("abc", 6, block=False), q.put("defg", 6, block=False)
    (True, False)
    """

    def __init__(self, capacity: int, capacity_bytes: int = 1 << 62) -> None:
        self.capacity, self.capacity_bytes = capacity, capacity_bytes
        self._items: collections.deque[tuple[object, int, int]] = collections.deque()
        self._packets = self._bytes = 0
        self._cond = threading.Condition()
        self._closed = False

    @property
    def packets(self) -> int:
        return self._packets

    @property
    def bytes(self) -> int:
        return self._bytes

    def put(self, item: object, size: int, *, block: bool, nbytes: int = 0) -> bool:
        """Add an item of ``size`` packets holding ``nbytes``; without ``block``, refuse it when it does not fit."""
        with self._cond:
            while (self._packets + size > self.capacity or self._bytes + nbytes > self.capacity_bytes) and self._items:
                if not block or self._closed:
                    return False
                self._cond.wait(0.1)
            self._items.append((item, size, nbytes))
            self._packets += size
            self._bytes += nbytes
            self._cond.notify_all()
            return True

    def get(self, timeout: float, until: Callable[[], bool] = lambda: False) -> object | None:
        """The next item, waiting at most ``timeout``; returns None at once when ``until()`` holds and nothing is queued."""
        with self._cond:
            if not self._items:
                # The predicate is checked under the lock that wake() takes: no wake-up is lost.
                self._cond.wait_for(lambda: bool(self._items) or until(), timeout)
            if not self._items:
                return None
            item, size, nbytes = self._items.popleft()
            self._packets -= size
            self._bytes -= nbytes
            self._cond.notify_all()
            return item

    def drain(self) -> list[object]:
        """Take every queued item at once."""
        with self._cond:
            items = [item for item, _, _ in self._items]
            self._items.clear()
            self._packets = self._bytes = 0
            self._cond.notify_all()
            return items

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wake(self) -> None:
        """Wake a waiting reader (a source ended: it may be time to stop)."""
        with self._cond:
            self._cond.notify_all()


@dataclass
class CaptureState:
    """What the engine knows of one source, kept across reopenings."""

    name: str
    up: bool = False
    error: str = ""
    captured: int = 0
    bytes_read: int = 0  # of a capture file, near enough: the records' bytes and a 16-byte header each (replay's progress)
    first_batch_at: float = 0.0  # time.monotonic() of the first batch: a rate counts from there, not from start-up
    queue_dropped: int = 0
    reopen_dropped: int = 0  # lost while a failed capture was closed: unread in its handle, or carried before the next opened
    read_at_open: int = 0  # ``captured`` when the current handle was opened
    carried_at_close: tuple[int, int] | None = None  # the interface's (ifindex, packets) when the failed handle closed
    pcap: CaptureStats = field(default_factory=CaptureStats)  # libpcap's figures of the current handle
    pcap_before: CaptureStats = field(default_factory=CaptureStats)  # summed over handles closed before it
    finished: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def libpcap_totals(self) -> CaptureStats:
        return CaptureStats(*(a + b for a, b in zip(self.pcap, self.pcap_before)))


def _carried_between(closed: tuple[int, int] | None, opened: tuple[int, int] | None) -> int:
    """Packets the interface carried between a handle's close and the next one's open, from its counters."""
    if opened is None:
        return 0
    if closed is None or closed[0] != opened[0] or opened[1] < closed[1]:
        return opened[1]  # a new interface in the old one's place (or counters reset): all of its packets
    return opened[1] - closed[1]


class Engine:
    """Run sources through a pipeline until they end (files) or ``stop`` is called.

    ``opener(i)`` opens source number i; it is called again to reopen a live source that failed.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        opener: Callable[[int], Source],
        *,
        batch_size: int,
        window: float,
        queue_capacity: int,
        blocking: bool,
        queue_bytes: int = 1 << 62,
        retry: bool = True,
        sequential: bool = False,
        interface_gaps: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pipeline = pipeline
        self._open = opener
        self.batch_size, self.window = batch_size, window
        self.queue = BatchQueue(queue_capacity, queue_bytes)
        self._blocking, self._retry, self._clock = blocking, retry, clock
        self._sequential = sequential  # one capture thread reads the sources in turn (a deterministic replay)
        self._gaps = interface_gaps  # count what an interface carried while its capture was closed (one worker of several does)
        self.states = [CaptureState(name) for name in pipeline.interfaces]
        self._sources: list[Source | None] = [None] * len(self.states)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._processor: threading.Thread | None = None
        self.failure: BaseException | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def open_all(self) -> None:
        """Open every source now, so that a mistake (no such interface, no permission) surfaces before serving."""
        for i, state in enumerate(self.states):
            self._sources[i] = self._open(i)
            state.up = True

    def start(self) -> None:
        if self._sequential:
            t = threading.Thread(target=self._capture_in_turn, name="capture", daemon=True)
            t.start()
            self._threads.append(t)
        else:
            for i in range(len(self.states)):
                t = threading.Thread(target=self._capture, args=(i,), name=f"capture-{self.states[i].name}", daemon=True)
                t.start()
                self._threads.append(t)
        self._processor = threading.Thread(target=self._process, name="pipeline", daemon=True)
        self._processor.start()

    def stop(self) -> None:
        self._stop.set()
        self.queue.close()
        for src in self._sources:
            if src is not None:
                src.wake()  # a read waiting out its batch window returns now

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every source has ended and the queue is drained; True when done."""
        assert self._processor is not None
        self._processor.join(timeout)
        return not self._processor.is_alive()

    def close(self) -> None:
        self.stop()
        for t in self._threads:
            t.join(2.0)
        if self._processor is not None:
            self._processor.join(2.0)
        for src in self._sources:
            if src is not None:
                src.close()

    def sources(self) -> list[Source]:
        """The sources open now (for a reload to adjust them)."""
        return [s for s in self._sources if s is not None]

    @property
    def finished(self) -> bool:
        return all(s.finished for s in self.states)

    # -- threads --------------------------------------------------------------------------

    def _capture_in_turn(self) -> None:
        for i in range(len(self.states)):
            self._capture(i)

    def _capture(self, i: int) -> None:
        state = self.states[i]
        delay = RETRY_FIRST
        try:
            while not self._stop.is_set():
                src = self._sources[i]
                if src is None:
                    if not self._reopen(i):
                        self._stop.wait(delay)
                        delay = min(delay * 2, RETRY_MAX)
                        continue
                    delay = RETRY_FIRST
                    src = self._sources[i]
                    assert src is not None
                try:
                    batch = src.read(self.batch_size, self.window)
                except CaptureError as e:
                    self._fail(i, str(e))
                    continue
                if batch is None:
                    if not self._blocking:
                        self._ended(i)
                    break
                self._account(i, src, batch)
        except BaseException as e:  # pragma: no cover - a bug: stop everything, report it
            self.failure = e
            self.stop()
        finally:
            state.finished = True
            self.queue.wake()

    def _account(self, i: int, src: Source, batch: RawBatch | Batch) -> None:
        state = self.states[i]
        n = len(batch)
        pcap = src.stats()
        read = int((batch.caplen if isinstance(batch, RawBatch) else batch.wirelen).sum()) + 16 * n
        dropped = n if n and not self.queue.put(batch, n, block=self._blocking, nbytes=batch_nbytes(batch)) else 0
        with state.lock:
            if not state.first_batch_at and n:
                state.first_batch_at = time.monotonic()
            state.captured += n
            state.bytes_read += read
            state.queue_dropped += dropped
            state.pcap = pcap

    def _ended(self, i: int) -> None:
        """A capture file of a live run (``run --pcap`` without ``--loop``) is read to its end: nothing more will come."""
        state = self.states[i]
        message = f"{state.name}: end of the capture file, nothing more to read (--loop starts it over)"
        log.info("%s", message)
        with state.lock:
            state.up, state.error = False, message

    def _fail(self, i: int, message: str) -> None:
        state = self.states[i]
        src = self._sources[i]
        log.warning("%s; retrying", message)
        pcap = src.stats() if src is not None else state.pcap  # the handle's last figures, taken before it closes
        live = src is not None and hasattr(src, "carried_at_open")
        carried = interface_packets(state.name) if live and self._gaps else None
        with state.lock:
            state.up, state.error = False, message
            state.pcap = pcap if any(pcap) else state.pcap
            if live:
                # Packets the kernel queued for the handle that were never read go with it.
                unread = state.pcap.received - state.pcap.kernel_dropped - (state.captured - state.read_at_open)
                state.reopen_dropped += max(0, unread)
                state.carried_at_close = carried
            state.pcap_before = state.libpcap_totals()
            state.pcap = CaptureStats()
        self._sources[i] = None
        if src is not None:
            src.close()
        if not self._retry:
            self._stop.set()

    def _reopen(self, i: int) -> bool:
        state = self.states[i]
        try:
            self._sources[i] = self._open(i)
        except CaptureError as e:
            with state.lock:
                state.error = str(e)
            return False
        log.warning("capture on %s is back", state.name)
        source = self._sources[i]
        opened = source.carried_at_open if source is not None else None
        with state.lock:
            state.up, state.error = True, ""
            state.read_at_open = state.captured
            state.reopen_dropped += _carried_between(state.carried_at_close, opened) if self._gaps else 0
            state.carried_at_close = None
        return True

    def _process(self) -> None:
        try:
            while True:
                if self._stop.is_set() and not self._blocking:
                    # Stopping: the batch in hand was finished, the rest are not worked through (a full
                    # queue of a DHCP flood took seconds): dropped at the queue, and counted there.
                    self._drop_queued()
                    break
                item = self.queue.get(0.1 if self._blocking else IDLE_TICK, lambda: self.finished or (self._stop.is_set() and not self._blocking))
                if item is None:
                    if self.finished or (self._stop.is_set() and not self._blocking):
                        if self.queue.packets == 0:
                            break
                        continue
                    if not self._blocking:
                        self.pipeline.tick(int(self._clock() * 1_000_000))
                    continue
                assert isinstance(item, (RawBatch, Batch))
                self.pipeline.process(item)
        except BaseException as e:  # pragma: no cover - a bug: stop everything, report it
            self.failure = e
            self.stop()

    def _drop_queued(self) -> None:
        for item in self.queue.drain():
            assert isinstance(item, (RawBatch, Batch))
            state = self.states[item.iface if isinstance(item, RawBatch) else item.raw.iface]
            with state.lock:
                state.queue_dropped += len(item)

    # -- reading --------------------------------------------------------------------------

    def snapshot(self, **build: str) -> Snapshot:
        """A consistent copy of every figure: the pipeline's as of its last batch, the captures' as of now."""
        with self.pipeline.lock:
            fields = self.pipeline.snapshot_fields()
        n = len(self.states)
        captured = np.zeros(n, np.int64)
        dropped = np.zeros((n, len(DROP_STAGES)), np.int64)
        up = np.zeros(n, np.int64)
        errors = []
        for k, s in enumerate(self.states):
            with s.lock:
                captured[k] = s.captured
                totals = s.libpcap_totals()
                dropped[k] = (totals.kernel_dropped, totals.interface_dropped, s.queue_dropped, s.reopen_dropped)
                up[k] = int(s.up)
                errors.append(s.error)
        return Snapshot(
            interfaces=tuple(s.name for s in self.states),
            capture_up=up,
            captured=captured,
            dropped=dropped,
            queue_packets=self.queue.packets,
            queue_capacity=self.queue.capacity,
            capture_errors=tuple(errors),
            version=build.get("version", ""),
            python_version=build.get("python_version", ""),
            libpcap_version=build.get("libpcap_version", ""),
            **fields,
        )


def live_engine(pipeline: Pipeline, opener: Callable[[int], Source], config: Config, **options: Any) -> Engine:
    """The engine of a live agent (and of each worker): the config's batching and queue bounds, never blocking capture."""
    p = config.pipeline
    return Engine(
        pipeline,
        opener,
        batch_size=p.batch_size,
        window=p.batch_window_ms / 1000,
        queue_capacity=p.queue_capacity_packets,
        queue_bytes=p.queue_capacity_bytes,
        blocking=False,
        **options,
    )
