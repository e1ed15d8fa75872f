"""Remote addresses to the domains they serve, from the DNS answers the agent sees.

Each A/AAAA answer maps its address to the name that was asked for, reduced to the
registrable domain with the Public Suffix List (``www.bbc.co.uk`` -> ``bbc.co.uk``), so the
label set stays small. The map is a vectorised ``HashIndex``: a batch's remote addresses are
looked up with a few array operations, and an address without an answer costs no Python at
all. It holds at most ``max_entries`` addresses; the oldest answers make room, and are counted.

>>> from agent.usage import Interner
>>> m = DomainMap(max_entries=16, names=Interner(64, ("other", "unknown")))
>>> m.learn([("93.184.216.34", "www.example.com")])
>>> ids = m.lookup(np.array([0], np.uint64), np.array([0xFFFF_5DB8_D822], np.uint64))
>>> m.names.names[int(ids[0])]
'example.com'
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from publicsuffixlist import PublicSuffixList

from agent.batch import I64, U64
from agent.devices import address_int, address_key
from agent.hashindex import HashIndex
from agent.usage import UNNAMED, Interner

_PSL: PublicSuffixList | None = None


def registrable(name: str) -> str | None:
    """The registrable domain of a DNS name (eTLD+1), or None for names without one (``local``, bare hosts)."""
    global _PSL
    if _PSL is None:
        _PSL = PublicSuffixList()
    name = name.strip(".").lower()
    if not name or name.endswith((".local", ".arpa")):
        return None
    found = _PSL.privatesuffix(name)
    return str(found) if found else None


class DomainMap:
    def __init__(self, max_entries: int, names: Interner) -> None:
        self.max_entries = max_entries
        self.names = names
        self._index = HashIndex(max_entries)
        self._key = np.zeros(max_entries, np.uint64)
        self._name = np.zeros(max_entries, np.int64)
        self._order = np.zeros(max_entries, np.int64)  # when each entry was last answered
        self._used = np.zeros(max_entries, np.bool_)
        self._free = list(range(max_entries - 1, -1, -1))
        self._clock = 0
        self.evictions = 0
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return self.max_entries - len(self._free)

    def learn(self, answers: Iterable[tuple[str, str]]) -> None:
        """Take (address, asked name) pairs from DNS answers."""
        for addr, name in answers:
            domain = registrable(name)
            if domain is None:
                continue
            value = address_int(addr)
            key = address_key(np.array([value >> 64], np.uint64), np.array([value & ((1 << 64) - 1)], np.uint64))
            self._clock += 1
            slot = int(self._index.lookup(key)[0])
            if slot < 0:
                if not self._free:
                    oldest = int(np.argmin(np.where(self._used, self._order, np.iinfo(np.int64).max)))
                    self._index.delete(self._key[oldest : oldest + 1])
                    self._used[oldest] = False
                    self._free.append(oldest)
                    self.evictions += 1
                slot = self._free.pop()
                self._index.insert(key, np.array([slot]))
                self._key[slot], self._used[slot] = key[0], True
            self._name[slot] = self.names.intern(domain)
            self._order[slot] = self._clock

    def referenced(self) -> set[int]:
        """Name ids some address still maps to."""
        return set(np.unique(self._name[self._used]).tolist())

    def lookup(self, hi: U64, lo: U64) -> I64:
        """The domain name id of each address (``UNNAMED`` where no answer named it)."""
        slots = self._index.lookup(address_key(hi, lo))
        found = slots >= 0
        hits = int(np.count_nonzero(found))
        self.hits += hits
        self.misses += slots.size - hits
        return np.where(found, self._name[slots], UNNAMED)
