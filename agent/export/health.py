"""``/health``: the agent's state as JSON, HTTP 503 while any capture is down.

Reports the seed's performance figures (batch processing time average, minimum and maximum,
packets processed, dropped and duplicate, queue size, active flows) and each capture's state.
"""

from __future__ import annotations

from typing import Any

from agent.base.snapshot import Snapshot


def health(s: Snapshot) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for a snapshot."""
    captures = [
        {
            "interface": name,
            "up": bool(up),
            "error": error or None,
            "packets_captured": int(captured),
            "last_packet_timestamp_seconds": float(last),
        }
        for name, up, error, captured, last in zip(
            s.interfaces, s.capture_up.tolist(), s.capture_errors or ("",) * len(s.interfaces), s.captured.tolist(), s.last_packet_seconds.tolist()
        )
    ]
    batches = s.batch_seconds.count
    down = [c["interface"] for c in captures if not c["up"]]
    body = {
        "status": "down" if down else "ok",
        "version": s.version,
        "captures": captures,
        "performance": {
            "batches": batches,
            "avg_batch_seconds": s.batch_seconds.total / batches if batches else 0.0,
            "min_batch_seconds": s.min_batch_seconds,
            "max_batch_seconds": s.max_batch_seconds,
            "busy_seconds": s.busy_seconds,
            "packets_processed": int(s.processed.sum()),
            "packets_dropped": int(s.dropped.sum()),
            "packets_duplicate": int(s.duplicate.sum()),
            "queue_packets": s.queue_packets,
            "queue_capacity_packets": s.queue_capacity,
            "flows_active": int(s.flows_active.sum()),
        },
    }
    return (503 if down else 200), body
