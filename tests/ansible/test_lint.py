"""The Ansible role and playbooks: ansible-lint's production profile, syntax checks, argument specs, targets.

None of these change the machine: the role's real run is in test_role.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible_cli import ANSIBLE, ROLE, run_ansible
from conftest import need_tool

PLAYBOOKS = sorted(p.name for p in ANSIBLE.glob("*.yml"))


def test_ansible_lint_production_profile() -> None:
    r = run_ansible("ansible-lint", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Profile 'production' was required, and it passed." in r.stdout + r.stderr


def test_there_are_playbooks() -> None:
    assert "site.yml" in PLAYBOOKS


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_syntax_check(playbook: str) -> None:
    r = run_ansible("ansible-playbook", "--syntax-check", "-i", "inventory/example.yml", playbook)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"playbook: {playbook}" in r.stdout


def _options(specs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for entry in specs["argument_specs"].values():
        merged.update(entry["options"])
    return merged


def test_argument_specs_match_defaults() -> None:
    """Every default is documented in meta/argument_specs.yml with the same value and type, and nothing else is."""
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    options = _options(yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text()))
    assert sorted(options) == sorted(defaults)
    types = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict}
    for name, value in defaults.items():
        spec = options[name]
        assert spec.get("default") == value, name
        assert type(value) is types[spec["type"]], name
        assert spec.get("description"), name
        if "choices" in spec:
            assert value in spec["choices"], name


def test_targets_entry_point_options_are_those_of_main() -> None:
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    assert set(specs) == {"main", "targets"}
    for name, spec in specs["targets"]["options"].items():
        assert specs["main"]["options"][name] == spec, name


def test_every_variable_is_in_the_readme() -> None:
    readme = (ANSIBLE / "README.md").read_text()
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    missing = [name for name in defaults if f"`{name}`" not in readme]
    assert missing == []


def test_targets_of_the_example_fleet(tmp_path: Path) -> None:
    """The targets play on the example inventory: one target per agent, site from its site_* group, role from its host var."""
    extra = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "ansible_become": False,
        "pktagent_file_sd_dir": str(tmp_path / "file_sd"),
    }
    play = ("-i", "inventory/example.yml", "site.yml", "--limit", "prometheus", "--tags", "pktagent_targets")
    r = run_ansible("ansible-playbook", *play, "-e", json.dumps(extra))
    assert r.returncode == 0, r.stdout + r.stderr
    targets = json.loads((tmp_path / "file_sd" / "pktagent.json").read_text())
    assert targets == [
        {"labels": {"role": "sensor", "site": "home"}, "targets": ["pi-den.home.example:10464"]},
        {"labels": {"role": "gateway", "site": "office"}, "targets": ["pi-office-1.office.example:10464"]},
        {"labels": {"role": "sensor", "site": "office"}, "targets": ["pi-office-2.office.example:10464"]},
        {"labels": {"role": "gateway", "site": "home"}, "targets": ["pi-router.home.example:10464"]},
    ]

    # Prometheus's own service discovery reads the file through the example scrape config.
    promtool = need_tool("promtool")
    scrape = (ANSIBLE / "examples" / "prometheus-scrape.yml").read_text()
    prometheus_yml = tmp_path / "prometheus.yml"
    prometheus_yml.write_text(scrape.replace("/etc/prometheus/file_sd/pktagent.json", str(tmp_path / "file_sd" / "pktagent.json")))
    check = subprocess.run([promtool, "check", "config", str(prometheus_yml)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    sd = subprocess.run([promtool, "check", "service-discovery", "--timeout=2s", str(prometheus_yml), "pktagent"], capture_output=True, text=True, timeout=60)
    assert sd.returncode == 0, sd.stdout + sd.stderr
    found = json.loads(sd.stdout)
    assert sorted((t["labels"]["instance"], t["labels"]["site"], t["labels"]["role"], t["labels"]["job"]) for t in found) == [
        ("pi-den.home.example:10464", "home", "sensor", "pktagent"),
        ("pi-office-1.office.example:10464", "office", "gateway", "pktagent"),
        ("pi-office-2.office.example:10464", "office", "sensor", "pktagent"),
        ("pi-router.home.example:10464", "home", "gateway", "pktagent"),
    ]
