"""Small helpers the tests share for talking to an agent: a free port, and an exposition read into numbers.

Samples are keyed one way everywhere: ``(name, labels)``, the labels as sorted ``(name, value)``
pairs, so ``samples(text)[("pktagent_flows_active", (("transport", "tcp"),))]`` reads as it prints.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    """Status and body of a plain GET; status 0 while nothing listens yet."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def samples(text: str) -> Samples:
    """Every sample of a Prometheus exposition, keyed by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def family(found: Samples, name: str) -> dict[Labels, float]:
    """The samples of one name: labels -> value."""
    return {labels: v for (n, labels), v in found.items() if n == name}
