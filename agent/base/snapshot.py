"""A consistent, read-only copy of every figure the agent exports, taken between two batches.

Exporters (``/metrics``, ``/health``, OTLP, ``replay`` output) read only snapshots; they never
reach into the pipeline. Tests build snapshots by hand. Snapshots of several worker
processes add up with ``merge``. Nothing here depends on the rest of the package.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

# Buckets: batch processing time from 10 us to 1 s, batch size in packets.
PROCESSING_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0)
BATCH_SIZE_BUCKETS = (1.0, 10.0, 100.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0, 32000.0, 64000.0)


@dataclass(frozen=True)
class Histogram:
    """Per-bucket (not cumulative) counts, the last one being +Inf, and the sum of observations."""

    bounds: tuple[float, ...]
    counts: npt.NDArray[np.int64]
    total: float = 0.0

    @classmethod
    def empty(cls, bounds: tuple[float, ...]) -> Histogram:
        return cls(bounds, np.zeros(len(bounds) + 1, np.int64))

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def merge(self, other: Histogram) -> Histogram:
        return Histogram(self.bounds, self.counts + other.counts, self.total + other.total)


@dataclass(frozen=True)
class CacheStats:
    name: str
    hits: int = 0
    misses: int = 0
    entries: int = 0
    capacity: int = 0
    evictions: int = 0

    def merge(self, other: CacheStats) -> CacheStats:
        return CacheStats(
            self.name,
            self.hits + other.hits,
            self.misses + other.misses,
            self.entries + other.entries,
            self.capacity + other.capacity,
            self.evictions + other.evictions,
        )


@dataclass(frozen=True)
class UsageSeries:
    """One label value of the per-device or per-domain traffic: bytes and packets each way."""

    name: str
    tx_bytes: float = 0.0
    rx_bytes: float = 0.0
    tx_packets: float = 0.0
    rx_packets: float = 0.0

    def values(self) -> tuple[float, float, float, float]:
        return (self.tx_bytes, self.rx_bytes, self.tx_packets, self.rx_packets)

    def merge(self, other: UsageSeries) -> UsageSeries:
        return UsageSeries(
            self.name,
            self.tx_bytes + other.tx_bytes,
            self.rx_bytes + other.rx_bytes,
            self.tx_packets + other.tx_packets,
            self.rx_packets + other.rx_packets,
        )


def _merge_series(a: tuple[UsageSeries, ...], b: tuple[UsageSeries, ...]) -> tuple[UsageSeries, ...]:
    out = {s.name: s for s in a}
    for s in b:
        out[s.name] = out[s.name].merge(s) if s.name in out else s
    return tuple(out.values())


def _add_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in {*a, *b}}


def _zeros(*shape: int) -> npt.NDArray[np.int64]:
    return np.zeros(shape, np.int64)


@dataclass(frozen=True)
class Snapshot:
    """Everything one scrape shows. Arrays are indexed by interface first, then by label codes."""

    interfaces: tuple[str, ...]
    version: str = ""
    python_version: str = ""
    libpcap_version: str = ""
    capture_up: npt.NDArray[np.int64] = field(default_factory=lambda: _zeros(0))
    last_packet_seconds: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    captured: npt.NDArray[np.int64] = field(default_factory=lambda: _zeros(0))
    processed: npt.NDArray[np.int64] = field(default_factory=lambda: _zeros(0))
    duplicate: npt.NDArray[np.int64] = field(default_factory=lambda: _zeros(0))
    sampled_out: npt.NDArray[np.int64] = field(default_factory=lambda: _zeros(0))
    unsupported_link: npt.NDArray[np.int64] = field(default_factory=lambda: _zeros(0))
    dropped: npt.NDArray[np.int64] = field(default_factory=lambda: _zeros(0, 4))  # kernel, interface, queue, reopen
    decode_errors: npt.NDArray[np.int64] = field(default_factory=lambda: _zeros(0, 0))
    traffic_packets: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 4, 6, 5)))
    traffic_bytes: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 4, 6, 5)))
    queue_packets: int = 0
    queue_capacity: int = 0
    batch_seconds: Histogram = field(default_factory=lambda: Histogram.empty(PROCESSING_BUCKETS))
    batch_sizes: Histogram = field(default_factory=lambda: Histogram.empty(BATCH_SIZE_BUCKETS))
    busy_seconds: float = 0.0
    min_batch_seconds: float = 0.0
    max_batch_seconds: float = 0.0
    caches: tuple[CacheStats, ...] = ()
    flows_active: npt.NDArray[np.int64] = field(default_factory=lambda: _zeros(5))
    flows_capacity: int = 0
    flows_started: npt.NDArray[np.int64] = field(default_factory=lambda: _zeros(5))
    flows_ended: npt.NDArray[np.int64] = field(default_factory=lambda: _zeros(5, 5))
    capture_errors: tuple[str, ...] = ()  # per interface: why its capture is down ("" when up)
    devices_known: int = 0
    device_series: tuple[UsageSeries, ...] = ()
    domain_series: tuple[UsageSeries, ...] = ()
    series_dropped: dict[str, int] = field(default_factory=dict)  # by label: device, domain
    series_budget: dict[str, int] = field(default_factory=dict)  # by label: how many named series it may have
    learned: dict[str, int] = field(default_factory=dict)  # slow-path packets: decoded, malformed, skipped
    workers: int = 1  # processes whose figures these are
    store_writes: dict[str, int] | None = None  # by result; None: no device database
    otlp_exports: dict[str, int] | None = None  # by result; None: OTLP export off
    http_rejected: dict[str, int] | None = None  # by reason; None: no web server (replay)
    memory: dict[str, int] | None = None  # the whole agent's: resident, peak (bytes) and processes; None: not measured (replay)

    def replace(self, **changes: object) -> Snapshot:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def merge(self, other: Snapshot) -> Snapshot:
        """The sum of two workers' snapshots over the same interfaces (counters and gauges add up)."""
        if other.interfaces != self.interfaces:
            raise ValueError("snapshots of different interfaces cannot be merged")
        caches = {c.name: c for c in self.caches}
        for c in other.caches:
            caches[c.name] = caches[c.name].merge(c) if c.name in caches else c
        mins = [m for m in (self.min_batch_seconds, other.min_batch_seconds) if m > 0]
        return dataclasses.replace(
            self,
            capture_up=np.minimum(self.capture_up, other.capture_up),
            last_packet_seconds=np.maximum(self.last_packet_seconds, other.last_packet_seconds),
            captured=self.captured + other.captured,
            processed=self.processed + other.processed,
            duplicate=self.duplicate + other.duplicate,
            sampled_out=self.sampled_out + other.sampled_out,
            unsupported_link=self.unsupported_link + other.unsupported_link,
            dropped=self.dropped + other.dropped,
            decode_errors=self.decode_errors + other.decode_errors,
            traffic_packets=self.traffic_packets + other.traffic_packets,
            traffic_bytes=self.traffic_bytes + other.traffic_bytes,
            queue_packets=self.queue_packets + other.queue_packets,
            queue_capacity=self.queue_capacity + other.queue_capacity,
            batch_seconds=self.batch_seconds.merge(other.batch_seconds),
            batch_sizes=self.batch_sizes.merge(other.batch_sizes),
            busy_seconds=self.busy_seconds + other.busy_seconds,
            min_batch_seconds=min(mins) if mins else 0.0,
            max_batch_seconds=max(self.max_batch_seconds, other.max_batch_seconds),
            caches=tuple(caches.values()),
            flows_active=self.flows_active + other.flows_active,
            flows_capacity=self.flows_capacity + other.flows_capacity,
            flows_started=self.flows_started + other.flows_started,
            flows_ended=self.flows_ended + other.flows_ended,
            capture_errors=tuple(a or b for a, b in zip(self.capture_errors, other.capture_errors)),
            devices_known=max(self.devices_known, other.devices_known),
            device_series=_merge_series(self.device_series, other.device_series),
            domain_series=_merge_series(self.domain_series, other.domain_series),
            series_dropped=_add_counts(self.series_dropped, other.series_dropped),
            series_budget={**self.series_budget, **other.series_budget},  # one configuration: the same budgets
            learned=_add_counts(self.learned, other.learned),
            workers=self.workers + other.workers,
        )
