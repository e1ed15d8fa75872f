"""The forked reader: the same packets as reading in-process, handed over through shared memory; no orphan left behind."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pcapgen as g
import pytest
from liveagent import alive
from waiting import until

from agent.base.batch import Batch, RawBatch
from agent.capture.forked import ForkedSource
from agent.capture.offline import FileSource
from agent.runtime.pipeline import prepare
from agent.stages.decode import read_heads


def capture(n: int) -> g.Capture:
    cap = g.Capture()
    for i in range(n):
        frame = g.eth(g.ETH_IPV4) + g.ipv4(g.UDP, "10.0.0.1", "10.0.0.2", g.udp(1000 + i % 500, 53, bytes(20 + i % 1400)))
        cap.add(1_000_000 + 10 * i, frame)
    return cap


def frames_of(batch: RawBatch) -> list[bytes]:
    return [bytes(batch.data[o : o + c]) for o, c in zip(batch.offset.tolist(), batch.caplen.tolist())]


@pytest.mark.parametrize("heads", [False, True], ids=["raw", "with heads"])
def test_a_forked_reader_hands_over_every_packet_as_read(tmp_path: Path, heads: bool) -> None:
    cap = capture(20_000)  # about 14 MB: more than one slot's worth, so slots are reused
    path = cap.write(tmp_path / "many.pcap")
    forked = ForkedSource(FileSource(path), batch_size=1024, prepare=prepare, heads=read_heads if heads else None, slot_bytes=4 << 20)
    frames: list[bytes] = []
    times: list[int] = []
    kinds: set[str] = set()
    try:
        while (got := forked.read(1024, 0.0)) is not None:
            raw = got.raw if isinstance(got, Batch) else got
            kinds.add(type(got).__name__)
            frames += frames_of(raw)
            times += raw.ts.tolist()
            if isinstance(got, Batch):  # decoded in the child: the columns match decoding here
                assert np.array_equal(got.wirelen, prepare(raw).wirelen)
            elif heads:  # each frame's first bytes, gathered in the child: what decoding here would read
                assert got.head is not None
                assert np.array_equal(got.head, read_heads(dataclasses.replace(got, head=None)))
            else:
                assert got.head is None
    finally:
        forked.close()
    assert frames == [p.frame for p in cap.packets]
    assert times == [p.ts_us for p in cap.packets]
    assert "RawBatch" in kinds


READER = """
import sys, time
from agent.capture.forked import ForkedSource
from agent.capture.offline import FileSource
from agent.stages.decode import read_heads
src = ForkedSource(FileSource(sys.argv[1]), batch_size=256, slots=2, slot_bytes=2 << 20)
print(src._proc.pid, flush=True)
src._conn.poll(30)  # the reader has handed over its first batch
print("ready", flush=True)
time.sleep(60)  # never reads: the reader fills its slots and waits for the parent
"""


def test_a_reader_whose_parent_is_killed_stops(tmp_path: Path) -> None:
    path = capture(5_000).write(tmp_path / "some.pcap")
    parent = subprocess.Popen([sys.executable, "-c", READER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        reader = int(parent.stdout.readline())
        assert parent.stdout.readline() == "ready\n"  # the reader is running and has sent a batch
        assert os.path.exists(f"/proc/{reader}")
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        until(lambda: not alive(reader), "the orphaned reader to stop", timeout=5)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        if parent.stdout is not None:
            parent.stdout.close()
