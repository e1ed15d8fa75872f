"""Deduplication: a frame is a duplicate when an earlier frame within the window carried the same L3 bytes.

The comparison key is a 64-bit hash of the first ``HASHED_BYTES`` captured bytes of the
network layer, with the fields a router rewrites masked (IPv4 TTL and header checksum,
IPv6 hop limit), and of the network-layer length; a non-IP frame is hashed whole from its
first byte. The transport checksum inside those bytes covers the rest of the payload, so two
frames with equal keys carry the same packet. No payload byte outlives the batch: only
(hash, timestamp) pairs of the last window are kept, at most ``max_entries`` of them.

>>> d = Dedup(window_us=1000, max_entries=1024)
>>> d.window_us
1000
"""

from __future__ import annotations

import numpy as np

from agent.base import labels
from agent.base.batch import I64, U64, Batch, Mask
from agent.base.hashing import GOLDEN, MIX_1
from agent.base.rows import rows

HASHED_BYTES = 64
_WORDS = HASHED_BYTES // 8
_S = np.uint64(31)
_ALL = np.uint64(0xFFFF_FFFF_FFFF_FFFF)


def _length_masks() -> np.ndarray:
    """_KEEP[n]: words that keep the first n of the hashed bytes."""
    table = np.zeros((HASHED_BYTES + 1, HASHED_BYTES), np.uint8)
    for n in range(HASHED_BYTES + 1):
        table[n, :n] = 0xFF
    return table.view("<u8")


def _word_mask(cleared: list[int]) -> np.uint64:
    word = np.full(8, 0xFF, np.uint8)
    word[cleared] = 0
    return np.uint64(word.view("<u8")[0])


_KEEP = _length_masks()
_V4_WORD1 = _word_mask([0, 2, 3])  # IPv4 bytes 8 (TTL), 10 and 11 (header checksum)
_V6_WORD0 = _word_mask([7])  # IPv6 byte 7 (hop limit)


def frame_hash(batch: Batch) -> U64:
    """The dedup key of every frame in the batch (never 0)."""
    raw = batch.raw
    ip = batch.is_ip
    words = np.ascontiguousarray(batch.window[:, :HASHED_BYTES]).view("<u8")
    length = np.where(ip, batch.l3len, raw.caplen)
    if not ip.all():
        # Non-IP frames are compared whole, from their first byte.
        other = (~ip).nonzero()[0]
        words[other] = rows(raw.data, raw.offset[other], HASHED_BYTES).view("<u8")
    short = (length < HASHED_BYTES).nonzero()[0]
    if short.size:
        words[short] &= _KEEP[length[short]]
    words[:, 1] &= np.where(ip & (batch.network == labels.IPV4), _V4_WORD1, _ALL)
    words[:, 0] &= np.where(ip & (batch.network == labels.IPV6), _V6_WORD0, _ALL)
    h = length.astype(np.uint64) * GOLDEN
    for j in range(_WORDS):
        h ^= words[:, j]
        h *= MIX_1
        h ^= h >> _S
    h |= np.uint64(1)
    return h


class Dedup:
    """Marks duplicates in batches, remembering the last window of frames across batches."""

    def __init__(self, window_us: int, max_entries: int) -> None:
        self.window_us = window_us
        self.max_entries = max_entries
        self._hash: U64 = np.zeros(0, np.uint64)
        self._ts: I64 = np.zeros(0, np.int64)
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    @property
    def entries(self) -> int:
        return int(self._hash.size)

    def duplicates(self, keys: U64, ts: I64) -> Mask:
        """True for each frame (in batch order) that repeats one seen within the window before it."""
        n, r = keys.size, self._hash.size
        all_keys = np.concatenate((self._hash, keys))
        all_ts = np.concatenate((self._ts, ts))
        m = all_keys.size
        # Sorting every frame is the slow way to find repeats. Scatter each key's position into a
        # table by its low bits, first occurrence winning: a frame whose place is owned by another
        # repeats a key (or merely collides); only those and their owners are sorted below.
        bits = max(10, int(m * 8 - 1).bit_length())
        slot = (all_keys & np.uint64((1 << bits) - 1)).astype(np.intp)
        owner = np.empty(1 << bits, np.intp)
        position = np.arange(m)
        owner[slot[::-1]] = position[::-1]
        first = owner[slot]
        shared = first != position
        shared[first[shared]] = True
        cand = shared.nonzero()[0]
        dup_all = np.zeros(m, np.bool_)
        if cand.size:
            ck, ct = all_keys[cand], all_ts[cand]
            order = np.argsort(ck, kind="stable")  # equal keys stay in arrival order
            sk, st = ck[order], ct[order]
            repeat = np.zeros(sk.size, np.bool_)
            repeat[1:] = (sk[1:] == sk[:-1]) & (np.abs(st[1:] - st[:-1]) <= self.window_us)
            dup_all[cand[order]] = repeat
        dup = dup_all[r:]
        self._remember(all_keys, all_ts, int(ts.max()) if n else 0)
        hits = int(np.count_nonzero(dup))
        self.hits += hits
        self.misses += n - hits
        return dup

    def _remember(self, keys: U64, ts: I64, newest: int) -> None:
        """Keep the frames of the last window for the next batch, the latest of each key, at most max_entries."""
        recent = (ts >= newest - self.window_us).nonzero()[0]
        keys, ts = keys[recent], ts[recent]
        # Of repeated keys keep the latest frame: scatter in arrival order, last occurrence winning.
        bits = max(10, int(keys.size * 8 - 1).bit_length())
        slot = (keys & np.uint64((1 << bits) - 1)).astype(np.intp)
        owner = np.empty(1 << bits, np.intp)
        pos = np.arange(keys.size)
        owner[slot] = pos
        latest = (owner[slot] == pos) | (keys[owner[slot]] != keys)
        keys, ts = keys[latest], ts[latest]
        if keys.size > self.max_entries:
            cut = keys.size - self.max_entries
            newest_ones = np.argpartition(ts, cut)[cut:]
            keys, ts = keys[newest_ones], ts[newest_ones]
            self.evictions += cut
        self._hash, self._ts = keys, ts

    def apply(self, batch: Batch) -> tuple[Batch, U64]:
        """The batch with its ``duplicate`` mask set, and the frame hashes (which sampling reuses)."""
        keys = batch.frame_hash if batch.frame_hash.size == len(batch) else frame_hash(batch)
        return batch.replace(duplicate=self.duplicates(keys, batch.ts)), keys
