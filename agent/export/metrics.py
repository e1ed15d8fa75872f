"""Prometheus exposition: a custom collector that builds every catalogued family afresh from a snapshot.

The collector is given a function returning a ``Snapshot``; it never reaches into the
pipeline. Families are declared once, in ``catalogue.py``. A failure while taking the snapshot
or reading one part is logged and counted in ``pktagent_exporter_errors_total{collector}``
instead of breaking the scrape: the other parts still answer.

>>> from prometheus_client import CollectorRegistry, generate_latest
>>> from agent.base.snapshot import Snapshot
>>> registry = CollectorRegistry()
>>> registry.register(SnapshotCollector(lambda: Snapshot(interfaces=("eth0",), version="1.0")))
>>> b"pktagent_build_info" in generate_latest(registry)
True
"""

from __future__ import annotations

import itertools
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

from agent.base.snapshot import Histogram, Snapshot
from agent.export.catalogue import CATALOGUE, GROUPS, Family

log = logging.getLogger("pktagent.metrics")

SNAPSHOT = "snapshot"  # the collector label of a failure to take the snapshot itself


def _buckets(h: Histogram) -> list[tuple[str, float]]:
    cumulative = np.cumsum(h.counts).tolist()
    return [(f"{b:g}", c) for b, c in zip(h.bounds, cumulative)] + [("+Inf", cumulative[-1])]


def build(family: Family, s: Snapshot) -> Metric | None:
    """The Prometheus family of one catalogue entry (None when the part behind it is not running)."""
    if family.kind == "histogram":
        assert family.histogram is not None
        h = family.histogram(s)
        return HistogramMetricFamily(family.name, family.help, buckets=_buckets(h), sum_value=h.total)
    assert family.read is not None
    samples = family.read(s)
    if samples is None:
        return None
    if family.kind == "info":
        (values, _), *_ = samples
        return InfoMetricFamily(family.name.removesuffix("_info"), family.help, value=dict(zip(family.labels, values)))
    cls = CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily
    m = cls(family.name, family.help, labels=list(family.labels))
    for key, v in samples:
        m.add_metric(list(key), v)
    return m


class SnapshotCollector(Collector):
    """Collects every catalogued family from the snapshot ``source`` returns, one snapshot per scrape."""

    def __init__(self, source: Callable[[], Snapshot], families: Iterable[Family] = CATALOGUE) -> None:
        self._source = source
        self._families = [f for f in families if f.group]
        self._errors: dict[str, int] = dict.fromkeys((*GROUPS, SNAPSHOT), 0)

    def collect(self) -> Iterator[Metric]:
        try:
            snapshot = self._source()
        except Exception:
            log.exception("taking the snapshot for /metrics failed")
            self._errors[SNAPSHOT] += 1
        else:
            for group, families in itertools.groupby(self._families, key=lambda f: f.group):
                try:
                    built = [m for m in (build(f, snapshot) for f in families) if m is not None]
                except Exception:
                    log.exception("collector %s failed", group)
                    self._errors[group] += 1
                    continue
                yield from built
        errors = CounterMetricFamily("pktagent_exporter_errors", "Scrapes in which one collector failed (the others still answered).", labels=["collector"])
        for name, v in self._errors.items():
            errors.add_metric([name], v)
        yield errors
