"""Name lookup: local addresses to device names, through a bounded TTL cache in front of the registry."""

from __future__ import annotations

import numpy as np
import pcapgen as g
from batches import decoded

from agent.base.addresses import address_int
from agent.config import DEFAULT_LOCAL_NETWORKS, DeviceEntry
from agent.naming.devices import AddressCache, NameLookup, local_devices
from agent.naming.interner import UNNAMED, Interner
from agent.naming.registry import Registry
from agent.stages.classify import Classifier

TV = DeviceEntry("tv", addresses=("192.168.1.20", "fd00::20"))
PI = DeviceEntry("pi-kitchen", addresses=("192.168.1.30",))


def lookup_for(entries: list[DeviceEntry], ttl_us: int = 300_000_000) -> NameLookup:
    registry = Registry(max_devices=64)
    registry.apply_inventory(entries)
    return NameLookup(registry, cache_entries=64, ttl_us=ttl_us, names=Interner(64, ("other", "unnamed")))


def lookup(frames: list[bytes], lk: NameLookup, t: int = 0) -> list[tuple[str | None, str | None]]:
    b = Classifier(DEFAULT_LOCAL_NETWORKS).apply(decoded(frames, ts=[t] * len(frames)))
    src, dst = local_devices(lk, b)

    def name(i: int) -> str | None:
        return None if i < 0 else lk.names.names[i]

    return [(name(s), name(d)) for s, d in zip(src.tolist(), dst.tolist())]


def test_local_addresses_get_their_device_names() -> None:
    lk = lookup_for([TV, PI])
    frames = [
        g.eth(g.ETH_IPV4) + g.ipv4(g.TCP, "192.168.1.20", "8.8.8.8", g.tcp(1, 443)),
        g.eth(g.ETH_IPV4) + g.ipv4(g.UDP, "192.168.1.30", "192.168.1.20", g.udp(1, 2)),
        g.eth(g.ETH_IPV6) + g.ipv6(g.UDP, "2001:db8::1", "fd00::20", g.udp(1, 2)),
        g.eth(g.ETH_IPV4) + g.ipv4(g.UDP, "192.168.1.99", "1.1.1.1", g.udp(1, 2)),
    ]
    assert lookup(frames, lk) == [("tv", None), ("pi-kitchen", "tv"), (None, "tv"), ("unnamed", None)]
    cache = lk.cache
    # 5 local addresses looked up, 4 distinct: all missed the empty cache; a second batch hits.
    assert (cache.hits, cache.misses, len(cache)) == (0, 5, 4)
    lookup(frames, lk, t=1)
    assert (cache.hits, cache.misses) == (5, 5)


def test_entries_expire_after_the_ttl() -> None:
    lk = lookup_for([TV], ttl_us=10)
    frame = g.eth(g.ETH_IPV4) + g.ipv4(g.TCP, "192.168.1.20", "8.8.8.8", g.tcp(1, 443))
    lookup([frame], lk, t=0)
    lookup([frame], lk, t=5)
    lookup([frame], lk, t=20)
    assert (lk.cache.hits, lk.cache.misses, lk.cache.expirations) == (1, 2, 1)


def test_forgotten_addresses_are_looked_up_again() -> None:
    lk = lookup_for([TV])
    frame = g.eth(g.ETH_IPV4) + g.ipv4(g.TCP, "192.168.1.20", "8.8.8.8", g.tcp(1, 443))
    assert lookup([frame], lk) == [("tv", None)]
    lk.forget([address_int("192.168.1.20")])
    assert len(lk.cache) == 0
    assert lookup([frame], lk) == [("tv", None)]
    assert lk.cache.misses == 2


def test_cache_is_bounded_and_evictions_are_counted() -> None:
    c = AddressCache(max_entries=8, ttl=1000)
    keys = (np.arange(20, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) | np.uint64(2)
    c.put(keys[:8], np.arange(8), now=0)
    c.put(keys[8:20], np.arange(8, 20), now=1)
    assert (len(c), c.evictions) == (8, 12)
    values, hit = c.get(keys, now=2)
    assert hit.tolist() == [False] * 12 + [True] * 8
    assert values[12:].tolist() == list(range(12, 20))


def test_address_int_maps_ipv4_into_ipv6() -> None:
    assert address_int("192.168.1.20") == 0xFFFF_C0A8_0114
    assert address_int("fd00::20") == (0xFD00 << 112) | 0x20
    assert UNNAMED == 1
