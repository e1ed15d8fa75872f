"""The Prometheus rules: promtool accepts them, its unit tests fire and spare every alert, and each alert is documented."""

from __future__ import annotations

import re
import subprocess

import grafana_exprs as gx
import pytest
import yaml
from conftest import need_tool
from pktagent_mixin import config

UNIT_TESTS = sorted((gx.GRAFANA / "rules" / "tests").glob("*.yml"))
ALERTS = gx.alerts()
RECORD_NAME = re.compile(r"^[a-z]+(_[a-z]+)*:pktagent_[a-z0-9_]+:[a-z0-9_]+$")


def test_promtool_check_rules() -> None:
    promtool = need_tool("promtool")
    out = subprocess.run([promtool, "check", "rules", *map(str, gx.RULE_FILES)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("SUCCESS") == len(gx.RULE_FILES)


def test_promtool_unit_tests() -> None:
    promtool = need_tool("promtool")
    assert UNIT_TESTS
    out = subprocess.run([promtool, "test", "rules", *map(str, UNIT_TESTS)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("SUCCESS") == len(UNIT_TESTS)


def _alert_cases() -> dict[str, dict[str, int]]:
    cases: dict[str, dict[str, int]] = {}
    for path in UNIT_TESTS:
        doc = yaml.safe_load(path.read_text())
        loaded = {(path.parent / f).resolve() for f in doc["rule_files"]}
        assert loaded == set(gx.RULE_FILES), f"{path.name} must test the committed rule files"
        for test in doc["tests"]:
            for case in test.get("alert_rule_test", []):
                seen = cases.setdefault(case["alertname"], {"firing": 0, "silent": 0})
                seen["firing" if case.get("exp_alerts") else "silent"] += 1
    return cases


def test_unit_tests_cover_every_alert_firing_and_not() -> None:
    cases = _alert_cases()
    names = [a["alert"] for a in ALERTS]
    assert sorted(cases) == sorted(names), "unit tests for alerts that do not exist, or alerts without tests"
    for name in names:
        assert cases[name]["firing"] >= 1, f"{name}: no test where it fires"
        assert cases[name]["silent"] >= 1, f"{name}: no test where it stays silent"


def test_the_issues_alerts_exist() -> None:
    exprs_by_name = {a["alert"]: a["expr"] for a in ALERTS}
    assert exprs_by_name["PktagentDown"].startswith("up{") and "== 0" in exprs_by_name["PktagentDown"]
    assert exprs_by_name["PktagentNotScraped"].startswith("absent(up{")
    assert "pktagent_capture_up == 0" in exprs_by_name["PktagentCaptureDown"]
    silence = exprs_by_name["PktagentNoPackets"]
    assert f"[{config.SILENCE_WINDOW}])) == 0" in silence and f"[{config.USUAL_WINDOW}] offset {config.SILENCE_WINDOW}" in silence
    for name in (
        "PktagentPacketsDropped",
        "PktagentQueueNearCapacity",
        "PktagentProcessingSlow",
        "PktagentNoHeadroom",
        "PktagentFlowTableNearCapacity",
        "PktagentDecodeErrorsHigh",
    ):
        assert name in exprs_by_name
    churn = exprs_by_name["PktagentLabelSeriesChurn"]
    assert f"rate(pktagent_label_series_dropped_total[{config.LABEL_CHURN_WINDOW}])) * 60 > {config.LABEL_CHURN_PER_MINUTE:g}" in churn
    assert "label" in churn.split("sum by (")[1].split(")")[0], "one alert per label: device and domain have budgets of their own"


@pytest.mark.parametrize("alert", ALERTS, ids=[a["alert"] for a in ALERTS])
def test_alert_is_labelled_and_documented(alert: dict[str, str | dict[str, str]]) -> None:
    labels, notes = alert["labels"], alert["annotations"]
    assert isinstance(labels, dict) and isinstance(notes, dict)
    assert labels["severity"] in {"critical", "warning"}
    assert set(notes) == {"summary", "description", "runbook_url"}
    assert notes["summary"].endswith(".") and "{{" not in notes["summary"]
    wanted = "$labels.job" if alert["alert"] == "PktagentNotScraped" else "$labels.instance"
    assert wanted in notes["description"]
    assert re.fullmatch(r"P[a-zA-Z]+", str(alert["alert"]))
    url = notes["runbook_url"]
    assert url == f"{config.RUNBOOK_BASE}#{str(alert['alert']).lower()}"
    readme = (gx.GRAFANA / "README.md").read_text()
    anchors = {_github_anchor(h) for h in re.findall(r"^#+\s+(.*)$", readme, flags=re.M)}
    assert url.split("#")[1] in anchors, f"grafana/README.md has no runbook section for {alert['alert']}"
    section = readme.split(f"### {alert['alert']}\n", 1)[1].split("\n### ", 1)[0]
    for part in ("**Meaning**", "**Check**", "**Act**"):
        assert part in section, f"the runbook of {alert['alert']} lacks {part}"


def _github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_recorded_names_follow_the_convention() -> None:
    names = [r["record"] for r in gx.rules() if "record" in r]
    for name in names:
        assert RECORD_NAME.match(name), f"{name} is not level:metric:operations"
        level = name.split(":")[0]
        assert "job" not in level.split("_"), "job is kept implicitly"
    used = set().union(*(gx.metric_names(r["expr"]) for r in gx.rules()))
    dashboards = set().union(*(gx.metric_names(t["expr"]) for d in gx.load_dashboards().values() for _, t in gx.targets(d)))
    unused = set(names) - used - dashboards
    assert unused == set(), f"recorded but read by no alert or dashboard: {unused}"
