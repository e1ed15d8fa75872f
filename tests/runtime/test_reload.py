"""SIGHUP: the config file is read again; what can change while running changes, counters go on, the rest is reported."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import bcrypt
import pcapgen as g
import pytest
from certs import make_pki
from conftest import need_root, need_tool
from known import L4, R4, START_US, Known
from liveagent import live_agent
from netns import VethPair, sh
from pcapgen import ETH_IPV4, TCP, UDP, Capture, eth, ipv4, pad, tcp, udp
from scrape import Samples, free_port, get, samples
from test_live_capture import assert_counts, send, wait_processed
from waiting import until

from agent.config import Config, DeviceEntry
from agent.errors import ConfigError
from agent.runtime.agent import Agent

HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()


def capture(path: Path) -> Path:
    cap = g.Capture()
    for i in range(50):  # 10 s at 5 packets/s: the agent is still replaying it when we reload
        cap.add(1_700_000_000_000_000 + 200_000 * i, g.eth(g.ETH_IPV4) + g.ipv4(g.UDP, "192.168.1.20", "10.1.1.1", g.udp(1000, 53, bytes(10)), ident=i))
    return cap.write(path)


def values(port: int) -> Samples:
    status, body = get(f"http://127.0.0.1:{port}/metrics")
    return samples(body.decode()) if status == 200 else {}


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
        key = ("pktagent_packets_processed_total", (("interface", "udp.pcap"),))
        first = until(lambda: proc.poll() is not None or values(port).get(key), "the agent to count", timeout=15)
        assert proc.poll() is None, log.read_text()
        conf.write_text(conf.read_text() + "local_networks: [192.168.0.0/16, 10.0.0.0/8]\nflows: {max_flows: 32}\n")
        proc.send_signal(signal.SIGHUP)
        until(lambda: "reloaded the config" in log.read_text(), "the reload in the log", timeout=10)
        text = log.read_text()
        assert "reloaded the config: local_networks" in text
        assert "need a restart to take effect: flows.max_flows" in text
        # Counting goes on from where it was, not from zero: the whole capture, 50 packets, once.
        assert first > 0
        until(lambda: values(port).get(key) == 50, "all 50 packets counted", timeout=30)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0


# -- all or nothing -----------------------------------------------------------------------


def test_a_rejected_reload_applies_nothing(tmp_path: Path) -> None:
    """A filter libpcap refuses, sent with a new sampling rate: the filter is refused, and so is the rate."""
    need_root()
    cfg = Config().replace("capture", interfaces=("lo",)).replace("web", listen="127.0.0.1:0").replace(state_dir=str(tmp_path / "state"))
    agent = Agent(cfg)  # captures on lo; nothing is sent to it
    try:
        with pytest.raises(ConfigError, match=r"bpf_filter: libpcap rejects 'not a filter \(\('"):
            agent.reload(cfg.replace("capture", bpf_filter="not a filter ((").replace("pipeline", sampling_rate=0.5))
        assert agent.pipeline.sampler.rate == 1.0
        assert agent.config == cfg
        assert agent.reload(cfg.replace("pipeline", sampling_rate=0.5)) == []  # the same rate alone is taken
        assert agent.pipeline.sampler.rate == 0.5
    finally:
        agent.stop()


def web_agent(tmp_path: Path, web_config: str) -> tuple[Agent, Config, Path]:
    pcap = capture(tmp_path / "udp.pcap")
    web_file = tmp_path / "web.yml"
    web_file.write_text(web_config)
    cfg = Config().replace("capture", pcap=(str(pcap),)).replace("web", listen="127.0.0.1:0", config_file=str(web_file))
    return Agent(cfg.replace(state_dir=str(tmp_path / "state"))), cfg.replace(state_dir=str(tmp_path / "state")), web_file


@pytest.mark.parametrize("emptied", ["{}\n", ""])
def test_an_emptied_web_config_does_not_turn_basic_auth_off_on_reload(tmp_path: Path, emptied: str) -> None:
    agent, cfg, web_file = web_agent(tmp_path, f"basic_auth_users:\n  prometheus: '{HASH}'\n")
    try:
        web_file.write_text(emptied)
        with pytest.raises(ConfigError, match=r"no longer has basic_auth_users: serving without a password needs `basic_auth_users: \{\}` in it"):
            agent.reload(cfg.replace("pipeline", sampling_rate=0.5))
        assert set(agent.server.security.users) == {"prometheus"}
        assert agent.pipeline.sampler.rate == 1.0  # nothing of the rejected reload
        web_file.write_text("basic_auth_users: {}\n")  # said in so many words
        assert agent.reload(cfg) == []
        assert agent.server.security.users == {}
    finally:
        agent.stop()


def test_an_emptied_web_config_does_not_turn_tls_off_on_reload(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    agent, cfg, web_file = web_agent(tmp_path, f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n")
    try:
        assert agent.server.security.tls is not None
        web_file.write_text("{}\n")
        with pytest.raises(ConfigError, match=r"no longer has tls_server_config: serving plain HTTP needs `tls_server_config: null` in it"):
            agent.reload(cfg)
        assert agent.server.security.tls is not None
        web_file.write_text("tls_server_config: null\n")
        agent.reload(cfg)
        assert agent.server.security.tls is None
    finally:
        agent.stop()


# -- a reloaded filter and a reopened capture ----------------------------------------------


def udp_and_tcp() -> tuple[Capture, Known]:
    """9 TCP and 8 UDP frames, then a last UDP one: the capture, and what a ``udp`` filter lets through."""
    cap, kept = Capture(), Known(Capture())
    for i in range(17):
        proto, payload = (UDP, udp(5000 + i, 53, bytes(20))) if i % 3 == 0 or i > 13 else (TCP, tcp(6000 + i, 443))
        frame = pad(eth(ETH_IPV4) + ipv4(proto, L4, R4, payload, ident=i))
        cap.add(START_US + i * 10_000, frame)
        if proto == UDP:
            kept.add(frame, ("ipv4", "udp", "outbound"), UDP)
    marker = pad(eth(ETH_IPV4) + ipv4(UDP, L4, R4, udp(7777, 53, b"last"), ident=99))
    cap.add(START_US + 200_000, marker)
    kept.add(marker, ("ipv4", "udp", "outbound"), UDP)
    return cap, kept


@pytest.mark.live
def test_a_filter_set_by_sighup_stays_after_the_capture_is_reopened(veth: VethPair, tmp_path: Path) -> None:
    need_tool("tcpreplay")
    cap, kept = udp_and_tcp()
    assert (cap.frames, kept.frames) == (18, 9)
    path = cap.write(tmp_path / "mix.pcap")
    conf = tmp_path / "pktagent.yml"
    conf.write_text("pipeline: {batch_window_ms: 5}\n")
    with live_agent(veth, tmp_path, "--config", str(conf)) as a:
        conf.write_text("pipeline: {batch_window_ms: 5}\ncapture: {bpf_filter: udp}\n")
        a.proc.send_signal(signal.SIGHUP)
        until(lambda: "reloaded the config: capture.bpf_filter" in a.log.read_text(), "the reload")
        sh("ip", "-n", veth.receiver, "link", "set", veth.rx, "down")
        until(lambda: a.get("/health")[0] == 503, "the capture reported down")
        sh("ip", "-n", veth.receiver, "link", "set", veth.rx, "up")
        until(lambda: a.get("/health")[0] == 200, "the capture back")
        send(veth, veth.tx, path, cap.frames)
        samples = wait_processed(a, {veth.rx: kept.frames})
        assert_counts(samples, veth.rx, kept)  # 9 captured, all UDP: the 9 TCP frames were filtered out
        a.stop()
