"""How each family's samples are read from a snapshot: small reader factories the catalogue is built from.

A reader takes a ``Snapshot`` and yields ``(label values, value)`` pairs, or returns None when
the part behind its family is not running (OTLP off, no device database).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

from agent.base import labels
from agent.base.snapshot import Snapshot

Sample = tuple[tuple[str, ...], float]  # label values (in the family's label order), value
Reader = Callable[[Snapshot], Iterable[Sample] | None]  # None: the part behind the family is not running


def per_interface(values: Callable[[Snapshot], np.ndarray]) -> Reader:
    def read(s: Snapshot) -> Iterator[Sample]:
        for iface, v in zip(s.interfaces, values(s).tolist()):
            yield (iface,), v

    return read


def per_interface_and(values: Callable[[Snapshot], np.ndarray], names: tuple[object, ...]) -> Reader:
    """A (interface, code) array, the codes named by ``names`` (tuples of names are spread over several labels)."""

    def read(s: Snapshot) -> Iterator[Sample]:
        for iface, row in zip(s.interfaces, values(s).tolist()):
            for name, v in zip(names, row):
                yield (iface, *(name if isinstance(name, tuple) else (name,))), v

    return read


def traffic(values: Callable[[Snapshot], np.ndarray]) -> Reader:
    """The non-empty cells of the (interface, network, transport, direction) cube."""

    def read(s: Snapshot) -> Iterator[Sample]:
        cube = values(s)
        for k, iface in enumerate(s.interfaces):
            for n, t, d in np.argwhere(s.traffic_packets[k] > 0).tolist():
                yield (iface, labels.NETWORKS[n], labels.TRANSPORTS[t], labels.DIRECTIONS[d]), float(cube[k, n, t, d])

    return read


def scalar(get: Callable[[Snapshot], float]) -> Reader:
    def read(s: Snapshot) -> Iterator[Sample]:
        yield (), get(s)

    return read


def caches(field: str) -> Reader:
    def read(s: Snapshot) -> Iterator[Sample]:
        for c in s.caches:
            yield (c.name,), getattr(c, field)

    return read


def flows(values: Callable[[Snapshot], np.ndarray]) -> Reader:
    def read(s: Snapshot) -> Iterator[Sample]:
        for tr, v in zip(labels.FLOW_TRANSPORTS, values(s).tolist()):
            yield (tr,), v

    return read


def flows_ended(s: Snapshot) -> Iterator[Sample]:
    for tr, row in zip(labels.FLOW_TRANSPORTS, s.flows_ended.tolist()):
        for reason, v in zip(labels.FLOW_END_REASONS, row):
            yield (tr, reason), v


def usage(which: str, measure: str) -> Reader:
    """Per-device or per-domain series, each way."""

    def read(s: Snapshot) -> Iterator[Sample]:
        for series in getattr(s, which):
            yield (series.name, "transmit"), getattr(series, f"tx_{measure}")
            yield (series.name, "receive"), getattr(series, f"rx_{measure}")

    return read


def counts(get: Callable[[Snapshot], dict[str, int] | None]) -> Reader:
    """A {label value: count} dict, sorted; None (an optional part not running) gives no family."""

    def read(s: Snapshot) -> Iterable[Sample] | None:
        found = get(s)
        return None if found is None else [((k,), v) for k, v in sorted(found.items())]

    return read


def build_info(s: Snapshot) -> Iterator[Sample]:
    yield (s.version, s.python_version, s.libpcap_version), 1


def memory(key: str) -> Reader:
    """One figure of the whole agent's memory (None when it was not measured: a replay)."""

    def read(s: Snapshot) -> Iterable[Sample] | None:
        return None if s.memory is None else [((), s.memory[key])]

    return read
