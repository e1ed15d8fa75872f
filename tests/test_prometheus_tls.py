"""A real Prometheus scrapes the agent over TLS with basic auth, and over mutual TLS, with configs written the node_exporter way."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pcapgen as g
import pytest
from certs import Pki, make_pki
from conftest import need_tool
from prometheus import Prometheus

from agent.config import Config
from agent.runtime.agent import Agent


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def start_agent(tmp_path: Path, web_config: str) -> Agent:
    cap = g.Capture()
    for i in range(25):
        cap.add(1_700_000_000_000_000 + 1000 * i, g.eth(g.ETH_IPV4) + g.ipv4(g.UDP, "192.168.1.9", "9.9.9.9", g.udp(5000, 53, bytes(i))))
    pcap = cap.write(tmp_path / "dns.pcap")
    (tmp_path / "web.yml").write_text(web_config)
    cfg = Config().replace("capture", pcap=(str(pcap),)).replace("web", listen="127.0.0.1:0", config_file=str(tmp_path / "web.yml"))
    cfg = cfg.replace(state_dir=str(tmp_path / "state"))
    agent = Agent(cfg)
    agent.start()
    return agent


@pytest.fixture
def prometheus_binary() -> str:
    return need_tool("prometheus")


@contextlib.contextmanager
def scrape(workdir: Path, binary: str, agent: Agent, job: dict[str, object]) -> Iterator[Prometheus]:
    workdir.mkdir(exist_ok=True)
    job = {"job_name": "pktagent", "scheme": "https", "static_configs": [{"targets": [f"127.0.0.1:{agent.server.port}"]}], **job}
    prom = Prometheus(binary, workdir, [job])
    try:
        yield prom
    finally:
        prom.stop()


def test_tls_and_basic_auth(tmp_path: Path, pki: Pki, prometheus_binary: str) -> None:
    hashed = bcrypt.hashpw(b"scrape-me", bcrypt.gensalt(rounds=4)).decode()
    agent = start_agent(
        tmp_path, f"tls_server_config: {{cert_file: {pki.server_cert}, key_file: {pki.server_key}}}\nbasic_auth_users: {{prometheus: '{hashed}'}}\n"
    )
    try:
        good = {"tls_config": {"ca_file": str(pki.ca)}, "basic_auth": {"username": "prometheus", "password": "scrape-me"}}
        with scrape(tmp_path / "good", prometheus_binary, agent, good) as prom:
            prom.wait(lambda: prom.value('pktagent_packets_processed_total{interface="dns.pcap"}') == 25, 30, "no scrape over TLS")
            assert prom.value('up{job="pktagent"}') == 1
        bad = {"tls_config": {"ca_file": str(pki.ca)}, "basic_auth": {"username": "prometheus", "password": "guess"}}
        with scrape(tmp_path / "bad", prometheus_binary, agent, bad) as prom:
            prom.wait(lambda: bool(prom.targets()) and prom.targets()[0].get("lastError"), 30, "no failed scrape")
            assert "401" in prom.targets()[0]["lastError"]
            assert prom.value('up{job="pktagent"}') == 0
    finally:
        agent.stop()


def test_mutual_tls(tmp_path: Path, pki: Pki, prometheus_binary: str) -> None:
    agent = start_agent(
        tmp_path,
        f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki.ca}\n",
    )
    try:
        job = {"tls_config": {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}}
        with scrape(tmp_path / "mtls", prometheus_binary, agent, job) as prom:
            prom.wait(lambda: prom.value('pktagent_packets_processed_total{interface="dns.pcap"}') == 25, 30, "no scrape over mTLS")
        with scrape(tmp_path / "nocert", prometheus_binary, agent, {"tls_config": {"ca_file": str(pki.ca)}}) as prom:
            prom.wait(lambda: bool(prom.targets()) and prom.targets()[0].get("lastError"), 30, "no failed scrape")
            assert prom.value('up{job="pktagent"}') == 0
    finally:
        agent.stop()
