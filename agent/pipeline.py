"""The pipeline: the one module that wires the stages, in the order data flows through them.

    decode -> dedup -> sample -> classify -> devices -> flows -> counters

Each stage takes a batch and hands on a batch; none imports another. ``process`` runs one
raw batch through all of them; everything a scrape can see changes under one lock, once per
batch, so an exposition never shows half a batch.

>>> from agent.config import Config
>>> p = Pipeline(Config(), ["eth0"])
>>> p.snapshot_fields()["flows_capacity"]
65536
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from agent.batch import RawBatch
from agent.classify import Classifier
from agent.config import Config
from agent.counters import Counters
from agent.decode import decode, supported
from agent.dedup import Dedup
from agent.devices import DeviceLookup, DeviceStore, Inventory
from agent.flows import FlowTable
from agent.sample import Sampler
from agent.snapshot import CacheStats


class Pipeline:
    def __init__(self, config: Config, interfaces: Sequence[str], store: DeviceStore | None = None) -> None:
        self.config = config
        self.interfaces = tuple(interfaces)
        self.lock = threading.Lock()
        self.dedup = Dedup(int(config.dedup.window_ms * 1000), config.dedup.max_entries)
        self.sampler = Sampler(config.pipeline.sampling_rate)
        self.classifier = Classifier(config.local_networks)
        if store is None:
            store = Inventory(config.devices.inventory)
        self.devices = DeviceLookup(store, config.devices.cache_size, int(config.devices.cache_ttl_seconds * 1_000_000))
        f = config.flows
        self.flows = FlowTable(
            f.max_flows,
            idle_us=int(f.idle_timeout_seconds * 1e6),
            active_us=int(f.active_timeout_seconds * 1e6),
            linger_us=int(f.linger_seconds * 1e6),
        )
        self.counters = Counters(len(self.interfaces))

    def process(self, raw: RawBatch) -> None:
        """Run one batch through every stage and count it."""
        started = time.perf_counter()
        n = len(raw)
        if n == 0:
            return
        if not supported(raw.linktype):
            with self.lock:
                self.counters.add_unsupported(raw.iface, n)
                self.counters.observe_batch(time.perf_counter() - started, n)
            return
        batch = decode(raw)
        batch, frame_hashes = self.dedup.apply(batch)
        batch = self.sampler.apply(batch, frame_hashes)
        batch = self.classifier.apply(batch)
        self.devices.apply(batch)
        with self.lock:
            self.flows.apply(batch)
            self.counters.add(batch, self.sampler.scale)
            self.counters.observe_batch(time.perf_counter() - started, n)

    def tick(self, now_us: int) -> None:
        """Let flow timeouts fire while no packets arrive."""
        with self.lock:
            self.flows.tick(now_us)

    def snapshot_fields(self) -> dict[str, Any]:
        """The pipeline's share of a Snapshot (call with the lock held for a consistent copy)."""
        c = self.counters
        seconds, sizes = c.histograms()
        n_if = len(self.interfaces)
        shape = (n_if, 4, 6, 5)
        cache = self.devices.cache
        return {
            "processed": c.processed.copy(),
            "duplicate": c.duplicate.copy(),
            "sampled_out": c.sampled_out.copy(),
            "unsupported_link": c.unsupported_link.copy(),
            "last_packet_seconds": c.last_packet_us / 1e6,
            "decode_errors": c.decode_errors[:, 1:].copy(),
            "traffic_packets": c.traffic_packets.reshape(shape).copy(),
            "traffic_bytes": c.traffic_bytes.reshape(shape).copy(),
            "batch_seconds": seconds,
            "batch_sizes": sizes,
            "busy_seconds": c.busy_seconds,
            "min_batch_seconds": c.min_batch_seconds,
            "max_batch_seconds": c.max_batch_seconds,
            "caches": (
                CacheStats("device", cache.hits, cache.misses, len(cache), cache.max_entries, cache.evictions),
                CacheStats("dedup", self.dedup.hits, self.dedup.misses, self.dedup.entries, self.dedup.max_entries, self.dedup.evictions),
            ),
            "flows_active": self.flows.active.copy(),
            "flows_capacity": self.flows.capacity,
            "flows_started": self.flows.started.copy(),
            "flows_ended": self.flows.ended.copy(),
        }
