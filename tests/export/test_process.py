"""The ``process_*`` families and the writer's own text: what /proc says, in a form promtool accepts."""

from __future__ import annotations

import os
import resource
import subprocess
import time
from pathlib import Path

from conftest import need_tool
from scrape import samples

from agent.base.snapshot import Snapshot
from agent.export.metrics import Exposition, number
from agent.export.process import process_families


def test_process_families_are_read_from_proc() -> None:
    got = samples(Exposition(lambda: Snapshot(interfaces=("eth0",)), families=(), extra=process_families).render().decode())
    rss_kib = int(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmRSS:")))
    assert abs(got[("process_resident_memory_bytes", ())] - rss_kib * 1024) < 8 << 20  # read moments apart
    assert got[("process_virtual_memory_bytes", ())] > got[("process_resident_memory_bytes", ())]
    started = got[("process_start_time_seconds", ())]
    assert time.time() - 3600 * 24 < started <= time.time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    assert 0 < got[("process_cpu_seconds_total", ())] <= usage.ru_utime + usage.ru_stime + 0.02
    assert got[("process_max_fds", ())] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert got[("process_open_fds", ())] >= 3


def test_without_proc_there_are_none(tmp_path: Path) -> None:
    assert process_families(str(tmp_path)) == []


def test_labels_and_help_are_escaped_and_promtool_accepts_the_text() -> None:
    odd = 'a "quoted" back\\slash\nnewline'
    family = ("pktagent_odd", "Help with \\ and\nnewline.", "gauge", [("pktagent_odd", (("name", odd), ("kind", "x")), 1)])
    text = Exposition(lambda: Snapshot(interfaces=("eth0",)), families=(), extra=lambda: [*process_families(), family]).render()
    assert b'pktagent_odd{kind="x",name="a \\"quoted\\" back\\\\slash\\nnewline"} 1.0\n' in text  # labels in name order
    assert b"# HELP pktagent_odd Help with \\\\ and\\nnewline.\n" in text
    assert samples(text.decode())[("pktagent_odd", (("kind", "x"), ("name", odd)))] == 1
    done = subprocess.run([need_tool("promtool"), "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert (done.returncode, done.stdout + done.stderr) == (0, b"")


def test_the_name_filter_keeps_whole_families_of_the_samples_named() -> None:
    e = Exposition(lambda: Snapshot(interfaces=("eth0",)), extra=process_families)
    text = e.render({"process_open_fds", "pktagent_batch_size_packets_count"}).decode()
    assert [line.split()[0] for line in text.splitlines() if not line.startswith("#")] == ["pktagent_batch_size_packets_count", "process_open_fds"]
    assert "# TYPE pktagent_batch_size_packets histogram" in text


def test_numbers_are_written_as_go_writes_them() -> None:
    assert [number(v) for v in (-1234567.0, 1e21, 123456789012.0, 0.1, -0.0, float("-inf"))] == [
        "-1.234567e+06",
        "1e+21",
        "1.23456789012e+11",
        "0.1",
        "-0.0",
        "-Inf",
    ]
    assert number(os.getpid()) == repr(float(os.getpid()))
