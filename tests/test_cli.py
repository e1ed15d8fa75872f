"""The ``pktagent`` command as a user meets it: a real subprocess, its exit status, stdout and stderr.

A mistake a user can make (a file that is not a capture, a bad filter, a bad config key, no
capture privilege) ends with exit status 1 and one line on stderr that names the culprit;
a traceback never reaches the user.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

import pcapy
import pytest
from conftest import need_root, need_tool
from known import L4, R4, Known, mixed
from pcapgen import ACK, ETH_IPV4, ICMP, TCP, Capture, eth, icmp_echo, ipv4, pad, tcp
from scrape import free_port, samples

import agent

# The console script the package installs, as a user runs it.
BIN = Path(sys.executable).parent
PKTAGENT = [str(BIN / "pktagent")] if (BIN / "pktagent").exists() else [sys.executable, "-m", "agent"]


def pktagent(*args: str, prefix: tuple[str, ...] = (), cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*prefix, *PKTAGENT, *args], capture_output=True, text=True, timeout=60, cwd=cwd)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def capture(tmp_path: Path) -> tuple[Known, Path]:
    k = mixed()
    return k, k.capture.write(tmp_path / "mixed.pcap")


def test_version() -> None:
    done = pktagent("--version")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith(f"pktagent, version {agent.__version__} (revision: ")  # the rest: test_version.py


def test_no_command_is_a_usage_error() -> None:
    done = pktagent()
    assert done.returncode == 2
    assert done.stderr.startswith("usage: pktagent")


# -- replay -----------------------------------------------------------------------------------


def test_replay_prints_prometheus_text(capture: tuple[Known, Path]) -> None:
    k, path = capture
    done = pktagent("replay", str(path))
    assert (done.returncode, done.stderr) == (0, "")
    found = samples(done.stdout)
    iface = (("interface", "mixed.pcap"),)
    assert found[("pktagent_packets_captured_total", iface)] == k.frames
    assert found[("pktagent_packets_processed_total", iface)] == k.frames
    assert found[("pktagent_packets_duplicate_total", iface)] == 0
    traffic = {
        (dict(labels)["network"], dict(labels)["transport"], dict(labels)["direction"]): value
        for (name, labels), value in found.items()
        if name == "pktagent_traffic_packets_total"
    }
    assert traffic == k.packets_by_cell()
    octets = {
        (dict(labels)["network"], dict(labels)["transport"], dict(labels)["direction"]): value
        for (name, labels), value in found.items()
        if name == "pktagent_traffic_bytes_total"
    }
    assert octets == k.bytes_by_cell()
    started = {dict(labels)["transport"]: value for (name, labels), value in found.items() if name == "pktagent_flows_started_total"}
    assert started == k.flows_started
    (build,) = [dict(labels) for (name, labels), _ in found.items() if name == "pktagent_build_info"]
    assert build["version"] == agent.__version__
    assert build["python_version"] == platform.python_version()
    assert build["libpcap_version"][0].isdigit()


def test_replay_prints_json(capture: tuple[Known, Path]) -> None:
    k, path = capture
    done = pktagent("replay", str(path), "--format", "json")
    assert (done.returncode, done.stderr) == (0, "")
    out = json.loads(done.stdout)
    assert out["version"] == agent.__version__
    iface = out["interfaces"]["mixed.pcap"]
    assert iface["packets_captured"] == iface["packets_processed"] == k.frames
    assert iface["packets_duplicate"] == iface["packets_sampled_out"] == iface["unsupported_link_packets"] == 0
    assert iface["packets_dropped"] == {"kernel": 0, "interface": 0, "queue": 0, "reopen": 0}
    assert iface["traffic_packets"] == k.frames
    assert iface["traffic_bytes"] == k.wire_bytes
    assert {(c["network"], c["transport"], c["direction"]): c["packets"] for c in iface["traffic"]} == k.packets_by_cell()
    assert {(c["network"], c["transport"], c["direction"]): c["bytes"] for c in iface["traffic"]} == k.bytes_by_cell()
    assert iface["decode_errors"] == {}
    assert out["flows"]["started"] == k.flows_started


def test_replay_of_a_file_that_is_not_a_capture(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not packets\n")
    done = pktagent("replay", str(notes))
    assert done.returncode == 1
    assert done.stdout == ""
    assert one_line(done.stderr) == f"pktagent: CaptureError: {notes} is not a capture file: expected pcap or pcapng"


def test_replay_of_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pcap"
    done = pktagent("replay", str(missing))
    assert done.returncode == 1
    assert done.stdout == ""
    line = one_line(done.stderr)
    assert str(missing) in line
    assert "No such file or directory" in line


@pytest.mark.parametrize("command", ["replay", "run"])
def test_a_fifo_given_as_a_capture_file_is_refused_in_one_line(tmp_path: Path, command: str) -> None:
    """A capture file is opened more than once; a FIFO would hang on the second open, with its writer gone."""
    fifo = tmp_path / "stream.pcap"
    os.mkfifo(fifo)
    path = mixed(big=False).capture.write(tmp_path / "mixed.pcap")
    writer = subprocess.Popen(["sh", "-c", f"cat {path} > {fifo}"], stderr=subprocess.DEVNULL)
    try:
        args = ("replay", str(fifo)) if command == "replay" else ("run", "--pcap", str(fifo), "--listen", "127.0.0.1:0")
        done = pktagent(*args)
    finally:
        writer.kill()
        writer.wait(10)
    assert done.returncode == 1
    assert one_line(done.stderr) == f"pktagent: CaptureError: {fifo} is a FIFO: give a capture file (`cat {fifo} > capture.pcap` saves a stream to one)"


def _cut(k: Known, path: Path, *, pcapng: bool, keep: int, into_header: bool) -> Path:
    """Write the capture and cut it inside record number ``keep`` (counting from 0): in its header or its frame."""
    k.capture.write(path, pcapng=pcapng)
    data = path.read_bytes()
    if pcapng:
        # Section header (28 bytes) and interface description (20) blocks; each packet block has
        # 28 bytes before the frame, padding to 4 bytes, and its length again (4).
        blocks = [28 + 20]
        for p in k.capture.packets:
            blocks.append(blocks[-1] + 28 + len(p.frame) + (-len(p.frame) % 4) + 4)
        header = 28
    else:
        blocks = [24]
        for p in k.capture.packets:
            blocks.append(blocks[-1] + 16 + len(p.frame))
        header = 16
    assert blocks[-1] == len(data)
    at = blocks[keep] + (header // 2 if into_header else header + 10)
    path.write_bytes(data[:at])
    return path


@pytest.mark.parametrize("pcapng", [False, True], ids=["pcap", "pcapng"])
@pytest.mark.parametrize("into_header", [False, True], ids=["in-frame", "in-record-header"])
def test_replay_of_a_capture_cut_short(tmp_path: Path, pcapng: bool, into_header: bool) -> None:
    k = mixed()
    keep = 7
    path = _cut(k, tmp_path / ("cut.pcapng" if pcapng else "cut.pcap"), pcapng=pcapng, keep=keep, into_header=into_header)
    done = pktagent("replay", str(path), "--format", "json")
    assert done.returncode == 0
    warning = one_line(done.stderr)
    assert warning.startswith("pktagent: WARNING: ")
    assert str(path) in warning
    iface = json.loads(done.stdout)["interfaces"][path.name]
    before = Known(Capture(packets=k.capture.packets[:keep]), cells=k.cells[:keep])
    assert iface["packets_captured"] == iface["packets_processed"] == keep
    assert {(c["network"], c["transport"], c["direction"]): c["packets"] for c in iface["traffic"]} == before.packets_by_cell()
    assert iface["traffic_bytes"] == before.wire_bytes


def test_cut_short_warning_says_where_the_damage_is(tmp_path: Path) -> None:
    k = mixed()
    path = _cut(k, tmp_path / "cut.pcap", pcapng=False, keep=7, into_header=False)
    warning = one_line(pktagent("replay", str(path)).stderr)
    # The packets before the damage were all read: the warning should not say fewer.
    assert "after packet 7:" in warning


def test_replay_with_an_invalid_bpf_filter(capture: tuple[Known, Path]) -> None:
    _, path = capture
    expression = "port 99999"
    with pytest.raises(pcapy.PcapError) as libpcap:
        pcapy.open_offline(str(path)).setfilter(expression)
    done = pktagent("replay", str(path), "--bpf", expression)
    assert done.returncode == 1
    assert done.stdout == ""
    line = one_line(done.stderr)
    assert str(libpcap.value) in line
    assert repr(expression) in line


def test_replay_with_a_bpf_filter(capture: tuple[Known, Path]) -> None:
    k, path = capture
    done = pktagent("replay", str(path), "--bpf", "icmp or icmp6", "--format", "json")
    assert (done.returncode, done.stderr) == (0, "")
    iface = json.loads(done.stdout)["interfaces"]["mixed.pcap"]
    wanted = k.count(transport="icmp") + k.count(transport="icmpv6")
    assert iface["packets_captured"] == iface["packets_processed"] == wanted == 4
    assert iface["traffic_bytes"] == k.wire_bytes_where(transport="icmp") + k.wire_bytes_where(transport="icmpv6")


@pytest.mark.parametrize("pcapng", [False, True], ids=["pcap", "pcapng"])
def test_replay_with_a_bpf_filter_counts_the_wire_length_of_the_frames_it_keeps(tmp_path: Path, pcapng: bool) -> None:
    # A frame the filter skips, cut by the snaplen (128 of 1454 bytes), then the one it keeps:
    # the kept frame's length on the wire must come from its own record, not the skipped one's.
    c = Capture(snaplen=128)
    c.add(1_000_000, pad(eth(ETH_IPV4) + ipv4(TCP, L4, R4, tcp(40000, 443, ACK, bytes(1400)))), cut=128)
    c.add(1_010_000, pad(eth(ETH_IPV4) + ipv4(ICMP, L4, R4, icmp_echo())))
    path = c.write(tmp_path / ("skip.pcapng" if pcapng else "skip.pcap"), pcapng=pcapng)
    done = pktagent("replay", str(path), "--bpf", "icmp", "--format", "json")
    assert (done.returncode, done.stderr) == (0, "")
    iface = json.loads(done.stdout)["interfaces"][path.name]
    assert iface["packets_captured"] == 1
    assert iface["traffic_bytes"] == 60


# -- check-config -----------------------------------------------------------------------------

VALID = """\
capture:
  snaplen: 1500
  bpf_filter: not port 22
