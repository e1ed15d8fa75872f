"""The pipeline: the one module that wires the stages, in the order data flows through them.

    decode -> dedup -> sample -> classify -> learn (slow path) -> devices & domains -> flows -> counters

Each stage takes a batch and hands on a batch or columns; none imports another. ``process``
runs one raw batch through all of them; everything a scrape can see changes under one lock,
once per batch, so an exposition never shows half a batch.

>>> from agent.config import Config
>>> p = Pipeline(Config(), ["eth0"])
>>> p.snapshot_fields()["flows_capacity"]
65536
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from agent.base.addresses import address_int, host_addresses
from agent.base.batch import Batch, RawBatch
from agent.base.snapshot import CacheStats, UsageSeries
from agent.config import Config
from agent.naming.devices import NameLookup, local_devices
from agent.naming.domains import DomainMap
from agent.naming.learn import Learner, Observations
from agent.naming.registry import Device, Registry
from agent.naming.usage import RX_BYTES, TX_BYTES, budgets
from agent.stages.classify import Classifier
from agent.stages.counters import Counters
from agent.stages.decode import decode, supported
from agent.stages.dedup import Dedup, frame_hash
from agent.stages.flows import FlowTable
from agent.stages.sample import Sampler


def prepare(raw: RawBatch) -> RawBatch | Batch:
    """The stages that need nothing but the batch itself: decode, and the dedup key.

    They can run anywhere — a reader process prepares batches beside the pipeline. A link
    type pktagent does not decode comes back as it went in, to be counted as unsupported.
    """
    if not supported(raw.linktype):
        return raw
    batch = decode(raw)
    # The windows (a view of every frame's first bytes) are read by nothing past the hash: let them go.
    return batch.replace(frame_hash=frame_hash(batch), window=np.zeros((len(batch), 0), np.uint8))


class Pipeline:
    def __init__(self, config: Config, interfaces: Sequence[str], known_devices: Sequence[Device] = (), *, host_local: bool = False) -> None:
        self.config = config
        self.host_local = host_local  # this host's own addresses count as local too (a live capture's)
        self.interfaces = tuple(interfaces)
        self.lock = threading.Lock()
        self.dedup = Dedup(int(config.dedup.window_ms * 1000), config.dedup.max_entries)
        self.sampler = Sampler(config.pipeline.sampling_rate)
        self.classifier = self._classifier(config)
        d = config.devices
        self.learner = Learner(d.learn_per_batch)
        self.registry = self._registry(known_devices)
        self.device_usage, self.domain_usage = budgets(d)
        self.devices = NameLookup(self.registry, d.cache_size, int(d.cache_ttl_seconds * 1_000_000), self.device_usage.names)
        self.domains = DomainMap(d.max_domain_addresses, self.domain_usage.names)
        f = config.flows
        self.flows = FlowTable(
            f.max_flows,
            idle_us=int(f.idle_timeout_seconds * 1e6),
            active_us=int(f.active_timeout_seconds * 1e6),
            linger_us=int(f.linger_seconds * 1e6),
        )
        self.counters = Counters(len(self.interfaces))
        self.on_learn: Callable[[Observations, int], None] | None = None  # workers pass what they learn on

    def _classifier(self, config: Config) -> Classifier:
        host = host_addresses() if self.host_local and config.host_addresses_local else ()
        return Classifier((*config.local_networks, *host))

    def _registry(self, known_devices: Sequence[Device]) -> Registry:
        registry = Registry(self.config.devices.max_devices)
        registry.restore(known_devices)
        registry.apply_inventory(self.config.devices.inventory)
        return registry

    def adopt_devices(self, known_devices: Sequence[Device]) -> None:
        """Start from devices an earlier run learned (before the first batch)."""
        with self.lock:
            self.registry = self._registry(known_devices)
            self.devices.store = self.registry
            self.devices.cache.clear()

    def process(self, item: RawBatch | Batch) -> None:
        """Run one batch through every stage and count it (a ``Batch`` has been prepared already)."""
        started = time.perf_counter()
        n = len(item)
        if n == 0:
            return
        batch = prepare(item) if isinstance(item, RawBatch) else item
        if isinstance(batch, RawBatch):
            with self.lock:
                self.counters.add_unsupported(batch.iface, n)
                self.counters.observe_batch(time.perf_counter() - started, n)
            return
        batch, frame_hashes = self.dedup.apply(batch)
        batch = self.sampler.apply(batch, frame_hashes)
        batch = self.classifier.apply(batch)
        now = int(batch.ts.max())
        self._learn(batch, now)
        src_dev, dst_dev = local_devices(self.devices, batch)
        counted_ip = batch.counted & batch.is_ip
        outbound = batch.src_local & ~batch.dst_local & counted_ip
        inbound = batch.dst_local & ~batch.src_local & counted_ip
        to_remote = outbound.nonzero()[0]
        from_remote = inbound.nonzero()[0]
        domain = self.domains.lookup(
            np.concatenate((batch.dst_hi[to_remote], batch.src_hi[from_remote])),
            np.concatenate((batch.dst_lo[to_remote], batch.src_lo[from_remote])),
        )
        scale = self.sampler.scale
        size = batch.wirelen.astype(np.float64)
        with self.lock:
            self.flows.apply(batch)
            self.counters.add(batch, scale)
            tx, rx = src_dev >= 0, dst_dev >= 0
            senders, receivers = src_dev[tx], dst_dev[rx]
            u = self.device_usage
            u.add(senders, TX_BYTES, size[tx], scale)
            u.add(receivers, RX_BYTES, size[rx], scale)
            u.touch(senders, now)
            u.touch(receivers, now)
            u.maybe_rerank(now)
            r = self.domain_usage
            r.add(domain[: to_remote.size], TX_BYTES, size[to_remote], scale)
            r.add(domain[to_remote.size :], RX_BYTES, size[from_remote], scale)
            r.touch(domain, now)
            r.maybe_rerank(now)
            self.counters.observe_batch(time.perf_counter() - started, n)

    def _learn(self, batch: Any, now: int) -> None:
        """The slow path: names and addresses from ARP, DHCP and DNS; the caches forget what changed."""
        obs = self.learner.observe(batch)
        if not obs:
            return
        self.apply_observations(obs, now)
        if self.on_learn is not None:
            self.on_learn(obs, now)

    def apply_observations(self, obs: Observations, now: int) -> None:
        """Learn from observations, this pipeline's own or another worker's."""
        local = self.classifier.locality({a for a, _, _ in obs.names} | {a for a, _ in obs.domains})  # one vectorised call
        self.registry.learn(obs, now / 1e6, local.__getitem__)
        self.devices.forget(self.registry.take_changed_addresses())
        self.domains.learn([(address_int(a), n) for a, n in obs.domains if not local[a]])
        # Names of devices or domains gone for good give their ids back before the interners fill.
        if len(self.device_usage.names) > 0.9 * self.device_usage.names.capacity:
            with self.lock:
                self.device_usage.prune()
                self.devices.cache.clear()
        if len(self.domain_usage.names) > 0.9 * self.domain_usage.names.capacity:
            with self.lock:
                self.domain_usage.prune(self.domains.referenced())

    # What reconfigure() can change while running; everything else needs a restart.
    RELOADABLE = frozenset(
        {
            "pipeline.sampling_rate",
            "local_networks",
            "host_addresses_local",
            "devices.inventory",
            "dedup.window_ms",
            "flows.idle_timeout_seconds",
            "flows.active_timeout_seconds",
            "flows.linger_seconds",
        }
    )

    def reconfigure(self, config: Config, keys: Sequence[str]) -> None:
        """Apply the changed ``keys`` of ``config`` between two batches; counters go on untouched."""
        with self.lock:
            if "pipeline.sampling_rate" in keys:
                self.sampler = Sampler(config.pipeline.sampling_rate)
            if "local_networks" in keys or "host_addresses_local" in keys:
                self.classifier = self._classifier(config)
            if "devices.inventory" in keys:
                self.registry.replace_inventory(config.devices.inventory)
                self.devices.cache.clear()
            if "dedup.window_ms" in keys:
                self.dedup.window_us = int(config.dedup.window_ms * 1000)
            f = config.flows
            self.flows.idle_us = int(f.idle_timeout_seconds * 1e6)
            self.flows.active_us = int(f.active_timeout_seconds * 1e6)
            self.flows.linger_us = int(f.linger_seconds * 1e6)
            self.config = config

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

        def cache(name: str, cache: Any) -> CacheStats:
            return CacheStats(name, cache.hits, cache.misses, len(cache), cache.max_entries, cache.evictions)

        reg, dom = self.registry, self.domains
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
                cache("device", self.devices.cache),
                CacheStats("dedup", self.dedup.hits, self.dedup.misses, self.dedup.entries, self.dedup.max_entries, self.dedup.evictions),
                CacheStats("device_registry", reg.found, reg.lookups - reg.found, len(reg), reg.max_devices, reg.evictions),
                CacheStats("domain_map", dom.hits, dom.misses, len(dom), dom.max_entries, dom.evictions),
            ),
            "flows_active": self.flows.active.copy(),
            "flows_capacity": self.flows.capacity,
            "flows_started": self.flows.started.copy(),
            "flows_ended": self.flows.ended.copy(),
            "devices_known": len(reg),
            "device_series": tuple(UsageSeries(name, *v) for name, v in self.device_usage.series()),
            "domain_series": tuple(UsageSeries(name, *v) for name, v in self.domain_usage.series()),
            "series_dropped": {"device": self.device_usage.dropped, "domain": self.domain_usage.dropped},
            "series_budget": {"device": self.device_usage.budget, "domain": self.domain_usage.budget},
            "learned": {"decoded": self.learner.decoded, "malformed": self.learner.malformed, "skipped": self.learner.skipped},
        }
