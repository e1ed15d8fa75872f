"""The three dashboards: fleet overview, agent detail, traffic.

Fleet-wide tables read the recorded series of rules.py (cheap over hundreds of agents); graphs
compute their rates over ``$__rate_interval`` so they follow the time range.
"""

from __future__ import annotations

from typing import Any

from pktagent_mixin import config as cfg
from pktagent_mixin import promql as q
from pktagent_mixin import rules as r
from pktagent_mixin.grafana import (
    annotation,
    dashboard,
    datasource_variable,
    gauge,
    high_is_bad,
    layout,
    low_is_bad,
    override,
    query_variable,
    stat,
    table,
    target,
    thresholds,
    timeseries,
    up_down,
)

RI = "$__rate_interval"
JOB = 'job=~"$job"'
SITE = 'site=~"$site"'  # target labels the Ansible role's file_sd gives each agent
ROLE = 'role=~"$role"'
INSTANCE = 'instance=~"$instance"'
INTERFACE = 'interface=~"$interface"'
F = (JOB, SITE, ROLE, INSTANCE)
BY_AGENT = "job, instance"
BY_INTERFACE = "job, instance, interface"
TOP = cfg.TOPK
P99 = 'quantile="0.99"'
DIR_TX = 'direction="transmit"'  # device and domain series come in pairs: one direction counts each once


def _variables(*, multi_instance: bool) -> list[dict[str, Any]]:
    # Site and role are the target labels the Ansible role's file_sd writes; a target without them matches All (.*).
    return [
        datasource_variable(),
        query_variable("job", "Job", "label_values(pktagent_build_info, job)", multi=True),
        query_variable("site", "Site", f"label_values(pktagent_build_info{{{JOB}}}, site)", multi=True, all_value=".*"),
        query_variable("role", "Role", f"label_values(pktagent_build_info{{{JOB}, {SITE}}}, role)", multi=True, all_value=".*"),
        query_variable("instance", "Instance", f"label_values(pktagent_build_info{{{JOB}, {SITE}, {ROLE}}}, instance)", multi=multi_instance),
    ]


def _annotations() -> list[dict[str, Any]]:
    """Agent restarts (a new process start time) and version changes (a build_info version the agent did not have a minute before)."""
    start = q.selector("process_start_time_seconds", *F)
    build = q.selector("pktagent_build_info", *F)
    return [
        annotation("Agent restarts", f"changes({start}[1m]) > 0", title="pktagent restarted", text="{{instance}}", color="orange"),
        annotation(
            "Version changes",
            f"{build} unless on (job, instance, version) ({build} offset 1m) and on (job, instance) ({build} offset 1m)",
            title="pktagent {{version}}",
            text="{{instance}} now runs pktagent {{version}}",
            color="purple",
        ),
    ]


def _agent_link() -> list[dict[str, Any]]:
    url = (
        f"/d/{cfg.UID_AGENT}/pktagent-agent-detail?var-datasource=${{datasource}}"
        "&var-job=${__data.fields.job}&var-instance=${__data.fields.instance}&${__url_time_range}"
    )
    return [{"title": "Agent detail of ${__data.fields.instance}", "url": url}]


def rec(name: str, *extra: str) -> str:
    """A recorded series, filtered by the dashboard's variables."""
    return q.selector(name, *F, *extra)


# -- fleet overview -----------------------------------------------------------------------------


