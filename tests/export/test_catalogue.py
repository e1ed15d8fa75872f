"""The metric catalogue: naming conventions hold, and /metrics isolates a failing part."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
from scrape import Samples, family, samples

from agent.base.snapshot import CacheStats, Snapshot
from agent.export.catalogue import CATALOGUE, GROUPS, Family
from agent.export.metrics import Exposition

UNITS = {"s": "_seconds", "By": "_bytes"}


def scrape(exposition: Exposition) -> Samples:
    return samples(exposition.render().decode())


def names(found: Samples) -> set[str]:
    return {name for name, _ in found}


@pytest.mark.parametrize("family", CATALOGUE, ids=lambda f: f.name)
def test_each_family_follows_the_naming_conventions(family: Family) -> None:
    assert family.name.startswith("pktagent_")
    assert family.name.endswith("_total") == (family.kind == "counter")
    assert family.name.endswith("_info") == (family.kind == "info")
    if family.unit in UNITS and family.kind != "counter":
        assert family.name.endswith(UNITS[family.unit])
    assert len(family.attributes) == len(family.labels) or family.otel_kind == "none"
    assert family.help.endswith(".") and "\n" not in family.help
    assert (family.read is None) == (family.kind == "histogram" or family.otel_kind == "none")


def test_names_are_declared_once() -> None:
    assert len({f.name for f in CATALOGUE}) == len(CATALOGUE)
    exported = [f.otel for f in CATALOGUE if f.otel_kind not in ("none", "resource")]
    assert len(set(exported)) == len(exported)


def test_a_failing_snapshot_costs_the_scrape_its_figures_not_its_answer(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> Snapshot:
        raise RuntimeError("pipeline gone")

    collector = Exposition(broken)
    with caplog.at_level(logging.CRITICAL, "pktagent.metrics"):
        first, second = scrape(collector), scrape(collector)
    assert names(first) == {"pktagent_exporter_errors_total"}
    errors = family(second, "pktagent_exporter_errors_total")
    assert errors[(("collector", "snapshot"),)] == 2
    assert sum(errors.values()) == 2
    assert len(errors) == len(GROUPS) + 1


def test_a_failing_part_drops_only_that_part(caplog: pytest.LogCaptureFixture) -> None:
    def boom(s: Snapshot) -> None:
        raise ValueError("bad figure")

    families = [dataclasses.replace(f, read=boom) if f.name == "pktagent_flows_capacity" else f for f in CATALOGUE]
    cube = np.zeros((1, 4, 6, 5))
    snapshot = Snapshot(interfaces=("eth0",), processed=np.array([7]), traffic_packets=cube, traffic_bytes=cube, caches=(CacheStats("dedup", hits=3),))
    collector = Exposition(lambda: snapshot, families)
    with caplog.at_level(logging.CRITICAL, "pktagent.metrics"):
        got = scrape(collector)
    assert not {f.name for f in CATALOGUE if f.group == "flows"} & names(got)  # the whole part: no half-built group
    assert got[("pktagent_exporter_errors_total", (("collector", "flows"),))] == 1
    assert sum(family(got, "pktagent_exporter_errors_total").values()) == 1
    assert family(got, "pktagent_packets_processed_total") == {(("interface", "eth0"),): 7}
    assert family(got, "pktagent_cache_hits_total") == {(("cache", "dedup"),): 3}


def test_optional_parts_appear_only_when_running() -> None:
    plain = scrape(Exposition(lambda: Snapshot(interfaces=("eth0",))))
    assert not {"pktagent_otlp_exports_total", "pktagent_device_store_writes_total"} & names(plain)
    running = scrape(Exposition(lambda: Snapshot(interfaces=("eth0",), otlp_exports={"success": 3, "failure": 1}, store_writes={"ok": 2})))
    assert family(running, "pktagent_otlp_exports_total") == {(("result", "success"),): 3, (("result", "failure"),): 1}
    assert family(running, "pktagent_device_store_writes_total") == {(("result", "ok"),): 2}
