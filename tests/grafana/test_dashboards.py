"""The dashboards as files: generated from the mixin, and built the way the best community dashboards are."""

from __future__ import annotations

import doctest
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import grafana_exprs as gx
import pktagent_mixin
import pytest
import yaml
from pktagent_mixin import config, dashboards, grafana, promql, rules

EXPECTED = {
    "pktagent-fleet.json": (config.UID_FLEET, "pktagent / Fleet overview"),
    "pktagent-agent.json": (config.UID_AGENT, "pktagent / Agent detail"),
    "pktagent-traffic.json": (config.UID_TRAFFIC, "pktagent / Traffic"),
}
PANEL_TYPES = {"timeseries", "stat", "table", "gauge"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
DASHBOARDS = gx.load_dashboards()


def test_committed_files_are_the_generators_output() -> None:
    out = subprocess.run([sys.executable, str(gx.GRAFANA / "generate.py"), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert set(DASHBOARDS) == set(EXPECTED)


@pytest.mark.parametrize("module", [pktagent_mixin, grafana, promql, rules])
def test_mixin_examples(module: Any) -> None:
    result = doctest.testmod(module)
    assert result.failed == 0


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_identity_and_schema(name: str) -> None:
    d = DASHBOARDS[name]
    assert (d["uid"], d["title"]) == EXPECTED[name]
    assert d["schemaVersion"] == 39
    assert "__inputs" not in d and "__requires" not in d
    assert d["description"] and config.TAG in d["tags"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_variables(name: str) -> None:
    v = {x["name"]: x for x in DASHBOARDS[name]["templating"]["list"]}
    assert (v["datasource"]["type"], v["datasource"]["query"]) == ("datasource", "prometheus")
    assert v["job"]["query"] == "label_values(pktagent_build_info, job)"
    # Site and role: the target labels the Ansible role's file_sd writes; each narrows the next.
    assert v["site"]["query"] == 'label_values(pktagent_build_info{job=~"$job"}, site)'
    assert v["role"]["query"] == 'label_values(pktagent_build_info{job=~"$job", site=~"$site"}, role)'
    assert v["instance"]["query"] == 'label_values(pktagent_build_info{job=~"$job", site=~"$site", role=~"$role"}, instance)'
    for var in v.values():
        if var["type"] == "query":
            assert var["datasource"] == DATASOURCE
            if var["includeAll"] and var["name"] in ("site", "role"):
                assert var["allValue"] == ".*", "All must match targets without the label too"
            elif var["includeAll"]:
                assert var["allValue"] == ".+", "All must match agents that are down too"
    # The fleet and traffic views show every agent by default; the detail view one at a time.
    assert v["instance"]["multi"] is (name != "pktagent-agent.json")
    used = set().union(*(gx.variables_used(t["expr"]) for _, t in gx.targets(DASHBOARDS[name])))
    assert used - {"__rate_interval", "__range"} <= set(v), "a query uses a variable the dashboard does not define"


def _datasource_refs(node: Any, path: str = "") -> list[tuple[str, Any]]:
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "datasource":
                found.append((f"{path}.{k}", v))
            found += _datasource_refs(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _datasource_refs(v, f"{path}[{i}]")
    return found


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_no_hard_coded_datasource(name: str) -> None:
    refs = _datasource_refs(DASHBOARDS[name])
    assert refs
    assert [p for p, ref in refs if ref != DATASOURCE] == []


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_panel_has_a_type_unit_description_and_queries(name: str) -> None:
    titles = []
    for p in gx.panels(DASHBOARDS[name]):
        titles.append(p["title"])
        assert p["type"] in PANEL_TYPES, p["title"]
        assert p["datasource"] == DATASOURCE, p["title"]
        assert p["fieldConfig"]["defaults"].get("unit"), f"{p['title']}: no unit"
        description = p.get("description", "")
        assert description and "\n" not in description and len(description) <= 160, f"{p['title']}: description must be one line"
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DATASOURCE and t["expr"] and t["refId"], p["title"]
    assert len(titles) == len(set(titles)), "panel titles repeat"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_rates_use_the_rate_interval(name: str) -> None:
    for p, t in gx.targets(DASHBOARDS[name]):
        for fn, window in re.findall(r"\b(rate|irate|increase|delta|deriv)\(\s*[^\[]*\[([^\]]*)\]", t["expr"]):
            allowed = {"$__rate_interval"} | ({"$__range"} if fn == "increase" and t.get("instant") else set())
            assert window in allowed, f"{p['title']}: {fn}(...[{window}])"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_layout(name: str) -> None:
    cells: dict[tuple[int, int], str] = {}
    ids = []
    for p in DASHBOARDS[name]["panels"]:
        ids.append(p["id"])
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
    assert len(ids) == len(set(ids))


def _reachable(link: dict[str, Any], target: dict[str, Any]) -> bool:
    if link["type"] == "dashboards":
        return set(link["tags"]) <= set(target["tags"])
    return f"/d/{target['uid']}" in link.get("url", "")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_links_reach_the_other_dashboards(name: str) -> None:
    d = DASHBOARDS[name]
    for other_name, other in DASHBOARDS.items():
        if other_name != name:
            assert any(_reachable(link, other) for link in d["links"]), f"{name} has no link to {other_name}"
            assert all(link.get("keepTime") and link.get("includeVars") for link in d["links"])


def test_fleet_rows_open_the_agent_detail() -> None:
    for p in gx.panels(DASHBOARDS["pktagent-fleet.json"]):
        if p["type"] == "table":
            links = [prop for o in p["fieldConfig"]["overrides"] for prop in o["properties"] if prop["id"] == "links"]
            assert any(f"/d/{config.UID_AGENT}/" in link["url"] and "var-instance=" in link["url"] for prop in links for link in prop["value"]), p["title"]


def test_fleet_tables_open_worst_first() -> None:
    tables = [p for p in gx.panels(DASHBOARDS["pktagent-fleet.json"]) if p["type"] == "table"]
    by_title = {p["title"]: p["options"]["sortBy"] for p in tables}
    assert by_title["Agents, worst first"] == [{"displayName": "Drop ratio", "desc": True}]
    assert by_title["Captures, down first"] == [{"displayName": "Capture", "desc": False}]


def test_panels_cover_the_issue() -> None:
    """The figures issue 6 asks each dashboard to show, found by the metric or recorded series they query."""
    wanted = {
        "pktagent-fleet.json": [
            "up",
            "pktagent_capture_up",
            "pktagent_packets_captured_total",
            "pktagent_traffic_bytes_total",
            "pktagent_packets_dropped_total",
            "pktagent_packets_duplicate_total",
            "pktagent_processing_busy_seconds_total",
            "pktagent_processing_workers",
            rules.DROP_RATIO,
            rules.UTILISATION,
        ],
        "pktagent-agent.json": [
            "pktagent_batch_processing_seconds_bucket",
            "pktagent_batch_size_packets_bucket",
            "pktagent_queue_packets",
            "pktagent_queue_capacity_packets",
            "pktagent_packets_dropped_total",
            "pktagent_packets_duplicate_total",
            "pktagent_packets_sampled_out_total",
            "pktagent_decode_errors_total",
            "pktagent_flows_active",
            "pktagent_flows_capacity",
            "pktagent_flows_ended_total",
            "pktagent_cache_hits_total",
            "pktagent_cache_misses_total",
            "pktagent_last_packet_timestamp_seconds",
            "pktagent_processing_workers",
            "pktagent_label_series_dropped_total",
            "pktagent_learn_packets_total",
            "pktagent_devices_known",
        ],
        "pktagent-traffic.json": [
            "pktagent_traffic_bytes_total",
            "pktagent_traffic_packets_total",
            "pktagent_device_bytes_total",
            "pktagent_device_packets_total",
            "pktagent_remote_bytes_total",
            "pktagent_devices_known",
        ],
    }
    for name, metrics in wanted.items():
        used = set().union(*(gx.metric_names(t["expr"]) for _, t in gx.targets(DASHBOARDS[name])))
        assert set(metrics) <= used, f"{name} lacks {set(metrics) - used}"
    traffic = " ".join(t["expr"] for _, t in gx.targets(DASHBOARDS["pktagent-traffic.json"]))
    for label in ("direction", "network", "transport"):
        assert f"sum by ({label})" in traffic
    assert "sum by (instance, device, direction)" in traffic and "sum by (domain, direction)" in traffic
    agent = " ".join(t["expr"] for _, t in gx.targets(DASHBOARDS["pktagent-agent.json"]))
    for q in ("0.5", "0.9", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(pktagent_batch_processing_seconds_bucket" in agent
    assert "layer" in agent and "by (reason)" in agent and "by (cache)" in agent
    assert "by (label)" in agent and "by (result)" in agent


def test_name_panels_ignore_the_interface_variable() -> None:
    """Device and domain counters have no interface label: a matcher on it would select nothing."""
    for name, d in DASHBOARDS.items():
        for p, t in gx.targets(d):
            names = gx.metric_names(t["expr"])
            if names & {"pktagent_device_bytes_total", "pktagent_device_packets_total", "pktagent_remote_bytes_total", "pktagent_devices_known"}:
                assert "interface" not in t["expr"], f"{name}: {p['title']}"


def test_utilisation_is_per_worker() -> None:
    """Wherever busy time is shown, it is divided by the agent's workers: --workers N agents are judged per worker."""
    exprs = [(f"{n}: {p['title']}", t["expr"]) for n, d in DASHBOARDS.items() for p, t in gx.targets(d)]
    exprs += [(r.get("record") or r["alert"], r["expr"]) for r in gx.rules()]
    busy = [(where, e) for where, e in exprs if "pktagent_processing_busy_seconds_total" in e]
    assert busy
    for where, e in busy:
        per_agent = (
            "/ on (job, instance) max by (job, instance) (pktagent_processing_workers",
            "/ on (job, instance, site, role) max by (job, instance, site, role) (pktagent_processing_workers",
        )
        assert any(p in e for p in per_agent) or "/ max(pktagent_processing_workers{" in e, where
    shown = {where for where, e in exprs if rules.UTILISATION in e or "pktagent_processing_busy_seconds_total" in e}
    assert {"PktagentNoHeadroom", "pktagent-fleet.json: Agents, worst first", "pktagent-agent.json: Utilisation and headroom"} <= shown


def test_thresholds_drawn_are_the_alerts() -> None:
    """A threshold line on a panel is the alert's own figure, from the same setting."""
    lines = {
        p["title"]: p["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"]
        for d in DASHBOARDS.values()
        for p in gx.panels(d)
        if p["type"] == "timeseries" and p["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"
    }
    assert lines["Batch processing time"] == config.P99_BUDGET_SECONDS
    assert lines["Drop ratio by stage"] == config.DROP_RATIO
    assert lines["Decode error ratio"] == config.DECODE_ERROR_RATIO
    assert lines[f"Utilisation, top {config.TOPK}"] == config.UTILISATION
    assert lines["Label series dropped"] == config.LABEL_CHURN_PER_MINUTE


def test_metric_name_parser() -> None:
    """The parser the metric-name checks rely on, on every shape of expression the mixin writes."""
    assert gx.metric_names('count(up{job=~"$job"} == 0) or vector(0)') == {"up"}
    assert gx.metric_names('time() - (pktagent_last_packet_timestamp_seconds{a="b"} > 0)') == {"pktagent_last_packet_timestamp_seconds"}
    assert gx.metric_names('histogram_quantile(0.99, sum by (le) (rate(h_bucket{job=~"$job"}[$__rate_interval])))') == {"h_bucket"}
    assert gx.metric_names("topk(10, sum by (job, instance) (rate(x_total[1m])) * 8)") == {"x_total"}
    assert gx.metric_names("a / on (job) group_left () (b + c) unless on (job) d == 0") == {"a", "b", "c", "d"}
    assert gx.metric_names("rate(x[6h] offset 10m) > 1e-3") == {"x"}
    every = set()
    for d in DASHBOARDS.values():
        for _, t in gx.targets(d):
            every |= gx.metric_names(t["expr"])
    assert every and all(n == "up" or n.startswith("pktagent_") or ":pktagent_" in n for n in every), every


def test_provisioning() -> None:
    base = gx.GRAFANA / "provisioning"
    dash = yaml.safe_load((base / "dashboards" / "pktagent.yml").read_text())
    assert dash["apiVersion"] == 1
    (provider,) = dash["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
    ds = yaml.safe_load((base / "datasources" / "prometheus.example.yml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"].startswith("http")
    assert source["jsonData"]["timeInterval"], "$__rate_interval is built on the scrape interval"
    assert "uid" not in source, "the dashboards find the datasource through their variable, by type"


def test_readme_describes_every_dashboard() -> None:
    readme = (gx.GRAFANA / "README.md").read_text()
    for _, title in EXPECTED.values():
        assert title in readme
    assert set(dashboards.DASHBOARDS) == set(EXPECTED)


def test_the_site_labels_are_the_ones_the_ansible_role_writes() -> None:
    template = (Path(__file__).resolve().parents[2] / "ansible" / "roles" / "pktagent" / "templates" / "file_sd.json.j2").read_text()
    assert "{'site':" in template and "'role':" in template


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_agent_query_filters_by_site_and_role(name: str) -> None:
    """A panel that selects agents by job and instance also selects by site and role, or the Site variable would not narrow it."""
    for panel, t in gx.targets(DASHBOARDS[name]):
        for selector in re.findall(r"\{[^{}]*\}", t["expr"]):
            if 'instance=~"$instance"' in selector:
                assert 'site=~"$site"' in selector and 'role=~"$role"' in selector, (panel["title"], selector)


def test_recorded_series_keep_site_and_role() -> None:
    """The dashboards filter recorded series by site: the recording rules must keep the label."""
    for rule in gx.rules():
        if "record" in rule and "sum by (" in rule["expr"]:
            assert "site, role" in rule["expr"], rule["record"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_annotations_mark_restarts_and_version_changes(name: str) -> None:
    found = {a["name"]: a for a in DASHBOARDS[name]["annotations"]["list"]}
    assert set(found) == {"Agent restarts", "Version changes"}
    for a in found.values():
        assert a["datasource"] == DATASOURCE and a["enable"] is True
        assert gx.variables_used(a["expr"]) == {"job", "site", "role", "instance"}
    assert "process_start_time_seconds" in found["Agent restarts"]["expr"]
    assert "{{version}}" in found["Version changes"]["titleFormat"]