pipeline:
  sampling_rate: 0.5
flows:
  max_flows: 1000
  idle_timeout_seconds: 30
local_networks: [192.168.0.0/16, fd00::/8]
devices:
  inventory:
    - name: printer
      macs: ["02:00:00:aa:bb:cc"]
      addresses: [192.168.1.20]
web:
  listen: 127.0.0.1:9100
"""


def test_check_config_valid(tmp_path: Path) -> None:
    path = tmp_path / "pktagent.yaml"
    path.write_text(VALID)
    done = pktagent("check-config", str(path))
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{path}: valid\n", "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("flows:\n  max_flow: 100\n", "config key flows.max_flow: unknown key; did you mean 'max_flows'?", id="unknown-key"),
        pytest.param("flows:\n  max_flows: lots\n", "config key flows.max_flows: must be an integer between 16 and 16777216, got 'lots'", id="wrong-type"),
        pytest.param("capture:\n  promiscuous: 1\n", "config key capture.promiscuous: must be true or false, got 1", id="not-a-bool"),
        pytest.param("pipeline:\n  sampling_rate: 2\n", "config key pipeline.sampling_rate: must be a number between", id="out-of-range"),
        pytest.param("flows:\n  max_flows: 8\n", "config key flows.max_flows: must be an integer between 16 and 16777216, got 8", id="too-small"),
        pytest.param("local_networks:\n  - 10.0.0.0/8\n  - 10.0.0.0/33\n", "config key local_networks[1]: '10.0.0.0/33' is not a network", id="bad-network"),
        pytest.param("web:\n  listen: nohost\n", "config key web.listen: 'nohost' is not HOST:PORT", id="bad-listen"),
        pytest.param("flows: [\n", "not valid YAML at line 2", id="bad-yaml"),
    ],
)
def test_check_config_mistakes(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "pktagent.yaml"
    path.write_text(text)
    done = pktagent("check-config", str(path))
    assert done.returncode == 1
    assert done.stdout == ""
    line = one_line(done.stderr)
    assert line.startswith(f"pktagent: ConfigError: {path}: ")
    assert expected in line


# -- run --------------------------------------------------------------------------------------


def test_run_on_an_interface_that_does_not_exist() -> None:
    # Without privileges libpcap fails on the packet socket before it looks for the device.
    need_root()
    done = pktagent("run", "-i", "nosuchif0", "--listen", f"127.0.0.1:{free_port()}")
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert "no such interface: nosuchif0" in line


def test_run_without_capture_privilege() -> None:
    need_root()
    setpriv = need_tool("setpriv")
    drop = (setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all")
    env_home = {"HOME": "/nonexistent"}
    done = subprocess.run(
        [*drop, *PKTAGENT, "run", "-i", "lo", "--listen", f"127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={**os.environ, **env_home},
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert line.startswith("pktagent: CapturePermissionError: no permission to capture on lo")
    assert "cap_net_raw" in line.lower()
    assert "make demo" in line


def test_run_with_an_invalid_bpf_filter(capture: tuple[Known, Path]) -> None:
    _, path = capture
    done = pktagent("run", "--pcap", str(path), "--bpf", "tcp and", "--listen", f"127.0.0.1:{free_port()}")
    assert done.returncode == 1
    assert "bpf_filter: libpcap rejects 'tcp and'" in one_line(done.stderr)


def test_run_on_a_port_in_use(capture: tuple[Known, Path]) -> None:
    _, path = capture
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = pktagent("run", "--pcap", str(path), "--listen", f"127.0.0.1:{port}", "--state-dir", str(path.parent / "state"))
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert f"cannot listen on 127.0.0.1:{port}" in line
