"""``replay --format json``: every figure of the Prometheus output as plain JSON, counts as integers.

Packet and byte counts are integers everywhere (traffic scaled up by sampling is rounded to
the nearest packet or byte), times and timestamps are floats, so a reader never has to guess.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agent.base import labels
from agent.base.snapshot import Histogram, Snapshot, UsageSeries


def _count(value: float) -> int:
    return round(float(value))


def _histogram(h: Histogram) -> dict[str, Any]:
    cumulative = np.cumsum(h.counts).tolist()
    buckets = {f"{b:g}": int(c) for b, c in zip(h.bounds, cumulative)}
    buckets["+Inf"] = int(cumulative[-1])
    return {"count": h.count, "sum": float(h.total), "buckets": buckets}


def _usage(series: tuple[UsageSeries, ...], *, packets: bool) -> dict[str, dict[str, int]]:
    out = {}
    for u in series:
        row = {"transmit_bytes": _count(u.tx_bytes), "receive_bytes": _count(u.rx_bytes)}
        if packets:
            row |= {"transmit_packets": _count(u.tx_packets), "receive_packets": _count(u.rx_packets)}
        out[u.name] = row
    return out


def _interface(s: Snapshot, k: int) -> dict[str, Any]:
    traffic = [
        {
            "network": labels.NETWORKS[n],
            "transport": labels.TRANSPORTS[t],
            "direction": labels.DIRECTIONS[d],
            "packets": _count(s.traffic_packets[k, n, t, d]),
            "bytes": _count(s.traffic_bytes[k, n, t, d]),
        }
        for n, t, d in zip(*s.traffic_packets[k].nonzero())
    ]
    return {
        "capture_up": int(s.capture_up[k]) if s.capture_up.size else 0,
        "last_packet_timestamp_seconds": float(s.last_packet_seconds[k]) if s.last_packet_seconds.size else 0.0,
        "packets_captured": int(s.captured[k]),
        "packets_processed": int(s.processed[k]),
        "packets_duplicate": int(s.duplicate[k]),
        "packets_sampled_out": int(s.sampled_out[k]),
        "unsupported_link_packets": int(s.unsupported_link[k]),
        "packets_dropped": dict(zip(labels.DROP_STAGES, map(int, s.dropped[k]))),
        "traffic_packets": _count(s.traffic_packets[k].sum()),
        "traffic_bytes": _count(s.traffic_bytes[k].sum()),
        "traffic": traffic,
        "decode_errors": {f"{layer}/{reason}": int(v) for (layer, reason), v in zip(labels.DECODE_ERRORS, s.decode_errors[k]) if v},
    }


def snapshot_json(s: Snapshot) -> dict[str, Any]:
    """The final figures of a replay as plain JSON: the same figures ``/metrics`` shows."""
    return {
        "version": s.version,
        "build": {"version": s.version, "python_version": s.python_version, "libpcap_version": s.libpcap_version},
        "interfaces": {name: _interface(s, k) for k, name in enumerate(s.interfaces)},
        "flows": {
            "started": dict(zip(labels.FLOW_TRANSPORTS, map(int, s.flows_started))),
            "ended": {tr: dict(zip(labels.FLOW_END_REASONS, map(int, row))) for tr, row in zip(labels.FLOW_TRANSPORTS, s.flows_ended)},
            "active": dict(zip(labels.FLOW_TRANSPORTS, map(int, s.flows_active))),
            "capacity": int(s.flows_capacity),
        },
        "caches": {
            c.name: {"hits": int(c.hits), "misses": int(c.misses), "entries": int(c.entries), "capacity": int(c.capacity), "evictions": int(c.evictions)}
            for c in s.caches
        },
        "processing": {
            "batches": s.batch_seconds.count,
            "busy_seconds": float(s.busy_seconds),
            "workers": int(s.workers),
            "queue_packets": int(s.queue_packets),
            "queue_capacity_packets": int(s.queue_capacity),
            "batch_processing_seconds": _histogram(s.batch_seconds),
            "batch_size_packets": _histogram(s.batch_sizes),
        },
        "devices": {
            "known": int(s.devices_known),
            "series": _usage(s.device_series, packets=True),
        },
        "domains": {"series": _usage(s.domain_series, packets=False)},
        "label_series": {
            label: {"budget": int(s.series_budget.get(label, 0)), "dropped": int(s.series_dropped.get(label, 0))}
            for label in sorted({*s.series_budget, *s.series_dropped})
        },
        "learn_packets": {k: int(v) for k, v in sorted(s.learned.items())},
    }
