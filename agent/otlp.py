"""OTLP export: the same figures as ``/metrics``, named the OpenTelemetry way, pushed by the SDK.

A ``MeterProvider`` with a ``PeriodicExportingMetricReader`` and the OTLP exporter (HTTP/protobuf
by default, gRPC with the ``grpc`` extra). Counters and gauges are observable instruments whose
callbacks read the latest snapshot; the two histograms are already aggregated in the pipeline,
so the exporter adds them to each export as histogram points. Each export's outcome is counted
(``pktagent_otlp_exports_total{result}``). The reader runs in its own thread and the exporter
retries with exponential backoff inside its timeout, so a slow or absent collector never touches
capture; with cumulative temporality nothing queues up while the collector is away — the next
export that gets through carries the totals.

``METRICS`` maps every Prometheus family to its OpenTelemetry name, unit and attributes; the
README's table is generated from it.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from opentelemetry.sdk.metrics.export import MetricExporter

from agent import labels
from agent._exceptions import ConfigError
from agent.config import OtlpConfig
from agent.snapshot import Histogram, Snapshot

log = logging.getLogger("pktagent.otlp")

IFACE = "network.interface.name"


@dataclass(frozen=True)
class Mapped:
    """One Prometheus family and its OpenTelemetry counterpart."""

    prometheus: str
    otel: str
    unit: str
    kind: str  # counter | gauge | updown | histogram
    attributes: tuple[str, ...]
    read: Callable[[Snapshot], Iterable[tuple[float, dict[str, Any]]]] | None = None


def _per_interface(values: Callable[[Snapshot], np.ndarray]) -> Callable[[Snapshot], Iterable[tuple[float, dict[str, Any]]]]:
    def read(s: Snapshot) -> Iterable[tuple[float, dict[str, Any]]]:
        for iface, v in zip(s.interfaces, values(s).tolist()):
            yield v, {IFACE: iface}

    return read


def _dropped(s: Snapshot) -> Iterable[tuple[float, dict[str, Any]]]:
    for iface, row in zip(s.interfaces, s.dropped.tolist()):
        for stage, v in zip(labels.DROP_STAGES, row):
            yield v, {IFACE: iface, "pktagent.drop.stage": stage}


def _decode_errors(s: Snapshot) -> Iterable[tuple[float, dict[str, Any]]]:
    for iface, row in zip(s.interfaces, s.decode_errors.tolist()):
        for (layer, reason), v in zip(labels.DECODE_ERRORS, row):
            yield v, {IFACE: iface, "pktagent.decode.layer": layer, "error.type": reason}


def _traffic(which: str) -> Callable[[Snapshot], Iterable[tuple[float, dict[str, Any]]]]:
    def read(s: Snapshot) -> Iterable[tuple[float, dict[str, Any]]]:
        values = getattr(s, which)
        for k, iface in enumerate(s.interfaces):
            for n, t, d in zip(*np.nonzero(s.traffic_packets[k])):
                attrs = {
                    IFACE: iface,
                    "network.type": labels.NETWORKS[n],
                    "network.transport": labels.TRANSPORTS[t],
                    "pktagent.traffic.direction": labels.DIRECTIONS[d],
                }
                yield float(values[k, n, t, d]), attrs

    return read


def _caches(field: str) -> Callable[[Snapshot], Iterable[tuple[float, dict[str, Any]]]]:
    def read(s: Snapshot) -> Iterable[tuple[float, dict[str, Any]]]:
        for c in s.caches:
            yield getattr(c, field), {"pktagent.cache.name": c.name}

    return read


def _flows(field: str) -> Callable[[Snapshot], Iterable[tuple[float, dict[str, Any]]]]:
    def read(s: Snapshot) -> Iterable[tuple[float, dict[str, Any]]]:
        for tr, v in zip(labels.FLOW_TRANSPORTS, getattr(s, field).tolist()):
            yield v, {"network.transport": tr}

    return read


def _flows_ended(s: Snapshot) -> Iterable[tuple[float, dict[str, Any]]]:
    for tr, row in zip(labels.FLOW_TRANSPORTS, s.flows_ended.tolist()):
        for reason, v in zip(labels.FLOW_END_REASONS, row):
            yield v, {"network.transport": tr, "pktagent.flow.end_reason": reason}


def _scalar(get: Callable[[Snapshot], float]) -> Callable[[Snapshot], Iterable[tuple[float, dict[str, Any]]]]:
    def read(s: Snapshot) -> Iterable[tuple[float, dict[str, Any]]]:
        yield get(s), {}

    return read


def _usage(which: str, attribute: str, measure: str) -> Callable[[Snapshot], Iterable[tuple[float, dict[str, Any]]]]:
    def read(s: Snapshot) -> Iterable[tuple[float, dict[str, Any]]]:
        for series in getattr(s, which):
            yield getattr(series, f"tx_{measure}"), {attribute: series.name, "network.io.direction": "transmit"}
            yield getattr(series, f"rx_{measure}"), {attribute: series.name, "network.io.direction": "receive"}

    return read


def _counts(field: str, attribute: str) -> Callable[[Snapshot], Iterable[tuple[float, dict[str, Any]]]]:
    def read(s: Snapshot) -> Iterable[tuple[float, dict[str, Any]]]:
        for value, v in sorted(getattr(s, field).items()):
            yield v, {attribute: value}

    return read


def _extra(key: str, attribute: str) -> Callable[[Snapshot], Iterable[tuple[float, dict[str, Any]]]]:
    """Figures of optional parts, kept in ``Snapshot.extra[key]`` as {label value: number}."""

    def read(s: Snapshot) -> Iterable[tuple[float, dict[str, Any]]]:
        for value, v in dict(s.extra.get(key, {})).items():  # type: ignore[call-overload]
            yield v, {attribute: value}

    return read


def _memory(key: str) -> Callable[[Snapshot], Iterable[tuple[float, dict[str, Any]]]]:
    def read(s: Snapshot) -> Iterable[tuple[float, dict[str, Any]]]:
        m = s.extra.get("memory")
        if isinstance(m, dict):
            yield float(m[key]), {}

    return read


METRICS: tuple[Mapped, ...] = (
    Mapped("pktagent_build_info", "(resource)", "", "resource", ("service.version", "pktagent.python.version", "pktagent.libpcap.version")),
    Mapped("pktagent_capture_up", "pktagent.capture.up", "1", "gauge", (IFACE,), _per_interface(lambda s: s.capture_up)),
    Mapped(
        "pktagent_last_packet_timestamp_seconds", "pktagent.capture.last_packet.time", "s", "gauge", (IFACE,), _per_interface(lambda s: s.last_packet_seconds)
    ),
    Mapped("pktagent_packets_captured_total", "pktagent.packets.captured", "{packet}", "counter", (IFACE,), _per_interface(lambda s: s.captured)),
    Mapped("pktagent_packets_dropped_total", "pktagent.packets.dropped", "{packet}", "counter", (IFACE, "pktagent.drop.stage"), _dropped),
    Mapped("pktagent_packets_duplicate_total", "pktagent.packets.duplicate", "{packet}", "counter", (IFACE,), _per_interface(lambda s: s.duplicate)),
    Mapped("pktagent_packets_sampled_out_total", "pktagent.packets.sampled_out", "{packet}", "counter", (IFACE,), _per_interface(lambda s: s.sampled_out)),
    Mapped("pktagent_packets_processed_total", "pktagent.packets.processed", "{packet}", "counter", (IFACE,), _per_interface(lambda s: s.processed)),
    Mapped(
        "pktagent_unsupported_link_packets_total",
        "pktagent.packets.unsupported_link",
        "{packet}",
        "counter",
        (IFACE,),
        _per_interface(lambda s: s.unsupported_link),
    ),
    Mapped("pktagent_decode_errors_total", "pktagent.decode.errors", "{error}", "counter", (IFACE, "pktagent.decode.layer", "error.type"), _decode_errors),
    Mapped(
        "pktagent_traffic_packets_total",
        "pktagent.traffic.packets",
        "{packet}",
        "counter",
        (IFACE, "network.type", "network.transport", "pktagent.traffic.direction"),
        _traffic("traffic_packets"),
    ),
    Mapped(
        "pktagent_traffic_bytes_total",
        "pktagent.traffic.io",
        "By",
        "counter",
        (IFACE, "network.type", "network.transport", "pktagent.traffic.direction"),
        _traffic("traffic_bytes"),
    ),
    Mapped("pktagent_queue_packets", "pktagent.queue.usage", "{packet}", "updown", (), _scalar(lambda s: s.queue_packets)),
    Mapped("pktagent_queue_capacity_packets", "pktagent.queue.limit", "{packet}", "updown", (), _scalar(lambda s: s.queue_capacity)),
    Mapped("pktagent_batch_processing_seconds", "pktagent.batch.duration", "s", "histogram", ()),
    Mapped("pktagent_batch_size_packets", "pktagent.batch.size", "{packet}", "histogram", ()),
    Mapped("pktagent_processing_busy_seconds_total", "pktagent.processing.time", "s", "counter", (), _scalar(lambda s: s.busy_seconds)),
    Mapped("pktagent_processing_workers", "pktagent.processing.workers", "{process}", "updown", (), _scalar(lambda s: s.workers)),
    Mapped("pktagent_cache_hits_total", "pktagent.cache.hits", "{lookup}", "counter", ("pktagent.cache.name",), _caches("hits")),
    Mapped("pktagent_cache_misses_total", "pktagent.cache.misses", "{lookup}", "counter", ("pktagent.cache.name",), _caches("misses")),
    Mapped("pktagent_cache_evictions_total", "pktagent.cache.evictions", "{entry}", "counter", ("pktagent.cache.name",), _caches("evictions")),
    Mapped("pktagent_cache_entries", "pktagent.cache.usage", "{entry}", "updown", ("pktagent.cache.name",), _caches("entries")),
    Mapped("pktagent_cache_capacity_entries", "pktagent.cache.limit", "{entry}", "updown", ("pktagent.cache.name",), _caches("capacity")),
    Mapped("pktagent_flows_active", "pktagent.flows.active", "{flow}", "updown", ("network.transport",), _flows("flows_active")),
    Mapped("pktagent_flows_capacity", "pktagent.flows.limit", "{flow}", "updown", (), _scalar(lambda s: s.flows_capacity)),
    Mapped("pktagent_flows_started_total", "pktagent.flows.started", "{flow}", "counter", ("network.transport",), _flows("flows_started")),
    Mapped("pktagent_flows_ended_total", "pktagent.flows.ended", "{flow}", "counter", ("network.transport", "pktagent.flow.end_reason"), _flows_ended),
    Mapped("pktagent_devices_known", "pktagent.devices.known", "{device}", "updown", (), _scalar(lambda s: s.devices_known)),
    Mapped(
        "pktagent_device_bytes_total",
        "pktagent.device.io",
        "By",
        "counter",
        ("pktagent.device.name", "network.io.direction"),
        _usage("device_series", "pktagent.device.name", "bytes"),
    ),
    Mapped(
        "pktagent_device_packets_total",
        "pktagent.device.packets",
        "{packet}",
        "counter",
        ("pktagent.device.name", "network.io.direction"),
        _usage("device_series", "pktagent.device.name", "packets"),
    ),
    Mapped(
        "pktagent_remote_bytes_total",
        "pktagent.remote.io",
        "By",
        "counter",
        ("pktagent.remote.domain", "network.io.direction"),
        _usage("domain_series", "pktagent.remote.domain", "bytes"),
    ),
    Mapped(
        "pktagent_label_series_dropped_total",
        "pktagent.label.series.dropped",
        "{series}",
        "counter",
        ("pktagent.label.name",),
        _counts("series_dropped", "pktagent.label.name"),
    ),
    Mapped(
        "pktagent_label_series_budget",
        "pktagent.label.series.budget",
        "{series}",
        "updown",
        ("pktagent.label.name",),
        _counts("series_budget", "pktagent.label.name"),
    ),
    Mapped(
        "pktagent_learn_packets_total", "pktagent.learn.packets", "{packet}", "counter", ("pktagent.learn.result",), _counts("learned", "pktagent.learn.result")
    ),
    Mapped(
        "pktagent_device_store_writes_total",
        "pktagent.device_store.writes",
        "{write}",
        "counter",
        ("pktagent.store.result",),
        _extra("store_writes", "pktagent.store.result"),
    ),
    Mapped("pktagent_exporter_errors_total", "(not exported)", "", "none", ()),  # counts failures of /metrics collectors themselves
    Mapped(
        "pktagent_otlp_exports_total", "pktagent.otlp.exports", "{export}", "counter", ("pktagent.otlp.result",), _extra("otlp_exports", "pktagent.otlp.result")
    ),
    Mapped("pktagent_resident_memory_bytes", "pktagent.memory.resident", "By", "gauge", (), _memory("resident")),
    Mapped("pktagent_peak_resident_memory_bytes", "pktagent.memory.resident.peak", "By", "gauge", (), _memory("peak")),
    Mapped("pktagent_processes", "pktagent.processes", "{process}", "gauge", (), _memory("processes")),
)

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm32", "armv6l": "arm32", "i686": "x86", "i386": "x86"}


def resource_attributes(build: Mapping[str, str]) -> dict[str, str]:
    """service.name, service.version, host.name, host.arch, and the build details."""
    return {
        "service.name": "pktagent",
        "service.version": build.get("version", ""),
        "host.name": socket.gethostname(),
        "host.arch": _ARCH.get(platform.machine().lower(), platform.machine().lower()),
        "pktagent.python.version": build.get("python_version", ""),
        "pktagent.libpcap.version": build.get("libpcap_version", ""),
    }


class ExportCounts:
    """How many exports succeeded and failed; read into snapshots for ``/metrics``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts = {"success": 0, "failure": 0}

    def add(self, result: str) -> None:
        with self._lock:
            self.counts[result] += 1

    def copy(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


class OtlpExport:
    """The running export: ``start`` builds the SDK pipeline, ``shutdown`` flushes and stops it."""

    def __init__(self, config: OtlpConfig, source: Callable[[], Snapshot], build: Mapping[str, str], counts: ExportCounts) -> None:
        self.config = config
        self._source = source
        self._build = build
        self.counts = counts
        self._provider: Any = None
        self._cached: tuple[float, Snapshot] | None = None
        self._lock = threading.Lock()

    def snapshot(self) -> Snapshot:
        """One snapshot per collection: the callbacks of one export run within a moment of each other."""
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > 0.5:
                self._cached = (now, self._source())
            return self._cached[1]

    def start(self) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource

        exporter = SnapshotExporter(_otlp_exporter(self.config), self)
        interval = self.config.interval_seconds * 1000 or None
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=interval)
        provider = MeterProvider(resource=Resource.create(resource_attributes(self._build)), metric_readers=[reader])
        meter = provider.get_meter("pktagent", self._build.get("version", ""))
        for m in METRICS:
            if m.read is None:
                continue
            make = {
                "counter": meter.create_observable_counter,
                "gauge": meter.create_observable_gauge,
                "updown": meter.create_observable_up_down_counter,
            }[m.kind]
            make(m.otel, callbacks=[self._callback(m)], unit=m.unit, description=f"See {m.prometheus} in /metrics.")
        self._provider = provider

    def _callback(self, m: Mapped) -> Callable[[Any], Iterable[Any]]:
        from opentelemetry.metrics import Observation

        read = m.read
        assert read is not None

        def callback(options: Any) -> Iterable[Any]:
            return [Observation(v, attrs) for v, attrs in read(self.snapshot())]

        return callback

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown(timeout_millis=5000)
            self._provider = None


