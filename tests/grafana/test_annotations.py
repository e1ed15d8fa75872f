"""The dashboards' annotations, evaluated by Prometheus's own engine (``promtool test rules``) on series with known restarts and upgrades."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from conftest import need_tool

HERE = Path(__file__).resolve().parent
sys.path += [str(p) for p in (HERE, HERE.parents[1] / "grafana") if str(p) not in sys.path]

import grafana_exprs as gx  # noqa: E402

# What Grafana puts in for the variables with every agent chosen.
ALL = {"job": "pktagent", "site": ".*", "role": ".*", "instance": ".+"}
A = 'job="pktagent", instance="pi-a:10464", site="home", role="router"'
B = 'job="pktagent", instance="pi-b:10464"'  # a target without site and role labels: All still matches it


def annotations() -> dict[str, str]:
    (dash,) = [d for name, d in gx.load_dashboards().items() if name == "pktagent-fleet.json"]
    return {a["name"]: gx.substitute(a["expr"], ALL) for a in dash["annotations"]["list"]}


def promtool_test(tmp_path: Path, series: list[dict[str, str]], cases: list[dict[str, Any]]) -> None:
    promtool = need_tool("promtool")
    path = tmp_path / "annotations_test.yml"
    path.write_text(yaml.safe_dump({"rule_files": [], "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": cases}]}))
    out = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_restart_is_marked_once(tmp_path: Path) -> None:
    expr = annotations()["Agent restarts"]
    # Agent A restarts between minute 5 and 6 (a new start time); B runs on untouched.
    series = [
        {"series": f"process_start_time_seconds{{{A}}}", "values": "1000x5 1400x5"},
        {"series": f"process_start_time_seconds{{{B}}}", "values": "900x10"},
    ]
    cases: list[dict[str, Any]] = [{"expr": expr, "eval_time": f"{m}m", "exp_samples": []} for m in (1, 5, 7, 10)]
    cases.append({"expr": expr, "eval_time": "6m", "exp_samples": [{"labels": f"{{{A}}}", "value": 1}]})
    promtool_test(tmp_path, series, cases)


def test_a_version_change_is_marked_once_and_a_new_agent_is_not(tmp_path: Path) -> None:
    expr = annotations()["Version changes"]
    # A is upgraded from 0.1.0 to 0.2.0 at minute 6; B first appears at minute 3, already on 0.2.0.
    # (promtool's notation: "1x5" is 6 samples, minutes 0-5; "_x6" is 6 gaps, minutes 0-5.)
    series = [
        {"series": f'pktagent_build_info{{{A}, version="0.1.0"}}', "values": "1x5 _x5"},
        {"series": f'pktagent_build_info{{{A}, version="0.2.0"}}', "values": "_x6 1x4"},
        {"series": f'pktagent_build_info{{{B}, version="0.2.0"}}', "values": "_x3 1x7"},
    ]
    cases: list[dict[str, Any]] = [{"expr": expr, "eval_time": f"{m}m", "exp_samples": []} for m in (1, 3, 4, 5, 7, 10)]
    cases.append({"expr": expr, "eval_time": "6m", "exp_samples": [{"labels": f'pktagent_build_info{{{A}, version="0.2.0"}}', "value": 1}]})
    promtool_test(tmp_path, series, cases)


def test_choosing_a_site_keeps_only_its_agents(tmp_path: Path) -> None:
    restarts = next(a for a in gx.load_dashboards()["pktagent-fleet.json"]["annotations"]["list"] if a["name"] == "Agent restarts")
    expr = gx.substitute(restarts["expr"], {**ALL, "site": "home"})
    series = [
        {"series": f"process_start_time_seconds{{{A}}}", "values": "1000 1400"},
        {"series": f"process_start_time_seconds{{{B}}}", "values": "900 1300"},
    ]
    promtool_test(tmp_path, series, [{"expr": expr, "eval_time": "1m", "exp_samples": [{"labels": f"{{{A}}}", "value": 1}]}])
