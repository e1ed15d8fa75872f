"""A series budget of 0 turns the per-device or per-domain series off; everything else is counted as before."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import ROOT
from prometheus_client.parser import text_string_to_metric_families

from agent import config
from agent.cli import exposition
from agent.naming.usage import MergedUsage, TopN
from agent.runtime.replay import replay_files

sys.path.insert(0, str(ROOT / "bench"))
import home  # a capture full of named devices and domains


def samples(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return home.write_pcap(tmp_path_factory.mktemp("off") / "home.pcap", home.home_capture_frames())


@pytest.mark.parametrize(("devices", "domains"), [(0, 50), (50, 0), (0, 0)])
def test_budget_zero_turns_the_series_off(capture: Path, tmp_path: Path, devices: int, domains: int) -> None:
    path = tmp_path / "c.yml"
    path.write_text(f"devices:\n  series_budget: {devices}\n  domain_series_budget: {domains}\n")
    cfg = config.load(path)  # 0 is a valid budget
    on = samples(exposition(replay_files(config.Config(), [capture])).decode())
    got = samples(exposition(replay_files(cfg, [capture])).decode())
    device_series = {"pktagent_device_bytes_total", "pktagent_device_packets_total"}
    for name in device_series | {"pktagent_remote_bytes_total"}:
        off = devices == 0 if name in device_series else domains == 0
        assert (got.get(name, {}) == {}) if off else (got[name] == on[name]), name
        assert len(on[name]) > 8, name  # the capture does name devices and domains
    assert got["pktagent_label_series_budget"] == {(("label", "device"),): devices, (("label", "domain"),): domains}
    assert got["pktagent_label_series_dropped_total"] == {(("label", "device"),): 0, (("label", "domain"),): 0}
    assert got["pktagent_traffic_bytes_total"] == on["pktagent_traffic_bytes_total"]  # the traffic itself is counted the same
    assert got["pktagent_devices_known"] == on["pktagent_devices_known"]  # devices are still learned (`pktagent devices`)


def test_a_worker_merge_with_budget_zero_holds_nothing() -> None:
    merged = MergedUsage(TopN(budget=0, ttl_us=10_000_000, interval_us=1_000_000))
    merged.update(0, [("tv", [1000.0, 10.0, 1.0, 1.0])], now=0)
    merged.update(0, [("tv", [2000.0, 10.0, 2.0, 1.0])], now=2_000_000)  # a re-ranking: nothing to rank, nothing dropped
    assert (merged.top.series(), merged.top.dropped) == ([], 0)


def test_a_negative_budget_is_refused() -> None:
    with pytest.raises(config.ConfigError, match=r"config key devices.series_budget: must be an integer between 0 and 10000, got -1"):
        config.from_mapping({"devices": {"series_budget": -1}})
