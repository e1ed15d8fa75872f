"""A real Prometheus scraping real agents: every panel query and every rule expression, evaluated through its HTTP API.

The stack (module-scoped, about 20 s to build):

* ``baseline``: ``pktagent run`` replaying ordinary mixed traffic in a loop, with devices named by
  DHCP and ARP (laptop) and by the inventory (router), and remote domains named by DNS answers;
* ``conditions``: replaying a capture with more flows than its 16-flow table, duplicates and
  malformed headers, DNS answers cut short and more name packets than it reads per batch,
  sampling at 0.5 (evictions, decode errors, duplicates, sampled-out, malformed and skipped
  name packets);
* ``labels``: replaying twice as many named devices and domains as its label budgets; its first
  re-ranking, a minute after it starts, drops a budget's worth of series of each label (label
  churn). The stack waits for it: most of its minute and a half is this wait;
* ``live`` (as root, with tcpreplay): capturing on a veth inside a network namespace with a
  one-packet queue, batches of one and the smallest kernel buffer, while tcpreplay sends a burst
  at top speed from the other namespace (kernel and queue drops);
* ``down``: a target nothing listens on;
* Prometheus on loopback, scraping and evaluating every second, with the mixin's rules.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grafana_captures as captures
import grafana_exprs as gx
import pytest
from conftest import IN_CI, need, need_root, need_tool
from grafana_stack import JOB, Prometheus, Stack, finite, wait_until
from pktagent_mixin import config as cfg
from pktagent_mixin import rules as r

REPLAYED = ("baseline", "conditions", "labels")
TOP = cfg.TOPK
RATE_INTERVAL = "4s"  # Grafana's $__rate_interval for a 1 s scrape interval: 4 x scrape interval
LIVE_CONFIG = {"pipeline": {"batch_size": 1, "queue_capacity_packets": 1}, "capture": {"buffer_bytes": 65536}}
BURST_LOOPS = 10  # 10 x 20,000 frames at top speed
BASELINE_CONFIG = {
    "flows": {"idle_timeout_seconds": 0.5, "linger_seconds": 0.1},
    "devices": {"inventory": [{"name": "router", "addresses": [captures.ROUTER]}]},
}
CONDITIONS_CONFIG = {"flows": {"max_flows": 16}, "pipeline": {"sampling_rate": 0.5}, "devices": {"learn_per_batch": 2}}
LABELS_CONFIG = {
    "devices": {
        "series_budget": captures.LABEL_BUDGET,
        "domain_series_budget": captures.LABEL_BUDGET,
        "inventory": [{"name": name, "addresses": [address]} for name, address in captures.label_hosts()],
    }
}
RERANK_SECONDS = 60  # the agent re-ranks device and domain series once a minute of packet time (agent/naming/usage.py)


def live_possible() -> str:
    """Why the live part cannot run here ("" when it can)."""
    if os.geteuid() != 0:
        return "root (network namespaces and live capture)"
    for tool in ("ip", "tcpreplay"):
        if shutil.which(tool) is None:
            return f"the {tool} command"
    return ""


@dataclass
class Live:
    stack: Stack
    prom: Prometheus
    agents: tuple[str, ...]
    start: float
    live_missing: str
    burst: str = ""
    results: dict[tuple[str, str, str], dict[str, list[dict[str, Any]]]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    need_tool("prometheus")
    work = tmp_path_factory.mktemp("grafana-stack")
    pcaps = captures.write_all(work)
    missing = live_possible()
    if missing and IN_CI:
        pytest.fail(f"missing in CI: {missing}")
    pair = None
    with Stack(work) as stack:
        try:
            # First, as everything else waits for its first re-ranking, a minute after it starts.
            stack.agent("labels", pcaps["labels"], LABELS_CONFIG)
            stack.agent("baseline", pcaps["baseline"], BASELINE_CONFIG)
            stack.agent("conditions", pcaps["conditions"], CONDITIONS_CONFIG)
            stack.dead_target("down")
            agents = REPLAYED
            if not missing:
                from netns import VethPair

                pair = VethPair.create(f"gf{os.getpid()}")
                stack.live_agent("live", pair, LIVE_CONFIG)
                agents = (*REPLAYED, "live")
            prom = stack.prometheus(gx.RULE_FILES)
            ctx = Live(stack, prom, agents, time.time(), missing)

            def scrapes(instance: str) -> float:
                return prom.value(f'count_over_time(up{{job="{JOB}", instance="{instance}"}}[1m])') or 0

            def every_agent_up() -> bool:
                stack.check_alive()
                return all(prom.value(f'up{{instance="{a}"}}') == 1 for a in agents) and scrapes("down") >= 2

            wait_until("every agent to be scraped", every_agent_up, timeout=30)
            if pair is not None:
                out = subprocess.run(
                    pair.in_sender("tcpreplay", "-q", "--topspeed", f"--loop={BURST_LOOPS}", "-i", pair.tx, str(pcaps["burst"])),
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert out.returncode == 0, out.stderr
                ctx.burst = out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""

                def drops_seen() -> bool:
                    got = prom.query('pktagent_packets_dropped_total{instance="live", stage=~"kernel|queue"} > 0')
                    return len(got) == 2

                wait_until("kernel and queue drops of the live agent in Prometheus", drops_seen, timeout=20)

            def churned() -> bool:
                stack.check_alive()
                return len(prom.query('pktagent_label_series_dropped_total{instance="labels"} > 0')) == 2

            wait_until("the labels agent's first re-ranking to drop device and domain series", churned, timeout=RERANK_SECONDS + 40)
            mark = time.time()

            def enough_data() -> bool:
                stack.check_alive()
                recorded = {s["metric"]["instance"] for s in prom.query(r.UTILISATION)}
                return recorded >= set(agents) and all(scrapes(a) >= 8 for a in agents) and time.time() - mark >= 3

            wait_until("8 scrapes of every agent and their recorded series", enough_data, timeout=40)
            ctx.results = evaluate_panels(ctx)
            yield ctx
        finally:
            stack.close()
            if pair is not None:
                pair.delete()


def grafana_variables(ctx: Live, instance: str, end: float) -> dict[str, str]:
    return {
        "job": JOB,
        "site": ".*",  # All: the stack's targets carry no site or role label, and All must still match them
        "role": ".*",
        "instance": instance,
        "interface": ".+",
        "__rate_interval": RATE_INTERVAL,
        "__interval": "1s",
        "__range": f"{max(1, int(end - ctx.start))}s",
    }


def evaluate_panels(ctx: Live) -> dict[tuple[str, str, str], dict[str, list[dict[str, Any]]]]:
    """Every target of every panel, as Grafana would ask: range queries for graphs, instant ones for tables.

    A dashboard whose instance variable takes several values is asked with All (``.+``); the
    agent detail, one agent at a time, is asked once per agent.
    """
    end = time.time()
    out: dict[tuple[str, str, str], dict[str, list[dict[str, Any]]]] = {}
    for name, dash in gx.load_dashboards().items():
        instance_var = next(v for v in dash["templating"]["list"] if v["name"] == "instance")
        choices = [".+"] if instance_var["multi"] else list(ctx.agents)
        for panel, target in gx.targets(dash):
            key = (name, panel["title"], target["refId"])
            out[key] = {}
            for choice in choices:
                expr = gx.substitute(target["expr"], grafana_variables(ctx, choice, end))
                assert "$" not in expr, expr
                if target.get("instant"):
                    out[key][choice] = ctx.prom.query(expr, at=end)
                else:
                    out[key][choice] = ctx.prom.query_range(expr, ctx.start, end, 1.0)
    return out


def panel(ctx: Live, dashboard: str, title: str, ref: str = "A", instance: str = ".+") -> list[dict[str, Any]]:
    return ctx.results[(dashboard, title, ref)][instance]


def nonzero_by(series: list[dict[str, Any]], label: str) -> set[str]:
    """Values of ``label`` on the series that show a finite value other than 0."""
    return {s["metric"].get(label, "") for s in series if any(v != 0 for v in finite([s]))}


# -- the tests ----------------------------------------------------------------------------------


def test_variables_resolve(live: Live) -> None:
    assert JOB in live.prom.label_values("job", "pktagent_build_info")
    assert set(live.prom.label_values("instance", f'pktagent_build_info{{job=~"{JOB}"}}')) == set(live.agents)
    interfaces = set(live.prom.label_values("interface", f'pktagent_capture_up{{job=~"{JOB}", instance=~".+"}}'))
    assert {"baseline.pcap", "conditions.pcap"} <= interfaces


def test_every_panel_query_returns_data(live: Live) -> None:
    empty = [f"{d} / {t} ({ref})" for (d, t, ref), by in live.results.items() if not any(finite(s) for s in by.values())]
    assert empty == [], "panel queries with no data: " + "; ".join(empty)


def test_table_queries_merge_on_the_same_labels(live: Live) -> None:
    """Grafana's merge joins a table's queries on their labels: every query of a table must return the same label names."""
    for name, dash in gx.load_dashboards().items():
        for p in gx.panels(dash):
            if p["type"] != "table":
                continue
            shapes = {frozenset(s["metric"]) for t in p["targets"] for s in live.results[(name, p["title"], t["refId"])][".+"]}
            assert len(shapes) == 1, f"{p['title']}: {sorted(map(sorted, shapes))}"
            assert "__name__" not in next(iter(shapes))


# Panels whose every value may be 0 in this stack: nothing it runs makes them move.
MAY_STAY_ZERO = {
    ("pktagent-fleet.json", "Captures down"),
    ("pktagent-agent.json", "Exporter errors"),
    ("pktagent-agent.json", "Cache evictions"),
}


def test_every_panel_shows_something_move(live: Live) -> None:
    """Beyond returning data, each panel has a non-zero figure somewhere: the fixtures exercise what it shows."""
    need(not live.live_missing, live.live_missing)
    shown: dict[tuple[str, str], list[float]] = {}
    for (d, t, _), by in live.results.items():
        shown.setdefault((d, t), []).extend(v for s in by.values() for v in finite(s))
    flat = [f"{d} / {t}" for (d, t), vs in shown.items() if (d, t) not in MAY_STAY_ZERO and not any(v != 0 for v in vs)]
    assert flat == []


def test_condition_panels_show_their_conditions(live: Live) -> None:
    agent = "pktagent-agent.json"
    assert nonzero_by(panel(live, agent, "Flow endings by reason", instance="conditions"), "reason") >= {"evicted"}
    assert nonzero_by(panel(live, agent, "Flow endings by reason", instance="baseline"), "reason") >= {"fin", "rst", "idle"}
    assert nonzero_by(panel(live, agent, "Decode errors by layer", instance="conditions"), "layer") == {"ipv4", "tcp"}
    assert nonzero_by(panel(live, agent, "Decode errors by layer", instance="conditions"), "reason") == {"truncated", "bad_header_length"}
    assert nonzero_by(panel(live, agent, "Decode errors by layer", instance="baseline"), "layer") == set()
    assert nonzero_by(panel(live, agent, "Sampled out", instance="conditions"), "interface") == {"conditions.pcap"}
    assert nonzero_by(panel(live, agent, "Duplicates", instance="conditions"), "interface") == {"conditions.pcap"}
    assert max(finite(panel(live, agent, "Flow table fill", instance="conditions"))) == 1.0  # 16 of 16
    fleet = "pktagent-fleet.json"
    assert finite(panel(live, fleet, "Agents down"))[-1] == 1.0
    assert finite(panel(live, fleet, "Agents up"))[-1] == len(live.agents)
    traffic = "pktagent-traffic.json"
    assert nonzero_by(panel(live, traffic, "Bits/s by direction"), "direction") >= {"inbound", "outbound", "internal", "external", "none"}
    assert nonzero_by(panel(live, traffic, "Packets/s by network"), "network") >= {"ipv4", "ipv6", "arp"}
    assert nonzero_by(panel(live, traffic, "Bits/s by transport"), "transport") >= {"tcp", "udp", "icmp", "icmpv6", "other", "none"}


def test_name_panels_show_devices_domains_and_churn(live: Live) -> None:
    """Devices named by DHCP, ARP and the inventory; domains named by DNS; name packets by result; series dropped at the budget."""
    traffic, agent = "pktagent-traffic.json", "pktagent-agent.json"
    top = f"top {TOP}"
    devices = panel(live, traffic, f"Bits/s by device, {top}")
    assert nonzero_by([s for s in devices if s["metric"]["instance"] == "baseline"], "device") >= {captures.LAPTOP, "unnamed"}
    assert {(s["metric"]["device"], s["metric"]["direction"]) for s in devices if s["metric"]["instance"] == "baseline"} >= {
        (captures.LAPTOP, "transmit"),
        (captures.LAPTOP, "receive"),
    }
    assert nonzero_by([s for s in devices if s["metric"]["instance"] == "labels"], "device") >= {"other"}
    assert nonzero_by(panel(live, traffic, f"Packets/s by device, {top}"), "device") >= {captures.LAPTOP, "unnamed", "other"}
    assert nonzero_by(panel(live, traffic, f"Bits/s by remote domain, {top}"), "domain") >= {"example.com", "example.org", "unknown", "other"}
    table = {s["metric"]["domain"]: float(s["value"][1]) for s in panel(live, traffic, "Remote domains, bytes in range")}
    assert table["example.com"] > 0 and table["example.org"] > 0
    known = finite(panel(live, traffic, "Devices known"))[-1]
    assert known == 3 + 2 * captures.LABEL_BUDGET  # baseline: laptop, router and the router's own MAC; labels: its inventory

    # Exactly the names each agent learned or was given, on the raw series.
    def named(metric: str, label: str, instance: str) -> set[str]:
        return {s["metric"][label] for s in live.prom.query(f'sum by ({label}) ({metric}{{instance="{instance}"}}) > 0')}

    assert named("pktagent_device_bytes_total", "device", "baseline") == {captures.LAPTOP, "router", "unnamed"}
    assert named("pktagent_remote_bytes_total", "domain", "baseline") == {"example.com", "example.org", "unknown"}
    assert named("pktagent_device_bytes_total", "device", "conditions") == {"unnamed"}

    assert nonzero_by(panel(live, agent, "Name-learning packets", instance="baseline"), "result") == {"decoded"}
    assert nonzero_by(panel(live, agent, "Name-learning packets", instance="conditions"), "result") == {"decoded", "malformed", "skipped"}
    assert nonzero_by(panel(live, agent, "Label series dropped", instance="labels"), "label") == {"device", "domain"}
    assert nonzero_by(panel(live, agent, "Label series dropped", instance="baseline"), "label") == set()
    dropped = {s["metric"]["label"]: float(s["value"][1]) for s in live.prom.query('pktagent_label_series_dropped_total{instance="labels"}')}
    assert dropped == {"device": captures.LABEL_BUDGET, "domain": captures.LABEL_BUDGET}  # every first-half name outranked, once
    held = panel(live, agent, "Devices and label series", "B", instance="labels")
    assert max(finite(held)) == captures.LABEL_BUDGET + 2  # the budget, plus other and unnamed
    assert finite(panel(live, agent, "Workers", instance="baseline"))[-1] == 1


def test_live_capture_drops_show_in_the_panels(live: Live) -> None:
    """A live agent that cannot keep up loses packets in the kernel and at its queue, and the panels say so."""
    need_root()
    need_tool("tcpreplay")
    need(not live.live_missing, live.live_missing)
    agent = "pktagent-agent.json"
    assert nonzero_by(panel(live, agent, "Drops by stage", instance="live"), "stage") == {"kernel", "queue"}
    assert nonzero_by(panel(live, agent, "Drop ratio by stage", instance="live"), "stage") == {"kernel", "queue"}
    assert nonzero_by(panel(live, agent, "Packets by outcome", "F", instance="live"), "interface") == {"pkt-rx"}
    fleet = {(s["metric"]["instance"], s["metric"]["stage"]) for s in panel(live, "pktagent-fleet.json", "Drop ratio by stage, top 10") if any(finite([s]))}
    assert {("live", "kernel"), ("live", "queue")} <= fleet
    recorded = live.prom.query(f'{r.DROP_RATIO}{{instance="live"}} > 0')
    assert {s["metric"]["stage"] for s in recorded} == {"kernel", "queue"}
    totals = {s["metric"]["stage"]: float(s["value"][1]) for s in live.prom.query('pktagent_packets_dropped_total{instance="live"}')}
    captured = live.prom.value('pktagent_packets_captured_total{instance="live"}') or 0
    sent = 20_000 * BURST_LOOPS
    print(f"\nlive burst: {live.burst}; captured {captured:.0f}, dropped {totals} of {sent} sent")
    # Every frame sent is either captured or lost in the kernel (a veth has no interface drops).
    assert captured + totals["kernel"] == sent
    assert totals["kernel"] > 0 and totals["queue"] > 0


def test_every_rule_expression_evaluates(live: Live) -> None:
    for rule in gx.rules():
        live.prom.query(rule["expr"])  # raises PromError on a parse or evaluation error

    def evaluated() -> bool:
        groups = live.prom.api("rules")["groups"]
        return all(rule["lastEvaluation"] > "2000" for g in groups for rule in g["rules"])

    wait_until("every rule evaluated once", evaluated, timeout=10)
    bad = [
        f"{rule['name']}: {rule.get('lastError')}"
        for g in live.prom.api("rules")["groups"]
        for rule in g["rules"]
        if rule["health"] != "ok" or rule.get("lastError")
    ]
    assert bad == []
    loaded = {rule["name"] for g in live.prom.api("rules")["groups"] for rule in g["rules"]}
    assert loaded == {rule.get("record") or rule.get("alert") for rule in gx.rules()}


def test_alert_expressions_pick_the_troubled_agents(live: Live) -> None:
    """Right now, without their "for": the down target is down, the conditions agent's table is full
    and a sixth of its packets are malformed, the labels agent has dropped a budget's worth of
    series of each label, the live agent drops; the baseline agent is in none."""
    picked = {a["alert"]: {s["metric"].get("instance") for s in live.prom.query(a["expr"])} for a in gx.alerts()}
    assert picked["PktagentDown"] == {"down"}
    assert picked["PktagentFlowTableNearCapacity"] == {"conditions"}
    assert picked["PktagentDecodeErrorsHigh"] == {"conditions"}
    assert picked["PktagentNotScraped"] == set()
    assert picked["PktagentLabelSeriesChurn"] == {"labels"}
    if not live.live_missing:
        assert "live" in picked["PktagentPacketsDropped"]
    assert [name for name, instances in picked.items() if "baseline" in instances] == []


def test_every_metric_name_exists(live: Live) -> None:
    """Names in panels and rules are the agent's (as scraped), recorded by the rules, or Prometheus's own ``up``."""
    exposed = set().union(*(gx.exposition_names(live.stack.scrape(a)) for a in live.agents))
    known = exposed | gx.recorded_names() | {"up"}
    in_prometheus = set(live.prom.label_values("__name__", '{job="pktagent"}'))
    used: dict[str, set[str]] = {}
    for name, dash in gx.load_dashboards().items():
        for p, t in gx.targets(dash):
            for metric in gx.metric_names(t["expr"]):
                used.setdefault(metric, set()).add(f"{name}: {p['title']}")
    for rule in gx.rules():
        for metric in gx.metric_names(rule["expr"]):
            used.setdefault(metric, set()).add(f"rule {rule.get('record') or rule.get('alert')}")
    unknown = {m: sorted(where) for m, where in used.items() if m not in known}
    assert unknown == {}
    assert set(used) - in_prometheus == set(), "names Prometheus has no series of"
