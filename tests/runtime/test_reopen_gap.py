"""Packets an interface carries while its failed capture is closed are counted: ``dropped{stage="reopen"}``.

A real engine captures on a veth interface in its own namespace (``reopen_probe.py``), its reopen
held at a gate by the test: the link goes down, the engine closes the capture and waits at the
gate; the link comes up and N2 frames cross it with no capture open; then the gate opens. The N2
frames must show as dropped at stage ``reopen`` (from the interface's own counters), exactly,
and the frames before and after as captured, exactly.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import need_tool
from netns import VethPair, sh
from test_live_capture import first_and_second, send

pytestmark = pytest.mark.live

PROBE = Path(__file__).resolve().parents[1] / "reopen_probe.py"


class Probe:
    """The probe process, and its line protocol: ``snap`` -> one JSON line; ``open`` lets the reopen through."""

    def __init__(self, pair: VethPair) -> None:
        self.proc = subprocess.Popen(pair.in_receiver(sys.executable, str(PROBE), pair.rx), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def line(self, timeout: float = 20.0) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"the probe said nothing for {timeout:g} s"
        text = self.proc.stdout.readline()
        assert text, "the probe ended"
        return text.strip()

    def expect(self, word: str) -> None:
        while (got := self.line()) != word:
            assert got.startswith("{"), got

    def tell(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def snap(self) -> dict[str, Any]:
        self.tell("snap")
        while not (got := self.line()).startswith("{"):
            pass
        answer: dict[str, Any] = json.loads(got)
        return answer

    def until(self, condition: Any, what: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not condition(s := self.snap()):
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {s}"
            time.sleep(0.1)
        return s

    def close(self) -> None:
        if self.proc.poll() is None:
            self.tell("stop")
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def test_frames_carried_while_the_capture_was_closed_are_counted_at_stage_reopen(veth: VethPair, tmp_path: Path) -> None:
    need_tool("tcpreplay")
    first, second, p1, p2 = first_and_second(tmp_path)
    n1, n2, n3 = first.frames, second.frames, first.frames
    probe = Probe(veth)
    try:
        probe.expect("ready")
        send(veth, veth.tx, p1, n1)
        probe.until(lambda s: s["processed"] == n1, f"{n1} processed")
        sh("ip", "-n", veth.receiver, "link", "set", veth.rx, "down")
        probe.expect("waiting")  # the capture failed and was closed; its reopen waits at the gate
        sh("ip", "-n", veth.receiver, "link", "set", veth.rx, "up")
        send(veth, veth.tx, p2, n2)  # the interface carries these with no capture open
        probe.tell("open")
        probe.until(lambda s: s["up"] == 1, "the capture back")
        send(veth, veth.tx, p1, n3)
        s = probe.until(lambda s: s["processed"] == n1 + n3, f"{n1 + n3} processed")
        assert (s["captured"], s["processed"]) == (n1 + n3, n1 + n3)
        assert s["dropped"] == [0, 0, 0, n2]  # kernel, interface, queue, reopen
    finally:
        probe.close()
