"""Shared test set-up: tools the tests need, the tcpdump corpus, and network namespaces.

A tool or data set the tests need fails the run in CI (CI=true) and skips the test elsewhere,
so a missing install step can never turn into a silently green CI.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The tests' own helpers: pcapgen, netns, ..., the Ansible tests' ansible_cli and the bundle tests' roots.
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "ansible"), str(ROOT / "tests" / "dist")]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CORPUS = Path(os.environ.get("PKTAGENT_CORPUS", ROOT.parent / "shared" / "corpus")) / "tcpdump"


def need(condition: bool, what: str) -> None:
    """Fail in CI, skip elsewhere, when something the test needs is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"missing in CI: {what}")
    pytest.skip(f"missing: {what}")


def need_tool(name: str) -> str:
    path = shutil.which(name)
    need(path is not None, f"the {name} command (make test installs it as root)")
    assert path is not None
    return path


def need_root() -> None:
    need(os.geteuid() == 0, "root (network namespaces and live capture)")


@pytest.fixture
def corpus() -> Path:
    need(CORPUS.is_dir(), f"the tcpdump corpus at {CORPUS} (set PKTAGENT_CORPUS)")
    return CORPUS


@pytest.fixture
def veth() -> Iterator[object]:
    """Two network namespaces joined by a veth pair (see netns.VethPair)."""
    need_root()
    need_tool("ip")
    from netns import VethPair

    pair = VethPair.create()
    try:
        yield pair
    finally:
        pair.delete()
