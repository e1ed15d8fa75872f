"""``pktagent --version``: node_exporter's layout, with the revision from git in a checkout or baked into a wheel."""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

import agent
from agent import version
from agent.version import build_labels, libpcap_version

BIN = Path(sys.executable).parent


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_version_from_a_checkout() -> None:
    done = subprocess.run([str(BIN / "pktagent"), "--version"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")
    dirty = "-dirty" if git("status", "--porcelain", "--untracked-files=no") else ""
    assert done.stdout.splitlines() == [
        f"pktagent, version {agent.__version__} (revision: {git('rev-parse', 'HEAD')}{dirty})",
        "  build date:       unknown",
        f"  python version:   {platform.python_version()} (CPython)",
        f"  libpcap version:  {libpcap_version()}",
        f"  platform:         linux/{platform.machine()}",
    ]
    # The libpcap the metrics name too, found without importing numpy or pcapy.
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?", libpcap_version())
    assert build_labels()["libpcap_version"] == libpcap_version()


def test_baked_build_details_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wheel made by `make bundle` carries agent/_build.json: its revision and date, not git's."""
    package = tmp_path / "agent"
    package.mkdir()
    (package / version.BUILD_FILE).write_text(json.dumps({"revision": "0123abc", "build_date": "20261130-15:30:00"}))
    from importlib import resources

    monkeypatch.setattr(resources, "files", lambda name: package)
    assert version.info()["revision"] == "0123abc"
    assert version.text().splitlines()[:2] == [f"pktagent, version {agent.__version__} (revision: 0123abc)", "  build date:       20261130-15:30:00"]


def test_revision_outside_a_checkout_is_unknown(tmp_path: Path) -> None:
    assert version.git_revision(tmp_path) == "unknown"
