"""The running agent's own figures: the memory of all its processes, not the scraped one alone."""

from __future__ import annotations

from pathlib import Path

from known import mixed

from agent.config import Config
from agent.export.metrics import Exposition
from agent.runtime.agent import agent_memory
from agent.runtime.replay import replay_files


def _status(proc: Path, pid: int, rss_kib: int, hwm_kib: int) -> None:
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "status").write_text(f"Name:\tpktagent\nVmHWM:\t  {hwm_kib} kB\nVmRSS:\t  {rss_kib} kB\nThreads:\t4\n")


def test_the_agents_memory_adds_up_its_processes_and_skips_one_gone(tmp_path: Path) -> None:
    _status(tmp_path, 100, 30_000, 41_000)  # the parent
    _status(tmp_path, 101, 50_000, 60_000)  # a worker
    _status(tmp_path, 102, 52_000, 61_000)  # another
    got = agent_memory([100, 101, 102, 103], proc=str(tmp_path))  # 103 has just exited
    assert got == {"resident": 132_000 * 1024, "peak": 162_000 * 1024, "processes": 3}


def test_the_memory_series_are_exposed_when_the_snapshot_has_them(tmp_path: Path) -> None:
    path = mixed().capture.write(tmp_path / "m.pcap")
    snap = replay_files(Config(), [path])
    memory = {"resident": 3 * 1024, "peak": 5 * 1024, "processes": 2}
    lines = Exposition(lambda: snap.replace(memory=memory)).render().decode().splitlines()
    assert "pktagent_resident_memory_bytes 3072.0" in lines
    assert "pktagent_peak_resident_memory_bytes 5120.0" in lines
    assert "pktagent_processes 2.0" in lines
    bare = Exposition(lambda: snap)  # a replay: no processes of an agent to report
    assert b"pktagent_resident_memory_bytes" not in bare.render()
