"""A fixed-size hash index from 64-bit keys to slot numbers that looks up, inserts and deletes whole arrays at once.

Open addressing with linear probing: every step of a probe sequence is one vectorised
operation over all keys still probing, so a batch costs a handful of numpy calls however
many keys it holds. Keys are already well-mixed hashes; 0 and 1 are reserved (empty,
deleted), so callers pass keys with bit 1 set. The table has four places per key it may
hold, so live keys fill at most a quarter of it; deleted entries are swept out by a rebuild
once live and deleted ones together pass half. The table starts small and doubles as keys
come, keeping them under an eighth of it while it may grow (a quarter of the table made W1's
probes 6 % slower than a table of full size): a flow table sized for 65,536 flows costs
64 KiB, not 4 MiB, on a link that has a few hundred.

>>> idx = HashIndex(8)
>>> idx.insert(np.array([6, 10], np.uint64), np.array([0, 1]))
>>> idx.lookup(np.array([10, 14, 6], np.uint64)).tolist()
[1, -1, 0]
"""

from __future__ import annotations

import numpy as np

from agent.base.arrays import table, unique_first
from agent.base.batch import I64, U64

EMPTY, DELETED = np.uint64(0), np.uint64(1)


START = 1 << 12  # places a table starts with (64 KiB)


class HashIndex:
    def __init__(self, max_keys: int) -> None:
        size = 1
        while size < 4 * max(max_keys, 1):
            size <<= 1
        self._max_size = size
        self._live = 0
        self._deleted = 0
        self._allocate(min(size, START))

    def _allocate(self, size: int) -> None:
        self._size = size
        self._mask = np.uint64(size - 1)
        self._keys: U64 = table(size, np.uint64)
        self._vals: I64 = table(size, np.int64)

    @property
    def size(self) -> int:
        """Places in the table now."""
        return self._size

    def __len__(self) -> int:
        return self._live

    def _find(self, keys: U64) -> I64:
        """Table position of each key, or -1."""
        mask = self._size - 1
        pos = (keys & self._mask).astype(np.int64)
        found = self._keys[pos]
        hit = found == keys
        where = np.where(hit, pos, -1)
        todo = (~hit & (found != EMPTY)).nonzero()[0]
        pos = (pos[todo] + 1) & mask
        while todo.size:  # the few keys whose first place held another key probe on
            found = self._keys[pos]
            hit = found == keys[todo]
            where[todo[hit]] = pos[hit]
            going = ~hit & (found != EMPTY)
            todo, pos = todo[going], (pos[going] + 1) & mask
        return where

    def lookup(self, keys: U64) -> I64:
        """The value stored for each key, or -1."""
        at = self._find(keys)
        return np.where(at >= 0, self._vals[at], -1)

    def insert(self, keys: U64, values: I64) -> None:
        """Add keys that are not in the index (each once)."""
        size = self._size
        while size < self._max_size and self._live + keys.size > size // 8:
            size <<= 1  # grow before live keys pass an eighth
        if size != self._size or self._live + self._deleted + keys.size > self._size // 2:
            self._rebuild(size)
        pos = (keys & self._mask).astype(np.int64)
        if self._place_directly(keys, values, pos):
            return
        todo = np.arange(keys.size)
        mask = self._size - 1
        while todo.size:
            free = self._keys[pos] <= DELETED
            # Of the keys aiming at one free place, the first takes it; the rest probe on.
            cand_pos = pos[free]
            place, first = unique_first(cand_pos)
            winners = todo[free][first]
            reused = int(np.count_nonzero(self._keys[place] == DELETED))
            self._keys[place] = keys[winners]
            self._vals[place] = values[winners]
            self._deleted -= reused
            self._live += winners.size
            placed = np.zeros(todo.size, np.bool_)
            placed[free.nonzero()[0][first]] = True
            todo, pos = todo[~placed], (pos[~placed] + 1) & mask

    def _place_directly(self, keys: U64, values: I64, pos: I64) -> bool:
        """The usual insert: every key's first place is free and no two share one. Then each key
        takes its place (as the probing loop would), without sorting; otherwise nothing changes."""
        before = self._keys[pos]
        if not (before <= DELETED).all():
            return False
        self._keys[pos] = keys
        if not (self._keys[pos] == keys).all():  # two keys aimed at one place: the later overwrote
            self._keys[pos] = before
            return False
        self._vals[pos] = values
        self._deleted -= int(np.count_nonzero(before == DELETED))
        self._live += keys.size
        return True

    def delete(self, keys: U64) -> None:
        at = self._find(keys)
        at = at[at >= 0]
        self._keys[at] = DELETED
        self._live -= at.size
        self._deleted += at.size

    def _rebuild(self, size: int) -> None:
        live = self._keys > DELETED
        keys, values = self._keys[live], self._vals[live]
        if size != self._size:
            self._allocate(size)
        else:
            self._keys[:] = EMPTY
        self._live = self._deleted = 0
        if keys.size:
            self.insert(keys, values)