def fleet() -> dict[str, Any]:
    up = q.selector("up", *F)
    agents_table = table(
        "Agents, worst first",
        "One row per agent, from the 5m recording rules, sorted by its worst drop ratio; click an instance for its detail.",
        "percentunit",
        [
            ("Up", target(f"max by ({BY_AGENT}) ({up})", table=True)),
            ("Captures up", target(f"min by ({BY_AGENT}) ({q.selector('pktagent_capture_up', *F)})", table=True)),
            ("Packets/s", target(f"sum by ({BY_AGENT}) ({rec(r.CAPTURED_RATE)})", table=True)),
            ("Bits/s", target(f"sum by ({BY_AGENT}) ({rec(r.BYTES_RATE)}) * 8", table=True)),
            ("Drop ratio", target(f"max by ({BY_AGENT}) ({rec(r.DROP_RATIO)})", table=True)),
            ("Duplicate ratio", target(f"max by ({BY_AGENT}) ({rec(r.DUPLICATE_RATIO)})", table=True)),
            ("Decode error ratio", target(f"max by ({BY_AGENT}) ({rec(r.DECODE_ERROR_RATIO)})", table=True)),
            ("Workers", target(f"max by ({BY_AGENT}) ({q.selector('pktagent_processing_workers', *F)})", table=True)),
            ("Utilisation", target(f"max by ({BY_AGENT}) ({rec(r.UTILISATION)})", table=True)),
            ("Headroom", target(f"1 - max by ({BY_AGENT}) ({rec(r.UTILISATION)})", table=True)),
            ("Flow table fill", target(f"max by ({BY_AGENT}) ({rec(r.FLOW_FILL)})", table=True)),
            ("p99 batch time", target(f"max by ({BY_AGENT}) ({rec(r.PROCESSING_QUANTILE, P99)})", table=True)),
        ],
        sort_by=("Drop ratio", True),
        overrides=[
            override("instance", links=_agent_link()),
            override("Up", unit="none", mappings=up_down(), custom_cellOptions={"type": "color-text"}),
            override("Captures up", unit="none", mappings=up_down("all up", "DOWN"), custom_cellOptions={"type": "color-text"}),
            override("Packets/s", unit="pps"),
            override("Bits/s", unit="bps"),
            override("Workers", unit="none"),
            override("Drop ratio", thresholds=high_is_bad(cfg.DROP_RATIO / 10, cfg.DROP_RATIO), custom_cellOptions={"type": "color-text"}),
            override("Utilisation", thresholds=high_is_bad(0.7, cfg.UTILISATION), custom_cellOptions={"type": "color-text"}),
            override("Headroom", thresholds=low_is_bad(1 - cfg.UTILISATION, 0.3), custom_cellOptions={"type": "color-text"}),
            override("Flow table fill", thresholds=high_is_bad(0.7, cfg.FLOW_FILL), custom_cellOptions={"type": "color-text"}),
            override(
                "p99 batch time",
                unit="s",
                thresholds=high_is_bad(cfg.P99_BUDGET_SECONDS / 2, cfg.P99_BUDGET_SECONDS),
                custom_cellOptions={"type": "color-text"},
            ),
        ],
    )
    captures_table = table(
        "Captures, down first",
        "Every capture of every agent: its state, packets per second and the age of its newest packet.",
        "none",
        [
            ("Capture", target(f"max by ({BY_INTERFACE}) ({q.selector('pktagent_capture_up', *F)})", table=True)),
            ("Packets/s", target(f"max by ({BY_INTERFACE}) ({rec(r.CAPTURED_RATE)})", table=True)),
            ("Last packet age", target(f"max by ({BY_INTERFACE}) ({q.last_packet_age(*F)})", table=True)),
        ],
        sort_by=("Capture", False),
        overrides=[
            override("instance", links=_agent_link()),
            override("Capture", mappings=up_down(), custom_cellOptions={"type": "color-text"}),
            override("Packets/s", unit="pps"),
            override("Last packet age", unit="s"),
        ],
    )
    busy = q.utilisation(BY_AGENT, RI, *F)
    sections = [
        (
            None,
            4,
            [
                (stat("Agents up", "Agents that answered their last scrape.", "none", [target(f"count({up} == 1) or vector(0)")]), 3),
                (
                    stat(
                        "Agents down",
                        "Agents whose last scrape failed.",
                        "none",
                        [target(f"count({up} == 0) or vector(0)")],
                        steps=thresholds(("green", None), ("red", 1)),
                    ),
                    3,
                ),
                (
                    stat(
                        "Captures down",
                        "Captures (interfaces) reported down by their agents.",
                        "none",
                        [target(f"count({q.selector('pktagent_capture_up', *F)} == 0) or vector(0)")],
                        steps=thresholds(("green", None), ("red", 1)),
                    ),
                    3,
                ),
                (
                    stat(
                        "Packets/s",
                        "Packets the whole fleet captures per second.",
                        "pps",
                        [target(q.sum_rate("pktagent_packets_captured_total", "", RI, *F))],
                        graph=True,
                    ),
                    4,
                ),
                (
                    stat(
                        "Bits/s",
                        "Bits per second of the traffic the whole fleet counts.",
                        "bps",
                        [target(f"{q.sum_rate('pktagent_traffic_bytes_total', '', RI, *F)} * 8")],
                        graph=True,
                    ),
                    4,
                ),
                (
                    stat(
                        "Worst drop ratio",
                        "The highest share of arriving packets any agent loses at any stage (5m).",
                        "percentunit",
                        [target(f"max({rec(r.DROP_RATIO)})")],
                        steps=high_is_bad(cfg.DROP_RATIO / 10, cfg.DROP_RATIO),
                    ),
                    4,
                ),
                (
                    stat(
                        "Lowest headroom",
                        "The smallest idle share of any agent's processing workers, per worker (5m).",
                        "percentunit",
                        [target(f"1 - max({rec(r.UTILISATION)})")],
                        steps=low_is_bad(1 - cfg.UTILISATION, 0.3),
                    ),
                    3,
                ),
            ],
        ),
        ("Agents, worst first", 9, [(agents_table, 24)]),
        (
            "Throughput",
            8,
            [
                (
                    timeseries(
                        f"Packets/s, top {TOP} agents",
                        "Packets each agent captures per second, the busiest agents.",
                        "pps",
                        [target(f"topk({TOP}, {q.sum_rate('pktagent_packets_captured_total', BY_AGENT, RI, *F)})", "{{instance}}")],
                        low=0,
                    ),
                    12,
                ),
                (
                    timeseries(
                        f"Bits/s, top {TOP} agents",
                        "Bits per second of the traffic each agent counts, the busiest agents.",
                        "bps",
                        [target(f"topk({TOP}, {q.sum_rate('pktagent_traffic_bytes_total', BY_AGENT, RI, *F)} * 8)", "{{instance}}")],
                        low=0,
                    ),
                    12,
                ),
            ],
        ),
        (
            "Losses",
            8,
            [
                (
                    timeseries(
                        f"Drop ratio by stage, top {TOP}",
                        "Share of arriving packets lost in the kernel, at the interface or at the agent's full queue, worst agents first.",
                        "percentunit",
                        [target(f"topk({TOP}, {q.drop_ratio(BY_AGENT, RI, *F)})", "{{instance}} {{stage}}")],
                        low=0,
                        limit=cfg.DROP_RATIO,
                    ),
                    12,
                ),
                (
                    timeseries(
                        f"Duplicate ratio, top {TOP}",
                        "Share of decoded packets left out as duplicates (e.g. a mirror port seeing both directions twice).",
                        "percentunit",
                        [target(f"topk({TOP}, {q.duplicate_ratio(BY_AGENT, RI, *F)})", "{{instance}}")],
                        low=0,
                    ),
                    12,
                ),
            ],
        ),
        (
            "Processing",
            8,
            [
                (
                    timeseries(
                        f"Utilisation, top {TOP}",
                        "Busy share of each agent's processing workers (busy time / workers); near 1 they cannot keep up.",
                        "percentunit",
                        [target(f"topk({TOP}, {busy})", "{{instance}}")],
                        low=0,
                        high=1,
                        limit=cfg.UTILISATION,
                    ),
                    12,
                ),
                (
                    timeseries(
                        f"Headroom, lowest {TOP}",
                        "Idle share of each agent's processing workers (1 - utilisation per worker), the agents with least first.",
                        "percentunit",
                        [target(f"bottomk({TOP}, 1 - ({busy}))", "{{instance}}")],
                        low=0,
                        high=1,
                        limit=1 - cfg.UTILISATION,
                    ),
                    12,
                ),
            ],
        ),
        ("Captures", 8, [(captures_table, 24)]),
    ]
    return dashboard(
        cfg.UID_FLEET,
        "pktagent / Fleet overview",
        "Every pktagent in one view: which are up, how much they capture, what they lose and how much headroom they have.",
        cfg.TAG,
        _variables(multi_instance=True),
        layout(sections),
        refresh=cfg.REFRESH,
        annotations=_annotations(),
    )


