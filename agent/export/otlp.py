"""OTLP export: the same figures as ``/metrics``, named the OpenTelemetry way, pushed by the SDK.

A ``MeterProvider`` with a ``PeriodicExportingMetricReader`` and the OTLP exporter (HTTP/protobuf
by default, gRPC with the ``grpc`` extra). Counters and gauges are observable instruments whose
callbacks read the latest snapshot; the two histograms are already aggregated in the pipeline,
so the exporter adds them to each export as histogram points. Each export's outcome is counted
(``pktagent_otlp_exports_total{result}``). The reader runs in its own thread and the exporter
retries with exponential backoff inside its timeout, so a slow or absent collector never touches
capture; with cumulative temporality nothing queues up while the collector is away — the next
export that gets through carries the totals.

Every instrument comes from the one declaration of each family in ``catalogue.py``.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter

from agent.base.snapshot import Histogram, Snapshot
from agent.config import OtlpConfig
from agent.errors import ConfigError
from agent.export.catalogue import CATALOGUE, Family

log = logging.getLogger("pktagent.otlp")

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
        makers = {
            "counter": meter.create_observable_counter,
            "gauge": meter.create_observable_gauge,
            "updown": meter.create_observable_up_down_counter,
        }
        for f in CATALOGUE:
            if f.otel_kind in makers:
                makers[f.otel_kind](f.otel, callbacks=[self._callback(f)], unit=f.unit, description=f.help)
        self._provider = provider

    def _callback(self, f: Family) -> Callable[[Any], Iterable[Any]]:
        from opentelemetry.metrics import Observation

        read, attributes = f.read, f.attributes
        assert read is not None

        def callback(options: Any) -> Iterable[Any]:
            return [Observation(v, dict(zip(attributes, key))) for key, v in read(self.snapshot()) or ()]

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


def cumulative() -> dict[type, Any]:
    """Cumulative temporality for every instrument: the pipeline's histograms are cumulative, and a
    collector that was away gets the totals with the next export instead of a gap."""
    from opentelemetry.sdk.metrics import (
        Counter,
        Histogram,
        ObservableCounter,
        ObservableGauge,
        ObservableUpDownCounter,
        UpDownCounter,
    )
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    kinds = (Counter, UpDownCounter, Histogram, ObservableCounter, ObservableUpDownCounter, ObservableGauge)
    return dict.fromkeys(kinds, AggregationTemporality.CUMULATIVE)


def _otlp_exporter(config: OtlpConfig) -> Any:
    protocol = config.protocol or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    headers = dict(h.split("=", 1) for h in config.headers) or None
    kwargs: dict[str, Any] = {"headers": headers, "timeout": config.timeout_seconds or None, "preferred_temporality": cumulative()}
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


def _histogram_metric(f: Family, s: Snapshot, start_ns: int, now_ns: int) -> Any:
    """An already aggregated histogram of the pipeline as one cumulative OTLP histogram point."""
    from opentelemetry.sdk.metrics.export import AggregationTemporality, HistogramDataPoint, Metric
    from opentelemetry.sdk.metrics.export import Histogram as OtelHistogram

    assert f.histogram is not None
    h: Histogram = f.histogram(s)
    minimum, maximum = f.extremes(s) if f.extremes else (None, None)

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
    return Metric(f.otel, f.help, f.unit, OtelHistogram([point], AggregationTemporality.CUMULATIVE))


class SnapshotExporter(MetricExporter):
    """Wraps the OTLP exporter: adds the pipeline's histograms to each export and counts the outcome."""

    def __init__(self, inner: Any, export: OtlpExport) -> None:
        super().__init__(preferred_temporality=cumulative())
        self._inner = inner
        self._export = export
        self._start_ns = time.time_ns()

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
        from opentelemetry.sdk.metrics.export import MetricExportResult, MetricsData, ResourceMetrics, ScopeMetrics

        s = self._export.snapshot()
        now = time.time_ns()
        extra = [_histogram_metric(f, s, self._start_ns, now) for f in CATALOGUE if f.otel_kind == "histogram"]
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
