"""How long SIGTERM takes under load: a live DHCP flood, and ``run --pcap`` replaying faster than the pipeline.

The agent must stop within 2 s (the README's promise); the test suite checks the mechanism (one
batch of work after a stop, the rest counted at the queue, ``tests/test_shutdown.py``), this
measures the time. ``dhcp``: the agent captures live in a network namespace (made here, deleted
at the end) while tcpreplay sends a flood of DHCP DISCOVERs, each from a new MAC, as fast as it
can; after ``--load`` seconds, SIGTERM. ``pcap``: ``pktagent run --pcap`` of the SYN flood W2
(1 us apart: a million packets/s, more than the pipeline takes), so the queue is full at SIGTERM.
Prints the seconds from SIGTERM to exit, each run and the largest.

    sudo python bench/sigterm.py --runs 3
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests"), str(HERE)]
import pcapgen as g  # noqa: E402 - the tests' frame builders
import workloads  # noqa: E402
from liveagent import BIN, live_agent  # noqa: E402
from netns import VethPair, require_namespaces  # noqa: E402


def dhcp_flood(path: Path, n: int) -> Path:
    cap = g.Capture()
    for k in range(n):
        mac = ":".join(f"{b:02x}" for b in (0x02, 0x5A, k >> 16 & 0xFF, k >> 8 & 0xFF, k & 0xFF, 0x01))
        payload = g.dhcp(mac, 1, hostname=f"flood-{k}")
        frame = g.eth(g.ETH_IPV4, src=mac, dst="ff:ff:ff:ff:ff:ff") + g.ipv4(g.UDP, "0.0.0.0", "255.255.255.255", g.udp(68, 67, payload), ident=k & 0xFFFF)
        cap.add(1_700_000_000_000_000 + k * 20, frame)
    return cap.write(path)


def timed_stop(proc: subprocess.Popen[bytes]) -> float:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    return time.monotonic() - started


def dhcp_run(work: Path, flood: Path, load: float) -> float:
    pair = VethPair.create(f"sigterm{os.getpid()}")
    try:
        with live_agent(pair, work) as agent:
            replay = pair.in_sender("tcpreplay", "-i", pair.tx, "--topspeed", "--loop=0", str(flood))
            send = subprocess.Popen(replay, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(load)
                return timed_stop(agent.proc)
            finally:
                send.kill()
                send.wait(10)
    finally:
        pair.delete()


def pcap_run(work: Path, flood: Path, load: float) -> float:
    cmd = [str(BIN / "pktagent"), "run", "--pcap", str(flood), "--loop", "--listen", "127.0.0.1:0", "--state-dir", str(work / "state")]
    with open(work / "pcap.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    time.sleep(load)
    return timed_stop(proc)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--load", type=float, default=5.0, help="seconds of load before SIGTERM")
    p.add_argument("--macs", type=int, default=50_000, help="DHCP flood: clients (MACs) in one pass")
    args = p.parse_args()
    require_namespaces("bench/sigterm.py")
    with tempfile.TemporaryDirectory(prefix="pktagent-sigterm-") as tmp:
        work = Path(tmp)
        flood = dhcp_flood(work / "dhcp.pcap", args.macs)
        cols, _ = workloads.flood(1_000_000)
        syn = work / "w2.pcap"
        workloads.write_pcap(syn, cols)
        for name, run, path in (("dhcp flood, live", dhcp_run, flood), ("run --pcap W2, queue full", pcap_run, syn)):
            times = [run(work, path, args.load) for _ in range(args.runs)]
            print(f"{name}: SIGTERM to exit {', '.join(f'{t:.2f}' for t in times)} s (max {max(times):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
