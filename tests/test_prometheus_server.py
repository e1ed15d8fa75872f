"""A real Prometheus server (Debian's) scrapes a running agent, and its query API returns the agent's exact figures.

The agent replays a short capture with known answers at its recorded pace (``run --pcap``,
no ``--loop``), so its final totals are known; Prometheus scrapes it every second on
loopback. Every wait polls against a deadline, and both processes are always stopped.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conftest import need_tool
from known import mixed
from scrape import free_port, get
from waiting import until

BIN = Path(sys.executable).parent
CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: pktagent
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


@contextmanager
def process(args: list[str], log: Path, *, stop_within: float) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=stop_within)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def test_prometheus_scrapes_the_agent(tmp_path: Path) -> None:
    prometheus = need_tool("prometheus")
    k = mixed()
    capture = k.capture.write(tmp_path / "mixed.pcap")
    agent_port = free_port()
    prom_port = until(lambda: (p := free_port()) != agent_port and p, "a second free port", timeout=30)
    config = tmp_path / "prometheus.yml"
    config.write_text(CONFIG.format(port=agent_port))
    agent_args = [str(BIN / "pktagent"), "run", "--pcap", str(capture), "--listen", f"127.0.0.1:{agent_port}", "--state-dir", str(capture.parent / "state")]
    prom_args = [
        prometheus,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
    ]
    api = f"http://127.0.0.1:{prom_port}"

    def query(expr: str) -> list[dict[str, Any]]:
        status, body = get(f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert status == 200, body
        answer = json.loads(body)
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def value(expr: str) -> float | None:
        result = query(expr)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    with (
        process(agent_args, tmp_path / "agent.log", stop_within=2) as agent,
        process(prom_args, tmp_path / "prometheus.log", stop_within=10) as prom,
    ):
        # 200 while the file is read, 503 once it has ended (no --loop): either way the agent serves.
        until(lambda: agent.poll() is not None or get(f"http://127.0.0.1:{agent_port}/health")[0] in (200, 503), "the agent to serve /health", timeout=30)
        assert agent.poll() is None, (tmp_path / "agent.log").read_text()
        until(lambda: prom.poll() is not None or get(f"{api}/-/ready")[0] == 200, "Prometheus to be ready", timeout=30)
        assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()
        # The replay is over once every frame is processed, and a scrape after that holds the final totals.
        until(lambda: value('pktagent_packets_processed_total{job="pktagent"}') == k.frames, f"Prometheus to see {k.frames} packets processed", timeout=30)

        target = {"instance": f"127.0.0.1:{agent_port}", "job": "pktagent"}
        (series,) = query("pktagent_packets_processed_total")
        assert series["metric"] == {"__name__": "pktagent_packets_processed_total", "interface": "mixed.pcap", **target}
        assert value("sum(pktagent_traffic_bytes_total)") == k.wire_bytes
        assert value("sum(pktagent_traffic_packets_total)") == k.frames
        assert value("pktagent_packets_duplicate_total") == 0
        started = {r["metric"]["transport"]: float(r["value"][1]) for r in query("pktagent_flows_started_total")}
        assert started == k.flows_started
        (up,) = query("up == 1")
        assert up["metric"] == {"__name__": "up", **target}
        # The file has ended and there is no --loop: the capture is over, and says so.
        until(lambda: value('pktagent_capture_up{interface="mixed.pcap"}') == 0, "pktagent_capture_up to go 0 at the end of the file")

        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=2) == 0
    assert "Traceback" not in (tmp_path / "agent.log").read_text()
