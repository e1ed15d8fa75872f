"""Devices and names: passive learning from captures with known answers, persistence, bounds, damaged stores."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pcapgen as g
import pytest
from batches import raw

from agent.config import Config, DeviceEntry
from agent.naming.learn import dns
from agent.naming.store import Store, StoreWriter, read_devices
from agent.naming.usage import MergedUsage, TopN
from agent.runtime.pipeline import Pipeline
from agent.runtime.replay import replay_files

ROUTER, ROUTER_MAC = "192.168.1.1", "02:00:00:00:00:01"
TV_MAC, PHONE_MAC, PHONE_RANDOM_MAC, PI_MAC = "00:11:22:33:44:20", "00:11:22:33:44:40", "da:11:22:33:44:41", "b8:27:eb:00:00:30"
T0 = 1_700_000_000_000_000
TV, SERVER, ANDROID = "192.168.1.20", "203.0.113.7", "android-dhcp-11"


def eth_from(mac_text: str, ethertype: int) -> bytes:
    return g.eth(ethertype, src=mac_text, dst="ff:ff:ff:ff:ff:ff")


def udp4(src: str, dst: str, sport: int, dport: int, payload: bytes, mac_text: str = ROUTER_MAC) -> bytes:
    return eth_from(mac_text, g.ETH_IPV4) + g.ipv4(g.UDP, src, dst, g.udp(sport, dport, payload))


def home_network() -> g.Capture:
    """A TV named by DHCP, a Pi named by mDNS, a NAS by LLMNR, a printer by a PTR answer, a phone with a randomised MAC."""
    cap = g.Capture()
    t = T0
    frames = [
        # DHCP: the TV asks for 192.168.1.20 as "living-room-tv"; the router acknowledges.
        udp4(
            "0.0.0.0",
            "255.255.255.255",
            68,
            67,
            g.dhcp(TV_MAC, 3, hostname="living-room-tv", client_id=b"\x01tv", vendor_class="android-dhcp-11", requested="192.168.1.20"),
            TV_MAC,
        ),
        udp4(ROUTER, "192.168.1.20", 67, 68, g.dhcp(TV_MAC, 5, your_ip="192.168.1.20")),
        # ARP: the Pi announces itself; mDNS names it.
        eth_from(PI_MAC, g.ETH_ARP) + g.arp(2, PI_MAC, "192.168.1.30", ROUTER_MAC, ROUTER),
        udp4("192.168.1.30", "224.0.0.251", 5353, 5353, g.dns_response(None, [("pi-kitchen.local", "A", "192.168.1.30")]), PI_MAC),
        # LLMNR answer for the NAS; a unicast DNS PTR answer for the printer.
        udp4("192.168.1.40", "192.168.1.20", 5355, 50000, g.dns_response("nas", [("nas", "A", "192.168.1.40")])),
        udp4(ROUTER, "192.168.1.20", 53, 50001, g.dns_response("50.1.168.192.in-addr.arpa", [("50.1.168.192.in-addr.arpa", "PTR", "printer.lan")], qtype=12)),
        # A DNS answer through a CNAME chain names a remote server.
        udp4(
            ROUTER,
            "192.168.1.20",
            53,
            50002,
            g.dns_response("www.example.co.uk", [("www.example.co.uk", "CNAME", "edge.cdn.net"), ("edge.cdn.net", "A", "203.0.113.7")]),
        ),
        # The phone first with its real MAC, then with a randomised one and the same DHCP client id.
        udp4("0.0.0.0", "255.255.255.255", 68, 67, g.dhcp(PHONE_MAC, 3, hostname="anna-phone", client_id=b"\x01anna", requested="192.168.1.60"), PHONE_MAC),
        udp4("0.0.0.0", "255.255.255.255", 68, 67, g.dhcp(PHONE_RANDOM_MAC, 3, client_id=b"\x01anna", requested="192.168.1.61"), PHONE_RANDOM_MAC),
    ]
    for f in frames:
        cap.add(t, f)
        t += 1000
    # Traffic: the TV streams from the remote server; the Pi and the phone (random MAC) talk to the internet.
    for i in range(10):
        cap.add(t, g.eth(g.ETH_IPV4) + g.ipv4(g.TCP, "203.0.113.7", "192.168.1.20", g.tcp(443, 40000, g.ACK, bytes(100)), ident=i))
        cap.add(t + 1, g.eth(g.ETH_IPV4) + g.ipv4(g.TCP, "192.168.1.20", "203.0.113.7", g.tcp(40000, 443, g.ACK), ident=i))
        cap.add(t + 2, g.eth(g.ETH_IPV4) + g.ipv4(g.UDP, "192.168.1.30", "9.9.9.9", g.udp(123, 123, bytes(48)), ident=i))
        cap.add(t + 3, g.eth(g.ETH_IPV4) + g.ipv4(g.UDP, "192.168.1.61", "9.9.9.9", g.udp(5000, 443, bytes(20)), ident=i))
        t += 1000
    return cap


def series(snapshot: object, which: str) -> dict[str, tuple[float, float, float, float]]:
    return {s.name: (s.tx_bytes, s.rx_bytes, s.tx_packets, s.rx_packets) for s in getattr(snapshot, which)}


def test_names_learned_from_dhcp_arp_mdns_llmnr_dns_label_the_traffic(tmp_path: Path) -> None:
    cap = home_network()
    snap = replay_files(Config(), [cap.write(tmp_path / "home.pcap")])
    devices = series(snap, "device_series")
    tv = bytes([192, 168, 1, 20])
    to_tv = [len(p.frame) for p in cap.packets if p.frame[30:34] == tv]  # the DHCP ACK, three DNS answers, 10 TCP
    tv_rx, tv_tx = 10 * (14 + 20 + 20 + 100), 10 * (14 + 20 + 20)
    assert devices["living-room-tv"] == (tv_tx, sum(to_tv), 10, 14)
    assert devices["pi-kitchen"][2] == 10 + 1  # its NTP packets and its own mDNS announcement
    assert devices["anna-phone"][2] == 10  # the randomised MAC is linked through the DHCP client id
    domains = series(snap, "domain_series")
    assert domains["example.co.uk"] == (tv_tx, tv_rx, 10, 10)  # the name asked for, not the CNAME target
    # The Pi's and the phone's NTP/QUIC peers were never named, nor is 224.0.0.251, where the Pi's mDNS went.
    assert domains["unknown"][2] == 21
    assert snap.learned == {"decoded": 9, "malformed": 0, "skipped": 0}


def test_names_come_from_packets_that_sampling_leaves_out(tmp_path: Path) -> None:
    """Sampling thins the traffic counters, not what the agent knows: all 9 name packets are read."""
    snap = replay_files(Config().replace("pipeline", sampling_rate=0.000001), [home_network().write(tmp_path / "home.pcap")])
    assert int(snap.sampled_out.sum()) == 49  # every packet left out (1 in a million kept)...
    assert snap.learned == {"decoded": 9, "malformed": 0, "skipped": 0}  # ...yet every name learned
    assert snap.devices_known == 6


def test_registry_contents_and_the_devices_command(tmp_path: Path) -> None:
    pcap = home_network().write(tmp_path / "home.pcap")
    state = tmp_path / "state"
    out = subprocess.run([sys.executable, "-m", "agent", "replay", str(pcap), "--state-dir", str(state)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    listed = subprocess.run([sys.executable, "-m", "agent", "devices", "--state-dir", str(state), "--format", "json"], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    by_name = {d["name"]: d for d in json.loads(listed.stdout)}
    assert {n for n in by_name if n} == {"living-room-tv", "pi-kitchen", "nas", "printer", "anna-phone"}
    tv = by_name["living-room-tv"]
    assert (tv["macs"], tv["addresses"], tv["name_source"], tv["vendor_class"]) == ([TV_MAC], ["192.168.1.20"], "dhcp", "android-dhcp-11")
    assert by_name["pi-kitchen"]["name_source"] == "mdns" and by_name["pi-kitchen"]["macs"] == [PI_MAC]
    assert by_name["nas"]["name_source"] == "llmnr" and by_name["printer"]["name_source"] == "dns"
    table = subprocess.run([sys.executable, "-m", "agent", "devices", "--state-dir", str(state)], capture_output=True, text=True).stdout
    assert table.splitlines()[0].split() == ["ID", "NAME", "SOURCE", "MACS", "ADDRESSES", "LAST", "SEEN"]
    assert any("living-room-tv" in line and "192.168.1.20" in line for line in table.splitlines())
    rows = json.loads(listed.stdout)
    phone = next(d for d in rows if PHONE_MAC in d["macs"])
    random_phone = next(d for d in rows if PHONE_RANDOM_MAC in d["macs"])
    assert random_phone["linked_to"] == phone["id"] and random_phone["name"] == phone["name"] == "anna-phone"


def busy(p: Pipeline) -> list[str]:
    """The device series that carried traffic."""
    return [s.name for s in p.snapshot_fields()["device_series"] if s.tx_packets or s.rx_packets]


def test_names_survive_a_restart_and_the_inventory_wins(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cfg = Config().replace(state_dir=str(state))
    first = Pipeline(cfg, ["eth0"])
    first.process(raw([f.frame for f in home_network().packets[:2]]))  # just the TV's DHCP exchange
    store = Store(state)
    writer = StoreWriter(first.registry, store)
    writer.stop()
    # Tomorrow: only traffic, no DHCP. Yesterday's name still labels it; the operator's inventory overrides it.
    traffic = [g.eth(g.ETH_IPV4) + g.ipv4(g.TCP, "192.168.1.20", "1.1.1.1", g.tcp(1, 443))]
    second = Pipeline(cfg, ["eth0"], read_devices(state))
    second.process(raw(traffic))
    assert busy(second) == ["living-room-tv"]
    named = cfg.replace("devices", inventory=(DeviceEntry("tv", macs=(TV_MAC,)),))
    third = Pipeline(named, ["eth0"], read_devices(state))
    third.process(raw(traffic))
    assert busy(third) == ["tv"]


def test_label_budget_holds_under_a_flood_of_devices_and_names() -> None:
    cfg = Config().replace("devices", series_budget=5, domain_series_budget=5, max_devices=64, max_domain_addresses=256, learn_per_batch=100_000)
    p = Pipeline(cfg, ["eth0"])
    frames = []
    for i in range(100_000):  # 100k new MACs, each announcing an address by ARP and then talking
        mac_text = f"02:{i >> 16 & 0xFF:02x}:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}:00:01"
        ip = f"10.{i >> 16 & 0xFF}.{i >> 8 & 0xFF}.{i & 0xFF}"
        frames.append(eth_from(mac_text, g.ETH_ARP) + g.arp(2, mac_text, ip, ROUTER_MAC, ROUTER))
        frames.append(g.eth(g.ETH_IPV4) + g.ipv4(g.UDP, ip, "9.9.9.9", g.udp(1000, 53, bytes(8))))
    names = [
        udp4(
            ROUTER,
            "192.168.1.20",
            53,
            40000 + i % 20000,
            g.dns_response(f"h{i}.d{i}.com", [(f"h{i}.d{i}.com", "A", f"198.{18 + i // 65536}.{i >> 8 & 0xFF}.{i & 0xFF}")]),
        )
        for i in range(100_000)
    ]
    for start in range(0, len(frames), 4096):
        p.process(raw(frames[start : start + 4096], ts=[T0 + start + k for k in range(len(frames[start : start + 4096]))]))
    q = Pipeline(cfg, ["eth0"])
    for start in range(0, len(names), 8192):
        chunk = names[start : start + 8192]
        q.process(raw(chunk, ts=[T0 + start + k for k in range(len(chunk))]))
    snap = p.snapshot_fields()
    assert snap["devices_known"] == 64  # the registry stays within max_devices
    registry = next(c for c in snap["caches"] if c.name == "device_registry")
    assert registry.evictions == 100_000 - 64
    assert len(snap["device_series"]) <= 5 + 2  # the budget, plus 'other' and 'unnamed'
    assert len(p.device_usage.names) <= p.device_usage.names.capacity
    assert int(snap["processed"].sum()) == len(frames)  # and every frame was counted
    qs = q.snapshot_fields()
    domain_map = next(c for c in qs["caches"] if c.name == "domain_map")
    assert (domain_map.entries, domain_map.evictions) == (256, 100_000 - 256)
    assert len(qs["domain_series"]) <= 5 + 2
    assert len(q.domain_usage.names) <= q.domain_usage.names.capacity


def test_workers_series_add_up_under_one_budget_and_only_grow() -> None:
    """Two workers each hold their own series; the merged view keeps one budget and never goes back."""
    merged = MergedUsage(TopN(budget=2, ttl_us=10_000_000, interval_us=1_000_000))
    tv, nas, pi = [1000.0, 10.0, 1.0, 1.0], [500.0, 0.0, 1.0, 0.0], [100.0, 0.0, 1.0, 0.0]
    merged.update(0, [("other", [0.0] * 4), ("tv", tv), ("pi", pi)], now=0)
    merged.update(1, [("other", [0.0] * 4), ("nas", nas)], now=0)
    view = dict(merged.top.series())
    # tv and pi took the two series first; nas, over budget, counts as 'other'.
    assert view == {"other": nas, "unnamed": [0.0] * 4, "tv": tv, "pi": pi}
    # Worker 0 drops pi and gives it again (its series restarts from zero): the merge takes the new growth.
    merged.update(0, [("other", [0.0] * 4), ("tv", [2000.0, 20.0, 2.0, 2.0]), ("pi", [40.0, 0.0, 1.0, 0.0])], now=500_000)
    merged.update(1, [("other", [0.0] * 4), ("nas", [600_000.0, 0.0, 9.0, 0.0])], now=500_000)
    view = dict(merged.top.series())
    assert view["pi"] == [140.0, 0.0, 2.0, 0.0]
    assert view["tv"] == [2000.0, 20.0, 2.0, 2.0]
    assert view["other"] == [600_000.0, 0.0, 9.0, 0.0]
    # At the next ranking nas, far busier, takes pi's place; what it sent before stays in 'other'.
    merged.update(1, [("other", [0.0] * 4), ("nas", [600_100.0, 0.0, 10.0, 0.0])], now=1_000_000)
    view = dict(merged.top.series())
    assert sorted(view) == ["nas", "other", "tv", "unnamed"]
    assert (view["other"], view["nas"]) == ([600_100.0, 0.0, 10.0, 0.0], [0.0] * 4)
    assert merged.top.dropped == 1
    merged.update(1, [("other", [0.0] * 4), ("nas", [600_150.0, 0.0, 11.0, 0.0])], now=1_100_000)
    assert dict(merged.top.series())["nas"] == [50.0, 0.0, 1.0, 0.0]


def test_a_damaged_database_is_moved_aside_and_capture_goes_on(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "devices.db").write_bytes(b"this is not a database at all" * 100)
    store = Store(state)
    assert store.recovered is not None and Path(store.recovered).read_bytes().startswith(b"this is not")
    assert store.load() == []
    store.close()


def test_a_locked_database_does_not_stop_capture(tmp_path: Path) -> None:
    state = tmp_path / "state"
    p = Pipeline(Config(), ["eth0"])
    writer = StoreWriter(p.registry, Store(state, timeout_ms=50), interval=0.05)
    blocker = sqlite3.connect(state / "devices.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    writer.start()
    cap = home_network()
    started = time.monotonic()
    for k in range(20):
        p.process(raw([x.frame for x in cap.packets], ts=[T0 + 100_000 * k + i for i in range(cap.frames)]))
    assert time.monotonic() - started < 5
    assert int(p.counters.processed[0]) == 20 * cap.frames
    deadline = time.monotonic() + 5
    while writer.writes["error"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writer.writes["error"] >= 1
    blocker.execute("ROLLBACK")
    blocker.close()
    writer.stop()  # the changes kept back are written once the lock is gone
    assert {d.names.get("dhcp") for d in read_devices(state)} >= {"living-room-tv", "anna-phone"}


def test_dns_decoder_rejects_what_is_malformed() -> None:
    good = g.dns_response("tv.lan", [("tv.lan", "A", "192.168.1.20")])
    assert dns.answers(good) == [("tv.lan", "A", "192.168.1.20")]
    loop = good[:12] + b"\xc0\x0c" + good[14:]  # the question name points at itself
    for bad in (good[:30], loop, b"\x00" * 5):
        with pytest.raises(ValueError):
            dns.answers(bad)
    assert dns.reverse_address("20.1.168.192.in-addr.arpa") == "192.168.1.20"
