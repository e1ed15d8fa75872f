"""Name lookup: which device a local address belongs to, through a bounded TTL cache.

The store behind the cache is pluggable (``DeviceStore``): the config's inventory is one, the
registry that learns names from the traffic another (remote domains have a map of their own,
``domains.DomainMap``). The cache answers whole columns of addresses at once; only its misses
reach the store, once per distinct address. Entries expire on packet time, so a replay gives the same hits and misses
every time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import numpy as np

from agent.base.addresses import address_key, address_keys
from agent.base.arrays import table, unique, unique_inverse
from agent.base.batch import I64, U64, Batch
from agent.base.hashindex import HashIndex
from agent.base.slots import FreeSlots
from agent.naming.interner import UNNAMED, Interner


class DeviceStore(Protocol):
    def lookup(self, address: int) -> str | None:
        """The name of the device that has ``address`` (a 128-bit integer), if known."""
        ...


class AddressCache:
    """A bounded TTL cache from address keys to device ids, looked up a whole column at a time.

    Entries expire ``ttl`` after they were stored, on the caller's clock; when the cache is
    full the entries closest to expiry make room. Lookups are counted as hits or misses,
    and evictions apart from expirations.

    >>> c = AddressCache(4, ttl=10)
    >>> c.put(np.array([6], np.uint64), np.array([3]), now=0)
    >>> c.get(np.array([6, 10], np.uint64), now=5)[0].tolist()
    [3, -1]
    """

    def __init__(self, max_entries: int, ttl: int) -> None:
        self.max_entries, self.ttl = max_entries, ttl
        self._index = HashIndex(max_entries)
        self._key = table(max_entries, np.uint64)
        self._value = table(max_entries, np.int64)
        self._expires = table(max_entries, np.int64)
        self._used = table(max_entries, np.bool_)
        self._free = FreeSlots(max_entries)
        self.hits = self.misses = self.evictions = self.expirations = 0

    def __len__(self) -> int:
        return self.max_entries - len(self._free)

    def get(self, keys: U64, now: int) -> tuple[I64, np.ndarray]:
        """(value or -1, hit) for each key."""
        slots = self._index.lookup(keys)
        hit = slots >= 0
        fresh = self._expires[slots] > now
        expired = hit & ~fresh
        hit &= fresh
        nhit = int(np.count_nonzero(hit))
        self.hits += nhit
        self.misses += keys.size - nhit
        if expired.any():
            gone = unique(slots[expired])
            self.expirations += gone.size
            self._drop(gone)
        return np.where(hit, self._value[slots], -1), hit

    def put(self, keys: U64, values: I64, now: int) -> None:
        """Store distinct keys that are not in the cache."""
        room = len(self._free)
        if keys.size > room:
            used = self._used.nonzero()[0]
            count = min(keys.size - room, used.size)
            if count:
                victims = used[np.argpartition(self._expires[used], count - 1)[:count]]
                self.evictions += victims.size
                self._drop(victims)
        if keys.size > self.max_entries:
            self.evictions += keys.size - self.max_entries  # more than it holds at once: keep the last
            keys, values = keys[-self.max_entries :], values[-self.max_entries :]
        slots = self._free.take(keys.size)
        self._index.insert(keys, slots)
        self._key[slots], self._value[slots] = keys, values
        self._expires[slots] = now + self.ttl
        self._used[slots] = True

    def forget(self, keys: U64) -> None:
        slots = self._index.lookup(keys)
        slots = slots[slots >= 0]
        if slots.size:
            self._drop(unique(slots))

    def clear(self) -> None:
        self._drop(self._used.nonzero()[0])

    def _drop(self, slots: I64) -> None:
        self._index.delete(self._key[slots])
        self._used[slots] = False
        self._free.give(slots)


class NameLookup:
    """Per batch: the name id (``Interner`` ids) of each address, through the cache, from ``store``.

    Used twice: local addresses to device names, remote addresses to domain names. An address
    the store has no name for gets ``UNNAMED``.
    """

    def __init__(self, store: DeviceStore, cache_entries: int, ttl_us: int, names: Interner) -> None:
        self.store = store
        self.cache = AddressCache(cache_entries, ttl_us)
        self.names = names

    def lookup(self, hi: U64, lo: U64, now: int) -> I64:
        """Name ids for a column of addresses: the cache answers, the store fills what it misses."""
        key = address_key(hi, lo)
        ids, hit = self.cache.get(key, now)
        if not hit.all():
            miss = (~hit).nonzero()[0]
            keys, first, inverse = unique_inverse(key[miss])
            found = np.array(
                [self._resolve((h << 64) | low) for h, low in zip(hi[miss[first]].tolist(), lo[miss[first]].tolist())],
                np.int64,
            )
            self.cache.put(keys, found, now)
            ids[miss] = found[inverse]
        return ids

    def _resolve(self, address: int) -> int:
        name = self.store.lookup(address)
        return UNNAMED if name is None else self.names.intern(name)

    def forget(self, addresses: Iterable[int]) -> None:
        """Drop cached answers for addresses whose name changed."""
        keys = address_keys(addresses)
        if keys.size:
            self.cache.forget(keys)


def local_devices(lookup: NameLookup, batch: Batch) -> tuple[I64, I64]:
    """(source device, destination device) name ids of every packet; -1 where that side is not local."""
    n = len(batch)
    src = np.full(n, -1, np.int64)
    dst = np.full(n, -1, np.int64)
    counted = batch.counted
    s = (batch.src_local & counted).nonzero()[0]
    d = (batch.dst_local & counted).nonzero()[0]
    if s.size + d.size == 0:
        return src, dst
    ids = lookup.lookup(
        np.concatenate((batch.src_hi[s], batch.dst_hi[d])),
        np.concatenate((batch.src_lo[s], batch.dst_lo[d])),
        int(batch.ts.max()),
    )
    src[s] = ids[: s.size]
    dst[d] = ids[s.size :]
    return src, dst
