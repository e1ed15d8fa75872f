"""Shared test set-up: tools the tests need, the tcpdump corpus, and network namespaces.

A tool or data set the tests need fails the run in CI (CI=true) and skips the test elsewhere,
so a missing install step can never turn into a silently green CI.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

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


# The slow tier: real services, namespaces, corpora, long runs. `make test-fast` leaves it out;
# `make test` (CI) runs everything. Named by folder or by file name, wherever the file sits.
SLOW_DIRS = {"ansible", "grafana", "dist"}
SLOW_FILES = {
    "test_auth_storm.py",
    "test_bundle.py",
    "test_cli_flags.py",
    "test_corpus.py",
    "test_demo.py",
    "test_first_use.py",
    "test_floods.py",
    "test_forked.py",
    "test_fuzz.py",
    "test_host_addresses.py",
    "test_http_limits.py",
    "test_live_capture.py",
    "test_otlp.py",
    "test_privileges.py",
    "test_prometheus_server.py",
    "test_prometheus_tls.py",
    "test_reload.py",
    "test_reopen_gap.py",
    "test_scrape_storm.py",
    "test_shutdown.py",
    "test_soak.py",
    "test_store_faults.py",
    "test_tshark.py",
    "test_tshark_encap.py",
    "test_workers.py",
}
SLOW_FIXTURES = {"veth", "corpus"}  # network namespaces, the 830-capture corpus


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests = ROOT / "tests"
    for item in items:
        path = Path(str(item.path))
        in_slow_dir = path.is_relative_to(tests) and path.relative_to(tests).parts[0] in SLOW_DIRS
        if in_slow_dir or path.name in SLOW_FILES or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
