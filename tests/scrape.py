"""Small helpers the tests share for talking to an agent: a free port, and an exposition read into numbers.

Samples are keyed one way everywhere: ``(name, labels)``, the labels as sorted ``(name, value)``
pairs, so ``samples(text)[("pktagent_flows_active", (("transport", "tcp"),))]`` reads as it prints.
"""

from __future__ import annotations

import socket

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def samples(text: str) -> Samples:
    """Every sample of a Prometheus exposition, keyed by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def family(found: Samples, name: str) -> dict[Labels, float]:
    """The samples of one name: labels -> value."""
    return {labels: v for (n, labels), v in found.items() if n == name}
