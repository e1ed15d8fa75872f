"""The vectorised hash index against a dict, over many rounds of inserts and deletes."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.base.hashindex import HashIndex


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 300), max_size=40), st.lists(st.integers(0, 300), max_size=20)), max_size=25))
def test_behaves_like_a_dict(rounds: list[tuple[list[int], list[int]]]) -> None:
    idx = HashIndex(128)
    ref: dict[int, int] = {}

    def key(i: int) -> int:
        return ((i * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) | 2

    for n, (adds, dels) in enumerate(rounds):
        new = sorted({key(a) for a in adds} - set(ref))[: 128 - len(ref)]
        idx.insert(np.array(new, np.uint64), np.arange(len(new)) + 1000 * n)
        ref.update({k: 1000 * n + i for i, k in enumerate(new)})
        gone = sorted({key(d) for d in dels} & set(ref))
        idx.delete(np.array(gone, np.uint64))
        for k in gone:
            del ref[k]
        probe = np.array([key(i) for i in range(301)], np.uint64)
        assert idx.lookup(probe).tolist() == [ref.get(int(k), -1) for k in probe]
        assert len(idx) == len(ref)


def test_colliding_keys_in_one_insert() -> None:
    idx = HashIndex(16)  # 64 places: keys equal modulo 64 all aim at one place
    keys = np.array([2 + 64 * i for i in range(10)], np.uint64)
    idx.insert(keys, np.arange(10))
    assert idx.lookup(keys).tolist() == list(range(10))
    idx.delete(keys[::2])
    assert idx.lookup(keys).tolist() == [-1, 1, -1, 3, -1, 5, -1, 7, -1, 9]


def test_the_table_starts_small_and_grows_with_its_keys_up_to_its_bound() -> None:
    idx = HashIndex(65536)
    assert idx.size == 4096  # 64 KiB, not the 4 MiB 65,536 keys may need
    keys = (np.arange(1, 2001, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) | np.uint64(2)
    idx.insert(keys, np.arange(2000))
    assert idx.size == 16384  # 2000 keys fill at most an eighth (short probes) while the table may grow
    assert idx.lookup(keys).tolist() == list(range(2000))
    more = (np.arange(2001, 65537, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) | np.uint64(2)
    idx.insert(more, np.arange(2000, 65536))
    assert idx.size == 262144  # the bound: four places per key
    assert len(idx) == 65536
    assert idx.lookup(keys[:5]).tolist() == [0, 1, 2, 3, 4]