def metrics_endpoint(endpoint: str, protocol: str) -> str:
    """An OTLP/HTTP endpoint given without a path gets the metrics path, as the standard base endpoint does."""
    from urllib.parse import urlsplit

    if protocol == "http/protobuf" and urlsplit(endpoint).path in ("", "/"):
        return endpoint.rstrip("/") + "/v1/metrics"
    return endpoint


def grpc_available() -> bool:
    try:
        import opentelemetry.exporter.otlp.proto.grpc.metric_exporter  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


def _otlp_exporter(config: OtlpConfig) -> Any:
    protocol = config.protocol or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    headers = dict(h.split("=", 1) for h in config.headers) or None
    kwargs: dict[str, Any] = {"headers": headers, "timeout": config.timeout_seconds or None}
    if config.endpoint:
        kwargs["endpoint"] = metrics_endpoint(config.endpoint, protocol)
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter  # type: ignore[import-not-found]
        except ImportError:
            raise ConfigError("otlp.protocol: grpc needs the gRPC exporter: pip install 'pktagent[grpc]'") from None
        return GrpcExporter(**kwargs)
    if protocol != "http/protobuf":
        raise ConfigError(f"otlp.protocol: {protocol!r} is not http/protobuf or grpc")
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(**kwargs)


def _histogram_metric(name: str, unit: str, h: Histogram, start_ns: int, now_ns: int, minimum: float | None, maximum: float | None) -> Any:
    from opentelemetry.sdk.metrics.export import AggregationTemporality, HistogramDataPoint, Metric
    from opentelemetry.sdk.metrics.export import Histogram as OtelHistogram

    point = HistogramDataPoint(
        attributes={},
        start_time_unix_nano=start_ns,
        time_unix_nano=now_ns,
        count=h.count,
        sum=h.total,
        bucket_counts=h.counts.tolist(),
        explicit_bounds=list(h.bounds),
        min=minimum,  # type: ignore[arg-type]
        max=maximum,  # type: ignore[arg-type]
    )
    return Metric(name, f"See the matching histogram in /metrics ({name}).", unit, OtelHistogram([point], AggregationTemporality.CUMULATIVE))


