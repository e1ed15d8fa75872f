"""Prometheus rules: recording rules for the expressions dashboards and alerts reuse, and the alerts.

Recorded series are named ``level:metric:operations``: the labels kept (besides ``job``), the
metric they derive from, and what was done to it, newest operation first. Every alert has a
severity, a summary, a description naming the instance (and interface, stage, ... where it has
one) and a runbook URL pointing at its section of grafana/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pktagent_mixin import config as cfg
from pktagent_mixin import promql as q

WINDOW = "5m"
# Recorded series and alerts keep the target labels the Ansible role's file_sd sets (site, role), so the
# dashboards' Site and Role variables filter recorded series too, and alerts can be routed by site.
INSTANCE = "job, instance, site, role"
INTERFACE = "job, instance, site, role, interface"
QUANTILES = (0.5, 0.9, 0.99)

# Names of the recorded series, for the dashboards and alerts that read them.
CAPTURED_RATE = "instance_interface:pktagent_packets_captured:rate5m"
ARRIVED_RATE = "instance_interface:pktagent_packets_arrived:rate5m"
DECODED_RATE = "instance_interface:pktagent_packets_decoded:rate5m"
BYTES_RATE = "instance_interface:pktagent_traffic_bytes:rate5m"
DROP_RATIO = "instance_interface_stage:pktagent_packets_dropped:ratio_rate5m"
DUPLICATE_RATIO = "instance_interface:pktagent_packets_duplicate:ratio_rate5m"
DECODE_ERROR_RATIO = "instance_interface:pktagent_decode_errors:ratio_rate5m"
UTILISATION = "instance:pktagent_processing_busy_seconds:ratio_workers_rate5m"
PROCESSING_BUCKETS = "instance_le:pktagent_batch_processing_seconds_bucket:rate5m"
PROCESSING_QUANTILE = "instance_quantile:pktagent_batch_processing_seconds:histogram_quantile_rate5m"
QUEUE_FILL = "instance:pktagent_queue_packets:ratio_capacity_max5m"
FLOW_FILL = "instance:pktagent_flows_active:ratio_capacity"


def recording_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [
        {"record": CAPTURED_RATE, "expr": q.sum_rate("pktagent_packets_captured_total", INTERFACE, WINDOW)},
        {"record": BYTES_RATE, "expr": q.sum_rate("pktagent_traffic_bytes_total", INTERFACE, WINDOW)},
        {"record": ARRIVED_RATE, "expr": q.arrived(INTERFACE, WINDOW)},
        {"record": DECODED_RATE, "expr": q.decoded(INTERFACE, WINDOW)},
        {"record": DROP_RATIO, "expr": q.drop_ratio(INTERFACE, WINDOW, arrived_rate=ARRIVED_RATE)},
        {"record": DUPLICATE_RATIO, "expr": q.duplicate_ratio(INTERFACE, WINDOW, decoded_rate=DECODED_RATE)},
        {"record": DECODE_ERROR_RATIO, "expr": q.decode_error_ratio(INTERFACE, WINDOW, decoded_rate=DECODED_RATE)},
        {"record": UTILISATION, "expr": q.utilisation(INSTANCE, WINDOW)},
        {"record": PROCESSING_BUCKETS, "expr": q.sum_rate("pktagent_batch_processing_seconds_bucket", f"{INSTANCE}, le", WINDOW)},
    ]
    rules += [{"record": PROCESSING_QUANTILE, "expr": f"histogram_quantile({x:g}, {PROCESSING_BUCKETS})", "labels": {"quantile": f"{x:g}"}} for x in QUANTILES]
    rules += [
        {
            "record": QUEUE_FILL,
            "expr": f"max by ({INSTANCE}) (max_over_time(pktagent_queue_packets[{WINDOW}]))"
            f" / on ({INSTANCE}) max by ({INSTANCE}) (pktagent_queue_capacity_packets)",
        },
        {"record": FLOW_FILL, "expr": q.flow_fill(INSTANCE)},
    ]
    return rules


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    duration: str
    severity: str
    summary: str
    description: str

    def rule(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.duration,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": f"{cfg.RUNBOOK_BASE}#{self.name.lower()}",
            },
        }


def _pct(x: float) -> str:
    return f"{x * 100:g}%"


def alerts() -> list[Alert]:
    up = q.selector("up", cfg.JOB_SELECTOR)
    by_if = INTERFACE
    captured = "pktagent_packets_captured_total"
    return [
        Alert(
            "PktagentDown",
            f"{up} == 0",
            cfg.DOWN_FOR,
            "critical",
            "pktagent is not answering scrapes.",
            "Prometheus has failed to scrape pktagent on {{ $labels.instance }} (job {{ $labels.job }}) for "
            + cfg.DOWN_FOR
            + ": nothing it captures is visible.",
        ),
        Alert(
            "PktagentNotScraped",
            f"absent({up})",
            cfg.ABSENT_FOR,
            "critical",
            "No pktagent target is being scraped.",
            "Prometheus has had no target for {{ $labels.job }} for " + cfg.ABSENT_FOR + ": service discovery or the scrape configuration lost the agents.",
        ),
        Alert(
            "PktagentCaptureDown",
            "pktagent_capture_up == 0",
            cfg.CAPTURE_DOWN_FOR,
            "critical",
            "A pktagent capture is down.",
            "The capture on {{ $labels.interface }} of {{ $labels.instance }} has been down for " + cfg.CAPTURE_DOWN_FOR + "; the agent keeps retrying. "
            "Its /health endpoint says why.",
        ),
        Alert(
            "PktagentNoPackets",
            f"sum by ({by_if}) (rate({captured}[{cfg.SILENCE_WINDOW}])) == 0\n"
            f"and on ({by_if})\n"
            f"sum by ({by_if}) (rate({captured}[{cfg.USUAL_WINDOW}] offset {cfg.SILENCE_WINDOW})) > {cfg.USUAL_MIN_PPS:g}\n"
            f"unless on ({by_if})\n"
            "pktagent_capture_up == 0",
            cfg.SILENCE_FOR,
            "warning",
            "An interface that usually has traffic has gone silent.",
            "{{ $labels.interface }} on {{ $labels.instance }} has captured no packet for "
            + cfg.SILENCE_WINDOW
            + " although it saw more than "
            + f"{cfg.USUAL_MIN_PPS:g}"
            + " packets/s over the "
            + cfg.USUAL_WINDOW
            + " before, and its capture reports up: a dead capture looks like this.",
        ),
        Alert(
            "PktagentPacketsDropped",
            f"{DROP_RATIO} > {cfg.DROP_RATIO:g}",
            cfg.DROP_FOR,
            "warning",
            "pktagent is losing packets.",
            "{{ $labels.instance }} loses {{ $value | humanizePercentage }} of the packets arriving on {{ $labels.interface }} "
            "at the {{ $labels.stage }} stage (threshold " + _pct(cfg.DROP_RATIO) + "): its figures undercount the traffic.",
        ),
        Alert(
            "PktagentQueueNearCapacity",
            f"{QUEUE_FILL} > {cfg.QUEUE_FILL:g}",
            cfg.QUEUE_FOR,
            "warning",
            "pktagent's queue is close to full.",
            "The queue between capture and processing on {{ $labels.instance }} reached {{ $value | humanizePercentage }} of its capacity "
            "in every 5m window for " + cfg.QUEUE_FOR + "; when it is full, batches are dropped.",
        ),
        Alert(
            "PktagentProcessingSlow",
            f'{PROCESSING_QUANTILE}{{quantile="0.99"}} > {cfg.P99_BUDGET_SECONDS:g}',
            cfg.P99_FOR,
            "warning",
            "pktagent takes too long to process a batch.",
            "The 99th percentile of batch processing time on {{ $labels.instance }} is {{ $value | humanizeDuration }}, "
            f"over the budget of {cfg.P99_BUDGET_SECONDS:g}s.",
        ),
        Alert(
            "PktagentNoHeadroom",
            f"{UTILISATION} > {cfg.UTILISATION:g}",
            cfg.UTILISATION_FOR,
            "warning",
            "pktagent's processing has no headroom left.",
            "The processing workers of {{ $labels.instance }} are busy {{ $value | humanizePercentage }} of the time on average "
            "(threshold " + _pct(cfg.UTILISATION) + "): any more traffic fills the queue and is dropped.",
        ),
        Alert(
            "PktagentFlowTableNearCapacity",
            f"{FLOW_FILL} > {cfg.FLOW_FILL:g}",
            cfg.FLOW_FOR,
            "warning",
            "pktagent's flow table is nearly full.",
            "{{ $labels.instance }} holds {{ $value | humanizePercentage }} of the flows its table can hold; "
            "when it is full the least recently seen flows are evicted and their figures cut short.",
        ),
        Alert(
            "PktagentDecodeErrorsHigh",
            f"{DECODE_ERROR_RATIO} > {cfg.DECODE_ERROR_RATIO:g}",
            cfg.DECODE_FOR,
            "warning",
            "Many packets pktagent reads have malformed headers.",
            "{{ $value | humanizePercentage }} of the packets decoded on {{ $labels.interface }} of {{ $labels.instance }} "
            "have a header that could not be read (threshold " + _pct(cfg.DECODE_ERROR_RATIO) + ").",
        ),
        Alert(
            "PktagentCollectorFailing",
            f"sum by ({INSTANCE}, collector) (increase(pktagent_exporter_errors_total[{WINDOW}])) > 0",
            "15m",
            "warning",
            "Part of pktagent's /metrics is failing.",
            "The {{ $labels.collector }} collector of {{ $labels.instance }} has failed in scrapes for 15m; "
            "its metrics are missing from those scrapes while the others still answer.",
        ),
        Alert(
            "PktagentLabelSeriesChurn",
            f"sum by ({INSTANCE}, label) (rate(pktagent_label_series_dropped_total[{cfg.LABEL_CHURN_WINDOW}])) * 60 > {cfg.LABEL_CHURN_PER_MINUTE:g}",
            cfg.LABEL_CHURN_FOR,
            "warning",
            "pktagent keeps dropping and re-creating device or domain series.",
            "{{ $labels.instance }} drops {{ $value | humanize }} {{ $labels.label }} series a minute (over "
            + cfg.LABEL_CHURN_WINDOW
            + f", threshold {cfg.LABEL_CHURN_PER_MINUTE:g}) to keep that label within its budget, and has for "
            + cfg.LABEL_CHURN_FOR
            + ": the names keep being dropped and re-created, so the budget is too small for this network.",
        ),
    ]


def recording_groups() -> dict[str, Any]:
    return {"groups": [{"name": "pktagent.rules", "rules": recording_rules()}]}


def alert_groups() -> dict[str, Any]:
    return {"groups": [{"name": "pktagent.alerts", "rules": [a.rule() for a in alerts()]}]}
