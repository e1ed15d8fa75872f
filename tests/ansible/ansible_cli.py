"""Running Ansible's own commands from the project's virtualenv, the same way in every Ansible test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, need

ANSIBLE = ROOT / "ansible"
ROLE = ANSIBLE / "roles" / "pktagent"
BIN = Path(sys.executable).parent


def ansible_tool(name: str) -> Path:
    path = BIN / name
    need(path.exists(), f"{name} in {BIN} (pip install -e '.[dev]' installs ansible-core and ansible-lint)")
    return path


def ansible_env(**extra: str) -> dict[str, str]:
    """The environment for Ansible's commands: the project's venv first on PATH, no colour."""
    env = dict(os.environ)
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        ANSIBLE_CONFIG=str(ANSIBLE / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        NO_COLOR="1",
        PY_COLORS="0",
    )
    env.update(extra)
    return env


def run_ansible(tool: str, *args: str, timeout: float = 120, netns: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run one of Ansible's commands in ``ansible/`` (inside network namespace ``netns`` if given), output captured."""
    cmd = [str(ansible_tool(tool)), *args]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    return subprocess.run(cmd, cwd=ANSIBLE, env=ansible_env(), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