class SnapshotExporter(MetricExporter):
    """Wraps the OTLP exporter: adds the pipeline's histograms to each export and counts the outcome."""

    def __init__(self, inner: Any, export: OtlpExport) -> None:
        super().__init__(preferred_temporality=getattr(inner, "_preferred_temporality", None))
        self._inner = inner
        self._export = export
        self._start_ns = time.time_ns()

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
        from opentelemetry.sdk.metrics.export import MetricExportResult, MetricsData, ResourceMetrics, ScopeMetrics

        s = self._export.snapshot()
        now = time.time_ns()
        extra = [
            _histogram_metric("pktagent.batch.duration", "s", s.batch_seconds, self._start_ns, now, s.min_batch_seconds or None, s.max_batch_seconds or None),
            _histogram_metric("pktagent.batch.size", "{packet}", s.batch_sizes, self._start_ns, now, None, None),
        ]
        resource_metrics: Sequence[Any] = metrics_data.resource_metrics
        if resource_metrics:
            first = resource_metrics[0]
            scopes = list(first.scope_metrics)
            if scopes:
                scopes[0] = ScopeMetrics(scopes[0].scope, [*scopes[0].metrics, *extra], scopes[0].schema_url)
            first = ResourceMetrics(first.resource, scopes, first.schema_url)
            metrics_data = MetricsData([first, *resource_metrics[1:]])
        try:
            result = self._inner.export(metrics_data, timeout_millis=timeout_millis)
        except Exception:  # an exporter bug must not end the export thread
            log.exception("OTLP export failed")
            result = MetricExportResult.FAILURE
        ok = result == MetricExportResult.SUCCESS
        self._export.counts.add("success" if ok else "failure")
        if not ok:
            log.warning("OTLP export to the collector failed; it is retried at the next interval")
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return bool(self._inner.force_flush(timeout_millis))

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis)
