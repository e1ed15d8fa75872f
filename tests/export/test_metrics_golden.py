"""The Prometheus exposition of a replay, byte for byte against a golden file, and through ``promtool check metrics``.

The fixture is ``known.mixed`` cut by a 128-byte snaplen (so bytes on the wire come from the
record headers, not the captured bytes). Series that measure time (batch processing
seconds, busy seconds) differ from run to run and are left out of the comparison; every
other line, HELP and TYPE included, must match. The build labels are fixed, so that the file
does not change with the Python or libpcap a machine has.

After an intended change to the exposition, regenerate the file with
``UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_metrics_golden.py`` and review the diff.
"""

from __future__ import annotations

import difflib
import os
import subprocess
from pathlib import Path

import pytest
from conftest import need_tool
from known import mixed

from agent.cli import exposition
from agent.config import Config
from agent.runtime.replay import replay_files

GOLDEN = Path(__file__).parent / "golden" / "replay.prom"
TIMING = ("pktagent_batch_processing_seconds", "pktagent_processing_busy_seconds_total")
BUILD = {"version": "0.0.0-golden", "python_version": "3.x", "libpcap_version": "1.x"}


def stable(text: str) -> str:
    """The exposition without the samples of the timing series (their HELP and TYPE lines stay)."""
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith(TIMING))


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = mixed(snaplen=128).capture.write(tmp_path_factory.mktemp("golden") / "golden.pcap")
    return exposition(replay_files(Config(), [path], **BUILD)).decode()


def test_exposition_matches_the_golden_file(text: str) -> None:
    got = stable(text)
    assert got != text  # the timing series were there, and were left out
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(got)
    want = GOLDEN.read_text()
    diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True), str(GOLDEN), "replay exposition"))
    assert got == want, f"the exposition changed (UPDATE_GOLDEN=1 regenerates the file):\n{diff}"


def test_promtool_accepts_the_whole_exposition(text: str) -> None:
    promtool = need_tool("promtool")
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    # Exit 1: unparsable; exit 3: lint problems (names, units, suffixes), listed in the output.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