# -- agent detail -------------------------------------------------------------------------------


def agent() -> dict[str, Any]:
    def per_if(name: str, *extra: str) -> str:
        return q.sum_rate(name, "interface", RI, *F, *extra)

    quantiles = [target(q.quantile(x, "pktagent_batch_processing_seconds", "", RI, *F), f"p{x * 100:g}") for x in r.QUANTILES]
    busy = q.utilisation("", RI, *F)
    sections = [
        (
            None,
            4,
            [
                (stat("Up", "Whether Prometheus reached the agent at its last scrape.", "none", [target(q.selector("up", *F))], mappings=up_down()), 2),
                (
                    stat("Version", "pktagent version the agent runs.", "none", [target(q.selector("pktagent_build_info", *F), "{{version}}")], text="name"),
                    3,
                ),
                (
                    stat(
                        "Captures",
                        "State of each capture (interface).",
                        "none",
                        [target(q.selector("pktagent_capture_up", *F), "{{interface}}")],
                        mappings=up_down(),
                    ),
                    5,
                ),
                (
                    stat(
                        "Workers",
                        "Processes running a pipeline (capture.workers, --workers); utilisation is per worker.",
                        "none",
                        [target(q.selector("pktagent_processing_workers", *F))],
                    ),
                    2,
                ),
                (
                    gauge(
                        "Utilisation",
                        "Busy share of the processing workers, averaged over them (busy time / workers).",
                        "percentunit",
                        [target(busy)],
                        steps=high_is_bad(0.7, cfg.UTILISATION),
                    ),
                    4,
                ),
                (
                    gauge(
                        "Headroom",
                        "Idle share of the processing workers: how much more traffic they can take.",
                        "percentunit",
                        [target(f"1 - {busy}")],
                        steps=low_is_bad(1 - cfg.UTILISATION, 0.3),
                    ),
                    4,
                ),
                (
                    stat(
                        "Last packet age",
                        "Seconds since the newest packet of each interface; growing means silence or a dead capture.",
                        "s",
                        [target(q.last_packet_age(*F), "{{interface}}")],
                        steps=high_is_bad(60, 600),
                    ),
                    4,
                ),
            ],
        ),
        (
            "Processing",
            8,
            [
                (
                    timeseries(
                        "Batch processing time",
                        "p50, p90 and p99 of the time one batch takes through the pipeline; the red line is the alert's p99 budget.",
                        "s",
                        quantiles,
                        low=0,
                        limit=cfg.P99_BUDGET_SECONDS,
                    ),
                    8,
                ),
                (
                    timeseries(
                        "Batch size",
                        "Packets per processed batch: median, p99 and mean.",
                        "short",
                        [
                            target(q.quantile(0.5, "pktagent_batch_size_packets", "", RI, *F), "p50"),
                            target(q.quantile(0.99, "pktagent_batch_size_packets", "", RI, *F), "p99"),
                            target(q.histogram_mean("pktagent_batch_size_packets", "", RI, *F), "mean"),
                        ],
                        low=0,
                    ),
                    8,
                ),
                (
                    timeseries(
                        "Queue depth against capacity",
                        "Packets waiting between capture and processing, and how many the queue holds before it drops.",
                        "short",
                        [target(q.selector("pktagent_queue_packets", *F), "queued"), target(q.selector("pktagent_queue_capacity_packets", *F), "capacity")],
                        low=0,
                    ),
                    8,
                ),
                (
                    timeseries(
                        "Utilisation and headroom",
                        "Busy and idle shares of the processing workers, per worker.",
                        "percentunit",
                        [target(busy, "utilisation"), target(f"1 - {busy}", "headroom")],
                        low=0,
                        high=1,
                        limit=cfg.UTILISATION,
                    ),
                    8,
                ),
                (
                    timeseries(
                        "Batches/s",
                        "Batches processed per second.",
                        "cps",
                        [target(q.sum_rate("pktagent_batch_processing_seconds_count", "", RI, *F), "batches")],
                        low=0,
                    ),
                    8,
                ),
                (
                    timeseries(
                        "Packets by outcome",
                        "Per second: captured, processed, and left out as duplicate, sampled out, unsupported link or dropped at the queue.",
                        "pps",
                        [
                            target(per_if("pktagent_packets_captured_total"), "{{interface}} captured"),
                            target(per_if("pktagent_packets_processed_total"), "{{interface}} processed"),
                            target(per_if("pktagent_packets_duplicate_total"), "{{interface}} duplicate"),
                            target(per_if("pktagent_packets_sampled_out_total"), "{{interface}} sampled out"),
                            target(per_if("pktagent_unsupported_link_packets_total"), "{{interface}} unsupported link"),
                            target(per_if("pktagent_packets_dropped_total", 'stage="queue"'), "{{interface}} queue drop"),
                        ],
                        low=0,
                    ),
                    8,
                ),
            ],
        ),
        (
            "Losses",
            8,
            [
                (
                    timeseries(
                        "Drops by stage",
                        "Packets lost per second: in the kernel, at the interface (libpcap's figures) or at the agent's full queue.",
                        "pps",
                        [target(q.sum_rate("pktagent_packets_dropped_total", "interface, stage", RI, *F), "{{interface}} {{stage}}")],
                        low=0,
                    ),
                    8,
                ),
                (
                    timeseries(
                        "Drop ratio by stage",
                        "Share of arriving packets (captured plus those lost before capture) lost at each stage.",
                        "percentunit",
                        [target(q.drop_ratio("interface", RI, *F), "{{interface}} {{stage}}")],
                        low=0,
                        limit=cfg.DROP_RATIO,
                    ),
                    8,
                ),
                (
                    timeseries(
                        "Duplicates",
                        "Share of decoded packets left out as duplicates of one seen within the dedup window.",
                        "percentunit",
                        [target(q.duplicate_ratio("interface", RI, *F), "{{interface}}")],
                        low=0,
                    ),
                    8,
                ),
                (
                    timeseries(
                        "Sampled out",
                        "Packets per second left out by sampling (traffic counters are scaled up to make up for them).",
                        "pps",
                        [target(per_if("pktagent_packets_sampled_out_total"), "{{interface}}")],
                        low=0,
                    ),
                    8,
                ),
                (
                    timeseries(
                        "Decode errors by layer",
                        "Headers per second that could not be read, by layer and reason (the packets are still counted).",
                        "cps",
                        [target(q.sum_rate("pktagent_decode_errors_total", "interface, layer, reason", RI, *F), "{{interface}} {{layer}}: {{reason}}")],
                        low=0,
                    ),
                    8,
                ),
                (
                    timeseries(
                        "Decode error ratio",
                        "Share of decoded packets with a header that could not be read; the red line is the alert's threshold.",
                        "percentunit",
                        [target(q.decode_error_ratio("interface", RI, *F), "{{interface}}")],
                        low=0,
                        limit=cfg.DECODE_ERROR_RATIO,
                    ),
                    8,
                ),
            ],
        ),
        (
            "Flows",
            8,
            [
                (
                    timeseries(
                        "Active flows against capacity",
                        "Flows in the flow table by transport, and how many it holds before it evicts the least recently seen.",
                        "short",
                        [
                            target(f"sum by (transport) ({q.selector('pktagent_flows_active', *F)})", "{{transport}}"),
                            target(q.selector("pktagent_flows_capacity", *F), "capacity"),
                        ],
                        low=0,
                    ),
                    8,
                ),
                (
                    gauge(
                        "Flow table fill",
                        "Active flows as a share of the flow table's capacity.",
                        "percentunit",
                        [target(q.flow_fill(BY_AGENT, *F))],
                        steps=high_is_bad(0.7, cfg.FLOW_FILL),
                    ),
                    4,
                ),
                (
                    timeseries(
                        "Flows started",
                        "New flows per second by transport.",
                        "cps",
                        [target(q.sum_rate("pktagent_flows_started_total", "transport", RI, *F), "{{transport}}")],
                        low=0,
                    ),
                    6,
                ),
                (
                    timeseries(
                        "Flow endings by reason",
                        "Flows ended per second: FIN, RST, idle or active timeout, or evicted from a full table.",
                        "cps",
                        [target(q.sum_rate("pktagent_flows_ended_total", "reason", RI, *F), "{{reason}}")],
                        low=0,
                        stack=True,
                    ),
                    6,
                ),
            ],
        ),
        (
            "Caches",
            8,
            [
                (
                    timeseries(
                        "Cache hit ratio",
                        "Share of lookups each cache answered (dedup: hits are duplicates found).",
                        "percentunit",
                        [target(q.cache_hit_ratio("cache", RI, *F), "{{cache}}")],
                        low=0,
                        high=1,
                    ),
                    8,
                ),
                (
                    timeseries(
                        "Cache entries against capacity",
                        "Entries each cache holds, and how many it may hold.",
                        "short",
                        [
                            target(f"sum by (cache) ({q.selector('pktagent_cache_entries', *F)})", "{{cache}} entries"),
                            target(f"sum by (cache) ({q.selector('pktagent_cache_capacity_entries', *F)})", "{{cache}} capacity"),
                        ],
                        low=0,
                    ),
                    8,
                ),
                (
                    timeseries(
                        "Cache evictions",
                        "Entries per second a full cache dropped to make room.",
                        "cps",
                        [target(q.sum_rate("pktagent_cache_evictions_total", "cache", RI, *F), "{{cache}}")],
                        low=0,
                    ),
                    8,
                ),
            ],
        ),
        (
            "Names and label budget",
            8,
            [
                (
                    timeseries(
                        "Label series dropped",
                        "Device and domain series dropped a minute to keep each label within its budget; the red line is the alert's threshold.",
                        "cpm",
                        [target(f"{q.sum_rate('pktagent_label_series_dropped_total', 'label', RI, *F)} * 60", "{{label}}")],
                        low=0,
                        limit=cfg.LABEL_CHURN_PER_MINUTE,
                    ),
                    8,
                ),
                (
                    timeseries(
                        "Devices and label series",
                        "Devices known, and the device and domain series exported (named ones plus other and unnamed/unknown) against each label's budget.",
                        "short",
                        [
                            target(q.selector("pktagent_devices_known", *F), "devices known"),
                            target(f"count({q.selector('pktagent_device_bytes_total', *F, DIR_TX)})", "device series"),
                            target(f"count({q.selector('pktagent_remote_bytes_total', *F, DIR_TX)})", "domain series"),
                            target(f"max by (label) ({q.selector('pktagent_label_series_budget', *F)})", "{{label}} budget"),
                        ],
                        low=0,
                    ),
                    8,
                ),
                (
                    timeseries(
                        "Name-learning packets",
                        "ARP, DHCP and DNS packets per second read for device and domain names: decoded, malformed, or skipped over the per-batch limit.",
                        "pps",
                        [target(q.sum_rate("pktagent_learn_packets_total", "result", RI, *F), "{{result}}")],
                        low=0,
                    ),
                    8,
                ),
            ],
        ),
        (
            "Capture",
            8,
            [
                (
                    timeseries(
                        "Last-packet age",
                        "Seconds since the newest packet of each interface; a sawtooth is normal, a steady climb is silence.",
                        "s",
                        [target(q.last_packet_age(*F), "{{interface}}")],
                        low=0,
                    ),
                    12,
                ),
                (
                    timeseries(
                        "Exporter errors",
                        "Scrapes per second in which one of the agent's collectors failed (its metrics were missing).",
                        "cps",
                        [target(q.sum_rate("pktagent_exporter_errors_total", "collector", RI, *F), "{{collector}}")],
                        low=0,
                    ),
                    12,
                ),
            ],
        ),
    ]
    return dashboard(
        cfg.UID_AGENT,
        "pktagent / Agent detail",
        "One agent in depth: batch processing, queue, losses by stage, decode errors, flows and caches.",
        cfg.TAG,
        _variables(multi_instance=False),
        layout(sections),
        refresh=cfg.REFRESH,
        annotations=_annotations(),
    )


