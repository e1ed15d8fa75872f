"""SIGHUP: the config file is read again; what can change while running changes, counters go on, the rest is reported."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pcapgen as g
from prometheus import free_port
from prometheus_client.parser import text_string_to_metric_families
from waiting import until

from agent.app import Agent
from agent.config import Config, DeviceEntry


def capture(path: Path) -> Path:
    cap = g.Capture()
    for i in range(50):  # 10 s at 5 packets/s: the agent is still replaying it when we reload
        cap.add(1_700_000_000_000_000 + 200_000 * i, g.eth(g.ETH_IPV4) + g.ipv4(g.UDP, "192.168.1.20", "10.1.1.1", g.udp(1000, 53, bytes(10)), ident=i))
    return cap.write(path)


def values(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(body) for s in f.samples}


def test_reload_applies_what_can_change_and_reports_the_rest(tmp_path: Path) -> None:
    pcap = capture(tmp_path / "udp.pcap")
    cfg = Config().replace("capture", pcap=(str(pcap),)).replace("web", listen="127.0.0.1:0").replace(state_dir=str(tmp_path / "state"))
    agent = Agent(cfg)
    agent.start()
    try:
        # A batch is handed on within the batch window (1 s): wait for the first, not a fixed time.
        before = until(lambda: (snap := agent.snapshot()).traffic_packets[0].sum() > 0 and snap, "the first packets counted")
        # 10.1.1.1 becomes local (internal instead of outbound), the inventory names 192.168.1.20, the listen port changes.
        new = cfg.replace(local_networks=("192.168.0.0/16", "10.0.0.0/8")).replace("devices", inventory=(DeviceEntry("nas", addresses=("192.168.1.20",)),))
        later = agent.reload(new.replace("web", listen="127.0.0.1:1"))
        assert later == ["web.listen"]
        at_reload = agent.snapshot()
        after = until(lambda: (snap := agent.snapshot()).processed[0] > at_reload.processed[0] and snap, "packets counted after the reload")
        assert int(after.processed[0]) > int(at_reload.processed[0]) >= int(before.processed[0])  # counting went on, nothing reset
        outbound, internal = (after.traffic_packets[0, 0, 1, d] for d in (1, 2))  # ipv4, udp, by direction
        assert outbound == at_reload.traffic_packets[0, 0, 1, 1]  # not one more outbound packet after the reload
        assert internal == int(after.processed[0]) - int(at_reload.processed[0]) + at_reload.traffic_packets[0, 0, 1, 2]
        assert internal > 0
        assert {s.name for s in after.device_series if s.tx_packets} >= {"nas"}
    finally:
        agent.stop()


def test_sighup_reloads_the_file_and_keeps_the_process(tmp_path: Path) -> None:
    pcap = capture(tmp_path / "udp.pcap")
    port = free_port()
    conf = tmp_path / "pktagent.yml"
    conf.write_text(f"capture: {{pcap: [{pcap}]}}\nweb: {{listen: '127.0.0.1:{port}'}}\nstate_dir: {tmp_path / 'state'}\n")
    log = tmp_path / "agent.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(conf)], stderr=err)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                first = values(port)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                time.sleep(0.2)
        conf.write_text(conf.read_text() + "local_networks: [192.168.0.0/16, 10.0.0.0/8]\nflows: {max_flows: 32}\n")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "reloaded the config" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        text = log.read_text()
        assert "reloaded the config: local_networks" in text
        assert "need a restart to take effect: flows.max_flows" in text
        time.sleep(1.0)
        second = values(port)
        key = ("pktagent_packets_processed_total", frozenset({("interface", "udp.pcap")}))
        assert second[key] >= first[key]
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
