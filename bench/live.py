"""Live benchmark: tcpreplay sends W1 through a veth pair at set rates; the agent captures on the far end.

Two network namespaces joined by a veth pair (created here, deleted at the end: nothing
leaves them). For each number of workers and each rate — 100k, 300k, 600k packets/s and
tcpreplay's top speed — a fresh agent captures in the receiver namespace while tcpreplay sends
from the sender namespace. After the send, once the agent has drained its queue, it reads
``/metrics`` and reports: packets sent, captured, processed, dropped by stage (kernel,
interface, queue), lost in total, and the agent's utilisation (busy seconds over the send's
duration, per worker). Needs root, tcpreplay and iproute2. Writes ``bench/results/live.json``.

One tcpreplay sends about 450–500k packets/s into a veth on a 2-core VM at most, so rates above
``ONE_SENDER`` (and top speed) are sent by two tcpreplay processes at once, each sending half
of the file (its first and second half, written next to it once) at half the rate. Every packet
of W1 is still sent exactly once.

    sudo python bench/live.py                   # 1 and 2 workers, all rates
    sudo python bench/live.py --workers 1 --rates 100000 top
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from netns import VethPair, require_namespaces  # noqa: E402 - the tests' namespace helper
from run import pktagent_command  # noqa: E402 - the offline benchmark's way to find the agent

PORT = 10464
ONE_SENDER = 400_000  # packets/s: above this (and at top speed), two tcpreplay processes send
FETCH = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"


def metrics(pair: VethPair) -> dict[str, float]:
    body = subprocess.run(pair.in_receiver(sys.executable, "-c", FETCH, f"http://127.0.0.1:{PORT}/metrics"), capture_output=True, text=True, check=True).stdout
    out: dict[str, float] = {}
    for line in body.splitlines():
        if line.startswith("pktagent_") and " " in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def run_one(pair: VethPair, pcap: Path, rate: str, workers: int, agent: list[str], config: Path | None) -> dict[str, object]:
    extra = ["--config", str(config)] if config else []
    proc = subprocess.Popen(
        pair.in_receiver(*agent, "run", "-i", pair.rx, "--workers", str(workers), "--listen", f"127.0.0.1:{PORT}", *extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                m = metrics(pair)
                if m.get(f'pktagent_capture_up{{interface="{pair.rx}"}}') == 1:
                    break
            except subprocess.CalledProcessError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the agent did not start")
            time.sleep(0.2)
        time.sleep(1.0)
        sent, seconds = send(pair, pcap, rate)
        # Let the agent drain its queue: wait until the figures stop moving.
        last = None
        for _ in range(50):
            time.sleep(0.3)
            m = metrics(pair)
            now = m.get(f'pktagent_packets_processed_total{{interface="{pair.rx}"}}', 0)
            if now == last:
                break
            last = now
        iface = f'interface="{pair.rx}"'
        dropped = {stage: m.get(f'pktagent_packets_dropped_total{{{iface},stage="{stage}"}}', 0.0) for stage in ("kernel", "interface", "queue")}
        captured = m.get(f"pktagent_packets_captured_total{{{iface}}}", 0.0)
        processed = m.get(f"pktagent_packets_processed_total{{{iface}}}", 0.0)
        duplicate = m.get(f"pktagent_packets_duplicate_total{{{iface}}}", 0.0)
        lost = dropped["kernel"] + dropped["interface"] + dropped["queue"]
        return {
            "workers": workers,
            "rate": rate,
            "sent": sent,
            "send_seconds": seconds,
            "offered_pps": sent / seconds,
            "captured": captured,
            "processed": processed,
            "duplicate": duplicate,
            "dropped": dropped,
            "loss": lost / sent if sent else 0.0,
            "unaccounted": sent - captured - dropped["kernel"] - dropped["interface"],
            "utilisation": m.get("pktagent_processing_busy_seconds_total", 0.0) / seconds / workers,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def halves(pcap: Path) -> list[Path]:
    """The file's first and second half (by packets), written beside it once."""
    parts = [pcap.with_name(f"{pcap.stem}.half{k}.pcap") for k in (1, 2)]
    if all(p.exists() and p.stat().st_mtime >= pcap.stat().st_mtime for p in parts):
        return parts
    from agent.capture.pcapfile import PcapMap

    m = PcapMap.open(pcap)
    if m is None:
        raise SystemExit(f"{pcap} is not a classic pcap file: it cannot be split for two senders")
    packets = []
    while (got := m.next(1 << 16)[0]).size:
        packets.append(got)
    offsets = np.concatenate(packets)  # of each packet; its record header is the 16 bytes before
    middle = int(offsets[offsets.size // 2]) - 16
    for part, (begin, end) in zip(parts, ((24, middle), (middle, m.data.size))):
        with open(part, "wb") as f:
            f.write(m.data[:24].tobytes())  # the file header
            f.write(memoryview(m.data[begin:end]))
    m.close()
    return parts


def send(pair: VethPair, pcap: Path, rate: str) -> tuple[int, float]:
    """Send the file at ``rate`` (packets/s, or "top"); the packets sent and the seconds the send took."""
    two = rate == "top" or int(rate) > ONE_SENDER
    files = halves(pcap) if two else [pcap]
    speed = ["--topspeed"] if rate == "top" else [f"--pps={int(rate) // len(files)}"]
    # Both load their half into memory first, then send: the two sends overlap.
    commands = [pair.in_sender("tcpreplay", "-i", pair.tx, "--preload-pcap", *speed, str(f)) for f in files]
    senders = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in commands]
    sent, seconds = 0, 0.0
    for proc in senders:
        out = proc.communicate()[0]
        if proc.returncode != 0:
            raise SystemExit(f"tcpreplay failed: {out.strip()}")
        sent += int(re.search(r"Successful packets:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
        seconds = max(seconds, float(re.search(r"Actual: \d+ packets \(\d+ bytes\) sent in ([\d.]+) seconds", out).group(1)))  # type: ignore[union-attr]
    return sent, seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rates", nargs="+", default=["100000", "300000", "600000", "top"])
    ap.add_argument("--pcap", type=Path, default=HERE / "data" / "w1.pcap")
    ap.add_argument("--config", type=Path, help="agent config to run with (e.g. a larger capture.buffer_bytes)")
    args = ap.parse_args(argv)
    require_namespaces("the live benchmark")
    if not args.pcap.exists():
        subprocess.run([sys.executable, str(HERE / "workloads.py"), "--out", str(args.pcap.parent), "w1"], check=True)
    agent = pktagent_command()
    pair = VethPair.create("bench")
    rows = []
    try:
        for workers in args.workers:
            for rate in args.rates:
                row = run_one(pair, args.pcap, rate, workers, agent, args.config)
                rows.append(row)
                d = row["dropped"]
                assert isinstance(d, dict)
                print(
                    f"workers={workers} rate={rate:>7} sent={row['sent']:>8} offered={row['offered_pps']:>9,.0f}/s captured={row['captured']:>9,.0f} "
                    f"processed={row['processed']:>9,.0f} dropped kernel={d['kernel']:,.0f} interface={d['interface']:,.0f} queue={d['queue']:,.0f} "
                    f"loss={row['loss']:.2%} unaccounted={row['unaccounted']:.0f} utilisation={row['utilisation']:.2f}",
                    flush=True,
                )
    finally:
        pair.delete()
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "live.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"written: {out / 'live.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
