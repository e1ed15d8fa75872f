"""PromQL expressions the dashboards and the rules share, built for any label set, window and matchers.

Each builder takes ``by`` (the labels kept, e.g. ``"job, instance"``), ``window`` (``"5m"`` in
rules, ``"$__rate_interval"`` on panels) and matchers (``'job=~"$job"'``, ...). Definitions:

* packets *arrived* = captured + dropped by the kernel or the interface (libpcap never saw those);
  queue drops are among the captured packets.
* packets *decoded* = processed + duplicate + sampled out: every packet the decoder read.

>>> rate("pktagent_packets_captured_total", "5m", 'job="a"')
'rate(pktagent_packets_captured_total{job="a"}[5m])'
"""

from __future__ import annotations

LOSS_STAGES_BEFORE_CAPTURE = 'stage=~"kernel|interface"'


def selector(name: str, *matchers: str) -> str:
    """``name{m1, m2}``, or the bare name when there are no matchers."""
    kept = [m for m in matchers if m]
    return f"{name}{{{', '.join(kept)}}}" if kept else name


def rate(name: str, window: str, *matchers: str) -> str:
    return f"rate({selector(name, *matchers)}[{window}])"


def sum_by(by: str, inner: str) -> str:
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def sum_rate(name: str, by: str, window: str, *matchers: str) -> str:
    return sum_by(by, rate(name, window, *matchers))


def arrived(by: str, window: str, *m: str) -> str:
    """Packets per second that reached the host: captured, plus lost before libpcap had them."""
    captured = sum_rate("pktagent_packets_captured_total", by, window, *m)
    lost = sum_rate("pktagent_packets_dropped_total", by, window, *m, LOSS_STAGES_BEFORE_CAPTURE)
    return f"{captured} + {lost}"


def decoded(by: str, window: str, *m: str) -> str:
    """Packets per second the decoder read (processed, duplicate or sampled out)."""
    parts = [sum_rate(f"pktagent_packets_{what}_total", by, window, *m) for what in ("processed", "duplicate", "sampled_out")]
    return " + ".join(parts)


def drop_ratio(by: str, window: str, *m: str, arrived_rate: str = "") -> str:
    """Share of arriving packets lost, by ``by`` and stage (``arrived_rate``: a recorded ``arrived``)."""
    drops = sum_rate("pktagent_packets_dropped_total", f"{by}, stage", window, *m)
    return f"{drops} / on ({by}) group_left () ({arrived_rate or arrived(by, window, *m)})"


def duplicate_ratio(by: str, window: str, *m: str, decoded_rate: str = "") -> str:
    """Share of decoded packets left out as duplicates (``decoded_rate``: a recorded ``decoded``)."""
    return f"{sum_rate('pktagent_packets_duplicate_total', by, window, *m)} / ({decoded_rate or decoded(by, window, *m)})"


def decode_error_ratio(by: str, window: str, *m: str, decoded_rate: str = "") -> str:
    """Share of decoded packets with a header that could not be read (0, not nothing, when there were none)."""
    errors = sum_rate("pktagent_decode_errors_total", by, window, *m)
    total = decoded_rate or decoded(by, window, *m)
    return f"({errors} or on ({by}) 0 * ({total})) / ({total})"


def max_by(by: str, inner: str) -> str:
    return f"max by ({by}) ({inner})" if by else f"max({inner})"


def utilisation(by: str, window: str, *m: str) -> str:
    """Busy share of the processing workers, averaged over them (1 = never idle); headroom is one minus it.

    An agent run with ``--workers N`` has N pipelines whose busy time adds up to at most N
    seconds a second; divided by ``pktagent_processing_workers`` it is judged per worker.

    >>> utilisation("instance", "5m")
    'sum by (instance) (rate(pktagent_processing_busy_seconds_total[5m])) / on (instance) max by (instance) (pktagent_processing_workers)'
    """
    busy = sum_rate("pktagent_processing_busy_seconds_total", by, window, *m)
    workers = max_by(by, selector("pktagent_processing_workers", *m))
    return f"{busy} / on ({by}) {workers}" if by else f"{busy} / {workers}"


def quantile(q: float, histogram: str, by: str, window: str, *m: str) -> str:
    buckets = sum_rate(f"{histogram}_bucket", f"{by}, le" if by else "le", window, *m)
    return f"histogram_quantile({q:g}, {buckets})"


def histogram_mean(histogram: str, by: str, window: str, *m: str) -> str:
    return f"{sum_rate(f'{histogram}_sum', by, window, *m)} / {sum_rate(f'{histogram}_count', by, window, *m)}"


def cache_hit_ratio(by: str, window: str, *m: str) -> str:
    hits = sum_rate("pktagent_cache_hits_total", by, window, *m)
    misses = sum_rate("pktagent_cache_misses_total", by, window, *m)
    return f"{hits} / ({hits} + {misses})"


def flow_fill(by: str, *m: str) -> str:
    """Active flows as a share of the flow table's capacity."""
    return f"{sum_by(by, selector('pktagent_flows_active', *m))} / on ({by}) {selector('pktagent_flows_capacity', *m)}"


def last_packet_age(*m: str) -> str:
    """Seconds since the newest packet of each interface (interfaces that never saw one are left out)."""
    ts = selector("pktagent_last_packet_timestamp_seconds", *m)
    return f"time() - ({ts} > 0)"
