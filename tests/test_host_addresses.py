"""The capturing host's own addresses count as local: its traffic on a public address is inbound or outbound, not external."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import need_tool
from liveagent import live_agent
from netns import VethPair, sh
from pcapgen import ETH_IPV4, UDP, Capture, eth, ipv4, udp
from test_live_capture import send, series, wait_processed

from agent.base.addresses import host_addresses
from agent.config import Config
from agent.runtime.pipeline import Pipeline

# /proc/net/fib_trie as Linux writes it (trimmed): the local table lists 127.0.0.1 and 192.0.2.2 as "host LOCAL".
FIB_TRIE = """\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 192.0.2.0/24 2 0 2
        +-- 192.0.2.0/30 2 0 2
           |-- 192.0.2.0
              /24 link UNICAST
           |-- 192.0.2.2
              /32 host LOCAL
        |-- 192.0.2.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
     +-- 192.0.2.0/24 2 0 2
           |-- 192.0.2.2
              /32 host LOCAL
"""
IF_INET6 = """\
fd000000000000000000000000000002 04 40 00 82     eth0
00000000000000000000000000000001 01 80 10 80       lo
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
"""


def test_host_addresses_from_the_kernels_tables(tmp_path: Path) -> None:
    (tmp_path / "fib_trie").write_text(FIB_TRIE)
    (tmp_path / "if_inet6").write_text(IF_INET6)
    got = host_addresses(str(tmp_path / "fib_trie"), str(tmp_path / "if_inet6"))
    assert got == ("192.0.2.2/32", "fd00::2/128", "fe80::fc:ff:fe00:1/128")  # loopback is local already


def test_unreadable_tables_give_no_addresses(tmp_path: Path) -> None:
    assert host_addresses(str(tmp_path / "none"), str(tmp_path / "none6")) == ()


def test_a_replay_does_not_take_this_hosts_addresses() -> None:
    # A capture file was recorded elsewhere: this host's addresses mean nothing to it.
    assert Pipeline(Config(), ["a.pcap"]).classifier.networks == Pipeline(Config(), ["a.pcap"], host_local=False).classifier.networks
    assert len(Pipeline(Config(), ["eth0"], host_local=True).classifier.networks) == len(Config().local_networks) + len(host_addresses())


HOST, PEER = "198.51.100.2", "198.51.100.9"  # public (documentation) addresses: in no default local network


def frames(tmp_path: Path) -> tuple[Path, int]:
    cap = Capture()
    t = 1_700_000_000_000_000
    for i in range(3):
        cap.add(t + 2 * i * 1000, eth(ETH_IPV4) + ipv4(UDP, PEER, HOST, udp(4000, 5000, bytes(40)), ident=i))  # to the host: inbound
        cap.add(t + (2 * i + 1) * 1000, eth(ETH_IPV4) + ipv4(UDP, HOST, PEER, udp(5000, 4000, bytes(80)), ident=i))  # from it: outbound
    return cap.write(tmp_path / "host.pcap"), cap.frames


@pytest.mark.live
@pytest.mark.parametrize(("setting", "expected"), [("true", {"inbound": 3, "outbound": 3}), ("false", {"external": 6})])
def test_the_capturing_hosts_public_address_is_local(veth: VethPair, tmp_path: Path, setting: str, expected: dict[str, int]) -> None:
    need_tool("tcpreplay")
    sh("ip", "-n", veth.receiver, "addr", "add", f"{HOST}/24", "dev", veth.rx)  # the agent's host has a public address
    path, n = frames(tmp_path)
    config = tmp_path / "c.yml"
    config.write_text(f"host_addresses_local: {setting}\n")
    with live_agent(veth, tmp_path, "--config", str(config)) as a:
        send(veth, veth.tx, path, n)
        samples = wait_processed(a, {veth.rx: n})
        a.stop()
    cells = series(samples, "pktagent_traffic_packets_total", interface=veth.rx, network="ipv4", transport="udp")
    assert {direction: v for (direction,), v in cells.items()} == expected
