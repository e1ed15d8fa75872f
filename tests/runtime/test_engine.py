"""The engine's queue: bounded in packets and in the memory its batches keep alive."""

from __future__ import annotations

import mmap

import numpy as np

from agent.base.batch import RawBatch
from agent.runtime.engine import BatchQueue, batch_nbytes


def test_the_queue_refuses_a_batch_over_its_byte_bound_and_takes_it_once_there_is_room() -> None:
    q = BatchQueue(capacity=100, capacity_bytes=1000)
    assert q.put("a", 1, block=False, nbytes=600)
    assert not q.put("b", 1, block=False, nbytes=600)  # 1 packet fits, 1200 bytes do not
    assert (q.packets, q.bytes) == (1, 600)
    assert q.get(0.0) == "a"
    assert (q.packets, q.bytes) == (0, 0)
    assert q.put("b", 1, block=False, nbytes=600)


def test_an_empty_queue_takes_a_batch_larger_than_its_byte_bound() -> None:
    q = BatchQueue(capacity=100, capacity_bytes=10)
    assert q.put("big", 1, block=False, nbytes=1000)  # else it could never pass at all
    assert not q.put("small", 1, block=False, nbytes=1)


def test_a_slice_of_a_few_packets_counts_the_whole_columns_it_keeps_alive() -> None:
    column = np.zeros(1000, np.int64)  # 8000 bytes, four slices of it below
    data = np.zeros(300, np.uint8)
    b = RawBatch(0, 1, data, column[:2], column[2:4], column[4:6], column[6:8])
    assert batch_nbytes(b) == 8000 + 300  # the shared column once, not four times


def test_bytes_read_from_a_map_count_as_the_packets_captured_bytes() -> None:
    m = mmap.mmap(-1, 1 << 20)
    data = np.frombuffer(m, np.uint8)  # a whole capture file's map
    b = RawBatch(0, 1, data, np.array([24, 100]), np.array([60, 70]), np.array([60, 70]), np.array([1, 2]))
    assert batch_nbytes(b) == 130 + 4 * 16
    del data, b
    m.close()
