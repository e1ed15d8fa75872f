"""Configuration: defaults, and one clear message per kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import config
from agent.errors import ConfigError


def test_defaults() -> None:
    c = config.Config()
    assert (c.pipeline.batch_size, c.pipeline.batch_window_ms, c.dedup.window_ms) == (8192, 1000.0, 1.0)
    assert (c.pipeline.batch_bytes, c.pipeline.queue_capacity_bytes) == (4 << 20, 64 << 20)
    assert c.capture.buffer_bytes == 0  # the kernel ring sized from the host
    assert (c.devices.cache_ttl_seconds, c.flows.idle_timeout_seconds, c.flows.active_timeout_seconds) == (300.0, 60.0, 1800.0)
    assert c.web.listen == "0.0.0.0:10464"
    assert "192.168.0.0/16" in c.local_networks and "fe80::/10" in c.local_networks


@pytest.mark.parametrize("value", [1, 65535])
def test_a_kernel_ring_below_64_kib_is_refused(value: int) -> None:
    with pytest.raises(ConfigError, match=r"^config key capture.buffer_bytes: must be 0 \(sized from the host\) or at least 65536, got "):
        config.Config().replace("capture", buffer_bytes=value)
    assert config.Config().replace("capture", buffer_bytes=65536).capture.buffer_bytes == 65536


def test_full_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yml"
    f.write_text(
        """
capture: {interfaces: [eth0, wlan0], snaplen: 256, promiscuous: true, bpf_filter: "not port 22"}
pipeline: {batch_size: 1024, sampling_rate: 0.25}
dedup: {window_ms: 2}
flows: {max_flows: 1000, idle_timeout_seconds: 30}
devices:
  cache_ttl_seconds: 60
  inventory:
    - {name: tv, macs: ["02:00:00:aa:bb:cc"], addresses: [192.168.1.20, "fd00::20"]}
local_networks: [192.168.1.0/24]
web: {listen: "[::]:9999"}
state_dir: /tmp/x
"""
    )
    c = config.load(f)
    assert c.capture.interfaces == ("eth0", "wlan0")
    assert (c.capture.snaplen, c.pipeline.sampling_rate, c.flows.max_flows, c.dedup.window_ms) == (256, 0.25, 1000, 2.0)
    assert c.devices.inventory[0].addresses == ("192.168.1.20", "fd00::20")
    assert config.listen_address(c.web.listen) == ("::", 9999)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pipeline: {batchsize: 10}", "config key pipeline.batchsize: unknown key; did you mean 'batch_size'?"),
        ("flows: {max_flows: lots}", "config key flows.max_flows: must be an integer between 16 and 16777216, got 'lots'"),
        ("flows: {max_flows: 2}", "config key flows.max_flows: must be an integer between 16 and 16777216, got 2"),
        ("pipeline: {sampling_rate: 2}", "config key pipeline.sampling_rate: must be a number between 1e-06 and 1, got 2"),
        ("capture: {promiscuous: 'yes'}", "config key capture.promiscuous: must be true or false, got 'yes'"),
        ("capture: {interfaces: 3}", "config key capture.interfaces: must be a list, got 3"),
        ("local_networks: [192.168.1.0/33]", "config key local_networks[0]: '192.168.1.0/33' is not a network"),
        ("devices: {inventory: [{macs: []}]}", "config key devices.inventory[0].name: required"),
        ("devices: {inventory: [{name: tv, macs: [xx]}]}", "config key devices.inventory[0].macs[0]: 'xx' is not a MAC address"),
        ("devices: {inventory: [{name: tv}, {name: tv}]}", "config key devices.inventory[1].name: device 'tv' is listed twice"),
        ("web: {listen: nowhere}", "config key web.listen: 'nowhere' is not HOST:PORT"),
        ("capture: {interfaces: [eth0], pcap: [a.pcap]}", "choose one source"),
        ("[1, 2]", "the config: must be a mapping of keys to values, got list"),
        ("pipeline: [", "not valid YAML at line 2"),
        ("otlp: {headers: ['Bearer s3cret']}", "config key otlp.headers[0]: must be name=value, such as authorization=Bearer <token>"),
    ],
)
def test_mistakes_name_the_key_and_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "c.yml"
    f.write_text(text + "\n")
    with pytest.raises(ConfigError) as e:
        config.load(f)
    assert message in str(e.value)
    assert str(e.value).startswith(str(f))
    assert "\n" not in str(e.value)
    assert "s3cret" not in str(e.value)  # a header value may be a secret: never repeated


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*nope\.yml: No such file or directory"):
        config.load(tmp_path / "nope.yml")


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    f = tmp_path / "c.yml"
    f.write_text("")
    assert config.load(f) == config.Config()
