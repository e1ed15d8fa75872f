"""A scrape storm: many threads GET one URL at the same moment, round after round; the results as JSON on stdout.

Run inside the agent's network namespace by ``test_scrape_storm.py`` (standard library only,
so it starts fast and parses nothing heavy while the agent is under load)::

    python storm_client.py URL --threads 100 --min-rounds 5 --max-rounds 40 --stop-file PATH

Each round starts all threads together (a barrier) and ends when every one has its answer.
Rounds go on until ``--stop-file`` exists and ``--min-rounds`` are done (or ``--max-rounds``).
For each scrape it reports: thread, round, when it was sent and answered (this process's
monotonic clock), the HTTP status, the body's length, and the lines of the accounting metrics;
for thread 0 the whole body too, to be parsed in full afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.request

KEPT = ("pktagent_packets_", "pktagent_traffic_packets_total", "pktagent_unsupported_link_packets_total", "pktagent_exporter_errors_total")


def scrape(url: str, timeout: float) -> tuple[int | str, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except Exception as e:  # every failure is a result the test judges
        return f"{type(e).__name__}: {e}", ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--threads", type=int, default=100)
    ap.add_argument("--min-rounds", type=int, default=5)
    ap.add_argument("--max-rounds", type=int, default=40)
    ap.add_argument("--stop-file", default="")
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args(argv)
    results: list[dict[str, object]] = []
    lock = threading.Lock()
    go = threading.Barrier(args.threads + 1)
    done = threading.Barrier(args.threads + 1)
    stop = threading.Event()

    def worker(k: int) -> None:
        n = 0
        while True:
            go.wait()
            if stop.is_set():
                return
            sent = time.monotonic()
            status, body = scrape(args.url, args.timeout)
            answered = time.monotonic()
            row: dict[str, object] = {
                "thread": k,
                "round": n,
                "sent": sent,
                "answered": answered,
                "status": status,
                "bytes": len(body),
                "lines": [line for line in body.splitlines() if line.startswith(KEPT)],
            }
            if k == 0:
                row["body"] = body
            with lock:
                results.append(row)
            n += 1
            done.wait()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(args.threads)]
    for t in threads:
        t.start()
    rounds = 0
    started = time.monotonic()
    while True:
        go.wait()
        done.wait()
        rounds += 1
        stopped = bool(args.stop_file) and os.path.exists(args.stop_file)
        if rounds >= args.max_rounds or (rounds >= args.min_rounds and stopped):
            break
    stop.set()
    go.wait()
    for t in threads:
        t.join(5)
    json.dump({"rounds": rounds, "seconds": time.monotonic() - started, "scrapes": results}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
