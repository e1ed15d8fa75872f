"""Prometheus exposition: a custom collector that builds every metric family afresh from a snapshot.

The collector is given a function returning a ``Snapshot``; it never reaches into the
pipeline. Each family is built by its own function, and a failure in one is logged and
counted in ``pktagent_exporter_errors_total{collector}`` instead of breaking the scrape.

>>> from prometheus_client import CollectorRegistry, generate_latest
>>> from agent.snapshot import Snapshot
>>> registry = CollectorRegistry()
>>> registry.register(SnapshotCollector(lambda: Snapshot(interfaces=("eth0",), version="1.0")))
>>> b"pktagent_build_info" in generate_latest(registry)
True
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

import numpy as np
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from agent import labels
from agent.snapshot import Histogram, Snapshot

log = logging.getLogger("pktagent.metrics")

NS = "pktagent"
Family = Callable[[Snapshot], Iterable[Metric]]


def _per_interface(s: Snapshot, name: str, doc: str, values: np.ndarray, *, counter: bool = True) -> Metric:
    cls = CounterMetricFamily if counter else GaugeMetricFamily
    m = cls(f"{NS}_{name}", doc, labels=["interface"])
    for iface, v in zip(s.interfaces, values.tolist()):
        m.add_metric([iface], v)
    return m


def build_info(s: Snapshot) -> Iterator[Metric]:
    yield InfoMetricFamily(
        f"{NS}_build",
        "Version of pktagent, the Python it runs on and the libpcap it captures with.",
        value={"version": s.version, "python_version": s.python_version, "libpcap_version": s.libpcap_version},
    )


def capture(s: Snapshot) -> Iterator[Metric]:
    yield _per_interface(s, "capture_up", "1 when the capture on the interface is open and reading, 0 when it is down.", s.capture_up, counter=False)
    yield _per_interface(
        s, "last_packet_timestamp_seconds", "Timestamp of the newest packet processed from the interface (0: none yet).", s.last_packet_seconds, counter=False
    )
    yield _per_interface(s, "packets_captured", "Packets libpcap handed over.", s.captured)
    dropped = CounterMetricFamily(
        f"{NS}_packets_dropped",
        "Packets lost before processing, by stage: kernel and interface (libpcap's figures) or queue (agent full).",
        labels=["interface", "stage"],
    )
    for iface, row in zip(s.interfaces, s.dropped.tolist()):
        for stage, v in zip(labels.DROP_STAGES, row):
            dropped.add_metric([iface, stage], v)
    yield dropped
    yield _per_interface(s, "packets_duplicate", "Packets left out as duplicates of one seen within the dedup window.", s.duplicate)
    yield _per_interface(s, "packets_sampled_out", "Packets left out by sampling.", s.sampled_out)
    yield _per_interface(s, "packets_processed", "Packets that reached the traffic counters.", s.processed)
    yield _per_interface(s, "unsupported_link_packets", "Packets of a link type pktagent does not decode, not processed.", s.unsupported_link)


def decode_errors(s: Snapshot) -> Iterator[Metric]:
    m = CounterMetricFamily(
        f"{NS}_decode_errors", "Headers that could not be read, by layer and reason; the packets are still counted.", labels=["interface", "layer", "reason"]
    )
    for iface, row in zip(s.interfaces, s.decode_errors.tolist()):
        for (layer, reason), v in zip(labels.DECODE_ERRORS, row):
            m.add_metric([iface, layer, reason], v)
    yield m


def traffic(s: Snapshot) -> Iterator[Metric]:
    names = ["interface", "network", "transport", "direction"]
    packets = CounterMetricFamily(f"{NS}_traffic_packets", "Packets by network, transport and direction (scaled up when sampling).", labels=names)
    octets = CounterMetricFamily(f"{NS}_traffic_bytes", "Bytes on the wire by network, transport and direction (scaled up when sampling).", labels=names)
    for k, iface in enumerate(s.interfaces):
        cells = np.argwhere(s.traffic_packets[k] > 0)
        for net, tr, di in cells.tolist():
            key = [iface, labels.NETWORKS[net], labels.TRANSPORTS[tr], labels.DIRECTIONS[di]]
            packets.add_metric(key, float(s.traffic_packets[k, net, tr, di]))
            octets.add_metric(key, float(s.traffic_bytes[k, net, tr, di]))
    yield packets
    yield octets


def _histogram(name: str, doc: str, h: Histogram) -> Metric:
    cumulative = np.cumsum(h.counts).tolist()
    buckets = [(f"{b:g}", c) for b, c in zip(h.bounds, cumulative)] + [("+Inf", cumulative[-1])]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=h.total)


def processing(s: Snapshot) -> Iterator[Metric]:
    yield GaugeMetricFamily(f"{NS}_queue_packets", "Packets waiting in the queue between capture and processing.", value=s.queue_packets)
    yield GaugeMetricFamily(f"{NS}_queue_capacity_packets", "Packets the queue holds before it drops new batches.", value=s.queue_capacity)
    yield _histogram(f"{NS}_batch_processing_seconds", "Time to process one batch through the pipeline.", s.batch_seconds)
    yield _histogram(f"{NS}_batch_size_packets", "Packets per processed batch.", s.batch_sizes)
    yield CounterMetricFamily(
        f"{NS}_processing_busy_seconds", "Time the processing stage was busy; its rate is the utilisation, one minus it the headroom.", value=s.busy_seconds
    )
    yield GaugeMetricFamily(
        f"{NS}_processing_workers", "Processes running a pipeline (capture.workers); busy time divided by it is the utilisation of each.", value=s.workers
    )


def caches(s: Snapshot) -> Iterator[Metric]:
    hits = CounterMetricFamily(f"{NS}_cache_hits", "Lookups a cache answered.", labels=["cache"])
    misses = CounterMetricFamily(f"{NS}_cache_misses", "Lookups a cache could not answer.", labels=["cache"])
    evictions = CounterMetricFamily(f"{NS}_cache_evictions", "Entries a full cache dropped to make room.", labels=["cache"])
    entries = GaugeMetricFamily(f"{NS}_cache_entries", "Entries a cache holds.", labels=["cache"])
    capacity = GaugeMetricFamily(f"{NS}_cache_capacity_entries", "Entries a cache may hold.", labels=["cache"])
    for c in s.caches:
        hits.add_metric([c.name], c.hits)
        misses.add_metric([c.name], c.misses)
        evictions.add_metric([c.name], c.evictions)
        entries.add_metric([c.name], c.entries)
        capacity.add_metric([c.name], c.capacity)
    yield from (hits, misses, evictions, entries, capacity)


def flows(s: Snapshot) -> Iterator[Metric]:
    active = GaugeMetricFamily(f"{NS}_flows_active", "Flows in the flow table.", labels=["transport"])
    started = CounterMetricFamily(f"{NS}_flows_started", "Flows started.", labels=["transport"])
    ended = CounterMetricFamily(f"{NS}_flows_ended", "Flows ended, by reason.", labels=["transport", "reason"])
    for k, tr in enumerate(labels.FLOW_TRANSPORTS):
        active.add_metric([tr], int(s.flows_active[k]))
        started.add_metric([tr], int(s.flows_started[k]))
        for r, reason in enumerate(labels.FLOW_END_REASONS):
            ended.add_metric([tr, reason], int(s.flows_ended[k, r]))
    yield active
    yield GaugeMetricFamily(f"{NS}_flows_capacity", "Flows the flow table holds before it evicts the least recently seen.", value=s.flows_capacity)
    yield started
    yield ended


def devices(s: Snapshot) -> Iterator[Metric]:
    yield GaugeMetricFamily(f"{NS}_devices_known", "Devices in the registry (named or not).", value=s.devices_known)
    names = ["device", "direction"]
    dev_bytes = CounterMetricFamily(
        f"{NS}_device_bytes", "Bytes each device sent (transmit) and received (receive); over-budget devices count as 'other'.", labels=names
    )
    dev_packets = CounterMetricFamily(f"{NS}_device_packets", "Packets each device sent (transmit) and received (receive).", labels=names)
    for d in s.device_series:
        dev_bytes.add_metric([d.name, "transmit"], d.tx_bytes)
        dev_bytes.add_metric([d.name, "receive"], d.rx_bytes)
        dev_packets.add_metric([d.name, "transmit"], d.tx_packets)
        dev_packets.add_metric([d.name, "receive"], d.rx_packets)
    yield dev_bytes
    yield dev_packets
    remote = CounterMetricFamily(
        f"{NS}_remote_bytes", "Bytes sent to (transmit) and received from (receive) remote domains, by registrable domain.", labels=["domain", "direction"]
    )
    for d in s.domain_series:
        remote.add_metric([d.name, "transmit"], d.tx_bytes)
        remote.add_metric([d.name, "receive"], d.rx_bytes)
    yield remote
    dropped = CounterMetricFamily(f"{NS}_label_series_dropped", "Series dropped to keep a label within its budget (quiet, or outranked).", labels=["label"])
    for label, v in sorted(s.series_dropped.items()):
        dropped.add_metric([label], v)
    yield dropped
    budget = GaugeMetricFamily(
        f"{NS}_label_series_budget", "Named series a label may have at once (devices.series_budget, devices.domain_series_budget).", labels=["label"]
    )
    for label, v in sorted(s.series_budget.items()):
        budget.add_metric([label], v)
    yield budget
    learned = CounterMetricFamily(f"{NS}_learn_packets", "ARP, DHCP and DNS packets read for names, by result.", labels=["result"])
    for result, v in sorted(s.learned.items()):
        learned.add_metric([result], v)
    yield learned
    writes = s.extra.get("store_writes")
    if isinstance(writes, dict):
        m = CounterMetricFamily(f"{NS}_device_store_writes", "Writes of learned devices to the database, by result.", labels=["result"])
        for result, v in sorted(writes.items()):
            m.add_metric([result], v)
        yield m


def otlp(s: Snapshot) -> Iterator[Metric]:
    exports = s.extra.get("otlp_exports")
    if isinstance(exports, dict):
        m = CounterMetricFamily(
            f"{NS}_otlp_exports", "OTLP exports to the collector, by result (a failure is retried at the next interval).", labels=["result"]
        )
        for result, v in sorted(exports.items()):
            m.add_metric([result], v)
        yield m


def memory(s: Snapshot) -> Iterator[Metric]:
    m = s.extra.get("memory")
    if isinstance(m, dict):
        yield GaugeMetricFamily(
            f"{NS}_resident_memory_bytes",
            "Resident memory of the whole agent: this process and its capture workers, added up (process_resident_memory_bytes is this process alone).",
            value=m["resident"],
        )
        yield GaugeMetricFamily(f"{NS}_peak_resident_memory_bytes", "The agent's processes' peak resident memory (VmHWM), added up.", value=m["peak"])
        yield GaugeMetricFamily(f"{NS}_processes", "Processes the agent runs: 1, or 1 + the workers.", value=m["processes"])


FAMILIES: tuple[Family, ...] = (build_info, capture, decode_errors, traffic, processing, caches, flows, devices, otlp, memory)


class SnapshotCollector(Collector):
    """Collects ``families`` from the snapshot ``source`` returns, one snapshot per scrape."""

    def __init__(self, source: Callable[[], Snapshot], families: Iterable[Family] = FAMILIES) -> None:
        self._source = source
        self._families = tuple(families)
        self._errors: dict[str, int] = {f.__name__: 0 for f in self._families}

    def collect(self) -> Iterator[Metric]:
        snapshot = self._source()
        for family in self._families:
            try:
                built = list(family(snapshot))
            except Exception:
                log.exception("collector %s failed", family.__name__)
                self._errors[family.__name__] += 1
                continue
            yield from built
        errors = CounterMetricFamily(f"{NS}_exporter_errors", "Scrapes in which one collector failed (the others still answered).", labels=["collector"])
        for name, v in self._errors.items():
            errors.add_metric([name], v)
        yield errors
