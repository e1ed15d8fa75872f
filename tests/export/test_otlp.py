"""OTLP export to a real OTLP/HTTP receiver: the same values Prometheus sees, failures counted and survived."""

from __future__ import annotations

from pathlib import Path

import pcapgen as g
import pytest
from otlp_receiver import Receiver
from prometheus_client.parser import text_string_to_metric_families
from scrape import Samples, family, samples
from waiting import until

from agent.base import labels
from agent.cli import exposition
from agent.config import Config, OtlpConfig
from agent.export.catalogue import CATALOGUE
from agent.export.otlp import metrics_endpoint
from agent.runtime.agent import Agent, otlp_enabled


def fixture(path: Path, packets: int = 40) -> Path:
    cap = g.Capture()
    for i in range(packets):  # 40 packets over 0.2 s: a paced replay is over quickly
        src, dst = ("192.168.1.2", "93.184.216.34") if i % 2 else ("93.184.216.34", "192.168.1.2")
        cap.add(1_700_000_000_000_000 + 5000 * i, g.eth(g.ETH_IPV4) + g.ipv4(g.TCP, src, dst, g.tcp(40000 + i % 4, 443, g.ACK, bytes(i))))
    # and one frame whose TCP header is cut short: a decode error (transport "other", no flow)
    cap.add(1_700_000_000_200_000, g.eth(g.ETH_IPV4) + g.ipv4(g.TCP, "192.168.1.2", "93.184.216.34", g.tcp(1, 2)[:10]))
    return cap.write(path)


def agent_for(pcap: Path, endpoint: str, **otlp: object) -> Agent:
    cfg = Config().replace("capture", pcap=(str(pcap),)).replace("web", listen="127.0.0.1:0").replace(state_dir=str(pcap.parent / "state"))
    return Agent(cfg.replace("otlp", enabled=True, endpoint=endpoint, interval_seconds=0.5, **otlp))


def prometheus_values(agent: Agent) -> Samples:
    return samples(exposition(agent.snapshot()).decode())


def test_receiver_gets_every_metric_with_the_values_prometheus_sees(tmp_path: Path) -> None:
    receiver = Receiver()
    agent = agent_for(fixture(tmp_path / "a.pcap"), receiver.endpoint)
    agent.start()
    try:
        until(lambda: int(agent.snapshot().processed.sum()) == 41)
        seen = len(receiver.requests)
        until(lambda: len(receiver.requests) >= seen + 2)  # an export that surely saw all 40
        got = receiver.latest()
        prom = prometheus_values(agent)
    finally:
        agent.stop()
        receiver.close()
    expected = {f.otel for f in CATALOGUE if f.otel_kind not in ("resource", "none")}
    assert expected <= set(got), f"missing: {expected - set(got)}"
    iface = "a.pcap"
    assert dict((tuple(sorted(a.items())), v) for a, v in got["pktagent.packets.processed"]) == {(("network.interface.name", iface),): 41}
    assert prom[("pktagent_packets_processed_total", (("interface", iface),))] == 41
    errors = {(a["pktagent.decode.layer"], a["error.type"]): v for a, v in got["pktagent.decode.errors"]}
    prom_errors = {(dict(k)["layer"], dict(k)["reason"]): v for k, v in family(prom, "pktagent_decode_errors_total").items()}
    assert errors == prom_errors
    assert {k: v for k, v in errors.items() if v} == {("tcp", "truncated"): 1}
    assert len(errors) == len(labels.DECODE_ERRORS) == 28  # every (layer, reason) has its series from the start
    traffic = {(a["network.type"], a["network.transport"], a["pktagent.traffic.direction"]): v for a, v in got["pktagent.traffic.io"]}
    prom_traffic = {(dict(k)["network"], dict(k)["transport"], dict(k)["direction"]): v for k, v in family(prom, "pktagent_traffic_bytes_total").items()}
    assert traffic == prom_traffic
    assert sum(traffic.values()) == sum(54 + i for i in range(40)) + 44
    started = {a["network.transport"]: v for a, v in got["pktagent.flows.started"]}
    assert started["tcp"] == 4 == prom[("pktagent_flows_started_total", (("transport", "tcp"),))]
    assert got["pktagent.batch.size"][0][1] == prom[("pktagent_batch_size_packets_count", ())]
    resource = receiver.resource()
    assert resource["service.name"] == "pktagent" and resource["host.arch"] in ("amd64", "arm64", "arm32")
    assert {"service.version", "host.name"} <= set(resource)


def test_collector_down_then_back(tmp_path: Path) -> None:
    probe = Receiver()
    port = probe.port
    probe.close()  # the collector is away: nothing listens on its port
    agent = agent_for(fixture(tmp_path / "b.pcap"), f"http://127.0.0.1:{port}/v1/metrics", timeout_seconds=0.5)
    agent.start()
    try:
        until(lambda: (agent.snapshot().otlp_exports or {}).get("failure", 0) >= 2)
        assert int(agent.snapshot().processed.sum()) == 41  # capture went on regardless
        receiver = Receiver(port)
        try:
            until(lambda: len(receiver.requests) >= 1)
            until(lambda: (agent.snapshot().otlp_exports or {}).get("success", 0) >= 1)
            processed = dict((tuple(sorted(a.items())), v) for a, v in receiver.latest()["pktagent.packets.processed"])
            assert processed == {(("network.interface.name", "b.pcap"),): 41}
        finally:
            receiver.close()
        counts = family(prometheus_values(agent), "pktagent_otlp_exports_total")
        assert counts[(("result", "failure"),)] >= 2 and counts[(("result", "success"),)] >= 1
    finally:
        agent.stop()


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://collector:4318/v1/metrics"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_standard_environment_variables_turn_export_on(env: dict[str, str], on: bool) -> None:
    assert otlp_enabled(OtlpConfig(), env) is on
    assert otlp_enabled(OtlpConfig(enabled=True), {}) is True


def test_an_endpoint_without_a_path_gets_the_metrics_path(tmp_path: Path) -> None:
    receiver = Receiver()
    agent = agent_for(fixture(tmp_path / "d.pcap", packets=2), f"http://127.0.0.1:{receiver.port}")
    agent.start()
    try:
        until(lambda: len(receiver.requests) >= 1)
        assert receiver.wrong_paths == []
    finally:
        agent.stop()
        receiver.close()
    assert metrics_endpoint("http://collector:4318/", "http/protobuf") == "http://collector:4318/v1/metrics"
    assert metrics_endpoint("http://collector:4318/custom/metrics", "http/protobuf") == "http://collector:4318/custom/metrics"
    assert metrics_endpoint("http://collector:4317", "grpc") == "http://collector:4317"


def test_every_prometheus_family_has_an_otlp_name(tmp_path: Path) -> None:
    receiver = Receiver()
    agent = agent_for(fixture(tmp_path / "c.pcap", packets=2), receiver.endpoint)
    try:
        families = {f.name for f in text_string_to_metric_families(exposition(agent.snapshot()).decode())}
    finally:
        agent.stop()
        receiver.close()
    mapped = {f.name.removesuffix("_total") for f in CATALOGUE}
    assert families - {"pktagent_build"} <= mapped | {"pktagent_build_info"}, families - mapped
