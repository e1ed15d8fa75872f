"""``--workers N`` when things go wrong: an interface deleted and made again, a worker killed or stopped, threads and fork.

Each worker must hold its own packet sockets only (a fanout group lives as long as any socket
in it, and one left on a deleted interface refuses the new interface's handles); no thread may
be running when the workers are forked; a worker that dies or stops answering shows on
``/health`` and ``pktagent_capture_up`` and stops the agent with one line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import need_tool
from known import Known
from liveagent import PORT, LiveAgent, alive, children, live_agent
from netns import VethPair, sh
from pcapgen import Capture
from test_live_capture import assert_counts, first_and_second, send, series, wait_processed
from waiting import until

pytestmark = pytest.mark.live

# Runs the agent, noting at every fork which threads had been started and which still run.
FORK_WATCH = """
import os, sys, threading
started = []
_start = threading.Thread.start
def start(self):
    started.append(self.name)
    _start(self)
threading.Thread.start = start
os.register_at_fork(before=lambda: sys.stderr.write(f"fork: started {started} running {[t.name for t in threading.enumerate()]}\\n"))
from agent.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(autouse=True)
def tcpreplay() -> str:
    return need_tool("tcpreplay")


def recreate(pair: VethPair) -> None:
    sh("ip", "-n", pair.sender, "link", "add", pair.tx, "type", "veth", "peer", "name", pair.rx, "netns", pair.receiver)
    for ns, dev in ((pair.sender, pair.tx), (pair.receiver, pair.rx)):
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
        sh("ip", "-n", ns, "link", "set", dev, "up")


def test_with_two_workers_a_deleted_and_recreated_interface_is_captured_again(veth: VethPair, tmp_path: Path) -> None:
    first, second, p1, p2 = first_and_second(tmp_path)
    with live_agent(veth, tmp_path, "--workers", "2") as a:
        send(veth, veth.tx, p1, first.frames)
        wait_processed(a, {veth.rx: first.frames})
        sh("ip", "-n", veth.sender, "link", "del", veth.tx)  # takes its peer, the captured interface, with it
        until(lambda: a.get("/health")[0] == 503, "/health to report the capture down")
        recreate(veth)
        until(lambda: a.get("/health")[0] == 200, "both workers capturing on the new interface", timeout=30)
        send(veth, veth.tx, p2, second.frames)
        samples = wait_processed(a, {veth.rx: first.frames + second.frames})
        both = Known(Capture(packets=first.capture.packets + second.capture.packets), cells=first.cells + second.cells)
        assert_counts(samples, veth.rx, both)
        a.stop()
    assert "cannot set up capture" not in a.log.read_text()


def test_no_thread_runs_when_the_workers_are_forked(veth: VethPair, tmp_path: Path) -> None:
    """A lock a thread holds at fork() stays held in the child for ever (the suffix list's did, and a worker hung)."""
    log = tmp_path / "agent.log"
    cmd = [sys.executable, "-c", FORK_WATCH, "run", "-i", veth.rx, "--workers", "2", "--listen", f"127.0.0.1:{PORT}", "--state-dir", str(tmp_path / "state")]
    with open(log, "w") as err:
        proc = subprocess.Popen(veth.in_receiver(*cmd), stdout=subprocess.DEVNULL, stderr=err)
    a = LiveAgent(veth, proc, log)
    try:
        until(lambda: proc.poll() is not None or a.get("/health")[0] == 200, "/health", 20)
        a.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    forks = [line for line in log.read_text().splitlines() if line.startswith("fork: ")]
    assert forks == ["fork: started [] running ['MainThread']"] * 2, log.read_text()


def failing_worker(veth: VethPair, tmp_path: Path, sig: signal.Signals, reason: str) -> None:
    conf = tmp_path / "pktagent.yml"
    conf.write_text("capture: {worker_timeout_seconds: 1}\n")
    with live_agent(veth, tmp_path, "--workers", "2", "--config", str(conf)) as a:
        workers = children(a.pid)
        assert len(workers) == 2, workers
        assert series(a.metrics(), "pktagent_capture_up") == {(veth.rx,): 1}
        os.kill(workers[1], sig)
        status, body = a.get("/health")  # answered by the scrape that finds the worker gone, or by one after it
        assert status == 503, body
        assert f"capture worker 2 of 2 {reason}: stopping the agent" in body
        code = a.proc.wait(timeout=30)
        until(lambda: not any(alive(pid) for pid in workers), "the workers gone", timeout=10)
    text = a.log.read_text()
    assert code == 1, text
    assert "Traceback" not in text
    last = text.strip().splitlines()[-1]
    assert last == f"pktagent: CaptureError: capture worker 2 of 2 {reason}: stopping the agent, for its service manager to start it again"


def test_a_stopped_worker_shows_down_and_stops_the_agent(veth: VethPair, tmp_path: Path) -> None:
    failing_worker(veth, tmp_path, signal.SIGSTOP, "has not answered for 1 s (hung or stopped)")


def test_a_killed_worker_shows_down_and_stops_the_agent(veth: VethPair, tmp_path: Path) -> None:
    failing_worker(veth, tmp_path, signal.SIGKILL, "exited (signal 9)")
