"""Replay: capture files read at full speed through the pipeline, one after another, into a final snapshot.

The same path ``pktagent replay`` takes; a reader thread overlaps libpcap's reading with the
pipeline's work, and waits for room in the queue instead of dropping, so nothing is lost.

>>> # snapshot = replay_files(Config(), ["capture.pcap"])
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.base.snapshot import Snapshot
from agent.capture import Source
from agent.capture.forked import ForkedSource
from agent.capture.offline import FileSource
from agent.config import Config
from agent.naming.registry import Device
from agent.runtime.engine import Engine
from agent.runtime.pipeline import Pipeline, prepare
from agent.stages.decode import read_heads

FORK_ABOVE = 16 << 20  # bytes: files larger than this are read in a child process
# Packets per batch of a replay at least: a replay is about throughput, not latency, and three times
# the live default cuts the cost per batch of the pipeline and of the reader (W1 of bench/: 8192
# took 1.08 times as long). 16384 was faster again, but over 80 MB of peak RSS.
REPLAY_BATCH = 12288
# Batches a forked reader may have handed over and not had back. A mapped file's reader sends
# only columns, given back as soon as they are read: two keep it a batch ahead. Any other file's
# packets stay in their slot until the pipeline is done with them: three (two cost pcapng 16 %).
MAPPED_SLOTS, COPIED_SLOTS = 2, 3


def file_labels(paths: Sequence[str | Path]) -> list[str]:
    """Label values for capture files: the file name, or the path where two files share a name."""
    names = [Path(p).name for p in paths]
    return [n if names.count(n) == 1 else str(p) for n, p in zip(names, paths)]


def file_opener(config: Config, paths: Sequence[str | Path], *, pace: bool) -> tuple[list[str], Callable[[int], FileSource]]:
    """Interface names for the files, and a function that opens file number i."""
    names = file_labels(paths)
    bpf = config.capture.bpf_filter or None

    def open_file(i: int) -> FileSource:
        return FileSource(Path(paths[i]), index=i, name=names[i], bpf=bpf, pace=pace, loop=config.capture.loop)

    return names, open_file


def replay_engine(config: Config, paths: Sequence[str | Path], known_devices: Sequence[Device] = (), *, fork: bool = True) -> Engine:
    """An engine that reads ``paths`` in turn at full speed; every file is opened (and checked) now.

    With ``fork`` each file is read in a child process (``ForkedSource``), so libpcap's reading
    runs beside the pipeline instead of competing with it for the GIL.
    """
    names, open_file = file_opener(config, paths, pace=False)
    batch_size = max(config.pipeline.batch_size, REPLAY_BATCH)

    def opener(i: int) -> Source:
        source = open_file(i)  # opened here, so a bad file is an error before anything starts
        if fork and Path(paths[i]).stat().st_size > FORK_ABOVE:
            slots = MAPPED_SLOTS if source.mapped else COPIED_SLOTS
            return ForkedSource(source, batch_size=batch_size, prepare=prepare, heads=read_heads, slots=slots)
        return source  # a small file is read before a child would have started

    engine = Engine(
        Pipeline(config, names, known_devices),
        opener,
        batch_size=batch_size,
        window=0.0,
        # The reader only needs to stay a batch ahead (a forked one holds more in its slots), not the live queue's worth.
        queue_capacity=min(config.pipeline.queue_capacity_packets, batch_size),
        blocking=True,
        retry=False,
        sequential=True,
    )
    engine.open_all()
    return engine


def run(engine: Engine, watch: Callable[[threading.Event], None] | None = None) -> None:
    """Run a replay engine to the end of its files (``pktagent replay`` and the tests alike).

    ``watch`` runs beside it in a thread (the progress line) and is told through its event when
    the replay is over. Raises what reading a file raised.
    """
    done = threading.Event()
    watcher = threading.Thread(target=watch, args=(done,), name="replay-watch", daemon=True) if watch else None
    if watcher is not None:
        watcher.start()
    engine.start()
    try:
        engine.wait()
    finally:
        done.set()
        if watcher is not None:
            watcher.join()
        engine.close()
    if engine.failure is not None:
        raise engine.failure
    finish(engine)


def replay_files(config: Config, paths: Sequence[str | Path], known_devices: Sequence[Device] = (), **build: str) -> Snapshot:
    """Replay ``paths`` and return the final snapshot."""
    engine = replay_engine(config, paths, known_devices)
    run(engine)
    return engine.snapshot(**build)


def finish(engine: Engine) -> None:
    """The capture has ended: let the linger of the last closed flows run out, as it would have live."""
    p = engine.pipeline
    last = int(p.counters.last_packet_us.max()) if p.counters.last_packet_us.size else 0
    if last:
        p.tick(last + p.flows.linger_us + 1)
