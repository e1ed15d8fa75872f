"""Stopping under load: once a stop is asked for, the batch in hand is finished and the queue is not worked through.

A DHCP flood (a new client MAC in every packet: the slowest work per packet the pipeline has)
fills the queue while the pipeline holds its first batch; then the engine is stopped. The
queued batches are dropped and counted at the queue, so the work left after a stop is one batch
whatever the queue holds (a full queue of a DHCP flood took 5.3 s to work through).
"""

from __future__ import annotations

import threading

import pcapgen as g
from waiting import until

from agent.base.batch import Batch, RawBatch
from agent.capture.memory import MemorySource
from agent.config import Config
from agent.runtime.engine import Engine
from agent.runtime.pipeline import Pipeline

START_US = 1_700_000_000_000_000
FLOOD, BATCH, CAPACITY = 20_000, 256, 8192


class HeldPipeline(Pipeline):
    """The real pipeline, whose first batch waits for the test: meanwhile the capture fills the queue."""

    def __init__(self, config: Config, interfaces: list[str]) -> None:
        super().__init__(config, interfaces)
        self.holding, self.release = threading.Event(), threading.Event()

    def process(self, batch: RawBatch | Batch) -> None:
        if not self.holding.is_set():
            self.holding.set()
            self.release.wait(60)
        super().process(batch)


def dhcp_flood(n: int) -> list[tuple[int, bytes]]:
    frames = []
    for k in range(n):
        mac = ":".join(f"{b:02x}" for b in (0x02, 0x5A, k >> 16 & 0xFF, k >> 8 & 0xFF, k & 0xFF, 0x01))
        payload = g.dhcp(mac, 1, hostname=f"flood-{k}")
        frame = g.eth(g.ETH_IPV4, src=mac, dst="ff:ff:ff:ff:ff:ff") + g.ipv4(g.UDP, "0.0.0.0", "255.255.255.255", g.udp(68, 67, payload), ident=k & 0xFFFF)
        frames.append((START_US + k * 20, frame))
    return frames


def test_a_stop_finishes_the_batch_in_hand_and_drops_the_queued_ones_counted() -> None:
    pipeline = HeldPipeline(Config(), ["eth0"])
    source = MemorySource(dhcp_flood(FLOOD), linktype=1, name="eth0")
    engine = Engine(pipeline, lambda i: source, batch_size=BATCH, window=0.0, queue_capacity=CAPACITY, blocking=False, retry=False)
    engine.open_all()
    engine.start()
    try:
        until(lambda: pipeline.holding.is_set() and engine.states[0].finished, "the flood read, the first batch held")
        assert engine.queue.packets >= CAPACITY - BATCH  # full to a batch
        engine.stop()
        pipeline.release.set()
        engine.close()
    finally:
        pipeline.release.set()
        engine.close()
    assert engine.failure is None
    s = engine.snapshot()
    assert int(s.captured[0]) == FLOOD
    # The held batch was finished; not one queued batch was worked through after the stop.
    assert (int(s.processed[0]), int(s.duplicate[0]), int(s.sampled_out[0])) == (BATCH, 0, 0)
    assert s.dropped[0].tolist() == [0, 0, FLOOD - BATCH, 0]  # kernel, interface, queue, reopen
    assert engine.queue.packets == 0
