"""Evicting from a full device registry: the least recently seen learned device goes, at a cost that does not grow with the registry."""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

from agent.config import DeviceEntry
from agent.naming.learn import Observations
from agent.naming.registry import Registry


def mac(i: int) -> str:
    return f"02:00:{i >> 24 & 0xFF:02x}:{i >> 16 & 0xFF:02x}:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}"


def address(i: int) -> str:
    return f"10.{i >> 16 & 0xFF}.{i >> 8 & 0xFF}.{i & 0xFF}"


def arrive(r: Registry, first: int, count: int, now: float) -> None:
    r.learn(Observations(arp=[(mac(i), address(i)) for i in range(first, first + count)]), now, lambda a: True)


def calls_while(action: Any) -> int:
    """Python and C function calls made while ``action()`` runs: a measure of work that no machine load changes."""
    calls = [0]

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event in ("call", "c_call"):
            calls[0] += 1

    sys.setprofile(profile)
    try:
        action()
    finally:
        sys.setprofile(None)
    return calls[0]


def test_eviction_work_does_not_grow_with_the_registry() -> None:
    """1,000 new MACs into a full registry of 200 and of 20,000 devices: the same work per new device.

    Scanning every device for the oldest made the large registry's evictions a hundred times dearer.
    """
    per_device = {}
    for size in (200, 20_000):
        r = Registry(max_devices=size)
        arrive(r, 0, size, now=1.0)
        for k in range(0, size, 7):  # some devices seen again later, out of id order
            arrive(r, k, 1, now=2.0)
        work = calls_while(lambda r=r, size=size: [arrive(r, size + i, 1, now=3.0 + i) for i in range(1000)])
        assert r.evictions == 1000 and len(r) == size
        per_device[size] = work / 1000
    assert per_device[20_000] < 1.5 * per_device[200], per_device


def test_the_least_recently_seen_learned_device_is_evicted_and_pinned_ones_never() -> None:
    r = Registry(max_devices=4)
    r.apply_inventory([DeviceEntry("tv", macs=(mac(100),))])  # pinned: never evicted
    arrive(r, 1, 3, now=10.0)  # devices of mac(1), mac(2), mac(3), all seen at 10
    arrive(r, 1, 1, now=20.0)  # mac(1) seen again
    arrive(r, 3, 1, now=15.0)  # mac(3) seen again, earlier than mac(1)
    arrive(r, 4, 1, now=30.0)  # a new device: mac(2), seen last at 10, goes
    assert sorted(m for d in r.devices.values() for m in d.macs) == sorted([mac(100), mac(1), mac(3), mac(4)])
    arrive(r, 5, 1, now=31.0)  # next: mac(3) (15)
    arrive(r, 6, 1, now=32.0)  # next: mac(1) (20)
    assert sorted(m for d in r.devices.values() for m in d.macs) == sorted([mac(100), mac(4), mac(5), mac(6)])
    assert r.evictions == 3
    r.replace_inventory([])  # the tv is no longer pinned: evictable, and the oldest (seen at 0)
    arrive(r, 7, 1, now=33.0)
    assert mac(100) not in {m for d in r.devices.values() for m in d.macs}
    assert r.evictions == 4


def test_the_eviction_index_stays_bounded_when_devices_are_seen_over_and_over() -> None:
    r = Registry(max_devices=50)
    arrive(r, 0, 50, now=1.0)
    for t in range(2, 2000):
        arrive(r, t % 50, 1, now=float(t))
    assert len(r._by_seen) <= 4 * 50 + 64
    arrive(r, 1000, 1, now=5000.0)
    oldest = min(range(50), key=lambda i: max(t for t in range(1, 2000) if t % 50 == i or t == 1))
    assert mac(oldest) not in {m for d in r.devices.values() for m in d.macs}


def dhcp_from_random_macs(r: Registry, first: int, count: int, now: float) -> None:
    from agent.naming.learn.dhcp import Dhcp

    records = [Dhcp(f"da:{mac(i)[3:]}", 3, None, f"host-{i}", f"client-{i}", None) for i in range(first, first + count)]
    r.learn(Observations(dhcp=records), now, lambda a: True)


def test_linking_randomised_macs_does_not_scan_the_registry() -> None:
    """A DHCP flood from randomised MACs (a starvation attack): each is looked up for a link, at a cost that does not grow with the registry."""
    per_packet = {}
    for size in (200, 20_000):
        r = Registry(max_devices=size)
        dhcp_from_random_macs(r, 0, size, now=1.0)
        work = calls_while(lambda r=r, size=size: [dhcp_from_random_macs(r, size + i, 1, now=2.0 + i) for i in range(500)])
        assert r.evictions == 500
        per_packet[size] = work / 500
    assert per_packet[20_000] < 1.5 * per_packet[200], per_packet


def test_a_randomised_mac_links_to_the_oldest_device_with_its_client_id_or_hostname() -> None:
    from agent.naming.learn.dhcp import Dhcp

    r = Registry(max_devices=100)
    r.learn(Observations(dhcp=[Dhcp("00:11:22:33:44:01", 3, None, "phone", "id-1", None)]), 1.0, lambda a: True)
    r.learn(Observations(dhcp=[Dhcp("00:11:22:33:44:02", 3, None, "phone", None, None)]), 2.0, lambda a: True)
    r.learn(Observations(dhcp=[Dhcp("da:00:00:00:00:03", 3, None, "phone", "id-3", None)]), 3.0, lambda a: True)
    by_mac = {m: d for d in r.devices.values() for m in d.macs}
    assert by_mac["da:00:00:00:00:03"].linked_to == by_mac["00:11:22:33:44:01"].id  # same hostname: the oldest
    r.learn(Observations(dhcp=[Dhcp("da:00:00:00:00:04", 3, None, "tablet", "id-1", None)]), 4.0, lambda a: True)
    by_mac = {m: d for d in r.devices.values() for m in d.macs}
    assert by_mac["da:00:00:00:00:04"].linked_to == by_mac["00:11:22:33:44:01"].id  # same client identifier
    r.learn(Observations(dhcp=[Dhcp("00:11:22:33:44:01", 3, None, "laptop", "id-9", None)]), 5.0, lambda a: True)
    r.learn(Observations(dhcp=[Dhcp("da:00:00:00:00:05", 3, None, "phone", None, None)]), 6.0, lambda a: True)
    by_mac = {m: d for d in r.devices.values() for m in d.macs}
    # The first device is now "laptop": the next "phone" links to the second, found through the updated index.
    assert by_mac["da:00:00:00:00:05"].linked_to == by_mac["00:11:22:33:44:02"].id
