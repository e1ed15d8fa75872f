"""Prometheus exposition: the text format (0.0.4), written straight from the catalogue and a snapshot.

There is no client library behind it: the whole of what ``/metrics`` serves is the catalogued
families of one snapshot plus the ``process_*`` families (``process.py``), and writing that
format is a few dozen lines. prometheus_client would cost a live agent about 10 MiB of its
memory for it (its import pulls in ``urllib.request``, ``http.client``, ``email`` and ``ssl``).

A failure while taking the snapshot or reading one part is logged and counted in
``pktagent_exporter_errors_total{collector}`` instead of breaking the scrape: the other parts
still answer. Labels are written in name order and values as Go's exporters write them
(``1.70000000031e+09``), so the text reads as any Prometheus client's does.

>>> from agent.base.snapshot import Snapshot
>>> text = Exposition(lambda: Snapshot(interfaces=("eth0",), version="1.0")).render()
>>> text.splitlines()[2].decode()
'pktagent_build_info{libpcap_version="",python_version="",version="1.0"} 1.0'
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Collection, Iterable, Iterator

import numpy as np

from agent.base.snapshot import Histogram, Snapshot
from agent.export.catalogue import CATALOGUE, GROUPS, Family

log = logging.getLogger("pktagent.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SNAPSHOT = "snapshot"  # the collector label of a failure to take the snapshot itself

# One family as written: name, help, type, and its samples (sample name, label pairs, value).
Sample = tuple[str, tuple[tuple[str, str], ...], float]
Written = tuple[str, str, str, list[Sample]]


def number(v: float) -> str:
    """A sample value as Go's exporters write it: shortest round trip, exponent from 1e+06 on.

    >>> [number(x) for x in (0, 1.5, 123456, 1000014, 1.70000000031e9, 2e-05, float("inf"), float("nan"))]
    ['0.0', '1.5', '123456.0', '1.000014e+06', '1.70000000031e+09', '2e-05', '+Inf', 'NaN']
    """
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    text = repr(v)
    if "e" in text or abs(v) < 1e6:
        return text
    sign, digits = ("-", text[1:]) if v < 0 else ("", text)
    whole, _, fraction = digits.partition(".")
    mantissa = (whole + fraction).rstrip("0")
    return f"{sign}{mantissa[0]}{'.' + mantissa[1:] if len(mantissa) > 1 else ''}e+{len(whole) - 1:02d}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _lines(family: Written) -> Iterator[str]:
    name, help_, kind, samples = family
    yield f"# HELP {name} {help_.replace(chr(92), chr(92) * 2).replace(chr(10), chr(92) + 'n')}\n"
    yield f"# TYPE {name} {kind}\n"
    for sample, pairs, value in samples:
        labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(pairs))
        yield f"{sample}{{{labels}}} {number(value)}\n" if labels else f"{sample} {number(value)}\n"


def _buckets(h: Histogram) -> list[tuple[str, float]]:
    cumulative = np.cumsum(h.counts).tolist()
    return [(f"{b:g}", c) for b, c in zip(h.bounds, cumulative)] + [("+Inf", cumulative[-1])]


def build(family: Family, s: Snapshot) -> Written | None:
    """One catalogue entry as written (None when the part behind it is not running)."""
    if family.kind == "histogram":
        assert family.histogram is not None
        h = family.histogram(s)
        buckets = _buckets(h)
        samples: list[Sample] = [(f"{family.name}_bucket", (("le", le),), c) for le, c in buckets]
        samples += [(f"{family.name}_count", (), buckets[-1][1]), (f"{family.name}_sum", (), h.total)]
        return family.name, family.help, "histogram", samples
    assert family.read is not None
    read = family.read(s)
    if read is None:
        return None
    samples = [(family.name, tuple(zip(family.labels, key)), v) for key, v in read]
    if family.kind == "info":
        return family.name, family.help, "gauge", samples[:1]
    return family.name, family.help, family.kind, samples


class Exposition:
    """``/metrics`` for the snapshots ``source`` returns, one snapshot per scrape, plus the ``extra`` families.

    ``render(names)`` keeps only the samples named (Prometheus's ``name[]`` parameter).
    """

    def __init__(
        self,
        source: Callable[[], Snapshot],
        families: Iterable[Family] = CATALOGUE,
        extra: Callable[[], Iterable[Written]] = lambda: (),
    ) -> None:
        self._source = source
        self._families = [f for f in families if f.group]
        self._extra = extra
        self._errors: dict[str, int] = dict.fromkeys((*GROUPS, SNAPSHOT), 0)

    def collect(self) -> Iterator[Written]:
        """Every family of one scrape, as written."""
        try:
            snapshot = self._source()
        except Exception:
            log.exception("taking the snapshot for /metrics failed")
            self._errors[SNAPSHOT] += 1
        else:
            for group, families in itertools.groupby(self._families, key=lambda f: f.group):
                try:
                    built = [w for w in (build(f, snapshot) for f in families) if w is not None]
                except Exception:
                    log.exception("collector %s failed", group)
                    self._errors[group] += 1
                    continue
                yield from built
        name = "pktagent_exporter_errors_total"
        yield (
            name,
            "Scrapes in which one collector failed (the others still answered).",
            "counter",
            [(name, (("collector", c),), v) for c, v in self._errors.items()],
        )
        yield from self._extra()

    def render(self, names: Collection[str] | None = None) -> bytes:
        """The exposition text; with ``names``, only those samples (and families that keep one)."""
        out: list[str] = []
        for family in self.collect():
            if names is not None:
                kept = [s for s in family[3] if s[0] in names]
                if not kept:
                    continue
                family = (*family[:3], kept)
            out.extend(_lines(family))
        return "".join(out).encode()
