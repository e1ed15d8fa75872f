"""Scrape storms: 100 concurrent GET /metrics, round after round, while the agent captures 100k packets/s.

The agent captures live on a veth interface in its own namespace; tcpreplay sends W1 without
its duplicates (``liveagent.unique_home_mix``, 19,560 frames, no frame repeated within a pass)
at 100,000 packets/s, looped. First without scrapes, to show the rate is lossless on this
machine; then the same again while ``storm_client.py``, inside the receiver namespace, fires
100 simultaneous scrapes per round until the send is over (at least 5 rounds). Then:

- every scrape answered 200, with a complete exposition and no collector error;
- every exposition is consistent in itself: ``processed == sum(traffic_packets)``, and
  ``captured >= processed + duplicate + sampled_out + unsupported + dropped{queue}``;
- no counter goes down between two scrapes one of which was answered before the other was sent;
- scrapes saw the capture in progress (the storm overlapped the send);
- nothing was lost: kernel, interface and queue drops 0, and the final totals are exact, cell by cell.
"""

from __future__ import annotations

import bisect
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import need_tool
from liveagent import COUNTS, Replay, Samples, Workload, cells, counts, live_agent, parse, scaled, unique_home_mix
from netns import VethPair

pytestmark = pytest.mark.live

HERE = Path(__file__).resolve().parent
PPS = 100_000  # lossless here without scrapes: the first phase checks it
FRAMES = 20_000  # W1 packets generated; 19,560 after the router copies are left out
BASELINE_LOOPS, STORM_LOOPS = 10, 20  # 2 s and 4 s of sending
THREADS, MIN_ROUNDS = 100, 5
MONOTONIC = (*COUNTS, "dropped_kernel", "dropped_interface", "dropped_queue", "traffic_packets", "traffic_bytes")


@pytest.fixture(autouse=True)
def tcpreplay() -> str:
    return need_tool("tcpreplay")


def assert_exact(samples: Samples, iface: str, sent: int, passes: int, w: Workload) -> None:
    c = counts(samples, iface)
    assert {k: c[k] for k in ("dropped_kernel", "dropped_interface", "dropped_queue")} == {"dropped_kernel": 0, "dropped_interface": 0, "dropped_queue": 0}
    assert (c["captured"], c["processed"], c["duplicate"], c["sampled_out"], c["unsupported"]) == (sent, sent, 0, 0, 0)
    assert cells(samples, iface) == scaled(w.packets_by_cell, passes)
    assert cells(samples, iface, "pktagent_traffic_bytes_total") == scaled(w.bytes_by_cell, passes)
    errors = {k: v for k, v in samples.items() if k[0] == "pktagent_decode_errors_total" and v}
    assert errors == {}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_scrape_storm_loses_no_packet_and_every_exposition_adds_up(veth: VethPair, tmp_path: Path, workers: int) -> None:
    w = unique_home_mix(tmp_path / "w1-unique.pcap", FRAMES)
    assert w.frames == 19_560
    iface = veth.rx
    # 100 scrapes at once from one address: more than the web server's default bounds let in.
    config = tmp_path / "storm.yml"
    config.write_text(f"web:\n  max_connections: {2 * THREADS}\n  max_connections_per_address: {2 * THREADS}\n")
    with live_agent(veth, tmp_path, "--workers", str(workers), "--config", str(config)) as agent:
        # 1. The rate without scrapes: lossless, every figure exact.
        first = Replay(veth, w.path, pps=PPS, loops=BASELINE_LOOPS)
        sent1 = first.wait(timeout=60)
        assert sent1 == w.frames * BASELINE_LOOPS
        assert_exact(agent.wait_accounted(iface, sent1), iface, sent1, BASELINE_LOOPS, w)

        # 2. The same rate under a storm of scrapes.
        stop = tmp_path / "sent"
        storm = subprocess.Popen(
            veth.in_receiver(
                sys.executable,
                str(HERE / "storm_client.py"),
                agent.url("/metrics"),
                "--threads",
                str(THREADS),
                "--min-rounds",
                str(MIN_ROUNDS),
                "--stop-file",
                str(stop),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        second = Replay(veth, w.path, pps=PPS, loops=STORM_LOOPS)
        try:
            sent2 = second.wait(timeout=60)
            stop.touch()
            out, err = storm.communicate(timeout=120)
        finally:
            second.kill()
            if storm.poll() is None:
                storm.kill()
        assert storm.returncode == 0, err
        assert sent2 == w.frames * STORM_LOOPS
        total = sent1 + sent2
        final = agent.wait_accounted(iface, total)
        assert_exact(final, iface, total, BASELINE_LOOPS + STORM_LOOPS, w)
        agent.stop()

    result = json.loads(out)
    scrapes = result["scrapes"]
    rounds = result["rounds"]
    print(f"workers={workers}: {len(scrapes)} scrapes in {rounds} rounds over {result['seconds']:.1f} s, send {second.seconds:.1f} s")
    assert rounds >= MIN_ROUNDS
    assert len(scrapes) == rounds * THREADS
    failed = [(s["thread"], s["round"], s["status"]) for s in scrapes if s["status"] != 200]
    assert failed == []

    figures = []
    for s in scrapes:
        samples = parse("\n".join(s["lines"]) + "\n")
        c = counts(samples, iface)
        assert c["processed"] == c["traffic_packets"], s["round"]
        assert c["captured"] >= c["processed"] + c["duplicate"] + c["sampled_out"] + c["unsupported"] + c["dropped_queue"]
        assert c["dropped_kernel"] == c["dropped_interface"] == c["dropped_queue"] == 0
        exporter_errors = [v for k, v in samples.items() if k[0] == "pktagent_exporter_errors_total"]
        assert exporter_errors and not any(exporter_errors)
        figures.append((s["sent"], s["answered"], c))
    for s in scrapes:
        if "body" in s:  # thread 0: the whole exposition, parsed in full
            assert s["body"].endswith("\n") and s["bytes"] == len(s["body"])
            parse(s["body"])

    # Counters never go down: a scrape sent after another was answered shows at least its figures.
    by_answer = sorted(figures, key=lambda f: f[1])
    answered = [f[1] for f in by_answer]
    running: list[dict[str, float]] = []
    best = dict.fromkeys(MONOTONIC, 0.0)
    for _, _, c in by_answer:
        best = {k: max(best[k], c[k]) for k in MONOTONIC}
        running.append(best)
    compared = 0
    for sent, _, c in figures:
        k = bisect.bisect_left(answered, sent)
        if k:
            before = running[k - 1]
            assert all(c[m] >= before[m] for m in MONOTONIC), (before, c)
            compared += 1
    assert compared >= (rounds - 1) * THREADS

    # The storm overlapped the send: scrapes saw the capture between its start and its end.
    during = [c["captured"] for _, _, c in figures if sent1 < c["captured"] < total]
    assert len(during) >= THREADS, "fewer than one round of scrapes saw the capture in progress"
