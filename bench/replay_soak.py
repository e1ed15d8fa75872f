"""Replay soak: `pktagent run --pcap --loop` of a million-flow flood at its recorded pace; its memory must stay bounded.

A paced replay hands on what is due every few milliseconds, so a flood recorded at 50k
packets/s becomes many small batches; each once kept its whole read alive in the queue, and
RSS grew without bound (449 MB to 1.67 GB in 120 s). This runs the agent on such a file
(``workloads.flood``, 1M SYNs from random sources, timestamps spread to ``--pps``) for
``--seconds``, samples the RSS of the agent's processes every ``--interval`` seconds, and
fails (exit 1) when any sample is over ``--rss-limit-mb``. Needs nothing but the agent: the
replay reads a file and serves on loopback.

    python bench/replay_soak.py                        # 3 minutes, limit 200 MB
    python bench/replay_soak.py --seconds 600 --json replay-soak.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cost import peak_rss_mib, rss_mib  # noqa: E402 - the cost benchmark's /proc readers
from run import pktagent_command  # noqa: E402
from workloads import flood, write_pcap  # noqa: E402


def flood_file(path: Path, packets: int, pps: int) -> Path:
    if not path.exists():
        p, _ = flood(packets)
        p.ts_us = 1_700_000_000_000_000 + (np.arange(packets, dtype=np.int64) * 1_000_000) // pps
        path.parent.mkdir(parents=True, exist_ok=True)
        write_pcap(path, p)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--interval", type=float, default=10)
    ap.add_argument("--packets", type=int, default=1_000_000, help="flows in the flood, one SYN each")
    ap.add_argument("--pps", type=int, default=50_000, help="recorded pace of the file")
    ap.add_argument("--rss-limit-mb", type=float, default=200)
    ap.add_argument("--port", type=int, default=10479)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    pcap = flood_file(HERE / "data" / f"flood-{args.packets}-{args.pps}pps.pcap", args.packets, args.pps)
    samples: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="pktagent-replay-soak-") as state:
        cmd = [*pktagent_command(), "run", "--pcap", str(pcap), "--loop", "--listen", f"127.0.0.1:{args.port}", "--state-dir", state]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = time.monotonic()
        try:
            while time.monotonic() - started < args.seconds:
                time.sleep(args.interval)
                if proc.poll() is not None:
                    raise SystemExit(f"the agent exited with status {proc.returncode}")
                samples.append((round(time.monotonic() - started, 1), round(rss_mib(proc.pid) * 1.048576, 1)))
                print(f"{samples[-1][0]:7.1f} s  RSS {samples[-1][1]:7.1f} MB", flush=True)
            peak = peak_rss_mib(proc.pid) * 1.048576
        finally:
            proc.terminate()
            proc.wait(15)
    top = max(r for _, r in samples)
    summary = {"seconds": args.seconds, "pps": args.pps, "flows": args.packets, "samples": samples, "max_rss_mb": top, "peak_rss_mb": round(peak, 1)}
    print(json.dumps({k: v for k, v in summary.items() if k != "samples"}))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    if peak > args.rss_limit_mb:
        print(f"peak RSS {peak:.1f} MB is over {args.rss_limit_mb:g} MB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
