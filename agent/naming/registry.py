"""The device registry: what the agent knows about the devices of the local network.

Devices are keyed by MAC address where one is known (ARP, DHCP) and by address otherwise.
Each keeps its MACs, its addresses over time, and its names with where each came from;
the best name wins in this order: the operator's inventory, DHCP hostname, mDNS, LLMNR,
DNS. A randomised (locally administered) MAC is a device of its own, linked to another
device when their DHCP client identifier or hostname match. The registry is bounded: past
``max_devices`` the least recently seen learned device is evicted, and counted.

It answers ``lookup(address)`` for the device lookup cache in front of it, and remembers
which devices changed so the store can write them in batches off the packet path.

>>> from agent.config import DeviceEntry
>>> r = Registry(max_devices=100)
>>> r.apply_inventory([DeviceEntry("tv", addresses=("192.168.1.20",))])
>>> r.lookup(0xFFFF_C0A8_0114)
'tv'
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agent.base.addresses import address_int
from agent.config import DeviceEntry
from agent.naming.learn import Observations
from agent.naming.learn.dhcp import Dhcp

SOURCES = ("inventory", "dhcp", "mdns", "llmnr", "dns")  # best first
MAX_ADDRESSES = 16  # per device, the most recently seen kept


def is_randomised(mac: str) -> bool:
    """A locally administered MAC (the second bit of the first octet): phones and laptops randomise these."""
    try:
        return bool(int(mac[:2], 16) & 0x02)
    except ValueError:
        return False


def host_part(name: str) -> str:
    """The host label of a DNS name: 'pi-kitchen.lan' -> 'pi-kitchen', 'tv.local' -> 'tv'."""
    return name.strip(".").split(".")[0]


@dataclass
class Device:
    id: int
    macs: set[str] = field(default_factory=set)
    addresses: dict[str, float] = field(default_factory=dict)  # address -> last seen
    names: dict[str, str] = field(default_factory=dict)  # source -> name
    first_seen: float = 0.0
    last_seen: float = 0.0
    client_id: str | None = None
    vendor_class: str | None = None
    linked_to: int | None = None

    @property
    def name(self) -> str | None:
        for source in SOURCES:
            if source in self.names:
                return self.names[source]
        return None

    @property
    def pinned(self) -> bool:
        return "inventory" in self.names


def named(devices: Mapping[int, Device], device_id: int | None, hops: int = 4) -> Device | None:
    """The device that names ``device_id``: itself, or the one its randomised MAC is linked to (a few links at most)."""
    for _ in range(hops):
        d = devices.get(device_id) if device_id is not None else None
        if d is None or d.name is not None:
            return d
        device_id = d.linked_to
    return None


class Registry:
    def __init__(self, max_devices: int) -> None:
        self.max_devices = max_devices
        self.lock = threading.Lock()
        self.devices: dict[int, Device] = {}
        self._by_mac: dict[str, int] = {}
        self._by_address: dict[int, int] = {}
        self._next_id = 1
        self.dirty: set[int] = set()  # changed since the store last wrote them
        self.removed: set[int] = set()
        self.changed_addresses: set[int] = set()  # whose device or name changed: the cache forgets them
        self.evictions = 0
        self.lookups = self.found = 0
        # (last_seen, id) of devices, oldest first: eviction pops instead of scanning every device.
        # Entries go stale when a device is seen again, pinned or removed; they are skipped when popped.
        self._by_seen: list[tuple[float, int]] = []
        # Devices by DHCP client identifier and by DHCP hostname: linking a randomised MAC looks them up, no scan.
        self._by_link_key: dict[tuple[str, str], set[int]] = {}

    def replace_inventory(self, entries: Iterable[DeviceEntry]) -> None:
        """A new inventory (on reload): names the operator removed give way to learned ones."""
        with self.lock:
            for d in self.devices.values():
                if d.names.pop("inventory", None) is not None:
                    self._touch(d)
                    self._queue(d)  # evictable again
        self.apply_inventory(entries)

    def apply_inventory(self, entries: Iterable[DeviceEntry]) -> None:
        """Pin the operator's names, on the devices their MACs or addresses already belong to where there is one."""
        with self.lock:
            for entry in entries:
                macs = [m.lower().replace("-", ":") for m in entry.macs]
                known = [self._by_mac.get(m) for m in macs] + [self._by_address.get(address_int(a)) for a in entry.addresses]
                found = next((i for i in known if i is not None and i in self.devices), None)
                d = self.devices[found] if found is not None else self._new(0.0)
                d.names["inventory"] = entry.name
                for mac in macs:
                    self._attach_mac(d, mac)
                for addr in entry.addresses:
                    self._attach_address(d, addr, d.last_seen)

    def __len__(self) -> int:
        return len(self.devices)

    # -- lookups ----------------------------------------------------------------------------

    def lookup(self, address: int) -> str | None:
        """The name of the device that has ``address`` (128-bit, IPv4 mapped), following links."""
        self.lookups += 1
        device_id = self._by_address.get(address)
        if device_id is None:
            return None
        name = self.name_of(device_id)
        if name is not None:
            self.found += 1
        return name

    def name_of(self, device_id: int) -> str | None:
        d = named(self.devices, device_id)
        return None if d is None else d.name

    # -- learning ---------------------------------------------------------------------------

    def learn(self, obs: Observations, now: float, is_local: object) -> None:
        """Apply one batch's observations; ``is_local(address_text)`` says which addresses are local."""
        with self.lock:
            for mac, addr in obs.arp:
                self._attach_address(self._device_for_mac(mac, now), addr, now)
            for record in obs.dhcp:
                self._learn_dhcp(record, now)
            for addr, name, source in obs.names:
                if is_local(addr):  # type: ignore[operator]
                    self._learn_name(addr, host_part(name), source, now)

    def _learn_dhcp(self, r: Dhcp, now: float) -> None:
        if not r.mac:
            return
        d = self._device_for_mac(r.mac, now)
        if r.address:
            self._attach_address(d, r.address, now)
        changed = False
        if (r.hostname and d.names.get("dhcp") != r.hostname) or (r.client_id and d.client_id != r.client_id):
            self._index_links(d, add=False)
            if r.hostname:
                d.names["dhcp"] = r.hostname
            if r.client_id:
                d.client_id = r.client_id
            self._index_links(d, add=True)
            changed = True
        if r.vendor_class and d.vendor_class != r.vendor_class:
            d.vendor_class, changed = r.vendor_class, True
        if is_randomised(r.mac):
            self._link(d)
        if changed:
            self._touch(d)

    def _link(self, d: Device) -> None:
        """Link a randomised-MAC device to another with the same DHCP client identifier or hostname (the oldest such)."""
        candidates: set[int] = set()
        for key in self._link_keys(d):
            candidates |= self._by_link_key.get(key, set())
        for other_id in sorted(candidates):  # ids grow with age: the order a scan of the registry had
            other = self.devices[other_id]
            if other.id == d.id or other.linked_to == d.id:
                continue
            if d.linked_to != other.id:
                d.linked_to = other.id
                self._touch(d)
            return

    @staticmethod
    def _link_keys(d: Device) -> list[tuple[str, str]]:
        keys = [("client", d.client_id)] if d.client_id is not None else []
        return keys + ([("host", d.names["dhcp"])] if "dhcp" in d.names else [])

    def _index_links(self, d: Device, *, add: bool) -> None:
        for key in self._link_keys(d):
            ids = self._by_link_key.setdefault(key, set())
            if add:
                ids.add(d.id)
            else:
                ids.discard(d.id)
                if not ids:
                    del self._by_link_key[key]

    def _learn_name(self, addr: str, name: str, source: str, now: float) -> None:
        if not name:
            return
        key = address_int(addr)
        device_id = self._by_address.get(key)
        d = self.devices[device_id] if device_id is not None else self._new(now)
        if device_id is None:
            self._attach_address(d, addr, now)
        if d.names.get(source) != name:
            d.names[source] = name
            self._touch(d)
        self._seen(d, now)

    # -- bookkeeping ------------------------------------------------------------------------

    def _new(self, now: float) -> Device:
        if len(self.devices) >= self.max_devices:
            self._evict()
        d = Device(self._next_id, first_seen=now, last_seen=now)
        self._next_id += 1
        self.devices[d.id] = d
        self.dirty.add(d.id)
        self._queue(d)
        return d

    def _seen(self, d: Device, now: float) -> None:
        if now > d.last_seen:
            d.last_seen = now
            self._queue(d)

    def _queue(self, d: Device) -> None:
        heapq.heappush(self._by_seen, (d.last_seen, d.id))
        if len(self._by_seen) > 4 * len(self.devices) + 64:
            # Mostly stale entries: rebuild from the devices (amortised O(1) per entry pushed).
            self._by_seen = [(x.last_seen, x.id) for x in self.devices.values() if not x.pinned]
            heapq.heapify(self._by_seen)

    def _oldest_learned(self) -> Device | None:
        while self._by_seen:
            seen, device_id = heapq.heappop(self._by_seen)
            d = self.devices.get(device_id)
            if d is not None and not d.pinned and d.last_seen == seen:
                return d
        return None

    def _evict(self) -> None:
        victim = self._oldest_learned()
        if victim is None:
            return
        for mac in victim.macs:
            self._by_mac.pop(mac, None)
        for addr in victim.addresses:
            key = address_int(addr)
            if self._by_address.get(key) == victim.id:
                del self._by_address[key]
                self.changed_addresses.add(key)
        self._index_links(victim, add=False)
        del self.devices[victim.id]
        self.dirty.discard(victim.id)
        self.removed.add(victim.id)
        self.evictions += 1

    def _device_for_mac(self, mac: str, now: float) -> Device:
        device_id = self._by_mac.get(mac)
        if device_id is not None and device_id in self.devices:
            d = self.devices[device_id]
            self._seen(d, now)
            return d
        d = self._new(now)
        self._attach_mac(d, mac)
        return d

    def _attach_mac(self, d: Device, mac: str) -> None:
        d.macs.add(mac)
        self._by_mac[mac] = d.id
        self._touch(d)

    def _attach_address(self, d: Device, addr: str, now: float) -> None:
        key = address_int(addr)
        owner = self._by_address.get(key)
        if owner is not None and owner != d.id and owner in self.devices:
            old = self.devices[owner]
            if old.pinned and not d.pinned:
                return  # the operator's inventory says whose address this is
            old.addresses.pop(addr, None)
            self._touch(old)
        fresh = addr not in d.addresses
        d.addresses[addr] = now
        if len(d.addresses) > MAX_ADDRESSES:
            oldest = min(d.addresses, key=lambda a: d.addresses[a])
            del d.addresses[oldest]
            gone = address_int(oldest)
            if self._by_address.get(gone) == d.id:
                del self._by_address[gone]
                self.changed_addresses.add(gone)
        if owner != d.id:
            self._by_address[key] = d.id
            self.changed_addresses.add(key)
        if fresh or owner != d.id:
            self._touch(d)

    def _touch(self, d: Device) -> None:
        self.dirty.add(d.id)
        for addr in d.addresses:
            self.changed_addresses.add(address_int(addr))

    def take_changes(self) -> tuple[list[Device], set[int]]:
        """Copies of the devices changed since the last call, and the ids removed (for the store)."""
        with self.lock:
            changed = [
                Device(d.id, set(d.macs), dict(d.addresses), dict(d.names), d.first_seen, d.last_seen, d.client_id, d.vendor_class, d.linked_to)
                for i in self.dirty
                if (d := self.devices.get(i)) is not None
            ]
            removed = set(self.removed)
            self.dirty.clear()
            self.removed.clear()
        return changed, removed

    def restore(self, devices: Iterable[Device]) -> None:
        """Load devices the store kept from earlier runs (before the inventory is applied)."""
        with self.lock:
            for d in devices:
                if len(self.devices) >= self.max_devices:
                    break
                d.names.pop("inventory", None)
                self.devices[d.id] = d
                self._queue(d)
                self._index_links(d, add=True)
                self._next_id = max(self._next_id, d.id + 1)
                for mac in d.macs:
                    self._by_mac.setdefault(mac, d.id)
                for addr in d.addresses:
                    self._by_address.setdefault(address_int(addr), d.id)

    def take_changed_addresses(self) -> set[int]:
        with self.lock:
            out = self.changed_addresses
            self.changed_addresses = set()
        return out
