"""Remote addresses to the domains they serve, from the DNS answers the agent sees.

Each A/AAAA answer maps its address to the name that was asked for, reduced to the
registrable domain with the Public Suffix List (``www.bbc.co.uk`` -> ``bbc.co.uk``), so the
label set stays small. The map is a vectorised ``HashIndex``: a batch's remote addresses are
looked up with a few array operations, and an address without an answer costs no Python at
all. It holds at most ``max_entries`` addresses; the oldest answers make room, and are counted.

>>> from agent.naming.interner import Interner
>>> from agent.base.addresses import address_int
>>> m = DomainMap(max_entries=16, names=Interner(64, ("other", "unknown")))
>>> m.learn([(address_int("93.184.216.34"), "www.example.com")])
>>> ids = m.lookup(np.array([0], np.uint64), np.array([0xFFFF_5DB8_D822], np.uint64))
>>> m.names.names[int(ids[0])]
'example.com'
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_left
from collections.abc import Iterable

import numpy as np
from publicsuffixlist import PSLFILE

from agent.base.addresses import address_key
from agent.base.arrays import table
from agent.base.batch import I64, U64
from agent.base.hashindex import HashIndex
from agent.base.slots import FreeSlots
from agent.naming.interner import UNNAMED, Interner


def _ascii(rule: str) -> str:
    """A rule as the DNS carries it: each non-ASCII label as ``xn--`` and its Punycode.

    The list's rules are already lower-case NFC, so this is what the ``idna`` codec gives for
    every one of them (a test checks it) without the codec's nameprep tables (0.7 MB resident).
    """
    if rule.isascii():
        return rule
    return ".".join(label if label.isascii() else "xn--" + label.encode("punycode").decode("ascii") for label in rule.split("."))


class SuffixList:
    """The Public Suffix List's rules (normal, ``*.`` wildcard, ``!`` exception), matched label by label.

    Read from the list the ``publicsuffixlist`` package ships and keeps current; names are
    matched as the ASCII the DNS carries, so no IDNA round trip costs anything per answer.
    Rules are held as hashes: the 10,000 normal ones sorted in an array (80 KB, where a set of
    the strings took 1.2 MB of a Pi's memory), the 320 wildcards and exceptions in sets. The
    hashes are this process's own, and a name's suffix taken for a rule by a shared hash is a
    chance of about one in 10^14. A name's suffixes are cut out of it, each hashed once.
    """

    def __init__(self, path: str = PSLFILE) -> None:
        kinds: dict[str, set[int]] = {"!": set(), "*": set(), "": set()}
        with open(path, encoding="utf-8") as f:
            for line in f:
                rule = line.strip()
                if not rule or rule.startswith("//"):
                    continue
                rule = _ascii(rule.split()[0])
                if rule.startswith("!"):
                    kinds["!"].add(hash(rule[1:]))
                elif rule.startswith("*."):
                    kinds["*"].add(hash(rule[2:]))
                else:
                    kinds[""].add(hash(rule))
        # The two short kinds (8 and 312 rules) as sets, the long one (10,000) as a sorted array.
        self._exceptions, self._wildcards = frozenset(kinds["!"]), frozenset(kinds["*"])
        self._rules = array("q", sorted(kinds[""]))

    def _is_rule(self, h: int) -> bool:
        rules = self._rules
        i = bisect_left(rules, h)
        return i < len(rules) and rules[i] == h

    def registrable(self, name: str) -> str | None:
        # Every suffix of the name, longest first, cut out of it: suffixes[i] is the name without its first i labels.
        suffixes = [name]
        at = name.find(".")
        while at >= 0:
            suffixes.append(name[at + 1 :])
            at = name.find(".", at + 1)
        last = len(suffixes) - 1
        for i, suffix in enumerate(suffixes):
            h = hash(suffix)
            if h in self._exceptions:
                return suffix  # an exception is itself registrable
            if self._is_rule(h) or (i < last and hash(suffixes[i + 1]) in self._wildcards):
                return suffixes[i - 1] if i > 0 else None
        return suffixes[-2] if last >= 1 else None  # an unlisted TLD: the default rule "*"


_PSL: SuffixList | None = None
_PSL_LOCK = threading.Lock()


def load_suffixes() -> SuffixList:
    """The list, read once per process, at the first name that needs it (in no thread of its own)."""
    global _PSL
    with _PSL_LOCK:
        if _PSL is None:
            _PSL = SuffixList()
        return _PSL


def registrable(name: str) -> str | None:
    """The registrable domain of a DNS name (eTLD+1), or None for names without one (``local``, bare hosts)."""
    psl = _PSL or load_suffixes()
    name = name.strip(".").lower()
    if not name or name.endswith((".local", ".arpa")) or "." not in name:
        return None
    return psl.registrable(name)


class DomainMap:
    def __init__(self, max_entries: int, names: Interner) -> None:
        self.max_entries = max_entries
        self.names = names
        self._index = HashIndex(max_entries)
        self._key = table(max_entries, np.uint64)
        self._name = table(max_entries, np.int64)
        self._order = table(max_entries, np.int64)  # when each entry was last answered
        self._used = table(max_entries, np.bool_)
        self._free = FreeSlots(max_entries)
        self._clock = 0
        self.evictions = 0
        self.hits = self.misses = 0
        # The suffix list is read at the first DNS answer, by the thread that learns it (never by a
        # thread of its own, which could hold _PSL_LOCK across a fork): a replay's reader process
        # runs meanwhile, and a replay without DNS never pays its 20 ms or its 0.6 MiB. A live
        # agent reads it at start (agent.runtime.agent).

    def __len__(self) -> int:
        return self.max_entries - len(self._free)

    def learn(self, answers: Iterable[tuple[int, str]]) -> None:
        """Take (address as a 128-bit integer, asked name) pairs from one batch's DNS answers."""
        latest: dict[int, int] = {}
        for address, name in answers:
            domain = registrable(name)
            if domain is not None:
                latest[address] = self.names.intern(domain)
        if not latest:
            return
        addrs = list(latest)
        hi = np.array([a >> 64 for a in addrs], np.uint64)
        lo = np.array([a & ((1 << 64) - 1) for a in addrs], np.uint64)
        keys = address_key(hi, lo)
        names = np.array(list(latest.values()), np.int64)
        if keys.size > self.max_entries:  # more answers than the map holds: keep the newest
            self.evictions += keys.size - self.max_entries
            keys, names = keys[-self.max_entries :], names[-self.max_entries :]
        slots = self._index.lookup(keys)
        new = slots < 0
        need = int(np.count_nonzero(new))
        if need > len(self._free):
            keep = self._used.copy()
            keep[slots[~new]] = False  # an address answered again in this batch is not the one to evict
            used = keep.nonzero()[0]
            count = need - len(self._free)
            oldest = used[np.argpartition(self._order[used], count - 1)[:count]]
            self._index.delete(self._key[oldest])
            self._used[oldest] = False
            self._free.give(oldest)
            self.evictions += count
        fresh = self._free.take(need)
        self._index.insert(keys[new], fresh)
        slots[new] = fresh
        self._key[slots], self._used[slots], self._name[slots] = keys, True, names
        self._order[slots] = self._clock + np.arange(slots.size)
        self._clock += slots.size

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
