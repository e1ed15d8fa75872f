"""Every metric family pktagent exports, declared once: both exporters and the README are driven from here.

A ``Family`` names its Prometheus series and its OpenTelemetry instrument, says what kind of
figure it is, and says how to read its samples from a ``Snapshot``. ``/metrics`` builds
Prometheus families from it (``metrics.py``), the OTLP export builds observable instruments
from it (``otlp.py``), and the README's tables are generated from it (a test keeps them true).
A new metric is one entry here plus the snapshot field it reads.

>>> [f.name for f in CATALOGUE if f.otel == "pktagent.flows.active"]
['pktagent_flows_active']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from agent.base import labels
from agent.base.snapshot import Histogram, Snapshot
from agent.export.samples import Reader, build_info, caches, counts, flows, flows_ended, memory, per_interface, per_interface_and, scalar, traffic, usage

IFACE = "network.interface.name"


@dataclass(frozen=True)
class Family:
    """One metric family: its Prometheus and OpenTelemetry names, and how to read it from a snapshot.

    ``labels`` are the Prometheus label names; ``attributes`` the OpenTelemetry attribute for
    each of them, in the same order. ``group`` is the part of ``/metrics`` it belongs to: a
    failure while reading one family drops that part only, counted in
    ``pktagent_exporter_errors_total{collector=group}``.
    """

    name: str
    help: str
    kind: Literal["counter", "gauge", "histogram", "info"]
    group: str
    otel: str  # "" when the family is not exported over OTLP
    unit: str
    otel_kind: Literal["counter", "gauge", "updown", "histogram", "resource", "none"]
    labels: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()
    read: Reader | None = None  # counters, gauges and info
    histogram: Callable[[Snapshot], Histogram] | None = None  # histograms
    extremes: Callable[[Snapshot], tuple[float | None, float | None]] | None = None  # a histogram's min and max, when known


_TRAFFIC_LABELS = ("interface", "network", "transport", "direction")
_TRAFFIC_ATTRS = (IFACE, "network.type", "network.transport", "pktagent.traffic.direction")
_USAGE_ATTRS = ("pktagent.device.name", "network.io.direction")


def _interface(name: str, doc: str, kind: Literal["counter", "gauge"], otel: str, unit: str, values: Callable[[Snapshot], np.ndarray]) -> Family:
    return Family(name, doc, kind, "capture", otel, unit, kind, ("interface",), (IFACE,), per_interface(values))


def _cache(name: str, doc: str, kind: Literal["counter", "gauge"], otel: str, unit: str, field: str) -> Family:
    return Family(name, doc, kind, "caches", otel, unit, "counter" if kind == "counter" else "updown", ("cache",), ("pktagent.cache.name",), caches(field))


CATALOGUE: tuple[Family, ...] = (
    Family(
        "pktagent_build_info",
        "Version of pktagent, the Python it runs on and the libpcap it captures with.",
        "info",
        "build_info",
        "(resource)",
        "",
        "resource",
        ("version", "python_version", "libpcap_version"),
        ("service.version", "pktagent.python.version", "pktagent.libpcap.version"),
        build_info,
    ),
    _interface(
        "pktagent_capture_up",
        "1 when the capture on the interface is open and reading, 0 when it is down.",
        "gauge",
        "pktagent.capture.up",
        "1",
        lambda s: s.capture_up,
    ),
    _interface(
        "pktagent_last_packet_timestamp_seconds",
        "Timestamp of the newest packet processed from the interface (0: none yet).",
        "gauge",
        "pktagent.capture.last_packet.time",
        "s",
        lambda s: s.last_packet_seconds,
    ),
    _interface("pktagent_packets_captured_total", "Packets libpcap handed over.", "counter", "pktagent.packets.captured", "{packet}", lambda s: s.captured),
    Family(
        "pktagent_packets_dropped_total",
        "Packets lost before processing, by stage: kernel and interface (libpcap's figures), queue (agent full) or reopen (a failed capture closed).",
        "counter",
        "capture",
        "pktagent.packets.dropped",
        "{packet}",
        "counter",
        ("interface", "stage"),
        (IFACE, "pktagent.drop.stage"),
        per_interface_and(lambda s: s.dropped, labels.DROP_STAGES),
    ),
    _interface(
        "pktagent_packets_duplicate_total",
        "Packets left out as duplicates of one seen within the dedup window.",
        "counter",
        "pktagent.packets.duplicate",
        "{packet}",
        lambda s: s.duplicate,
    ),
    _interface(
        "pktagent_packets_sampled_out_total", "Packets left out by sampling.", "counter", "pktagent.packets.sampled_out", "{packet}", lambda s: s.sampled_out
    ),
    _interface(
        "pktagent_packets_processed_total",
        "Packets that reached the traffic counters.",
        "counter",
        "pktagent.packets.processed",
        "{packet}",
        lambda s: s.processed,
    ),
    _interface(
        "pktagent_unsupported_link_packets_total",
        "Packets of a link type pktagent does not decode, not processed.",
        "counter",
        "pktagent.packets.unsupported_link",
        "{packet}",
        lambda s: s.unsupported_link,
    ),
    Family(
        "pktagent_decode_errors_total",
        "Headers that could not be read, by layer and reason; the packets are still counted.",
        "counter",
        "decode_errors",
        "pktagent.decode.errors",
        "{error}",
        "counter",
        ("interface", "layer", "reason"),
        (IFACE, "pktagent.decode.layer", "error.type"),
        per_interface_and(lambda s: s.decode_errors, labels.DECODE_ERRORS),
    ),
    Family(
        "pktagent_traffic_packets_total",
        "Packets by network, transport and direction (scaled up when sampling).",
        "counter",
        "traffic",
        "pktagent.traffic.packets",
        "{packet}",
        "counter",
        _TRAFFIC_LABELS,
        _TRAFFIC_ATTRS,
        traffic(lambda s: s.traffic_packets),
    ),
    Family(
        "pktagent_traffic_bytes_total",
        "Bytes on the wire by network, transport and direction (scaled up when sampling).",
        "counter",
        "traffic",
        "pktagent.traffic.io",
        "By",
        "counter",
        _TRAFFIC_LABELS,
        _TRAFFIC_ATTRS,
        traffic(lambda s: s.traffic_bytes),
    ),
    Family(
        "pktagent_queue_packets",
        "Packets waiting in the queue between capture and processing.",
        "gauge",
        "processing",
        "pktagent.queue.usage",
        "{packet}",
        "updown",
        read=scalar(lambda s: s.queue_packets),
    ),
    Family(
        "pktagent_queue_capacity_packets",
        "Packets the queue holds before it drops new batches.",
        "gauge",
        "processing",
        "pktagent.queue.limit",
        "{packet}",
        "updown",
        read=scalar(lambda s: s.queue_capacity),
    ),
    Family(
        "pktagent_batch_processing_seconds",
        "Time to process one batch through the pipeline.",
        "histogram",
        "processing",
        "pktagent.batch.duration",
        "s",
        "histogram",
        histogram=lambda s: s.batch_seconds,
        extremes=lambda s: (s.min_batch_seconds or None, s.max_batch_seconds or None),
    ),
    Family(
        "pktagent_batch_size_packets",
        "Packets per processed batch.",
        "histogram",
        "processing",
        "pktagent.batch.size",
        "{packet}",
        "histogram",
        histogram=lambda s: s.batch_sizes,
    ),
    Family(
        "pktagent_processing_busy_seconds_total",
        "Time the processing stage was busy; its rate is the utilisation, one minus it the headroom.",
        "counter",
        "processing",
        "pktagent.processing.time",
        "s",
        "counter",
        read=scalar(lambda s: s.busy_seconds),
    ),
    Family(
        "pktagent_processing_workers",
        "Processes running a pipeline (capture.workers); busy time divided by it is the utilisation of each.",
        "gauge",
        "processing",
        "pktagent.processing.workers",
        "{process}",
        "updown",
        read=scalar(lambda s: s.workers),
    ),
    _cache("pktagent_cache_hits_total", "Lookups a cache answered.", "counter", "pktagent.cache.hits", "{lookup}", "hits"),
    _cache("pktagent_cache_misses_total", "Lookups a cache could not answer.", "counter", "pktagent.cache.misses", "{lookup}", "misses"),
    _cache("pktagent_cache_evictions_total", "Entries a full cache dropped to make room.", "counter", "pktagent.cache.evictions", "{entry}", "evictions"),
    _cache("pktagent_cache_entries", "Entries a cache holds.", "gauge", "pktagent.cache.usage", "{entry}", "entries"),
    _cache("pktagent_cache_capacity_entries", "Entries a cache may hold.", "gauge", "pktagent.cache.limit", "{entry}", "capacity"),
    Family(
        "pktagent_flows_active",
        "Flows in the flow table.",
        "gauge",
        "flows",
        "pktagent.flows.active",
        "{flow}",
        "updown",
        ("transport",),
        ("network.transport",),
        flows(lambda s: s.flows_active),
    ),
    Family(
        "pktagent_flows_capacity",
        "Flows the flow table holds before it evicts the least recently seen.",
        "gauge",
        "flows",
        "pktagent.flows.limit",
        "{flow}",
        "updown",
        read=scalar(lambda s: s.flows_capacity),
    ),
    Family(
        "pktagent_flows_started_total",
        "Flows started.",
        "counter",
        "flows",
        "pktagent.flows.started",
        "{flow}",
        "counter",
        ("transport",),
        ("network.transport",),
        flows(lambda s: s.flows_started),
    ),
    Family(
        "pktagent_flows_ended_total",
        "Flows ended, by reason.",
        "counter",
        "flows",
        "pktagent.flows.ended",
        "{flow}",
        "counter",
        ("transport", "reason"),
        ("network.transport", "pktagent.flow.end_reason"),
        flows_ended,
    ),
    Family(
        "pktagent_devices_known",
        "Devices in the registry (named or not).",
        "gauge",
        "devices",
        "pktagent.devices.known",
        "{device}",
        "updown",
        read=scalar(lambda s: s.devices_known),
    ),
    Family(
        "pktagent_device_bytes_total",
        "Bytes each device sent (transmit) and received (receive); over-budget devices count as 'other'.",
        "counter",
        "devices",
        "pktagent.device.io",
        "By",
        "counter",
        ("device", "direction"),
        _USAGE_ATTRS,
        usage("device_series", "bytes"),
    ),
    Family(
        "pktagent_device_packets_total",
        "Packets each device sent (transmit) and received (receive).",
        "counter",
        "devices",
        "pktagent.device.packets",
        "{packet}",
        "counter",
        ("device", "direction"),
        _USAGE_ATTRS,
        usage("device_series", "packets"),
    ),
    Family(
        "pktagent_remote_bytes_total",
        "Bytes sent to (transmit) and received from (receive) remote domains, by registrable domain.",
        "counter",
        "devices",
        "pktagent.remote.io",
        "By",
        "counter",
        ("domain", "direction"),
        ("pktagent.remote.domain", "network.io.direction"),
        usage("domain_series", "bytes"),
    ),
    Family(
        "pktagent_label_series_dropped_total",
        "Series dropped to keep a label within its budget (quiet, or outranked).",
        "counter",
        "devices",
        "pktagent.label.series.dropped",
        "{series}",
        "counter",
        ("label",),
        ("pktagent.label.name",),
        counts(lambda s: s.series_dropped),
    ),
    Family(
        "pktagent_label_series_budget",
        "Named series a label may have at once (devices.series_budget, devices.domain_series_budget).",
        "gauge",
        "devices",
        "pktagent.label.series.budget",
        "{series}",
        "updown",
        ("label",),
        ("pktagent.label.name",),
        counts(lambda s: s.series_budget),
    ),
    Family(
        "pktagent_learn_packets_total",
        "ARP, DHCP and DNS packets read for names, by result.",
        "counter",
        "devices",
        "pktagent.learn.packets",
        "{packet}",
        "counter",
        ("result",),
        ("pktagent.learn.result",),
        counts(lambda s: s.learned),
    ),
    Family(
        "pktagent_device_store_writes_total",
        "Writes of learned devices to the database, by result.",
        "counter",
        "devices",
        "pktagent.device_store.writes",
        "{write}",
        "counter",
        ("result",),
        ("pktagent.store.result",),
        counts(lambda s: s.store_writes),
    ),
    Family(
        "pktagent_otlp_exports_total",
        "OTLP exports to the collector, by result (a failure is retried at the next interval).",
        "counter",
        "otlp",
        "pktagent.otlp.exports",
        "{export}",
        "counter",
        ("result",),
        ("pktagent.otlp.result",),
        counts(lambda s: s.otlp_exports),
    ),
    Family(
        "pktagent_http_rejected_total",
        "Connections and requests the web server turned away or closed, by reason (a bound in the web config section).",
        "counter",
        "http",
        "pktagent.http.rejected",
        "{request}",
        "counter",
        ("reason",),
        ("pktagent.http.reason",),
        counts(lambda s: s.http_rejected),
    ),
    Family(
        "pktagent_resident_memory_bytes",
        "Resident memory of the whole agent: this process and its capture workers, added up (process_resident_memory_bytes is this process alone).",
        "gauge",
        "memory",
        "pktagent.memory.usage",
        "By",
        "updown",
        read=memory("resident"),
    ),
    Family(
        "pktagent_peak_resident_memory_bytes",
        "The agent's processes' peak resident memory (VmHWM), added up.",
        "gauge",
        "memory",
        "pktagent.memory.peak",
        "By",
        "updown",
        read=memory("peak"),
    ),
    Family(
        "pktagent_processes",
        "Processes the agent runs: 1, or 1 + the workers.",
        "gauge",
        "memory",
        "pktagent.processes",
        "{process}",
        "updown",
        read=memory("processes"),
    ),
    # Written by the /metrics collector itself, about its own parts: nothing to read from a snapshot.
    Family(
        "pktagent_exporter_errors_total",
        "Scrapes in which one collector failed (the others still answered).",
        "counter",
        "",
        "(not exported)",
        "",
        "none",
        ("collector",),
    ),
)

GROUPS: tuple[str, ...] = tuple(dict.fromkeys(f.group for f in CATALOGUE if f.group))
