"""Live capture for real: the agent captures on a veth interface in its own network namespace while tcpreplay sends known frames into the other end.

The namespaces carry nothing but what the test sends (no addresses, IPv6 off), so every
figure on ``/metrics`` is exact. The agent's HTTP endpoint lives on the receiver namespace's
own loopback and is fetched from inside it.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import need_tool
from known import L4, R4, Known, mixed
from liveagent import LiveAgent, Samples, alive, children, live_agent
from netns import VethPair, sh
from pcapgen import ETH_IPV4, ICMP, UDP, Capture, eth, icmp_echo, ipv4, udp
from waiting import until

pytestmark = pytest.mark.live


@pytest.fixture(autouse=True)
def tcpreplay() -> str:
    return need_tool("tcpreplay")


def send(pair: VethPair, interface: str, path: Path, frames: int) -> None:
    """Send a capture into ``interface`` at its recorded pace, from the sender namespace."""
    done = subprocess.run(pair.in_sender("tcpreplay", "-i", interface, str(path)), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"Successful packets:        {frames}\n" in done.stdout, done.stdout


def series(samples: Samples, name: str, **labels: str) -> dict[tuple[str, ...], float]:
    """The samples of ``name`` that carry ``labels``, keyed by their other label values (sorted by label name)."""
    out = {}
    for (n, ls), value in samples.items():
        d = dict(ls)
        if n == name and all(d.get(k) == v for k, v in labels.items()):
            out[tuple(v for k, v in sorted(d.items()) if k not in labels)] = value
    return out


def assert_counts(samples: Samples, interface: str, k: Known) -> None:
    one = {"interface": interface}
    assert series(samples, "pktagent_packets_captured_total", **one) == {(): k.frames}
    assert series(samples, "pktagent_packets_processed_total", **one) == {(): k.frames}
    assert series(samples, "pktagent_packets_duplicate_total", **one) == {(): 0}
    assert series(samples, "pktagent_packets_sampled_out_total", **one) == {(): 0}
    assert series(samples, "pktagent_unsupported_link_packets_total", **one) == {(): 0}
    assert series(samples, "pktagent_packets_dropped_total", **one) == {("kernel",): 0, ("interface",): 0, ("queue",): 0, ("reopen",): 0}
    assert series(samples, "pktagent_capture_up", **one) == {(): 1}
    # Labels sorted by name: direction, network, transport.
    assert series(samples, "pktagent_traffic_packets_total", **one) == {(d, n, t): v for (n, t, d), v in k.packets_by_cell().items()}
    assert series(samples, "pktagent_traffic_bytes_total", **one) == {(d, n, t): v for (n, t, d), v in k.bytes_by_cell().items()}
    assert {k: v for k, v in series(samples, "pktagent_decode_errors_total", **one).items() if v} == {}


def flows_started(samples: Samples) -> dict[str, float]:
    return {t: v for (t,), v in series(samples, "pktagent_flows_started_total").items() if v}


def wait_processed(a: LiveAgent, interfaces: dict[str, int]) -> Samples:
    def done() -> Samples | None:
        samples = a.metrics()
        processed = series(samples, "pktagent_packets_processed_total")
        return samples if all(processed.get((name,), 0) >= n for name, n in interfaces.items()) else None

    samples: Samples = until(done, f"{interfaces} packets processed")
    return samples


def small() -> Known:
    """A second, different set of frames: 6 UDP datagrams on 3 internal flows and a ping from outside."""
    k = Known(Capture())
    for i in range(6):
        src, dst = ("10.9.0.1", "10.9.0.2") if i % 2 == 0 else ("10.9.0.2", "10.9.0.1")
        sport, dport = (3000 + i // 2, 4000) if i % 2 == 0 else (4000, 3000 + i // 2)
        k.add(eth(ETH_IPV4) + ipv4(UDP, src, dst, udp(sport, dport, bytes([i]) * 20), ident=i), ("ipv4", "udp", "internal"), UDP)
    k.add(eth(ETH_IPV4) + ipv4(ICMP, R4, "10.9.0.1", icmp_echo(3, 1), ident=50), ("ipv4", "icmp", "inbound"), ICMP)
    k.add(eth(ETH_IPV4) + ipv4(ICMP, "10.9.0.1", R4, icmp_echo(3, 1), ident=51), ("ipv4", "icmp", "outbound"), ICMP)
    k.flows_started = {"udp": 3, "icmp": 1}
    return k


def first_and_second(tmp_path: Path) -> tuple[Known, Known, Path, Path]:
    """Two different captures, written: ``mixed`` to send first, ``small`` to send after (or beside) it."""
    first, second = mixed(big=False), small()
    return first, second, first.capture.write(tmp_path / "first.pcap"), second.capture.write(tmp_path / "second.pcap")


def test_live_capture_counts_every_frame_exactly(veth: VethPair, tmp_path: Path) -> None:
    k = mixed(big=False)
    path = k.capture.write(tmp_path / "mixed.pcap")
    with live_agent(veth, tmp_path) as a:
        assert series(a.metrics(), "pktagent_packets_captured_total") == {(veth.rx,): 0}
        send(veth, veth.tx, path, k.frames)
        samples = wait_processed(a, {veth.rx: k.frames})
        assert_counts(samples, veth.rx, k)
        assert flows_started(samples) == k.flows_started
        status, body = a.get("/health")
        assert status == 200
        assert '"up": true' in body
        assert f'"packets_captured": {k.frames}' in body
        a.stop()
    assert "capturing on pkt-rx" in a.log.read_text()


def test_bpf_filter_keeps_only_what_it_matches(veth: VethPair, tmp_path: Path) -> None:
    k = mixed(big=False)
    # A last ping after everything else: once it is counted, every frame before it has been seen or filtered out.
    k.add(eth(ETH_IPV4) + ipv4(ICMP, L4, R4, icmp_echo(99, 99), ident=9999), ("ipv4", "icmp", "outbound"), ICMP)
    path = k.capture.write(tmp_path / "mixed.pcap")
    # The ICMP and ICMPv6 frames of the capture, with their labels: what the filter lets through.
    pings = Known(Capture())
    for cell, proto, p in zip(k.cells, k.ip_proto, k.capture.packets):
        if cell[1] in ("icmp", "icmpv6"):
            pings.add(p.frame, cell, proto)
    assert (pings.frames, k.frames) == (5, 31)
    with live_agent(veth, tmp_path, "--bpf", "icmp or icmp6") as a:
        send(veth, veth.tx, path, k.frames)
        samples = wait_processed(a, {veth.rx: pings.frames})
        assert_counts(samples, veth.rx, pings)
        # The pings share a flow (no ports), and so do the ICMPv6 echoes.
        assert flows_started(samples) == {"icmp": 1, "icmpv6": 1}
        a.stop()


def test_two_interfaces_keep_separate_series(veth: VethPair, tmp_path: Path) -> None:
    # A second veth pair between the same two namespaces.
    tx2, rx2 = "pkt-tx2", "pkt-rx2"
    sh("ip", "-n", veth.sender, "link", "add", tx2, "type", "veth", "peer", "name", rx2, "netns", veth.receiver)
    for ns, dev in ((veth.sender, tx2), (veth.receiver, rx2)):
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
        sh("ip", "-n", ns, "link", "set", dev, "up")
    first, second, p1, p2 = first_and_second(tmp_path)
    with live_agent(veth, tmp_path, interfaces=[veth.rx, rx2]) as a:
        send(veth, veth.tx, p1, first.frames)
        send(veth, tx2, p2, second.frames)
        samples = wait_processed(a, {veth.rx: first.frames, rx2: second.frames})
        assert_counts(samples, veth.rx, first)
        assert_counts(samples, rx2, second)
        # Flows are one table over both interfaces: these two captures share none.
        expected = dict(first.flows_started)
        for transport, n in second.flows_started.items():
            expected[transport] = expected.get(transport, 0) + n
        assert flows_started(samples) == expected
        a.stop()


def test_frames_cut_by_the_snaplen_count_their_length_on_the_wire(veth: VethPair, tmp_path: Path) -> None:
    # A live capture is not told the length of a frame it cut: the IP header tells it.
    k = mixed(big=True)
    assert max(p.wire_len for p in k.capture.packets) > 1400
    path = k.capture.write(tmp_path / "mixed.pcap")
    config = tmp_path / "pktagent.yaml"
    config.write_text("capture:\n  snaplen: 128\n")
    with live_agent(veth, tmp_path, "--config", str(config)) as a:
        send(veth, veth.tx, path, k.frames)
        samples = wait_processed(a, {veth.rx: k.frames})
        assert_counts(samples, veth.rx, k)
        assert flows_started(samples) == k.flows_started
        a.stop()


def test_a_capture_that_goes_away_is_reported_down_and_comes_back(veth: VethPair, tmp_path: Path) -> None:
    first, second, p1, p2 = first_and_second(tmp_path)
    with live_agent(veth, tmp_path) as a:
        send(veth, veth.tx, p1, first.frames)
        wait_processed(a, {veth.rx: first.frames})
        sh("ip", "-n", veth.sender, "link", "del", veth.tx)  # takes its peer, the captured interface, with it
        _, body = until(lambda: (got := a.get("/health"))[0] == 503 and got, "/health to report the capture down")
        assert '"up": false' in body
        assert "no such interface: pkt-rx" in body
        assert series(a.metrics(), "pktagent_capture_up") == {(veth.rx,): 0}
        sh("ip", "-n", veth.sender, "link", "add", veth.tx, "type", "veth", "peer", "name", veth.rx, "netns", veth.receiver)
        for ns, dev in ((veth.sender, veth.tx), (veth.receiver, veth.rx)):
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
            sh("ip", "-n", ns, "link", "set", dev, "up")
        until(lambda: a.get("/health")[0] == 200, "/health to report the capture back")
        send(veth, veth.tx, p2, second.frames)
        # The counters go on from where they were, on the same series.
        samples = wait_processed(a, {veth.rx: first.frames + second.frames})
        both = Known(Capture(packets=first.capture.packets + second.capture.packets), cells=first.cells + second.cells)
        assert_counts(samples, veth.rx, both)
        a.stop()
    log = a.log.read_text()
    assert "capture on pkt-rx failed" in log
    assert "capture on pkt-rx is back" in log


def test_two_workers_share_one_interface_without_counting_twice(veth: VethPair, tmp_path: Path) -> None:
    """--workers 2: two handles in one PACKET_FANOUT_HASH group, two pipelines, one /metrics."""
    k = mixed(big=False)
    path = k.capture.write(tmp_path / "mixed.pcap")
    with live_agent(veth, tmp_path, "--workers", "2") as a:
        send(veth, veth.tx, path, k.frames)
        samples = wait_processed(a, {veth.rx: k.frames})
        assert_counts(samples, veth.rx, k)
        # Both directions of a flow hash to one worker, so each flow starts once.
        assert flows_started(samples) == k.flows_started
        assert series(samples, "pktagent_processing_workers") == {(): 2}
        # One label budget for the agent, not one per worker.
        assert series(samples, "pktagent_label_series_budget") == {("device",): 50, ("domain",): 50}
        assert series(samples, "pktagent_flows_capacity") == {(): 2 * 65536}
        a.stop()


def test_workers_stop_when_the_agent_is_killed(veth: VethPair, tmp_path: Path) -> None:
    """SIGKILL gives the agent no chance to stop its workers: they see their pipes close and stop themselves."""
    with live_agent(veth, tmp_path, "--workers", "2") as a:
        workers = children(a.pid)
        assert len(workers) == 2, workers
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
        until(lambda: not any(alive(pid) for pid in workers), "the workers of a killed agent to stop", timeout=5)


def test_an_interface_that_goes_down_is_reported_and_counted_again_when_up(veth: VethPair, tmp_path: Path) -> None:
    first, second, p1, p2 = first_and_second(tmp_path)
    with live_agent(veth, tmp_path) as a:
        send(veth, veth.tx, p1, first.frames)
        wait_processed(a, {veth.rx: first.frames})
        down_at = time.monotonic()
        sh("ip", "-n", veth.receiver, "link", "set", veth.rx, "down")
        _, body = until(lambda: (got := a.get("/health"))[0] == 503 and got, "/health to report the capture down")
        assert "pkt-rx" in body and '"up": false' in body
        assert time.monotonic() - down_at < 5
        assert series(a.metrics(), "pktagent_capture_up") == {(veth.rx,): 0}
        sh("ip", "-n", veth.receiver, "link", "set", veth.rx, "up")
        up_at = time.monotonic()
        until(lambda: a.get("/health")[0] == 200, "/health to report the capture back")
        recovery = time.monotonic() - up_at
        assert recovery < 5, recovery  # the retry backoff starts at 0.5 s
        send(veth, veth.tx, p2, second.frames)
        samples = wait_processed(a, {veth.rx: first.frames + second.frames})
        both = Known(Capture(packets=first.capture.packets + second.capture.packets), cells=first.cells + second.cells)
        assert_counts(samples, veth.rx, both)
        a.stop()
    assert "pkt-rx is down" in a.log.read_text() or "went down" in a.log.read_text()


def test_started_as_root_it_runs_as_the_configured_user_with_cap_net_raw_only(veth: VethPair, tmp_path: Path) -> None:
    conf = tmp_path / "pktagent.yml"
    conf.write_text(f"user: nobody\nstate_dir: {tmp_path / 'state'}\n")
    first, second, p1, p2 = first_and_second(tmp_path)
    with live_agent(veth, tmp_path, "--config", str(conf)) as a:
        status = Path(f"/proc/{a.proc.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines())
        assert fields["Uid"].split()[:2] == ["65534", "65534"]  # nobody
        assert int(fields["CapEff"], 16) == 1 << 13 and int(fields["CapPrm"], 16) == 1 << 13  # CAP_NET_RAW and nothing else
        send(veth, veth.tx, p1, first.frames)
        wait_processed(a, {veth.rx: first.frames})
        # An interface fault: reopening the capture needs CAP_NET_RAW, which the agent kept.
        sh("ip", "-n", veth.receiver, "link", "set", veth.rx, "down")
        until(lambda: a.get("/health")[0] == 503, "the capture reported down")
        sh("ip", "-n", veth.receiver, "link", "set", veth.rx, "up")
        until(lambda: a.get("/health")[0] == 200, "the capture back")
        send(veth, veth.tx, p2, second.frames)
        samples = wait_processed(a, {veth.rx: first.frames + second.frames})
        assert series(samples, "pktagent_packets_captured_total") == {(veth.rx,): first.frames + second.frames}
        a.stop()
    assert "running as nobody with CAP_NET_RAW only" in a.log.read_text()
