"""Robustness: every capture of tcpdump's own test suite replayed in-process, one file per replay.

The corpus (``../shared/corpus/tcpdump``, BSD licence, from tcpdump's ``tests/`` directory)
holds 830 captures in dozens of link types, many of them malformed on purpose, plus its
LICENSE. Every capture must replay without an exception, and every packet must be accounted
for exactly once:

    captured == processed + duplicate + sampled_out + dropped{stage="queue"} + unsupported_link

with ``processed`` equal to the traffic counted (sampling rate 1, so no scaling). ``captured``
is checked against libpcap read record by record, outside pktagent's batched reader and its
salvage of files cut short.
"""

from __future__ import annotations

import functools
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pcapy
import pytest
from pcapgen import libpcap_records

from agent.base.snapshot import Snapshot
from agent.config import Config
from agent.errors import CaptureError
from agent.runtime.replay import replay_files
from agent.stages.decode import supported

CAPTURES = 830  # 785 .pcap and 45 .pcapng files
NOT_CAPTURES = {"LICENSE"}
# A replay of a small file costs little CPU but ends only on the pipeline thread's next queue
# poll, so the files are replayed a few at a time to keep the module well under a minute.
PARALLEL = 8


@dataclass
class Outcome:
    path: Path
    snapshot: Snapshot | None = None
    error: Exception | None = None


def _replay(path: Path) -> Outcome:
    try:
        return Outcome(path, snapshot=replay_files(Config(), [path]))
    except Exception as e:  # every failure is collected here and judged by the tests
        return Outcome(path, error=e)


def libpcap_count(path: Path) -> tuple[int, int]:
    """(records libpcap reads one at a time up to the end or the first damage, link type)."""
    return len(libpcap_records(path)), int(pcapy.open_offline(str(path)).datalink())


@functools.cache
def _replay_all(corpus: Path) -> tuple[Outcome, ...]:
    paths = sorted(p for p in corpus.iterdir() if p.is_file())
    with ThreadPoolExecutor(PARALLEL) as pool:
        return tuple(pool.map(_replay, paths))


@pytest.fixture
def outcomes(corpus: Path) -> tuple[Outcome, ...]:
    """Every file of the corpus replayed, once for the whole module."""
    return _replay_all(corpus)


def test_only_the_licence_is_refused(outcomes: tuple[Outcome, ...]) -> None:
    refused = {o.path.name: o.error for o in outcomes if o.error is not None}
    crashed = {name: repr(e) for name, e in refused.items() if not isinstance(e, CaptureError)}
    assert crashed == {}
    assert set(refused) == NOT_CAPTURES
    for name, error in refused.items():
        assert f"{name} is not a capture file" in str(error)
    assert sum(o.snapshot is not None for o in outcomes) == CAPTURES


def test_every_packet_is_accounted_for(outcomes: tuple[Outcome, ...]) -> None:
    broken: list[tuple[object, ...]] = []
    for o in outcomes:
        s = o.snapshot
        if s is None:
            continue
        assert s.interfaces == (o.path.name,)
        left = s.captured
        right = s.processed + s.duplicate + s.sampled_out + s.dropped[:, 2] + s.unsupported_link
        if not np.array_equal(left, right) or s.processed.sum() != s.traffic_packets.sum():
            broken.append((o.path.name, left.tolist(), right.tolist(), s.processed.tolist(), float(s.traffic_packets.sum())))
        # Every packet carries at most one decode error, and only decoded packets carry one.
        if s.decode_errors.sum() > s.captured.sum() - s.unsupported_link.sum():
            broken.append((o.path.name, "decode errors", int(s.decode_errors.sum())))
        # Nothing was sampled out (rate 1) and a replay waits for room instead of dropping.
        if s.sampled_out.any() or s.dropped.any():
            broken.append((o.path.name, "sampled out or dropped", s.sampled_out.tolist(), s.dropped.tolist()))
    assert broken == []


def test_captured_matches_libpcap_record_by_record(outcomes: tuple[Outcome, ...]) -> None:
    differ = []
    total = 0
    for o in outcomes:
        if o.snapshot is None:
            continue
        count, _ = libpcap_count(o.path)
        total += count
        if int(o.snapshot.captured[0]) != count:
            differ.append((o.path.name, int(o.snapshot.captured[0]), count))
    assert differ == []
    assert total > 10_000


def test_unsupported_link_types_are_counted_not_decoded(outcomes: tuple[Outcome, ...]) -> None:
    link_types: Counter[int] = Counter()
    wrong: list[tuple[object, ...]] = []
    for o in outcomes:
        s = o.snapshot
        if s is None:
            continue
        count, linktype = libpcap_count(o.path)
        if supported(linktype):
            if s.unsupported_link[0] != 0:
                wrong.append((o.path.name, linktype, "counted as unsupported"))
            continue
        link_types[linktype] += 1
        if not (s.unsupported_link[0] == count == s.captured[0] and s.processed[0] == 0 and s.traffic_packets.sum() == 0):
            wrong.append((o.path.name, linktype, int(s.unsupported_link[0]), count))
    assert wrong == []
    # The corpus is mostly Ethernet, but radiotap, 802.11, Frame Relay, FDDI... are there too;
    # PPP, PPP_SERIAL and Cisco HDLC are decoded (test_tshark_encap checks them against tshark).
    assert sum(link_types.values()) > 200
    assert len(link_types) > 20
    assert {127, 105, 107} <= set(link_types)
    assert not {9, 50, 104} & set(link_types)
