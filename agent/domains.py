"""Remote addresses to the domains they serve, from the DNS answers the agent sees.

Each A/AAAA answer maps its address to the name that was asked for, reduced to the
registrable domain with the Public Suffix List (``www.bbc.co.uk`` -> ``bbc.co.uk``, so the
label set stays small). The map holds at most ``max_entries`` addresses; the least recently
answered make room, and are counted.

>>> m = DomainMap(max_entries=2)
>>> m.learn([("93.184.216.34", "www.example.com")])
>>> m.lookup(0xFFFF_5DB8_D822)
'example.com'
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from publicsuffixlist import PublicSuffixList

from agent.devices import address_int

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
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._map: OrderedDict[int, str] = OrderedDict()
        self.evictions = 0
        self.lookups = self.found = 0

    def __len__(self) -> int:
        return len(self._map)

    def learn(self, answers: Iterable[tuple[str, str]]) -> list[int]:
        """Take (address, asked name) pairs; returns the addresses whose domain changed."""
        changed = []
        for addr, name in answers:
            domain = registrable(name)
            if domain is None:
                continue
            key = address_int(addr)
            if self._map.get(key) != domain:
                changed.append(key)
            self._map[key] = domain
            self._map.move_to_end(key)
            while len(self._map) > self.max_entries:
                gone, _ = self._map.popitem(last=False)
                changed.append(gone)
                self.evictions += 1
        return changed

    def lookup(self, address: int) -> str | None:
        self.lookups += 1
        found = self._map.get(address)
        if found is not None:
            self.found += 1
        return found