# -- traffic ------------------------------------------------------------------------------------


def traffic() -> dict[str, Any]:
    m = (*F, INTERFACE)

    def by(label: str, octets: bool) -> str:
        name = "pktagent_traffic_bytes_total" if octets else "pktagent_traffic_packets_total"
        s = q.sum_rate(name, label, RI, *m)
        return f"{s} * 8" if octets else s

    def pair(label: str, what: str) -> list[tuple[dict[str, Any], int]]:
        legend = "{{" + label + "}}"
        return [
            (
                timeseries(
                    f"Bits/s by {what}", f"Bits per second by {what} (estimates scaled up when sampling).", "bps", [target(by(label, True), legend)], low=0
                ),
                12,
            ),
            (
                timeseries(
                    f"Packets/s by {what}",
                    f"Packets per second by {what} (estimates scaled up when sampling).",
                    "pps",
                    [target(by(label, False), legend)],
                    low=0,
                ),
                12,
            ),
        ]

    total_bytes = q.sum_rate("pktagent_traffic_bytes_total", "", RI, *m)
    total_packets = q.sum_rate("pktagent_traffic_packets_total", "", RI, *m)
    breakdown = table(
        "Traffic by network, transport and direction",
        "Bytes and packets over the dashboard's time range, largest first.",
        "decbytes",
        [
            ("Bytes", target(f"sum by (network, transport, direction) (increase({q.selector('pktagent_traffic_bytes_total', *m)}[$__range]))", table=True)),
            ("Packets", target(f"sum by (network, transport, direction) (increase({q.selector('pktagent_traffic_packets_total', *m)}[$__range]))", table=True)),
        ],
        sort_by=("Bytes", True),
        overrides=[override("Packets", unit="short")],
    )
    # Per-device and per-domain counters have no interface label: they cover every interface of an agent.
    dev_bits = f"{q.sum_rate('pktagent_device_bytes_total', 'instance, device, direction', RI, *F)} * 8"
    dev_packets = q.sum_rate("pktagent_device_packets_total", "instance, device", RI, *F)
    domain_bits = f"{q.sum_rate('pktagent_remote_bytes_total', 'domain, direction', RI, *F)} * 8"

    def domain_bytes(direction: str) -> str:
        sel = q.selector("pktagent_remote_bytes_total", *F, f'direction="{direction}"')
        return f"sum by (domain) (increase({sel}[$__range]))"

    domains_table = table(
        "Remote domains, bytes in range",
        "Bytes received from and sent to each remote domain over the time range, all selected agents together, largest first.",
        "decbytes",
        [("Received", target(domain_bytes("receive"), table=True)), ("Sent", target(domain_bytes("transmit"), table=True))],
        sort_by=("Received", True),
    )
    sections = [
        (
            None,
            4,
            [
                (stat("Bits/s", "Bits per second of all selected traffic.", "bps", [target(f"{total_bytes} * 8")], graph=True), 6),
                (stat("Packets/s", "Packets per second of all selected traffic.", "pps", [target(total_packets)], graph=True), 6),
                (stat("Mean packet size", "Bytes on the wire per packet, on average.", "decbytes", [target(f"{total_bytes} / {total_packets}")]), 6),
                (
                    stat(
                        "Bytes in range",
                        "Bytes counted over the dashboard's time range.",
                        "decbytes",
                        [target(f"sum(increase({q.selector('pktagent_traffic_bytes_total', *m)}[$__range]))", instant=True)],
                    ),
                    6,
                ),
            ],
        ),
        ("By direction", 8, pair("direction", "direction")),
        ("By network", 8, pair("network", "network")),
        ("By transport", 8, pair("transport", "transport")),
        (
            "Devices",
            8,
            [
                (
                    timeseries(
                        f"Bits/s by device, top {TOP}",
                        "Bits per second each local device sent (transmit) and received (receive), all interfaces; over-budget devices count as other.",
                        "bps",
                        [target(f"topk({TOP}, {dev_bits})", "{{instance}} {{device}} {{direction}}")],
                        low=0,
                    ),
                    10,
                ),
                (
                    timeseries(
                        f"Packets/s by device, top {TOP}",
                        "Packets per second each local device sent and received, all interfaces; unnamed: no name learned or configured yet.",
                        "pps",
                        [target(f"topk({TOP}, {dev_packets})", "{{instance}} {{device}}")],
                        low=0,
                    ),
                    10,
                ),
                (
                    stat(
                        "Devices known",
                        "Devices in the selected agents' registries, named or not: learned from ARP, DHCP and DNS, or listed in the inventory.",
                        "none",
                        [target(f"sum({q.selector('pktagent_devices_known', *F)})")],
                        graph=True,
                    ),
                    4,
                ),
            ],
        ),
        (
            "Remote domains",
            9,
            [
                (
                    timeseries(
                        f"Bits/s by remote domain, top {TOP}",
                        "Bits per second to (transmit) and from (receive) each registrable domain, named from DNS answers; unknown: no answer seen.",
                        "bps",
                        [target(f"topk({TOP}, {domain_bits})", "{{domain}} {{direction}}")],
                        low=0,
                    ),
                    12,
                ),
                (domains_table, 12),
            ],
        ),
        (
            "Breakdown",
            9,
            [
                (breakdown, 12),
                (
                    timeseries(
                        f"Bits/s, top {TOP} agents",
                        "Bits per second of the selected traffic on each agent, the busiest agents.",
                        "bps",
                        [target(f"topk({TOP}, {q.sum_rate('pktagent_traffic_bytes_total', BY_AGENT, RI, *m)} * 8)", "{{instance}}")],
                        low=0,
                    ),
                    12,
                ),
            ],
        ),
    ]
    variables = [
        *_variables(multi_instance=True),
        query_variable("interface", "Interface", f"label_values(pktagent_capture_up{{{JOB}, {SITE}, {ROLE}, {INSTANCE}}}, interface)", multi=True),
    ]
    return dashboard(
        cfg.UID_TRAFFIC,
        "pktagent / Traffic",
        "What the agents see: bits and packets per second by direction, network and transport, by local device and by remote domain.",
        cfg.TAG,
        variables,
        layout(sections),
        refresh=cfg.REFRESH,
        annotations=_annotations(),
    )


DASHBOARDS = {"pktagent-fleet.json": fleet, "pktagent-agent.json": agent, "pktagent-traffic.json": traffic}
